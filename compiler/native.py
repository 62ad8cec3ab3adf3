"""The native decoding kernel (kernels/gemv.cpp): built on first use, cached, optional.

A decoding step multiplies every weight matrix by one vector, so its speed is how fast the
weights stream from memory. torch's general matrix product does that at about half the memory
bandwidth for float32 (one core, unless split into row blocks: compiler/fast_decode.py) and
worse for bfloat16. kernels/gemv.cpp computes the same dot products, in float32, at close to
the bandwidth. torch's C++ extension loader compiles it once (about 20 s) into its cache
(TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions) and reuses it afterwards.

It is optional: on a CPU without AVX-512 (bfloat16: AVX512_BF16 too), without a C++
compiler or the ninja package, or with LLMGEN_NATIVE=0, `kernel()` returns None and says why
in `unavailable()`, and decoding runs on torch's own products.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent / "kernels" / "gemv.cpp"
NAME = "llmgen_gemv"
DTYPE_FLAGS = {"float32": ("avx512f",), "bfloat16": ("avx512f", "avx512_bf16")}  # /proc/cpuinfo names


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo, read once); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def unavailable(dtype: str = "float32") -> str | None:
    """Why the kernel cannot run for `dtype` here, or None when it can (building it if needed)."""
    return missing(dtype) or _build()[1]


def missing(dtype: str = "float32") -> str | None:
    """What this machine lacks to build and run the kernel for `dtype` (None: nothing)."""
    if os.environ.get("LLMGEN_NATIVE", "1") == "0":
        return "LLMGEN_NATIVE=0"
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the kernel is written for x86-64, this machine is {platform.machine()}"
    if dtype not in DTYPE_FLAGS:
        return f"no kernel for {dtype}"
    lacking = [flag for flag in DTYPE_FLAGS[dtype] if flag not in cpu_flags()]
    if lacking:
        return f"the CPU lacks {', '.join(lacking)}"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler (c++ or $CXX) to build it"
    try:
        import ninja  # noqa: F401  torch's extension loader builds with ninja
    except ImportError:
        return "the ninja package is not installed"
    return None


def is_built() -> bool:
    """Whether torch's extension cache already holds a build (else the first use compiles it)."""
    import torch.utils.cpp_extension as cpp

    return any(Path(cpp._get_build_directory(NAME, verbose=False)).glob(f"{NAME}*.so"))


def kernel(dtype: str = "float32") -> Any:
    """The compiled extension (its `gemv(x, w, bias=None)`), or None: see `unavailable`."""
    return None if unavailable(dtype) else _build()[0]


@functools.cache
def _build() -> tuple[Any, str | None]:
    """Compile (or reuse from torch's extension cache) kernels/gemv.cpp once per process."""
    import torch.utils.cpp_extension as cpp

    try:
        module = cpp.load(
            name=NAME,
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-fopenmp"],  # parallel_for runs on OpenMP threads, as torch's own
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # a compiler error: report it and decode without the kernel
        lines = str(exc).splitlines()
        reason = next((line for line in lines if "error" in line), lines[0] if lines else type(exc).__name__)
        return None, f"building {SOURCE.name} failed: {reason.strip()[:200]}"
    return module, None
