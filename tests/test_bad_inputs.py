"""The bad-input corpus (tests/bad_inputs/): every case fails cleanly.

Each case is a file (a config.json, a description of a hub answer, or a checkpoint directory)
with the LlmgenError subclass it must raise and the key, file or tensor its message must name
(tests/bad_inputs/cases.json, written by tests/bad_inputs/make_corpus.py). Through the real
``llmgen`` entry point, every case must give exit status 2, exactly one stderr line
``llmgen: error: ...`` naming the culprit, no traceback, nothing on stdout, and no output
directory. Hub answers are simulated at the huggingface_hub boundary: ``hf_hub_download``
raises what huggingface_hub raises for that HTTP answer (built by huggingface_hub's own
``hf_raise_for_status``), or the connection error it reports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.utils import _http as hf_http

from llmgen.compiler.basics import cli
from llmgen.compiler.passes import load as load_mod
from llmgen.compiler.basics.errors import LlmgenError

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES: dict[str, dict] = json.loads((CORPUS / "cases.json").read_text())
MARKER = "llmgen-pwned-marker"  # what the hostile pickle in the corpus would create


def test_corpus_size_and_categories():
    kinds = {kind: sum(c["kind"] == kind for c in CASES.values()) for kind in ("config", "hub", "checkpoint")}
    assert len(CASES) >= 200 and kinds["hub"] >= 10 and kinds["checkpoint"] >= 20, kinds
    prefixes = {name.split("-", 2)[1] for name in CASES}
    for category in ("json", "type", "size", "heads", "kv", "layer_types", "model_type", "unknown", "rope_scaling",
                     "window", "st", "tensor", "index", "bin"):
        assert category in prefixes, category
    for name, case in CASES.items():
        assert (CORPUS / case["path"]).exists(), name
        assert case["names"] and hasattr(sys.modules["llmgen.compiler.basics.errors"], case["error"]), name


def test_corpus_is_what_make_corpus_writes(tmp_path):
    """The committed corpus is reproducible: the script writes the same bytes (pickles aside)."""
    subprocess.run([sys.executable, str(CORPUS / "make_corpus.py"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, timeout=120)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(CORPUS) for p in CORPUS.rglob("*") if p.is_file() and p.name != "make_corpus.py"
                       and "__pycache__" not in p.parts)
    assert made == committed
    for rel in made:
        if rel.suffix != ".bin":
            assert (tmp_path / rel).read_bytes() == (CORPUS / rel).read_bytes(), rel


# ------------------------------------------------------------------------------ running a case


def _hub_answer(answer: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make hf_hub_download fail the way huggingface_hub does for ``answer``."""
    monkeypatch.setattr(load_mod, "_hub_unreachable", lambda *args: None)  # no probe request
    offline = bool(answer.get("offline"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if hasattr(constants, "is_offline_mode"):
        monkeypatch.setattr(constants, "is_offline_mode", lambda: offline)
    request = httpx2.Request("GET", "https://huggingface.co/acme/x/resolve/main/config.json")
    if offline:
        err: BaseException = LocalEntryNotFoundError("Cannot find the requested files in the disk cache and "
                                                     "outgoing traffic has been disabled (HF_HUB_OFFLINE=1)")
    elif "network" in answer:
        err = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")
        err.__cause__ = getattr(httpx2, answer["network"])("timed out", request=request)
    else:
        headers = {"X-Error-Code": answer["error_code"]} if "error_code" in answer else {}
        if "message" in answer:
            headers["X-Error-Message"] = answer["message"]
        response = httpx2.Response(answer["status"], headers=headers, request=request)
        with pytest.raises(huggingface_hub.errors.HfHubHTTPError) as raised:
            hf_http.hf_raise_for_status(response)
        err = raised.value
        if answer["status"] >= 500:  # hf_hub_download reports a 5xx after its retries like this
            err = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")
            err.__cause__ = raised.value

    def fake_download(*args, **kwargs):
        raise err

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)


def _arguments(case: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str]:
    """The llmgen command line for ``case`` and how its path appears in messages."""
    out = ["--out", str(tmp_path / "out"), "--no-verify"]
    source = CORPUS / case["path"]
    if case["kind"] == "config":
        return ["from-config", str(source), *out], str(source)
    if case["kind"] == "checkpoint":
        copy = tmp_path / "ckpt"
        shutil.copytree(source, copy)  # the CLI must not write there, but never risk the corpus
        return ["from-config", str(copy), *out], str(copy)
    spec = json.loads(source.read_text())
    _hub_answer(spec["answer"], monkeypatch)
    revision = ["--revision", spec["answer"]["revision"]] if "revision" in spec["answer"] else []
    return ["from-hub", spec["id"], *revision, *out], spec["id"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_fails_cleanly(name, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    monkeypatch.chdir(tmp_path)  # a hostile pickle would create its marker here
    args, shown = _arguments(case, tmp_path, monkeypatch)
    raised: list[BaseException] = []
    command = args[0]
    original = cli.COMMANDS[command]

    def recording(parsed):
        try:
            return original(parsed)
        except BaseException as err:
            raised.append(err)
            raise

    monkeypatch.setitem(cli.COMMANDS, command, recording)
    status = cli.main(args)
    captured = capsys.readouterr()
    assert status == 2, (status, captured.err, captured.out)
    assert len(raised) == 1 and isinstance(raised[0], LlmgenError)
    assert type(raised[0]).__name__ == case["error"], f"{type(raised[0]).__name__}: {raised[0]}"
    assert captured.out == ""
    assert captured.err.startswith("llmgen: error: ") and captured.err.endswith("\n")
    assert captured.err.count("\n") == 1 and "\r" not in captured.err and "Traceback" not in captured.err
    message = captured.err
    for named in case["names"]:
        assert named.replace("{file}", shown) in message, (named, message)
    assert not (tmp_path / "out").exists(), "something was written"
    assert not (tmp_path / MARKER).exists(), "the hostile pickle ran"


SUBPROCESS_SAMPLE = ["json-deep-nesting", "json-non-finite-nan", "type-hidden_size-string", "heads-llama-32-kv-5",
                     "unknown-key-llama-a-b", "rope_scaling-llama3-no-factor", "window-above-context-mistral",
                     "offline-unknown", "st-header-length-huge", "tensor-misshaped", "index-absent-shard",
                     "bin-code-execution"]


@pytest.mark.parametrize("label", SUBPROCESS_SAMPLE)
def test_bad_input_as_a_process(label, tmp_path):
    """The installed command as a separate process: status 2, one stderr line, nothing written."""
    (name,) = [n for n in CASES if n.split("-", 1)[1] == label]
    case = CASES[name]
    if case["kind"] == "hub":
        args = ["from-hub", json.loads((CORPUS / case["path"]).read_text())["id"]]
    else:
        source = CORPUS / case["path"]
        if case["kind"] == "checkpoint":
            source = Path(shutil.copytree(source, tmp_path / "ckpt"))
        args = ["from-config", str(source)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf-cache")}
    result = subprocess.run([sys.executable, "-m", "llmgen.compiler.basics.cli", *args, "--out", str(tmp_path / "out"),
                             "--no-verify"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("llmgen: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / MARKER).exists()


# ------------------------------------------------------- the generated loader agrees on checkpoints


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """model.py compiled from the corpus's tiny checkpoint config."""
    from llmgen.compiler.passes.pipeline import generate

    config = CORPUS / CASES[next(n for n in CASES if CASES[n]["kind"] == "checkpoint")]["path"] / "config.json"
    out = tmp_path_factory.mktemp("tiny")
    _, _, where = generate(str(config), out, prefer="path", slug="tiny")
    from llmgen.compiler.runtime.generated_files import import_generated

    return import_generated(where, "_llmgen_bad_inputs_tiny")


@pytest.mark.filterwarnings("ignore:loading .* with torch.load")
@pytest.mark.parametrize("name", sorted(n for n in CASES if CASES[n]["kind"] == "checkpoint"))
def test_generated_loader_rejects_the_same_checkpoints(name, tiny_model, tmp_path, monkeypatch):
    """model.py's own load_checkpoint raises one WeightLoadError line naming the same file or tensor."""
    monkeypatch.chdir(tmp_path)
    directory = CORPUS / CASES[name]["path"]
    with pytest.raises(tiny_model.WeightLoadError) as err:
        tiny_model.load_checkpoint(directory, allow_bin=True)
    message = str(err.value)
    assert "\n" not in message
    assert str(directory) in message or any(n in message for n in CASES[name]["names"] if "." in n), message
    for named in CASES[name]["names"]:
        if named.endswith((".safetensors", ".json", ".bin")) or named in ("missing", "unexpected", "wrong shape"):
            assert named in message, (named, message)
    assert not (tmp_path / MARKER).exists()
