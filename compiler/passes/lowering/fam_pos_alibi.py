"""Families whose position signal is ALiBi (linear biases by key position), BLOOM and MPT, and Falcon (RoPE; its
ALiBi variant is refused: transformers' eager and SDPA paths disagree on it).

Each reads exactly the keys its transformers 5.24 config class and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Alibi, Architecture, Head, Mlp, Names
from ...basics.errors import ConfigError, UnsupportedError
from .fam_gpt import _assemble, _common, _single_rope, _torch_layernorm
from .reader import ConfigReader
from .registry import family

BLOOM_NAMES = Names(backbone="transformer", embed="word_embeddings", embed_norm="word_embeddings_layernorm", layers="h",
                    final_norm="ln_f", attn="self_attention", qkv="query_key_value", o="dense", up="dense_h_to_4h",
                    down="dense_4h_to_h")
# Keys of published BLOOM configs that BloomConfig never reads (Megatron training switches, an unused offset).
BLOOM_TRAINING = frozenset({"hidden_dropout", "attention_dropout"})
BLOOM_CONTEXT = 2048  # BLOOM's training context; the config has no such key (ALiBi has no position table)


def _replica_bloom(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.pop("num_key_value_heads", None)
    tiny.pop("intermediate_size", None)  # 4 x hidden, always
    tiny.pop("n_embed", None)
    for generic, own in (("num_attention_heads", "n_head"), ("num_hidden_layers", "n_layer")):
        tiny[own] = tiny.pop(generic)
    tiny["n_head"] = 5  # not a power of two: the second series of slopes is exercised too (head_dim 64 / 5 -> hidden 60)
    tiny["hidden_size"] = 60


@family("bloom", title="BLOOM", replica=_replica_bloom)
def lower_bloom(r: ConfigReader, model_type: str) -> Architecture:
    """BLOOM: ALiBi instead of positions, a LayerNorm over the token embeddings, per-head fused [q_h; k_h; v_h],
    LayerNorms with bias, a 4 x hidden MLP with BLOOM's written-out tanh GELU, biases everywhere, a tied head."""
    if r.has("n_embed") and r.has("hidden_size"):
        raise ConfigError(f"{r.where}: give either 'hidden_size' or its old name 'n_embed', not both")
    hidden = r.int("n_embed") if r.has("n_embed") else r.int("hidden_size", 64)
    c = _common(r, vocab=r.int("vocab_size", 250880), hidden=hidden, heads=r.int("n_head", 8),
                layers=r.int("n_layer", 2), intermediate=4 * hidden, max_pos=BLOOM_CONTEXT)
    r.require_value("apply_residual_connection_post_layernorm", (False,), False)
    tp, exact = r.int("pretraining_tp", 1), r.bool("slow_but_exact", False)
    if tp > 1 and exact:
        raise ConfigError(f"{r.where}: 'slow_but_exact' with 'pretraining_tp' {tp} (projections summed in slices) "
                          "is not supported")
    norm = _torch_layernorm(r.float("layer_norm_epsilon", 1e-5))
    mlp = Mlp(gated=False, activation="gelu_fast_tanh", intermediate_size=c.intermediate_size, bias=True)
    arch = _assemble(
        r, c, model_type=model_type, rope=None, norm=norm,
        attention=dict(qkv="fused_per_head", q_bias=True, k_bias=True, v_bias=True, o_bias=True,
                       scale=c.head_dim**-0.5, alibi=Alibi(slopes="geometric")),
        mlp=mlp, block="pre_norm", head=Head(tied=r.bool("tie_word_embeddings", True)), names=BLOOM_NAMES,
        extra_allowed=BLOOM_TRAINING,
    )
    # The published checkpoints were saved from the bare BloomModel (keys "h.0...", "word_embeddings.weight").
    return arch.model_copy(update={"embedding": arch.embedding.model_copy(update={"norm": norm}),
                                   "bare_decoder_checkpoints": True})


MPT_NAMES = Names(backbone="transformer", embed="wte", layers="blocks", final_norm="norm_f", attn="attn", qkv="Wqkv",
                  o="out_proj", input_norm="norm_1", post_attn_norm="norm_2", mlp="ffn")
