"""Hybrid Gated DeltaNet families: Qwen3-Next (``qwen3_next``), Qwen3.5 / Qwen3.6 (``qwen3_5_text``,
``qwen3_5_moe_text``, and their multimodal wrappers ``qwen3_5`` / ``qwen3_5_moe``).

Each reads the keys transformers 5's config class and model read, with the same defaults: layers
of ``layer_types`` "linear_attention" get a Gated DeltaNet, "full_attention" ones a gated softmax
attention (q_proj also yields a sigmoid output gate, QK-norm, partial RoPE); the norms scale by
(1 + weight); the feed-forward is a dense MLP or experts with a gated shared expert.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, GatedDeltaNet, Head, Layer, Mlp, Moe, Norm
from ...basics.errors import ConfigError, UnsupportedError
from .families import default_partial_rotary, padding_idx, read_common
from .fam_moe import REPLICA_EXPERT_WIDTH, REPLICA_EXPERTS, REPLICA_SHARED_WIDTH, REPLICA_TOP_K, TRAINING_ONLY, _sparse_layers
from .reader import ConfigReader
from .rope import lower_rope

HYBRID_TYPES = ("linear_attention", "full_attention")
# Keys of the multi-token-prediction head: published checkpoints hold its weights (mtp.*), logits never use it.
MTP_KEYS = frozenset({"mtp_num_hidden_layers", "mtp_use_dedicated_embeddings"})


def _layer_types(r: ConfigReader, num_layers: int) -> list[str]:
    """``layer_types``, else every ``full_attention_interval``-th layer full attention (the config class's default)."""
    interval = r.int("full_attention_interval", 4)
    layer_types = r.any("layer_types", None)
    if layer_types is None:
        return ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(num_layers)]
    if not isinstance(layer_types, list) or len(layer_types) != num_layers:
        raise ConfigError(f"{r.where}: 'layer_types' must be a list of {num_layers} entries (one per layer)")
    for value in layer_types:
        if value not in HYBRID_TYPES:
            raise UnsupportedError(f"{r.where}: 'layer_types' entry {value!r:.40} is not supported ({', '.join(HYBRID_TYPES)})")
    return list(layer_types)


def _mrope(r: ConfigReader) -> tuple[int, ...] | None:
    """Qwen3.5's multimodal RoPE sections: taken out of rope_parameters (lower_rope does not know them)."""
    params = r.raw.get("rope_parameters")
    if not isinstance(params, dict) or not {"mrope_section", "mrope_interleaved"} & set(params):
        return None
    params = dict(params)
    section, interleaved = params.pop("mrope_section", None), params.pop("mrope_interleaved", True)
    r.raw = {**r.raw, "rope_parameters": params}
    if interleaved is not True:
        raise UnsupportedError(f"{r.where}: rope parameter 'mrope_interleaved' = {interleaved!r:.20} is not supported (only true)")
    if section is None:
        return None
    if not isinstance(section, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in section):
        raise ConfigError(f"{r.where}: rope parameter 'mrope_section' must be a list of positive integers")
    return tuple(section)


