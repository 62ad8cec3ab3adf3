"""DeepSeek-V2 and V3 (and Kimi-K2, a DeepSeek-V3): multi-head latent attention (MLA) and
group-limited expert routing, softmax (V2) or sigmoid (V3).

Reads the keys transformers 5's ``DeepseekV2Config`` / ``DeepseekV3Config`` and their modeling
files read, with their defaults. The first ``first_k_dense_replace`` layers have a dense MLP,
the others routed experts plus shared experts. The softmax scale is qk_head_dim^-0.5, times
mscale(factor, mscale_all_dim)^2 for a scaled RoPE (transformers' yarn_apply_mscale).
DeepSeek-V2 rotates its RoPE channels as complex numbers over adjacent pairs (x0, x1), (x2, x3),
...: the same rotation as V3's rope_interleave (pairs regrouped as [evens; odds], then
rotate-half), the channels only in another order, which q.k does not see.
"""

from __future__ import annotations

import math
from typing import Any

from ....schemas.arch import Architecture, Head, Layer, Mla, Mlp, Moe, MoeNames, Norm, Rope
from ...basics.errors import ConfigError, UnsupportedError
from .families import Common, build, read_common
from .fam_moe import TRAINING_ONLY, _activation
from .reader import ConfigReader
from .rope import lower_rope

# Keys transformers' DeepSeek code never reads: the expert-parallel size; the remote code's
# auxiliary-loss weight and kind (training only); qk_head_dim, derived (nope + rope) and
# overwritten by the config classes. The remote code's switches are fixed to the values
# transformers implements and checked with require_value.
DEEPSEEK_IGNORED = frozenset({"ep_size", "aux_loss_alpha", "seq_aux", "qk_head_dim"})
# transformers' DeepSeek-V2 router: topk_method -> how groups are scored (greedy: no groups).
V2_TOPK_METHODS = {"greedy": "none", "group_limited_greedy": "max"}
REPLICA_MLA = dict(q_lora_rank=48, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12)


def _mscale(scale: float, mscale: float) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _rope_params(r: ConfigReader) -> dict[str, Any]:
    params = r.raw.get("rope_parameters") or r.raw.get("rope_scaling") or {}
    return params if isinstance(params, dict) else {}


def _latent_attention(r: ConfigReader, c: Common, *, q_default: int | None,
                      deinterleave: bool) -> tuple[Mla, dict[str, Rope], float]:
    """MLA (V2 and V3 alike): its sizes, RoPE tables over the rope channels and softmax scale
    qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 for a scaled RoPE."""
    if c.num_kv_heads != c.num_heads:
        raise UnsupportedError(f"{r.where}: key 'num_key_value_heads' ({c.num_kv_heads}) must equal "
                               f"'num_attention_heads' ({c.num_heads}) for latent attention")
    r.require_value("pretraining_tp", (1, None), 1)
    r.require_value("moe_layer_freq", (1,), 1)
    q_rank = r.int("q_lora_rank", q_default, nullable=True)
    kv_rank = r.int("kv_lora_rank", 512)
    nope, rope_dim = r.int("qk_nope_head_dim", 128), r.int("qk_rope_head_dim", 64)
    v_dim = r.int("v_head_dim", 128)
    if rope_dim % 2:
        raise ConfigError(f"{r.where}: key 'qk_rope_head_dim' must be even, got {rope_dim}")
    if r.raw.get("head_dim") not in (None, rope_dim):  # transformers' RoPE tables span head_dim channels
        raise ConfigError(f"{r.where}: key 'head_dim' ({r.raw['head_dim']!r:.20}) must equal 'qk_rope_head_dim' ({rope_dim})")
    ropes = lower_rope(r, head_dim=rope_dim, layer_types={"full_attention"},
                       default_theta={"full_attention": 10000.0, "sliding_attention": 10000.0})
    table = ropes["full_attention"]
    scale = (nope + rope_dim) ** -0.5
    params = _rope_params(r)
    if table.type != "default" and params.get("mscale_all_dim"):
        m = _mscale(table.factor, float(params["mscale_all_dim"]))
        scale = scale * m * m
    mla = Mla(num_heads=c.num_heads, q_lora_rank=q_rank, kv_lora_rank=kv_rank, qk_nope_head_dim=nope,
              qk_rope_head_dim=rope_dim, v_head_dim=v_dim, rope=table.name, rope_deinterleave=deinterleave,
              bias=r.bool("attention_bias", False),
              latent_norm=Norm(kind="rmsnorm", eps=1e-6), scale=scale)  # transformers: the latent norms' default eps
    return mla, ropes, scale