# MptConfig keys transformers 5.24's MPT reads for nothing (its model always uses ALiBi, a 4 x d_model GELU MLP
# without biases and torch's LayerNorm): accepted at the values that model computes, refused at any other.
MPT_FIXED = {"expansion_ratio": (4,), "no_bias": (True,), "logit_scale": (None,),
             "norm_type": ("low_precision_layernorm", "layernorm")}
MPT_ATTENTION_FIXED = {"attn_type": ("multihead_attention",), "prefix_lm": (False,), "qk_ln": (False,), "alibi": (True,),
                       "attn_uses_sequence_id": (False,), "alibi_bias_max": (8,)}  # the model always builds with 8
MPT_TRAINING = frozenset({"resid_pdrop", "emb_pdrop", "learned_pos_emb", "init_device", "embedding_fraction",
                          "init_config", "tokenizer_name", "verbose"})  # the last three: MosaicML's own config class


def _replica_mpt(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.pop("num_key_value_heads", None)
    tiny.pop("intermediate_size", None)  # 4 x d_model, always
    for generic, own in (("hidden_size", "d_model"), ("num_attention_heads", "n_heads"), ("num_hidden_layers", "n_layers")):
        tiny[own] = tiny.pop(generic)
    tiny["n_heads"] = 6  # not a power of two: the slopes' odd/even reordering is exercised (d_model 64 -> 60)
    tiny["d_model"] = 60


@family("mpt", title="MPT", replica=_replica_mpt)
def lower_mpt(r: ConfigReader, model_type: str) -> Architecture:
    """MPT: ALiBi (slopes 1/2^(k x alibi_bias_max / n), positions from the last key), fused [q; k; v] (Wqkv) with
    optional clipping, LayerNorms without bias, a 4 x d_model exact-GELU MLP, no biases, a tied head."""
    hidden = r.int("d_model", 2048)
    c = _common(r, vocab=r.int("vocab_size", 50368), hidden=hidden, heads=r.int("n_heads", 16),
                layers=r.int("n_layers", 24), intermediate=4 * hidden, max_pos=r.int("max_seq_len", 2048))
    for key, allowed in MPT_FIXED.items():
        r.require_value(key, allowed, allowed[0])
    attn = r.any("attn_config", None) or {}
    if not isinstance(attn, dict):
        raise ConfigError(f"{r.where}: key 'attn_config' must be an object")
    a = ConfigReader(attn, f"{r.where}.attn_config")
    for key, allowed in MPT_ATTENTION_FIXED.items():
        a.require_value(key, allowed, allowed[0])
    clip = a.float("clip_qkv", None, nullable=True)
    scale = a.float("softmax_scale", None, nullable=True) or c.head_dim**-0.5
    max_bias = 8.0
    a.finish(frozenset({"attn_pdrop", "attn_impl", "model_type"}))
    mlp = Mlp(gated=False, activation="gelu", intermediate_size=c.intermediate_size)
    return _assemble(
        r, c, model_type=model_type, rope=None,
        norm=_torch_layernorm(r.float("layer_norm_epsilon", 1e-5)).model_copy(update={"bias": False}),
        attention=dict(qkv="fused", scale=scale, clip_qkv=clip,
                       alibi=Alibi(slopes="max_bias", max_bias=max_bias, from_last_key=True)),
        mlp=mlp, block="pre_norm", head=Head(tied=r.bool("tie_word_embeddings", True)), names=MPT_NAMES,
        extra_allowed=MPT_TRAINING,
    )


FALCON_NAMES = dict(backbone="transformer", embed="word_embeddings", layers="h", final_norm="ln_f",
                    attn="self_attention", qkv="query_key_value", o="dense", up="dense_h_to_4h", down="dense_4h_to_h")
FALCON_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "gelu_new": "gelu_new",
                      "gelu_pytorch_tanh": "gelu_tanh"}


def _replica_falcon(tiny: dict[str, Any], arch: Architecture) -> None:
    kv = tiny.pop("num_key_value_heads", None)
    tiny.pop("head_dim", None)
    tiny["ffn_hidden_size"] = tiny.pop("intermediate_size")
    if tiny.get("new_decoder_architecture"):
        tiny["num_kv_heads"] = kv
    elif tiny.get("num_kv_heads") is not None:
        tiny["num_kv_heads"] = tiny["num_attention_heads"]  # read only without multi_query, then equal to the heads
    tiny.pop("n_embed", None)


