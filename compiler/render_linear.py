"""Rendering decisions for linear-attention (Gated DeltaNet) layers and hybrid models
(templates/model/gated_deltanet.py.j2, the per-layer mixer choice in layer.py.j2 / model.py.j2).

Kept apart from render.py: the Gated DeltaNet Config fields and the template context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..schemas.arch import Architecture
from .mixers import LINEAR_LETTER, is_hybrid, linear_of


def linear_config_fields(arch: Architecture, field: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """The Config fields the Gated DeltaNet code reads (none without linear layers)."""
    gdn = linear_of(arch)
    if gdn is None:
        return []
    return [
        field("linear_num_key_heads", "int", gdn.num_k_heads, "Gated DeltaNet query/key heads"),
        field("linear_num_value_heads", "int", gdn.num_v_heads, "Gated DeltaNet value heads"),
        field("linear_key_head_dim", "int", gdn.k_head_dim),
        field("linear_value_head_dim", "int", gdn.v_head_dim),
        field("linear_conv_kernel_dim", "int", gdn.conv_kernel, "taps of the causal convolution"),
        field("linear_chunk_size", "int", gdn.chunk_size, "positions per chunk of the chunked delta rule"),
    ]


def linear_context(arch: Architecture, identifier: Callable[[str], str]) -> dict[str, Any] | None:
    """What gated_deltanet.py.j2 prints; None without linear layers. Structural: sizes live in Config."""
    gdn = linear_of(arch)
    if gdn is None:
        return None
    return {
        "grouped": gdn.projection == "grouped_qkvz",
        "gn": {key: identifier(value) for key, value in gdn.names.model_dump().items()},
        "letter_literal": repr(LINEAR_LETTER),
    }


def mixer_maps(arch: Architecture, weights: list, literal: Callable[[Any], str]) -> list[dict[str, Any]]:
    """Per letter of the layer pattern, the checkpoint keys of that kind of layer's mixer (hybrid models)."""
    from .describe import layer_pattern  # describe imports the mixer modules
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


def hybrid_context(arch: Architecture, has_rope: bool) -> dict[str, Any]:
    """Switches for a model whose layers mix mixer kinds: the layer forward takes an optional mask and
    cos/sin (None on linear-attention layers)."""
    from .describe import layer_pattern
    from .render_blocks import single_block

    hybrid = is_hybrid(arch) or (single_block(arch) and len(set(layer_pattern(arch))) > 1)
    return {"hybrid": hybrid,
            "layer_rope_params": ", cos: torch.Tensor | None, sin: torch.Tensor | None" if hybrid and has_rope else ""}


# Replica parameters drawn at the scale of trained ones rather than N(0, 0.05): the decay rate's log
# (transformers draws A in [0.01, 16]), the decay bias, the short convolution's taps.
LINEAR_SCALES = {"a_log": (0.5, 1.0), "dt_bias": (0.0, 1.0), "conv": (0.0, 0.3)}


def parity_scales(tiny: Architecture, norm_spread: float) -> dict[str, tuple[float, float]]:
    """Parameter-name suffix -> (mean, std) for the parity test's randomisation of a replica with linear
    layers (norms whose neutral weight is not the layers' included); empty otherwise."""
    gdn = linear_of(tiny)
    if gdn is None:
        return {}
    gn, block = gdn.names, tiny.names.linear_attn
    return {
        f"{block}.{gn.a_log}": LINEAR_SCALES["a_log"],
        f"{block}.{gn.dt_bias}": LINEAR_SCALES["dt_bias"],
        f"{block}.{gn.conv}.weight": LINEAR_SCALES["conv"],
        f"{block}.{gn.norm}.weight": (1.0 - gdn.norm.weight_offset, norm_spread),
    }


def nested_context(arch: Architecture, literal: Callable[[Any], str]) -> dict[str, Any]:
    """weights.py.j2's renaming of a published multimodal checkpoint (Qwen3.5: model.language_model.*)."""
    nested = arch.nested_decoder
    if nested is None:
        return {"nested": False}
    skipped = nested.skipped
    return {"nested": True, "nested_literal": literal(nested.prefix),
            "skipped_literal": "(" + ", ".join(literal(p) for p in skipped) + ("," if len(skipped) == 1 else "") + ")"}
