"""Solar Open (Upstage): GLM-4-MoE's experts (sigmoid router with a correction bias, shared experts) on
every layer, under Llama's attention (whole-head RoPE, biases on q/k/v only, no QK-norm).

Reads exactly the keys transformers 5.24's SolarOpenConfig and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Norm
from .fam_deepseek import sigmoid_experts
from .fam_glm_minimax import REPLICA_EXPERT_WIDTH, REPLICA_EXPERTS, REPLICA_TOP_K, _assemble, _attention
from .fam_moe import _activation
from .families import full_head_rotary, read_common
from .reader import ConfigReader
from .registry import explicit_head_dim, family
from .rope import lower_rope


def _replica_solar_open(tiny: dict[str, Any], arch: Architecture) -> None:
    explicit_head_dim(tiny, arch)
    tiny.pop("intermediate_size", None)  # SolarOpenConfig has none (no dense layer)
    tiny.update(num_hidden_layers=2, n_routed_experts=REPLICA_EXPERTS, moe_intermediate_size=REPLICA_EXPERT_WIDTH,
                n_group=1, topk_group=1, num_experts_per_tok=REPLICA_TOP_K)


@family("solar_open", title="Solar Open", replica=_replica_solar_open)
def lower_solar_open(r: ConfigReader, model_type: str) -> Architecture:
    width = r.int("moe_intermediate_size", 1280)
    if "intermediate_size" not in r.raw:  # no dense layer: the shared sizes need one, never used
        r.raw = {**r.raw, "intermediate_size": width}
    c = read_common(r, kv_default=8, head_dim_default=128, max_pos=131072)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5))
    full_head_rotary(r, lower_rope(r, head_dim=c.head_dim, layer_types={"full_attention"},
                                   default_theta={"full_attention": 1e6, "sliding_attention": 1e6}))
    attention = _attention(r, c, norm, bias=r.bool("attention_bias", False), qk_norm="none")
    activation = _activation(r)
    moe = sigmoid_experts(r, activation, experts=128, groups=1, topk_groups=1, width=width, scaling=1.0)
    return _assemble(r, c, model_type, theta=1e6, norm=norm, attention=attention, activation=activation, moe=moe,
                     first_dense=0)
