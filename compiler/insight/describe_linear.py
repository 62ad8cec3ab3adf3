"""Plain-words description of recurrent layers (each kind's own sentences from its MixerKind) and of
the attention they sit beside (output gate, multimodal RoPE sections), for describe.features."""

from __future__ import annotations

from ...schemas.arch import Architecture
from ..passes.mixers import first_attention, recurrent_kinds
from ..passes.render_parallel import parallel_features, parallel_layer


def block_features(arch: Architecture) -> list[str]:
    """A sentence for layers of one block each (Nemotron-H's pattern); none for other models."""
    if not any(layer.mixer is None or layer.ffn is None for layer in arch.layers):
        return []
    from .describe import layer_pattern  # describe imports this module
    from ..passes.render import pattern_legend

    pattern = layer_pattern(arch)
    return [f"Each layer is one block, x + block(norm(x)), chosen by its letter of Config.layer_pattern "
            f"({pattern_legend(arch)}): {pattern[:24]}{'...' if len(pattern) > 24 else ''}."]


def linear_features(arch: Architecture) -> list[str]:
    """Sentences for a hybrid model's recurrent layers (none for a model without them)."""
    out = parallel_features(arch)
    kinds = recurrent_kinds(arch)
    if kinds and parallel_layer(arch) is not None:  # beside attention in every layer: the parallel sentence counts them
        for kind, mixer in kinds:
            out += kind.features(arch, mixer)
    elif kinds:
        from .describe import layer_pattern  # describe imports this module

        pattern = layer_pattern(arch)
        unit = next((pattern[:n] for n in range(1, len(pattern) // 2 + 1)
                     if pattern == (pattern[:n] * len(pattern))[:len(pattern)]), pattern)  # repeated at least twice
        counts = [f"{kind.words} on {sum(getattr(layer.mixer, 'kind', None) == kind.kind for layer in arch.layers)} of {arch.num_layers} layers"
                  for kind, _ in kinds]
        sizes = ", ".join(f"{kind.state_bytes(mixer, 4):,} bytes per {kind.title} layer" for kind, mixer in kinds)
        attention = sum(layer.mixer is not None and layer.mixer.kind in ("attention", "mla") for layer in arch.layers)
        single = any(layer.mixer is None for layer in arch.layers)  # the rest: feed-forward-only layers too
        rest = ("" if not attention else f", softmax attention on {attention} of {arch.num_layers} layers" if single
                else ", softmax attention on the rest")
        lead = "Hybrid: " if rest or len(kinds) > 1 else "State-space model: "
        out.append(
            f"{lead}{'; '.join(counts)}{rest} (pattern {unit}{' repeating' if unit != pattern else ''}, Config.layer_pattern); a recurrent layer keeps "
            f"a state of constant size ({sizes} and sequence in float32) instead of a KV cache.")
        for kind, mixer in kinds:
            out += kind.features(arch, mixer)
    attn = first_attention(arch)
    if attn is not None and attn.kind == "attention" and attn.output_gate:
        out.append("Attention output gate: q_proj also yields a gate per head ([q_h; gate_h]); the attention "
                   "output is multiplied by sigmoid(gate) before o_proj.")
    for table in arch.rope:
        if table.mrope_section:
            out.append(f"Multimodal RoPE sections {list(table.mrope_section)} (time, height, width; interleaved): for "
                       "text alone the three position ids are equal, so the table is the plain one.")
    return out
