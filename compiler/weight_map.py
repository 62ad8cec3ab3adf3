"""Pass 4, weight map: every tensor of the on-disk checkpoint and the parameter it fills.

The map is data (written into the generated file as ``WEIGHT_MAP``) and also drives the
parity harness (which tensors are norms and what their neutral value is) and shape checks.
``{i}`` in a key stands for the layer index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..schemas.arch import Architecture

Role = Literal["embedding", "linear", "bias", "norm"]


@dataclass(frozen=True)
class WeightEntry:
    checkpoint: str
    param: str
    shape: tuple[int, ...]
    role: Role
    neutral: float | None = None  # norms: the stored value at which the norm scales by exactly 1

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.checkpoint


def _linear(prefix: str, name: str, out_dim: int, in_dim: int, bias: bool) -> list[tuple[str, tuple[int, ...], Role]]:
    rows = [(f"{prefix}{name}.weight", (out_dim, in_dim), "linear")]
    if bias:
        rows.append((f"{prefix}{name}.bias", (out_dim,), "bias"))
    return rows


def weight_map(arch: Architecture) -> list[WeightEntry]:
    """The checkpoint layout of ``arch`` (pass 4 of the pipeline)."""
    hidden = arch.hidden_size
    layer = arch.layers[0]
    attn, ffn, norm = layer.mixer, layer.ffn, layer.norm
    neutral = 1.0 - norm.weight_offset
    rows: list[tuple[str, tuple[int, ...], Role]] = [("model.embed_tokens.weight", (arch.embedding.vocab_size, hidden), "embedding")]
    p = "model.layers.{i}."
    norms = ["input_layernorm", "post_attention_layernorm"]
    if layer.block == "sandwich":
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    rows += [(f"{p}{n}.weight", (hidden,), "norm") for n in norms]
    q_out, kv_out = attn.num_heads * attn.head_dim, attn.num_kv_heads * attn.head_dim
    rows += _linear(p + "self_attn.", "q_proj", q_out, hidden, attn.q_bias)
    rows += _linear(p + "self_attn.", "k_proj", kv_out, hidden, attn.k_bias)
    rows += _linear(p + "self_attn.", "v_proj", kv_out, hidden, attn.v_bias)
    rows += _linear(p + "self_attn.", "o_proj", hidden, q_out, attn.o_bias)
    if attn.qk_norm == "per_head":
        rows += [(f"{p}self_attn.{n}.weight", (attn.head_dim,), "norm") for n in ("q_norm", "k_norm")]
    if ffn.gated:
        rows += _linear(p + "mlp.", "gate_proj", ffn.intermediate_size, hidden, ffn.bias)
    rows += _linear(p + "mlp.", "up_proj", ffn.intermediate_size, hidden, ffn.bias)
    rows += _linear(p + "mlp.", "down_proj", hidden, ffn.intermediate_size, ffn.bias)
    rows.append(("model.norm.weight", (hidden,), "norm"))
    if not arch.head.tied:
        rows.append(("lm_head.weight", (arch.embedding.vocab_size, hidden), "linear"))
    return [
        WeightEntry(
            checkpoint=arch.checkpoint_prefix + key,
            param=key,
            shape=shape,
            role=role,
            neutral=neutral if role == "norm" else None,
        )
        for key, shape, role in rows
    ]


def parameter_count(arch: Architecture) -> int:
    """Number of parameters of the full-size model (tied head counted once)."""
    total = 0
    for entry in weight_map(arch):
        size = 1
        for dim in entry.shape:
            size *= dim
        total += size * (arch.num_layers if entry.per_layer else 1)
    return total
