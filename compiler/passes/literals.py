"""How values become code text: literals that round-trip, checked identifiers, comments that cannot
break out, and Config fields (a float written as the expression it was derived from, when one
evaluates to exactly its value)."""

from __future__ import annotations

import math
import re
from typing import Any

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# activation -> (the function a template calls, its `approximate` argument or None)
ACTIVATION_FUNCTIONS = {"silu": ("F.silu", None), "gelu": ("F.gelu", None), "gelu_tanh": ("F.gelu", "tanh"),
                        "gelu_new": ("gelu_new", None), "relu": ("F.relu", None), "relu2": ("relu2", None),
                        "xielu": ("self.act_fn", None), "gelu_fast_tanh": ("gelu_fast_tanh", None)}


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


def field(name: str, type_: str, value: Any, comment: str = "") -> dict[str, str]:
    return {"name": identifier(name), "type": type_, "literal": literal(value), "comment": comment, "value": value}


def derived_field(name: str, value: float, derivations: list[tuple[str, str]], comment: str) -> dict[str, str]:
    """A float field written as the expression it comes from (`256 ** -0.5`, `math.sqrt(1152)`) when
    one of ``derivations`` (expression, what it is) evaluates to exactly the value; else the literal."""
    for expression, words in derivations:
        if eval(expression, {"__builtins__": {}, "math": math}) == value:  # noqa: S307 - our own arithmetic
            return {**field(name, "float", value, f"{comment}: {words}"), "literal": expression}
    return field(name, "float", value, comment)


def scale_derivations(attn: Any) -> list[tuple[str, str]]:
    """How an attention scale may have been computed: 1 / sqrt of the width of q.k (a head's width, or in
    latent attention its nope + rope channels). Any other scale is a literal of its own."""
    if getattr(attn, "qk_nope_head_dim", None) is not None:
        width = attn.qk_nope_head_dim + attn.qk_rope_head_dim
        return [(f"{width} ** -0.5", "1 / sqrt(nope + rope channels)")]
    width = getattr(attn, "head_dim", None)
    return [(f"{width} ** -0.5", "1 / sqrt(head_dim)")] if width else []


def activation(name: str) -> dict[str, str]:
    """An activation for the templates: the function (``activation``) and the literal of its
    ``approximate`` argument ('' when it takes none); macros.j2's ``approximate`` writes the argument."""
    function, approximate = ACTIVATION_FUNCTIONS[name]
    return {"activation": function, "approximate": literal(approximate) if approximate else ""}
