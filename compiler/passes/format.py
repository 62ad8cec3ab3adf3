"""Pass 6, formatting: black with a pinned version and fixed options, so bytes are stable."""

from __future__ import annotations

import black

LINE_LENGTH = 100


def format_source(source: str, *, name: str = "<generated>") -> str:
    """Return ``source`` formatted by black; a syntax error names the file (a template bug)."""
    try:
        return black.format_str(source, mode=black.Mode(line_length=LINE_LENGTH, target_versions={black.TargetVersion.PY311}))
    except black.InvalidInput as exc:
        raise RuntimeError(f"{name}: rendered code is not valid Python ({exc})") from None
