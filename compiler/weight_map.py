"""Pass 4, weight map: every tensor of the on-disk checkpoint and the parameter it fills.

The map is data (written into the generated file as ``WEIGHT_MAP``) and also drives the
parity harness (which tensors are norms and what their neutral value is) and shape checks.
``{i}`` in a key stands for the layer index, ``{e}`` for the expert, ``{h}`` for the head.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..schemas.arch import Architecture, Layer, Mlp, Moe, Names, Norm
from .mixers import gated_deltanet_rows, is_hybrid, mixer_kinds, module_name
from .weight_map_mla import mla_rows
from .weight_map_moe import FFN_LETTERS, ffn_kinds, ffn_pattern, fused_expert_map, moe_rows  # noqa: F401

Role = Literal["embedding", "linear", "bias", "norm", "buffer"]  # buffer: stored and loaded, not a parameter


@dataclass(frozen=True)
class WeightEntry:
    checkpoint: str
    param: str
    shape: tuple[int, ...]
    role: Role
    neutral: float | None = None  # norms: the stored value at which the norm scales by exactly 1
    experts: int = 1  # copies of the key: "{e}" stands for the expert index
    heads: int = 1  # copies of the key: "{h}" stands for the head index (a module per head)
    head_count: str | None = None  # "{h}" keys: the Config field that counts their heads
    ffn_kind: str | None = None  # only in the layers whose feed-forward is of this kind (E or D, FFN_LETTERS)
    mixer_kind: str | None = None  # only in the layers whose mixer is of this kind (Layer.mixer.kind; hybrid models)
    routed: bool = False  # a routed expert's tensor: a token uses top_k of num_experts of them

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.checkpoint

    def _indices(self, arch: Architecture) -> tuple[list, list, list]:
        """The layer, expert and head indices this entry's key takes ([None]: the key has no such slot)."""
        layers = ([i for i, kind in enumerate(ffn_pattern(arch)) if kind == self.ffn_kind] if self.ffn_kind
                  else list(range(arch.num_layers)))
        if self.mixer_kind:
            layers = [i for i in layers if arch.layers[i].mixer.kind == self.mixer_kind]
        return (layers if self.per_layer else [None],
                list(range(self.experts)) if "{e}" in self.checkpoint else [None],
                list(range(self.heads)) if "{h}" in self.checkpoint else [None])

    def keys(self, arch: Architecture) -> list[str]:
        """Every concrete checkpoint key of this entry: over its layers, experts and heads."""
        layers, experts, heads = self._indices(arch)
        return [self.checkpoint.format(i=i, e=e, h=h) for i in layers for e in experts for h in heads]

    def count(self, arch: Architecture) -> int:
        """How many keys `keys` gives, without spelling them (DeepSeek-V3: 15,616 per expert tensor)."""
        layers, experts, heads = self._indices(arch)
        return len(layers) * len(experts) * len(heads)


def checkpoint_name(arch: Architecture, key: str) -> str:
    """A parameter's key as the checkpoint spells it: the backbone's keys under `backbone_checkpoint` if given."""
    backbone = f"{arch.names.backbone}."
    if arch.backbone_checkpoint and key.startswith(backbone):
        return arch.backbone_checkpoint + key[len(backbone):]
    return key


def weight_map(arch: Architecture) -> list[WeightEntry]:
    """The checkpoint layout of ``arch`` (pass 4 of the pipeline)."""
    n, hidden = arch.names, arch.hidden_size
    layer = arch.layers[0]
    norm = layer.norm
    rows: list[tuple[str, tuple[int, ...], Role]] = []
    extra: dict[str, dict] = {}  # key -> WeightEntry fields beyond the defaults (experts, heads, ffn kinds)
    neutral: dict[str, float] = {}  # norms whose neutral weight differs from the layers' norms'

    def linear(name: str, out_dim: int, in_dim: int, bias: bool) -> None:
        shape = (out_dim, in_dim) if arch.linear_layout == "out_in" else (in_dim, out_dim)
        rows.append((f"{name}.weight", shape, "linear"))
        if bias:
            rows.append((f"{name}.bias", (out_dim,), "bias"))

    def norm_rows(name: str, dim: int | tuple[int, ...], spec: Norm) -> None:
        shape = dim if isinstance(dim, tuple) else (dim,)
        rows.append((f"{name}.weight", shape, "norm"))
        if spec.weight_offset != norm.weight_offset:
            neutral[f"{name}.weight"] = 1.0 - spec.weight_offset
        if spec.bias:
            rows.append((f"{name}.bias", shape, "bias"))

    b = f"{n.backbone}."
    rows.append((f"{b}{n.embed}.weight", (arch.embedding.vocab_size, hidden), "embedding"))
    if arch.embedding.learned_positions:
        rows.append((f"{b}{n.positions}.weight", (arch.embedding.learned_positions, hidden), "embedding"))
    p = f"{b}{n.layers}.{{i}}."
    for norm_name in block_norms(layer, n):
        norm_rows(p + norm_name, hidden, norm)
    for kind, mixer in mixer_kinds(arch).items():
        first = len(rows)
        a = f"{p}{module_name(kind, n)}."
        if kind == "gated_deltanet":
            gated_deltanet_rows(mixer, a, hidden, linear, norm_rows, rows)
        elif kind == "mla":
            mla_rows(mixer, a, hidden, linear, norm_rows)
        else:
            extra.update(attention_rows(mixer, a, hidden, n, linear, norm_rows, rows))
        if is_hybrid(arch):
            for key, _, _ in rows[first:]:
                extra.setdefault(key, {})["mixer_kind"] = kind
    m = f"{p}{n.mlp}."
    kinds = ffn_kinds(arch)
    for ffn in kinds.values():
        first = len(rows)
        if isinstance(ffn, Moe):
            extra.update(moe_rows(ffn, m, hidden, rows, p))
        else:
            dense_rows(ffn, m, hidden, n, linear)
        if len(kinds) > 1:
            for key, _, _ in rows[first:]:
                extra.setdefault(key, {})["ffn_kind"] = FFN_LETTERS[ffn.kind]
    norm_rows(f"{b}{n.final_norm}", hidden, arch.final_norm)
    if not arch.head.tied:
        rows.append((f"{n.head}.weight", (arch.embedding.vocab_size, hidden), "linear"))
    if arch.head.bias:
        rows.append((f"{n.head}.bias", (arch.embedding.vocab_size,), "bias"))
    return [
        WeightEntry(
            checkpoint=arch.checkpoint_prefix + checkpoint_name(arch, key),
            param=key,
            shape=shape,
            role=role,
            neutral=neutral.get(key, 1.0 - norm.weight_offset) if role == "norm" else None,
            **extra.get(key, {}),
        )
        for key, shape, role in rows
    ]


