"""Pass 7, writing: put a model's files in place as one set, inside --out, never over hand edits.

Everything is rendered in memory first, so bad input never leaves partial output. The set is
written into a temporary sibling of ``<out>/<slug>`` and swapped in at once (``atomic``):
a reader, a concurrent run or a run killed at any moment sees the old complete set or the new
one. Writers into one ``--out`` take turns (a lock on it).

The output directory is ``<out>/<slug>``: a slug is one plain path component (ASCII letters,
digits, ``.``, ``_``, ``-``; no ``..``, separators, drive letters or look-alike unicode), and an
existing ``<out>/<slug>`` that is a symlink, a file or read-only is not written. Files whose
bytes no longer match the sha256 that llmgen.json recorded for them were edited by hand: they
are only overwritten with ``force`` (``--force``). Results measured for an older set
(parity.json, reference logits) are dropped with it; other files a user put in the directory
are carried over into the new set.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from ..basics import atomic, contenthash
from ..basics.atomic import OutputError
from ..basics.errors import LlmgenError, SourceError

SLUG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_-])?")
MEASURED = ("parity.json", "reference_logits.safetensors", "checkpoint.json")  # not compiled: measured, or local
NOT_CARRIED = ("__pycache__", contenthash.MANIFEST)


def slug_for(source_id: str) -> str:
    """Output directory name for a hub id or path: its last component, checked."""
    name = source_id.replace("\\", "/").rstrip("/").split("/")[-1]
    if name.endswith(".json"):
        parent = source_id.replace("\\", "/").rstrip("/").split("/")
        name = parent[-2] if name == "config.json" and len(parent) > 1 else name[: -len(".json")]
    name = name.strip()
    if not is_safe_slug(name):
        raise SourceError(f"cannot derive a safe output name from {source_id!r:.80}; pass --name")
    return name


class EditedFileError(LlmgenError):
    """An existing generated file was changed by hand (or is not llmgen's); --force overwrites it."""


def is_safe_slug(name: str) -> bool:
    return bool(SLUG.fullmatch(name)) and ".." not in name


def write_model(out: Path, slug: str, files: dict[str, bytes], *, force: bool = False) -> Path:
    """Make ``out/slug`` hold ``files`` (as one set) after checking the slug, the target and hand edits."""
    if not is_safe_slug(slug):
        raise SourceError(f"output name {slug!r:.80} is not a plain directory name (letters, digits, . _ -)")
    directory = out / slug
    created = not out.exists()
    atomic.ensure_dir(out, f"--out {out}")
    try:
        with atomic.locked(out) as out_fd:
            atomic.recover(out_fd, slug)
            _check_target(directory, files, force)
            atomic.replace_tree(out, out_fd, slug, files, carry=lambda old, new: _carry(old, new, files))
    except OSError as err:
        where = err.filename if isinstance(err.filename, str) and err.filename.startswith("/") else directory
        raise OutputError(f"cannot write {where}: {err.strerror or type(err).__name__}") from None
    finally:
        if created and not directory.exists():
            with contextlib.suppress(OSError):
                out.rmdir()  # made for this run, left empty by its failure: nothing written
    return directory


def _check_target(directory: Path, files: dict[str, bytes], force: bool) -> None:
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise OutputError(f"{directory}: exists and is not a plain directory; not writing through it")
    if not directory.exists():
        return
    if not os.access(directory, os.R_OK | os.X_OK) or not directory.stat().st_mode & 0o444:
        raise OutputError(f"{directory}: the directory is unreadable; not replacing it")
    atomic.check_writable(directory)
    for name in sorted(files):
        target = directory / name
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise OutputError(f"{target}: exists and is not a plain file; not writing over it")
    if not force:
        problem = contenthash.edit_problem(directory, [n for n in sorted(files) if n not in MEASURED])
        if problem:
            raise EditedFileError(problem)


def _carry(old: Path, new: Path, files: dict[str, bytes]) -> None:
    """Copy what a user added to the old set (not llmgen's files, not stale measurements)."""
    if not old.is_dir():
        return
    for entry in sorted(old.iterdir()):
        name = entry.name
        if name in files or name in MEASURED or name in NOT_CARRIED or atomic.TMP_TAG in name:
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), new / name)
        elif entry.is_dir():
            shutil.copytree(entry, new / name, symlinks=True, copy_function=atomic.link_or_copy)
        else:
            atomic.link_or_copy(str(entry), str(new / name))


def write_outputs(directory: Path, files: dict[str, bytes]) -> Path:
    """Make ``directory`` hold ``files`` as one set, without the hand-edit guard (tests, tools)."""
    return write_model(directory.parent, directory.name, files, force=True)