def _lower(r: ConfigReader, model_type: str, *, variant: str) -> Architecture:
    """variant: "next" (Qwen3-Next: grouped in-projections, experts per decoder_sparse_step), "dense"
    (Qwen3.5), "moe" (Qwen3.5-MoE: experts on every layer)."""
    if variant == "moe":
        if "intermediate_size" in r.raw:
            raise ConfigError(f"{r.where}: key 'intermediate_size' is not used by {model_type} (every layer has experts)")
        r.raw = {**r.raw, "intermediate_size": 1}  # read_common wants one; no dense MLP is built
    c = read_common(r, kv_default=2 if variant != "dense" else 4, head_dim_default=256, max_pos=32768)
    r.str("hidden_act", "silu", choices={"silu": "silu", "swish": "silu"})  # the MLPs' and the convolution's
    eps = r.float("rms_norm_eps", 1e-6)
    norm = Norm(kind="rmsnorm", eps=eps, weight_offset=1.0, weight_in_compute_dtype=True)  # (1 + w), in float32
    bias = r.bool("attention_bias", False)
    layer_types = _layer_types(r, c.num_layers)
    if variant != "next":
        r.require_value("attn_output_gate", (True,), True)  # transformers always gates
        r.require_value("mamba_ssm_dtype", ("float32",), "float32")  # the state is kept in float32
        r.require_value("output_gate_type", ("swish", "silu", None), None)  # the gated norm's SiLU
        dense_only = r.any("mlp_only_layers", None)
        if variant == "moe" and dense_only not in (None, []):
            raise UnsupportedError(f"{r.where}: key 'mlp_only_layers' is ignored by transformers' {model_type} "
                                   "(every layer has experts); refusing a non-empty list rather than guessing")
    section = _mrope(r)
    default_partial_rotary(r, 0.25)
    ropes = lower_rope(r, head_dim=c.head_dim, layer_types={"full_attention"},
                       default_theta={"full_attention": 10000.0, "sliding_attention": 10000.0})
    rope = ropes["full_attention"]
    if section is not None:
        if sum(section) * 2 != rope.rotary_dim:
            raise ConfigError(f"{r.where}: 'mrope_section' {list(section)} must sum to rotary_dim / 2 ({rope.rotary_dim // 2})")
        rope = rope.model_copy(update={"mrope_section": section})
    attention = Attention(span="full", num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                          rope=rope.name, q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, qk_norm="per_head",
                          qk_norm_spec=norm, scale=c.head_dim**-0.5, output_gate=True)
    gdn = GatedDeltaNet(
        num_k_heads=r.int("linear_num_key_heads", 16), num_v_heads=r.int("linear_num_value_heads", 32),
        k_head_dim=r.int("linear_key_head_dim", 128), v_head_dim=r.int("linear_value_head_dim", 128),
        conv_kernel=r.int("linear_conv_kernel_dim", 4), projection="grouped_qkvz" if variant == "next" else "separate",
        norm=Norm(kind="rmsnorm", eps=eps),
    )
    mlp = Mlp(gated=True, activation="silu", intermediate_size=c.intermediate_size)
    experts = r.int("num_experts", 512 if variant == "next" else 256, minimum=0 if variant == "next" else 1) if variant != "dense" else 0
    moe, sparse = None, [False] * c.num_layers
    if experts:
        top_k = r.int("num_experts_per_tok", 10 if variant == "next" else 8)
        if top_k > experts:
            raise ConfigError(f"{r.where}: 'num_experts_per_tok' ({top_k}) exceeds 'num_experts' ({experts})")
        moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=r.int("moe_intermediate_size", 512),
                  activation="silu", router="softmax_topk",
                  norm_topk_prob=r.bool("norm_topk_prob", True) if variant == "next" else True,
                  routing_dtype="input", storage="per_expert",
                  shared_expert_size=r.int("shared_expert_intermediate_size", 512), shared_expert_gate=True)
        sparse = _sparse_layers(r, c, experts) if variant == "next" else [True] * c.num_layers
    elif variant == "next":
        _sparse_layers(r, c, experts)  # read; no experts
    layers = tuple(
        Layer(index=i, mixer=gdn if kind == "linear_attention" else attention,
              ffn=moe if moe is not None and is_sparse else mlp, block="pre_norm", norm=norm)
        for i, (kind, is_sparse) in enumerate(zip(layer_types, sparse))
    )
    head = Head(tied=r.bool("tie_word_embeddings", False))
    embedding = Embedding(vocab_size=c.vocab_size, padding_idx=padding_idx(r, c.vocab_size))
    r.finish(TRAINING_ONLY | MTP_KEYS)
    return Architecture(model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
                        dtype=c.dtype, embedding=embedding, rope=(rope,), layers=layers, final_norm=norm, head=head)


def lower_qwen3_next(r: ConfigReader, model_type: str) -> Architecture:
    """Qwen3-Next: Gated DeltaNet with fused in-projections grouped by key head; experts with a gated shared expert."""
    return _lower(r, model_type, variant="next")


def lower_qwen3_5_text(r: ConfigReader, model_type: str) -> Architecture:
    """Qwen3.5 / Qwen3.6 dense: Gated DeltaNet with separate in-projections, a SwiGLU MLP on every layer."""
    return _lower(r, model_type, variant="dense")


def lower_qwen3_5_moe_text(r: ConfigReader, model_type: str) -> Architecture:
    """Qwen3.5-MoE: Qwen3.5's layers with experts and a gated shared expert on every layer."""
    return _lower(r, model_type, variant="moe")


# --- tiny replicas -------------------------------------------------------------------------------

LINEAR_K_HEADS, LINEAR_V_HEADS, LINEAR_K_DIM, LINEAR_V_DIM = 2, 4, 16, 24


def replica_qwen3_next(tiny: dict[str, Any], arch: Architecture) -> None:
    """Narrow Gated DeltaNet heads (two value heads per key head, k_dim != v_dim); narrow experts."""
    tiny.update(linear_num_key_heads=LINEAR_K_HEADS, linear_num_value_heads=LINEAR_V_HEADS,
                linear_key_head_dim=LINEAR_K_DIM, linear_value_head_dim=LINEAR_V_DIM)
    tiny["head_dim"] = 32  # partial RoPE 0.25: 8 rotated channels
    layers = tiny["num_hidden_layers"]
    tiny.pop("full_attention_interval", None)
    tiny["layer_types"] = ["full_attention" if layer.mixer.kind == "attention" else "linear_attention"
                           for layer in arch.layers[:layers]]
    params = tiny.get("rope_parameters")
    if isinstance(params, dict) and params.get("mrope_section"):
        tiny["rope_parameters"] = {**params, "mrope_section": [2, 1, 1]}  # rotary_dim 8: 4 frequencies
    if tiny["model_type"] == "qwen3_5_moe_text":
        tiny.pop("intermediate_size", None)
    if any(layer.ffn.kind == "moe" for layer in arch.layers):
        tiny.update(num_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K,
                    moe_intermediate_size=REPLICA_EXPERT_WIDTH, shared_expert_intermediate_size=REPLICA_SHARED_WIDTH)
        if tiny.get("mlp_only_layers"):
            tiny["mlp_only_layers"] = [i for i in tiny["mlp_only_layers"] if i < layers]


FAMILIES_QWEN3_NEXT = {"qwen3_next": lower_qwen3_next, "qwen3_5_text": lower_qwen3_5_text,
                       "qwen3_5_moe_text": lower_qwen3_5_moe_text}
REPLICA_QWEN3_NEXT = {name: replica_qwen3_next for name in FAMILIES_QWEN3_NEXT}
