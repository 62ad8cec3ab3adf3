"""The mixer protocol: each kind of token mixer (``Layer.mixer``) in one place.

A kind has its pattern letter, the module name its layers store it under, its generated class,
its checkpoint tensors and the cache its layers get. Every other pass asks here instead of
reading ``arch.layers[0].mixer``: a model may mix kinds (Qwen3.5: three Gated DeltaNet layers for
every attention layer), and only softmax-attention layers have spans, windows, RoPE and a KV cache.
"""

from __future__ import annotations

from collections.abc import Callable

from ..schemas.arch import Architecture, Attention, GatedDeltaNet, Layer, Mla, Names, Norm

SOFTMAX_KINDS = ("attention", "mla")  # attention over cached keys and values
LINEAR_LETTER = "L"  # the pattern letter of a Gated DeltaNet layer
RECURRENT_LETTERS = {"gated_deltanet": LINEAR_LETTER, "mamba2": "M"}  # mixers with a state of constant size
CLASS_NAMES = {"attention": "Attention", "mla": "Attention", "gated_deltanet": "GatedDeltaNet", "mamba2": "Mamba2"}
CACHE_WORDS = {"attention": "KV cache", "mla": "latent cache", "gated_deltanet": "recurrent state", "mamba2": "recurrent state"}


def is_softmax(layer: Layer) -> bool:
    return layer.mixer is not None and layer.mixer.kind in SOFTMAX_KINDS


def attention_layers(arch: Architecture) -> list[Layer]:
    """The layers whose mixer is softmax attention (plain or latent): those with spans, RoPE and a KV cache."""
    return [layer for layer in arch.layers if is_softmax(layer)]


def first_attention(arch: Architecture) -> Attention | Mla | None:
    return next((layer.mixer for layer in attention_layers(arch)), None)


def linear_of(arch: Architecture) -> GatedDeltaNet | None:
    """The model's Gated DeltaNet mixer, if any layer has one (validate: one per model)."""
    return next((layer.mixer for layer in arch.layers if isinstance(layer.mixer, GatedDeltaNet)), None)


def mixer_kinds(arch: Architecture) -> dict[str, object]:
    """The first mixer of each kind, in order of first appearance."""
    kinds: dict[str, object] = {}
    for layer in arch.layers:
        if layer.mixer is not None:
            kinds.setdefault(layer.mixer.kind, layer.mixer)
    return kinds


def is_hybrid(arch: Architecture) -> bool:
    """Layers of more than one mixer kind: the DecoderLayer picks its mixer per layer."""
    return len(mixer_kinds(arch)) > 1


def module_name(kind: str, names: Names) -> str:
    """The attribute (and checkpoint name) of a layer's mixer block."""
    return names.linear_attn if kind == "gated_deltanet" else names.mamba if kind == "mamba2" else names.attn


def gated_deltanet_rows(gdn: GatedDeltaNet, a: str, hidden: int, linear: Callable[[str, int, int, bool], None],
                        norm_rows: Callable[[str, int, Norm], None], rows: list) -> None:
    """Tensors of one Gated DeltaNet block under prefix ``a`` (``{backbone}.layers.{i}.linear_attn.``)."""
    gn = gdn.names
    if gdn.projection == "grouped_qkvz":
        linear(a + gn.qkvz, 2 * gdn.key_dim + 2 * gdn.value_dim, hidden, False)
        linear(a + gn.ba, 2 * gdn.num_v_heads, hidden, False)
    else:
        linear(a + gn.qkv, gdn.conv_dim, hidden, False)
        linear(a + gn.z, gdn.value_dim, hidden, False)
        linear(a + gn.b, gdn.num_v_heads, hidden, False)
        linear(a + gn.a, gdn.num_v_heads, hidden, False)
    rows.append((f"{a}{gn.conv}.weight", (gdn.conv_dim, 1, gdn.conv_kernel), "linear"))
    rows.append((a + gn.dt_bias, (gdn.num_v_heads,), "bias"))
    rows.append((a + gn.a_log, (gdn.num_v_heads,), "bias"))
    norm_rows(a + gn.norm, gdn.v_head_dim, gdn.norm)
    linear(a + gn.out, hidden, gdn.value_dim, False)


def recurrent_state_bytes(gdn: GatedDeltaNet, state_bytes: int = 4, conv_bytes: int = 2) -> int:
    """Bytes of one Gated DeltaNet layer's cache per sequence, whatever the text length: the convolution
    window (conv_kernel - 1 inputs of conv_dim channels, in the model dtype, bf16 by default) and one float32
    k_head_dim x v_head_dim matrix per value head."""
    return (gdn.conv_kernel - 1) * gdn.conv_dim * conv_bytes + gdn.num_v_heads * gdn.k_head_dim * gdn.v_head_dim * state_bytes