@family("falcon", title="Falcon", replica=_replica_falcon)
def lower_falcon(r: ConfigReader, model_type: str) -> Architecture:
    """Falcon, both decoder layouts: the new one (40B, 180B: grouped [q..; k; v] per key/value group, parallel
    attention and MLP under ln_attn / ln_mlp or one shared norm) and the old one (7B: multi-query [q; k; v], or
    per-head [q_h; k_h; v_h]; parallel or sequential blocks); RoPE; LayerNorms with bias; one bias switch for the
    projections; a tied head."""
    if r.has("n_embed") and r.has("hidden_size"):
        raise ConfigError(f"{r.where}: give either 'hidden_size' or its old name 'n_embed', not both")
    hidden = r.int("n_embed") if r.has("n_embed") else r.int("hidden_size", 4544)
    heads = r.int("num_attention_heads", 71)
    new = r.bool("new_decoder_architecture", False)
    multi_query = r.bool("multi_query", True)
    kv_key = r.int("num_kv_heads", None, nullable=True) or heads
    kv = kv_key if new else 1 if multi_query else heads
    if not new and not multi_query and kv_key != heads:
        raise ConfigError(f"{r.where}: 'num_kv_heads' ({kv_key}) must equal 'num_attention_heads' without "
                          "'multi_query' in the old decoder layout (its fused projection holds every head's k and v)")
    ffn = r.int("ffn_hidden_size", None, nullable=True) or 4 * hidden
    c = _common(r, vocab=r.int("vocab_size", 65024), hidden=hidden, heads=heads, layers=r.int("num_hidden_layers", 32),
                intermediate=ffn, max_pos=r.int("max_position_embeddings", 2048), kv=kv)
    alibi, parallel, bias = r.bool("alibi", False), r.bool("parallel_attn", True), r.bool("bias", False)
    if new and not parallel:
        raise ConfigError(f"{r.where}: 'new_decoder_architecture' with 'parallel_attn' false cannot be built by "
                          "transformers' Falcon (its layers then have no ln_attn)")
    norms = r.int("num_ln_in_parallel_attn", None, nullable=True) or (2 if new else 1)
    if new and norms not in (1, 2):
        raise ConfigError(f"{r.where}: 'num_ln_in_parallel_attn' must be 1 or 2")
    if alibi:
        # transformers 5.24's eager Falcon adds the ALiBi bias twice (inside the attention and again through the mask
        # it builds), its SDPA path once: there is no single reference to be equal to.
        raise UnsupportedError(f"{r.where}: key 'alibi' = true is not supported for model_type 'falcon' (transformers' "
                               "eager and SDPA attention disagree on it)")
    rope = _single_rope(r, c, theta_key="rope_theta", partial_key="partial_rotary_factor", partial_default=1.0)
    if rope.partial_rotary_factor != 1.0:
        raise ConfigError(f"{r.where}: Falcon rotates whole heads; a 'partial_rotary_factor' is not read by it")
    norm = _torch_layernorm(r.float("layer_norm_epsilon", 1e-5))
    mlp = Mlp(gated=False, activation=r.str("activation", "gelu", choices=FALCON_ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=bias)
    qkv = "fused_grouped" if new else "fused" if multi_query else "fused_per_head"
    attention: dict[str, Any] = dict(qkv=qkv, q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=c.head_dim**-0.5)
    two = new and norms == 2
    names = Names(**FALCON_NAMES, **({"input_norm": "ln_attn", "post_attn_norm": "ln_mlp"} if two else {}))
    return _assemble(
        r, c, model_type=model_type, rope=rope, norm=norm, attention=attention, mlp=mlp,
        block="parallel" if parallel or new else "pre_norm", parallel_norms=2 if two else 1,
        head=Head(tied=r.bool("tie_word_embeddings", True)), names=names,
        extra_allowed=frozenset({"hidden_dropout", "attention_dropout"}),
    )
