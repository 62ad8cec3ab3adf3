"""Llama variants that differ from Llama only in defaults, key names and a switch or two.

Each reads exactly the keys its transformers 5.24 config class and model read
(``models/<family>/configuration_*.py``, ``modeling_*.py``), with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Norm
from .families import default_partial_rotary
from .llama_like import common, llama_like, sliding_layer_types
from .reader import ConfigReader
from .registry import explicit_head_dim, family


def _sized_head(tiny: dict[str, Any], arch: Architecture) -> None:
    """Families whose o_proj is (hidden, hidden): the replica's head_dim must be hidden / heads."""
    tiny["head_dim"] = tiny["hidden_size"] // tiny["num_attention_heads"]


@family("ministral", title="Ministral")
def lower_ministral(r: ConfigReader, model_type: str) -> Architecture:
    """Ministral: Mistral's block with per-layer ``layer_types`` (sliding or full)."""
    c = common(r, kv=8, max_pos=4096 * 32)
    window = r.int("sliding_window", 4096, nullable=True)
    return llama_like(r, model_type, c, layer_types=sliding_layer_types(r, c, window), window=window)


@family("seed_oss", title="Seed-OSS", replica=explicit_head_dim, pad_token_id=1)
def lower_seed_oss(r: ConfigReader, model_type: str) -> Architecture:
    """Seed-OSS: Llama with q/k/v biases (attention_bias) and a separate switch for o's (attention_out_bias)."""
    c = common(r, kv=8, head_dim=128, max_pos=524288)
    r.require_value("pretraining_tp", (1,), 1)
    return llama_like(r, model_type, c, qkv_bias=r.bool("attention_bias", True),
                      o_bias=r.bool("attention_out_bias", False), mlp_bias=r.bool("mlp_bias", False))


@family("cwm", title="CWM (Code World Model)", replica=explicit_head_dim)
def lower_cwm(r: ConfigReader, model_type: str) -> Architecture:
    """CWM: Llama with a sliding window on three layers of four (layer 0, 4, ... full) and llama3 RoPE by default."""
    c = common(r, kv=8, head_dim=128, max_pos=131072)
    r.require_value("pretraining_tp", (1,), 1)
    if r.raw.get("rope_parameters") is None and r.raw.get("rope_scaling") is None:
        # CwmConfig's default table when the config gives none (its rope_theta key then goes unused).
        r.raw = {**r.raw, "rope_parameters": {"rope_type": "llama3", "rope_theta": 1_000_000.0, "factor": 16.0,
                                              "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                              "original_max_position_embeddings": 8192}}
        r.raw.pop("rope_theta", None)
    window = r.int("sliding_window", 8192)
    default = ["full_attention" if i % 4 == 0 else "sliding_attention" for i in range(c.num_layers)]
    layer_types = sliding_layer_types(r, c, window) if "layer_types" in r.raw else default
    return llama_like(r, model_type, c, theta=1_000_000.0, eps=1e-5, layer_types=layer_types, window=window,
                      mlp_bias=r.bool("mlp_bias", False))


@family("helium", title="Helium", replica=_sized_head, pad_token_id=3)
def lower_helium(r: ConfigReader, model_type: str) -> Architecture:
    """Helium: Llama with interleaved RoPE, RMSNorm weights applied in float32 and no bias on o."""
    c = common(r, kv=20, head_dim=128, max_pos=4096)
    if c.num_heads * c.head_dim != c.hidden_size:
        from ...basics.errors import UnsupportedError

        raise UnsupportedError(f"{r.where}: 'num_attention_heads' x 'head_dim' must equal 'hidden_size' for model_type "
                               "'helium' (its output projection is hidden x hidden)")
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-8), weight_in_compute_dtype=True)
    return llama_like(r, model_type, c, theta=100000.0, norm=norm, qkv_bias=r.bool("attention_bias", False),
                      mlp_bias=r.bool("mlp_bias", False), rope_layout="interleaved",
                      extra_allowed=frozenset({"pretraining_tp"}))  # HeliumConfig has no such field: never read


