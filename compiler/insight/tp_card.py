"""``llmgen card --tp N``: what one rank of an N-way tensor-parallel run holds.

The model's model.py and parallel.py are rendered into a temporary directory and the plan is
applied to the full-size model on the meta device, once per distinct rank, inside a fake
process group (torch's single-process stand-in for N ranks: no weights, no communication).
Every figure is read from the resulting per-rank parameters, so it is the generated plan's own.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

from ...schemas.arch import Architecture, Attention
from .card import KV_BYTES, cached_tokens, kv_bytes_per_token, recurrent_bytes
from ..passes.format import format_source
from ..passes.parallel_plan import check_degree, parallel_context, replicated_mixers, splits_mixer, tp_plan
from ..passes.render import Provenance, model_context, render
from ..passes.render_files import render_model_files
from ..passes.weight_map import weight_map

PROVENANCE = Provenance("card", "tp", "llmgen card --tp")


def _write_model(arch: Architecture, directory: Path) -> Any:
    context = model_context(arch, weight_map(arch), PROVENANCE)
    for name, text in render_model_files(context).items():
        (directory / name).write_text(format_source(text, name=name))
    plan = tp_plan(arch)
    text = render("model/parallel.py.j2", parallel_context(arch, plan, context["version"], context["source"],
                                                          context["command"], context["title"]))
    (directory / "parallel.py").write_text(format_source(text, name="parallel.py"))
    name = f"llmgen_tp_card_{abs(hash(str(directory)))}"
    spec = importlib.util.spec_from_file_location(name, directory / "parallel.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def rank_shapes(parallel: Any, tp: int, rank: int) -> dict[str, tuple[tuple[int, ...], int]]:
    """Parameter name -> (this rank's shape, bytes per value in bf16) of the full-size model split by the plan."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    model_module = parallel.model_module()
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=tp)
    try:
        mesh = init_device_mesh("cpu", (tp,))
        with torch.device("meta"):
            model = model_module.CausalLM(model_module.Config())
        parallel.parallelize(model, mesh, dtype=torch.bfloat16)
        out = {}
        for name, param in model.named_parameters():
            local = param.to_local() if isinstance(param, parallel.DTensor) else param
            out[name] = (tuple(local.shape), KV_BYTES)  # bf16 weights
        return out
    finally:
        dist.destroy_process_group()


def kv_per_rank(arch: Architecture, tp: int, tokens: int) -> int:
    """bf16 cache bytes one rank holds after `tokens` tokens: its key/value heads (a replicated head
    counts on every rank that holds it); a latent cache (MLA) is whole on every rank; a recurrent
    layer's state is split with its heads (whole where the mixer is replicated)."""
    total = 0
    for layer in arch.layers:
        split = splits_mixer(arch, layer.mixer) or splits_mixer(arch, layer.parallel_mixer)  # Falcon-H1: beside
        total += recurrent_bytes(layer) // (tp if split else 1)
        per_token = kv_bytes_per_token(layer, KV_BYTES)
        if isinstance(layer.mixer, Attention):
            per_token = per_token * max(layer.mixer.num_kv_heads // tp, 1) // layer.mixer.num_kv_heads
        total += per_token * cached_tokens(layer, tokens)
    return total


def tp_card(arch: Architecture, tp: int, tokens: int = 8192) -> dict[str, Any]:
    """Per-rank weights (bf16) and KV cache of an N-way run, from the plan applied on meta."""
    check_degree(arch, tp)
    with tempfile.TemporaryDirectory() as tmp:
        parallel = _write_model(arch, Path(tmp))
        experts = {layer.ffn.num_experts for layer in arch.layers if hasattr(layer.ffn, "num_experts")}
        uneven = any(e % tp for e in experts)  # ranks differ only in how many experts they hold
        ranks = [0, tp - 1] if uneven else [0]
        shapes = {rank: rank_shapes(parallel, tp, rank) for rank in ranks}
    weights = {rank: sum(_count(shape) * size for shape, size in s.values()) for rank, s in shapes.items()}
    kv_heads = {layer.mixer.num_kv_heads for layer in arch.layers if isinstance(layer.mixer, Attention)}
    replicated = sorted(k for k in kv_heads if k < tp)
    return {
        "degree": tp,
        "weights_bytes_bf16": {str(rank): total for rank, total in weights.items()},
        "kv_bytes_bf16_at": {"tokens": tokens, "per_rank": kv_per_rank(arch, tp, tokens)},
        "kv_heads_replicated": [f"{k} key/value heads on {tp} ranks: each held by {tp // k}" for k in replicated],
        "mixers_replicated": [f"the {name} mixers replicated: whole on every rank" for name in replicated_mixers(arch)],
        "shapes": {str(rank): {name: list(shape) for name, (shape, _) in s.items()} for rank, s in shapes.items()},
    }


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def tp_rows(data: dict[str, Any], human_bytes) -> list[tuple[str, str]]:
    tp = data["degree"]
    weights = ", ".join(f"rank {r}: {human_bytes(b)}" for r, b in data["weights_bytes_bf16"].items())
    kv = data["kv_bytes_bf16_at"]
    rows = [(f"TP={tp} weights", f"{weights} (bf16)"),
            (f"TP={tp} KV", f"{human_bytes(kv['per_rank'])} per rank at {kv['tokens']} tokens (bf16; recurrent states too)")]
    rows += [(f"TP={tp} note", line) for line in data["kv_heads_replicated"] + data.get("mixers_replicated", [])]
    return rows
