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

from ...schemas.arch import Architecture, Attention, Layer, Mlp, Moe, Names, Norm
from .mixers import KINDS, is_hybrid, mixer_kinds, module_name
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
    layers: tuple[int, ...] | None = None  # only in these layers (the layers' attention shapes differ: Gemma 4)

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.checkpoint

    def _indices(self, arch: Architecture) -> tuple[list, list, list]:
        """The layer, expert and head indices this entry's key takes ([None]: the key has no such slot)."""
        layers = ([i for i, kind in enumerate(ffn_pattern(arch)) if kind == self.ffn_kind] if self.ffn_kind
                  else list(range(arch.num_layers)))
        if self.mixer_kind:
            layers = [i for i in layers if getattr(arch.layers[i].mixer, "kind", None) == self.mixer_kind]
        if self.layers is not None:
            layers = [i for i in layers if i in self.layers]
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
    n, backbone = arch.names, f"{arch.names.backbone}."
    layer = f"{backbone}{n.layers}.{{i}}."
    if n.attn_checkpoint:  # the attention block nested deeper on disk
        key = key.replace(f"{layer}{n.attn}.", f"{layer}{n.attn_checkpoint}.")
    if n.mlp_checkpoint is not None:  # the MLP's projections elsewhere on disk ("": directly in the layer)
        key = key.replace(f"{layer}{n.mlp}.", f"{layer}{n.mlp_checkpoint}." if n.mlp_checkpoint else layer)
    if arch.backbone_checkpoint and key.startswith(backbone):
        return arch.backbone_checkpoint + key[len(backbone):]
    return key


def weight_map(arch: Architecture) -> list[WeightEntry]:
    """The checkpoint layout of ``arch`` (pass 4 of the pipeline)."""
    if arch.hyper is not None:  # hyper-connected streams: the published names of their blocks
        from .weight_map_dsv4 import hyper_weight_map

        return hyper_weight_map(arch)
    n, hidden = arch.names, arch.hidden_size
    layer = arch.layers[0]
    norm = layer.norm
    rows: list[tuple[str, tuple[int, ...], Role]] = []
    extra: dict[str, dict] = {}  # key -> WeightEntry fields beyond the defaults (experts, heads, ffn kinds)
    neutral: dict[str, float] = {}  # norms whose neutral weight differs from the layers' norms'
    mixer_of: dict[int, str] = {}  # row -> the mixer kind of the layers it is in (hybrid models)

    def linear(name: str, out_dim: int, in_dim: int, bias: bool) -> None:
        shape = (out_dim, in_dim) if arch.linear_layout == "out_in" else (in_dim, out_dim)
        rows.append((f"{name}.weight", shape, "linear"))
        if bias:
            rows.append((f"{name}.bias", (out_dim,), "bias"))

    def norm_rows(name: str, dim: int | tuple[int, ...], spec: Norm) -> None:
        shape = dim if isinstance(dim, tuple) else (dim,)
        if not spec.weight:  # no learned scale or bias: nothing stored
            return
        rows.append((f"{name}.weight", shape, "norm"))
        if spec.weight_offset != norm.weight_offset:
            neutral[f"{name}.weight"] = 1.0 - spec.weight_offset
        if spec.bias:
            rows.append((f"{name}.bias", shape, "bias"))

    b = f"{n.backbone}."
    rows.append((f"{b}{n.embed}.weight", (arch.embedding.vocab_size, hidden), "embedding"))
    if arch.embedding.learned_positions:
        rows.append((f"{b}{n.positions}.weight", (arch.embedding.learned_positions, hidden), "embedding"))
    if arch.embedding.norm is not None:
        norm_rows(f"{b}{n.embed_norm}", hidden, arch.embedding.norm)
    p = f"{b}{n.layers}.{{i}}."
    for norm_name in block_norms(layer, n):
        norm_rows(p + norm_name, hidden, norm)
    row_layers: dict[int, tuple[int, ...]] = {}  # row index -> its layers, where the layers' attention shapes differ
    groups = attention_groups(arch)
    for kind, mixer in mixer_kinds(arch).items():
        first = len(rows)
        a = f"{p}{module_name(kind, n)}."
        if kind == "attention" and len(groups) > 1:
            for group_mixer, indices in groups:
                start = len(rows)
                extra.update(attention_rows(group_mixer, a, hidden, n, linear, norm_rows, rows))
                row_layers.update({r: indices for r in range(start, len(rows))})
        elif kind in KINDS:
            KINDS[kind].rows(mixer, a, hidden, linear, norm_rows, rows)
        elif kind == "mla":
            mla_rows(mixer, a, hidden, linear, norm_rows)
        else:
            extra.update(attention_rows(mixer, a, hidden, n, linear, norm_rows, rows))
            if mixer.output_norm:  # over the heads' output, before o_proj
                norm_rows(a + n.attn_out_norm, mixer.num_heads * mixer.head_dim, norm)
        if is_hybrid(arch) or any(lay.mixer is None for lay in arch.layers):  # by row: two kinds may name a tensor alike (Kimi Linear: self_attn.q_proj)
            mixer_of.update(dict.fromkeys(range(first, len(rows)), kind))
    m = f"{p}{n.mlp}."
    kinds = ffn_kinds(arch)
    for ffn in kinds.values():
        first = len(rows)
        widths = {}
        for layer in arch.layers:
            if isinstance(ffn, Mlp) and getattr(layer.ffn, "kind", None) == "mlp":
                widths.setdefault(layer.ffn.intermediate_size, (layer.ffn, []))[1].append(layer.index)
        if isinstance(ffn, Moe):
            extra.update(moe_rows(ffn, m, hidden, rows, p))
        elif len(widths) > 1:  # dense MLPs of different widths (Gemma 4's double-wide MLPs)
            for group_ffn, indices in widths.values():
                start = len(rows)
                dense_rows(group_ffn, m, hidden, n, linear)
                row_layers.update({r: tuple(indices) for r in range(start, len(rows))})
        else:
            dense_rows(ffn, m, hidden, n, linear)
            if ffn.activation == "xielu":  # the activation's parameters and stored constants
                rows.extend([(f"{m}{n.act_fn}.alpha_p", (1,), "bias"), (f"{m}{n.act_fn}.alpha_n", (1,), "bias"),
                             (f"{m}{n.act_fn}.beta", (), "buffer"), (f"{m}{n.act_fn}.eps", (), "buffer")])
            if ffn.inner_norm:  # over the intermediate activation, before down_proj
                norm_rows(m + n.mlp_inner_norm, ffn.intermediate_size, norm)
        if len(kinds) > 1 or any(lay.ffn is None for lay in arch.layers):
            for key, _, _ in rows[first:]:
                extra.setdefault(key, {})["ffn_kind"] = FFN_LETTERS[ffn.kind]
    layer_extras(arch, p, hidden, linear, norm_rows, rows, extra)
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
            **({"layers": row_layers[row]} if row in row_layers else {}),
            **({"mixer_kind": mixer_of[row]} if row in mixer_of else {}),
        )
        for row, (key, shape, role) in enumerate(rows)
    ]


