"""The text decoder of Qwen3-VL-MoE (``qwen3_vl_moe_text``, compiled through the ``qwen3_vl_moe`` wrapper):
Qwen3-MoE's block (per-head QK-norm, routed experts renormalised always, dense layers from
``mlp_only_layers`` / ``decoder_sparse_step``) with Qwen3-VL's interleaved M-RoPE, which for text alone is
plain RoPE (lowering/fam_vl.py says why). The experts are fused: transformers saves them (experts, out, in),
the hub releases store them (in, out), ``experts.gate_up_proj`` (experts, hidden, 2 x width); either loads.

Reads exactly the keys transformers 5.24's Qwen3VLMoeTextConfig and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe
from ...basics.errors import ConfigError
from .fam_moe import REPLICA_EXPERT_WIDTH, REPLICA_EXPERTS, REPLICA_TOP_K, lower_qwen3_moe
from .fam_vl import _text_only_rope, adjust_replica
from .reader import ConfigReader
from .registry import family

# Qwen3VLMoeTextConfig's defaults where Qwen3MoeConfig's differ.
QWEN3_VL_MOE_DEFAULTS = {"num_experts": 60, "num_experts_per_tok": 4, "moe_intermediate_size": 1408,
                         "num_key_value_heads": 16, "max_position_embeddings": 128000, "intermediate_size": 5632,
                         "tie_word_embeddings": True}


def _replica_qwen3_vl_moe_text(tiny: dict[str, Any], arch: Architecture) -> None:
    adjust_replica(tiny, arch)
    tiny.pop("num_local_experts", None)
    tiny.update(num_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K,
                moe_intermediate_size=REPLICA_EXPERT_WIDTH, mlp_only_layers=[])


@family("qwen3_vl_moe_text", title="Qwen3-VL-MoE (text)", replica=_replica_qwen3_vl_moe_text)
def lower_qwen3_vl_moe_text(r: ConfigReader, model_type: str) -> Architecture:
    raw, section = _text_only_rope(r.raw, r.where)
    if "num_local_experts" in raw:  # the class's alias of num_experts (to_dict writes it)
        if "num_experts" in raw and raw["num_experts"] != raw["num_local_experts"]:
            raise ConfigError(f"{r.where}: 'num_local_experts' and its alias 'num_experts' differ")
        raw = {k: v for k, v in raw.items() if k != "num_local_experts"} | {"num_experts": raw["num_local_experts"]}
    if not {"rope_parameters", "rope_scaling", "rope_theta"} & set(raw):
        raw = {**raw, "rope_theta": 500000.0}  # Qwen3VLMoeTextConfig's default theta
    # transformers' router always renormalises the kept weights (the class has no norm_topk_prob to read).
    inner = ConfigReader({**QWEN3_VL_MOE_DEFAULTS, **raw, "norm_topk_prob": True}, r.where)
    arch = lower_qwen3_moe(inner, model_type)
    if section is not None and sum(section) != arch.layers[0].mixer.head_dim // 2:
        raise ConfigError(f"{r.where}: 'mrope_section' {section} must add up to head_dim / 2")
    layers = tuple(layer.model_copy(update={"ffn": layer.ffn.model_copy(update={"storage": "fused_out_in", "transposed_on_disk": True})})
                   if isinstance(layer.ffn, Moe) else layer for layer in arch.layers)
    return arch.model_copy(update={"layers": layers})
