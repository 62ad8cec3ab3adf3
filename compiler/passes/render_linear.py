"""Rendering decisions for recurrent layers (every registered MixerKind: compiler/passes/mixers/) and hybrid
models: the kinds' Config fields and template contexts, the per-layer mixer choice in layer.py.j2 /
model.py.j2, the checkpoint keys per pattern letter.

Kept apart from render.py, which asks here for everything that depends on the recurrent kinds.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture
from .mixers import is_hybrid, recurrent_kinds
from .literals import identifier, literal


def linear_config_fields(arch: Architecture) -> list[dict[str, Any]]:
    """The Config fields the recurrent kinds' code reads (none without recurrent layers)."""
    return [f for kind, mixer in recurrent_kinds(arch) for f in kind.config_fields(mixer)]


def linear_context(arch: Architecture) -> dict[str, Any]:
    """mx: each recurrent kind's own template context, by kind; recurrent: what layer.py.j2, model.py.j2
    and file.py.j2 print for each such kind (its letter, attribute, class, templates: the block's in
    model.py, its cache's in runtime.py)."""
    kinds = recurrent_kinds(arch)
    names = arch.names
    return {
        "mx": {kind.kind: kind.context(mixer) for kind, mixer in kinds},
        "recurrent": [{"letter_literal": literal(kind.letter), "attr": identifier(getattr(names, kind.attr)),
                       "class_name": kind.class_name, "template": kind.template,
                       "cache_template": kind.cache_template, "words": kind.short_words}
                      for kind, _ in kinds],
        "recurrent_letters": "(" + ", ".join(literal(kind.letter) for kind, _ in kinds) + ("," if len(kinds) == 1 else "") + ")",
    }


def mixer_maps(arch: Architecture, weights: list) -> list[dict[str, Any]]:
    """Per letter of the layer pattern, the checkpoint keys of that kind of layer's mixer (hybrid models)."""
    from ..insight.describe import layer_pattern  # describe imports the mixer modules
    from .render_blocks import single_block
    from .weight_map_moe import FFN_LETTERS

    if not is_hybrid(arch) and not (single_block(arch) and len(set(layer_pattern(arch))) > 1):
        return []

    kinds: dict[str, tuple[str | None, str | None]] = {}  # letter -> (mixer kind, feed-forward letter)
    for layer, letter in zip(arch.layers, layer_pattern(arch)):
        kinds.setdefault(letter, (getattr(layer.mixer, "kind", None),
                                  FFN_LETTERS[layer.ffn.kind] if layer.mixer is None else None))  # a feed-forward-only layer
    return [{"letter_literal": literal(letter),
             "entries": [{"checkpoint_literal": literal(e.checkpoint), "param_literal": literal(e.param)}
                         for e in weights if (e.mixer_kind and e.mixer_kind == kind) or (e.ffn_kind and e.ffn_kind == ffn)]}
            for letter, (kind, ffn) in kinds.items()]


def mixed_kinds(arch: Architecture) -> bool:
    """Whether the layers mix kinds (recurrent mixers beside attention, or blocks of different kinds): the
    layer forward then takes an optional mask and cos/sin (None on layers without attention)."""
    from ..insight.describe import layer_pattern
    from .render_blocks import single_block

    return is_hybrid(arch) or (single_block(arch) and len(set(layer_pattern(arch))) > 1)


def parity_scales(tiny: Architecture, norm_spread: float) -> dict[str, tuple[float, float]]:
    """Parameter-name suffix -> (mean, std) for the parity test's randomisation of a replica with recurrent
    layers (trained-scale decay logs, biases, convolution taps; their norms' neutral weights); empty otherwise."""
    scales: dict[str, tuple[float, float]] = {}
    for kind, mixer in recurrent_kinds(tiny):
        scales.update(kind.parity_scales(mixer, getattr(tiny.names, kind.attr), norm_spread))
    return scales


def nested_context(arch: Architecture) -> dict[str, Any]:
    """weights.py.j2's renaming of a published multimodal checkpoint (Qwen3.5: model.language_model.*)."""
    nested = arch.nested_decoder
    if nested is None:
        return {"nested": False}
    skipped = nested.skipped
    return {"nested": True, "nested_literal": literal(nested.prefix),
            "skipped_literal": "(" + ", ".join(literal(p) for p in skipped) + ("," if len(skipped) == 1 else "") + ")"}
