"""Where output goes and how it is written: safe names inside --out, atomic writes, and hand
edits to a generated model.py (detected by the content hash in its header) kept unless --force.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from conftest import CATALOG, GENERATED

from llmgen.compiler.basics import atomic, contenthash
from llmgen.compiler.basics.atomic import OutputError
from llmgen.compiler.basics.cli import main
from llmgen.compiler.basics.errors import SourceError
from llmgen.compiler.passes.write import slug_for, write_model

QWEN = str(CATALOG / "Qwen__Qwen3-0.6B.json")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("source,slug", [
    ("google/gemma-3-1b-it", "gemma-3-1b-it"), ("Qwen/Qwen2.5-0.5B", "Qwen2.5-0.5B"),
    ("/abs/path/my-ckpt/config.json", "my-ckpt"), ("rel/ckpt/", "ckpt"), ("C:\\models\\llama\\config.json", "llama"),
    ("llama.json", "llama"),
])
def test_slug_from_a_source(source, slug):
    assert slug_for(source) == slug


@pytest.mark.parametrize("source", [
    "..", "../", "a/..", "/", "", ".", "C:", "x/C:", "..\\..\\config.json", "../config.json", "a/.hidden", "-rf",
    "x/\u2025", "x/\uff0e\uff0e", "a\u2215..\u2215b", "ｅｖｉｌ", "evil\u200b", "e\u0301", "con\x00", "tab\tname",
    "new\nline", "trailing.", "a" * 200,
])
def test_unsafe_slugs_are_refused(source):
    with pytest.raises(SourceError):
        slug_for(source)


@pytest.mark.parametrize("name", ["../escape", "..", "/tmp/abs", "a/b", "C:evil", "C:\\evil", "..\\x", "\uff0e\uff0e",
                                  "x\u2215y", "name\n", ".", "evil\u200b"])
def test_hostile_name_cannot_escape_out(name, tmp_path, capsys):
    out = tmp_path / "sandbox" / "out"
    out.mkdir(parents=True)
    before = tree(tmp_path)
    assert main(["from-config", QWEN, "--out", str(out), "--name", name, "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmgen: error: output name") and err.count("\n") == 1
    assert tree(tmp_path) == before and not any(out.iterdir())


def test_output_directory_that_is_a_symlink_is_not_written_through(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "Qwen3").symlink_to(elsewhere, target_is_directory=True)
    assert main(["from-config", QWEN, "--out", str(out), "--name", "Qwen3", "--no-verify"]) == 2
    assert "not a plain directory" in capsys.readouterr().err
    assert not any(elsewhere.iterdir())


def test_output_file_that_is_a_symlink_is_not_written_over(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "out" / "q"
    target.mkdir(parents=True)
    (target / "model.py").symlink_to(victim)
    assert main(["from-config", QWEN, "--out", str(tmp_path / "out"), "--name", "q", "--no-verify"]) == 2
    assert "not a plain file" in capsys.readouterr().err
    assert victim.read_text() == "keep me" and len(list(target.iterdir())) == 1


# ------------------------------------------------------------------------------ atomic writes


def test_the_set_is_written_beside_and_swapped_in_whole(tmp_path, monkeypatch):
    """Each file is complete (and fsynced) under a temporary name inside a temporary sibling
    directory before anything is renamed; the set then replaces the old one in one exchange."""
    events: list[tuple] = []
    real_replace, real_exchange = os.replace, atomic._exchange

    def recording_replace(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
        data = os.open(src, os.O_RDONLY, dir_fd=src_dir_fd)
        with os.fdopen(data, "rb") as handle:
            events.append(("file", os.readlink(f"/proc/self/fd/{src_dir_fd}"), src, dst, handle.read()))
        return real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    def recording_exchange(dir_fd, a, b):
        events.append(("exchange", a, b, sorted(os.listdir(tmp_path / a))))
        return real_exchange(dir_fd, a, b)

    monkeypatch.setattr(atomic.os, "replace", recording_replace)
    monkeypatch.setattr(atomic, "_exchange", recording_exchange)
    write_model(tmp_path, "m", {"model.py": b"old = 1\n"})
    events.clear()
    files = {"model.py": b"x = 1\n", "arch.json": b"{}\n"}
    directory = write_model(tmp_path, "m", files, force=True)
    assert [e[0] for e in events] == ["file", "file", "exchange"]
    for _, where, src, dst, data in events[:2]:
        assert Path(where).parent == tmp_path and Path(where).name.startswith(".m.llmgen-tmp-")
        assert src.startswith(f".{dst}.llmgen-tmp-") and data == files[dst]  # complete before it got its name
    assert events[2][2] == "m" and events[2][3] == ["arch.json", "model.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporaries left
    assert sorted(p.name for p in directory.iterdir()) == ["arch.json", "model.py"]
    mode = stat.S_IMODE((directory / "model.py").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_set_and_no_temporary(tmp_path, monkeypatch, capsys):
    directory = write_model(tmp_path, "m", {"model.py": b"old = 1\n"})

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OutputError, match="No space left on device"):
        write_model(tmp_path, "m", {"model.py": b"new = 2\n", "arch.json": b"{}\n"}, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert sorted(p.name for p in directory.iterdir()) == ["model.py"]
    assert (directory / "model.py").read_bytes() == b"old = 1\n"


# ------------------------------------------------------------------------------ hand edits


def test_every_committed_model_carries_a_matching_content_hash():
    models = sorted(GENERATED.glob("*/model.py"))
    assert models
    for path in models:
        text = path.read_text()
        assert contenthash.state(path.read_bytes()) == "intact", path
        assert contenthash.stamp(text) == text  # stamping is idempotent: output stays deterministic
        header = text.split('"""', 1)[0].splitlines()
        assert header[-1].startswith("# llmgen-content-hash: sha256:") and len(header[-1]) == 30 + 64


