"""Dense decoders with DeepSeek's latent attention (MLA): MiniCPM3 and Youtu-LLM.

MiniCPM3: DeepSeek-V2's latent attention (MLA) with Llama's rotate-half RoPE, dense SwiGLU MLPs,
and muP-style scales: embeddings times scale_emb, residual branches times scale_depth / sqrt(layers),
logits over hidden_size / dim_model_base.

Reads exactly the keys transformers 5.24's MiniCPM3Config and model read, with the same defaults.
"""

from __future__ import annotations

import math
from typing import Any

from ....schemas.arch import Architecture, Head, Layer, Mlp, Norm
from .fam_deepseek import REPLICA_MLA, _latent_attention
from .families import ACTIVATIONS, build, read_common
from .reader import ConfigReader
from .registry import family

# MiniCPM3Config's latent sizes (openbmb/MiniCPM3-4B), where DeepSeek-V2's differ.
MINICPM3_LATENT_DEFAULTS = {"kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32}


def _replica_minicpm3(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.update(REPLICA_MLA)
    tiny.pop("head_dim", None), tiny.pop("qk_head_dim", None)  # derived by the config class


@family("minicpm3", title="MiniCPM3", replica=_replica_minicpm3)
def lower_minicpm3(r: ConfigReader, model_type: str) -> Architecture:
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=32768)
    # The config class derives these (head_dim = the rope channels, qk_head_dim = nope + rope) whatever the
    # file says, and v_head_dim defaults to hidden / heads.
    raw = {k: v for k, v in r.raw.items() if k not in ("head_dim", "qk_head_dim")}
    raw = {**MINICPM3_LATENT_DEFAULTS, **raw}
    if raw.get("v_head_dim") is None:
        raw["v_head_dim"] = c.hidden_size // c.num_heads
    r.raw = raw
    mla, ropes, _ = _latent_attention(r, c, q_default=768, deinterleave=False)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5))
    mlp = Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=r.bool("mlp_bias", False))
    scale_emb = r.float("scale_emb", 12.0)
    depth = r.float("scale_depth", 1.4, nullable=True)
    depth = math.sqrt(c.num_layers) if depth is None else depth
    base = r.int("dim_model_base", 256, nullable=True) or c.hidden_size
    divisor = c.hidden_size / base
    arch = build(r, c, layer_types=["full_attention"] * c.num_layers, window=None, ropes=ropes, norm=norm,
                 attention=dict(scale=mla.scale), mlp=mlp, block="pre_norm",
                 embed_scale=None if scale_emb == 1.0 else scale_emb,
                 head=Head(tied=r.bool("tie_word_embeddings", True), divisor=None if divisor == 1.0 else divisor),
                 model_type=model_type, extra_allowed=frozenset({"attention_dropout"}))
    residual = depth / math.sqrt(c.num_layers)
    layers = tuple(Layer(index=i, mixer=mla, ffn=mlp, block="pre_norm", norm=norm,
                         residual_scale=None if residual == 1.0 else residual) for i in range(c.num_layers))
    return arch.model_copy(update={"layers": layers})


def _replica_youtu(tiny: dict[str, Any], arch: Architecture) -> None:
    _replica_minicpm3(tiny, arch)
    if arch.layers[0].mixer.q_lora_rank is None:
        tiny["q_lora_rank"] = None


@family("youtu", title="Youtu-LLM", replica=_replica_youtu)
def lower_youtu(r: ConfigReader, model_type: str) -> Architecture:
    """Youtu-LLM: DeepSeek-V3's latent attention (interleaved RoPE by default) in a dense Llama decoder."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=131072)
    r.raw = {k: v for k, v in r.raw.items() if k not in ("head_dim", "qk_head_dim")}  # derived by the config class
    mla, ropes, _ = _latent_attention(r, c, q_default=1536, deinterleave=r.bool("rope_interleave", True))
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6))
    mlp = Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS), intermediate_size=c.intermediate_size)
    arch = build(r, c, layer_types=["full_attention"] * c.num_layers, window=None, ropes=ropes, norm=norm,
                 attention=dict(scale=mla.scale), mlp=mlp, block="pre_norm", embed_scale=None,
                 head=Head(tied=r.bool("tie_word_embeddings", True)), model_type=model_type,
                 extra_allowed=frozenset({"embedding_initializer_range"}))  # initialisation only
    return arch.model_copy(update={"layers": tuple(Layer(index=i, mixer=mla, ffn=mlp, block="pre_norm", norm=norm)
                                                   for i in range(c.num_layers))})
