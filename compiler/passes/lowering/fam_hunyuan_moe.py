"""HunYuan MoE (Tencent Hunyuan-A13B): the dense HunYuan block (per-head QK-norm after RoPE, the
"dynamic NTK alpha" RoPE) whose feed-forward is Mixtral-style experts on every layer: a float32 softmax
router (``gate.wg``) keeping the top ``moe_topk``, renormalised, plus a shared MLP (``shared_mlp``) of the
dense width that every token uses.

Reads exactly the keys transformers 5.24's HunYuanMoEV1Config and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe, MoeNames
from ...basics.errors import ConfigError, UnsupportedError
from .fam_hunyuan import HUNYUAN_FIXED, HUNYUAN_NAMES, ntk_alpha_as_theta
from .fam_moe import _activation
from .llama_like import common
from .moe_like import moe_like
from .reader import ConfigReader
from .registry import explicit_head_dim, family


def _replica_hunyuan_v1_moe(tiny: dict[str, Any], arch: Architecture) -> None:
    explicit_head_dim(tiny, arch)
    tiny.update(num_experts=8, moe_topk=4)
    for key, value in (("moe_topk", 4), ("moe_intermediate_size", tiny["intermediate_size"])):
        if isinstance(tiny.get(key), list):
            tiny[key] = [value] * tiny["num_hidden_layers"]
    if isinstance(tiny.get("num_shared_expert"), list):
        tiny["num_shared_expert"] = tiny["num_shared_expert"][: tiny["num_hidden_layers"]]


def _per_layer(r: ConfigReader, key: str, default: int, layers: int) -> int:
    """An int, or a list with one equal value per layer (transformers indexes it by layer)."""
    value = r.any(key, default)
    if isinstance(value, list):
        if len(value) < layers:
            raise ConfigError(f"{r.where}: key '{key}' has {len(value)} entries for {layers} layers")
        if len(set(value[:layers])) != 1:  # transformers reads entry i for layer i
            raise UnsupportedError(f"{r.where}: key '{key}' with different values per layer is not supported")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{r.where}: key '{key}' must be a positive integer (or one per layer), got {value!r:.40}")
    return value


@family("hunyuan_v1_moe", title="HunYuan MoE", replica=_replica_hunyuan_v1_moe, pad_token_id=0)
def lower_hunyuan_v1_moe(r: ConfigReader, model_type: str) -> Architecture:
    c = common(r, max_pos=2048)
    ntk_alpha_as_theta(r, c.head_dim)
    for key, value in HUNYUAN_FIXED.items():
        r.require_value(key, (value,), value)
    r.require_value("pretraining_tp", (1,), 1)
    experts, top_k = _per_layer(r, "num_experts", 1, c.num_layers), _per_layer(r, "moe_topk", 1, c.num_layers)
    if top_k > experts:
        raise ConfigError(f"{r.where}: 'moe_topk' ({top_k}) exceeds 'num_experts' ({experts})")
    # Tencent's export keys transformers does not read: accepted at the values it builds anyway (experts of the
    # dense width, one shared MLP).
    for key, value in (("moe_intermediate_size", c.intermediate_size), ("num_shared_expert", 1)):
        if r.has(key) and _per_layer(r, key, value, c.num_layers) != value:
            raise UnsupportedError(f"{r.where}: key '{key}' other than {value} is not supported (transformers' "
                                   "HunYuanMoEV1 model does not read it)")
    r.require_value("use_mixed_mlp_moe", (True,), True)
    activation = _activation(r)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=c.intermediate_size, activation=activation,
              router="softmax_topk", norm_topk_prob=True, router_float32=True, routing_dtype="float32",
              storage="per_expert", shared_expert_size=c.intermediate_size,
              names=MoeNames(router="gate", router_inner="wg", shared_expert="shared_mlp"))
    bias = r.bool("attention_bias", False)
    return moe_like(r, model_type, c, moe, [True] * c.num_layers, eps=1e-5, qkv_bias=bias, o_bias=bias,
                    qk_norm="per_head", qk_norm_after_rope=True, names=HUNYUAN_NAMES, activation=activation,
                    extra_allowed=frozenset({"eod_token_id"}))  # a tokenizer id
