"""Bad paths, files and templates around a compile: one ``llmgen: error:`` line, exit 2, no
traceback, nothing written (issue 18, items 1, 4, 5, 9, 10).

Each case prepares a directory, runs the CLI in-process and checks the one error line, the
names it must contain and that the whole tree is byte-for-byte what it was before. Tests run
as root, whom permission bits do not stop: "read-only" and "unreadable" here are what the
mode bits say, which llmgen honours for root too; a genuinely read-only file system (EROFS)
is simulated where the write begins (``os.mkdir`` of the temporary set), so that case proves
the error path, not the kernel's refusal.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CATALOG, GENERATED
from huggingface_hub import constants

from llmgen.compiler.basics import atomic
from llmgen.compiler.verification import verify
from llmgen.compiler.basics.cli import main

QWEN = str(CATALOG / "Qwen__Qwen3-0.6B.json")
LONG = "a/" * 2500  # 5,000 characters: ENAMETOOLONG
NORM = Path(__file__).resolve().parent.parent / "templates" / "model" / "norm.py.j2"
AT = "t/model/norm.py.j2: line %d" % (NORM.read_bytes().rstrip(b"\n").count(b"\n") + 2)  # the line a case appends


def tree(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    out = {}
    for p in sorted(root.rglob("*")):
        mode = p.lstat().st_mode
        out[str(p.relative_to(root))] = (mode, os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
    return out


def compiled(tmp: Path, name: str = "q") -> Path:
    assert main(["from-config", QWEN, "--out", str(tmp / "gen"), "--name", name, "--no-verify"]) == 0
    return tmp / "gen" / name


def template(kind: str) -> Callable[[Path], list[str]]:
    lines = {"syntax": "{% if %}broken", "undefined": "# {{ no_such_variable }}", "python": "def broken(:",
             "runtime": "# {{ 1 // 0 }}"}

    def prepare(tmp: Path) -> list[str]:
        (tmp / "t" / "model").mkdir(parents=True)
        text = NORM.read_bytes()
        extra = b"# caf\xe9\n" if kind == "utf8" else lines[kind].encode() + b"\n"
        (tmp / "t" / "model" / "norm.py.j2").write_bytes(text.rstrip(b"\n") + b"\n" + extra)
        return ["from-config", QWEN, "--out", str(tmp / "out"), "--templates", str(tmp / "t"), "--no-verify"]

    return prepare


def out_is(kind: str) -> Callable[[Path], list[str]]:
    def prepare(tmp: Path) -> list[str]:
        if kind == "file":
            (tmp / "f").write_text("keep")
            out = tmp / "f"
        elif kind == "under-a-file":
            (tmp / "f").write_text("keep")
            out = tmp / "f" / "sub"
        else:
            (tmp / "ro").mkdir()
            (tmp / "ro").chmod(0o555)
            out = tmp / "ro"
        return ["from-config", QWEN, "--out", str(out), "--no-verify"]

    return prepare


def model_dir(mode: int) -> Callable[[Path], list[str]]:
    def prepare(tmp: Path) -> list[str]:
        compiled(tmp).chmod(mode)
        return ["from-config", QWEN, "--out", str(tmp / "gen"), "--name", "q", "--no-verify", "--force"]

    return prepare


def check_with(damage: str) -> Callable[[Path], list[str]]:
    def prepare(tmp: Path) -> list[str]:
        directory = compiled(tmp)
        if damage == "manifest-not-json":
            (directory / "llmgen.json").write_text('{"source": ')
        elif damage == "manifest-not-an-object":
            (directory / "llmgen.json").write_text("[1, 2]")
        elif damage == "manifest-not-utf8":
            (directory / "llmgen.json").write_bytes(b'{"source": "caf\xe9"}')
        elif damage == "config-not-json":
            (directory / "config.json").write_text("{nope")
        elif damage == "config-missing":
            (directory / "config.json").unlink()
        return ["check", "--dir", str(tmp / "gen")]

    return prepare


def card_of_non_utf8_arch(tmp: Path) -> list[str]:
    directory = compiled(tmp)
    (directory / "arch.json").write_bytes(b'{"model_type": "caf\xe9"}')
    return ["card", str(directory)]


def probe_timeout(value: str) -> Callable[[Path], list[str]]:
    def prepare(tmp: Path) -> list[str]:
        os.environ["LLMGEN_HUB_PROBE_TIMEOUT"] = value  # restored by the test's monkeypatch
        return ["from-hub", "Qwen/Qwen3-0.6B", "--out", str(tmp / "out"), "--no-verify"]

    return prepare


def gallery_symlinked_page(tmp: Path) -> list[str]:
    (tmp / "victim.html").write_text("keep me")
    (tmp / "site").mkdir()
    (tmp / "site" / "index.html").symlink_to(tmp / "victim.html")
    return ["gallery", "--out", str(tmp / "site")]


def verify_symlinked_parity(tmp: Path) -> list[str]:
    directory = compiled(tmp)
    (tmp / "victim.json").write_text("keep me")
    (directory / "parity.json").symlink_to(tmp / "victim.json")
    return ["verify", str(directory)]


def verify_read_only_dir(tmp: Path) -> list[str]:
    directory = compiled(tmp)
    directory.chmod(0o555)
    return ["verify", str(directory)]


CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    "out-is-a-file": (out_is("file"), ["--out", "exists and is not a directory"]),
    "out-under-a-file": (out_is("under-a-file"), ["--out", "Not a directory"]),
    "out-read-only": (out_is("read-only"), ["--out", "read-only"]),
    "model-dir-read-only": (model_dir(0o555), ["gen/q", "read-only"]),
    "model-dir-unreadable": (model_dir(0o000), ["gen/q", "unreadable"]),
    "from-config-5000-char-path": (lambda tmp: ["from-config", LONG, "--out", str(tmp / "out")],
                                   ["a/a/a", "5000 characters", "File name too long"]),
    "from-config-5000-char-json": (lambda tmp: ["from-config", "b" * 5000 + ".json", "--out", str(tmp / "out")],
                                   ["bbb", "File name too long"]),
    "card-5000-char-path": (lambda tmp: ["card", LONG], ["5000 characters", "File name too long"]),
    "diff-5000-char-path": (lambda tmp: ["diff", QWEN, LONG], ["B (", "5000 characters", "File name too long"]),
    "check-manifest-not-json": (check_with("manifest-not-json"), ["gen/q/llmgen.json", "not valid JSON"]),
    "check-manifest-not-an-object": (check_with("manifest-not-an-object"), ["gen/q/llmgen.json", "not an llmgen manifest"]),
    "check-manifest-not-utf8": (check_with("manifest-not-utf8"), ["gen/q/llmgen.json", "UTF-8"]),
    "check-config-not-json": (check_with("config-not-json"), ["gen/q/config.json", "invalid JSON"]),
    "check-config-missing": (check_with("config-missing"), ["gen/q/config.json", "missing"]),
    "card-arch-not-utf8": (card_of_non_utf8_arch, ["gen/q/arch.json", "not UTF-8"]),
    "templates-syntax-error": (template("syntax"), [AT, "syntax"]),
    "templates-undefined": (template("undefined"), [AT, "no_such_variable"]),
    "templates-not-python": (template("python"), ["not valid Python", "def broken(:", AT]),
    "templates-not-utf8": (template("utf8"), [AT, "not UTF-8"]),
    "templates-runtime-error": (template("runtime"), [AT, "ZeroDivisionError"]),
    "probe-timeout-nan": (probe_timeout("nan"), ["LLMGEN_HUB_PROBE_TIMEOUT", "'nan'"]),
    "probe-timeout-inf": (probe_timeout("inf"), ["LLMGEN_HUB_PROBE_TIMEOUT", "'inf'"]),
    "probe-timeout-1e308": (probe_timeout("1e308"), ["LLMGEN_HUB_PROBE_TIMEOUT", "'1e308'"]),
    "probe-timeout-negative": (probe_timeout("-1"), ["LLMGEN_HUB_PROBE_TIMEOUT"]),
    "gallery-symlinked-page": (gallery_symlinked_page, ["site/index.html", "not a plain file"]),
    "verify-symlinked-parity": (verify_symlinked_parity, ["gen/q/parity.json", "not a plain file"]),
    "verify-read-only-dir": (verify_read_only_dir, ["gen/q", "read-only"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fails_in_one_line_and_writes_nothing(name, tmp_path, monkeypatch, capsys):
    prepare, names = CASES[name]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMGEN_HUB_PROBE_TIMEOUT", "3")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the probe setting is read when online
    if hasattr(constants, "is_offline_mode"):
        monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    if name.startswith("verify-"):  # the measurement is not under test here, its write is
        monkeypatch.setattr(verify, "_import", lambda path: type("M", (), {"measure": staticmethod(lambda: {
            "max_abs_diff": 0.0, "tolerance": 1e-5})}))
    args = prepare(tmp_path)
    capsys.readouterr()
    before = tree(tmp_path)
    try:
        status = main(args)
        after = tree(tmp_path)
    finally:
        for p in tmp_path.rglob("*"):  # let pytest clean up what a case made unreadable
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
    captured = capsys.readouterr()
    assert status == 2, (status, captured.err, captured.out)
    err = captured.err
    assert err.startswith("llmgen: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert captured.out == ""
    for named in names:
        assert named in err, (named, err)
    assert after == before, "something was written"


def test_a_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    """EROFS where the new set's temporary directory is made (simulated: root cannot get a
    read-only mount here): one line naming the directory, nothing written."""

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    (tmp_path / "out").mkdir()
    monkeypatch.setattr(atomic.os, "mkdir", refuse)
    assert main(["from-config", QWEN, "--out", str(tmp_path / "out"), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmgen: error: cannot write ") and "Read-only file system" in err and err.count("\n") == 1
    assert not any((tmp_path / "out").iterdir())
    assert main(["from-config", QWEN, "--out", str(tmp_path / "new"), "--no-verify"]) == 2
    assert "Read-only file system" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_check_names_a_directory_whose_files_do_not_belong_together(tmp_path, capsys):
    directory = compiled(tmp_path)
    other = compiled(tmp_path, "smol")
    shutil.copy(GENERATED / "SmolLM2-135M-Instruct" / "model.py", directory / "model.py")
    assert main(["check", "--dir", str(tmp_path / "gen")]) == 1
    out = capsys.readouterr().out
    assert f"{directory}: files do not belong together: model.py not as recorded in llmgen.json" in out
    assert str(other) not in out.replace(str(other) + "/", "")  # the intact set is not named
    manifest = json.loads((directory / "llmgen.json").read_text())
    assert manifest["source"] == QWEN


def test_the_safety_net_names_the_file(tmp_path, monkeypatch, capsys):
    """An OSError no command turned into a message yet still gives one line naming the file."""
    from llmgen.compiler.basics import cli

    def broken(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x.json"))

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    assert main(["list"]) == 2
    assert capsys.readouterr().err == f"llmgen: error: {tmp_path / 'x.json'}: Permission denied\n"
