"""MXFP4 checkpoints (``Architecture.mxfp4``): the on-disk names and shapes of quantized tensors.

A quantized stacked tensor ``<name>`` of shape (experts, in, out) is stored as ``<name>_blocks``
(experts, out, in / 32, 16) uint8 and ``<name>_scales`` (experts, out, in / 32) uint8; the
generated loader dequantizes them (templates/model/weights.py.j2). Used by the compile-time
checkpoint check, which accepts either form of each such tensor.
"""

from __future__ import annotations

from ...schemas.arch import Architecture
from ..basics.errors import ConfigError

Shapes = dict[str, tuple[int, ...]]
BYTES_PER_BLOCK = 16  # 32 four-bit values


def quantized_form(arch: Architecture, key: str, shape: tuple[int, ...]) -> Shapes | None:
    """{"<key>_blocks": shape, "<key>_scales": shape} when ``key`` is stored quantized, else None."""
    if arch.mxfp4 is None or not key.endswith(tuple(f".{name}" for name in arch.mxfp4.tensors)):
        return None
    *lead, inner, outer = shape
    if inner % arch.mxfp4.block:
        raise ConfigError(f"{key}: {inner} input channels are not a multiple of the MXFP4 block ({arch.mxfp4.block})")
    groups = inner // arch.mxfp4.block
    return {f"{key}_blocks": (*lead, outer, groups, BYTES_PER_BLOCK), f"{key}_scales": (*lead, outer, groups)}


def accept_quantized(arch: Architecture, wanted: Shapes, found: Shapes) -> Shapes:
    """``wanted`` with each tensor that ``found`` holds in quantized form replaced by that form."""
    out: Shapes = {}
    for key, shape in wanted.items():
        quantized = quantized_form(arch, key, shape)
        if quantized is not None and key not in found and any(k in found for k in quantized):
            out.update(quantized)
        else:
            out[key] = shape
    return out
