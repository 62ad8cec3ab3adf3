"""The Llama block with switches: most long-tail families are "Llama with these keys renamed and
this one switch", and their lowering is one call of ``llama_like`` with those switches.

The block: pre-norm RMSNorm, grouped-query attention with RoPE, SwiGLU MLP, optional tied head.
Every switch defaults to Llama's behaviour; a family names only what differs. Keys the family
reads for the switches are read by the family itself (so its own defaults and names show).
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Head, Mlp, Names, Norm
from .families import ACTIVATIONS, LAYER_TYPES, Common, build, full_head_rotary, read_common, read_layer_types
from .reader import ConfigReader
from .rope import lower_rope

# transformers' activation names these families use beyond the common ones.
ACTIVATIONS_MORE = {**ACTIVATIONS, "relu2": "relu2", "xielu": "xielu"}
# Dropouts and training-only keys several of these families carry: never part of inference logits.
TRAINING_ONLY = frozenset({"attention_dropout", "hidden_dropout", "residual_dropout", "embd_pdrop", "resid_pdrop"})


def common(r: ConfigReader, *, kv: int | None = None, head_dim: int | None = None, max_pos: int = 2048) -> Common:
    """The shared sizes, with the family's defaults (kv None: as many key/value heads as heads)."""
    return read_common(r, kv_default=kv, head_dim_default=head_dim, max_pos=max_pos)


def sliding_layer_types(r: ConfigReader, c: Common, window: int | None) -> list[str]:
    """Mistral-style: every layer sliding when a window is set, else full; an explicit layer_types wins."""
    kind = "sliding_attention" if window is not None else "full_attention"
    return read_layer_types(r, c.num_layers, [kind] * c.num_layers)


def llama_like(
    r: ConfigReader, model_type: str, c: Common, *,
    theta: float = 10000.0,
    eps: float = 1e-6,
    norm: Norm | None = None,
    qkv_bias: bool = False,
    o_bias: bool = False,
    mlp_bias: bool = False,
    qk_norm: str = "none",
    activation: str = "silu",
    gated: bool = True,
    fused_gate_up: bool = False,
    rope_layout: str = "rotate_half",
    partial_rotary: bool = False,
    layer_types: list[str] | None = None,
    window: int | None = None,
    tied: bool = False,
    names: dict[str, str] | None = None,
    block: str = "pre_norm",
    embed_scale: float | None = None,
    head: Head | None = None,
    extra_allowed: frozenset[str] = frozenset(),
    **attention: Any,
) -> Architecture:
    """Llama's decoder with the given switches. ``theta``/``eps``/``activation``/``tied`` are the family's
    defaults for rope_theta, rms_norm_eps, hidden_act and tie_word_embeddings (read here);
    ``partial_rotary`` allows a partial_rotary_factor below 1 (the family's model rotates part of each head)."""
    layer_types = layer_types or ["full_attention"] * c.num_layers
    norm = norm or Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", eps))
    ropes = lower_rope(r, head_dim=c.head_dim, layer_types=set(layer_types),
                       default_theta={t: theta for t in LAYER_TYPES})
    if not partial_rotary:
        full_head_rotary(r, ropes)
    if rope_layout != "rotate_half":
        ropes = {kind: table.model_copy(update={"layout": rope_layout}) for kind, table in ropes.items()}
    mlp = Mlp(gated=gated, activation=r.str("hidden_act", activation, choices=ACTIVATIONS_MORE),
              intermediate_size=c.intermediate_size, bias=mlp_bias, fused_gate_up=fused_gate_up)
    attn: dict[str, Any] = dict(q_bias=qkv_bias, k_bias=qkv_bias, v_bias=qkv_bias, o_bias=o_bias,
                                scale=c.head_dim**-0.5)
    if qk_norm != "none":
        attn.update(qk_norm=qk_norm, qk_norm_spec=norm)
    attn.update(attention)
    arch = build(
        r, c, layer_types=layer_types, window=window, ropes=ropes, norm=norm, attention=attn, mlp=mlp,
        block=block, embed_scale=embed_scale, head=head or Head(tied=r.bool("tie_word_embeddings", tied)),
        model_type=model_type, extra_allowed=TRAINING_ONLY | extra_allowed,
    )
    if names:
        arch = arch.model_copy(update={"names": Names(**names)})
    return arch
