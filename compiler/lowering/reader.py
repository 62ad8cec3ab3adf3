"""Typed, key-tracking access to a raw Hugging Face config dict.

Every key a family lowering reads is recorded; ``finish`` then rejects any key that was
neither read nor on an explicit allowlist, naming it. Silently ignoring a key can mean
silently wrong logits, so unknown keys are errors.
"""

from __future__ import annotations

import math
from typing import Any

from ...schemas.arch import MAX_CONTEXT, MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH
from ..errors import ConfigError, UnsupportedError

# Keys that never change the computed logits: metadata, tokenizer ids, runtime switches.
IRRELEVANT_KEYS = frozenset(
    {
        "_name_or_path",
        "_model_name_or_path",  # written by transformers when the config came from a GGUF file
        "unk_token_id",  # tokenizer id, like bos/eos/pad
        "architectures",
        "auto_map",
        "bos_token_id",
        "cache_implementation",
        "dtype",
        "eos_token_id",
        "initializer_range",
        "model_type",
        "output_attentions",
        "output_hidden_states",
        "pad_token_id",
        "return_dict",
        "torch_dtype",
        "transformers.js_config",
        "transformers_version",
        "use_cache",
        "attention_dropout",  # training-time dropout only; inference logits do not depend on it
        "is_llama_config",  # nanotron export marker
        "unsloth_fixed",
        "tokenizer_class",
    }
)

# Largest accepted value of size keys (the IR's bounds): a huge layer count would otherwise
# build millions of layers before the IR could refuse it.
KEY_MAXIMUM = {
    "num_hidden_layers": MAX_LAYERS,
    "num_attention_heads": MAX_HEADS,
    "num_key_value_heads": MAX_HEADS,
    "hidden_size": MAX_WIDTH,
    "intermediate_size": MAX_WIDTH,
    "head_dim": MAX_WIDTH,
    "vocab_size": MAX_VOCAB,
    "max_position_embeddings": MAX_CONTEXT,
    "sliding_window": MAX_CONTEXT,
}

_MISSING = object()


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class ConfigReader:
    """Reads keys of one config object (``where`` names it in messages)."""

    def __init__(self, raw: dict[str, Any], where: str = "config") -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {_type_name(raw)}")
        self.raw = raw
        self.where = where
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.raw

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key in self.raw:
            return self.raw[key]
        if default is _MISSING:
            raise ConfigError(f"{self.where}: missing required key '{key}'")
        return default

    def _bad(self, key: str, want: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.where}: key '{key}' must be {want}, got {_type_name(value)} {value!r:.60}")

    def int(self, key: str, default: Any = _MISSING, *, minimum: int = 1, nullable: bool = False) -> Any:
        value = self._get(key, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer", value)
        if value < minimum:
            raise ConfigError(f"{self.where}: key '{key}' must be >= {minimum}, got {value}")
        if value > KEY_MAXIMUM.get(key, 2**40):
            raise ConfigError(
                f"{self.where}: key '{key}' is implausibly large ({value} > {KEY_MAXIMUM.get(key, 2**40)})"
            )
        return value

    def float(self, key: str, default: Any = _MISSING, *, positive: bool = True, nullable: bool = False) -> Any:
        value = self._get(key, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, "a number", value)
        value = float(value)
        if not math.isfinite(value) or (positive and value <= 0):
            raise ConfigError(f"{self.where}: key '{key}' must be a finite positive number, got {value}")
        return value

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def str(self, key: str, default: Any = _MISSING, *, choices: dict[str, str] | None = None) -> Any:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self._bad(key, "a string", value)
        if choices is not None:
            if value not in choices:
                known = ", ".join(sorted(choices))
                raise UnsupportedError(f"{self.where}: key '{key}' = {value!r:.60} is not supported (known: {known})")
            return choices[value]
        return value

    def any(self, key: str, default: Any = None) -> Any:
        return self._get(key, default)

    def require_value(self, key: str, allowed: tuple[Any, ...], default: Any) -> None:
        """Accept a key only at values that change nothing we do not implement."""
        value = self._get(key, default)
        if value not in allowed:
            raise UnsupportedError(
                f"{self.where}: key '{key}' = {value!r:.60} is not supported (only {', '.join(map(repr, allowed))})"
            )

    def finish(self, extra_allowed: frozenset[str] = frozenset()) -> None:
        """Reject keys nobody read and nobody declared irrelevant."""
        unknown = sorted(set(self.raw) - self.used - IRRELEVANT_KEYS - extra_allowed)
        if unknown:
            model_type = self.raw.get("model_type", "?")
            raise ConfigError(
                f"{self.where}: unknown key {unknown[0]!r:.80} for model_type {model_type!r:.40}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + "; llmgen does not know how it changes the model"
            )
