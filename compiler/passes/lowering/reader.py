"""Typed, key-tracking access to a raw Hugging Face config dict.

Every key a family lowering reads is recorded; ``finish`` then rejects any key that was
neither read nor on an explicit allowlist, naming it. Silently ignoring a key can mean
silently wrong logits, so unknown keys are errors.
"""

from __future__ import annotations

import math
import re
from contextvars import ContextVar
from typing import Any

from ....schemas.arch import MAX_CONTEXT, MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH
from ...basics.errors import ConfigError, UnsupportedError
from .keys_data import generic_keys, ignored_by_transformers

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

# PreTrainedConfig's own attributes (keys_data.generic_keys: every config class inherits them) that a
# decoder's logits depend on only away from these values; the others never change them (labels,
# task metadata, runtime and generation switches, tokenizer ids, framework flags).
GENERIC_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "is_encoder_decoder": (False,),
    "add_cross_attention": (False,),
    "tie_encoder_decoder": (False,),
    "cross_attention_hidden_size": (None,),
    "pruned_heads": (None, {}),
    "chunk_size_feed_forward": (0,),
    "per_layer_config": (None, {}),
}
# Generic keys a family lowering reads itself when it needs them (never accepted unread).
GENERIC_READ_BY_FAMILIES = frozenset({"tie_word_embeddings", "rope_scaling", "rope_theta"})

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,79}")
# One compilation's findings: the keys transformers never reads (noted, or refused when strict).
NOTES: ContextVar[list[str] | None] = ContextVar("llmgen_ignored_keys", default=None)
STRICT: ContextVar[bool] = ContextVar("llmgen_strict", default=False)

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
        """Reject keys nobody read and nobody declared irrelevant. In a model's config object, the generic
        PreTrainedConfig attributes pass at values that change nothing, and keys transformers itself
        never reads are noted (refused under --strict)."""
        unknown = sorted(set(self.raw) - self.used - IRRELEVANT_KEYS - extra_allowed)
        model_type = self.raw.get("model_type", "?")
        if unknown and isinstance(model_type, str) and model_type != "?":
            unknown = self._unread(unknown, model_type)
        if unknown:
            raise ConfigError(
                f"{self.where}: unknown key {unknown[0]!r:.80} for model_type {model_type!r:.40}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + "; llmgen does not know how it changes the model"
            )

    def _unread(self, unknown: list[str], model_type: str) -> list[str]:
        """The keys of ``unknown`` that stay errors, after the generic ones and those transformers ignores."""
        generic = generic_keys() - GENERIC_READ_BY_FAMILIES
        for key in unknown:
            neutral = GENERIC_NEUTRAL.get(key)
            if key in generic and neutral is not None and self.raw[key] not in neutral:
                raise UnsupportedError(
                    f"{self.where}: key '{key}' = {self.raw[key]!r:.60} changes the model; llmgen compiles"
                    f" decoder-only models without it (only {', '.join(map(repr, neutral))})"
                )
        rest = [key for key in unknown if key not in generic]
        # A key that is no identifier is a damaged file, not a key some exporter wrote: it stays an error.
        owner, ignored = ignored_by_transformers(model_type, {key for key in rest if IDENTIFIER.fullmatch(key)})
        if not ignored:
            return rest
        names = ", ".join(repr(key) for key in ignored)
        if STRICT.get():
            raise ConfigError(f"{self.where}: key {names:.200} is not read by transformers' {owner} either;"
                              " --strict refuses keys that change nothing")
        notes = NOTES.get()
        if notes is not None:
            notes.append(f"{self.where}: {'key' if len(ignored) == 1 else 'keys'} {names:.300} ignored:"
                         f" transformers' {owner} does not read {'it' if len(ignored) == 1 else 'them'} either")
        return [key for key in rest if key not in ignored]
