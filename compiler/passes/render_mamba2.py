"""The Mamba-2 mixer kind's pieces for every pass: its checkpoint tensors, its cache size, the Config
fields and template context of templates/model/mamba2.py.j2, the replica's parameter scales, and the
words describe and the card use. compiler/passes/mixers/mamba2.py registers them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...schemas.arch import Architecture, Mamba2, Norm
from .literals import field, identifier

LETTER = "M"  # the pattern letter of a Mamba-2 layer (Nemotron-H's own)
# Replica parameters drawn at the scale of trained ones rather than N(0, 0.05): A = exp(A_log) spread over
# about [0.2, 4.5], dt = softplus(dt_bias + ...) around 0.3 (a state that decays within a few chunks), the skip
# D around 1, the short convolution's taps and bias.
SCALES = {"a_log": (0.5, 0.75), "dt_bias": (-1.0, 1.0), "d": (1.0, 0.5), "conv": (0.0, 0.3), "conv_bias": (0.0, 0.1)}


def mamba2_rows(m: Mamba2, a: str, hidden: int, linear: Callable[[str, int, int, bool], None],
                norm_rows: Callable[[str, int, Norm], None], rows: list) -> None:
    """Tensors of one Mamba-2 block under prefix ``a`` (``{backbone}.layers.{i}.{mamba}.``)."""
    mn = m.names
    linear(a + mn.in_proj, m.projection_size, hidden, m.proj_bias)
    rows.append((f"{a}{mn.conv}.weight", (m.conv_dim, 1, m.conv_kernel), "linear"))
    if m.conv_bias:
        rows.append((f"{a}{mn.conv}.bias", (m.conv_dim,), "bias"))
    rows.append((a + mn.dt_bias, (m.num_heads,), "bias"))
    rows.append((a + mn.a_log, (m.num_heads,), "bias"))
    rows.append((a + mn.d, (m.num_heads,), "bias"))
    if m.gate != "gate_only":
        norm_rows(a + mn.norm, m.intermediate_size, m.norm)
    linear(a + mn.out, hidden, m.intermediate_size, m.has_out_bias)


def mamba2_state_bytes(m: Mamba2, conv_bytes: int = 2, state_bytes: int = 4) -> int:
    """Bytes of one Mamba-2 layer's cache per sequence, whatever the text length: the convolution window
    (conv_kernel - 1 inputs of conv_dim channels, in the model dtype, bf16 by default) and one float32
    head_dim x state_size matrix per head."""
    return (m.conv_kernel - 1) * m.conv_dim * conv_bytes + m.num_heads * m.head_dim * m.state_size * state_bytes


def mamba2_config_fields(m: Mamba2) -> list[dict[str, Any]]:
    """The Config fields the Mamba2 class reads."""
    multipliers = []
    if m.in_multipliers is not None:
        made = field("mamba_in_multipliers", "tuple[float, ...]", m.in_multipliers[0], "in_proj's parts z, x, B, C, dt "
                     "are multiplied by these")
        made.update(literal="(" + ", ".join(repr(float(v)) for v in m.in_multipliers) + ")", value=m.in_multipliers)
        multipliers.append(made)
    return [
        field("mamba_num_heads", "int", m.num_heads, "Mamba-2 heads"),
        field("mamba_head_dim", "int", m.head_dim),
        field("ssm_state_size", "int", m.state_size, "columns of each head's state (channels of B and C)"),
        field("mamba_n_groups", "int", m.n_groups, "groups of heads sharing B and C (and of the gated norm)"),
        field("mamba_conv_kernel", "int", m.conv_kernel, "taps of the causal convolution"),
        field("mamba_chunk_size", "int", m.chunk_size, "positions per chunk of the chunked scan"),
        field("time_step_min", "float", m.time_step_min, "dt is clamped to at least this"),
        field("time_step_max", "float | None", m.time_step_max, "dt is clamped to at most this (None: no bound)"),
        *([field("mamba_norm_eps", "float", m.norm.eps, "eps of the gated RMSNorm")] if m.gate != "gate_only" else []),
        *multipliers,
    ]


def mamba2_context(m: Mamba2) -> dict[str, Any]:
    """What mamba2.py.j2 prints. Structural only: the sizes live in Config."""
    return {"mn": {key: identifier(value) for key, value in m.names.model_dump().items()},
            "conv_bias": repr(m.conv_bias), "proj_bias": repr(m.proj_bias), "letter_literal": repr(LETTER),
            "out_bias": repr(m.has_out_bias), "gate": m.gate, "in_multipliers": m.in_multipliers is not None}


def mamba2_parity_scales(m: Mamba2, block: str, norm_spread: float) -> dict[str, tuple[float, float]]:
    """Parameter-name suffix -> (mean, std) for the replica's randomisation of a Mamba-2 block."""
    mn = m.names
    scales = {
        f"{block}.{mn.a_log}": SCALES["a_log"],
        f"{block}.{mn.dt_bias}": SCALES["dt_bias"],
        f"{block}.{mn.d}": SCALES["d"],
        f"{block}.{mn.conv}.weight": SCALES["conv"],
        **({f"{block}.{mn.norm}.weight": (1.0, norm_spread)} if m.gate != "gate_only" else {}),
    }
    if m.conv_bias:
        scales[f"{block}.{mn.conv}.bias"] = SCALES["conv_bias"]
    return scales


