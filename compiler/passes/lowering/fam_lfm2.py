"""LFM2 (``lfm2``) and LFM2-MoE (``lfm2_moe``): hybrids of double-gated short convolutions and attention.

Each reads the keys transformers 5's config class and model read, with the same defaults: layers of
``layer_types`` "conv" get a short convolution (in_proj -> B, C, h; C * conv(B * h) -> out_proj, kernel
``conv_L_cache``), the others GQA attention with a per-head RMSNorm on queries and keys. The first LFM2
configs list the attention layers in ``full_attn_idxs`` and name sizes with ``block_*`` keys (``block_ff_dim``
for intermediate_size, ``tie_embedding``); both spellings are read as the config class reads them. LFM2's
MLP width is adjusted from intermediate_size (``block_auto_adjust_ff_dim``); LFM2-MoE has dense MLPs on its
first ``num_dense_layers`` layers and experts with sigmoid routing and a per-expert selection bias after.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, Head, Layer, Mlp, Moe, Names, Norm
from ....schemas.moe import MoeNames
from ....schemas.short_conv import ShortConv
from ...basics.errors import ConfigError, UnsupportedError
from .families import padding_idx, read_common
from .fam_moe import REPLICA_EXPERT_WIDTH, TRAINING_ONLY
from .reader import ConfigReader
from .registry import family
from .rope import lower_rope

LAYER_TYPES = ("conv", "full_attention")
# Six experts, four per token: with the selection bias drawn at random, every expert still gets some of the
# parity test's 64 tokens (it asserts that).
REPLICA_EXPERTS, REPLICA_TOP_K = 6, 4
NAMES = Names(attn="self_attn", o="out_proj", q_norm="q_layernorm", k_norm="k_layernorm", mlp="feed_forward",
              gate="w1", up="w3", down="w2", input_norm="operator_norm", post_attn_norm="ffn_norm",
              final_norm="embedding_norm", short_conv="conv")
MOE_NAMES = MoeNames(gate="w1", up="w3", down="w2", fused_block="feed_forward", score_bias="expert_bias")
# Config-class defaults (transformers' Lfm2Config / Lfm2MoeConfig) for the keys read_common requires.
DEFAULTS = {
    "lfm2": {"vocab_size": 65536, "hidden_size": 2560, "intermediate_size": 12288, "num_hidden_layers": 32,
             "num_attention_heads": 32},
    "lfm2_moe": {"vocab_size": 65536, "hidden_size": 2048, "intermediate_size": 7168, "num_hidden_layers": 32,
                 "num_attention_heads": 32},
}


def _aliases(r: ConfigReader, model_type: str) -> None:
    """The older spellings the config class folds in, overriding the newer keys: tie_embedding (both families),
    block_ff_dim (Lfm2Config only; Lfm2MoeConfig does not read it)."""
    raw = dict(r.raw)
    pairs = (("block_ff_dim", "intermediate_size"),) if model_type == "lfm2" else ()
    for old, new in (*pairs, ("tie_embedding", "tie_word_embeddings")):
        if old in raw:
            raw[new] = raw.pop(old)
            r.used.add(old)
    r.raw = raw


def _layer_types(r: ConfigReader, num_layers: int, *, legacy: bool) -> list[str]:
    """``layer_types``; else (lfm2 only) attention on the layers of ``full_attn_idxs`` (default: every layer)."""
    layer_types = r.any("layer_types", None)
    idxs = r.any("full_attn_idxs", None) if legacy else None
    if idxs is not None:
        if not isinstance(idxs, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idxs):
            raise ConfigError(f"{r.where}: 'full_attn_idxs' must be a list of layer indices")
        if any(not 0 <= i < num_layers for i in idxs):
            raise ConfigError(f"{r.where}: 'full_attn_idxs' holds an index outside 0..{num_layers - 1}")
    if layer_types is None:
        if not legacy:
            raise ConfigError(f"{r.where}: missing required key 'layer_types' (transformers' Lfm2Moe builds no "
                              "model without it)")
        idxs = range(num_layers) if idxs is None else idxs
        return ["full_attention" if i in idxs else "conv" for i in range(num_layers)]
    if not isinstance(layer_types, list) or len(layer_types) != num_layers:
        raise ConfigError(f"{r.where}: 'layer_types' must be a list of {num_layers} entries (one per layer)")
    for value in layer_types:
        if value not in LAYER_TYPES:
            raise UnsupportedError(f"{r.where}: 'layer_types' entry {value!r:.40} is not supported ({', '.join(LAYER_TYPES)})")
    if idxs is not None and [i for i, t in enumerate(layer_types) if t == "full_attention"] != sorted(set(idxs)):
        raise ConfigError(f"{r.where}: 'full_attn_idxs' disagrees with 'layer_types' (transformers would use "
                          "layer_types); refusing a contradictory config")
    return list(layer_types)


def _mlp_width(r: ConfigReader, width: int) -> int:
    """LFM2's MLP width: 2/3 of intermediate_size, times block_ffn_dim_multiplier, rounded up to a multiple
    of block_multiple_of (as Lfm2MLP computes it), unless block_auto_adjust_ff_dim is false."""
    if not r.bool("block_auto_adjust_ff_dim", True):
        r.any("block_ffn_dim_multiplier", None), r.any("block_multiple_of", None)  # read, unused when not adjusting
        return width
    width = int(2 * width / 3)
    multiplier = r.float("block_ffn_dim_multiplier", 1.0, nullable=True)
    multiple = r.int("block_multiple_of", 256)
    if multiplier is not None:
        width = multiple * ((int(multiplier * width) + multiple - 1) // multiple)
    if width < 1:
        raise ConfigError(f"{r.where}: the adjusted MLP width of 'intermediate_size' is {width}")
    return width


def _lower(r: ConfigReader, model_type: str) -> Architecture:
    moe_family = model_type == "lfm2_moe"
    r.raw = {**DEFAULTS[model_type], **r.raw}
    _aliases(r, model_type)
    c = read_common(r, kv_default=8, head_dim_default=None, max_pos=128000)
    eps = r.float("norm_eps", 1e-5)
    norm = Norm(kind="rmsnorm", eps=eps)
    layer_types = _layer_types(r, c.num_layers, legacy=not moe_family)
    rope = lower_rope(r, head_dim=c.head_dim, layer_types={"full_attention"},
                      default_theta={"full_attention": 1000000.0, "sliding_attention": 1000000.0})["full_attention"]
    attention = Attention(span="full", num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                          rope=rope.name, qk_norm="per_head", qk_norm_spec=norm, scale=c.head_dim**-0.5)
    conv = ShortConv(channels=c.hidden_size, kernel=r.int("conv_L_cache", 3), bias=r.bool("conv_bias", False))
    if moe_family:
        mlp = Mlp(gated=True, activation="silu", intermediate_size=c.intermediate_size)
        experts = r.int("num_experts", 32)
        top_k = r.int("num_experts_per_tok", 4)
        if top_k > experts:
            raise ConfigError(f"{r.where}: 'num_experts_per_tok' ({top_k}) exceeds 'num_experts' ({experts})")
        scaling = r.float("routed_scaling_factor", 1.0)
        bias = r.bool("use_expert_bias", True)
        moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=r.int("moe_intermediate_size", 1792),
                  activation="silu", router="sigmoid_topk", norm_topk_prob=r.bool("norm_topk_prob", True),
                  norm_topk_eps=1e-6, score_correction_bias=bias, score_bias_in_block=bias,
                  routed_scaling_factor=None if scaling == 1.0 else scaling, routing_dtype="input",
                  storage="per_expert", names=MOE_NAMES)
        dense = r.int("num_dense_layers", 2, minimum=0)
        ffns = [mlp if i < dense else moe for i in range(c.num_layers)]
    else:
        mlp = Mlp(gated=True, activation="silu", intermediate_size=_mlp_width(r, c.intermediate_size))
        ffns = [mlp] * c.num_layers
    layers = tuple(Layer(index=i, mixer=conv if kind == "conv" else attention, ffn=ffn, block="pre_norm", norm=norm)
                   for i, (kind, ffn) in enumerate(zip(layer_types, ffns)))
    head = Head(tied=r.bool("tie_word_embeddings", True))
    embedding = Embedding(vocab_size=c.vocab_size, padding_idx=padding_idx(r, c.vocab_size))
    r.finish(TRAINING_ONLY)
    return Architecture(model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
                        dtype=c.dtype, embedding=embedding, rope=(rope,), layers=layers, final_norm=norm, head=head,
                        names=NAMES)


# --- tiny replicas -------------------------------------------------------------------------------


def _replica(tiny: dict[str, Any], arch: Architecture) -> None:
    """Keep the conv / attention pattern of the replica's layers (in the config's own spelling), an explicit
    head_dim != hidden / heads; narrow experts, the dense layers kept before the sparse ones."""
    layers = tiny["num_hidden_layers"]
    tiny["head_dim"] = 24
    kinds = ["conv" if layer.mixer.kind == "short_conv" else "full_attention" for layer in arch.layers[:layers]]
    if isinstance(tiny.get("full_attn_idxs"), list):
        tiny["full_attn_idxs"] = [i for i, kind in enumerate(kinds) if kind == "full_attention"]
    if isinstance(tiny.get("layer_types"), list) or tiny["model_type"] == "lfm2_moe":
        tiny["layer_types"] = kinds
    if "block_ff_dim" in tiny:
        tiny["block_ff_dim"] = tiny.pop("intermediate_size")
    if "block_multiple_of" in tiny or tiny["model_type"] == "lfm2":
        tiny["block_multiple_of"] = 16
    for key in ("block_dim", "conv_dim", "conv_dim_out"):
        if key in tiny:
            tiny[key] = tiny["hidden_size"]
    if "num_heads" in tiny:
        tiny["num_heads"] = tiny["num_attention_heads"]
    if tiny["model_type"] == "lfm2_moe":
        tiny.update(num_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K,
                    moe_intermediate_size=REPLICA_EXPERT_WIDTH)
        dense = sum(layer.ffn.kind == "mlp" for layer in arch.layers)
        tiny["num_dense_layers"] = 0 if not dense else layers if dense == arch.num_layers else 1  # both kinds kept


@family("lfm2", title="LFM2", replica=_replica, pad_token_id=0)
def lower_lfm2(r: ConfigReader, model_type: str) -> Architecture:
    """LFM2: short convolutions and GQA attention with QK-norm, a SwiGLU MLP (width adjusted) on every layer."""
    return _lower(r, model_type)


@family("lfm2_moe", title="LFM2-MoE", replica=_replica, pad_token_id=0)
def lower_lfm2_moe(r: ConfigReader, model_type: str) -> Architecture:
    """LFM2-MoE: LFM2's mixers; dense SwiGLU MLPs first, then experts with sigmoid routing and a selection bias."""
    return _lower(r, model_type)
