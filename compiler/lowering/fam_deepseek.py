"""DeepSeek-V3: multi-head latent attention (MLA) and sigmoid, group-limited expert routing.

Reads the keys transformers 5's ``DeepseekV3Config`` and ``modeling_deepseek_v3.py`` read, with
their defaults. The first ``first_k_dense_replace`` layers have a dense MLP, the others routed
experts plus shared experts. The softmax scale is qk_head_dim^-0.5, times mscale(factor,
mscale_all_dim)^2 for a scaled RoPE (transformers' yarn_apply_mscale).
"""

from __future__ import annotations

import math
from typing import Any

from ...schemas.arch import Architecture, Fp8Weights, Head, Layer, Mla, Mlp, Moe, MoeNames, Norm
from ..errors import ConfigError, UnsupportedError
from .families import build, read_common
from .fam_moe import TRAINING_ONLY, _activation
from .quant import read_quantization
from .reader import ConfigReader
from .rope import lower_rope

# Keys transformers' DeepSeek-V3 code never reads (expert-parallel size; the remote code's
# switches, fixed to the values transformers implements and checked with require_value).
DEEPSEEK_IGNORED = frozenset({"ep_size"})
REPLICA_MLA = dict(q_lora_rank=48, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12)


def _mscale(scale: float, mscale: float) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _rope_params(r: ConfigReader) -> dict[str, Any]:
    params = r.raw.get("rope_parameters") or r.raw.get("rope_scaling") or {}
    return params if isinstance(params, dict) else {}


