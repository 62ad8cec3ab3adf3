"""Pass 6, formatting: black with a pinned version and fixed options, so bytes are stable."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import black

LINE_LENGTH = 100
MODE = black.Mode(line_length=LINE_LENGTH, target_versions={black.TargetVersion.PY311})
# black is a pure function of (text, mode) and takes about a second on a big model.py; a process that
# compiles the same text again (`llmgen check` after a compile, the test suite) reuses the result.
_SEEN: OrderedDict[bytes, str] = OrderedDict()
_SEEN_MAX = 256


def format_source(source: str, *, name: str = "<generated>") -> str:
    """Return ``source`` formatted by black; a syntax error names the file (a template bug)."""
    key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).digest()
    if key in _SEEN:
        _SEEN.move_to_end(key)
        return _SEEN[key]
    try:
        text = black.format_str(source, mode=MODE)
    except black.InvalidInput as exc:
        raise RuntimeError(f"{name}: rendered code is not valid Python ({exc})") from None
    _SEEN[key] = text
    if len(_SEEN) > _SEEN_MAX:
        _SEEN.popitem(last=False)
    return text