@family("ernie4_5", title="ERNIE 4.5", replica=explicit_head_dim, pad_token_id=0)
def lower_ernie4_5(r: ConfigReader, model_type: str) -> Architecture:
    """ERNIE 4.5 (dense): Llama with interleaved RoPE (rotated in float32), one use_bias switch, tied head."""
    c = common(r, kv=2, head_dim=128, max_pos=131072)
    bias = r.bool("use_bias", False)
    return llama_like(r, model_type, c, theta=500000.0, eps=1e-5, qkv_bias=bias, o_bias=bias, mlp_bias=bias,
                      rope_layout="interleaved", tied=True)


def _glm(r: ConfigReader, model_type: str, **switches: Any) -> Architecture:
    """GLM / GLM-4: Llama with [gate; up] in one matrix, biases on q/k/v only and interleaved RoPE over
    half of each head by default."""
    c = common(r, kv=2, head_dim=128, max_pos=131072)
    default_partial_rotary(r, 0.5)  # the config classes' default
    return llama_like(r, model_type, c, eps=0.00000015625, qkv_bias=r.bool("attention_bias", True),
                      rope_layout="interleaved", partial_rotary=True, fused_gate_up=True, **switches)


@family("glm", title="GLM", replica=explicit_head_dim, pad_token_id=151329)
def lower_glm(r: ConfigReader, model_type: str) -> Architecture:
    return _glm(r, model_type)


# GLM-4's four norms per layer: around attention and around the MLP (a sandwich).
GLM4_NAMES = dict(post_attn_norm="post_self_attn_layernorm", pre_ffn_norm="post_attention_layernorm",
                  post_ffn_norm="post_mlp_layernorm")


@family("glm4", title="GLM-4", replica=explicit_head_dim, pad_token_id=151329)
def lower_glm4(r: ConfigReader, model_type: str) -> Architecture:
    return _glm(r, model_type, block="sandwich", names=GLM4_NAMES)


@family("starcoder2", title="StarCoder2")
def lower_starcoder2(r: ConfigReader, model_type: str) -> Architecture:
    """StarCoder2: Mistral's attention (optional window on every layer) with one use_bias switch, torch
    LayerNorms (with bias) and a plain two-matrix MLP (c_fc, c_proj) with GELU; tied head by default."""
    c = common(r, kv=2, max_pos=4096)
    window = r.int("sliding_window", None, nullable=True)
    bias = r.bool("use_bias", True)
    norm = Norm(kind="layernorm", eps=r.float("norm_epsilon", 1e-5), bias=True, compute_dtype="input")
    return llama_like(r, model_type, c, norm=norm, qkv_bias=bias, o_bias=bias, mlp_bias=bias, gated=False,
                      activation="gelu_pytorch_tanh", layer_types=sliding_layer_types(r, c, window), window=window,
                      tied=True, names=dict(up="c_fc", down="c_proj"), extra_allowed=frozenset({"embedding_dropout"}))


@family("arcee", title="Arcee (AFM)", replica=explicit_head_dim)
def lower_arcee(r: ConfigReader, model_type: str) -> Architecture:
    """Arcee AFM: Llama with a plain (ungated) squared-ReLU MLP (up_proj, down_proj)."""
    c = common(r, max_pos=4096)
    bias = r.bool("attention_bias", False)
    return llama_like(r, model_type, c, eps=1e-5, qkv_bias=bias, o_bias=bias, mlp_bias=r.bool("mlp_bias", False),
                      gated=False, activation="relu2")


@family("jais2", title="Jais 2", replica=explicit_head_dim)
def lower_jais2(r: ConfigReader, model_type: str) -> Architecture:
    """Jais 2: Arcee's squared-ReLU MLP with torch LayerNorms (with bias) and biases on by default."""
    c = common(r, max_pos=8192)
    bias = r.bool("attention_bias", True)
    norm = Norm(kind="layernorm", eps=r.float("layer_norm_eps", 1e-5), bias=True, compute_dtype="input")
    return llama_like(r, model_type, c, norm=norm, qkv_bias=bias, o_bias=bias, mlp_bias=r.bool("mlp_bias", True),
                      gated=False, activation="relu2")
