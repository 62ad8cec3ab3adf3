"""Shared helpers for llmgen's tests."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from real_checkpoint import (  # noqa: F401 - fixtures: the real SmolLM2 checkpoint
    smollm2_checkpoint,
    smollm2_compiled,
    smollm2_hf_home,
    smollm2_hub,
    smollm2_verified,
)

REPO = Path(__file__).resolve().parent.parent
CATALOG = REPO / "catalog"
GENERATED = REPO / "generated"


def catalog_config(hub_id: str) -> dict:
    """A bundled real config by hub id (org/name)."""
    return json.loads((CATALOG / (hub_id.replace("/", "__") + ".json")).read_text())


def import_path(path: Path, name: str):
    """Import a generated file by path under a unique module name (model.py: the directory's
    runtime.py, model.py and weights.py as one module, compiler/runtime/generated_files.py)."""
    if path.name == "model.py" or "\nfrom runtime import " in path.read_text():  # an (edited) model.py
        from llmgen.compiler.runtime.generated_files import import_generated

        return import_generated(path.parent, name, model=path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def generated_source(directory: Path) -> str:
    """A generated set's Python code as one text: runtime.py, model.py and weights.py (those present)."""
    return "".join((directory / n).read_text() for n in ("runtime.py", "model.py", "weights.py") if (directory / n).is_file())


def write_py(directory: Path, files: dict[str, bytes]) -> Path:
    """Write a compiled set's Python files (model.py with runtime.py and weights.py beside it, the tests)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name.endswith(".py"):
            (directory / name).write_bytes(data)
    return directory


def random_replica(name: str, prefix: str):
    """The committed generated model `name` built at its tiny replica's size (test_parity.py's
    MODEL_CONFIG) with every parameter random (vectors, i.e. norms and biases, around 1):
    (model.py module, Config, CausalLM in eval mode)."""
    import torch

    slug = name.replace("-", "_").replace(".", "_")
    gen = import_path(GENERATED / name / "model.py", f"{prefix}_{slug}")
    parity = import_path(GENERATED / name / "test_parity.py", f"{prefix}_parity_{slug}")
    config = gen.Config(**parity.MODEL_CONFIG)
    torch.manual_seed(0)
    model = gen.CausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():  # some start uninitialised
            param.normal_(1.0, 0.2) if param.ndim == 1 else param.normal_(0.0, 0.05)
    return gen, config, model


def logits_in_pieces(model, ids, sizes: list[int], int8: bool = False):
    """Logits of ids fed through the model's caches in pieces of `sizes` (a prefill, then decoding steps),
    concatenated along the sequence: what a cached run gives, to compare with one uncached call."""
    import torch

    model.enable_cache(batch=ids.shape[0], max_len=ids.shape[1], int8=int8)
    pieces, start = [], 0
    for size in sizes:
        pieces.append(model(ids[:, start : start + size]))
        start += size
    model.disable_cache()
    return torch.cat(pieces, dim=1)


def window_boundary_runs(parity_module, test: str = "test_parity_around_the_sliding_window") -> list[tuple[int, float]]:
    """Run a generated test_parity.py's window- (or chunk-) boundary test; (seq_len, max|dlogit|) per measure."""
    runs = []
    original = parity_module.measure

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        runs.append((result["seq_len"], result["max_abs_diff"]))
        return result

    parity_module.measure = recording
    getattr(parity_module, test)()
    return runs


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach the network: the hub is unreachable here anyway."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def pytest_configure(config) -> None:
    """Under pytest-xdist (``-n 2``) each worker computes on one thread: two workers on two cores
    rather than four threads fighting over them."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


# The slowest test files (measured, slowest first). pytest-xdist hands whole files to the two workers
# (--dist loadfile) in collection order (--no-loadscope-reorder): starting with the long ones and
# ending with the many short ones (the rest of tests/, then generated/) lets both workers finish together.
SLOWEST_FIRST = [  # summed durations of 2026-12-07 (tests/test_*.py over 60 s), slowest first
    "test_fuzz.py", "test_full_size.py", "test_hybrid.py", "test_bad_inputs.py", "test_cli.py", "test_generate.py",
    "test_real_weights.py", "test_tensor_parallel.py", "test_longtail.py", "test_longtail_pos.py",
    "test_family_phi3_cohere.py", "test_longtail_moe.py", "test_determinism.py",
]


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}

    def key(item) -> tuple[int, int]:
        path = Path(str(item.fspath))
        return (rank.get(path.name, len(rank)) if path.parent.name == "tests" else len(rank), path.parent.name != "tests")

    items.sort(key=key)  # stable: the order inside a file is kept
