"""Where a decoding step's time goes: one generated model's steps timed one by one, and
torch.profiler's table of the operators of a few of them.

    python benchmarks/profile_step.py [--dtype float32|bfloat16] [--threads N] [--steps N]
                                      [--sides eager static compiled] [--max-len N] [--profile]

Sides (all with fast_attention and the --kernel product, as `llmgen generate` runs them):
eager (enable_cache), static (enable_static_cache, uncompiled) and compiled (the static cache
through torch.compile: use_fast_decode(..., compile=True)). Each side prefills a 16-token prompt
and then runs --steps single-token steps; the median and 25th percentile of their wall times are
printed, interleaved over --rounds rounds. --profile adds torch.profiler's operator table (self
CPU time) of 8 steps of each side. Not a test: timings depend on the machine's load (printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import DTYPES, REPO, default_checkpoint, import_model, load_average  # noqa: E402

from llmgen.compiler.runtime.fast_decode import KERNELS, greedy_next, use_fast_decode  # noqa: E402

PROMPT = 16


def build(side: str, args: argparse.Namespace):
    module = sys.modules.get("bench_generated_model") or import_model(args.model)
    model = module.load_checkpoint(args.checkpoint, dtype=DTYPES[args.dtype])
    model.fast_attention()
    use_fast_decode(model, args.kernel, compile=side == "compiled")
    return model


TOKENS: dict[str, list[int]] = {}  # each side's greedy tokens, its last run
CPU: dict[str, list[float]] = {}  # each side's CPU seconds per step (this process, all threads)


def steps(model, side: str, count: int, max_len: int, profiler=None) -> list[float]:
    """Seconds of each of `count` one-token steps after a PROMPT-token prefill (`profiler`:
    started after the prefill, stopped after the steps)."""
    (model.enable_static_cache if side != "eager" else model.enable_cache)(1, max_len)
    ids = torch.randint(100, 40000, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    token = greedy_next(model(ids))
    times, tokens = [], []
    if profiler is not None:
        profiler.start()
    for _ in range(count):
        start, cpu = time.perf_counter(), time.process_time()
        token = greedy_next(model(token))
        times.append(time.perf_counter() - start)
        CPU.setdefault(side, []).append(time.process_time() - cpu)
        tokens.append(int(token))
    if profiler is not None:
        profiler.stop()
    model.disable_cache()
    TOKENS[side] = tokens
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--model", type=Path, default=REPO / "generated" / "SmolLM2-135M-Instruct")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernel", default="auto", choices=KERNELS)
    parser.add_argument("--sides", nargs="+", default=["eager", "static", "compiled"],
                        choices=["eager", "static", "compiled"])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=PROMPT + 128)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.checkpoint = args.checkpoint or default_checkpoint()
    print(f"{args.dtype}, {args.threads} thread(s), max_len {args.max_len}, load average {load_average()}")
    models = {side: build(side, args) for side in args.sides}
    results: dict[str, list[float]] = {side: [] for side in models}
    with torch.inference_mode():
        for side, model in models.items():  # warm-up (the compiled side compiles here)
            start = time.perf_counter()
            steps(model, side, 4, args.max_len)
            print(f"{side}: warm-up {time.perf_counter() - start:.1f} s")
        CPU.clear()
        for _ in range(args.rounds):
            for side, model in models.items():
                results[side] += steps(model, side, args.steps, args.max_len)
        for side, times in results.items():
            ms = sorted(1e3 * t for t in times)
            same = next((i for i, (a, b) in enumerate(zip(TOKENS[side], TOKENS[args.sides[0]])) if a != b), len(TOKENS[side]))
            print(f"{side:9} greedy tokens = {args.sides[0]}'s: {same}/{len(TOKENS[side])}; step median {statistics.median(ms):6.2f} ms, p25 {ms[len(ms) // 4]:6.2f}, "
                  f"min {ms[0]:6.2f}  ({1e3 / statistics.median(ms):.1f} tok/s); CPU time median "
                  f"{1e3 * statistics.median(CPU[side]):6.2f} ms")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            for side, model in models.items():
                prof = profile(activities=[ProfilerActivity.CPU])
                steps(model, side, 8, args.max_len, prof)
                print(f"\n== {side}: 8 steps ==")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=int(os.environ.get("ROWS", 25))))
    print(f"load average after {load_average()}")


if __name__ == "__main__":
    main()
