"""Gated DeltaNet (Qwen3-Next, Qwen3.5, Qwen3.6): linear attention by the gated delta rule.

Its IR is ``schemas/linear.py``, its code ``templates/model/gated_deltanet.py.j2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ....schemas.arch import Architecture, GatedDeltaNet, Norm
from ...basics.errors import UnsupportedError
from . import MixerKind, register
from ..literals import field, identifier


def rows(gdn: GatedDeltaNet, a: str, hidden: int, linear: Callable[[str, int, int, bool], None],
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


def state_bytes(gdn: GatedDeltaNet, conv_bytes: int = 2, state_bytes: int = 4) -> int:
    """Bytes of one Gated DeltaNet layer's cache per sequence, whatever the text length: the convolution
    window (conv_kernel - 1 inputs of conv_dim channels, in the model dtype, bf16 by default) and one float32
    k_head_dim x v_head_dim matrix per value head."""
    return (gdn.conv_kernel - 1) * gdn.conv_dim * conv_bytes + gdn.num_v_heads * gdn.k_head_dim * gdn.v_head_dim * state_bytes


def config_fields(gdn: GatedDeltaNet) -> list[dict[str, Any]]:
    """The Config fields the Gated DeltaNet code reads."""
    return [
        field("linear_num_key_heads", "int", gdn.num_k_heads, "Gated DeltaNet query/key heads"),
        field("linear_num_value_heads", "int", gdn.num_v_heads, "Gated DeltaNet value heads"),
        field("linear_key_head_dim", "int", gdn.k_head_dim),
        field("linear_value_head_dim", "int", gdn.v_head_dim),
        field("linear_conv_kernel_dim", "int", gdn.conv_kernel, "taps of the causal convolution"),
        field("linear_chunk_size", "int", gdn.chunk_size, "positions per chunk of the chunked delta rule"),
    ]


def context(gdn: GatedDeltaNet) -> dict[str, Any]:
    """What gated_deltanet.py.j2 prints. Structural: sizes live in Config."""
    return {"grouped": gdn.projection == "grouped_qkvz",
            "gn": {key: identifier(value) for key, value in gdn.names.model_dump().items()}}


# Replica parameters drawn at the scale of trained ones rather than N(0, 0.05): the decay rate's log
# (transformers draws A in [0.01, 16]), the decay bias, the short convolution's taps.
SCALES = {"a_log": (0.5, 1.0), "dt_bias": (0.0, 1.0), "conv": (0.0, 0.3)}


def parity_scales(gdn: GatedDeltaNet, block: str, norm_spread: float) -> dict[str, tuple[float, float]]:
    gn = gdn.names
    return {
        f"{block}.{gn.a_log}": SCALES["a_log"],
        f"{block}.{gn.dt_bias}": SCALES["dt_bias"],
        f"{block}.{gn.conv}.weight": SCALES["conv"],
        f"{block}.{gn.norm}.weight": (1.0 - gdn.norm.weight_offset, norm_spread),
    }


def features(arch: Architecture, gdn: GatedDeltaNet) -> list[str]:
    group = gdn.num_v_heads // gdn.num_k_heads
    out = [
        f"Gated DeltaNet: {gdn.num_k_heads} query/key heads of {gdn.k_head_dim} and {gdn.num_v_heads} value heads of "
        f"{gdn.v_head_dim}" + (f" (each query/key head serves {group} value heads)" if group > 1 else "")
        + f"; q, k, v through a causal depthwise convolution (kernel {gdn.conv_kernel}) and SiLU, q and k "
        "L2-normalised; per value head a decay g = -exp(A_log) softplus(a + dt_bias) and a write strength "
        "beta = sigmoid(b); the delta rule in chunks of "
        f"{gdn.chunk_size} for a prompt and token by token when decoding; output RMS-normed per head, times SiLU(z)."]
    if gdn.projection == "grouped_qkvz":
        out.append("Gated DeltaNet in-projections stored fused and grouped by key head: in_proj_qkvz holds "
                   "[q_h; k_h; v; z] of each key head h and its value heads, in_proj_ba [b; a] likewise.")
    return out


def suspects(gdn: GatedDeltaNet, module: str) -> str:
    return (f"{module} in-projections, causal conv1d (kernel {gdn.conv_kernel}) + SiLU, L2-normed q/k, "
            f"decay g (A_log, dt_bias), beta, the delta rule (chunks of {gdn.chunk_size}), gated norm with z")


def diagram(arch: Architecture, gdn: GatedDeltaNet) -> tuple[str, list[str]]:
    from ...insight.diagram_parts import heads_line  # the diagram imports this package

    return "Gated DeltaNet (linear attention)", [
        heads_line("q, k: ", gdn.num_k_heads, gdn.k_head_dim),
        heads_line("v: ", gdn.num_v_heads, gdn.v_head_dim),
        f"causal conv, kernel {gdn.conv_kernel} · SiLU",
        "delta rule, decay per head",
        f"chunks of {gdn.chunk_size}; state per head",
        "gated RMSNorm · no positions",
    ]


def validate(arch: Architecture, gdn: GatedDeltaNet) -> None:
    if gdn.norm.kind != "rmsnorm" or gdn.norm.weight_offset or gdn.norm.bias or gdn.norm.weight_in_compute_dtype:
        raise UnsupportedError("the gated norm of a Gated DeltaNet is implemented as a plain RMSNorm (weight, no offset) only")


def linear_of(arch: Architecture) -> GatedDeltaNet | None:
    """The model's Gated DeltaNet mixer, if any layer has one (validate: one per model)."""
    return next((layer.mixer for layer in arch.layers if isinstance(layer.mixer, GatedDeltaNet)), None)


