"""Rendering decisions for models whose layers hold one block each (Nemotron-H: a layer is a Mamba-2 block,
an attention block, an MLP or experts; Mamba-2: every layer a Mamba-2 block) or no softmax attention at all.

A layer of one block computes x + block(norm(x)) with its input norm. The DecoderLayer builds the block its
pattern letter names (Config.layer_pattern) and calls it with what that block reads: attention the mask
(and cos/sin), a state-space block and a feed-forward only x.
"""

from __future__ import annotations

from collections.abc import Callable
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


def kind_blocks(arch: Architecture, pattern: str, ffn_init: Callable[[Layer], str], rope_args: str) -> list[dict[str, Any]]:
    """Per letter of the pattern (order of first appearance): the block a layer of that kind builds and calls."""
    from .render import letter_words  # render imports this module

    legend = letter_words()
    n, out, seen = arch.names, [], set()
    for layer, letter in zip(arch.layers, pattern):
        if letter in seen:
            continue
        seen.add(letter)
        if layer.mixer is None:
            attr, ctor, call = n.mlp, ffn_init(layer), f"self.{n.mlp}(h)"
            cache, recurrent = False, False
        else:
            attr = module_name(layer.mixer.kind, n)
            ctor = f"{class_name(layer.mixer.kind)}(config)"
            softmax = layer.mixer.kind in SOFTMAX_KINDS
            call = f"self.{attr}(h, mask{rope_args})" if softmax else f"self.{attr}(h)"
            cache, recurrent = True, not softmax
        out.append({"letter_literal": literal(letter), "attr": attr, "ctor": ctor, "call": call, "cache": cache,
                    "recurrent": recurrent, "words": legend.get(letter, letter)})
    return out


def grouped(blocks: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Blocks sharing ``key`` (the same call, the same attribute) under one test: '== "N"' or 'in ("M", "E")'."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for block in blocks:
        groups.setdefault(block[key], []).append(block)
    out = []
    for value, members in groups.items():
        letters = [m["letter_literal"] for m in members]
        test = f"== {letters[0]}" if len(letters) == 1 else f"in ({', '.join(letters)})"
        out.append({key: value, "test": test})
    return out


def blocks_context(arch: Architecture, pattern: str, rope_args: str) -> dict[str, Any]:
    """layer.py.j2's per-letter blocks: each kind's block, and the calls and caches they share."""
    blocks = kind_blocks(arch, pattern, lambda lay: "MoE(config)" if lay.ffn.kind == "moe" else "MLP(config)",
                         rope_args)
    return {"kind_blocks": blocks, "kind_calls": grouped(blocks, "call"),
            "cache_attrs": grouped([b for b in blocks if b["cache"]], "attr")}