def mamba2_of(arch: Architecture) -> Mamba2 | None:
    """The first Mamba-2 mixer, a layer's own or one beside its attention (Layer.parallel_mixer)."""
    return next((mixer for layer in arch.layers for mixer in (layer.mixer, layer.parallel_mixer)
                 if isinstance(mixer, Mamba2)), None)


def mamba2_features(arch: Architecture) -> list[str]:
    """Sentences for a model's Mamba-2 layers (none without them)."""
    m = mamba2_of(arch)
    if m is None:
        return []
    gate = {"gate_then_norm": "y * SiLU(z) RMS-normed per group", "norm_then_gate": "y RMS-normed per group, times SiLU(z)",
            "gate_only": "y * SiLU(z) (no norm)"}[m.gate]
    parts = ("" if m.in_multipliers is None else " The in-projection's parts z, x, B, C, dt are multiplied by "
             + ", ".join(f"{v:g}" for v in m.in_multipliers) + ".")
    limit = f"[{m.time_step_min:g}, {'inf' if m.time_step_max is None else f'{m.time_step_max:g}'}]"
    return [
        f"Mamba-2: {m.num_heads} heads of {m.head_dim}, state size {m.state_size}, B and C shared by {m.n_groups} "
        f"group(s) of heads; in_proj yields [z; x; B; C; dt], [x; B; C] through a causal depthwise convolution "
        f"(kernel {m.conv_kernel}{', with bias' if m.conv_bias else ''}) and SiLU; dt = softplus(dt + dt_bias) clamped "
        f"to {limit}, A = -exp(A_log); H_t = exp(dt A) H_(t-1) + dt x_t B_t^T, y_t = H_t C_t + D x_t, in chunks of "
        f"{m.chunk_size} for a prompt and token by token when decoding; {gate}.{parts}",
    ]


def mamba2_suspects(m: Mamba2, module: str) -> str:
    return (f"{module} in_proj split [z; x; B; C; dt], causal conv1d (kernel {m.conv_kernel}) + SiLU, "
            f"dt = softplus(dt + dt_bias) clamp, A = -exp(A_log), B/C groups ({m.n_groups}), the scan (chunks of "
            f"{m.chunk_size}), D skip, " + {"gate_then_norm": "gated grouped RMSNorm with z", "norm_then_gate":
            "grouped RMSNorm then the SiLU(z) gate", "gate_only": "the SiLU(z) gate (no norm)"}[m.gate]
            + (", in_proj part multipliers" if m.in_multipliers else ""))


def mamba2_diagram(arch: Architecture, m: Mamba2) -> tuple[str, list[str]]:
    return "Mamba-2 (state space)", [
        f"{m.num_heads} heads x {m.head_dim}, state {m.state_size}",
        f"B, C in {m.n_groups} group(s)",
        f"causal conv, kernel {m.conv_kernel} · SiLU",
        "dt = softplus(dt + bias); A = -exp(A_log)",
        f"chunks of {m.chunk_size}; state per head",
        "D skip · " + {"gate_then_norm": "gated RMSNorm", "norm_then_gate": "RMSNorm, then gate",
                       "gate_only": "SiLU(z) gate"}[m.gate] + " · no positions",
    ]
