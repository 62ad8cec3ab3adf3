"""EXAONE MoE (LG AI Research): EXAONE 4.0's attention (per-head QK-norm before RoPE, 3 sliding : 1 global
layers whose global layers have no RoPE whenever a window is set) in a pre-norm block, with DeepSeek-V3's
experts (float32 sigmoid router, a correction bias, stored in the block, that only chooses, renormalised and
scaled weights, shared experts) on the layers ``mlp_layer_types`` marks sparse (by default all but the first
``first_k_dense_replace``).

Reads exactly the keys transformers 5.24's ExaoneMoeConfig and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe, MoeNames
from ...basics.errors import ConfigError, UnsupportedError
from .fam_deepseek import _grouping
from .fam_glm_minimax import REPLICA_EXPERT_WIDTH, REPLICA_EXPERTS, REPLICA_TOP_K
from .fam_moe import _activation
from .families import read_layer_types
from .llama_like import common
from .moe_like import moe_like
from .reader import ConfigReader
from .registry import explicit_head_dim, family


def _replica_exaone_moe(tiny: dict[str, Any], arch: Architecture) -> None:
    """Four layers (3 sliding, 1 global; dense first, then routed), 8 experts, top 7 (at 2 x 20 tokens,
    top 6 left an expert without tokens), one group."""
    explicit_head_dim(tiny, arch)
    layers = 4 if any(layer.mixer.span == "sliding" for layer in arch.layers) else 3
    tiny.update(num_hidden_layers=layers, num_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K + 1,
                moe_intermediate_size=REPLICA_EXPERT_WIDTH, n_group=1, topk_group=1)
    tiny["mlp_layer_types"] = ["dense"] + ["sparse"] * (layers - 1)
    if isinstance(tiny.get("layer_types"), list):
        tiny["layer_types"] = [layer.mixer.span + "_attention" for layer in arch.layers][:layers]


def _layer_types(r: ConfigReader, layers: int, window: int | None) -> list[str]:
    """ExaoneMoeConfig: layer_types, else every pattern-th layer global (all global without a window)."""
    pattern = r.any("sliding_window_pattern", 4)
    if "layer_types" in r.raw or window is None:
        return read_layer_types(r, layers, ["full_attention"] * layers)
    if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
        return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)]
    raise UnsupportedError(f"{r.where}: key 'sliding_window_pattern' = {pattern!r:.40} needs an explicit "
                           "'layer_types' (only a positive integer pattern is expanded)")


@family("exaone_moe", title="EXAONE MoE", replica=_replica_exaone_moe, pad_token_id=0)
def lower_exaone_moe(r: ConfigReader, model_type: str) -> Architecture:
    c = common(r, kv=32, max_pos=2048)
    window = r.int("sliding_window", 4096, nullable=True)
    layer_types = _layer_types(r, c.num_layers, window)
    experts, top_k = r.int("num_experts", 64), r.int("num_experts_per_tok", 8)
    groups, topk_groups = r.int("n_group", 1), r.int("topk_group", 1)
    if experts % groups or topk_groups > groups or top_k > topk_groups * (experts // groups) or experts // groups < 2:
        raise ConfigError(f"{r.where}: keys 'num_experts', 'n_group', 'topk_group', 'num_experts_per_tok' do not fit "
                          f"({experts} experts in {groups} groups of >= 2, top {topk_groups} groups, {top_k} per token)")
    width, shared = r.int("moe_intermediate_size", 1024), r.int("num_shared_experts", 1)
    scaling = r.float("routed_scaling_factor", 2.5)
    activation = _activation(r)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=width, activation=activation, router="sigmoid_topk",
              norm_topk_prob=r.bool("norm_topk_prob", True), router_float32=True, score_correction_bias=True,
              score_bias_in_block=True, **_grouping("top2_sum", groups, topk_groups),
              routed_scaling_factor=None if scaling == 1.0 else scaling, routing_dtype="float32",
              storage="per_expert", shared_expert_size=width * shared, names=MoeNames(shared_expert="shared_experts"))
    first = r.int("first_k_dense_replace", 1, minimum=0)
    kinds = r.any("mlp_layer_types", None)
    kinds = ["dense" if i < first else "sparse" for i in range(c.num_layers)] if kinds is None else kinds
    if not isinstance(kinds, list) or len(kinds) != c.num_layers or not set(kinds) <= {"dense", "sparse"}:
        raise ConfigError(f"{r.where}: key 'mlp_layer_types' must list 'dense' or 'sparse' for each of the "
                          f"{c.num_layers} layers")
    arch = moe_like(r, model_type, c, moe, [kind == "sparse" for kind in kinds], eps=1e-5, qk_norm="per_head",
                    activation=activation, layer_types=layer_types,
                    window=window if "sliding_attention" in layer_types else None)
    if window is None:
        return arch
    layers = tuple(layer if layer.mixer.span == "sliding" else layer.model_copy(
        update={"mixer": layer.mixer.model_copy(update={"rope": None})}) for layer in arch.layers)
    used = {layer.mixer.rope for layer in layers}
    return arch.model_copy(update={"layers": layers, "rope": tuple(t for t in arch.rope if t.name in used)})
