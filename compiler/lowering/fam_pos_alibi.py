"""Families whose only position signal is ALiBi (linear biases by key position): BLOOM.

Each reads exactly the keys its transformers 5.24 config class and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Alibi, Architecture, Head, Mlp, Names
from ..errors import ConfigError
from .fam_gpt import _assemble, _common, _torch_layernorm
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