def attention_rows(attn, a: str, hidden: int, n: Names, linear: Callable[[str, int, int, bool], None],
                   norm_rows: Callable, rows: list) -> dict[str, dict]:
    """Tensors of one softmax-attention block under prefix ``a``; returns extra WeightEntry fields by key."""
    extra: dict[str, dict] = {}
    q_out, kv_out = attn.num_heads * attn.head_dim, attn.num_kv_heads * attn.head_dim
    q_rows = 2 * q_out if attn.output_gate else q_out  # [q_h; gate_h] per head
    if attn.qkv == "separate":
        linear(a + n.q, q_rows, hidden, attn.q_bias)
        linear(a + n.k, kv_out, hidden, attn.k_bias)
        linear(a + n.v, kv_out, hidden, attn.v_bias)
    else:
        linear(a + n.qkv, q_out + 2 * kv_out, hidden, attn.q_bias)
    linear(a + n.o, hidden, q_out, attn.o_bias)
    if attn.sinks:
        rows.append((a + n.sinks, (attn.num_heads,), "bias"))
    if attn.qk_norm == "per_head_modules":
        for name, heads, field in ((n.q_norm, attn.num_heads, "num_attention_heads"),
                                   (n.k_norm, attn.num_kv_heads, "num_key_value_heads")):
            norm_rows(f"{a}{name}.norms.{{h}}", attn.head_dim, attn.qk_norm_spec)
            extra[f"{a}{name}.norms.{{h}}.weight"] = {"heads": heads, "head_count": field}
    elif attn.qk_norm not in ("none", "l2") and attn.qk_norm_spec is not None:  # l2: no weight
        whole, rows_per_head = attn.qk_norm == "whole", attn.qk_norm == "per_head_weights"
        q_dim = q_out if whole else (attn.num_heads, attn.head_dim) if rows_per_head else attn.head_dim
        kv_dim = kv_out if whole else (attn.num_kv_heads, attn.head_dim) if rows_per_head else attn.head_dim
        norm_rows(a + n.q_norm, q_dim, attn.qk_norm_spec)
        norm_rows(a + n.k_norm, kv_dim, attn.qk_norm_spec)
    return extra


def block_norms(layer: Layer, n: Names) -> list[str]:
    """Names of a decoder block's norms, in the order the block applies them."""
    if layer.block == "sandwich":
        return [n.input_norm, n.post_attn_norm, n.pre_ffn_norm, n.post_ffn_norm]
    if layer.block == "post_norm":
        return [n.post_attn_norm, n.post_ffn_norm]
    if layer.block == "parallel" and layer.parallel_norms == 1:
        return [n.input_norm]
    return [n.input_norm, n.post_attn_norm]


def dense_rows(ffn: Mlp, m: str, hidden: int, n: Names, linear: Callable[[str, int, int, bool], None]) -> None:
    if ffn.fused_gate_up:
        linear(m + n.gate_up, 2 * ffn.intermediate_size, hidden, ffn.bias)
    else:
        if ffn.gated:
            linear(m + n.gate, ffn.intermediate_size, hidden, ffn.bias)
        linear(m + n.up, ffn.intermediate_size, hidden, ffn.bias)
    linear(m + n.down, hidden, ffn.intermediate_size, ffn.bias)


def entry_size(entry: WeightEntry, arch: Architecture) -> int:
    """Elements of all copies of this tensor: over its layers, experts and heads."""
    return math.prod(entry.shape) * entry.count(arch)


def parameter_count(arch: Architecture) -> int:
    """Number of parameters of the full-size model (tied head counted once)."""
    return sum(entry_size(entry, arch) for entry in weight_map(arch) if entry.role != "buffer")


def active_parameter_count(arch: Architecture) -> int:
    """Parameters one token passes through: every tensor, but only top_k of the routed experts."""
    moe = next((layer.ffn for layer in arch.layers if isinstance(layer.ffn, Moe)), None)
    return sum(
        entry_size(entry, arch) * moe.top_k // moe.num_experts if entry.routed and moe else entry_size(entry, arch)
        for entry in weight_map(arch) if entry.role != "buffer"
    )
