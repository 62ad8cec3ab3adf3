"""int8 weights for decoding: an opt-in runtime switch (`llmgen generate --weights-dtype int8`,
`use_fast_decode(model, weights="int8")`) for a float32 model; the generated file is unchanged.

A decoding step reads every weight once, so its time is the weights' bytes over the memory
bandwidth: int8 weights are a quarter of float32's bytes. Each weight matrix of an nn.Linear (and
the tied output head's copy of the embedding matrix) is stored as int8 with one float32 scale per
output row, symmetric: scale = max |w| of the row / 127, q = round(w / scale). The activations
stay float32: the native kernel (kernels/gemv_isa.h) widens each int8 weight to float32 (exact),
sums the products of a row in float32 and multiplies the sum by the row's scale. Prefill (more
than MAX_ROWS rows) runs the kernel's matrix product on the dequantized weights (kernels/gemm.h:
a panel of 16 rows at a time, in the cache; without AVX2, torch's float32 product on blocks of
dequantized rows). What it changes: every weight moves by at most half a step of its row's scale (the
rounding), so logits differ from the float32 model's; tests/test_int8_weights.py bounds that.
"""

from __future__ import annotations

import functools
from typing import Any

WEIGHTS = ("model", "int8")  # the model's own dtype, or int8 with per-row scales
DEQUANT_BLOCK = 1 << 20  # weight elements dequantized at a time in prefill (4 MiB of float32)


def quantize(weight: Any) -> tuple[Any, Any]:
    """(q, scale): int8 q (rows, in) and float32 scale (rows,) with q * scale[:, None] ~ weight,
    each row scaled so that its largest magnitude is 127 (a row of zeros: scale 1)."""
    import torch

    wide = weight.detach().float()
    largest = wide.abs().amax(dim=1)
    scale = torch.where(largest > 0, largest / 127, torch.ones_like(largest))
    q = torch.round(wide / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantize(q: Any, scale: Any) -> Any:
    """The float32 weights that int8 q and its row scales stand for."""
    return q.float() * scale[:, None]


@functools.cache
def gemv_int8_op() -> Any:
    """The native int8 product as a torch operator (llmgen_native::gemv_int8) for compiled steps."""
    import torch

    from . import native

    native.kernel()  # loading the module registers the operator

    @torch.library.register_fake("llmgen_native::gemv_int8")
    def _(x: Any, w: Any, scale: Any, bias: Any, level: int) -> Any:
        return x.new_empty((*x.shape[:-1], w.shape[0]))

    return torch.ops.llmgen_native.gemv_int8.default


def product(traced: bool = False) -> Any:
    """(x, q, scale, bias) -> x @ dequantize(q, scale).T + bias: the native kernel for a few rows
    of x; for more (prefill) its matrix product (kernels/gemm.h, AVX2: each panel of weights
    dequantized inside the cache), or else blocks of dequantized weights under torch's product."""
    import torch
    import torch.nn.functional as F

    from . import native
    from .fast_decode import MAX_ROWS

    module = native.kernel("float32")
    if module is None:
        raise ValueError(f"int8 weights need the native kernel: {native.unavailable('float32')}")
    level = min(native.LEVELS.index(native.level("float32")), native.LEVELS.index("avx2"))
    # traced (compiled steps): the operator, looked up now; a cached lookup inside the traced
    # code breaks the graph, and with tensor-only guards one compiled piece served every layer
    op = gemv_int8_op() if traced else module.gemv_int8
    gemv = lambda x, q, s, b: op(x, q, s, b, level)  # noqa: E731

    def run(x: Any, q: Any, scale: Any, bias: Any = None) -> Any:
        if x.numel() <= MAX_ROWS * x.shape[-1]:
            return gemv(x, q, scale, bias)
        if level >= 1:  # AVX2: the native matrix product, weights dequantized a panel at a time
            return module.prefill_int8(x, q, scale, bias)
        rows, width = q.shape
        flat, step = x.reshape(-1, width), max(1, DEQUANT_BLOCK // max(1, width))
        out = torch.empty(flat.shape[0], rows, dtype=x.dtype)
        for r in range(0, rows, step):
            out[:, r : r + step] = F.linear(flat, dequantize(q[r : r + step], scale[r : r + step]),
                                            None if bias is None else bias[r : r + step])
        return out.reshape(*x.shape[:-1], rows)

    return run


def quantize_model(model: Any, traced: bool = False) -> int:
    """Give every float32 nn.Linear of `model` int8 weights (`weight_int8`, `weight_scale`; its
    float32 `weight` becomes None and is freed) and a forward on them, and a tied output head
    (`head_product`) an int8 copy of the embedding matrix (`head_int8`, `head_scale`; the
    embedding itself stays float32 for the lookup). Returns how many products run on int8."""
    import torch
    import torch.nn as nn

    run, count = product(traced), 0
    for module in model.modules():
        if not isinstance(module, nn.Linear) or module.weight is None or module.weight.dtype != torch.float32:
            continue
        q, scale = quantize(module.weight)
        module.weight_int8 = nn.Parameter(q, requires_grad=False)
        module.weight_scale = nn.Parameter(scale, requires_grad=False)
        module.register_parameter("weight", None)
        module.forward = lambda x, m=module: run(x, m.weight_int8, m.weight_scale, m.bias)
        count += 1
    if hasattr(model, "head_product"):
        embedding = next(m for m in model.modules() if isinstance(m, nn.Embedding)).weight
        q, scale = quantize(embedding)
        model.head_int8 = nn.Parameter(q, requires_grad=False)
        model.head_scale = nn.Parameter(scale, requires_grad=False)
        model.head_product = lambda x, weight, bias=None: run(x, model.head_int8, model.head_scale, bias)
        count += 1
    return count
