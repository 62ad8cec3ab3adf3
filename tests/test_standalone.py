"""The generated model files stand alone: torch and the standard library, nothing of llmgen,
and only the code each architecture needs."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmgen.compiler.passes.mixers import KINDS as RECURRENT_KINDS

GENERATED = Path(__file__).resolve().parents[1] / "generated"
MODEL_FILES = sorted(GENERATED.glob("*/model.py"))
PY_FILES = sorted(p for d in GENERATED.iterdir() if d.is_dir() for p in d.glob("*.py") if not p.name.startswith("test_"))
SIBLINGS = {"runtime", "model", "weights"}  # what a generated file may import beside the standard library and torch
ALLOWED_ROOTS = set(sys.stdlib_module_names) | {"torch", "__future__"}
MAX_LINES = 300  # model.py of a dense model: the architecture alone
# Families without softcapping, sliding windows, embedding scaling or per-layer patterns.
LLAMA_LIKE = ("Llama-3.2-1B", "Llama-3.1-8B", "Qwen3-0.6B", "SmolLM2-135M-Instruct")
ABSENT_IN_LLAMA_LIKE = ("softcap", "sliding", "window", "embed_scale", "layer_pattern")
WITHOUT_QK_NORM = ("Llama-3.2-1B", "Llama-3.1-8B", "SmolLM2-135M-Instruct")
WITH_QK_NORM = ("Qwen3-0.6B", "gemma-3-1b-it")


def model_file(name: str) -> Path:
    path = GENERATED / name / "model.py"
    assert path.is_file(), f"{path} is missing"
    return path


def checkpoint_names(name: str) -> set[str]:
    """The parameter names weights.py loads for a committed model, from its model on the meta device."""
    import torch

    from llmgen.compiler.runtime.generated_files import import_generated

    module = import_generated(GENERATED / name, "_standalone_names_" + re.sub(r"\W", "_", name))
    with torch.device("meta"):
        return set(module.checkpoint_keys(module.Config()).values())


def ids(paths: list[Path]) -> list[str]:
    return [p.parent.name if p.name == "model.py" else f"{p.parent.name}/{p.name}" for p in paths]


def imported_roots(tree: ast.AST) -> set[str]:
    """Top-level names of every module an import statement anywhere in `tree` names."""
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import at line {node.lineno}"
            assert node.module is not None
            roots.add(node.module.split(".")[0])
    return roots


def test_all_expected_models_are_generated() -> None:
    names = set(ids(MODEL_FILES))
    assert {"gemma-3-1b-it", *LLAMA_LIKE} <= names, names


@pytest.mark.parametrize("path", PY_FILES, ids=ids(PY_FILES))
def test_imports_only_stdlib_and_torch(path: Path) -> None:
    roots = imported_roots(ast.parse(path.read_text(), filename=str(path)))
    assert "torch" in roots
    assert roots <= ALLOWED_ROOTS | SIBLINGS, sorted(roots - ALLOWED_ROOTS - SIBLINGS)
    assert path.name not in ("runtime.py",) or not roots & SIBLINGS  # runtime.py stands on torch alone
    assert path.name != "model.py" or roots & SIBLINGS <= {"runtime"}  # the architecture needs no reader


def test_import_check_catches_a_foreign_import() -> None:
    tree = ast.parse(
        "import torch\nfrom llmgen.compiler import ir\ndef f():\n    import numpy\n"
    )
    assert imported_roots(tree) - ALLOWED_ROOTS == {"llmgen", "numpy"}


@pytest.mark.parametrize("path", MODEL_FILES, ids=ids(MODEL_FILES))
def test_size_and_no_kwargs(path: Path) -> None:
    text = path.read_text()
    # model.py is the architecture alone (config, components, layer, model), readable in one sitting;
    # the checkpoint reader is weights.py and the caches and decoding switches runtime.py, beside it.
    assert "def load_checkpoint" not in text and "WEIGHT_MAP" not in text and "class LayerCache" not in text
    arch = (path.parent / "arch.json").read_text()
    dense = all(f'"kind": "{kind}"' not in arch for kind in ("moe", "mla", "clamped_moe"))  # experts / latent attention add code
    # a recurrent mixer kind (compiler/passes/mixers/): its whole-sequence and one-step forms, its state
    linear = any(f'"kind": "{kind}"' in arch for kind in RECURRENT_KINDS)
    sparse = '"indexer"' in arch or '"selection"' in arch  # an indexer (DSA, DeepSeek-V4's CSA), its keys, the selection
    assert len(text.splitlines()) < (MAX_LINES if dense else MAX_LINES + 250) + (100 if linear else 0) \
        + (80 if sparse else 0)
    for name in ("runtime.py", "weights.py"):  # machinery and reader: bounded too
        if (path.parent / name).is_file():
            assert len((path.parent / name).read_text().splitlines()) < 500, name
    for text in [(path.parent / n).read_text() for n in ("runtime.py", "model.py", "weights.py") if (path.parent / n).is_file()]:
        assert "**kwargs" not in text
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                assert node.args.kwarg is None, (
                    f"catch-all keyword argument at line {node.lineno}"
                )


@pytest.mark.parametrize("name", LLAMA_LIKE)
def test_llama_like_files_have_no_code_for_missing_features(name: str) -> None:
    text = model_file(name).read_text().lower()
    present = [word for word in ABSENT_IN_LLAMA_LIKE if word in text]
    assert not present, present


@pytest.mark.parametrize("name", WITHOUT_QK_NORM)
def test_no_qk_norm_where_the_architecture_has_none(name: str) -> None:
    text = model_file(name).read_text()
    assert "q_norm" not in text and "k_norm" not in text


@pytest.mark.parametrize("name", WITH_QK_NORM)
def test_qk_norm_where_the_architecture_has_it(name: str) -> None:
    text = model_file(name).read_text()
    assert "self.q_norm" in text and "self.k_norm" in text
    assert "model.layers.0.self_attn.q_norm.weight" in checkpoint_names(name)  # and it is loaded from the checkpoint


# A fresh interpreter in which `import llmgen` fails; it builds the model from a file path.
RUN_WITHOUT_LLMGEN = textwrap.dedent(
    """
    import sys
    sys.modules["llmgen"] = None
    try:
        import llmgen
    except ImportError:
        pass
    else:
        raise SystemExit("llmgen is still importable")
    import json
    directory, config = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, directory)  # as a user does with a copied model directory
    from model import CausalLM, Config
    from weights import load_checkpoint  # the reader imports too
    import torch
    torch.manual_seed(0)
    model = CausalLM(Config(**config)).eval()
    input_ids = torch.randint(0, config["vocab_size"], (2, 20))
    with torch.no_grad():
        logits = model(input_ids)
    assert torch.isfinite(logits).all()
    print("logits", json.dumps(list(logits.shape)))
    print("llmgen modules", sorted(m for m in sys.modules if m.split(".")[0] == "llmgen"
                                   and sys.modules[m] is not None))
    """
)


def replica_config(name: str) -> dict:
    """MODEL_CONFIG of a generated test_parity.py, imported by path under a unique name."""
    module_name = "_test_standalone_parity_" + re.sub(r"\W", "_", name)
    spec = importlib.util.spec_from_file_location(
        module_name, GENERATED / name / "test_parity.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return dict(module.MODEL_CONFIG)


@pytest.mark.parametrize("name", ["gemma-3-1b-it", "Llama-3.2-1B"])
def test_runs_without_llmgen(name: str, tmp_path: Path) -> None:
    config = replica_config(name)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN_WITHOUT_LLMGEN,
            str(copy_directory(name, tmp_path)),
            json.dumps(config),
        ],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert f"logits {json.dumps([2, 20, config['vocab_size']])}" in lines, result.stdout
    assert "llmgen modules []" in lines, result.stdout


def copy_directory(name: str, tmp_path: Path) -> Path:
    """The model's Python files copied on their own, as a user copies the directory."""
    copy = tmp_path / "copied"
    copy.mkdir()
    for path in (GENERATED / name).glob("*.py"):
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def test_blocked_llmgen_really_fails_to_import(tmp_path: Path) -> None:
    """The guard the test above relies on: a model file that imports llmgen would fail."""
    bad = tmp_path / "model.py"
    bad.write_text("import llmgen\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN_WITHOUT_LLMGEN,
            str(tmp_path),
            json.dumps({"vocab_size": 8}),
        ],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr or "ImportError" in result.stderr
