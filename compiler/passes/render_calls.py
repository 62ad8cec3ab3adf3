"""How a layer's parts are built and called, as named values for the templates: which tensors the
forwards take after (x, mask), and which feed-forward a DecoderLayer builds. macros.j2 writes them
(``params``, ``args``); the templates spell the code.

An input is {"name": its identifier, "optional": None may be passed}: a model with NoPE layers passes
cos = sin = None to them, a recurrent or feed-forward-only layer of a hybrid gets None for all.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture
from .literals import identifier, literal
from .mixers import attention_layers, first_attention
from .render_chunked import temperature
from .render_layer_extras import mlp_widths, sparsity
from .render_moe import mixed_ffn, moe_of
from .weight_map_moe import FFN_LETTERS


def _input(name: str, optional: bool) -> dict[str, Any]:
    return {"name": identifier(name), "optional": optional}


def attention_inputs(arch: Architecture, alibi: bool = True) -> list[dict[str, Any]]:
    """What an attention forward takes after (x, mask): cos and sin (optional when some layer has no
    RoPE), the per-position query scale of temperature tuning, the ALiBi bias (``alibi``: its slot)."""
    attns = attention_layers(arch)
    has_rope = any(lay.mixer.rope for lay in attns)
    nope = has_rope and any(lay.mixer.rope is None for lay in attns)
    inputs = [_input("cos", nope), _input("sin", nope)] if has_rope else []
    if temperature(arch) is not None:
        inputs.append(_input("q_scale", True))
    if alibi and getattr(first_attention(arch), "alibi", None) is not None:
        inputs.append(_input("alibi", False))
    return inputs


def layer_inputs(arch: Architecture, mixed: bool) -> list[dict[str, Any]]:
    """What a DecoderLayer of mixed kinds (``mixed``: hybrid, or one block per layer) takes after (x, mask):
    cos and sin, None on its layers without attention."""
    has_rope = any(lay.mixer.rope for lay in attention_layers(arch))
    return [_input("cos", True), _input("sin", True)] if mixed and has_rope else []


def ffn_build(arch: Architecture) -> dict[str, Any]:
    """The DecoderLayer's feed-forward: the class (MLP or MoE), whether Config.ffn_pattern picks one per
    layer (the experts' letter), and the per-layer Config fields an MLP takes beside the config."""
    fields = ["layer_intermediate_size"] * (mlp_widths(arch) is not None) + ["gate_sparsity_std"] * (
        sparsity(arch) is not None)
    return {"class_name": "MoE" if moe_of(arch) and not fields else "MLP",
            "expert_letter": literal(FFN_LETTERS["moe"]) if mixed_ffn(arch) and not fields else "",
            "layer_fields": fields}
