"""Families that are an existing family with its norms placed differently: VaultGemma (Gemma 2
without the post-norms) and EXAONE 4.0 (OLMo 2's post-norm block with QK-norm, NoPE global layers).

Each reads exactly the keys its transformers 5.24 config class and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Head, Norm
from ...basics.errors import UnsupportedError
from .fam_gemma_olmo import _replica_gemma2, lower_gemma2
from .families import default_partial_rotary, read_layer_types
from .llama_like import common, llama_like
from .reader import ConfigReader
from .registry import explicit_head_dim, family


def _replica_vaultgemma(tiny: dict[str, Any], arch: Architecture) -> None:
    _replica_gemma2(tiny, arch)
    explicit_head_dim(tiny, arch)


@family("vaultgemma", title="VaultGemma", replica=_replica_vaultgemma, pad_token_id=0)
def lower_vaultgemma(r: ConfigReader, model_type: str) -> Architecture:
    """VaultGemma: Gemma 2 with a plain pre-norm block; the MLP's norm is Gemma 2's pre_feedforward_layernorm."""
    arch = lower_gemma2(r, model_type)
    layers = tuple(layer.model_copy(update={"block": "pre_norm"}) for layer in arch.layers)
    names = arch.names.model_copy(update={"post_attn_norm": "pre_feedforward_layernorm"})
    return arch.model_copy(update={"layers": layers, "names": names})


@family("exaone4", title="EXAONE 4.0", replica=explicit_head_dim)
def lower_exaone4(r: ConfigReader, model_type: str) -> Architecture:
    """EXAONE 4.0: OLMo 2's post-norm block (norms after attention and MLP), QK-norm per head before RoPE,
    3 sliding : 1 global layers whose global layers have no RoPE (NoPE) whenever a window is set."""
    c = common(r, kv=32, max_pos=2048)
    window = r.int("sliding_window", 4096, nullable=True)
    pattern = r.any("sliding_window_pattern", 4)
    if "layer_types" in r.raw or window is None:
        layer_types = read_layer_types(r, c.num_layers, ["full_attention"] * c.num_layers)
    elif isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
        layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(c.num_layers)]
    else:
        raise UnsupportedError(f"{r.where}: key 'sliding_window_pattern' = {pattern!r:.40} needs an explicit "
                               "'layer_types' (only a positive integer pattern is expanded)")
    arch = llama_like(r, model_type, c, eps=1e-5, qk_norm="per_head", block="post_norm", layer_types=layer_types,
                      window=window)
    if window is None:
        return arch
    layers = tuple(
        layer if layer.mixer.span == "sliding" else layer.model_copy(
            update={"mixer": layer.mixer.model_copy(update={"rope": None})})
        for layer in arch.layers
    )
    used = {layer.mixer.rope for layer in layers}
    return arch.model_copy(update={"layers": layers, "rope": tuple(t for t in arch.rope if t.name in used)})


HYPERCLOVAX_NAMES = dict(post_attn_norm="post_norm1", pre_ffn_norm="post_attention_layernorm", post_ffn_norm="post_norm2")


@family("hyperclovax", title="HyperCLOVA X", replica=explicit_head_dim)
def lower_hyperclovax(r: ConfigReader, model_type: str) -> Architecture:
    """HyperCLOVA X SEED: Granite's muP multipliers (the logits one multiplies) with an extra norm after each
    sub-layer ("peri-layer" normalization: a sandwich block) unless use_post_norm is false."""
    c = common(r, max_pos=2048)
    bias = r.bool("attention_bias", False)
    embedding = r.float("embedding_multiplier", 1.0)
    residual = r.float("residual_multiplier", 1.0)
    logits = r.float("logits_scaling", 1.0)
    scale = r.float("attention_multiplier", None, nullable=True) or c.head_dim**-0.5
    post_norm = r.bool("use_post_norm", True)
    arch = llama_like(r, model_type, c, qkv_bias=bias, o_bias=bias, mlp_bias=r.bool("mlp_bias", False), scale=scale,
                      block="sandwich" if post_norm else "pre_norm", names=HYPERCLOVAX_NAMES if post_norm else None,
                      embed_scale=None if embedding == 1.0 else embedding,
                      head=Head(tied=r.bool("tie_word_embeddings", False), multiplier=None if logits == 1.0 else logits))
    layers = tuple(layer.model_copy(update={"residual_scale": None if residual == 1.0 else residual})
                   for layer in arch.layers)
    embedding_ir = arch.embedding.model_copy(update={"scale_in_dtype": False})  # a Python float times the embeddings
    return arch.model_copy(update={"layers": layers, "embedding": embedding_ir})


@family("nemotron", title="Nemotron", replica=explicit_head_dim)
def lower_nemotron(r: ConfigReader, model_type: str) -> Architecture:
    """Nemotron (Minitron): torch LayerNorms whose weight is stored as an offset from 1 ("LayerNorm1P"), an
    ungated squared-ReLU MLP and RoPE over half of each head by default."""
    c = common(r, max_pos=4096)
    default_partial_rotary(r, 0.5)  # NemotronConfig's default
    norm = Norm(kind="layernorm", eps=r.float("norm_eps", 1e-5), bias=True, compute_dtype="input", weight_offset=1.0)
    bias = r.bool("attention_bias", False)
    return llama_like(r, model_type, c, norm=norm, qkv_bias=bias, o_bias=bias, mlp_bias=r.bool("mlp_bias", False),
                      gated=False, activation="relu2", partial_rotary=True)


def _replica_persimmon(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.pop("num_key_value_heads", None), tiny.pop("head_dim", None)  # always heads and hidden / heads


PERSIMMON_NAMES = dict(qkv="query_key_value", o="dense", up="dense_h_to_4h", down="dense_4h_to_h",
                       final_norm="final_layernorm", q_norm="q_layernorm", k_norm="k_layernorm")


@family("persimmon", title="Persimmon", replica=_replica_persimmon)
def lower_persimmon(r: ConfigReader, model_type: str) -> Architecture:
    """Persimmon (Adept): torch LayerNorms, per-head fused [q_h; k_h; v_h], a LayerNorm (with bias) over each
    query and key head, RoPE over half of each head, an ungated squared-ReLU MLP, biases everywhere."""
    c = common(r, max_pos=16384)
    if c.num_kv_heads != c.num_heads or c.head_dim * c.num_heads != c.hidden_size:
        raise UnsupportedError(f"{r.where}: model_type 'persimmon' has as many key/value heads as heads, each "
                               "hidden_size / num_attention_heads wide")
    default_partial_rotary(r, 0.5)  # PersimmonConfig's default
    norm = Norm(kind="layernorm", eps=r.float("layer_norm_eps", 1e-5), bias=True, compute_dtype="input")
    return llama_like(r, model_type, c, norm=norm, qkv_bias=True, o_bias=True, mlp_bias=True, gated=False,
                      activation="relu2", partial_rotary=True, qkv="fused_per_head",
                      qk_norm="per_head" if r.bool("qk_layernorm", True) else "none", names=PERSIMMON_NAMES)


def _replica_granite_swa(tiny: dict[str, Any], arch: Architecture) -> None:
    explicit_head_dim(tiny, arch)
    if isinstance(tiny.get("layer_rope_theta"), list):
        tiny["layer_rope_theta"] = tiny["layer_rope_theta"][: tiny["num_hidden_layers"]]


@family("granite_swa", title="Granite (sliding window)", replica=_replica_granite_swa)
def lower_granite_swa(r: ConfigReader, model_type: str) -> Architecture:
    """Granite with a sliding window on three layers of four, a learned sink logit per head (transformers applies
    it as sigmoid(logsumexp - sink) after the softmax, which is the same as a sink joining the softmax), and
    per-layer RoPE thetas where 0 means no RoPE (NoPE)."""
    c = common(r, kv=4, max_pos=8192)
    window = r.int("sliding_window", 128, nullable=True)
    default = ["full_attention" if i % 4 == 0 else "sliding_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default)
    thetas = r.any("layer_rope_theta", None)
    bias = r.bool("attention_bias", False)
    embedding = r.float("embedding_multiplier", 1.0)
    residual = r.float("residual_multiplier", 1.0)
    divisor = r.float("logits_scaling", 1.0)
    arch = llama_like(r, model_type, c, eps=1e-5, qkv_bias=bias, o_bias=bias, mlp_bias=r.bool("mlp_bias", False),
                      layer_types=layer_types, window=window, scale=r.float("attention_multiplier", 1.0), sinks=True,
                      embed_scale=None if embedding == 1.0 else embedding,
                      head=Head(tied=r.bool("tie_word_embeddings", True), divisor=None if divisor == 1.0 else divisor))
    theta = arch.rope[0].theta
    if thetas is None:
        thetas = [theta] * c.num_layers
    if not isinstance(thetas, list) or len(thetas) != c.num_layers or any(
            t not in (0, None, theta) for t in thetas):
        raise UnsupportedError(f"{r.where}: key 'layer_rope_theta' must list, per layer, the RoPE theta ({theta}) or "
                               "0 / null for no RoPE")
    layers = tuple(
        layer.model_copy(update={"residual_scale": None if residual == 1.0 else residual,
                                 **({} if t else {"mixer": layer.mixer.model_copy(update={"rope": None})})})
        for layer, t in zip(arch.layers, thetas)
    )
    used = {layer.mixer.rope for layer in layers}
    return arch.model_copy(update={"layers": layers, "rope": tuple(t for t in arch.rope if t.name in used),
                                   "embedding": arch.embedding.model_copy(update={"scale_in_dtype": False})})
