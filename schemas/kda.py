"""IR of Kimi Delta Attention (``Layer.mixer`` kind ``kda``: Kimi Linear).

Like Gated DeltaNet it keeps no keys and values but a fixed-size state per sequence (the short
convolutions' last inputs and one matrix per head). Unlike it, the forget gate decays every key
channel of the state on its own (a vector per head and position, not one number), and each of q,
k and v has its own short convolution.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import MAX_WIDTH, HeadCount, Identifier, Norm, PositiveInt, Width, _Frozen


class KimiDeltaNames(_Frozen):
    """Checkpoint names inside a Kimi Delta Attention block (the block itself is ``Names.attn``)."""

    q: Identifier = "q_proj"
    k: Identifier = "k_proj"
    v: Identifier = "v_proj"
    q_conv: Identifier = "q_conv1d"
    k_conv: Identifier = "k_conv1d"
    v_conv: Identifier = "v_conv1d"
    f_a: Identifier = "f_a_proj"
    f_b: Identifier = "f_b_proj"
    a_log: Identifier = "A_log"
    dt_bias: Identifier = "dt_bias"
    b: Identifier = "b_proj"
    g_a: Identifier = "g_a_proj"
    g_b: Identifier = "g_b_proj"
    norm: Identifier = "o_norm"
    out: Identifier = "o_proj"


class KimiDelta(_Frozen):
    """Kimi Delta Attention: per head a matrix state S (head_dim x head_dim) updated by the delta rule
    with a channel-wise forget gate, S_t = Diag(exp(g_t)) S_{t-1} + beta_t k_t (v_t - (Diag(exp(g_t))
    S_{t-1})^T k_t)^T, read out as o_t = S_t^T q_t / sqrt(head_dim). q, k, v: three projections, each
    through its own causal depthwise convolution and SiLU, q and k L2-normalised. The log forget gate
    g_t = -exp(A_log[head]) softplus(f_b(f_a(x_t)) + dt_bias) is a vector per head (one entry per key
    channel), through a low-rank (head_dim) projection; beta_t = sigmoid(b(x_t)) per head. The output
    is RMS-normed per head, gated by sigmoid(g_b(g_a(x_t))) (low-rank too) and projected back."""

    kind: Literal["kda"] = "kda"
    num_heads: HeadCount
    head_dim: Width = Field(description="Channels of each head's q, k and v (also the rank of the gates' "
                            "low-rank projections).")
    conv_kernel: Annotated[int, Field(ge=1, le=64)] = Field(description="Taps of each causal depthwise convolution.")
    norm: Norm = Field(description="The RMSNorm over each head's output (weight ones-neutral, in float32), "
                       "multiplied by sigmoid(gate).")
    chunk_size: PositiveInt = Field(64, description="Positions per chunk of the chunked (prefill) form of the rule.")
    l2_eps: Annotated[float, Field(gt=0)] = Field(1e-6, description="eps of the L2 norm on q and k.")
    names: KimiDeltaNames = KimiDeltaNames()

    @property
    def width(self) -> int:
        """num_heads x head_dim: the width of q, k, v and of the forget gate."""
        return self.num_heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the three convolutions together, [q; k; v] (what the convolution state holds)."""
        return 3 * self.width

    @model_validator(mode="after")
    def _sizes(self) -> "KimiDelta":
        if self.conv_dim > MAX_WIDTH:
            raise ValueError(f"3 x num_heads x head_dim exceeds {MAX_WIDTH}")
        return self
