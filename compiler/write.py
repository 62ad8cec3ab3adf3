"""Pass 7, writing: put a model's files in place atomically.

Everything is rendered in memory first, so bad input never leaves partial output. Each
file is written to a temporary name in the target directory and renamed over the old one.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from .errors import SourceError

SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MEASURED = ("parity.json",)  # results of running the model, not of compiling it


def slug_for(source_id: str) -> str:
    """Output directory name for a hub id or path: its last component, checked."""
    name = source_id.replace("\\", "/").rstrip("/").split("/")[-1]
    if name.endswith(".json"):
        parent = source_id.replace("\\", "/").rstrip("/").split("/")
        name = parent[-2] if name == "config.json" and len(parent) > 1 else name[: -len(".json")]
    name = name.strip()
    if not SLUG.match(name) or ".." in name:
        raise SourceError(f"cannot derive a safe output name from {source_id!r:.80}; pass --name")
    return name


def write_outputs(directory: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) into ``directory``; drop stale measured results."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    for name in MEASURED:
        if name not in files:
            (directory / name).unlink(missing_ok=True)
    return directory
