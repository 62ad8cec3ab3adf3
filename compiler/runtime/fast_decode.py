"""Faster decoding steps: a runtime switch that `llmgen generate` and the benchmark apply to a
loaded generated model (the generated file itself is unchanged).

One decoding step multiplies each weight matrix by a single vector (a few, for a small batch),
so it costs one read of every weight. torch's matrix product reads them slowly there: a
float32 matrix-vector product runs on one core, whatever the thread count, and a bfloat16 one
is slower still. Two replacements, for inputs of at most MAX_ROWS rows (prefill keeps torch's
own product, bit for bit):

- "native": compiler/runtime/native.py's kernel, the same dot products accumulated in float32, at the
  CPU's instruction-set level (AVX2+FMA, AVX-512F, AVX512_BF16, or portable C++: chosen at run
  time), on as many threads as the product's size pays for. float32 and bfloat16.
- "row_blocks": float32 only, no compiler needed: the matrix's rows in `threads` equal blocks,
  computed by one batched product (torch.bmm), which torch spreads over its threads.

Either equals nn.Linear up to float rounding: the same dot products, summed in another order.
In float32 that is ~1e-7 relative (tests/test_fast_decode.py). In bfloat16 a different order
can round a result to the neighbouring bfloat16 value, which can flip a greedy choice where
two logits nearly tie; transformers' own bfloat16 run differs from its float32 run far more
(benchmarks/bench_inference.py prints both agreements).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

MAX_ROWS = 4  # inputs with more rows than this (prefill) keep torch's own matrix product
KERNELS = ("auto", "native", "row_blocks", "off")
# Opt-in: bfloat16 prefill as float32 products (upcast_linear: the native kernel's matrix product,
# or weights upcast a block of rows at a time) on a CPU without native bfloat16 arithmetic, where
# torch's bfloat16 product is several times slower than its float32 one. The same dot products
# rounded once, but not torch's bits: a result can land on the neighbouring bfloat16 value.
# LLMGEN_BF16_PREFILL=float32 turns it on.
BF16_PREFILL = ("torch", "float32")
UPCAST_BLOCK = 1 << 22  # weight elements upcast at a time (16 MiB of float32)
_SCRATCH = threading.local()  # upcast_linear's float32 buffer, one per thread


def upcast_linear(x: Any, weight: Any, bias: Any, gemm: Any) -> Any:
    """F.linear of bfloat16 x and weight computed in float32, rounded once to bfloat16. With
    `gemm`, the native kernel's matrix product at the AVX2 or AVX-512F level (_gemm(), which the
    caller looks up once: the lookup costs ~0.1 ms, 26 ms of a 211-product forward), which widens
    the weights a panel at a time inside the cache (measured faster than torch's float32 product
    on the same shapes). Else the weight is widened a block of rows at a time into one float32
    buffer that every call reuses (on the native kernel's threads where it is built: torch's
    conversion is an OpenMP region, measured ~10x slower on a busy 2-core machine), and each
    block's results are rounded straight into the output (no concatenation)."""
    import torch
    import torch.nn.functional as F

    if gemm is not None and weight.is_contiguous():
        return gemm(x, weight, bias)
    wide, (rows, width) = x.float().reshape(-1, x.shape[-1]), weight.shape
    step = min(rows, max(1, UPCAST_BLOCK // max(1, width)))
    scratch = getattr(_SCRATCH, "weights", None)
    if scratch is None or scratch.numel() < step * width:
        scratch = _SCRATCH.weights = torch.empty(step * width, dtype=torch.float32)
    widen = _widen() if weight.is_contiguous() else None
    out = torch.empty(wide.shape[0], rows, dtype=torch.bfloat16)
    for r in range(0, rows, step):
        block = weight[r : r + step]
        wide_block = scratch[: block.numel()].view(block.shape)
        widen(block, wide_block) if widen is not None else wide_block.copy_(block)
        part = F.linear(wide, wide_block)
        if bias is not None:
            part += bias[r : r + step].float()
        out[:, r : r + step] = part  # each float32 sum rounded once
    return out.reshape(*x.shape[:-1], rows)


def _gemm() -> Any:
    """The native kernel's bfloat16 prefill product (kernels/gemm.h: the weights widened a panel at a
    time inside a matrix product, never in memory) where it runs: at the AVX2 and AVX-512F levels
    (LLMGEN_ISA may cap it), not AVX512_BF16 (whose CPUs multiply bfloat16 themselves); else None."""
    from . import native

    module = native.kernel("bfloat16")
    if module is None or native.level("bfloat16") not in ("avx2", "avx512"):
        return None
    return module.prefill_bf16


@functools.cache
def _widen() -> Any:
    """The native kernel's bfloat16 -> float32 conversion on its own threads, or None."""
    from . import native

    module = native.kernel("bfloat16")
    return None if module is None else module.widen


def bf16_prefill() -> str:
    """LLMGEN_BF16_PREFILL: "torch" (default: torch's own bfloat16 product) or "float32"."""
    import os

    value = os.environ.get("LLMGEN_BF16_PREFILL", "torch")
    if value not in BF16_PREFILL:
        raise ValueError(f"LLMGEN_BF16_PREFILL={value}: not one of {', '.join(BF16_PREFILL)}")
    return value


def greedy_next(logits: Any) -> Any:
    """The greedy next token of each row, (batch, 1), from logits (batch, seq, vocab): the argmax
    of the last position's logits widened to float32 (the same index, the first largest value;
    torch's bfloat16 argmax is ~3x slower: ~220 against ~65 us over SmolLM2's 49152 logits), on
    one torch thread. Between two decoding steps a parallel region of torch's (the widening of
    49152 logits is one) leaves its OpenMP workers spinning into the next step on the core that
    the native kernel's helper thread needs (measured, bfloat16 SmolLM2-135M, 2 threads, compiled
    steps: 16.0 ms a step after a 2-thread widening, 11.2 after a 1-thread one, 11.8 after the
    bfloat16 argmax)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return logits[:, -1].float().argmax(-1, keepdim=True)
    finally:
        torch.set_num_threads(threads)


def row_block_linear(x: Any, weight: Any, bias: Any, blocks: int) -> Any:
    """x @ weight.T (+ bias) for an x of a few rows, as `blocks` row blocks of the weight."""
    import torch

    rows = x.reshape(-1, x.shape[-1])  # (n, in)
    # weight (out, in) -> (blocks, out / blocks, in): a view; the product is (blocks, out / blocks, n)
    out = torch.bmm(weight.view(blocks, -1, weight.shape[1]), rows.t().expand(blocks, -1, -1))
    out = out.reshape(weight.shape[0], -1).t()  # (n, out)
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def choose(kernel: str, dtype: Any, threads: int) -> tuple[str, str | None]:
    """The kernel to run for `kernel` (one of KERNELS) and the model's dtype, and why the
    requested one is not available (None when it is)."""
    import torch

    from . import native

    name = str(dtype).removeprefix("torch.")
    if kernel == "off":
        return "off", None
    why = None
    if kernel in ("auto", "native"):
        why = native.unavailable(name)
        if why is None:
            return "native", None
        why = f"native kernel unavailable: {why}"
    if dtype == torch.float32 and threads > 1:
        return "row_blocks", why
    return "off", why or "row blocks need float32 and more than one thread"


def label(used: str, dtype: Any) -> str:
    """The kernel in use as `llmgen generate` prints it: native with its instruction-set level."""
    from . import native

    return f"native ({native.level(str(dtype).removeprefix('torch.'))})" if used == "native" else used


def use_fast_decode(model: Any, kernel: str = "auto", threads: int | None = None,
                    compile: bool = False, weights: str = "model") -> tuple[str, int, str | None]:
    """Give every nn.Linear of `model` (and a tied output head: a generated model's
    `head_product`) the chosen few-row product; "off" gives them their own back. The native
    kernel also moves the weights onto huge pages (huge_page_weights). compile=True:
    decoding steps on a static cache (`enable_static_cache`) run through torch.compile
    (compiled_steps). weights="int8": a float32 model's products on int8 weights with per-row
    scales (int8_weights.py; the native kernel only). Returns the kernel in use, how many layers
    and heads run on it, and why the requested kernel is not the one in use (None when it is)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    threads = threads or torch.get_num_threads()
    dtype = next(model.parameters()).dtype
    used, why = choose(kernel, dtype, threads)
    product, checked = _products(used, dtype, threads, traced=compile)
    int8 = 0
    if weights == "int8":
        if used != "native" or dtype != torch.float32:
            raise ValueError(f"int8 weights need a float32 model and the native kernel (here: {label(used, dtype)}"
                             f"{f': {why}' if why else ''}, {str(dtype).removeprefix('torch.')})")
        from . import int8_weights

        int8 = int8_weights.quantize_model(model, traced=compile)
    elif weights != "model":
        raise ValueError(f"weights {weights!r}: not one of model, int8")
    if used == "native":
        huge_page_weights(model)
    _steps_on_own_threads(model, used == "native", compile)
    if int8:
        return used, int8, why
    count = 0
    if hasattr(model, "head_product"):
        model.head_product = F.linear
        if checked is not None:
            model.head_product = checked  # the embedding matrix: checked on each call
            count += 1
    for module in model.modules():
        if not isinstance(module, nn.Linear) or module.weight is None:  # None: on int8 weights, for good
            continue
        module.__dict__.pop("forward", None)  # back to nn.Linear.forward
        if product is not None and _fits(used, module.weight, dtype, threads):  # checked once, here
            module.forward = lambda x, m=module: product(x, m.weight, m.bias)
            count += 1
    return used, count, why


def huge_page_weights(model: Any) -> int:
    """Move every parameter of `model` into one anonymous memory area advised for transparent
    huge pages (Linux: madvise MADV_HUGEPAGE) and return its size in bytes (0 where the platform
    has no such advice or LLMGEN_HUGE_PAGES=0). A decoding step streams every weight once: with
    4 KiB pages that is a TLB miss every 4 KiB (memory-mapped checkpoints are 4 KiB pages); with
    2 MiB pages the same products read faster (measured: ~8 % on the float32 SmolLM2-135M step's
    products, one thread, this AVX2 machine). The values are copied unchanged (prefill stays bit
    for bit); the area is resident memory of the weights' size, which decoding reads anyway."""
    import mmap
    import os

    import torch

    if os.environ.get("LLMGEN_HUGE_PAGES", "1") == "0" or not hasattr(mmap, "MADV_HUGEPAGE"):
        return 0
    params = list({id(p): p for p in model.parameters() if p.device.type == "cpu"}.values())
    sizes = [-(-p.nbytes // 64) * 64 for p in params]  # each at a 64-byte boundary
    huge = 2 << 20
    area = mmap.mmap(-1, sum(sizes) + huge, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    area.madvise(mmap.MADV_HUGEPAGE)
    arena = torch.frombuffer(area, dtype=torch.uint8)  # keeps `area` alive as long as a view is
    offset = -arena.data_ptr() % huge  # the first weight at a huge-page boundary
    with torch.no_grad():
        for param, size in zip(params, sizes):
            view = arena[offset : offset + param.nbytes].view(param.dtype).view(param.shape)
            param.data = view.copy_(param.data)
            offset += size
    return sum(sizes)


def _steps_on_own_threads(model: Any, on: bool, compile: bool = False) -> None:
    """Run a decoding step's own small tensor operations (norms, RoPE, attention of one query)
    on one torch thread, and its matrix products on the native kernel's threads, as many as
    torch had (torch.set_num_threads / OMP_NUM_THREADS): on a machine whose cores are busy,
    every OpenMP region of torch's waits for all its threads to be scheduled, and a step has
    hundreds of them (measured: 0.9 tokens/s on two threads against 4.6 on one, bfloat16, load
    average 14 on 2 cores). The kernel's threads do not wait for one that is not running
    (kernels/pool.h). Prefill (more than MAX_ROWS tokens) keeps torch's threads. `compile`:
    steps on a static cache run compiled (compiled_steps). `on=False` without `compile` gives
    the model its own forward back."""
    import torch

    model.__dict__.pop("forward", None)
    if not on and not compile:
        return
    from . import compiled_step, native

    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    module, forward = native.kernel(dtype) if on else None, model.forward
    compiled, static = compiled_step.compiled_steps(model) if compile else (None, lambda: False)

    def step(input_ids: Any, *args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        if input_ids.numel() > MAX_ROWS:
            return forward(input_ids, *args, **kwargs)
        run = compiled if compiled is not None and static() else forward
        if module is None or threads == 1:
            return run(input_ids, *args, **kwargs)
        module.set_max_threads(threads)
        torch.set_num_threads(1)
        try:
            return run(input_ids, *args, **kwargs)
        finally:
            torch.set_num_threads(threads)
            module.set_max_threads(0)

    step.compiled = compiled  # the compiled steps (compiled_step.Replay), for tests to look at
    model.forward = step


def _fits(used: str, weight: Any, dtype: Any, threads: int) -> bool:
    """The kernel applies: a contiguous matrix of the model's dtype (the one the kernel was
    chosen for); row blocks: rows that split evenly between the threads."""
    if weight.dtype != dtype or not weight.is_contiguous():
        return False
    return used == "native" or weight.shape[0] % threads == 0


def _products(used: str, dtype: Any, threads: int, traced: bool = False) -> tuple[Any, Any]:
    """F.linear(x, weight, bias) on the kernel: for a weight known to fit, and for any weight
    (checked on each call); (None, None) for "off". A step's per-call cost is a few microseconds
    of Python against ~40 of reading a weight matrix, so the first skips the weight's checks."""
    import torch.nn.functional as F

    if used == "off":
        return None, None
    from . import native

    gemv = native.product(str(dtype).removeprefix("torch.")) if used == "native" else None
    if gemv is not None and traced:  # the same kernel, as an operator torch.compile can hold
        from .compiled_step import gemv_op

        op, level = gemv_op(), native.LEVELS.index(native.level(str(dtype).removeprefix("torch.")))
        gemv = lambda x, w, bias=None: op(x, w, bias, level)  # noqa: E731
    upcast = str(dtype) == "torch.bfloat16" and bf16_prefill() == "float32"
    gemm = _gemm() if upcast else None

    def product(x: Any, weight: Any, bias: Any = None) -> Any:
        if x.dtype != dtype:
            return F.linear(x, weight, bias)
        if x.numel() > MAX_ROWS * x.shape[-1]:  # prefill: torch's own product (or the opt-in upcast)
            if upcast and weight.dtype == dtype:
                return upcast_linear(x, weight, bias, gemm)
            return F.linear(x, weight, bias)
        if gemv is not None:
            return gemv(x, weight, bias)  # (..., in) -> (..., out); copies a non-contiguous x first
        return row_block_linear(x, weight, bias, threads)

    def checked(x: Any, weight: Any, bias: Any = None) -> Any:
        return product(x, weight, bias) if _fits(used, weight, dtype, threads) else F.linear(x, weight, bias)

    return product, checked
