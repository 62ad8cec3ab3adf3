"""Cohere 2 MoE: Cohere 2's parallel block (one LayerNorm feeding attention and the feed-forward, sliding-window
layers with interleaved RoPE, global layers without RoPE, scaled logits) whose feed-forward is routed experts
on every layer: the router keeps the top-k logits and softmaxes over those k.

Reads exactly the keys transformers 5.24's Cohere2MoeConfig and model read, with the same defaults. Not yet
supported (refused, naming the key): shared experts (``num_shared_experts`` above 0, summed or averaged), the
sigmoid router (``expert_selection_fn`` sigmoid), RMSNorm (``rms_norm_eps`` set) and dense prefix layers
(``mlp_layer_types`` with dense layers).
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe
from ...basics.errors import ConfigError, UnsupportedError
from .fam_moe import REPLICA_EXPERTS, REPLICA_TOP_K, TRAINING_ONLY, _activation
from .fam_phi3_cohere import lower_cohere2, replica_cohere2
from .reader import ConfigReader
from .registry import family


def _replica_cohere2_moe(tiny: dict[str, Any], arch: Architecture) -> None:
    replica_cohere2(tiny, arch)
    tiny.update(num_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K)


def _refuse(r: ConfigReader, key: str, value: Any, what: str) -> None:
    raise UnsupportedError(f"{r.where}: key '{key}' = {value!r:.40} ({what}) is not supported yet for model_type "
                           "'cohere2_moe'")


@family("cohere2_moe", title="Cohere 2 MoE", replica=_replica_cohere2_moe, pad_token_id=0)
def lower_cohere2_moe(r: ConfigReader, model_type: str) -> Architecture:
    experts, top_k = r.int("num_experts", 8), r.int("num_experts_per_tok", 2)
    if top_k > experts:
        raise ConfigError(f"{r.where}: 'num_experts_per_tok' ({top_k}) exceeds 'num_experts' ({experts})")
    if (shared := r.int("num_shared_experts", 0, minimum=0)) != 0:
        _refuse(r, "num_shared_experts", shared, "shared experts")
    r.str("shared_expert_combination_strategy", "average", choices={"sum": "sum", "average": "average"})
    if (selection := r.str("expert_selection_fn", "softmax")) != "softmax":
        _refuse(r, "expert_selection_fn", selection, "a sigmoid router")
    r.bool("norm_topk_prob", True)  # read by the sigmoid router only
    if (eps := r.any("rms_norm_eps", None)) is not None:
        _refuse(r, "rms_norm_eps", eps, "RMSNorm instead of LayerNorm")
    kinds = r.any("mlp_layer_types", None)
    if kinds is not None and (not isinstance(kinds, list) or set(kinds) != {"sparse"}):
        _refuse(r, "mlp_layer_types", kinds, "dense layers")
    if (first := r.any("first_k_dense_replace", 0)) != 0:
        _refuse(r, "first_k_dense_replace", first, "dense layers")
    r.any("prefix_dense_sliding_window_pattern")  # dense prefix layers only
    r.any("prefix_dense_intermediate_size")
    for key in TRAINING_ONLY:
        r.any(key)
    activation = _activation(r)
    width = r.int("intermediate_size", 22528)
    arch = lower_cohere2(r, model_type)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=width, activation=activation, router="topk_softmax",
              routing_dtype="input", storage="per_expert")
    return arch.model_copy(update={"layers": tuple(layer.model_copy(update={"ffn": moe}) for layer in arch.layers)})
