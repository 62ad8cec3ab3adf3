"""The weight map of multi-head latent attention (used by weight_map.py)."""

from __future__ import annotations

from collections.abc import Callable

from ...schemas.arch import Mla, Norm


def mla_rows(mla: Mla, a: str, hidden: int, linear: Callable[[str, int, int, bool], None],
             norm_rows: Callable[[str, int, Norm], None]) -> None:
    """Tensors of one MLA block under prefix ``a`` (``{backbone}.layers.{i}.self_attn.``)."""
    mn, heads = mla.names, mla.num_heads
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    if mla.q_lora_rank is None:
        linear(a + mn.q, heads * qk, hidden, False)
    else:
        linear(a + mn.q_a, mla.q_lora_rank, hidden, mla.bias)
        norm_rows(a + mn.q_a_norm, mla.q_lora_rank, mla.latent_norm)
        linear(a + mn.q_b, heads * qk, mla.q_lora_rank, False)
    linear(a + mn.kv_a, mla.kv_lora_rank + mla.qk_rope_head_dim, hidden, mla.bias)
    norm_rows(a + mn.kv_a_norm, mla.kv_lora_rank, mla.latent_norm)
    linear(a + mn.kv_b, heads * (mla.qk_nope_head_dim + mla.v_head_dim), mla.kv_lora_rank, False)
    linear(a + mn.o, hidden, heads * mla.v_head_dim, mla.bias)
    if mla.indexer is not None:
        ix, x = mla.indexer, a + mla.indexer.names.indexer + "."
        linear(x + ix.names.q, ix.num_heads * ix.head_dim, mla.q_lora_rank, False)
        linear(x + ix.names.k, ix.head_dim, hidden, False)
        norm_rows(x + ix.names.k_norm, ix.head_dim, ix.k_norm)
        linear(x + ix.names.weights, ix.num_heads, hidden, False)
