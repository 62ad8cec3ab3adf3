"""Rendering decisions for layers with a parallel mixer (Layer.parallel_mixer: Falcon-H1's Mamba-2 beside its
attention, both reading the layer's normed input) and for the multipliers such models put on their branches and
MLPs: the Config fields, the context of layer.py.j2 / model.py.j2 / mlp.py.j2, and describe's sentences.

A model without a parallel mixer and without MLP multipliers gets no field, no code and no sentence from here.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture, Layer, Mlp
from .mixers import KINDS, module_name
from .literals import field, identifier


def parallel_layer(arch: Architecture) -> Layer | None:
    """The first layer with a parallel mixer (validation makes every layer alike)."""
    return next((layer for layer in arch.layers if layer.parallel_mixer is not None), None)


def _mlp(arch: Architecture) -> Mlp | None:
    return next((layer.ffn for layer in arch.layers if isinstance(layer.ffn, Mlp)), None)


def parallel_config_fields(arch: Architecture) -> list[dict[str, Any]]:
    """The branch multipliers of a parallel layer and the MLP's multipliers, where the model has them."""
    fields = []
    layer = parallel_layer(arch)
    if layer is not None:
        m, words = layer.mixer_multipliers, KINDS[layer.parallel_mixer.kind].title
        fields += [field("attention_in_multiplier", "float", m.mixer_in, "multiplies the attention's input"),
                   field("attention_out_multiplier", "float", m.mixer_out, "multiplies the attention's output"),
                   field("parallel_in_multiplier", "float", m.parallel_in, f"multiplies the {words} block's input"),
                   field("parallel_out_multiplier", "float", m.parallel_out, f"multiplies the {words} block's output")]
    mlp = _mlp(arch)
    if mlp is not None and mlp.gate_multiplier is not None:
        fields.append(field("mlp_gate_multiplier", "float", mlp.gate_multiplier, "multiplies gate_proj's output"))
    if mlp is not None and mlp.down_multiplier is not None:
        fields.append(field("mlp_down_multiplier", "float", mlp.down_multiplier, "multiplies the MLP's output"))
    return fields


def parallel_context(arch: Architecture) -> dict[str, Any]:
    """par: the parallel mixer's attribute, class and words (None without one); mlp_multipliers: the MLP's."""
    layer, mlp = parallel_layer(arch), _mlp(arch)
    par = None
    if layer is not None:
        kind = KINDS[layer.parallel_mixer.kind]
        par = {"attr": identifier(module_name(kind.kind, arch.names)), "class_name": kind.class_name,
               "words": kind.short_words}
    return {"par": par,
            "mlp_multipliers": {"gate": mlp.gate_multiplier is not None, "down": mlp.down_multiplier is not None}
            if mlp is not None and (mlp.gate_multiplier is not None or mlp.down_multiplier is not None) else None}


def parallel_features(arch: Architecture) -> list[str]:
    """describe's sentences about parallel mixers and MLP multipliers (none for other models)."""
    out = []
    layer, mlp = parallel_layer(arch), _mlp(arch)
    if layer is not None:
        kind, m = KINDS[layer.parallel_mixer.kind], layer.mixer_multipliers
        count = sum(lay.parallel_mixer is not None for lay in arch.layers)
        out.append(f"Parallel mixers: on {count} of {arch.num_layers} layers softmax attention and {kind.words} read "
                   f"the same normed input h and their outputs are summed, x + attention(h * {m.mixer_in:g}) * "
                   f"{m.mixer_out:g} + {kind.title}(h * {m.parallel_in:g}) * {m.parallel_out:g}; each layer keeps a KV "
                   f"cache and a state of constant size.")
    if mlp is not None and (mlp.gate_multiplier is not None or mlp.down_multiplier is not None):
        out.append(f"MLP multipliers: gate_proj's output times {mlp.gate_multiplier or 1.0:g} before the activation, "
                   f"the MLP's output times {mlp.down_multiplier or 1.0:g}.")
    return out