KIND = register(MixerKind(
    kind="gated_deltanet", letter="L", class_name="GatedDeltaNet", attr="linear_attn",
    template="model/gated_deltanet.py.j2",
    cache_template="model/gated_deltanet_cache.py.j2", words="linear attention (Gated DeltaNet)",
    short_words="linear attention", title="Gated DeltaNet", cache_word="recurrent state",
    rows=rows, state_bytes=state_bytes, config_fields=config_fields, context=context,
    parity_scales=parity_scales, features=features, suspects=suspects, diagram=diagram, validate=validate,
))


def tp_entries(gdn: GatedDeltaNet, a: str) -> dict[str, tuple[str, tuple[str, ...]]] | None:
    """Tensor-parallel plan of a Gated DeltaNet block at layer path ``a`` (compiler/passes/parallel_plan.py's
    styles), split over its heads: "lk" key heads (q and k), "lv" value heads; every rank keeps whole
    key heads with the value heads they serve. None (the block is replicated) for the grouped
    in_proj_qkvz layout, whose rows interleave the heads' parts."""
    if gdn.projection != "separate":
        return None
    gn = gdn.names
    conv = gn.conv
    return {
        # the module's head counts and widths, and its depthwise convolution's channels, cut to the rank's
        a: ("split", ("lk=k_heads*k_dim", "lv=v_heads*v_dim", "k_heads", "v_heads", "key_dim", "value_dim",
                      "conv_dim", f"{conv}.groups", f"{conv}.in_channels", f"{conv}.out_channels")),
        f"{a}.{gn.qkv}": ("colwise", ("lk", "lk", "lv")),  # [q; k; v]
        f"{a}.{gn.z}": ("colwise", ("lv",)),
        f"{a}.{gn.b}": ("colwise", ("lv",)),
        f"{a}.{gn.a}": ("colwise", ("lv",)),
        f"{a}.{conv}.weight": ("heads", ("lk", "lk", "lv")),  # the conv's channels are [q; k; v]'s
        f"{a}.{gn.dt_bias}": ("heads", ("lv",)),
        f"{a}.{gn.a_log}": ("heads", ("lv",)),
        f"{a}.{gn.out}": ("rowwise", ("lv",)),
    }  # the per-head gated norm's weight (v_head_dim) is shared by the heads: replicated


def tp_counts(gdn: GatedDeltaNet) -> dict[str, int]:
    """What the degree must divide."""
    return {"key heads": gdn.num_k_heads, "value heads": gdn.num_v_heads}