def attention_groups(arch: Architecture) -> list[tuple[Attention, tuple[int, ...]]]:
    """Softmax-attention layers grouped by the tensors they hold (head count and width, a value
    projection or not, keys and values of their own or shared): one group unless those differ."""
    groups: dict[tuple, tuple[Attention, list[int]]] = {}
    for layer in arch.layers:
        m = layer.mixer
        if m is not None and m.kind == "attention":
            key = (m.num_kv_heads, m.head_dim, m.k_eq_v, m.kv_shared_from is not None, m.num_heads, m.sinks)
            groups.setdefault(key, (m, []))[1].append(layer.index)
    return [(mixer, tuple(indices)) for mixer, indices in groups.values()]


def layer_extras(arch: Architecture, p: str, hidden: int, linear: Callable, norm_rows: Callable, rows: list,
                 extra: dict[str, dict]) -> None:
    """Tensors of the per-layer additions: experts beside the MLP, per-layer inputs, a stored layer scalar,
    AltUp (with the backbone's stream projections) and LAuReL."""
    layer, b = arch.layers[0], f"{arch.names.backbone}."
    moe = layer.experts_beside
    if moe is not None:
        mn = moe.names
        for name in ("post_feedforward_layernorm_1", "pre_feedforward_layernorm_2", "post_feedforward_layernorm_2"):
            norm_rows(p + name, hidden, layer.norm)
        r = f"{p}{mn.router}."
        rows.append((f"{r}{mn.router_inner}.weight", (moe.num_experts, hidden), "linear"))
        rows.append((f"{r}scale", (hidden,), "bias"))  # vectors, not norm weights
        rows.append((f"{r}per_expert_scale", (moe.num_experts,), "bias"))
        x = f"{p}{mn.experts}."
        for name, shape in ((mn.fused_gate_up, (moe.num_experts, 2 * moe.intermediate_size, hidden)),
                            (mn.fused_down, (moe.num_experts, hidden, moe.intermediate_size))):
            rows.append((f"{x}{name}", shape, "linear"))
            extra[f"{x}{name}"] = {"routed": True}
    ple = arch.per_layer_input
    if ple is not None:
        packed = arch.num_layers * ple.width
        rows.append((f"{b}embed_tokens_per_layer.weight", (ple.vocab_size, packed), "embedding"))
        linear(f"{b}per_layer_model_projection", packed, hidden, False)
        norm_rows(f"{b}per_layer_projection_norm", ple.width, ple.norm)
        linear(f"{p}per_layer_input_gate", ple.width, hidden, False)
        linear(f"{p}per_layer_projection", hidden, ple.width, False)
        norm_rows(f"{p}post_per_layer_input_norm", hidden, ple.norm)
    if layer.layer_scalar:
        rows.append((f"{p}layer_scalar", (1,), "buffer"))
    if arch.altup is not None:  # AltUp: the streams' projections in and out, each layer's router and coefficients
        streams, a = arch.altup.num_inputs, f"{p}altup."
        for name in ("altup_projections", "altup_unembed_projections"):
            for s in range(streams - 1):
                linear(f"{b}{name}.{s}", hidden, hidden, False)
        rows.append((f"{a}correct_output_scale", (hidden,), "bias"))  # a vector, not a norm weight
        linear(f"{a}correction_coefs", streams, streams, False)
        linear(f"{a}prediction_coefs", streams * streams, streams, False)
        linear(f"{a}modality_router", streams, hidden, False)
        norm_rows(f"{a}router_norm", hidden, arch.altup.router_norm)
    if layer.laurel is not None:
        linear(f"{p}laurel.linear_left", layer.laurel.rank, hidden, False)
        linear(f"{p}laurel.linear_right", hidden, layer.laurel.rank, False)
        norm_rows(f"{p}laurel.post_laurel_norm", hidden, layer.laurel.norm)


