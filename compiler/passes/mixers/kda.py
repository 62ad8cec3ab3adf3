"""Kimi Delta Attention (Kimi Linear): linear attention by the delta rule with a channel-wise forget gate.

Its IR is ``schemas/kda.py``, its code ``templates/model/kimi_delta.py.j2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ....schemas.arch import Architecture, KimiDelta, Norm
from ...basics.errors import UnsupportedError
from . import MixerKind, register
from ..literals import field, identifier


def rows(kd: KimiDelta, a: str, hidden: int, linear: Callable[[str, int, int, bool], None],
         norm_rows: Callable[[str, int, Norm], None], rows: list) -> None:
    """Tensors of one KDA block under prefix ``a`` (``{backbone}.layers.{i}.self_attn.``)."""
    kn, width, dim = kd.names, kd.width, kd.head_dim
    for name in (kn.q, kn.k, kn.v):
        linear(a + name, width, hidden, False)
    for name in (kn.q_conv, kn.k_conv, kn.v_conv):
        rows.append((f"{a}{name}.weight", (width, 1, kd.conv_kernel), "linear"))
    linear(a + kn.f_a, dim, hidden, False)
    linear(a + kn.f_b, width, dim, False)
    rows.append((a + kn.dt_bias, (width,), "bias"))
    rows.append((a + kn.a_log, (1, 1, kd.num_heads, 1), "bias"))
    linear(a + kn.b, kd.num_heads, hidden, False)
    linear(a + kn.g_a, dim, hidden, False)
    linear(a + kn.g_b, width, dim, False)
    norm_rows(a + kn.norm, dim, kd.norm)
    linear(a + kn.out, hidden, width, False)


def state_bytes(kd: KimiDelta, conv_bytes: int = 2, state_bytes: int = 4) -> int:
    """Bytes of one KDA layer's cache per sequence, whatever the text length: the three convolutions' windows
    (conv_kernel - 1 inputs of 3 x heads x head_dim channels, in the model dtype, bf16 by default) and one
    float32 head_dim x head_dim matrix per head."""
    return (kd.conv_kernel - 1) * kd.conv_dim * conv_bytes + kd.num_heads * kd.head_dim * kd.head_dim * state_bytes


def config_fields(kd: KimiDelta) -> list[dict[str, Any]]:
    """The Config fields the KDA code reads (its norm's eps is the model's norm_eps)."""
    return [
        field("linear_num_heads", "int", kd.num_heads, "Kimi Delta Attention heads"),
        field("linear_head_dim", "int", kd.head_dim, "channels of each head's q, k, v (and the gates' rank)"),
        field("linear_conv_kernel_dim", "int", kd.conv_kernel, "taps of the causal convolutions"),
        field("linear_chunk_size", "int", kd.chunk_size, "positions per chunk of the chunked delta rule"),
    ]


def context(kd: KimiDelta) -> dict[str, Any]:
    """What kimi_delta.py.j2 prints. Structural: sizes live in Config."""
    return {"kn": {key: identifier(value) for key, value in kd.names.model_dump().items()}, "l2_eps": repr(kd.l2_eps)}


# Replica parameters drawn at the scale of trained ones rather than N(0, 0.05): the decay rate's log
# (transformers draws A in [1, 16]), the decay bias, the short convolutions' taps. Bare suffixes: transformers
# keeps A_log and dt_bias in a forget_gate module and the three convolutions as one conv1d.
SCALES = {"a_log": (0.5, 1.0), "dt_bias": (0.0, 1.0), "conv": (0.0, 0.3)}


def parity_scales(kd: KimiDelta, block: str, norm_spread: float) -> dict[str, tuple[float, float]]:
    kn = kd.names
    return {kn.a_log: SCALES["a_log"], kn.dt_bias: SCALES["dt_bias"], "conv1d.weight": SCALES["conv"],
            f"{block}.{kn.norm}.weight": (1.0 - kd.norm.weight_offset, norm_spread)}


def features(arch: Architecture, kd: KimiDelta) -> list[str]:
    return [
        f"Kimi Delta Attention: {kd.num_heads} heads of {kd.head_dim}; q, k, v each through a causal depthwise "
        f"convolution (kernel {kd.conv_kernel}) and SiLU, q and k L2-normalised; a forget gate per key channel, "
        "g = -exp(A_log) softplus(f_b(f_a(x)) + dt_bias) (low rank), and a write strength beta = sigmoid(b) per head; "
        f"the delta rule in chunks of {kd.chunk_size} for a prompt and token by token when decoding; output "
        "RMS-normed per head, times sigmoid(g_b(g_a(x)))."]


def suspects(kd: KimiDelta, module: str) -> str:
    return (f"{module} q/k/v projections, causal conv1d x3 (kernel {kd.conv_kernel}) + SiLU, L2-normed q/k, "
            f"channel-wise forget gate (f_a, f_b, A_log, dt_bias), beta, the delta rule (chunks of {kd.chunk_size}), "
            "o_norm with the sigmoid output gate")


def diagram(arch: Architecture, kd: KimiDelta) -> tuple[str, list[str]]:
    from ...insight.diagram_parts import heads_line  # the diagram imports this package

    return "Kimi Delta Attention (linear attention)", [
        heads_line("q, k, v: ", kd.num_heads, kd.head_dim),
        f"3 causal convs, kernel {kd.conv_kernel} · SiLU",
        "delta rule, decay per channel",
        f"chunks of {kd.chunk_size}; state per head",
        "sigmoid-gated RMSNorm · no positions",
    ]


def validate(arch: Architecture, kd: KimiDelta) -> None:
    if kd.norm.kind != "rmsnorm" or kd.norm.weight_offset or kd.norm.bias or kd.norm.eps != arch.layers[0].norm.eps:
        raise UnsupportedError("the output norm of Kimi Delta Attention is implemented as an RMSNorm (weight, no "
                               "offset) with the model's norm eps only")


KIND = register(MixerKind(
    kind="kda", letter="K", class_name="KimiDeltaAttention", attr="attn",
    template="model/kimi_delta.py.j2",
    cache_template="model/kimi_delta_cache.py.j2", words="linear attention (Kimi Delta Attention)",
    short_words="Kimi Delta Attention", title="Kimi Delta Attention", cache_word="recurrent state",
    rows=rows, state_bytes=state_bytes, config_fields=config_fields, context=context,
    parity_scales=parity_scales, features=features, suspects=suspects, diagram=diagram, validate=validate,
))


def tp_entries(kd, a: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Tensor-parallel plan of a Kimi Delta Attention block at layer path ``a`` (compiler/passes/parallel_plan.py's
    styles), split over its heads ("kh", head_dim channels each): q, k, v, their convolutions, the
    forget gate's up-projection, dt_bias, A_log, b and the output gate's up-projection column-wise per
    head; the gates' low-rank down-projections and the per-head norm replicated; o_proj summed."""
    n = kd.names
    convs = (n.q_conv, n.k_conv, n.v_conv)
    entries = {a: ("split", ("kh=heads*dim", "heads", "width")
                   + tuple(f"{conv}.{attr}" for conv in convs for attr in ("groups", "in_channels", "out_channels")))}
    for name in (n.q, n.k, n.v, n.f_b, n.b, n.g_b):
        entries[f"{a}.{name}"] = ("colwise", ("kh",))
    for name in (*(f"{conv}.weight" for conv in convs), n.dt_bias, n.a_log):
        entries[f"{a}.{name}"] = ("heads", ("kh",))
    entries[f"{a}.{n.out}"] = ("rowwise", ("kh",))
    return entries


def tp_counts(kd) -> dict[str, int]:
    """What the degree must divide."""
    return {"heads": kd.num_heads}
