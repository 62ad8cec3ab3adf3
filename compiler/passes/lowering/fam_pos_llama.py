"""Llama-block families that need a switch or a small mechanism of their own: InternLM3 (Llama with
InternLM's bias key names), OLMo (LayerNorm without a learned scale, clamped q/k/v projections),
Ministral 3 (Mistral with YaRN and Llama 4's attention temperature on every layer), NanoChat (weightless
RMSNorms, also on the embeddings, RoPE turned the other way, L2 QK-norm, squared ReLU, soft-capped logits),
BitNet (norms before o_proj and down_proj), Apertus (the xIELU activation, with parameters of its own), EXAONE 3
(Llama under GPT-2-style key names, its attention nested as attn.attention on disk).

Each reads exactly the keys its transformers 5.24 config class and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Head, Norm, TemperatureTuning
from ...basics.errors import ConfigError
from .llama_like import common, llama_like
from .reader import ConfigReader
from .registry import derived_head_dim, explicit_head_dim, family


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


# Ministral3Config's rope_parameters when the config gives none.
MINISTRAL3_ROPE = {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 16.0, "original_max_position_embeddings": 16384,
                   "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.1}


def _replica_ministral3(tiny: dict[str, Any], arch: Architecture) -> None:
    """An explicit head_dim, and a temperature step of 4 positions so the test sequence crosses several."""
    explicit_head_dim(tiny, arch)
    params = dict(tiny.get("rope_parameters") or MINISTRAL3_ROPE)
    params["original_max_position_embeddings"] = 4
    tiny["rope_parameters"] = params


@family("ministral3", title="Ministral 3", replica=_replica_ministral3, pad_token_id=11)
def lower_ministral3(r: ConfigReader, model_type: str) -> Architecture:
    """Ministral 3: Mistral's block (every layer sliding when sliding_window is set) whose queries are scaled after
    RoPE by 1 + beta * log(1 + floor(position / original_max_position_embeddings)) (rope_parameters'
    llama_4_scaling_beta: Llama 4's temperature tuning, without its position offset)."""
    c = common(r, kv=8, head_dim=128, max_pos=262144)
    params = r.any("rope_parameters", None)
    if params is None and not r.has("rope_scaling"):
        params = dict(MINISTRAL3_ROPE)
    if not isinstance(params, dict):
        raise ConfigError(f"{r.where}: model_type 'ministral3' needs a 'rope_parameters' object")
    params = dict(params)
    beta = params.pop("llama_4_scaling_beta", None)
    params.pop("max_position_embeddings", None)  # written by the config class, read by nothing
    context = params.get("original_max_position_embeddings")
    if beta is None or context is None:
        raise ConfigError(f"{r.where}: model_type 'ministral3' needs 'llama_4_scaling_beta' and "
                          "'original_max_position_embeddings' in 'rope_parameters' (its attention reads both)")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or isinstance(context, bool) or not isinstance(
            context, int) or context < 1:
        raise ConfigError(f"{r.where}: rope_parameters: 'llama_4_scaling_beta' must be a number and "
                          "'original_max_position_embeddings' a positive integer")
    r.raw = {**r.raw, "rope_parameters": params}
    window = r.int("sliding_window", None, nullable=True)
    kind = "sliding_attention" if window is not None else "full_attention"
    tuning = TemperatureTuning(floor_scale=context, attn_scale=float(beta), position_offset=0)
    arch = llama_like(r, model_type, c, theta=1000000.0, eps=1e-5, layer_types=[kind] * c.num_layers, window=window)
    layers = tuple(layer.model_copy(update={"mixer": layer.mixer.model_copy(update={"temperature": tuning})})
                   for layer in arch.layers)
    return arch.model_copy(update={"layers": layers})



@family("nanochat", title="NanoChat", replica=derived_head_dim, pad_token_id=1)
def lower_nanochat(r: ConfigReader, model_type: str) -> Architecture:
    """NanoChat: RMSNorms without a learned scale (one of them also normalises the token embeddings), RoPE turned
    by minus the angle, an L2 QK-norm after it, a plain squared-ReLU MLP (fc1, fc2), soft-capped logits."""
    c = common(r, max_pos=2048)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6), weight=False)
    bias = r.bool("attention_bias", False)
    softcap = r.float("final_logit_softcapping", 15.0, nullable=True)
    arch = llama_like(r, model_type, c, norm=norm, qkv_bias=bias, o_bias=bias, qk_norm="l2", activation="relu2",
                      gated=False, rope_layout="rotate_half_reversed", names={"up": "fc1", "down": "fc2"},
                      head=Head(tied=r.bool("tie_word_embeddings", False), softcap=softcap))
    return arch.model_copy(update={"embedding": arch.embedding.model_copy(update={"norm": norm})})