def attention_rows(attn, a: str, hidden: int, n: Names, linear: Callable[[str, int, int, bool], None],
                   norm_rows: Callable, rows: list) -> dict[str, dict]:
    """Tensors of one softmax-attention block under prefix ``a``; returns extra WeightEntry fields by key."""
    extra: dict[str, dict] = {}
    q_out, kv_out = attn.num_heads * attn.head_dim, attn.num_kv_heads * attn.head_dim
    q_rows = 2 * q_out if attn.output_gate else q_out  # [q_h; gate_h] per head
    v_out, o_in = (attn.num_kv_heads * attn.v_head_dim, attn.num_heads * attn.v_head_dim) if attn.v_head_dim else (kv_out, q_out)
    own_kv = attn.kv_shared_from is None  # a layer reading another's keys and values has no k/v tensors
    if attn.qkv == "separate":
        linear(a + n.q, q_rows, hidden, attn.q_bias)
        if own_kv:
            linear(a + n.k, kv_out, hidden, attn.k_bias)
        if own_kv and not attn.k_eq_v:
            linear(a + n.v, v_out, hidden, attn.v_bias)
    else:
        linear(a + n.qkv, q_out + 2 * kv_out, hidden, attn.q_bias)
    linear(a + n.o, hidden, o_in, attn.o_bias)
    if attn.head_gate:
        linear(a + n.head_gate, attn.num_heads, hidden, False)
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
        if own_kv:
            norm_rows(a + n.k_norm, kv_dim, attn.qk_norm_spec)
    return extra


def block_norms(layer: Layer, n: Names) -> list[str]:
    """Names of a decoder block's norms, in the order the block applies them."""
    if layer.mixer is None or layer.ffn is None:  # one block: x + block(norm(x))
        return [n.input_norm]
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
    moe = next((layer.ffn for layer in arch.layers if isinstance(layer.ffn, Moe)), None) or arch.layers[0].experts_beside
    return sum(
        entry_size(entry, arch) * moe.top_k // moe.num_experts if entry.routed and moe else entry_size(entry, arch)
        for entry in weight_map(arch) if entry.role != "buffer"
    )
