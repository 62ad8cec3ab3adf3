"""Rendering decisions for multi-head latent attention (templates/model/mla.py.j2).

Kept apart from render.py: the MLA Config fields and the template context.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture, Indexer, Mla
from .literals import field, identifier


def mla_of(arch: Architecture) -> Mla | None:
    """The model's latent attention (its softmax layers' mixer), if it has one."""
    mixer = next((layer.mixer for layer in arch.layers if getattr(layer.mixer, "kind", None) in ("attention", "mla")), None)
    return mixer if isinstance(mixer, Mla) else None


def mla_config_fields(mla: Mla) -> list[dict[str, Any]]:
    """The attention fields of the generated Config for latent attention."""
    return [
        field("num_attention_heads", "int", mla.num_heads),
        *([field("q_lora_rank", "int", mla.q_lora_rank, "rank of the low-rank query projection")]
          if mla.q_lora_rank is not None else []),
        field("kv_lora_rank", "int", mla.kv_lora_rank, "channels of the key/value latent"),
        field("qk_nope_head_dim", "int", mla.qk_nope_head_dim, "query/key channels without RoPE, per head"),
        field("qk_rope_head_dim", "int", mla.qk_rope_head_dim, "query/key channels with RoPE, per head"),
        *([field("head_dim", "int", mla.qk_rope_head_dim, "the channels the RoPE tables rotate")] if mla.rope else []),
        field("v_head_dim", "int", mla.v_head_dim),
        field("latent_norm_eps", "float", mla.latent_norm.eps, "the norms on the latents"),
        *(indexer_config_fields(mla.indexer) if mla.indexer is not None else []),
    ]


def indexer_config_fields(indexer: Indexer) -> list[dict[str, Any]]:
    """The Config fields of DeepSeek Sparse Attention's lightning indexer."""
    return [
        field("index_n_heads", "int", indexer.num_heads, "indexer heads"),
        field("index_head_dim", "int", indexer.head_dim, "indexer query/key channels, per head"),
        field("index_topk", "int", indexer.topk, "keys each query attends to"),
        field("index_norm_eps", "float", indexer.k_norm.eps, "the LayerNorm on the indexer key"),
    ]


def mla_context(arch: Architecture) -> dict[str, Any] | None:
    """What mla.py.j2 prints; None without latent attention."""
    mla = mla_of(arch)
    if mla is None:
        return None
    return {
        "q_lora": mla.q_lora_rank is not None,
        "bias": mla.bias,
        "deinterleave": mla.rope_deinterleave,
        "rope": mla.rope is not None,
        "indexer": mla.indexer is not None,
        "ix": None if mla.indexer is None else {
            "interleave": mla.indexer.rope_interleave,
            **{key: identifier(value) for key, value in mla.indexer.names.model_dump().items()},
        },
    }


def mla_names(arch: Architecture) -> dict[str, str]:
    mla = mla_of(arch)
    return {key: identifier(value) for key, value in mla.names.model_dump().items()} if mla else {}
