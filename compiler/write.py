"""Pass 7, writing: put a model's files in place atomically, inside --out, never over hand edits.

Everything is rendered in memory first, so bad input never leaves partial output. Each
file is written to a temporary name in the target directory, flushed to disk and renamed
over the old one, so a reader never sees half a file.

The output directory is ``<out>/<slug>``: a slug is one plain path component (ASCII letters,
digits, ``.``, ``_``, ``-``; no ``..``, separators, drive letters or look-alike unicode), and an
existing ``<out>/<slug>`` that is a symlink or a file is not written through. An existing
model.py whose body no longer matches the content hash in its header was edited by hand: it
is only overwritten with ``force`` (``--force``).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from . import contenthash
from .errors import LlmgenError, SourceError

SLUG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_-])?")
MEASURED = ("parity.json", "reference_logits.safetensors", "checkpoint.json")  # not compiled: measured, or local


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
    """Write ``files`` into ``out/slug`` after checking the slug, the target and hand edits."""
    if not is_safe_slug(slug):
        raise SourceError(f"output name {slug!r:.80} is not a plain directory name (letters, digits, . _ -)")
    directory = out / slug
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise SourceError(f"{directory}: exists and is not a plain directory; not writing through it")
    for name in sorted(files):
        target = directory / name
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise SourceError(f"{target}: exists and is not a plain file; not writing over it")
    existing = directory / "model.py"
    if not force and existing.is_file():
        found = contenthash.state(existing.read_bytes())
        if found == "edited":
            raise EditedFileError(f"{existing}: edited by hand since llmgen wrote it (its body does not match the"
                                  " content hash in its header); pass --force to overwrite it")
        if found == "foreign":
            raise EditedFileError(f"{existing}: not written by llmgen; pass --force to overwrite it")
    return write_outputs(directory, files)


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_outputs(directory: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) into ``directory``; drop stale measured results."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, _file_mode())  # mkstemp makes it private; outputs get the usual mode
            os.replace(tmp, directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    for name in MEASURED:
        if name not in files:
            (directory / name).unlink(missing_ok=True)
    return directory
