"""``llmgen generate DIR --tp N``: greedy decoding on N processes through the directory's parallel.py.

The parent checks the degree against the directory's architecture (one ``llmgen: error:`` line,
before anything loads), tokenizes, starts N ranks with torch's launcher (multiprocessing spawn;
gloo on CPU, NCCL with one GPU per rank), and prints what rank 0 decoded. Each rank reads only
its slices of the checkpoint (parallel.load_parallel). The NCCL path (chosen when CUDA has a device
per rank) is written but untested: the tests run gloo on CPU only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..basics.errors import LlmgenError, SourceError
from ..passes.parallel_plan import check_degree

RANK_TIMEOUT_S = 3600.0


def check_directory(directory: Path, tp: int) -> None:
    """A degree this generated directory can run at, or one error line."""
    from ..insight.card import load_model  # arch.json, else the config.json beside it (one error line either way)

    check_degree(load_model(str(directory)).arch, tp)
    if not (directory / "parallel.py").is_file():
        raise SourceError(f"{directory}: no parallel.py (regenerate the model with this llmgen)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, directory: str, checkpoint: str, ids: list[int],
              steps: int, stop: list[int], dtype: str, int8: bool, out: str) -> None:
    """One rank: load its slices, decode greedily in step with the others; rank 0 writes the tokens."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from .generate import greedy_tokens

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        spec = importlib.util.spec_from_file_location(f"llmgen_parallel_{rank}", Path(directory) / "parallel.py")
        parallel = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = parallel
        spec.loader.exec_module(parallel)
        mesh = init_device_mesh("cuda" if cuda else "cpu", (world,))
        start = time.perf_counter()
        model = parallel.load_parallel(checkpoint, mesh, dtype=getattr(torch, dtype))
        loaded = time.perf_counter() - start
        tokens = list(greedy_tokens(model, ids, steps, set(stop), kv=True, int8=int8))
        if rank == 0:
            Path(out).write_text(json.dumps({"tokens": tokens, "load_s": loaded}))
    finally:
        dist.destroy_process_group()


def run_parallel(directory: Path, checkpoint: Path, tp: int, ids: list[int], steps: int, stop: set[int],
                 dtype: str, int8: bool, err: Any) -> list[int]:
    """The new tokens, decoded on `tp` processes."""
    import torch.multiprocessing as mp

    print(f"starting {tp} processes (tensor parallel, {dtype}) ...", file=err, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tokens.json"
        args = (tp, _free_port(), str(directory.resolve()), str(checkpoint), ids, steps, sorted(stop), dtype, int8, str(out))
        try:
            context = mp.start_processes(rank_main, args=args, nprocs=tp, join=False, start_method="spawn")
            deadline = time.monotonic() + RANK_TIMEOUT_S
            while not context.join(timeout=1.0):
                if time.monotonic() > deadline:
                    for process in context.processes:
                        process.kill()
                    raise LlmgenError(f"--tp {tp}: the ranks did not finish in {RANK_TIMEOUT_S:.0f} s")
        except mp.ProcessRaisedException as exc:
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            raise LlmgenError(f"--tp {tp}: a rank failed: {lines[-1][:300] if lines else exc}") from None
        except mp.ProcessExitedException as exc:
            raise LlmgenError(f"--tp {tp}: a rank died ({exc})") from None
        result = json.loads(out.read_text())
    print(f"weights loaded in {result['load_s']:.1f} s on rank 0", file=err, flush=True)
    return result["tokens"]
