"""Pass 5, rendering: IR + weight map -> Python source text through jinja2 templates.

This module decides *what* to print (which components, which Config fields, finished
literal values); the templates decide *how* it looks. Every value reaches a template
already formatted as a Python literal (``repr``) or as a validated identifier.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ..schemas.arch import Architecture
from . import __version__
from .describe import features, layer_pattern
from .rope_fields import rope_config_fields, rope_context
from .weight_map import WeightEntry

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ACTIVATION_CODE = {"silu": ("F.silu", ""), "gelu": ("F.gelu", ""), "gelu_tanh": ("F.gelu", ', approximate="tanh"'),
                   "relu": ("F.relu", "")}
TITLES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma3_text": "Gemma 3 (text decoder)"}


@dataclass(frozen=True)
class Provenance:
    """Where the config came from; printed in headers only, never as code."""

    source: str
    revision: str
    command: str

    @property
    def label(self) -> str:
        return safe_comment(f"{self.source}@{self.revision}")


def safe_comment(text: str) -> str:
    """Text that is safe inside a comment or docstring: plain ids pass, anything else is repr'd."""
    if re.fullmatch(r"[A-Za-z0-9_./@:+=\- ]{1,200}", text):
        return text
    return repr(text)[:200].replace('"""', "'''")


def literal(value: Any) -> str:
    """A Python literal for a finished value (round-trips exactly)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite value {value}")
        return repr(value)
    if isinstance(value, (bool, int, str)) or value is None:
        return repr(value)
    raise TypeError(f"no literal for {type(value).__name__}")


def identifier(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise ValueError(f"not an identifier: {name!r}")
    return name


def _field(name: str, type_: str, value: Any, comment: str = "") -> dict[str, str]:
    return {"name": identifier(name), "type": type_, "literal": literal(value), "comment": comment, "value": value}


def config_values(arch: Architecture) -> list[dict[str, str]]:
    """The generated ``Config`` dataclass: one field per number the code reads."""
    layer = arch.layers[0]
    attn, ffn = layer.mixer, layer.ffn
    fields = [
        _field("vocab_size", "int", arch.embedding.vocab_size),
        _field("hidden_size", "int", arch.hidden_size),
        _field("intermediate_size", "int", ffn.intermediate_size),
        _field("num_hidden_layers", "int", arch.num_layers),
        _field("num_attention_heads", "int", attn.num_heads),
        _field("num_key_value_heads", "int", attn.num_kv_heads),
        _field("head_dim", "int", attn.head_dim),
        _field("norm_eps", "float", layer.norm.eps),
        _field("attention_scale", "float", attn.scale, "multiplies q.k"),
        _field("max_position_embeddings", "int", arch.max_position_embeddings, "trained context length"),
    ]
    kinds = layer_kinds(arch)
    if len(kinds) > 1:
        fields.append(_field("layer_pattern", "str", layer_pattern(arch), "S = sliding window, F = full attention"))
    windows = [lay.mixer.window for lay in arch.layers if lay.mixer.span == "sliding"]
    if windows:
        fields.append(_field("sliding_window", "int", windows[0], "keys visible to a query, itself included"))
    fields += rope_config_fields(arch, _field)
    if arch.embedding.scale is not None:
        fields.append(_field("embed_scale", "float", arch.embedding.scale, "sqrt(hidden_size)"))
    if attn.softcap is not None:
        fields.append(_field("attn_logit_softcap", "float", attn.softcap))
    if arch.head.softcap is not None:
        fields.append(_field("final_logit_softcap", "float", arch.head.softcap))
    return fields


def layer_kinds(arch: Architecture) -> list[dict[str, Any]]:
    """Distinct kinds of layer, in order of first appearance."""
    kinds: dict[str, dict[str, Any]] = {}
    for layer in arch.layers:
        letter = "S" if layer.mixer.span == "sliding" else "F"
        kinds.setdefault(letter, {"letter_literal": literal(letter), "sliding": letter == "S",
                                  "rope": identifier(layer.mixer.rope or "")})
    return list(kinds.values())


def model_context(arch: Architecture, weights: list[WeightEntry], prov: Provenance) -> dict[str, Any]:
    """Everything the model templates need. Keys other than config_fields/features/provenance
    are structural: two models with equal structure render the same code."""
    layer = arch.layers[0]
    attn, ffn, norm = layer.mixer, layer.ffn, layer.norm
    activation, activation_args = ACTIVATION_CODE[ffn.activation]
    grouped = attn.num_kv_heads < attn.num_heads
    return {
        "version": __version__,
        "source": prov.label,
        "command": safe_comment(prov.command),
        "title": TITLES.get(arch.model_type, arch.model_type),
        "features": features(arch),
        "config_fields": config_values(arch),
        "norm": {"offset": literal(norm.weight_offset) if norm.weight_offset else "",
                 "weight_in_compute_dtype": norm.weight_in_compute_dtype},
        **rope_context(arch, identifier),
        "has_sliding": any(lay.mixer.span == "sliding" for lay in arch.layers),
        "layer_kinds": layer_kinds(arch),
        "pattern_legend": "S = sliding-window attention, F = full attention",
        "attn": {
            "summary": ("Grouped-query" if grouped else "Multi-head") + " self-attention with RoPE, written out eagerly.",
            "q_bias": attn.q_bias, "k_bias": attn.k_bias, "v_bias": attn.v_bias, "o_bias": attn.o_bias,
            "qk_norm": attn.qk_norm == "per_head", "softcap": attn.softcap is not None, "grouped": grouped,
        },
        "mlp": {
            "summary": ("Gated feed-forward: down(act(gate(x)) * up(x))." if ffn.gated
                        else "Feed-forward: down(act(up(x)))."),
            "gated": ffn.gated, "bias": ffn.bias, "activation": activation, "activation_args": activation_args,
        },
        "block": {
            "sandwich": layer.block == "sandwich",
            "summary": ("Sandwich block: x + post_norm(f(pre_norm(x))) for attention, then for the MLP."
                        if layer.block == "sandwich" else "Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."),
        },
        "embed_scale": arch.embedding.scale is not None,
        "head": {"tied": arch.head.tied, "softcap": arch.head.softcap is not None},
        "weights": [{"checkpoint_literal": literal(e.checkpoint), "param_literal": literal(e.param)}
                    for e in weights],
        "ignored_literal": literal(arch.checkpoint_prefix + "lm_head.weight"),
        "prefix_literal": literal(arch.checkpoint_prefix) if arch.checkpoint_prefix else "",
    }


STRUCTURE_EXEMPT = ("features", "config_fields", "source", "command", "title")


def structure(context: dict[str, Any]) -> dict[str, Any]:
    """The part of a context that decides which code is printed."""
    return {k: v for k, v in context.items() if k not in STRUCTURE_EXEMPT}


def environment(user_templates: Path | None = None) -> jinja2.Environment:
    """Templates from ``user_templates`` shadow the built-ins by relative path."""
    loaders: list[jinja2.BaseLoader] = []
    if user_templates is not None:
        loaders.append(jinja2.FileSystemLoader(str(user_templates)))
    loaders.append(jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES)))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def render(template: str, context: dict[str, Any], user_templates: Path | None = None) -> str:
    """Render one top-level template (pass 5 of the pipeline)."""
    return environment(user_templates).get_template(template).render(**context)


def config_kwargs(arch: Architecture) -> dict[str, Any]:
    """The generated Config's field values for ``arch`` (used for tiny replicas)."""
    return {f["name"]: f["value"] for f in config_values(arch)}
