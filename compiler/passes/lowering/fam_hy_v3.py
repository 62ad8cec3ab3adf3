"""HY-V3 (Tencent Hunyuan 3): Llama's block with a per-head QK-norm (Apertus' attention) and, on the layers
``mlp_layer_types`` marks sparse (by default all but the first), MiniMax-M2-style experts: a float32 sigmoid
router (``router.gate``) whose correction bias (the block's ``expert_bias``) only chooses, the kept scores
renormalised and scaled by ``router_scaling_factor``, plus shared experts (``shared_mlp``) whose output joins
the routed one in float32 (``enable_moe_fp32_combine``).

Reads exactly the keys transformers 5.24's HYV3Config and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe, MoeNames
from ...basics.errors import ConfigError, UnsupportedError
from .fam_glm_minimax import REPLICA_EXPERT_WIDTH, REPLICA_EXPERTS, REPLICA_TOP_K
from .fam_moe import _activation
from .llama_like import common
from .moe_like import moe_like
from .reader import ConfigReader
from .registry import explicit_head_dim, family


def _replica_hy_v3(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers (dense, then routed twice), 8 experts, top 6."""
    explicit_head_dim(tiny, arch)
    tiny.update(num_hidden_layers=3, num_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K,
                moe_intermediate_size=REPLICA_EXPERT_WIDTH, mlp_layer_types=["dense", "sparse", "sparse"])


def mlp_layer_kinds(r: ConfigReader, layers: int, first_dense: int) -> list[bool]:
    """``mlp_layer_types`` ("dense" / "sparse" per layer), else the first ``first_dense`` dense: True where sparse."""
    kinds = r.any("mlp_layer_types", None)
    kinds = ["dense" if i < first_dense else "sparse" for i in range(layers)] if kinds is None else kinds
    if not isinstance(kinds, list) or len(kinds) != layers or not set(kinds) <= {"dense", "sparse"}:
        raise ConfigError(f"{r.where}: key 'mlp_layer_types' must list 'dense' or 'sparse' for each of the {layers} layers")
    return [kind == "sparse" for kind in kinds]


@family("hy_v3", title="HY-V3 (Hunyuan 3)", replica=_replica_hy_v3)
def lower_hy_v3(r: ConfigReader, model_type: str) -> Architecture:
    c = common(r, kv=8, head_dim=128, max_pos=131072)
    if r.bool("mlp_bias", False):  # the shared experts would take biases too
        raise UnsupportedError(f"{r.where}: key 'mlp_bias' = true is not supported for model_type 'hy_v3'")
    experts, top_k = r.int("num_experts", 192), r.int("num_experts_per_tok", 8)
    if top_k > experts:
        raise ConfigError(f"{r.where}: 'num_experts_per_tok' ({top_k}) exceeds 'num_experts' ({experts})")
    width, shared = r.int("moe_intermediate_size", 1536), r.int("num_shared_experts", 1)
    scaling = r.float("router_scaling_factor", 2.826)
    activation = _activation(r)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=width, activation=activation, router="sigmoid_topk",
              norm_topk_prob=True, router_float32=True, score_correction_bias=True, score_bias_in_block=True,
              routed_scaling_factor=None if scaling == 1.0 else scaling, routing_dtype="float32",
              storage="per_expert", shared_expert_size=width * shared,
              combine_float32=r.bool("enable_moe_fp32_combine", True),
              names=MoeNames(router="router", router_inner="gate", shared_expert="shared_mlp", score_bias_on_disk="expert_bias"))
    sparse = mlp_layer_kinds(r, c.num_layers, 1)
    bias = r.bool("attention_bias", False)
    return moe_like(r, model_type, c, moe, sparse, theta=11_158_840.0, eps=1e-5, qkv_bias=bias, o_bias=bias, qk_norm="per_head",
                    activation=activation)
