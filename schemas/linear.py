"""IR of linear-attention mixers (``Layer.mixer`` kind ``gated_deltanet``: Qwen3-Next, Qwen3.5/3.6).

A linear-attention layer keeps no keys and values: it carries a fixed-size state from token to
token (a short convolution window and one matrix per value head), so its cache does not grow
with the text.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import MAX_WIDTH, HeadCount, Identifier, Norm, PositiveInt, Width, _Frozen


class GatedDeltaNetNames(_Frozen):
    """Checkpoint names inside a Gated DeltaNet block (the block itself is ``Names.linear_attn``)."""

    qkvz: Identifier = "in_proj_qkvz"
    ba: Identifier = "in_proj_ba"
    qkv: Identifier = "in_proj_qkv"
    z: Identifier = "in_proj_z"
    b: Identifier = "in_proj_b"
    a: Identifier = "in_proj_a"
    conv: Identifier = "conv1d"
    a_log: Identifier = "A_log"
    dt_bias: Identifier = "dt_bias"
    norm: Identifier = "norm"
    out: Identifier = "out_proj"


class GatedDeltaNet(_Frozen):
    """Gated DeltaNet: per value head a matrix state S (k_head_dim x v_head_dim) updated by the gated
    delta rule, S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - exp(g_t) S_{t-1}^T k_t)^T, read out as
    o_t = S_t^T q_t / sqrt(k_head_dim); q, k, v come from one in-projection through a causal depthwise
    convolution and SiLU, q and k L2-normalised; g_t = -exp(A_log) softplus(a_t + dt_bias) and
    beta_t = sigmoid(b_t) per value head; the output is RMS-normed per head, gated by SiLU(z) and
    projected back to the hidden size."""

    kind: Literal["gated_deltanet"] = "gated_deltanet"
    num_k_heads: HeadCount = Field(description="Query/key heads; each serves num_v_heads / num_k_heads value heads.")
    num_v_heads: HeadCount
    k_head_dim: Width
    v_head_dim: Width
    conv_kernel: Annotated[int, Field(ge=1, le=64)] = Field(description="Taps of the causal depthwise convolution.")
    projection: Literal["grouped_qkvz", "separate"] = Field(
        description="grouped_qkvz: one in_proj_qkvz and one in_proj_ba, their rows grouped by key head ([q_h; k_h; "
        "v of the head's value group; z of it] for each key head h; [b; a] likewise) (Qwen3-Next). separate: "
        "in_proj_qkv ([q; k; v]), in_proj_z, in_proj_b, in_proj_a (Qwen3.5).")
    norm: Norm = Field(description="The gated RMSNorm over each value head's output (weight ones-neutral), "
                       "multiplied by SiLU(z).")
    chunk_size: PositiveInt = Field(64, description="Positions per chunk of the chunked (prefill) form of the rule.")
    l2_eps: Annotated[float, Field(gt=0)] = Field(1e-6, description="eps of the L2 norm on q and k.")
    names: GatedDeltaNetNames = GatedDeltaNetNames()

    @property
    def key_dim(self) -> int:
        return self.num_k_heads * self.k_head_dim

    @property
    def value_dim(self) -> int:
        return self.num_v_heads * self.v_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the convolution: [q; k; v]."""
        return 2 * self.key_dim + self.value_dim

    @model_validator(mode="after")
    def _sizes(self) -> "GatedDeltaNet":
        if self.num_v_heads % self.num_k_heads:
            raise ValueError(f"num_v_heads ({self.num_v_heads}) must be a multiple of num_k_heads ({self.num_k_heads})")
        if 2 * (self.key_dim + self.value_dim) > MAX_WIDTH:
            raise ValueError(f"the in-projection width exceeds {MAX_WIDTH}")
        return self
