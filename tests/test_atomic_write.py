"""A generated directory is written as one set: killed runs, concurrent runs and write errors
leave the old complete set or the new complete set, never files of two runs side by side.

"Complete set" is checked against llmgen.json: every file it lists is there with the sha256
it records, nothing else (no temporaries) is in the directory, and the set is one of the two
models the runs wrote. The writers are child processes calling the same ``write_model`` the
CLI calls, on sets compiled once here, so that a kill lands inside the write (the part under
test) rather than in the seconds of compiling before it; the write-error test runs the CLI.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CATALOG

from llmgen.compiler.basics import contenthash
from llmgen.compiler.passes.load import load_config
from llmgen.compiler.passes.pipeline import compile_config

SOURCES = {"smol": CATALOG / "HuggingFaceTB__SmolLM2-135M-Instruct.json", "qwen": CATALOG / "Qwen__Qwen3-0.6B.json"}
KILL_ROUNDS = 30
CONCURRENT_ROUNDS = 15

# A writer: write_model(out, "m", set) for the sets named on the command line, in turn: forever,
# or, given a GO file, 4 times once GO exists (after printing "ready": a common start).
WRITER = r"""
import base64, json, os, sys, time
from pathlib import Path
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.write import write_model
out, sets_file, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
sets = json.loads(Path(sets_file).read_text())
files = {n: {k: base64.b64decode(v) for k, v in sets[n].items()} for n in names}
go = sys.argv[4] if len(sys.argv) > 4 else None
if go:
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.0005)
i = 0
while not go or i < 4:
    try:
        write_model(out, "m", files[names[i % len(names)]])
    except LlmgenError as exc:
        print(f"llmgen: error: {exc}", file=sys.stderr)
        sys.exit(2)
    i += 1
"""


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> Path:
    """The two models' compiled file sets, base64 in one JSON file for the writers."""
    data = {}
    for name, path in SOURCES.items():
        compiled = compile_config(load_config(str(path), prefer="path"), slug="m")
        data[name] = {k: base64.b64encode(v).decode() for k, v in compiled.files.items()}
    path = tmp_path_factory.mktemp("sets") / "sets.json"
    path.write_text(json.dumps(data))
    return path


def complete_set(directory: Path) -> str:
    """The source of the one complete set in ``directory``; fails on a mixed or partial one."""
    manifest = contenthash.read_manifest(directory)
    assert contenthash.mismatched(directory, manifest) == [], f"mixed set in {directory}"
    assert sorted(p.name for p in directory.iterdir()) == sorted([*manifest["sha256"], "llmgen.json"])
    assert manifest["source"] in {str(p) for p in SOURCES.values()}
    return manifest["source"]