def _fp8(r: ConfigReader) -> Fp8Weights | None:
    """quantization_config: only DeepSeek's block-wise float8 e4m3 format (dequantized on load)."""
    found = read_quantization(r, "fp8", frozenset({"quant_method", "fmt", "activation_scheme", "weight_block_size"}))
    if found is None:
        return None
    q, where = found
    if q.get("fmt", "e4m3") != "e4m3":
        raise UnsupportedError(f"{where}: fmt {q.get('fmt')!r:.40} is not supported (only 'e4m3')")
    if q.get("activation_scheme", "dynamic") != "dynamic":
        raise UnsupportedError(f"{where}: activation_scheme {q.get('activation_scheme')!r:.40} is not supported")
    block = q.get("weight_block_size", [128, 128])
    if (not isinstance(block, list) or len(block) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise ConfigError(f"{where}: 'weight_block_size' must be two positive integers, got {block!r:.40}")
    return Fp8Weights(block=tuple(block))


def lower_deepseek_v3(r: ConfigReader, model_type: str) -> Architecture:
    """DeepSeek-V3: MLA with low-rank queries, dense then routed layers, sigmoid group-limited routing."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=4096)
    if c.num_kv_heads != c.num_heads:
        raise UnsupportedError(f"{r.where}: key 'num_key_value_heads' ({c.num_kv_heads}) must equal "
                               f"'num_attention_heads' ({c.num_heads}) for latent attention")
    r.require_value("pretraining_tp", (1, None), 1)
    r.require_value("scoring_func", ("sigmoid",), "sigmoid")
    r.require_value("topk_method", ("noaux_tc",), "noaux_tc")
    r.require_value("moe_layer_freq", (1,), 1)
    q_rank = r.int("q_lora_rank", 1536, nullable=True)
    kv_rank = r.int("kv_lora_rank", 512)
    nope, rope_dim = r.int("qk_nope_head_dim", 128), r.int("qk_rope_head_dim", 64)
    v_dim = r.int("v_head_dim", 128)
    if rope_dim % 2:
        raise ConfigError(f"{r.where}: key 'qk_rope_head_dim' must be even, got {rope_dim}")
    ropes = lower_rope(r, head_dim=rope_dim, layer_types={"full_attention"},
                       default_theta={"full_attention": 10000.0, "sliding_attention": 10000.0})
    table = ropes["full_attention"]
    scale = (nope + rope_dim) ** -0.5
    params = _rope_params(r)
    if table.type != "default" and params.get("mscale_all_dim"):
        m = _mscale(table.factor, float(params["mscale_all_dim"]))
        scale = scale * m * m
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6))
    mla = Mla(num_heads=c.num_heads, q_lora_rank=q_rank, kv_lora_rank=kv_rank, qk_nope_head_dim=nope,
              qk_rope_head_dim=rope_dim, v_head_dim=v_dim, rope=table.name,
              rope_deinterleave=r.bool("rope_interleave", True), bias=r.bool("attention_bias", False),
              latent_norm=Norm(kind="rmsnorm", eps=1e-6), scale=scale)  # transformers: the latent norms' default eps
    activation = _activation(r)
    experts = r.int("n_routed_experts", 256)
    top_k = r.int("num_experts_per_tok", 8)
    groups, topk_groups = r.int("n_group", 8), r.int("topk_group", 4)
    shared = r.int("n_shared_experts", 1)
    moe_width = r.int("moe_intermediate_size", 2048)
    where = f"{r.where}: keys 'n_routed_experts', 'n_group', 'topk_group', 'num_experts_per_tok'"
    if experts % groups or topk_groups > groups or top_k > topk_groups * (experts // groups) or experts // groups < 2:
        raise ConfigError(f"{where} do not fit ({experts} experts in {groups} groups of >= 2, top {topk_groups} "
                          f"groups, {top_k} experts per token)")
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=moe_width, activation=activation,
              router="sigmoid_topk", norm_topk_prob=r.bool("norm_topk_prob", True), router_float32=True,
              score_correction_bias=True, group_limit="top2_sum", num_groups=groups, topk_groups=topk_groups,
              routed_scaling_factor=r.float("routed_scaling_factor", 2.5), routing_dtype="float32",
              storage="per_expert", shared_expert_size=moe_width * shared,
              names=MoeNames(shared_expert="shared_experts"))
    first_dense = r.int("first_k_dense_replace", 3, minimum=0)
    mtp = r.int("num_nextn_predict_layers", 1, minimum=0) if r.has("num_nextn_predict_layers") else r.int(
        "num_mtp_layers", 1, minimum=0)
    fp8 = _fp8(r)
    mlp = Mlp(gated=True, activation=activation, intermediate_size=c.intermediate_size)
    arch = build(r, c, layer_types=["full_attention"] * c.num_layers, window=None, ropes=ropes, norm=norm,
                 attention=dict(scale=scale), mlp=mlp, block="pre_norm", embed_scale=None,
                 head=Head(tied=r.bool("tie_word_embeddings", False)), model_type=model_type,
                 extra_allowed=TRAINING_ONLY | DEEPSEEK_IGNORED)
    layers = tuple(Layer(index=i, mixer=mla, ffn=moe if i >= first_dense else mlp, block="pre_norm", norm=norm)
                   for i in range(c.num_layers))
    return arch.model_copy(update={"layers": layers, "fp8": fp8, "extra_checkpoint_layers": mtp})


def replica_deepseek(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers (dense, then routed twice), 8 experts in 4 groups, top 2 groups, top 3 experts;
    narrow latents with v_head_dim != qk_nope_head_dim; the RoPE scaling and quantization kept out."""
    tiny.update(REPLICA_MLA, num_hidden_layers=3, first_k_dense_replace=1, n_routed_experts=8, n_group=4,
                topk_group=2, num_experts_per_tok=3, moe_intermediate_size=32, n_shared_experts=1)
    if arch.layers[0].mixer.q_lora_rank is None:
        tiny["q_lora_rank"] = None
    tiny.pop("quantization_config", None)  # the replica is saved in float32


FAMILIES_DEEPSEEK = {"deepseek_v3": lower_deepseek_v3}
REPLICA_DEEPSEEK = {"deepseek_v3": replica_deepseek}
