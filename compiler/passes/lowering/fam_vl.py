"""Text decoders of Qwen2-VL and Qwen2.5-VL (``qwen2_vl_text``, ``qwen2_5_vl_text``: Qwen2's block) and
Qwen3-VL (``qwen3_vl_text``: Qwen3's block; its DeepStack visual features join only with images), with
multimodal RoPE (M-RoPE; Qwen3-VL interleaves the sections).

M-RoPE splits the rotary frequencies into sections (``mrope_section``: time, height, width) and rotates
each with its own position axis. For text alone, transformers gives every token the same position on all
three axes (``get_rope_index`` without images: arange, expanded three ways), so each frequency turns by
the token's position: plain RoPE, the same floating-point operations (tests/test_wrappers.py checks it by
parity through Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration). The compiled model
is the text-only forward; images and videos need the vision tower and are not compiled.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture
from ...basics.errors import ConfigError
from .families import lower_qwen2, lower_qwen3
from .reader import ConfigReader

MROPE_KEYS = ("mrope_section", "mrope_interleaved")


def _text_only_rope(raw: dict[str, Any], where: str) -> tuple[dict[str, Any], list[int] | None]:
    """``raw`` with the M-RoPE fields of its rope dict dropped (the legacy ``type: mrope`` read as default),
    and the sections."""
    section = None
    for key in ("rope_parameters", "rope_scaling"):
        params = raw.get(key)
        if not isinstance(params, dict) or not set(params) & {*MROPE_KEYS, "type", "rope_type"}:
            continue
        section = params.get("mrope_section")
        if section is not None and (not isinstance(section, list) or len(section) != 3 or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in section)):
            raise ConfigError(f"{where}: '{key}.mrope_section' must be three positive integers, got {section!r:.60}")
        params = {k: v for k, v in params.items() if k not in MROPE_KEYS}
        for name in ("type", "rope_type"):
            if params.get(name) == "mrope":  # transformers reads the v4 "mrope" type as default RoPE
                params[name] = "default"
        raw = {**raw, key: params}
    return raw, section


def lower_qwen2_vl_text(r: ConfigReader, model_type: str) -> Architecture:
    raw, section = _text_only_rope(r.raw, r.where)
    inner = ConfigReader(raw, r.where)
    block = lower_qwen3 if model_type == "qwen3_vl_text" else lower_qwen2
    arch = block(inner, model_type)  # reads and checks every key
    rotary = arch.layers[0].mixer.head_dim // 2
    if section is not None and sum(section) != rotary:
        raise ConfigError(f"{r.where}: 'mrope_section' {section} must add up to head_dim / 2 = {rotary}")
    return arch


def adjust_replica(tiny: dict[str, Any], arch: Architecture) -> None:
    """The M-RoPE sections scaled to the replica's head_dim / 2 (transformers splits the frequencies by them)."""
    head_dim = tiny.get("head_dim") or tiny["hidden_size"] // tiny["num_attention_heads"]
    for key in ("rope_parameters", "rope_scaling"):
        params = tiny.get(key)
        if isinstance(params, dict) and isinstance(params.get("mrope_section"), list):
            half = head_dim // 2
            first = max(1, half // 4)
            rest = half - first
            params["mrope_section"] = [first, rest - rest // 2, rest // 2]


FAMILIES_VL = {"qwen2_vl_text": lower_qwen2_vl_text, "qwen2_5_vl_text": lower_qwen2_vl_text,
               "qwen3_vl_text": lower_qwen2_vl_text}
REPLICA_VL = {"qwen2_vl_text": adjust_replica, "qwen2_5_vl_text": adjust_replica, "qwen3_vl_text": adjust_replica}
