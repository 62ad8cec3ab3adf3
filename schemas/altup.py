"""IR of Gemma 3n's residual-stream mechanisms: alternating updates (``Architecture.altup``) and the
learned augmented residual layer (``Layer.laurel``).

AltUp widens the residual stream into ``num_inputs`` streams of hidden_size each: the embeddings are the
first stream and learned projections of them (rescaled to the embeddings' RMS) the others. Each layer
*predicts* every stream as a mix of all of them (coefficients from a router that reads the active stream),
runs its block on the active stream only, then *corrects* every prediction by the block's innovation
(again router-weighted). After the last layer the other streams are projected back, rescaled, and the
streams averaged into one.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from .base import Norm, Width, _Frozen


class AltUp(_Frozen):
    """Alternating updates over `num_inputs` residual streams (module `altup` of each layer, projections
    `altup_projections` / `altup_unembed_projections` of the backbone). With per-layer inputs, a layer's own
    input is gated from its corrected active stream (times `correct_output_scale` when correct_scale) and added
    to streams 1.. (every stream but the first, whatever the active index)."""

    num_inputs: Annotated[int, Field(ge=1, le=16)]
    active_index: Annotated[int, Field(ge=0)] = Field(description="The stream the layer's block reads and corrects.")
    correct_scale: bool = Field(description="The corrected active stream is multiplied by the stored vector "
                                "`correct_output_scale` before it feeds the per-layer input gate.")
    router_norm: Norm = Field(description="The router's input norm (`router_norm`).")
    router_input_scale: float = Field(description="Multiplies the normed router input (1 / hidden_size).")
    magnitude_floor: Annotated[float, Field(gt=0)] = Field(description="The mean square of a projected stream is "
                                                           "clamped to at least this before its RMS divides it.")

    @model_validator(mode="after")
    def _active_stream(self) -> "AltUp":
        if self.active_index >= self.num_inputs:
            raise ValueError(f"active_index ({self.active_index}) must be below num_inputs ({self.num_inputs})")
        return self


class Laurel(_Frozen):
    """A low-rank residual branch beside attention (module `laurel`): on the normed block input h it adds
    h + post_laurel_norm(linear_right(linear_left(h))) to the attention's residual sum, which is then divided
    by `divisor`."""

    rank: Width
    norm: Norm
    divisor: Annotated[float, Field(gt=0)]
