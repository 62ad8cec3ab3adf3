"""Rendering decisions for models whose layers hold one block each (Nemotron-H: a layer is a Mamba-2 block,
an attention block, an MLP or experts; Mamba-2: every layer a Mamba-2 block) or no softmax attention at all.

A layer of one block computes x + block(norm(x)) with its input norm. The DecoderLayer builds the block its
pattern letter names (Config.layer_pattern) and calls it with what that block reads: attention the mask
(and cos/sin), a state-space block and a feed-forward only x.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture, Layer
from .mixers import SOFTMAX_KINDS, class_name, letter_of, module_name
from .literals import literal

FFN_ONLY_LETTERS = {"moe": "E", "mlp": "D"}  # the pattern letter of a layer that is only a feed-forward block
WORDS = {"E": "E = experts only (no mixer)", "D": "D = MLP only (no mixer)"}


def single_block(arch: Architecture) -> bool:
    """Layers of one block each (a mixer or a feed-forward, not both)."""
    return any(layer.mixer is None or layer.ffn is None for layer in arch.layers)


def no_attention(arch: Architecture) -> bool:
    """No layer has softmax attention: no masks, positions or KV cache."""
    return not any(layer.mixer is not None and layer.mixer.kind in SOFTMAX_KINDS for layer in arch.layers)


def layer_letter(layer: Layer) -> str | None:
    """The letter of a layer without softmax attention (None for an attention layer: describe spells those)."""
    if layer.mixer is None:
        return FFN_ONLY_LETTERS[layer.ffn.kind]
    return letter_of(layer)


def kind_blocks(arch: Architecture, pattern: str) -> list[dict[str, Any]]:
    """Per letter of the pattern (order of first appearance): the block a layer of that kind builds
    (``class_name``, built from the config) and keeps as ``attr``; ``softmax``: it is called with the mask
    and the attention inputs (render_calls), else with h alone."""
    from .render import letter_words  # render imports this module

    legend = letter_words()
    n, out, seen = arch.names, [], set()
    for layer, letter in zip(arch.layers, pattern):
        if letter in seen:
            continue
        seen.add(letter)
        if layer.mixer is None:
            attr, class_ = n.mlp, "MoE" if layer.ffn.kind == "moe" else "MLP"
            softmax = cache = recurrent = False
        else:
            attr, class_ = module_name(layer.mixer.kind, n), class_name(layer.mixer.kind)
            softmax = layer.mixer.kind in SOFTMAX_KINDS
            cache, recurrent = True, not softmax
        out.append({"letter_literal": literal(letter), "attr": attr, "class_name": class_, "softmax": softmax,
                    "cache": cache, "recurrent": recurrent, "words": legend.get(letter, letter)})
    return out


def grouped(blocks: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Blocks sharing the values of ``keys`` (the same call, the same attribute), with the letters of each
    group (macros.j2's kind_test writes '== "N"' or 'in ("M", "E")')."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for block in blocks:
        groups.setdefault(tuple(block[key] for key in keys), []).append(block)
    return [{**dict(zip(keys, values)), "letters": [m["letter_literal"] for m in members]}
            for values, members in groups.items()]


def blocks_context(arch: Architecture, pattern: str) -> dict[str, Any]:
    """layer.py.j2's per-letter blocks: each kind's block, and the calls and caches they share."""
    blocks = kind_blocks(arch, pattern)
    return {"kind_blocks": blocks, "kind_calls": grouped(blocks, ("attr", "softmax")),
            "cache_attrs": grouped([b for b in blocks if b["cache"]], ("attr",))}
