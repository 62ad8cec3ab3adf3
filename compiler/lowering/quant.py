"""The ``quantization_config`` object of a config: which method, which keys (shared by the families
whose checkpoints may be quantized: DeepSeek's float8, gpt-oss's MXFP4)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, UnsupportedError
from .reader import ConfigReader


def read_quantization(r: ConfigReader, method: str, keys: frozenset[str]) -> tuple[dict[str, Any], str] | None:
    """(the object, where to say it is in messages), or None without one; a quant_method other than
    ``method`` and a key outside ``keys`` are one-line errors."""
    q = r.any("quantization_config", None)
    if q is None:
        return None
    where = f"{r.where}: key 'quantization_config'"
    if not isinstance(q, dict):
        raise ConfigError(f"{where} must be an object")
    if q.get("quant_method") != method:
        raise UnsupportedError(f"{where}: quant_method {q.get('quant_method')!r:.40} is not supported (only {method!r})")
    unknown = sorted(set(q) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'")
    return q, where
