"""IR of multi-head latent attention (``Layer.mixer`` kind ``mla``, DeepSeek V2/V3)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import MAX_WIDTH, HeadCount, Identifier, Norm, Width, _Frozen, _unset

class MlaNames(_Frozen):
    """Checkpoint names inside multi-head latent attention (the block itself is ``Names.attn``)."""

    q: Identifier = "q_proj"
    q_a: Identifier = "q_a_proj"
    q_a_norm: Identifier = "q_a_layernorm"
    q_b: Identifier = "q_b_proj"
    kv_a: Identifier = "kv_a_proj_with_mqa"
    kv_a_norm: Identifier = "kv_a_layernorm"
    kv_b: Identifier = "kv_b_proj"
    o: Identifier = "o_proj"


class IndexerNames(_Frozen):
    """Checkpoint names inside the lightning indexer (under the attention block)."""

    indexer: Identifier = "indexer"
    q: Identifier = "wq_b"
    k: Identifier = "wk"
    k_norm: Identifier = "k_norm"
    weights: Identifier = "weights_proj"


class Indexer(_Frozen):
    """DeepSeek Sparse Attention's lightning indexer: picks, for each query, the `topk` keys the
    attention may see. Its queries come from the query latent (q_a -> norm), one key per position from
    the hidden state (wk -> LayerNorm with bias), both `head_dim` wide with RoPE on their first
    qk_rope_head_dim channels; a key's score is sum over heads of weight(x)_h * relu(q_h . k) / sqrt(head_dim),
    weights from weights_proj(x) / sqrt(num_heads). Only causal keys compete; the keys join the cache."""

    num_heads: HeadCount
    head_dim: Width
    topk: Annotated[int, Field(ge=1)] = Field(description="Keys each query keeps (index_topk).")
    rope_interleave: bool = Field(description="The rotated channels are stored as adjacent pairs (regrouped as "
                                  "[evens; odds] before rotate-half); False: rotate-half directly.")
    k_norm: Norm = Field(description="The LayerNorm (with bias) on the indexer key.")
    names: IndexerNames = IndexerNames()


class Mla(_Frozen):
    """Multi-head latent attention (DeepSeek-V2/V3). Keys and values are expanded per head from a
    compressed latent (kv_a -> norm -> kv_b) plus one decoupled RoPE key of `qk_rope_head_dim`
    channels shared by all heads; queries come from q_proj, or a low-rank q_a -> norm -> q_b.
    A query/key head is [nope channels; rope channels], a value head `v_head_dim` channels."""

    kind: Literal["mla"] = "mla"
    span: Literal["full"] = "full"
    window: None = None
    num_heads: HeadCount
    q_lora_rank: Width | None = Field(description="Rank of the low-rank query projection; None: a plain q_proj.")
    kv_lora_rank: Width = Field(description="Channels of the compressed key/value latent (what a cache stores).")
    qk_nope_head_dim: Width
    qk_rope_head_dim: Width = Field(description="Channels of each query/key head that are rotated (RoPE).")
    v_head_dim: Width
    rope: Identifier | None = Field(description="Name of the RoPE table over the qk_rope_head_dim channels; None: they are "
                                      "not rotated (NoPE: Kimi Linear).")
    rope_deinterleave: bool = Field(
        False, description="The rope channels are stored as adjacent pairs (x0, x1), (x2, x3), ...: they are "
        "regrouped as [evens; odds] before the rotate-half rotation (transformers' rope_interleave).")
    bias: bool = Field(False, description="q_a, kv_a and o projections carry a bias (attention_bias).")
    latent_norm: Norm = Field(description="The RMSNorm on the query and key/value latents.")
    scale: Annotated[float, Field(gt=0)] = Field(description="Multiplies q.k before the softmax.")
    names: MlaNames = MlaNames()
    indexer: Indexer | None = Field(None, exclude_if=_unset, description="DeepSeek Sparse Attention: a lightning "
                                    "indexer chooses the keys each query attends to; None: every causal key.")

    @property
    def head_dim(self) -> int:
        """The channels the RoPE table rotates (the Config's head_dim, as in transformers)."""
        return self.qk_rope_head_dim

    @property
    def num_kv_heads(self) -> int:
        return self.num_heads

    @model_validator(mode="after")
    def _sizes(self) -> "Mla":
        if self.num_heads * max(self.qk_nope_head_dim + self.qk_rope_head_dim, self.v_head_dim) > MAX_WIDTH:
            raise ValueError(f"num_heads x head width exceeds {MAX_WIDTH}")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim ({self.qk_rope_head_dim}) must be even")
        if self.indexer is not None:
            if self.q_lora_rank is None:
                raise ValueError("an indexer reads the query latent: q_lora_rank must be set")
            if self.indexer.head_dim < self.qk_rope_head_dim:
                raise ValueError(f"indexer head_dim ({self.indexer.head_dim}) is under qk_rope_head_dim "
                                 f"({self.qk_rope_head_dim})")
        return self
