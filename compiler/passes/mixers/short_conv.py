"""The double-gated short convolution (LFM2, LFM2-MoE): in_proj -> B, C, h; C * causalconv(B * h) -> out_proj.

Its IR is ``schemas/short_conv.py``, its code ``templates/model/short_conv.py.j2``. Its layers keep no keys
and values: the cache of one is the last kernel - 1 gated inputs of its convolution, the same size whatever
the text length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ....schemas.arch import Architecture
from ....schemas.short_conv import ShortConv
from ...basics.errors import UnsupportedError
from . import MixerKind, register
from ..literals import field, identifier

# The convolution's taps drawn at the scale of trained ones (a few taps of order one), not N(0, 0.05).
CONV_SCALE = (0.0, 0.5)


def rows(conv: ShortConv, a: str, hidden: int, linear: Callable[[str, int, int, bool], None],
         norm_rows: Callable[..., None], rows: list) -> None:
    """Tensors of one short-convolution block under prefix ``a`` (``{backbone}.layers.{i}.conv.``)."""
    sn = conv.names
    linear(a + sn.in_proj, conv.in_width, hidden, conv.bias)
    rows.append((f"{a}{sn.conv}.weight", (conv.channels, 1, conv.kernel), "linear"))
    if conv.bias:
        rows.append((f"{a}{sn.conv}.bias", (conv.channels,), "bias"))
    linear(a + sn.out_proj, hidden, conv.channels, conv.bias)


def state_bytes(conv: ShortConv, conv_bytes: int = 2) -> int:
    """Bytes of one layer's cache per sequence: kernel - 1 inputs of `channels` values in the model dtype."""
    return (conv.kernel - 1) * conv.channels * conv_bytes


def config_fields(conv: ShortConv) -> list[dict[str, Any]]:
    return [field("conv_kernel", "int", conv.kernel, "taps of the short convolution (conv_L_cache)")]


def context(conv: ShortConv) -> dict[str, Any]:
    """What short_conv.py.j2 prints. Structural: sizes live in Config."""
    return {"sn": {key: identifier(value) for key, value in conv.names.model_dump().items()},
            "bias": conv.bias, "bias_literal": repr(conv.bias)}


def parity_scales(conv: ShortConv, block: str, norm_spread: float) -> dict[str, tuple[float, float]]:
    return {f"{block}.{conv.names.conv}.weight": CONV_SCALE}


def features(arch: Architecture, conv: ShortConv) -> list[str]:
    return [f"Short convolution: in_proj gives B, C and h ({conv.channels} wide each); the gated input B * h goes "
            f"through a causal depthwise convolution of {conv.kernel} taps per channel, the output gate C multiplies "
            "the result, out_proj maps it back" + (" (biases on all three)" if conv.bias else "")
            + f"; a decoding step keeps the last {conv.kernel - 1} gated inputs per layer."]


def suspects(conv: ShortConv, module: str) -> str:
    return (f"{module} in_proj split [B; C; h], input gate B * h, causal depthwise conv (kernel {conv.kernel}), "
            "output gate C, out_proj")


def diagram(arch: Architecture, conv: ShortConv) -> tuple[str, list[str]]:
    return "short convolution", [
        "in_proj → B, C, h",
        "B · h",
        f"causal depthwise conv, {conv.kernel} taps",
        "C · conv → out_proj",
        "no positions",
    ]


def validate(arch: Architecture, conv: ShortConv) -> None:
    if conv.channels != arch.hidden_size:
        raise UnsupportedError(f"a short convolution {conv.channels} wide in a model {arch.hidden_size} wide is not "
                               "implemented (LFM2's is the hidden size)")


KIND = register(MixerKind(
    kind="short_conv", letter="V", class_name="ShortConv", attr="short_conv",
    template="model/short_conv.py.j2", cache_template="model/short_conv_cache.py.j2", words="short convolution",
    short_words="short convolution", title="ShortConv", cache_word="convolution window",
    rows=rows, state_bytes=state_bytes, config_fields=config_fields, context=context,
    parity_scales=parity_scales, features=features, suspects=suspects, diagram=diagram, validate=validate,
))


def tp_entries(conv: ShortConv, a: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Tensor-parallel plan of a short-convolution block at layer path ``a`` (compiler/passes/parallel_plan.py's
    styles), split over its channels: each rank its slice of B, C and h (in_proj's three blocks), the
    same channels of the depthwise convolution, out_proj row-wise (summed)."""
    n = conv.names
    entries = {
        a: ("split", ("hidden", f"{n.conv}.groups", f"{n.conv}.in_channels", f"{n.conv}.out_channels")),
        f"{a}.{n.in_proj}": ("colwise", ("rows", "rows", "rows")),  # [B; C; h]
        f"{a}.{n.conv}.weight": ("heads", ("rows",)),
        f"{a}.{n.out_proj}": ("rowwise", ("rows",)),
    }
    if conv.bias:
        entries[f"{a}.{n.conv}.bias"] = ("heads", ("rows",))
    return entries


def tp_counts(conv: ShortConv) -> dict[str, int]:
    """What the degree must divide."""
    return {"channels": conv.channels}
