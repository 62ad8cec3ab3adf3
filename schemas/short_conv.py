"""IR of the double-gated short convolution (``Layer.mixer`` kind ``short_conv``: LFM2, LFM2-MoE).

A short-convolution layer mixes tokens through a causal depthwise convolution a few taps long:
it keeps no keys and values, only the last ``kernel - 1`` inputs of its convolution, so its cache
has the same size whatever the length of the text.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import Identifier, Width, _Frozen


class ShortConvNames(_Frozen):
    """Checkpoint names inside a short-convolution block (the block itself is ``Names.short_conv``)."""

    in_proj: Identifier = "in_proj"
    conv: Identifier = "conv"
    out_proj: Identifier = "out_proj"


class ShortConv(_Frozen):
    """Double-gated short convolution: in_proj(x) splits into three (channels)-wide parts B, C and h;
    the gated input B * h goes through a causal depthwise convolution of `kernel` taps,
    y_t = C_t * sum_j w_j (B * h)_{t - kernel + 1 + j} (zeros before the first position, plus the conv bias
    where there is one), and out_proj maps y back to the hidden size."""

    kind: Literal["short_conv"] = "short_conv"
    channels: Width = Field(description="Width of B, C, h and the convolution (the hidden size in LFM2).")
    kernel: Annotated[int, Field(ge=1, le=64)] = Field(description="Taps of the causal depthwise convolution "
                                                       "(LFM2's conv_L_cache); the cache keeps kernel - 1 inputs.")
    bias: bool = Field(False, description="in_proj, the convolution and out_proj each have a bias (conv_bias).")
    names: ShortConvNames = ShortConvNames()

    @property
    def in_width(self) -> int:
        """Rows of in_proj: [B; C; h]."""
        return 3 * self.channels