def _assemble(r: ConfigReader, c: Common, model_type: str, mla: Mla, ropes: dict[str, Rope], moe: Moe,
              first_dense: int, extra_allowed: frozenset[str]) -> Architecture:
    """Dense MLP on the first ``first_dense`` layers, ``moe`` on the others; every mixer ``mla``."""
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6))
    mlp = Mlp(gated=True, activation=moe.activation, intermediate_size=c.intermediate_size)
    arch = build(r, c, layer_types=["full_attention"] * c.num_layers, window=None, ropes=ropes, norm=norm,
                 attention=dict(scale=mla.scale), mlp=mlp, block="pre_norm", embed_scale=None,
                 head=Head(tied=r.bool("tie_word_embeddings", False)), model_type=model_type,
                 extra_allowed=extra_allowed)
    layers = tuple(Layer(index=i, mixer=mla, ffn=moe if i >= first_dense else mlp, block="pre_norm", norm=norm)
                   for i in range(c.num_layers))
    return arch.model_copy(update={"layers": layers})


def lower_deepseek_v3(r: ConfigReader, model_type: str) -> Architecture:
    """DeepSeek-V3: MLA with low-rank queries, dense then routed layers, sigmoid group-limited routing."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=4096)
    r.require_value("scoring_func", ("sigmoid",), "sigmoid")
    r.require_value("topk_method", ("noaux_tc",), "noaux_tc")
    mla, ropes, _ = _latent_attention(r, c, q_default=1536, deinterleave=r.bool("rope_interleave", True))
    activation = _activation(r)
    moe = sigmoid_experts(r, activation, experts=256, groups=8, topk_groups=4, width=2048, scaling=2.5)
    first_dense = r.int("first_k_dense_replace", 3, minimum=0)
    mtp = mtp_layers(r)
    arch = _assemble(r, c, model_type, mla, ropes, moe, first_dense, TRAINING_ONLY | DEEPSEEK_IGNORED)
    return arch.model_copy(update={"extra_checkpoint_layers": mtp})


def _grouping(score: str, groups: int, topk_groups: int) -> dict[str, Any]:
    """Moe fields of group-limited routing; one group (Kimi-K2, DeepSeek-V2-Lite) limits nothing."""
    if groups == 1:
        return {}
    return dict(group_limit=score, num_groups=groups, topk_groups=topk_groups)


def sigmoid_experts(r: ConfigReader, activation: str, *, experts: int, groups: int, topk_groups: int, width: int,
                    scaling: float) -> Moe:
    """DeepSeek-V3's experts, read with the family's defaults (GLM-4-MoE has them too): float32 sigmoid
    scores, a correction bias used only to choose, group-limited choice (each group scored by its two best
    experts, which transformers computes even for one group), renormalised and scaled weights, shared experts."""
    experts, top_k = r.int("n_routed_experts", experts), r.int("num_experts_per_tok", 8)
    groups, topk_groups = r.int("n_group", groups), r.int("topk_group", topk_groups)
    shared, width = r.int("n_shared_experts", 1), r.int("moe_intermediate_size", width)
    where = f"{r.where}: keys 'n_routed_experts', 'n_group', 'topk_group', 'num_experts_per_tok'"
    if experts % groups or topk_groups > groups or top_k > topk_groups * (experts // groups) or experts // groups < 2:
        raise ConfigError(f"{where} do not fit ({experts} experts in {groups} groups of >= 2, top {topk_groups} "
                          f"groups, {top_k} experts per token)")
    scaling = r.float("routed_scaling_factor", scaling)
    return Moe(num_experts=experts, top_k=top_k, intermediate_size=width, activation=activation,
               router="sigmoid_topk", norm_topk_prob=r.bool("norm_topk_prob", True), router_float32=True,
               score_correction_bias=True, **_grouping("top2_sum", groups, topk_groups),
               routed_scaling_factor=None if scaling == 1.0 else scaling, routing_dtype="float32",
               storage="per_expert", shared_expert_size=width * shared, names=MoeNames(shared_expert="shared_experts"))


def mtp_layers(r: ConfigReader) -> int:
    """Checkpoint-only multi-token-prediction layers after the decoder (the loader skips them)."""
    key = "num_nextn_predict_layers" if r.has("num_nextn_predict_layers") or not r.has("num_mtp_layers") else "num_mtp_layers"
    return r.int(key, 1, minimum=0)


def lower_deepseek_v2(r: ConfigReader, model_type: str) -> Architecture:
    """DeepSeek-V2: MLA (plain q_proj when q_lora_rank is null), softmax routing over all experts,
    greedy or group-limited (group score: its best expert), no renormalisation, shared experts."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=2048)
    r.require_value("scoring_func", ("softmax",), "softmax")
    r.require_value("mlp_bias", (False,), False)
    # transformers' DeepSeek-V2 router never renormalises the kept weights (the remote code could).
    r.require_value("norm_topk_prob", (False, None), False)
    mla, ropes, _ = _latent_attention(r, c, q_default=1536, deinterleave=True)
    activation = _activation(r)
    method = r.str("topk_method", "greedy", choices=V2_TOPK_METHODS)
    experts = r.int("n_routed_experts", 64)
    top_k = r.int("num_experts_per_tok")  # transformers' default is None, which its router cannot use
    groups, topk_groups = r.int("n_group", None, nullable=True), r.int("topk_group", None, nullable=True)
    if top_k > experts:
        raise ConfigError(f"{r.where}: key 'num_experts_per_tok' ({top_k}) exceeds 'n_routed_experts' ({experts})")
    grouping: dict[str, Any] = {}
    if method != "none":  # only group_limited_greedy reads n_group and topk_group
        where = f"{r.where}: keys 'n_group', 'topk_group', 'num_experts_per_tok' (topk_method 'group_limited_greedy')"
        if groups is None or topk_groups is None:
            raise ConfigError(f"{where} must both be set")
        if experts % groups or topk_groups > groups or top_k > topk_groups * (experts // groups):
            raise ConfigError(f"{where} do not fit ({experts} experts in {groups} equal groups, top {topk_groups} "
                              f"groups, {top_k} experts per token)")
        grouping = _grouping(method, groups, topk_groups)
    scaling = r.float("routed_scaling_factor", 1.0)
    moe_width = r.int("moe_intermediate_size", 1407)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=moe_width, activation=activation,
              router="softmax_topk", router_float32=True, **grouping,
              routed_scaling_factor=None if scaling == 1.0 else scaling, routing_dtype="float32",
              storage="per_expert", shared_expert_size=moe_width * r.int("n_shared_experts", 2),
              names=MoeNames(shared_expert="shared_experts"))
    first_dense = r.int("first_k_dense_replace", 0, minimum=0)
    return _assemble(r, c, model_type, mla, ropes, moe, first_dense, TRAINING_ONLY | DEEPSEEK_IGNORED)


