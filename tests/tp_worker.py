"""Process bodies for tests/test_tensor_parallel.py (a module of its own, so spawned processes
import it by name): tiny replicas of the committed generated models, split over a gloo group."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch

FAMILIES = ("Llama-3.2-1B", "gemma-3-1b", "Qwen3-30B-A3B", "DeepSeek-V3", "gpt-oss-20b", "Phi-3.5-mini-instruct")
TOLERANCE = 1e-5  # x max(1, max|logit|)
SEQ, PREFILL = 12, 5  # longer than the replicas' sliding window (8); decoding steps past it


def _import(path: Path, name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def replica(directory: Path):
    """(parallel.py module, model.py module, the tiny replica's Config) of a generated directory."""
    slug = directory.name.replace("-", "_").replace(".", "_")
    par = _import(directory / "parallel.py", f"tp_parallel_{slug}")
    source = (directory / "test_parity.py").read_text()
    start = source.index("MODEL_CONFIG = ") + len("MODEL_CONFIG = ")
    sizes = eval(source[start : source.index("\n}\n", start) + 2], {})  # a dict literal of the replica's sizes
    gen = par._model_module()
    return par, gen, gen.Config(**sizes)


def random_model(gen, config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = gen.CausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(1.0, 0.2) if param.ndim == 1 else param.normal_(0.0, 0.05)
    return model


@torch.no_grad()
def logits_runs(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-sequence logits, and the logits of a cached run (prefill, then one token per step)."""
    whole = model(ids)
    model.enable_cache(ids.shape[0], ids.shape[1])
    steps = [model(ids[:, :PREFILL])] + [model(ids[:, i : i + 1]) for i in range(PREFILL, ids.shape[1])]
    model.disable_cache()
    return whole, torch.cat(steps, dim=1)


def _init(rank: int, world: int, port: int):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", rank=rank, world_size=world)
    return dist, init_device_mesh("cpu", (world,))


def tp_worker(rank: int, world: int, port: int, directories: list[str], out: str) -> None:
    """One of 4 ranks: every family at TP=4 (all ranks), then at TP=2 (ranks 0-1 and 2-3, two
    groups side by side), each against the same model in this process alone."""
    from torch.distributed.device_mesh import DeviceMesh

    dist, mesh4 = _init(rank, world, port)
    meshes = {4: mesh4, 2: DeviceMesh("cpu", [0, 1] if rank < 2 else [2, 3])}
    results: dict[str, dict] = {}
    for name in directories:
        par, gen, config = replica(Path(name))
        ids = torch.randint(0, config.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(1))
        reference = logits_runs(random_model(gen, config), ids)
        for degree, mesh in meshes.items():
            model = par.parallelize(random_model(gen, config), mesh)
            got = logits_runs(model, ids)
            results[f"{degree}/{Path(name).name}"] = {
                "whole": float((got[0] - reference[0]).abs().max()),
                "cached": float((got[1] - reference[1]).abs().max()),
                "scale": float(reference[0].abs().max()),
                "local_heads": sorted({m.num_heads for m in model.modules() if hasattr(m, "num_heads")}),
                "heads": config.num_attention_heads,
            }
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, world: int, *args, timeout: float = 120.0) -> None:
    """Run fn(rank, world, port, *args) in `world` fresh processes; fail (and kill them) past `timeout`."""
    import torch.multiprocessing as mp

    context = mp.start_processes(fn, args=(world, free_port(), *args), nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"{world} processes still running after {timeout} s")


