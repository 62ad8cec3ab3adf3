"""dots.llm1 (rednote-hilab): Qwen 3's attention (per-head QK-norm, optional window from
``max_window_layers`` on) over DeepSeek-V3's experts (float32 sigmoid router with a correction
bias that only chooses, renormalised and scaled weights, shared experts), dense first layers.

Reads exactly the keys transformers 5.24's Dots1Config and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture
from .fam_deepseek import sigmoid_experts
from .fam_glm_minimax import REPLICA_EXPERT_WIDTH, REPLICA_EXPERTS, REPLICA_TOP_K
from .fam_moe import _activation
from .families import read_layer_types
from .llama_like import common
from .moe_like import first_dense, moe_like
from .reader import ConfigReader
from .registry import derived_head_dim, family

# Dots1Config's defaults where DeepSeek-V3's (sigmoid_experts') differ.
DOTS1_DEFAULTS = {"norm_topk_prob": False, "n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.0}


def _replica_dots1(tiny: dict[str, Any], arch: Architecture) -> None:
    derived_head_dim(tiny, arch)
    tiny.update(num_hidden_layers=3, first_k_dense_replace=1, n_routed_experts=REPLICA_EXPERTS, n_group=1,
                topk_group=1, num_experts_per_tok=REPLICA_TOP_K, moe_intermediate_size=REPLICA_EXPERT_WIDTH)


@family("dots1", title="dots.llm1", replica=_replica_dots1)
def lower_dots1(r: ConfigReader, model_type: str) -> Architecture:
    r.raw = {**DOTS1_DEFAULTS, **r.raw}
    c = common(r, kv=32, max_pos=2048)
    r.int("n_routed_experts")  # the class default (None) builds no router: required
    r.int("num_experts_per_tok")
    r.int("n_shared_experts")
    window = r.int("sliding_window", 4096, nullable=True)
    start = r.int("max_window_layers", 62, minimum=0)
    layer_types = read_layer_types(r, c.num_layers, ["sliding_attention" if window is not None and i >= start
                                                     else "full_attention" for i in range(c.num_layers)])
    activation = _activation(r)
    moe = sigmoid_experts(r, activation, experts=0, groups=1, topk_groups=1, width=1408, scaling=1.0)
    sparse = first_dense(r, c, 0)
    bias = r.bool("attention_bias", False)
    return moe_like(r, model_type, c, moe, sparse, eps=1e-6, qkv_bias=bias, o_bias=bias, qk_norm="per_head",
                    activation=activation, layer_types=layer_types,
                    window=window if "sliding_attention" in layer_types else None)
