"""The command line end to end: compile, verify, check, list, errors, template overrides."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CATALOG, GENERATED, REPO

from llmgen.compiler.basics.cli import main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, "-m", "llmgen.compiler.basics.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_from_hub_offline_uses_the_catalog_and_verifies(tmp_path):
    result = run_cli("from-hub", "google/gemma-3-1b-it", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "bundled snapshot" in result.stdout
    assert "gemma-3-1b-it: max|dlogit| =" in result.stdout and " ok" in result.stdout
    out = tmp_path / "gemma-3-1b-it"
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-5 and parity["transformers"]
    # Same bytes as the committed output: generation is deterministic.
    for name in ("model.py", "arch.json", "test_parity.py", "config.json", "llmgen.json"):
        assert (out / name).read_bytes() == (GENERATED / "gemma-3-1b-it" / name).read_bytes(), name


def test_unknown_id_names_the_ids_that_exist(tmp_path):
    result = run_cli("from-hub", "google/gemma-3", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "google/gemma-3-1b-it" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "content,named",
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "object"),
        ('{"model_type": "llama"}', "hidden_size"),
        ('{"model_type": "mamba_9000", "hidden_size": 8}', "mamba_9000"),
    ],
)
def test_bad_config_one_line_exit_2_nothing_written(tmp_path, content, named):
    config = tmp_path / "in" / "config.json"
    config.parent.mkdir()
    config.write_text(content)
    out = tmp_path / "out"
    result = run_cli("from-config", str(config), "--out", str(out), "--no-verify")
    assert result.returncode == 2
    assert named in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("llmgen: error:")
    assert not out.exists()


def test_unknown_key_is_named(tmp_path, capsys):
    raw = json.loads((CATALOG / "Qwen__Qwen3-0.6B.json").read_text())
    raw["attention_chunk_size"] = 8192  # read by transformers' masks: refused (keys it never reads are noted)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    assert main(["from-config", str(path), "--out", str(tmp_path / "o"), "--no-verify"]) == 2
    assert "attention_chunk_size" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_from_config_directory_and_name(tmp_path, capsys):
    ckpt = tmp_path / "my-ckpt"
    ckpt.mkdir()
    shutil.copy(CATALOG / "HuggingFaceTB__SmolLM2-135M-Instruct.json", ckpt / "config.json")
    assert main(["from-config", str(ckpt), "--out", str(tmp_path / "o"), "--no-verify"]) == 0
    assert (tmp_path / "o" / "my-ckpt" / "model.py").is_file()
    assert main(["from-config", str(ckpt / "config.json"), "--out", str(tmp_path / "o"), "--name", "smol",
                 "--no-verify"]) == 0
    assert "from-config" in (tmp_path / "o" / "smol" / "model.py").read_text()


def test_check_passes_on_the_committed_tree_and_reports_drift(tmp_path, capsys):
    assert main(["check", "--dir", str(GENERATED)]) == 0
    # The drift half on a copy of two models: a copy of the whole tree only checked the same 33 models twice more.
    copy = tmp_path / "generated"
    for name in ("Qwen3-0.6B", "gemma-3-270m"):
        shutil.copytree(GENERATED / name, copy / name)
    assert main(["check", "--dir", str(copy)]) == 0
    model = copy / "Qwen3-0.6B" / "model.py"
    model.write_text(model.read_text().replace("num_key_value_heads: int = 8", "num_key_value_heads: int = 4"))
    assert main(["check", "--dir", str(copy)]) == 1
    assert "num_key_value_heads: int = 8" in capsys.readouterr().out


def test_template_override_takes_effect(tmp_path, capsys):
    override = tmp_path / "templates" / "model"
    override.mkdir(parents=True)
    builtin = (REPO / "templates" / "model" / "mlp.py.j2").read_text()
    marker = "# mlp template overridden by the user"
    (override / "mlp.py.j2").write_text(builtin.replace("class MLP(nn.Module):", f"{marker}\nclass MLP(nn.Module):"))
    args = ["from-hub", "Qwen/Qwen3-0.6B", "--out", str(tmp_path / "o"), "--templates", str(tmp_path / "templates")]
    assert main(args + ["--no-verify"]) == 0
    text = (tmp_path / "o" / "Qwen3-0.6B" / "model.py").read_text()
    assert marker in text and "class RMSNorm" in text  # other templates still the built-ins
    assert marker not in (GENERATED / "Qwen3-0.6B" / "model.py").read_text()


def test_list_shows_the_catalog(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "google/gemma-3-1b-it" in out and "gemma3_text" in out and "yes" in out


def test_verify_reports_a_planted_bug(tmp_path, capsys):
    shutil.copytree(GENERATED / "gemma-3-1b-it", tmp_path / "g")
    model = tmp_path / "g" / "model.py"
    model.write_text(model.read_text().replace("(1.0 + self.weight.float())", "self.weight.float()"))
    assert main(["verify", str(tmp_path / "g")]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert json.loads((tmp_path / "g" / "parity.json").read_text())["passed"] is False


def test_schema_command(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Architecture"
