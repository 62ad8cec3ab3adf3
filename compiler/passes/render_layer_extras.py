"""Rendering decisions for per-layer attention shapes and the per-layer additions of a block
(Gemma 4): attention layers whose head width and key/value head count depend on their kind, keys
reused as values, an unweighted value norm, layers reading an earlier layer's keys and values (KV
sharing), routed experts beside the dense MLP, per-layer embeddings (PLE), a stored layer scalar.

Kept apart from render.py; every switch here is an IR field, so a model without these features
gets exactly the code it had before (its context holds only false / empty values).
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture, Attention
from ..insight.describe import layer_pattern
from .literals import activation, field, identifier, literal

KIND_PREFIX = {"F": "full_", "S": "sliding_", "C": "chunked_", "N": "nope_"}


def _attentions(arch: Architecture) -> list[tuple[str, Attention]]:
    return [(letter, layer.mixer) for layer, letter in zip(arch.layers, layer_pattern(arch))
            if getattr(layer.mixer, "kind", None) == "attention"]


def kind_shapes(arch: Architecture) -> list[dict[str, Any]]:
    """Kinds of attention layer (pattern letters) whose head width or key/value head count differ from
    the first attention layer's: each reads its own Config fields."""
    attns = _attentions(arch)
    if not attns:
        return []
    first = attns[0][1]
    out: dict[str, dict[str, Any]] = {}
    for letter, mixer in attns:
        shape = (mixer.head_dim, mixer.num_kv_heads, mixer.num_heads)
        if shape != (first.head_dim, first.num_kv_heads, first.num_heads) and letter not in out:
            out[letter] = {"letter": letter, "prefix": KIND_PREFIX[letter], "head_dim": mixer.head_dim,
                           "num_kv_heads": mixer.num_kv_heads,
                           "num_heads": mixer.num_heads if mixer.num_heads != first.num_heads else None}
    return list(out.values())


def kv_sources(arch: Architecture) -> tuple[int, ...] | None:
    """Per layer, the layer whose keys and values it reads (-1: its own); None when no layer shares."""
    sources = tuple(-1 if getattr(layer.mixer, "kv_shared_from", None) is None else layer.mixer.kv_shared_from
                    for layer in arch.layers)
    return sources if any(s >= 0 for s in sources) else None


def mlp_widths(arch: Architecture) -> tuple[int, ...] | None:
    """Per layer, its dense MLP's width, when the layers' widths differ (Gemma 4's double-wide MLPs)."""
    widths = tuple(layer.ffn.intermediate_size for layer in arch.layers if getattr(layer.ffn, "kind", None) == "mlp")
    return widths if len(set(widths)) > 1 and len(widths) == len(arch.layers) else None


def sparsity(arch: Architecture) -> tuple[float | None, ...] | None:
    """Per layer, its MLP's gate cutoff in standard deviations (None: dense); None when no layer is sparse."""
    values = tuple(getattr(layer.ffn, "gate_sparsity_std", None) for layer in arch.layers)
    return values if any(v is not None for v in values) else None


def extras_config_fields(arch: Architecture) -> list[dict[str, Any]]:
    fields = []
    for kind in kind_shapes(arch):
        p = kind["prefix"]
        fields.append(field(f"{p}head_dim", "int", kind["head_dim"], f"head width of the {p[:-1]} layers"))
        fields.append(field(f"{p}num_key_value_heads", "int", kind["num_kv_heads"]))
        if kind["num_heads"] is not None:
            fields.append(field(f"{p}num_attention_heads", "int", kind["num_heads"]))
    attns = _attentions(arch)
    mixer = attns[0][1] if attns else None
    if mixer is not None and mixer.v_head_dim is not None:
        fields.append(field("v_head_dim", "int", mixer.v_head_dim, "width of each value head"))
    if mixer is not None and mixer.value_scale is not None:
        fields.append(field("attention_value_scale", "float", mixer.value_scale, "multiplies the values"))
    widths = mlp_widths(arch)
    if widths is not None:
        made = field("layer_intermediate_size", "tuple[int, ...]", widths[0], "per layer: its MLP's width")
        made.update(literal="(" + ", ".join(map(str, widths)) + ")", value=widths)
        fields.append(made)
    sources = kv_sources(arch)
    if sources is not None:
        made = field("kv_shared_from", "tuple[int, ...]", sources[0],
                     "per layer: the layer whose keys and values it reads (-1: its own)")
        made.update(literal="(" + ", ".join(map(str, sources)) + ")", value=sources)
        fields.append(made)
    ple = arch.per_layer_input
    if ple is not None:
        fields += [field("hidden_size_per_layer_input", "int", ple.width, "width of each layer's own input"),
                   field("vocab_size_per_layer_input", "int", ple.vocab_size),
                   field("per_layer_embed_scale", "float", ple.embed_scale, "sqrt(hidden_size_per_layer_input)"),
                   field("per_layer_projection_scale", "float", ple.projection_scale, "1 / sqrt(hidden_size)"),
                   field("per_layer_input_scale", "float", ple.combine_scale, "1 / sqrt(2)")]
    stds = sparsity(arch)
    if stds is not None:
        made = field("gate_sparsity_std", "tuple[float | None, ...]", 0.0,
                     "per layer: Normal(0, 1).icdf(activation sparsity), float32; None: dense")
        made.update(literal="(" + ", ".join(map(repr, stds)) + ")", value=stds)
        fields.append(made)
    altup, laurel = arch.altup, arch.layers[0].laurel
    if altup is not None:
        fields += [field("altup_num_inputs", "int", altup.num_inputs, "AltUp: residual streams"),
                   field("altup_active_idx", "int", altup.active_index, "the stream each layer's block reads"),
                   field("altup_router_scale", "float", altup.router_input_scale, "1 / hidden_size"),
                   field("altup_magnitude_floor", "float", altup.magnitude_floor, "least mean square of a stream")]
    if laurel is not None:
        fields += [field("laurel_rank", "int", laurel.rank, "LAuReL: width of the low-rank branch"),
                   field("laurel_divisor", "float", laurel.divisor, "sqrt(2): divides attention + LAuReL sums")]
    moe = arch.layers[0].experts_beside
    if moe is not None:
        fields += [field("num_experts", "int", moe.num_experts),
                   field("num_experts_per_tok", "int", moe.top_k, "experts each token is routed to"),
                   field("moe_intermediate_size", "int", moe.intermediate_size, "width of each expert"),
                   field("router_input_scale", "float", arch.hidden_size**-0.5, "1 / sqrt(hidden_size)")]
    return fields


