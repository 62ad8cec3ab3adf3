"""Quantized weights on disk: the formats a checkpoint's matrices may be stored in (the IR's
`Architecture.fp8` / `modelopt` / `mxfp4`). Re-exported from schemas.arch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Identifier, PositiveInt, _Frozen


class Fp8Weights(_Frozen):
    """Block-quantized float8 weights on disk: each quantized matrix W (out, in) is stored as e4m3
    values with a float32 `weight_scale_inv` of one entry per block; W = values x scale of the block."""

    format: Literal["e4m3"] = "e4m3"
    block: tuple[PositiveInt, PositiveInt] = (128, 128)
    activation_scheme: Literal["dynamic"] = "dynamic"


class ModeloptWeights(_Frozen):
    """An NVIDIA ModelOpt checkpoint (`quant_method: modelopt`). An NVFP4 matrix W (out, in) is stored as
    `<name>.weight` (out, in / 2) uint8, two e2m1 codes per byte (low nibble first), `<name>.weight_scale`
    (out, in / 16) float8 e4m3, one scale per 16 values, and `<name>.weight_scale_2`, a float32 global scale:
    W = e2m1 x (scale x global). An FP8 matrix is e4m3 `<name>.weight` with a float32 scalar `<name>.weight_scale`:
    W = value x scale. Scales for quantizing activations and the KV cache (`input_scale`, `k_scale`, `v_scale`)
    only concern inference engines that compute in low precision: the loader skips them."""

    nvfp4_group: Literal[16] = 16
    formats: tuple[Literal["nvfp4", "fp8"], ...] = Field(min_length=1, description="The formats the config names.")


class Mxfp4Weights(_Frozen):
    """OCP microscaling FP4 weights on disk (MXFP4): a quantized stacked tensor `<name>` (experts, in, out)
    is stored as `<name>_blocks` (experts, out, in / 32, 16) uint8, two e2m1 values per byte (low nibble
    first), and `<name>_scales` (experts, out, in / 32) uint8 e8m0 exponents, value = e2m1 x 2^(scale - 127)
    for each run of 32 values along `in`."""

    format: Literal["e2m1"] = "e2m1"
    block: Literal[32] = 32
    tensors: tuple[Identifier, ...] = Field(min_length=1, description="The experts' stacked tensors stored "
                                            "quantized (their names under the experts module).")
