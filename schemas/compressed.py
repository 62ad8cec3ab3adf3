"""Compressed attention, clamped routed experts and hyper-connections (the IR of DeepSeek-V4's blocks).

Like the rest of the IR: frozen, free of I/O, it says what the model is. ``arch.py`` adds the attention
to the ``Mixer`` union, the experts to ``FeedForward`` and the hyper-connections to ``Architecture``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import HeadCount, Identifier, PositiveInt, Width, _Frozen
from .moe import MAX_EXPERTS


class Compressor(_Frozen):
    """Pools every `rate` consecutive source tokens into one key entry: each token projects a key part
    (`wkv`) and a gate (`wgate`, plus a learned bias per position in the window, `ape`); the entry is the
    softmax(gate)-weighted sum of the parts over the window, RMS-normalised (`norm`), its trailing rope
    channels rotated at the window's first position. Only complete windows make entries; query t sees
    entry w when (t + 1) // rate > w."""

    rate: PositiveInt
    head_dim: Width
    overlapping: bool = Field(description="Each token projects two parts (2 x head_dim): entry w pools window "
                              "w's second parts with window w - 1's first parts (width 2 x rate, stride rate).")


class SparseSelection(_Frozen):
    """The lightning indexer over compressed entries: its own compressor (head_dim wide), queries from
    the query latent (`wq_b`, num_heads x head_dim, rope on the trailing rope channels), scores
    sum_h w_h relu(q_h . k) / sqrt(head_dim), w = weights_proj(x) / sqrt(num_heads); each query keeps
    the `topk` best causal entries, the only compressed entries it attends to."""

    num_heads: HeadCount
    head_dim: Width
    topk: PositiveInt
    compressor: Compressor


class CompressedAttention(_Frozen):
    """Multi-query attention with one shared key=value head (`wkv`, RMS-normed, rope on its trailing
    `rope_dim` channels), low-rank queries (`wq_a`, `q_norm`, `wq_b`, then an unweighted RMS norm per
    head), keys within the last `window` positions plus compressed entries (when `compressor` is set),
    a learned sink logit per head (`attn_sink`), the rope undone on the output (minus the angle) and a
    grouped low-rank output (`wo_a`: each of `o_groups` head groups to `o_lora_rank`, then `wo_b`)."""

    kind: Literal["compressed_attention"] = "compressed_attention"
    num_heads: HeadCount
    head_dim: Width
    rope_dim: PositiveInt = Field(description="Trailing channels of each head that RoPE rotates (pairs 2i, 2i+1).")
    q_lora_rank: Width
    window: PositiveInt = Field(description="Keys within the last `window` positions (self included).")
    o_groups: PositiveInt
    o_lora_rank: Width
    scale: Annotated[float, Field(gt=0)]
    rope: Identifier = Field(description="The RoPE table of the queries, keys and compressed entries.")
    compressor: Compressor | None = None
    selection: SparseSelection | None = Field(None, description="The compressed entries a query sees are chosen "
                                              "by an indexer (else all causal ones).")
    eps: Annotated[float, Field(gt=0)]

    @property
    def letter(self) -> str:
        """Its layer-pattern letter: S = sliding window only, K = compressed sparse (indexed), H = heavily compressed."""
        return "S" if self.compressor is None else "K" if self.selection is not None else "H"

    @model_validator(mode="after")
    def _shapes(self) -> "CompressedAttention":
        if self.rope_dim > self.head_dim or self.rope_dim % 2:
            raise ValueError(f"rope_dim ({self.rope_dim}) must be even and at most head_dim ({self.head_dim})")
        if self.num_heads % self.o_groups:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of o_groups ({self.o_groups})")
        if self.compressor is not None and self.compressor.head_dim != self.head_dim:
            raise ValueError("the compressor's entries are head_dim wide")
        if self.selection is not None and self.compressor is None:
            raise ValueError("an indexer selects compressed entries: it needs a compressor")
        return self


class ClampedMoe(_Frozen):
    """Routed experts plus one shared expert, all SwiGLU with gate <= limit and |up| <= limit. The router
    scores experts with `scoring` (sqrtsoftplus: sqrt(softplus(logit))); a hashed layer takes its
    experts from a stored token-id table (`tid2eid`, vocab x top_k), otherwise the top_k of
    score + correction bias (`bias`); the chosen scores are divided by their sum (+1e-20) and multiplied
    by routed_scaling_factor."""

    kind: Literal["clamped_moe"] = "clamped_moe"
    num_experts: Annotated[int, Field(gt=0, le=MAX_EXPERTS)]
    top_k: PositiveInt
    intermediate_size: Width
    scoring: Literal["sqrtsoftplus", "sigmoid"]
    hashed: bool
    routed_scaling_factor: float
    swiglu_limit: Annotated[float, Field(gt=0)]


class HyperConnections(_Frozen):
    """The residual stream is `streams` copies of the hidden state. Around each block, a projection of the
    RMS-normed (unweighted) streams gives pre (sigmoid + eps: the block input is sum_s pre_s x_s), post
    (2 sigmoid: the block output added to each stream) and comb (softmax + eps, then Sinkhorn: columns,
    then rows and columns `sinkhorn_iters - 1` times, each divided by its sum + eps: how the old streams
    mix into the new). A final head projection collapses the streams (pre only) before the final norm."""

    streams: PositiveInt
    sinkhorn_iters: PositiveInt
    eps: Annotated[float, Field(gt=0)]
    norm_eps: Annotated[float, Field(gt=0)]