def _replica_moe(tiny: dict[str, Any], arch: Architecture) -> None:
    """8 experts, top 3; in 4 groups with the top 2 kept where the model limits groups (else one
    group); narrow latents with v_head_dim != qk_nope_head_dim; q_proj kept plain if it is."""
    moe = next((layer.ffn for layer in arch.layers if isinstance(layer.ffn, Moe)), None)
    groups = dict(n_group=4, topk_group=2) if moe and moe.num_groups is not None else dict(n_group=1, topk_group=1)
    tiny.update(REPLICA_MLA, num_hidden_layers=3, n_routed_experts=8, **groups, num_experts_per_tok=3,
                moe_intermediate_size=32)
    if arch.layers[0].mixer.q_lora_rank is None:
        tiny["q_lora_rank"] = None
    if "head_dim" in tiny:  # the generic shrink set it; here it is the rope channels
        tiny["head_dim"] = REPLICA_MLA["qk_rope_head_dim"]
    if "qk_head_dim" in tiny:
        tiny["qk_head_dim"] = REPLICA_MLA["qk_nope_head_dim"] + REPLICA_MLA["qk_rope_head_dim"]


def replica_deepseek(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers (dense, then routed twice), one shared expert; the quantization kept out."""
    tiny.update(first_k_dense_replace=1, n_shared_experts=1)
    _replica_moe(tiny, arch)
    tiny.pop("quantization_config", None)  # the replica is saved in float32


def replica_kimi_k2(tiny: dict[str, Any], arch: Architecture) -> None:
    """Kimi-K2 is a DeepSeek-V3 (its config says so in architectures): transformers builds the
    replica as deepseek_v3, which has no model_type of its own for it."""
    replica_deepseek(tiny, arch)
    tiny["model_type"] = "deepseek_v3"


def replica_deepseek_v2(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers: one dense first if the model has leading dense layers, the rest routed."""
    first_dense = next((i for i, layer in enumerate(arch.layers) if isinstance(layer.ffn, Moe)), None)
    tiny.update(first_k_dense_replace=3 if first_dense is None else min(first_dense, 1))  # None: no routed layer
    _replica_moe(tiny, arch)
    tiny.update(num_experts_per_tok=4)  # a softmax router is more skewed: 4 of 8 reach every expert
    if tiny.get("n_group") == 4:  # top 3 of 4 groups: 6 candidates for the 4, so groups and top-k both choose
        tiny.update(topk_group=3)


FAMILIES_DEEPSEEK = {"deepseek_v3": lower_deepseek_v3, "kimi_k2": lower_deepseek_v3, "deepseek_v2": lower_deepseek_v2}
REPLICA_DEEPSEEK = {"deepseek_v3": replica_deepseek, "kimi_k2": replica_kimi_k2, "deepseek_v2": replica_deepseek_v2}