def snapshot(directory: Path) -> bool:
    """Read the set in ``directory`` as a reader would, through one descriptor of the directory
    (so a swap in the middle cannot mix two sets into what is read); fail on a mixed set.
    False when there was nothing to read (no set yet, or one removed while being read)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return False
    try:
        def read(name: str) -> bytes:
            handle = os.open(name, os.O_RDONLY, dir_fd=fd)
            with os.fdopen(handle, "rb") as f:
                return f.read()

        manifest = json.loads(read("llmgen.json"))
        for name, want in manifest["sha256"].items():
            assert hashlib.sha256(read(name)).hexdigest() == want, f"a reader saw a mixed set ({name})"
        return True
    except FileNotFoundError:  # the old set, removed after a swap while it was read
        return False
    finally:
        os.close(fd)


def writer(out: Path, sets: Path, names: str, *extra: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(sets), names, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_kill_9_at_random_times_leaves_one_complete_set(sets, tmp_path):
    out = tmp_path / "out"
    rng = random.Random(18)
    seen, leftovers = set(), 0
    for _ in range(KILL_ROUNDS):
        child = writer(out, sets, "smol,qwen")
        time.sleep(rng.uniform(0.3, 0.9))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read()
        child.stdout.close()
        child.stderr.close()
        if (out / "m").exists():
            seen.add(complete_set(out / "m"))
        leftovers += any(p.name != "m" for p in out.iterdir()) if out.exists() else 0
    # The kills landed inside writes (temporaries left behind), and both sets were written.
    assert leftovers >= 1 and len(seen) == 2, (leftovers, seen)
    print(f"{KILL_ROUNDS} kill -9 rounds: 0 mixed directories; {leftovers} left temporaries, cleared by the next run")
    child = writer(out, sets, "smol", str(tmp_path / "go"))
    (tmp_path / "go").touch()
    assert child.wait(timeout=60) == 0, child.stderr.read()
    child.stdout.close()
    child.stderr.close()
    assert sorted(p.name for p in out.iterdir()) == ["m"]  # the next run cleared every leftover
    assert complete_set(out / "m") == str(SOURCES["smol"])


def test_concurrent_writers_into_one_name_serialise(sets, tmp_path):
    reads = 0
    for round_ in range(CONCURRENT_ROUNDS):
        out, go = tmp_path / f"out{round_}", tmp_path / f"go{round_}"
        children = [writer(out, sets, "smol", str(go)), writer(out, sets, "qwen", str(go))]
        assert [child.stdout.readline() for child in children] == ["ready\n", "ready\n"]
        go.touch()  # both start writing at once
        while any(child.poll() is None for child in children):
            reads += snapshot(out / "m")
            time.sleep(0.002)
        for child in children:
            child.wait(timeout=120)
            err = child.stderr.read()
            child.stdout.close()
            child.stderr.close()
            assert child.returncode == 0 or (child.returncode == 2 and err.startswith("llmgen: error: ")
                                             and err.count("\n") == 1), err
            assert "Traceback" not in err
        assert sorted(p.name for p in out.iterdir()) == ["m"]
        complete_set(out / "m")
    assert reads >= CONCURRENT_ROUNDS, reads  # the reader did read sets while they were being written
    print(f"{CONCURRENT_ROUNDS} concurrent rounds: one complete set each; {reads} reads during the writes, none mixed")


def test_a_writer_waits_for_the_lock(sets, tmp_path):
    """The lock is real: while another holder has --out locked, a writer does not write."""
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        child = writer(out, sets, "smol", str(tmp_path / "go"))
        assert child.stdout.readline() == "ready\n"
        (tmp_path / "go").touch()
        time.sleep(1.0)
        assert child.poll() is None and not (out / "m").exists()
    finally:
        os.close(fd)
    assert child.wait(timeout=60) == 0
    child.stdout.close()
    child.stderr.close()
    assert complete_set(out / "m") == str(SOURCES["smol"])


def test_a_write_error_keeps_the_old_set(tmp_path):
    """``ulimit -f``: the file-size limit stops the write; one error line, the old set intact."""
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "llmgen.compiler.basics.cli"]
    old = subprocess.run([*cli, "from-config", str(SOURCES["smol"]), "--out", str(out), "--name", "m", "--no-verify"],
                         capture_output=True, text=True, timeout=300)
    assert old.returncode == 0, old.stderr
    before = {p.name: p.read_bytes() for p in (out / "m").iterdir()}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run([*cli, "from-config", str(SOURCES["qwen"]), "--out", str(out), "--name", "m", "--no-verify"],
                         capture_output=True, text=True, timeout=300, preexec_fn=limit, env=env)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("llmgen: error: cannot write ") and "File too large" in run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr and run.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["m"]
    assert {p.name: p.read_bytes() for p in (out / "m").iterdir()} == before
    assert complete_set(out / "m") == str(SOURCES["smol"])


def test_without_renameat2_the_swap_is_two_renames_that_the_next_run_completes(sets, tmp_path, monkeypatch):
    """Where RENAME_EXCHANGE is missing, the old set is renamed aside before the new one takes
    its name; a run killed between the two renames leaves no ``m``, and the next writer puts
    the old set back (then replaces it), so no reader ever gets a mixed set."""
    from llmgen.compiler.basics import atomic
    from llmgen.compiler.passes.write import write_model

    data = json.loads(sets.read_text())
    files = {n: {k: base64.b64decode(v) for k, v in data[n].items()} for n in data}
    monkeypatch.setattr(atomic, "_exchange", lambda *args: False)
    out = tmp_path / "out"
    write_model(out, "m", files["smol"])
    write_model(out, "m", files["qwen"])
    assert sorted(p.name for p in out.iterdir()) == ["m"] and complete_set(out / "m") == str(SOURCES["qwen"])
    (out / "m").rename(out / ".m.llmgen-old-0123456789ab")  # killed between the renames: the old set aside,
    (out / ".m.llmgen-tmp-ba9876543210").mkdir()  # and a temporary (the new set, maybe partial)
    (out / ".m.llmgen-tmp-ba9876543210" / "model.py").write_bytes(files["smol"]["model.py"])
    dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        atomic.recover(dir_fd, "m")
    finally:
        os.close(dir_fd)
    assert sorted(p.name for p in out.iterdir()) == ["m"] and complete_set(out / "m") == str(SOURCES["qwen"])
    write_model(out, "m", files["smol"])
    assert sorted(p.name for p in out.iterdir()) == ["m"] and complete_set(out / "m") == str(SOURCES["smol"])
