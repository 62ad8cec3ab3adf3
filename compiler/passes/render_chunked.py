"""Rendering decisions for chunked local attention, the weightless L2 QK-norm and attention
temperature tuning (Llama 4), kept apart from render.py.

Chunked layers reuse the sliding-window ring cache with `attention_chunk_size` slots: the keys a
query of a chunk can see are always among the last `chunk` positions.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture, TemperatureTuning
from .literals import field, literal


def _attentions(arch: Architecture) -> list:
    return [layer.mixer for layer in arch.layers if getattr(layer.mixer, "kind", None) == "attention"]


def chunk_size(arch: Architecture) -> int | None:
    return next((a.chunk_size for a in _attentions(arch) if a.span == "chunked"), None)


def temperature(arch: Architecture) -> TemperatureTuning | None:
    return next((a.temperature for a in _attentions(arch) if a.temperature), None)


def chunked_config_fields(arch: Architecture) -> list[dict[str, Any]]:
    """Config fields for the chunk size and the temperature tuning (none when the model has neither)."""
    fields = []
    chunk, tuning = chunk_size(arch), temperature(arch)
    if chunk is not None:
        fields.append(field("attention_chunk_size", "int", chunk, "positions per chunk of chunked attention"))
    if tuning is not None:
        fields.append(field("floor_scale", "int", tuning.floor_scale, "temperature tuning: positions per step"))
        fields.append(field("attn_scale", "float", tuning.attn_scale, "temperature tuning: strength"))
    return fields


def chunked_context(arch: Architecture) -> dict[str, Any]:
    """Structural switches for the templates."""
    return {
        "has_chunked": chunk_size(arch) is not None,
        "l2_qk_norm": any(a.qk_norm == "l2" for a in _attentions(arch)),
        "temperature": temperature(arch) is not None,
        "temperature_offset": temperature(arch) is not None and temperature(arch).position_offset == 1,
    }


def chunk_parity_context(tiny: Architecture) -> dict[str, Any]:
    """The generated parity test's extras: the replica's chunk size (sequences around it are
    tested) and, for routers whose transformers module returns (scores, logits) rather than the
    chosen experts (topk_sigmoid), the top_k used to recover the choices from the logits."""
    chunk = chunk_size(tiny)
    moe = next((layer.ffn for layer in tiny.layers if getattr(layer.ffn, "kind", None) == "moe"), None)
    from_logits = moe is not None and moe.router == "topk_sigmoid"
    return {
        "chunk": literal(chunk) if chunk is not None else "",
        "router_suffix_literal": literal("router" if from_logits else "topkrouter"),
        "top_k": literal(moe.top_k) if from_logits else "",
    }


def chunked_features(arch: Architecture) -> list[str]:
    """Sentences for chunked attention, the L2 QK-norm and temperature tuning (none when absent)."""
    out = []
    chunk, tuning = chunk_size(arch), temperature(arch)
    chunked = sum(a.span == "chunked" for a in _attentions(arch))
    if chunk is not None:
        out.append(f"Chunked local attention on {chunked} of {arch.num_layers} layers: positions form chunks of "
                   f"{chunk} and a query sees only the earlier keys of its own chunk (the KV cache keeps a ring of "
                   f"{chunk} slots for them).")
    if any(a.qk_norm == "l2" for a in _attentions(arch)):
        out.append("QK-norm on the RoPE layers: each query and key head divided by its root mean square, without "
                   "a weight, after RoPE.")
    if tuning is not None:
        tuned = [a for a in _attentions(arch) if a.temperature]
        where = "the NoPE layers" if all(a.rope is None for a in tuned) else "every layer" if len(tuned) == len(
            _attentions(arch)) else f"{len(tuned)} layers"
        position = "(position + 1)" if tuning.position_offset else "position"
        out.append(f"Attention temperature tuning on {where}: queries scaled by 1 + {tuning.attn_scale:g} x "
                   f"log(1 + floor({position} / {tuning.floor_scale})).")
    return out
