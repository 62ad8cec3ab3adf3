"""What the templates need to print RoPE: Config fields and per-table context.

Kept apart from render.py so every RoPE variant (types, partial rotary, layouts) lives in
one place: this module, ``templates/model/rope.py.j2`` and ``templates/model/rope_call.j2``.

Config fields of a table (prefix ``rope_`` for the global table, ``local_rope_`` ...):

=========  ==============================================================================
all        theta; rotary_dim when only part of each head rotates
linear     factor
dynamic    factor (scales relative to the Config's max_position_embeddings)
llama3     factor, low_freq_factor, high_freq_factor, original_context
yarn       factor, original_context, beta_fast, beta_slow, truncate, attention_factor
longrope   short_factor, long_factor, original_context, attention_factor
=========  ==============================================================================
"""

from __future__ import annotations

import math
from typing import Any

from ...schemas.arch import Architecture, Rope
from ..basics.errors import UnsupportedError
from .literals import field, identifier

RENDERED_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope", "proportional")
# Types whose cos and sin are multiplied by an attention factor.
SCALED_TYPES = ("yarn", "longrope")
# Types whose inverse frequencies depend on the sequence length.
LENGTH_TYPES = ("dynamic", "longrope")


def rope_prefix(table_name: str) -> str:
    """Config field prefix of a table: ``rope_`` for the global table, ``local_rope_`` etc."""
    return "rope_" if table_name == "global" else f"{table_name}_rope_"


def _yarn_mscale(scale: float, mscale: float = 1) -> float:
    """YaRN's attention-temperature rule (transformers' get_mscale)."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def attention_scaling(table: Rope, max_position_embeddings: int | None) -> float | None:
    """What cos and sin are multiplied by: the config's attention_factor, else transformers'
    default for the type (1.0 for types without one). None only for a longrope table without
    ``factor`` when ``max_position_embeddings`` is not given."""
    if table.type not in SCALED_TYPES:
        return 1.0
    if table.attention_factor is not None:
        return table.attention_factor
    original = table.original_max_position_embeddings
    if table.type == "yarn":
        factor, mscale, mscale_all_dim = table.factor, table.mscale, table.mscale_all_dim
        if mscale and mscale_all_dim:
            return float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
        return _yarn_mscale(factor)
    factor = table.factor  # longrope: the ratio of context lengths unless given
    if factor is None:
        if max_position_embeddings is None:
            return None
        factor = max_position_embeddings / original
    if factor <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(factor) / math.log(original))


def _partial(table: Rope, head_dim: int) -> bool:
    return table.rotary_dim != head_dim


def _own_dim(arch: Architecture, table: Rope) -> bool:
    """The table's layers have a head width other than the first attention layer's (Gemma 4's full layers)."""
    first = next((layer.mixer for layer in arch.layers if getattr(layer.mixer, "rope", None) is not None), None)
    return not _partial(table, _head_dim(arch, table)) and first is not None and getattr(first, "head_dim", None) not in (
        None, table.rotary_dim)


def _head_dim(arch: Architecture, table: Rope) -> int:
    dims = {layer.mixer.head_dim for layer in arch.layers if getattr(layer.mixer, "rope", None) == table.name}
    return dims.pop() if len(dims) == 1 else table.rotary_dim


def _tuple_field(name: str, values: tuple[float, ...], comment: str):
    """A ``tuple[float, ...]`` Config field (``field`` makes scalar literals only)."""
    for value in values:
        if not math.isfinite(value):
            raise ValueError(f"non-finite value {value}")
    made = field(name, "tuple[float, ...]", values[0], comment)
    items = [repr(float(v)) for v in values]
    if len(items) == 1:
        made.update(literal=f"({items[0]},)", value=tuple(values))
        return made
    rows = [", ".join(items[i:i + PER_ROW]) + "," for i in range(0, len(items), PER_ROW)]
    made.update(literal="(\n        " + "\n        ".join(rows) + "\n    )", value=tuple(values),
                keep_layout=True)  # several numbers a row, not black's one a line
    return made


PER_ROW = 5


def rope_config_fields(arch: Architecture) -> list[dict[str, Any]]:
    """Config fields of every RoPE table; ``field(name, type, value, comment="")`` makes one."""
    fields = []
    for table in arch.rope:
        p = rope_prefix(table.name)
        kind = table.type
        fields.append(field(f"{p}theta", "float", table.theta))
        if _partial(table, _head_dim(arch, table)):
            fields.append(field(f"{p}rotary_dim", "int", table.rotary_dim, "channels rotated per head"))
        elif _own_dim(arch, table):
            fields.append(field(f"{p}rotary_dim", "int", table.rotary_dim, "the head width of its layers"))
        if kind == "proportional":
            fields.append(field(f"{p}rotated_frequencies", "int", int(table.partial_rotary_factor * table.rotary_dim // 2),
                                "frequencies that turn; the rest are 0"))
        if kind in ("linear", "dynamic", "llama3", "yarn"):
            fields.append(field(f"{p}factor", "float", table.factor))
        if kind == "llama3":
            fields.append(field(f"{p}low_freq_factor", "float", table.low_freq_factor))
            fields.append(field(f"{p}high_freq_factor", "float", table.high_freq_factor))
        if kind == "longrope":
            fields.append(_tuple_field(f"{p}short_factor", table.short_factor,
                                       "divides the frequencies up to the original context"))
            fields.append(_tuple_field(f"{p}long_factor", table.long_factor,
                                       "divides the frequencies beyond it"))
        if kind in ("llama3", "yarn", "longrope"):
            fields.append(field(f"{p}original_context", "int", table.original_max_position_embeddings))
        if kind == "yarn":
            fields.append(field(f"{p}beta_fast", "float", table.beta_fast))
            fields.append(field(f"{p}beta_slow", "float", table.beta_slow))
            fields.append(field(f"{p}truncate", "bool", table.truncate))
        if kind in SCALED_TYPES:
            fields.append(field(f"{p}attention_factor", "float",
                                attention_scaling(table, arch.max_position_embeddings), "multiplies cos and sin"))
    return fields


def rope_context(arch: Architecture) -> dict[str, Any]:
    """Template context for rope.py.j2 / rope_call.j2 (structural: decides which code is printed)."""
    layouts = {t.layout for t in arch.rope}
    if len(layouts) > 1:
        raise UnsupportedError("RoPE tables with different channel layouts in one model are not supported")
    tables = []
    for t in arch.rope:
        partial = _partial(t, _head_dim(arch, t))
        tables.append({
            "name": identifier(t.name), "prefix": rope_prefix(identifier(t.name)), "type": t.type,
            "partial": partial, "scaled": t.type in SCALED_TYPES, "own_dim": _own_dim(arch, t),
        })
    return {
        "rope_types": {kind: any(t.type == kind for t in arch.rope) for kind in RENDERED_TYPES},
        "rope_tables": tables,
        "rope_scaled": any(t["scaled"] for t in tables),
        "rope_partial": any(t["partial"] for t in tables),
        "rope_interleaved": layouts == {"interleaved"},
        "rope_reversed": layouts == {"rotate_half_reversed"},
    }


def rope_unsupported(table: Rope) -> str | None:
    """Why ``table`` cannot be rendered yet, or None (called by the validate pass)."""
    if table.type not in RENDERED_TYPES:
        return f"RoPE type {table.type!r} is not implemented yet ({', '.join(RENDERED_TYPES)})"
    return None