def test_hand_edited_model_is_kept_unless_forced(tmp_path, capsys):
    args = ["from-config", QWEN, "--out", str(tmp_path), "--name", "q", "--no-verify"]
    assert main(args) == 0
    model = tmp_path / "q" / "model.py"
    pristine = model.read_bytes()
    assert main(args) == 0 and model.read_bytes() == pristine  # untouched output: regenerated freely
    edited = pristine.replace(b"class RMSNorm", b"# my tweak\nclass RMSNorm")
    model.write_bytes(edited)
    others = {p.name: p.read_bytes() for p in (tmp_path / "q").iterdir() if p.name != "model.py"}
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(model) in err and "--force" in err and "edited by hand" in err
    assert model.read_bytes() == edited
    assert {p.name: p.read_bytes() for p in (tmp_path / "q").iterdir() if p.name != "model.py"} == others
    assert main([*args, "--force"]) == 0
    assert model.read_bytes() == pristine


@pytest.mark.parametrize("change", ["body", "hash", "header-comment"])
def test_what_counts_as_an_edit(change):
    text = (GENERATED / "Qwen3-0.6B" / "model.py").read_text()
    lines = text.split("\n")
    if change == "body":
        edited = text.replace("import torch\n", "import torch  # \n", 1)
    elif change == "hash":
        edited = text.replace("sha256:", "sha256:0", 1)[:-1]
    else:
        edited = "\n".join([lines[0] + " (my note)", *lines[1:]])
    expected = "intact" if change == "header-comment" else "edited"
    assert contenthash.state(edited.encode()) == expected


def test_a_file_llmgen_did_not_write_is_kept_unless_forced(tmp_path, capsys):
    target = tmp_path / "q"
    target.mkdir()
    (target / "model.py").write_text("print('my own model')\n")
    args = ["from-config", QWEN, "--out", str(tmp_path), "--name", "q", "--no-verify"]
    assert main(args) == 2 and "not written by llmgen" in capsys.readouterr().err
    assert (target / "model.py").read_text() == "print('my own model')\n"
    assert main([*args, "--force"]) == 0 and contenthash.state((target / "model.py").read_bytes()) == "intact"


