"""ERNIE 4.5 MoE (Baidu): the dense ERNIE 4.5 block (interleaved RoPE, tied head) whose layers from
``moe_layer_start_index`` to ``moe_layer_end_index`` (every ``moe_layer_interval``-th) are routed experts:
a float32 softmax router whose per-expert correction bias (a (1, experts) parameter, ``moe_statics``)
is added to the probabilities only to choose the experts, the kept probabilities renormalised, plus
shared experts.

Reads exactly the keys transformers 5.24's Ernie4_5_MoeConfig and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe, MoeNames
from ...basics.errors import ConfigError, UnsupportedError
from .fam_moe import _activation
from .llama_like import common
from .moe_like import moe_like
from .reader import ConfigReader
from .registry import derived_head_dim, family


def _replica_ernie4_5_moe(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers (dense, then routed twice), 8 experts, top 6 (measured: at top 4 one of the 8 stays
    unused in a layer at batch 2 x 32 tokens), two shared experts."""
    derived_head_dim(tiny, arch)
    tiny.update(num_hidden_layers=3, moe_num_experts=8, moe_k=6, moe_intermediate_size=32, moe_layer_start_index=1,
                moe_layer_end_index=-1, moe_layer_interval=1, moe_num_shared_experts=2)


def _sparse(r: ConfigReader, layers: int) -> list[bool]:
    start = r.int("moe_layer_start_index", 1, minimum=0)
    end = r.int("moe_layer_end_index", -1, minimum=-1, nullable=True)
    end = layers - 1 if end in (-1, None) else end  # the config class turns -1 into the last layer
    interval = r.int("moe_layer_interval", 1)
    return [(i + 1) % interval == 0 and start <= i <= end for i in range(layers)]


@family("ernie4_5_moe", title="ERNIE 4.5 MoE", replica=_replica_ernie4_5_moe, pad_token_id=0)
def lower_ernie4_5_moe(r: ConfigReader, model_type: str) -> Architecture:
    c = common(r, kv=4, max_pos=131072)
    if r.bool("use_bias", False):  # the shared experts and the head would take biases too
        raise UnsupportedError(f"{r.where}: key 'use_bias' = true is not supported for model_type 'ernie4_5_moe'")
    for count, alias in (("moe_num_experts", "num_experts"), ("moe_k", "num_experts_per_tok")):
        if r.has(alias):
            raise ConfigError(f"{r.where}: give '{count}' ('{alias}' is transformers' alias of it)")
    experts, top_k = r.int("moe_num_experts", 64), r.int("moe_k", 6)
    if top_k > experts:
        raise ConfigError(f"{r.where}: 'moe_k' ({top_k}) exceeds 'moe_num_experts' ({experts})")
    norm_min = r.float("moe_norm_min", 1e-12)
    if norm_min > top_k / experts:  # the k kept probabilities sum to at least k / experts: the clamp never acts
        raise UnsupportedError(f"{r.where}: key 'moe_norm_min' ({norm_min}) above moe_k / moe_num_experts is not "
                               "supported (the renormalisation's clamp would act)")
    width, shared = r.int("moe_intermediate_size", 1536), r.int("moe_num_shared_experts", 2, minimum=0)
    activation = _activation(r)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=width, activation=activation,
              router="softmax_topk", norm_topk_prob=True, router_float32=True, score_correction_bias=True,
              routing_dtype="input", storage="per_expert", shared_expert_size=width * shared if shared else None,
              names=MoeNames(shared_expert="shared_experts", score_bias_owner="moe_statics"))
    sparse = _sparse(r, c.num_layers)
    return moe_like(r, model_type, c, moe, sparse, theta=500000.0, eps=1e-5, rope_layout="interleaved", tied=True,
                    activation=activation)
