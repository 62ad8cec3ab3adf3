"""What the templates need to print RoPE: Config fields and per-table context.

Kept apart from render.py so every RoPE variant (types, partial rotary, layouts) lives in
one place: this module, ``templates/model/rope.py.j2`` and ``templates/model/rope_call.j2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..schemas.arch import Architecture, Rope

RENDERED_TYPES = ("default", "linear", "llama3")


def rope_prefix(table_name: str) -> str:
    """Config field prefix of a table: ``rope_`` for the global table, ``local_rope_`` etc."""
    return "rope_" if table_name == "global" else f"{table_name}_rope_"


def rope_config_fields(arch: Architecture, field: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """Config fields of every RoPE table; ``field(name, type, value, comment="")`` makes one."""
    fields = []
    for table in arch.rope:
        p = rope_prefix(table.name)
        fields.append(field(f"{p}theta", "float", table.theta))
        if table.type in ("linear", "llama3"):
            fields.append(field(f"{p}factor", "float", table.factor))
        if table.type == "llama3":
            fields.append(field(f"{p}low_freq_factor", "float", table.low_freq_factor))
            fields.append(field(f"{p}high_freq_factor", "float", table.high_freq_factor))
            fields.append(field(f"{p}original_context", "int", table.original_max_position_embeddings))
    return fields


def rope_context(arch: Architecture, identifier: Callable[[str], str]) -> dict[str, Any]:
    """Template context for rope.py.j2 / rope_call.j2 (structural: decides which code is printed)."""
    return {
        "rope_types": {kind: any(t.type == kind for t in arch.rope) for kind in RENDERED_TYPES},
        "rope_tables": [
            {"name": identifier(t.name), "prefix": rope_prefix(identifier(t.name)), "type": t.type} for t in arch.rope
        ],
    }


def rope_unsupported(table: Rope) -> str | None:
    """Why ``table`` cannot be rendered yet, or None (called by the validate pass)."""
    if table.type not in RENDERED_TYPES:
        return f"RoPE type {table.type!r} is not implemented yet ({', '.join(RENDERED_TYPES)})"
    if table.partial_rotary_factor != 1.0 or table.layout != "rotate_half":
        return "partial or interleaved RoPE is not implemented yet"
    return None