def test_output_written_before_content_hashes_is_regenerated(tmp_path):
    """An older llmgen wrote model.py without the hash line, and recorded that file's sha256 in
    llmgen.json (which it always did): it is llmgen's, unedited, and regenerated freely."""
    args = ["from-config", QWEN, "--out", str(tmp_path), "--name", "q", "--no-verify"]
    assert main(args) == 0
    model, manifest_file = tmp_path / "q" / "model.py", tmp_path / "q" / "llmgen.json"
    text = model.read_text()
    legacy = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# llmgen-content-hash"))
    model.write_text(legacy)
    manifest = json.loads(manifest_file.read_text())
    manifest["sha256"]["model.py"] = hashlib.sha256(legacy.encode()).hexdigest()
    manifest_file.write_text(json.dumps(manifest))
    assert contenthash.state(model.read_bytes()) == "unstamped"
    assert main(args) == 0 and model.read_text() == text


@pytest.mark.parametrize("edit", ["delete-hash-line", "comment-above-hash-line", "comment-first-line", "arch.json"])
def test_the_manifest_decides_what_was_edited(edit, tmp_path, capsys):
    """Edits the in-file hash cannot see (its line deleted, a comment above it) are refused too:
    llmgen.json's sha256 of each whole file decides."""
    args = ["from-config", QWEN, "--out", str(tmp_path), "--name", "q", "--no-verify"]
    assert main(args) == 0
    directory = tmp_path / "q"
    target = directory / ("arch.json" if edit == "arch.json" else "model.py")
    lines = target.read_text().splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.startswith("# llmgen-content-hash")), 0)
    if edit == "delete-hash-line":
        del lines[at]
    elif edit == "comment-above-hash-line":
        lines.insert(at, "# my note: keep the window at 512\n")
    elif edit == "comment-first-line":
        lines.insert(0, "# my note\n")
    else:
        lines.insert(1, ' "note": "mine",\n')
    target.write_text("".join(lines))
    before = tree(tmp_path)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(target) in err and "edited by hand" in err and "--force" in err
    assert tree(tmp_path) == before
    assert main([*args, "--force"]) == 0 and str(target) not in capsys.readouterr().err
    assert contenthash.mismatched(directory, contenthash.read_manifest(directory)) == []


def test_a_corrupt_manifest_is_not_overwritten_without_force(tmp_path, capsys):
    args = ["from-config", QWEN, "--out", str(tmp_path), "--name", "q", "--no-verify"]
    assert main(args) == 0
    (tmp_path / "q" / "llmgen.json").write_text("{not json")
    before = tree(tmp_path)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "llmgen.json" in err and "--force" in err and tree(tmp_path) == before
    assert main([*args, "--force"]) == 0


def test_files_a_user_added_are_carried_over_and_stale_results_dropped(tmp_path):
    args = ["from-config", QWEN, "--out", str(tmp_path), "--name", "q", "--no-verify"]
    assert main(args) == 0
    directory = tmp_path / "q"
    (directory / "notes.md").write_text("mine")
    (directory / "data").mkdir()
    (directory / "data" / "x.txt").write_text("also mine")
    (directory / "parity.json").write_text("{}")  # measured for the old set
    assert main([*args, "--force"]) == 0
    assert (directory / "notes.md").read_text() == "mine" and (directory / "data" / "x.txt").read_text() == "also mine"
    assert not (directory / "parity.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_check_passes_on_fresh_output_and_sees_a_hand_edit(tmp_path, capsys):
    """The hash line keeps output byte-deterministic: `llmgen check` regenerates the same bytes."""
    gen = tmp_path / "generated"
    assert main(["from-config", QWEN, "--out", str(gen), "--name", "q", "--no-verify"]) == 0
    assert main(["check", "--dir", str(gen)]) == 0
    model = gen / "q" / "model.py"
    model.write_text(model.read_text().replace("import torch\n", "import torch\nimport os\n", 1))
    assert main(["check", "--dir", str(gen)]) == 1
    assert "import os" in capsys.readouterr().out
