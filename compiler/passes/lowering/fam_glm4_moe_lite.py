"""GLM-4.7-Flash (``glm4_moe_lite``): DeepSeek-V3's block under another config class: multi-head latent
attention (low-rank queries, interleaved RoPE channels) and GLM-4-MoE's experts (float32 sigmoid router
with a correction bias that only chooses, renormalised and scaled weights, shared experts) on the layers
``mlp_layer_types`` marks sparse (by default every layer but the first).

Reads exactly the keys transformers 5.24's Glm4MoeLiteConfig and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Mlp
from ...basics.errors import ConfigError
from .fam_deepseek import DEEPSEEK_IGNORED, _assemble, _latent_attention, _replica_moe, mtp_layers, sigmoid_experts
from .fam_glm_minimax import REPLICA_TOP_K
from .fam_moe import TRAINING_ONLY, _activation
from .families import read_common
from .reader import ConfigReader
from .registry import family

# Glm4MoeLiteConfig's defaults where DeepSeek-V3's differ.
GLM4_MOE_LITE_DEFAULTS = {"q_lora_rank": 768, "qk_nope_head_dim": 192, "v_head_dim": 256, "rms_norm_eps": 1e-5}


def _replica_glm4_moe_lite(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers (dense, then routed twice), 8 experts in one group, top 6 (as GLM-4-MoE's replica: fewer
    leave experts without tokens); narrow latents."""
    _replica_moe(tiny, arch)
    tiny["num_experts_per_tok"] = REPLICA_TOP_K
    tiny["mlp_layer_types"] = ["dense", "sparse", "sparse"]


@family("glm4_moe_lite", title="GLM-4.7-Flash (GLM-4-MoE-Lite)", replica=_replica_glm4_moe_lite)
def lower_glm4_moe_lite(r: ConfigReader, model_type: str) -> Architecture:
    r.raw = {**GLM4_MOE_LITE_DEFAULTS, **r.raw}
    rope_dim = r.int("qk_rope_head_dim", 64)  # the class maps head_dim to it (never hidden / heads)
    c = read_common(r, kv_default=20, head_dim_default=rope_dim, max_pos=202752)
    mla, ropes, _ = _latent_attention(r, c, q_default=768, deinterleave=r.bool("rope_interleave", True))
    activation = _activation(r)
    moe = sigmoid_experts(r, activation, experts=64, groups=1, topk_groups=1, width=1536, scaling=1.8)
    kinds = r.any("mlp_layer_types", None)
    kinds = ["dense"] + ["sparse"] * (c.num_layers - 1) if kinds is None else kinds
    if not isinstance(kinds, list) or len(kinds) != c.num_layers or not set(kinds) <= {"dense", "sparse"}:
        raise ConfigError(f"{r.where}: key 'mlp_layer_types' must list 'dense' or 'sparse' for each of the "
                          f"{c.num_layers} layers")
    mtp = mtp_layers(r)
    arch = _assemble(r, c, model_type, mla, ropes, moe, 0, TRAINING_ONLY | DEEPSEEK_IGNORED)
    mlp = Mlp(gated=True, activation=activation, intermediate_size=c.intermediate_size)
    layers = tuple(layer if kind == "sparse" else layer.model_copy(update={"ffn": mlp})
                   for layer, kind in zip(arch.layers, kinds))
    return arch.model_copy(update={"layers": layers, "extra_checkpoint_layers": mtp})
