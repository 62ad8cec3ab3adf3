"""The native decoding kernel (kernels/gemv.cpp): built on first use, cached, optional.

A decoding step multiplies every weight matrix by one vector, so its speed is how fast the
weights stream from memory. torch's general matrix product does that at about half the memory
bandwidth for float32 (one core, unless split into row blocks: compiler/runtime/fast_decode.py) and
worse for bfloat16. kernels/gemv.cpp computes the same dot products, in float32, at close to
the bandwidth. torch's C++ extension loader compiles it once (under a minute) into its cache
(TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions) and reuses it afterwards.

One build holds every instruction-set level (LEVELS), each compiled for its own target; the
module reads the CPU's flags (cpuid) when it loads and `level()` picks the highest it runs,
or a lower one where LLMGEN_ISA caps it (e.g. LLMGEN_ISA=avx2 on an AVX-512 machine, or
=portable: plain C++ for any CPU). It is optional: without a C++ compiler or the ninja
package, or with LLMGEN_NATIVE=0, `kernel()` returns None and says why in `unavailable()`,
and decoding runs on torch's own products.

Threads: a product shares its rows with the kernel's helper threads only while that is measured
to be faster than the calling thread alone (kernels/tuner.h: on a machine whose other work
leaves this process about one core, helpers only take the caller's time); LLMGEN_THREAD_TUNING=0
always uses them.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Any

KERNELS_DIR = Path(__file__).resolve().parent / "kernels"
SOURCE = KERNELS_DIR / "gemv.cpp"
HEADERS = tuple(KERNELS_DIR / name for name in ("gemv_isa.h", "products.h", "pool.h", "tuner.h", "attend.h", "gemm.h"))
NAME = "llmgen_gemv"  # the build's name is NAME + a hash of the sources (build_name)
DTYPES = ("float32", "bfloat16")
# kernels/gemv.cpp's levels by number; float32 has no AVX512_BF16 kernel (it runs the AVX-512F one)
LEVELS = ("portable", "avx2", "avx512", "avx512_bf16")
LEVEL_FLAGS = {"avx2": ("avx2", "fma"), "avx512": ("avx512f",), "avx512_bf16": ("avx512f", "avx512_bf16")}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo, read once); empty elsewhere. For reports:
    the kernel itself asks the CPU (cpuid)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86, ARM
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def vector_flags() -> list[str]:
    """The CPU flags that matter to the kernels and to the anchors' (llama.cpp) ones."""
    wanted = ("sse4_2", "avx", "f16c", "fma", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimd", "sve")
    return [flag for flag in wanted if flag in cpu_flags()]


def unavailable(dtype: str = "float32") -> str | None:
    """Why the kernel cannot run for `dtype` here, or None when it can (building it if needed)."""
    return missing(dtype) or _build()[1] or _cap()[1]


def missing(dtype: str = "float32") -> str | None:
    """What this machine lacks to build and run the kernel for `dtype` (None: nothing)."""
    if os.environ.get("LLMGEN_NATIVE", "1") == "0":
        return "LLMGEN_NATIVE=0"
    if dtype not in DTYPES:
        return f"no kernel for {dtype}"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler (c++ or $CXX) to build it"
    try:
        import ninja  # noqa: F401  torch's extension loader builds with ninja
    except ImportError:
        return "the ninja package is not installed"
    return None


def _cap() -> tuple[int, str | None]:
    """LLMGEN_ISA as a level number (the highest when unset), and what is wrong with it."""
    value = os.environ.get("LLMGEN_ISA", "").strip().lower()
    if not value:
        return len(LEVELS) - 1, None
    if value not in LEVELS:
        return 0, f"LLMGEN_ISA={value}: not one of {', '.join(LEVELS)}"
    return LEVELS.index(value), None


def level(dtype: str = "float32") -> str:
    """The instruction-set level the kernel runs for `dtype` here: the CPU's highest (as the
    module read it from cpuid), capped by LLMGEN_ISA. Builds the module if needed."""
    module = kernel(dtype)
    if module is None:
        raise RuntimeError(f"native kernel unavailable: {unavailable(dtype)}")
    number = min(module.cpu_level(), _cap()[0])
    if dtype == "float32" and LEVELS[number] == "avx512_bf16":
        number -= 1
    return LEVELS[number]


def runnable_levels(dtype: str = "float32") -> list[str]:
    """Every level this CPU can run for `dtype` (for tests: each is checked)."""
    module = kernel(dtype)
    if module is None:
        return []
    top = module.cpu_level() - (dtype == "float32" and module.cpu_level() == len(LEVELS) - 1)
    return list(LEVELS[: top + 1])


def product(dtype: str = "float32", at: str | None = None) -> Any:
    """gemv(x, w, bias=None) at `at` (default: `level(dtype)`), or None: see `unavailable`."""
    module = kernel(dtype)
    if module is None:
        return None
    number = LEVELS.index(at or level(dtype))
    return lambda x, w, bias=None: module.gemv(x, w, bias, number)


@functools.cache
def build_name() -> str:
    """NAME and a hash of the kernel's sources: each version of them builds in a directory of its
    own in torch's extension cache, so checkouts with different sources (worktrees, another
    version installed) that share the cache never rebuild over each other's module, which a
    process that loads it between the two builds would otherwise get (measured: a benchmark got
    an older build, without llmgen_native::attend)."""
    import hashlib

    digest = hashlib.sha256(b"".join(path.read_bytes() for path in (SOURCE, *HEADERS))).hexdigest()[:12]
    return f"{NAME}_{digest}"


def is_built() -> bool:
    """Whether torch's extension cache already holds a build (else the first use compiles it)."""
    import torch.utils.cpp_extension as cpp

    return any(Path(cpp._get_build_directory(build_name(), verbose=False)).glob(f"{build_name()}*.so"))


def kernel(dtype: str = "float32") -> Any:
    """The compiled extension (`gemv(x, w, bias, level)`, `cpu_level()`), or None: see `unavailable`."""
    return None if missing(dtype) or _build()[1] else _build()[0]


@functools.cache
def _build() -> tuple[Any, str | None]:
    """Compile (or reuse from torch's extension cache) kernels/gemv.cpp once per process."""
    import sys

    import torch
    import torch.utils.cpp_extension as cpp

    # at::parallel_for (bfloat16 prefill's product) on torch's OpenMP team: on Linux torch's wheel
    # brings its libgomp.so.1, which the module then shares (one runtime, one team of threads).
    # Without it the loop runs on the calling thread (correct, slower).
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") and torch.backends.openmp.is_available() else []
    try:
        module = cpp.load(
            name=build_name(),
            sources=[str(SOURCE)],
            extra_cflags=["-O3", *openmp],  # no -march: each level carries its own target (kernels/gemv_isa.h)
            extra_ldflags=openmp,
            extra_include_paths=[str(KERNELS_DIR)],
            verbose=False,
        )
    except Exception as exc:  # a compiler error: report it and decode without the kernel
        lines = str(exc).splitlines()
        reason = next((line for line in lines if "error" in line), lines[0] if lines else type(exc).__name__)
        return None, f"building {SOURCE.name} failed: {reason.strip()[:200]}"
    module.set_thread_tuning(os.environ.get("LLMGEN_THREAD_TUNING", "1") != "0")
    return module, None
