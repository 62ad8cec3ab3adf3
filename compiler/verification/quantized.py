"""Quantized checkpoints (``Architecture.fp8``, ``Architecture.modelopt``): the shapes the generated
loader produces from them, for the compile-time checkpoint check (the loader itself dequantizes:
templates/model/dequantize.py.j2)."""

from __future__ import annotations

from ...schemas.arch import Architecture

Shapes = dict[str, tuple[int, ...]]
RUNTIME_SCALES = (".input_scale", ".k_scale", ".v_scale")  # activation and KV-cache scales: skipped


def dequantized_shapes(arch: Architecture, shapes: Shapes) -> Shapes:
    """``shapes`` as the loader leaves them: scale tensors gone, an NVFP4 weight (out, in / 2) as (out, in)."""
    if arch.fp8 is None and arch.modelopt is None:
        return shapes
    out = dict(shapes)
    if arch.fp8 is not None:
        for key in [k for k in out if k.endswith(".weight_scale_inv") and k.removesuffix("_scale_inv") in out]:
            del out[key]
    if arch.modelopt is not None:
        for key in [k for k in out if k.endswith(RUNTIME_SCALES)]:
            del out[key]
        for key in [k for k in out if k.endswith(".weight_scale") and k.removesuffix("_scale") in out]:
            weight = key.removesuffix("_scale")
            if f"{key}_2" in out and len(out[weight]) == 2:  # NVFP4: two values per byte
                out[weight] = (out[weight][0], out[weight][1] * 2)
                del out[f"{key}_2"]
            del out[key]
    return out
