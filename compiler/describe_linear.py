"""Plain-words description of linear-attention (Gated DeltaNet) layers and the attention they sit
beside (output gate, multimodal RoPE sections), for describe.features."""

from __future__ import annotations

from ..schemas.arch import Architecture
from .mixers import first_attention, linear_of, recurrent_state_bytes
from .render_mamba2 import mamba2_features


def block_features(arch: Architecture) -> list[str]:
    """Sentences for Mamba-2 layers and for layers of one block each (Nemotron-H's pattern)."""
    out = mamba2_features(arch)
    if any(layer.mixer is None or layer.ffn is None for layer in arch.layers):
        from .describe import layer_pattern  # describe imports this module
        from .render import pattern_legend

        pattern = layer_pattern(arch)
        out.append(f"Each layer is one block, x + block(norm(x)), chosen by its letter of Config.layer_pattern "
                   f"({pattern_legend(arch)}): {pattern[:24]}{'...' if len(pattern) > 24 else ''}.")
    return out


def linear_features(arch: Architecture) -> list[str]:
    """Sentences for a hybrid model's linear layers (none for a model without them)."""
    gdn = linear_of(arch)
    out = []
    if gdn is not None:
        linear = sum(layer.mixer.kind == "gated_deltanet" for layer in arch.layers)
        attn = first_attention(arch)
        from .describe import layer_pattern  # describe imports this module

        pattern = layer_pattern(arch)
        unit = next((pattern[:n] for n in range(1, len(pattern)) if pattern == (pattern[:n] * len(pattern))[:len(pattern)]), pattern)
        out.append(
            f"Hybrid: Gated DeltaNet (linear attention) on {linear} of {arch.num_layers} layers, softmax attention on "
            f"the rest (pattern {unit} repeating, Config.layer_pattern); a linear layer keeps a state of constant size "
            f"({recurrent_state_bytes(gdn, conv_bytes=4):,} bytes per layer and sequence in float32) instead of a KV cache.")
        group = gdn.num_v_heads // gdn.num_k_heads
        out.append(
            f"Gated DeltaNet: {gdn.num_k_heads} query/key heads of {gdn.k_head_dim} and {gdn.num_v_heads} value heads of "
            f"{gdn.v_head_dim}" + (f" (each query/key head serves {group} value heads)" if group > 1 else "")
            + f"; q, k, v through a causal depthwise convolution (kernel {gdn.conv_kernel}) and SiLU, q and k "
            "L2-normalised; per value head a decay g = -exp(A_log) softplus(a + dt_bias) and a write strength "
            "beta = sigmoid(b); the delta rule in chunks of "
            f"{gdn.chunk_size} for a prompt and token by token when decoding; output RMS-normed per head, times SiLU(z).")
        if gdn.projection == "grouped_qkvz":
            out.append("Gated DeltaNet in-projections stored fused and grouped by key head: in_proj_qkvz holds "
                       "[q_h; k_h; v; z] of each key head h and its value heads, in_proj_ba [b; a] likewise.")
        if attn is not None and attn.kind == "attention" and attn.output_gate:
            out.append("Attention output gate: q_proj also yields a gate per head ([q_h; gate_h]); the attention "
                       "output is multiplied by sigmoid(gate) before o_proj.")
    for table in arch.rope:
        if table.mrope_section:
            out.append(f"Multimodal RoPE sections {list(table.mrope_section)} (time, height, width; interleaved): for "
                       "text alone the three position ids are equal, so the table is the plain one.")
    return out