@family("bitnet", title="BitNet", replica=derived_head_dim)
def lower_bitnet(r: ConfigReader, model_type: str) -> Architecture:
    """BitNet b1.58 (unquantized weights): Llama with squared-ReLU gating and two extra RMSNorms, one over the heads'
    output before o_proj (attn_sub_norm) and one over the MLP's intermediate activation before down_proj
    (ffn_sub_norm)."""
    c = common(r, kv=5, max_pos=2048)
    if c.num_heads * c.head_dim != c.hidden_size:
        raise ConfigError(f"{r.where}: 'num_attention_heads' x 'head_dim' must equal 'hidden_size' for model_type "
                          "'bitnet' (its attn_sub_norm is hidden_size wide)")
    bias = r.bool("attention_bias", False)
    arch = llama_like(r, model_type, c, eps=1e-5, activation="relu2", qkv_bias=bias, o_bias=bias)
    layers = tuple(layer.model_copy(update={"mixer": layer.mixer.model_copy(update={"output_norm": True}),
                                            "ffn": layer.ffn.model_copy(update={"inner_norm": True})})
                   for layer in arch.layers)
    return arch.model_copy(update={"layers": layers})


# ApertusConfig's rope_parameters when the config gives none.
APERTUS_ROPE = {"rope_type": "llama3", "rope_theta": 12000000.0, "factor": 8.0, "original_max_position_embeddings": 8192,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0}


@family("apertus", title="Apertus", pad_token_id=3)
def lower_apertus(r: ConfigReader, model_type: str) -> Architecture:
    """Apertus: Llama with a per-head QK-norm before RoPE, llama3 RoPE by default, and a plain MLP down(act(up(x)))
    whose activation is xIELU (learned alpha_p, alpha_n; stored beta, eps) unless hidden_act names another."""
    c = common(r, max_pos=65536)
    if r.raw.get("rope_parameters") is None and r.raw.get("rope_scaling") is None:
        r.raw = {**r.raw, "rope_parameters": dict(APERTUS_ROPE)}
        r.raw.pop("rope_theta", None)  # the default table's theta wins, as in the config class
    bias = r.bool("attention_bias", False)
    return llama_like(r, model_type, c, eps=1e-5, activation="xielu", gated=False, qkv_bias=bias, o_bias=bias,
                      qk_norm="per_head", names={"input_norm": "attention_layernorm",
                                                 "post_attn_norm": "feedforward_layernorm"})


EXAONE_ALIASES = {"num_layers": "num_hidden_layers", "layer_norm_epsilon": "rms_norm_eps", "activation_function": "hidden_act"}
EXAONE_NAMES = {"backbone": "transformer", "embed": "wte", "layers": "h", "final_norm": "ln_f", "attn": "attn",
                "attn_checkpoint": "attn.attention", "o": "out_proj", "input_norm": "ln_1", "post_attn_norm": "ln_2",
                "gate": "c_fc_0", "up": "c_fc_1", "down": "c_proj"}


def _replica_exaone(tiny: dict[str, Any], arch: Architecture) -> None:
    """The shrunk sizes under the config's own spelling of the aliased keys; an explicit head_dim."""
    explicit_head_dim(tiny, arch)
    for alias, key in EXAONE_ALIASES.items():
        if alias in tiny and key in tiny:
            tiny[alias] = tiny.pop(key)


@family("exaone", title="EXAONE 3", replica=_replica_exaone, pad_token_id=0)
def lower_exaone(r: ConfigReader, model_type: str) -> Architecture:
    """EXAONE 3.0 / 3.5: Llama (transformers runs it on LlamaForCausalLM) with GPT-2-style key names in the config
    (num_layers, layer_norm_epsilon, activation_function) and in the checkpoint (transformer.h.{i}.attn.attention...,
    mlp.c_fc_0 / c_fc_1 / c_proj), which the loader maps."""
    raw = dict(r.raw)
    for alias, key in EXAONE_ALIASES.items():
        if alias in raw:
            if key in raw:
                raise ConfigError(f"{r.where}: give either '{key}' or its alias '{alias}', not both")
            raw[key] = raw.pop(alias)
    r.raw = raw
    c = common(r, kv=8, max_pos=4096)
    return llama_like(r, model_type, c, theta=500000.0, eps=1e-5, qkv_bias=r.bool("attention_bias", False),
                      o_bias=r.bool("attention_bias", False), mlp_bias=r.bool("mlp_bias", False), names=EXAONE_NAMES)


@family("iquestcoder", title="IQuest-Coder", replica=explicit_head_dim)
def lower_iquestcoder(r: ConfigReader, model_type: str) -> Architecture:
    """IQuest-Coder: Llama (transformers runs it on LlamaForCausalLM) with its own defaults; the config class
    refuses clip_qkv and use_sliding_window."""
    c = common(r, kv=8, head_dim=128, max_pos=131072)
    if r.any("clip_qkv", None) is not None or r.any("use_sliding_window", False):
        raise ConfigError(f"{r.where}: 'clip_qkv' / 'use_sliding_window' are refused by transformers' IQuestCoderConfig")
    bias = r.bool("attention_bias", False)
    return llama_like(r, model_type, c, eps=1e-5, qkv_bias=bias, o_bias=bias, mlp_bias=r.bool("mlp_bias", False))
