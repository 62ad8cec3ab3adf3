"""Mamba-2 (Mamba-2, Bamba, Nemotron-H, Granite 4.0-H): a selective state-space layer, the SSD scan.

Its IR is ``schemas/mamba2.py``, its code ``templates/model/mamba2.py.j2``; its pieces for every pass
live in ``compiler/passes/render_mamba2.py``.
"""

from __future__ import annotations

from ..render_mamba2 import (LETTER, mamba2_config_fields, mamba2_context, mamba2_diagram, mamba2_features,
                             mamba2_parity_scales, mamba2_rows, mamba2_state_bytes, mamba2_suspects)
from . import MixerKind, register

KIND = register(MixerKind(
    kind="mamba2", letter=LETTER, class_name="Mamba2", attr="mamba", template="model/mamba2.py.j2",
    cache_template="model/mamba2_cache.py.j2",
    words="Mamba-2 (state space)", short_words="state space", title="Mamba-2", cache_word="recurrent state",
    rows=mamba2_rows, state_bytes=lambda mixer, conv_bytes=2: mamba2_state_bytes(mixer, conv_bytes=conv_bytes),
    config_fields=mamba2_config_fields, context=mamba2_context, parity_scales=mamba2_parity_scales,
    features=lambda arch, mixer: mamba2_features(arch), suspects=mamba2_suspects, diagram=mamba2_diagram,
))


def tp_entries(mixer, a: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Tensor-parallel plan of a Mamba-2 block at layer path ``a`` (compiler/passes/parallel_plan.py's styles),
    split over its groups of heads: "mh" heads (head_dim channels each: z, x, y), "mg" groups (state_size
    channels each: B, C), "md" heads (one dt each). Each rank keeps whole groups with their heads."""
    n = mixer.names
    entries = {
        a: ("split", ("mh=heads*head_dim", "mg=groups*state_size", "md=heads*1", "heads", "groups", "inner",
                      "conv_dim", f"{n.conv}.groups", f"{n.conv}.in_channels", f"{n.conv}.out_channels",
                      f"{n.norm}.groups")),
        f"{a}.{n.in_proj}": ("colwise", ("mh", "mh", "mg", "mg", "md")),  # [z; x; B; C; dt]
        f"{a}.{n.conv}.weight": ("heads", ("mh", "mg", "mg")),  # the conv's channels are [x; B; C]'s
        f"{a}.{n.dt_bias}": ("heads", ("md",)),
        f"{a}.{n.a_log}": ("heads", ("md",)),
        f"{a}.{n.d}": ("heads", ("md",)),
        f"{a}.{n.norm}.weight": ("heads", ("mh",)),  # normed per group: a rank's groups are whole
        f"{a}.{n.out}": ("rowwise", ("mh",)),
    }
    if mixer.conv_bias:
        entries[f"{a}.{n.conv}.bias"] = ("heads", ("mh", "mg", "mg"))
    return entries


def tp_counts(mixer) -> dict[str, int]:
    """What the degree must divide."""
    return {"heads": mixer.num_heads, "groups of heads": mixer.n_groups}
