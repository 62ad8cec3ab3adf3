"""The text decoders of GLM-4V (``glm4v_text`` in the ``glm4v`` wrapper, GLM-4.1V) and GLM-4V-MoE
(``glm4v_moe_text`` in ``glm4v_moe``, GLM-4.5V: GLM-4-MoE's block). GLM-4V: GLM-4's block
(four norms per layer, [gate; up] in one matrix, biases on q/k/v always, RoPE over interleaved channel pairs
of the first ``partial_rotary_factor`` of each head) with GLM's multimodal RoPE (M-RoPE). For text alone
transformers gives every token the same position on the three axes, so M-RoPE is plain RoPE (as for
Qwen2-VL: lowering/fam_vl.py). Images and videos need the vision tower and are not compiled.

Reads exactly the keys transformers 5.24's Glm4vTextConfig / Glm4vMoeTextConfig and models read, with the
same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture
from ...basics.errors import ConfigError
from .fam_glm_minimax import lower_glm4_moe, replica_glm4_moe
from .fam_llama_variants import GLM4_NAMES
from .fam_vl import _text_only_rope, adjust_replica
from .llama_like import common, llama_like
from .reader import ConfigReader
from .registry import derived_head_dim, family


def _replica_glm4v_text(tiny: dict[str, Any], arch: Architecture) -> None:
    derived_head_dim(tiny, arch)
    rotary = arch.rope[0].partial_rotary_factor
    adjust_replica(tiny, arch)  # sections for head_dim / 2 frequencies: rescaled to the rotated part below
    for key in ("rope_parameters", "rope_scaling"):
        params = tiny.get(key)
        if isinstance(params, dict) and isinstance(params.get("mrope_section"), list) and rotary != 1.0:
            half = int(tiny["hidden_size"] // tiny["num_attention_heads"] * rotary) // 2
            first = max(1, half // 4)
            params["mrope_section"] = [first, (half - first) - (half - first) // 2, (half - first) // 2]


@family("glm4v_text", title="GLM-4V (text)", replica=_replica_glm4v_text)
def lower_glm4v_text(r: ConfigReader, model_type: str) -> Architecture:
    raw, section = _text_only_rope(r.raw, r.where)
    # transformers' GLM-4V attention always has q/k/v biases (its config has no attention_bias to read).
    raw = {k: v for k, v in raw.items() if k != "attention_bias"}
    inner = ConfigReader(raw, r.where)
    c = common(inner, kv=2, max_pos=32768)
    arch = llama_like(inner, model_type, c, eps=1e-5, qkv_bias=True, rope_layout="interleaved", partial_rotary=True,
                      fused_gate_up=True, block="sandwich", names=GLM4_NAMES)
    rotated = int(c.head_dim * arch.rope[0].partial_rotary_factor)
    if section is not None and sum(section) != rotated // 2:
        raise ConfigError(f"{r.where}: 'mrope_section' {section} must add up to the rotated channels / 2 = {rotated // 2}")
    return arch


# Glm4vMoeTextConfig's defaults where Glm4MoeConfig's differ.
GLM4V_MOE_DEFAULTS = {"attention_bias": True, "max_position_embeddings": 65536}


def _replica_glm4v_moe_text(tiny: dict[str, Any], arch: Architecture) -> None:
    replica_glm4_moe(tiny, arch)
    _replica_glm4v_text(tiny, arch)


@family("glm4v_moe_text", title="GLM-4V-MoE (text)", replica=_replica_glm4v_moe_text)
def lower_glm4v_moe_text(r: ConfigReader, model_type: str) -> Architecture:
    """GLM-4.5V's text decoder: GLM-4-MoE's block (biases on q/k/v by default, no QK-norm, RoPE on the first
    half of each head, sigmoid-routed experts with shared experts after dense first layers) with M-RoPE."""
    raw, section = _text_only_rope(r.raw, r.where)
    arch = lower_glm4_moe(ConfigReader({**GLM4V_MOE_DEFAULTS, **raw}, r.where), model_type)
    rotated = int(arch.layers[0].mixer.head_dim * arch.rope[0].partial_rotary_factor)
    if section is not None and sum(section) != rotated // 2:
        raise ConfigError(f"{r.where}: 'mrope_section' {section} must add up to the rotated channels / 2 = {rotated // 2}")
    return arch
