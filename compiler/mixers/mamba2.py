"""Mamba-2 (Mamba-2, Bamba, Nemotron-H, Granite 4.0-H): a selective state-space layer, the SSD scan.

Its IR is ``schemas/mamba2.py``, its code ``templates/model/mamba2.py.j2``; its pieces for every pass
live in ``compiler/render_mamba2.py``.
"""

from __future__ import annotations

from ..render_mamba2 import (LETTER, mamba2_config_fields, mamba2_context, mamba2_diagram, mamba2_features,
                             mamba2_parity_scales, mamba2_rows, mamba2_state_bytes, mamba2_suspects)
from . import MixerKind, register

KIND = register(MixerKind(
    kind="mamba2", letter=LETTER, class_name="Mamba2", attr="mamba", template="model/mamba2.py.j2",
    words="Mamba-2 (state space)", short_words="state space", title="Mamba-2", cache_word="recurrent state",
    rows=mamba2_rows, state_bytes=lambda mixer, conv_bytes=2: mamba2_state_bytes(mixer, conv_bytes=conv_bytes),
    config_fields=mamba2_config_fields, context=mamba2_context, parity_scales=mamba2_parity_scales,
    features=lambda arch, mixer: mamba2_features(arch), suspects=mamba2_suspects, diagram=mamba2_diagram,
))