def extras_context(arch: Architecture) -> dict[str, Any]:
    """Structural switches for the templates (all false / empty for a model without these features)."""
    attns = _attentions(arch)
    shapes = kind_shapes(arch)
    k_eq_v = sorted({letter for letter, mixer in attns if mixer.k_eq_v})
    sources = kv_sources(arch)
    layer = arch.layers[0]
    moe, ple = layer.experts_beside, arch.per_layer_input
    sinks = sorted({letter for letter, mixer in attns if mixer.sinks})
    own_kv = bool(k_eq_v) or sources is not None or any(mixer.v_norm for _, mixer in attns)
    return {
        "kind_shapes": [{"letter_literal": literal(k["letter"]), "prefix": identifier(k["prefix"]),
                         "heads": k["num_heads"] is not None} for k in shapes],
        "per_layer_attention": bool(shapes) or bool(k_eq_v) or sources is not None
        or len({mixer.sinks for _, mixer in attns}) > 1,
        "k_eq_v_literal": literal("".join(k_eq_v)) if k_eq_v else "",
        "kv_sharing": sources is not None,
        "v_norm": any(mixer.v_norm for _, mixer in attns),
        "kv_code": own_kv,  # the attention forward that computes (or borrows) its keys and values in one place
        "ple": {**activation(ple.activation), "clamp": ple.vocab_size < arch.embedding.vocab_size} if ple else None,
        "altup": {"correct_scale": arch.altup.correct_scale} if arch.altup else None,
        "laurel": layer.laurel is not None,
        "sparsity": sparsity(arch) is not None,
        "beside": activation(moe.activation) if moe else None,
        "layer_scalar": layer.layer_scalar,
        "mlp_widths": mlp_widths(arch) is not None,
        "v_head_dim": any(mixer.v_head_dim is not None for _, mixer in attns),
        "value_scale": any(mixer.value_scale is not None for _, mixer in attns),
        "head_gate": any(mixer.head_gate for _, mixer in attns),
        # the kinds of layer with attention sinks, when only some have them
        "sinks_literal": literal("".join(sinks)) if len({mixer.sinks for _, mixer in attns}) > 1 else "",
        "unit_norm": any(mixer.v_norm for _, mixer in attns) or moe is not None,
    }


def static_cache(arch: Architecture) -> bool:
    """Whether the model gets CausalLM.enable_static_cache (a fixed-shape KV cache for a compiled
    decoding step): every layer plain softmax attention with its own cache, positions by RoPE,
    learned or none (not recurrent or latent attention, not ALiBi, no shared keys/values, no per-layer inputs,
    no value width of its own, no recurrent mixer beside the attention)."""
    from .mixers import attention_layers, is_hybrid
    from .render_blocks import no_attention, single_block
    from .render_mla import mla_of

    attns = attention_layers(arch)
    if not attns or no_attention(arch) or single_block(arch) or is_hybrid(arch) or mla_of(arch):
        return False
    alibi = any(getattr(layer.mixer, "alibi", None) is not None for layer in attns)
    # values as wide as keys (one slot shape for both), and no recurrent mixer beside the attention
    plain = all(getattr(layer.mixer, "v_head_dim", None) is None for layer in attns) and not any(
        layer.parallel_mixer for layer in arch.layers)
    return plain and not alibi and arch.per_layer_input is None and kv_sources(arch) is None
