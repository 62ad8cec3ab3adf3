"""Llama-block families that need a switch or a small mechanism of their own: InternLM3 (Llama with
InternLM's bias key names), OLMo (LayerNorm without a learned scale, clamped q/k/v projections).

Each reads exactly the keys its transformers 5.24 config class and model read, with the same defaults.
"""

from __future__ import annotations

from ...schemas.arch import Architecture, Norm
from ..errors import ConfigError
from .llama_like import common, llama_like
from .reader import ConfigReader
from .registry import explicit_head_dim, family


def _aliased_bool(r: ConfigReader, key: str, alias: str, default: bool) -> bool:
    """A boolean the config class also accepts under an attribute_map alias (one of the two, not both)."""
    if r.has(key) and r.has(alias):
        raise ConfigError(f"{r.where}: give either '{key}' or its alias '{alias}', not both")
    return r.bool(alias, default) if r.has(alias) else r.bool(key, default)


@family("internlm3", title="InternLM3", replica=explicit_head_dim, pad_token_id=2)
def lower_internlm3(r: ConfigReader, model_type: str) -> Architecture:
    """InternLM3: Llama (transformers runs it on LlamaForCausalLM); ``qkv_bias`` (attention_bias) puts biases on
    q, k, v and o, ``bias`` (mlp_bias) on the MLP, and the config class requires the two to agree."""
    c = common(r, kv=2, head_dim=128, max_pos=32768)
    attention_bias = _aliased_bool(r, "attention_bias", "qkv_bias", False)
    mlp_bias = _aliased_bool(r, "mlp_bias", "bias", False)
    if attention_bias != mlp_bias:
        raise ConfigError(f"{r.where}: 'qkv_bias' ({attention_bias}) and 'bias' ({mlp_bias}) must agree for model_type "
                          "'internlm3' (transformers refuses the config otherwise)")
    return llama_like(r, model_type, c, eps=1e-5, qkv_bias=attention_bias, o_bias=attention_bias, mlp_bias=mlp_bias)


@family("olmo", title="OLMo", pad_token_id=1)
def lower_olmo(r: ConfigReader, model_type: str) -> Architecture:
    """OLMo (the first release): Llama's block with a LayerNorm that has no learned scale or bias (eps 1e-5,
    in float32), optional q/k/v clamping (``clip_qkv``), one ``attention_bias`` switch for q, k, v and o."""
    c = common(r, max_pos=2048)
    bias = r.bool("attention_bias", False)
    clip = r.float("clip_qkv", None, nullable=True)
    norm = Norm(kind="layernorm", eps=1e-5, weight=False)  # OlmoLayerNorm: F.layer_norm(x.float(), ..., None, None)
    return llama_like(r, model_type, c, norm=norm, qkv_bias=bias, o_bias=bias, clip_qkv=clip)
