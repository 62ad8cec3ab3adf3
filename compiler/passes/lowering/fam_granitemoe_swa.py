"""Granite-MoE with a sliding window (``granitemoe_swa``): Granite (sliding window) attention (learned sink
per head, NoPE where ``layer_rope_theta`` is 0, muP multipliers) over Granite-MoE's experts: the router
keeps the top-k logits and softmaxes over those k; the experts are stored fused as transformers 5 holds
them (``experts.gate_up_proj`` / ``experts.down_proj``: the checkpoint is saved unconverted).

Reads exactly the keys transformers 5.24's GraniteMoeSWAConfig and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe, MoeNames
from ...basics.errors import ConfigError
from .fam_moe import TRAINING_ONLY, _activation
from .fam_granitemoeshared import with_layer_shared_mlp
from .fam_norm_variants import _replica_granite_swa, lower_granite_swa
from .reader import ConfigReader
from .registry import family


# GraniteMoeSWAConfig's defaults where GraniteSWAConfig's differ (null key/value heads: as many as heads).
GRANITEMOE_SWA_DEFAULTS = {"tie_word_embeddings": False, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
                           "num_key_value_heads": None}


def _replica_granitemoe_swa(tiny: dict[str, Any], arch: Architecture) -> None:
    _replica_granite_swa(tiny, arch)
    tiny.update(num_local_experts=8, num_experts_per_tok=4)
    if tiny.get("shared_intermediate_size"):
        tiny["shared_intermediate_size"] = 48


@family("granitemoe_swa", title="Granite-MoE (sliding window)", replica=_replica_granitemoe_swa)
def lower_granitemoe_swa(r: ConfigReader, model_type: str) -> Architecture:
    experts, top_k = r.int("num_local_experts", 8), r.int("num_experts_per_tok", 2)
    if top_k > experts:
        raise ConfigError(f"{r.where}: 'num_experts_per_tok' ({top_k}) exceeds 'num_local_experts' ({experts})")
    shared = r.int("shared_intermediate_size", 0, minimum=0)
    activation = _activation(r)
    width = r.int("intermediate_size", 11008)
    r.raw = {**GRANITEMOE_SWA_DEFAULTS, **r.raw}
    for key in TRAINING_ONLY:  # the load-balancing loss only
        r.any(key)
    arch = lower_granite_swa(r, model_type)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=width, activation=activation, router="topk_softmax",
              routing_dtype="input", storage="fused_out_in",
              names=MoeNames(router="router", fused_block="block_sparse_moe", fused_router="router"))
    layers = tuple(layer.model_copy(update={"ffn": moe}) for layer in arch.layers)
    arch = arch.model_copy(update={"layers": layers, "names": arch.names.model_copy(update={"mlp": "block_sparse_moe"})})
    return with_layer_shared_mlp(arch, shared)
