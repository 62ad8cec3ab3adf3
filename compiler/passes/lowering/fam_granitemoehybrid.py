"""Granite 4.0-H (``granitemoehybrid``): Mamba-2 layers and softmax attention (NoPE unless
``position_embedding_type`` is "rope") in pre-norm blocks, Granite's muP multipliers (embedding, attention
score, residual branch, logits), and a SwiGLU ``shared_mlp`` after every mixer, its [gate; up] stored as one
matrix (``input_linear``).

With routed experts (``num_local_experts`` > 0, the config class's default: Granite 4.0-H Tiny / Small) every
layer's feed-forward is Granite-MoE's experts block (``block_sparse_moe``: a router, top-k logits softmaxed over
those k, experts stacked on disk as input_linear [gate; up] and output_linear) and the shared MLP is a module of
the layer beside it, fed the same normed input, its output added to the experts'.

Reads exactly the keys transformers 5.24's GraniteMoeHybridConfig and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, Head, Layer, Mlp, Moe, MoeNames, Names, Norm
from ...basics.errors import ConfigError, UnsupportedError
from .fam_mamba2 import MAMBA_INIT_ONLY, _reason, drop_infinite_limit, read_mamba2, time_step_limit
from .fam_moe import REPLICA_EXPERT_WIDTH, REPLICA_EXPERTS, REPLICA_TOP_K, TRAINING_ONLY
from .families import padding_idx, read_common
from .reader import ConfigReader
from .registry import family
from .rope import lower_rope

KEYS = dict(num_heads="mamba_n_heads", head_dim="mamba_d_head", expand="mamba_expand", state_size="mamba_d_state",
            n_groups="mamba_n_groups", conv_kernel="mamba_d_conv", conv_bias="mamba_conv_bias",
            proj_bias="mamba_proj_bias", chunk_size="mamba_chunk_size", act="hidden_act")
TYPES = {"linear_attention": "mamba", "mamba": "mamba", "full_attention": "attention", "attention": "attention"}


def _layer_types(r: ConfigReader, count: int) -> list[str]:
    """``layer_types`` (also spelled ``layers_block_type``, or with the legacy names mamba / attention)."""
    types = r.any("layer_types", None)
    if types is None:
        types = r.any("layers_block_type", None)
    if types is None:
        return ["mamba"] * count  # the config class's default: every layer Mamba-2
    if not isinstance(types, list) or len(types) != count or not all(t in TYPES for t in types):
        raise ConfigError(f"{r.where}: 'layer_types' must list {count} entries of {', '.join(sorted(TYPES))}")
    return [TYPES[t] for t in types]


def _replica(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers (Mamba-2, attention if the model has any, Mamba-2); narrow Mamba-2 heads in two groups."""
    attention = any(layer.mixer.kind == "attention" for layer in arch.layers)
    tiny.pop("layers_block_type", None)
    tiny.update(num_hidden_layers=3, layer_types=["mamba", "attention" if attention else "mamba", "mamba"],
                shared_intermediate_size=96, mamba_n_heads=8, mamba_d_head=16, mamba_expand=2,
                mamba_d_state=16, mamba_n_groups=2, mamba_chunk_size=8)
    drop_infinite_limit(tiny)
    if tiny.get("num_local_experts", 8):  # routed experts (the config class's default): 8 narrow ones
        tiny.update(num_local_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K,
                    intermediate_size=REPLICA_EXPERT_WIDTH)
    if not attention:  # transformers cannot measure a cache without attention layers: run it without one
        tiny.update(use_cache=False, num_key_value_heads=2)  # (and the unused kv heads must divide the query heads)


def _experts(r: ConfigReader, experts: int, top_k: int, shared: int, act: str, width: int) -> Moe:
    """Granite-MoE's experts block with the layer's shared MLP beside it (Granite 4.0-H Tiny / Small)."""
    if not shared:
        raise UnsupportedError(f"{r.where}: key 'shared_intermediate_size' = 0 beside routed experts is not supported")
    try:
        return Moe(num_experts=experts, top_k=top_k, intermediate_size=width, activation=act,
                   router="topk_softmax", routing_dtype="input", storage="stacked", shared_expert_size=shared,
                   shared_expert_in_layer=True,
                   names=MoeNames(router="router", router_inner="layer", fused_block="block_sparse_moe",
                                  fused_router="router", shared_expert="shared_mlp", shared_gate_up="input_linear",
                                  shared_down="output_linear"))
    except ValueError as error:
        raise ConfigError(f"{r.where}: the experts' sizes do not fit: {_reason(error)}") from None


@family("granitemoehybrid", title="Granite 4.0-H", replica=_replica)
def lower_granitemoehybrid(r: ConfigReader, model_type: str) -> Architecture:
    """Granite 4.0-H: Mamba-2 / NoPE attention, muP multipliers, a fused SwiGLU shared MLP per layer (beside
    routed experts when num_local_experts > 0)."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=2048)
    experts = r.int("num_local_experts", 8, minimum=0)
    top_k = r.int("num_experts_per_tok", 2)  # without experts it changes nothing
    eps = r.float("rms_norm_eps", 1e-6)
    norm = Norm(kind="rmsnorm", eps=eps)
    mamba = read_mamba2(r, c.hidden_size, eps, keys=KEYS, limit=time_step_limit(r),
                        defaults=dict(num_heads=128, head_dim="auto", expand=2, state_size=256, n_groups=1, chunk_size=256))
    types = _layer_types(r, c.num_layers)
    position = r.any("position_embedding_type", None)
    if position not in (None, "rope", "nope"):
        raise UnsupportedError(f"{r.where}: key 'position_embedding_type' = {position!r:.30} is not supported (rope or none)")
    ropes = ()
    if position == "rope":
        ropes = (lower_rope(r, head_dim=c.head_dim, layer_types={"full_attention"},
                            default_theta={"full_attention": 10000.0, "sliding_attention": 10000.0})["full_attention"],)
    else:
        for key in ("rope_parameters", "rope_theta", "rope_scaling", "partial_rotary_factor"):
            r.any(key, None)  # read: without RoPE nothing uses them
    bias = r.bool("attention_bias", False)
    attention = Attention(span="full", num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                          rope=ropes[0].name if ropes else None, q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias,
                          scale=r.float("attention_multiplier", 1.0))
    act = r.str("hidden_act", "silu", choices={"silu": "silu", "swish": "silu"})
    shared = r.int("shared_intermediate_size", 1024)
    mlp = Mlp(gated=True, activation=act, intermediate_size=shared, fused_gate_up=True)
    names = Names(mlp="shared_mlp", gate_up="input_linear", down="output_linear")
    if experts:
        mlp, names = _experts(r, experts, top_k, shared, act, c.intermediate_size), Names(mlp="block_sparse_moe")
    residual = r.float("residual_multiplier", 1.0)
    layers = tuple(Layer(index=i, mixer=attention if t == "attention" else mamba, ffn=mlp, block="pre_norm", norm=norm,
                         residual_scale=None if residual == 1.0 else residual) for i, t in enumerate(types))
    embedding_scale = r.float("embedding_multiplier", 1.0)
    embedding = Embedding(vocab_size=c.vocab_size, padding_idx=padding_idx(r, c.vocab_size),
                          scale=None if embedding_scale == 1.0 else embedding_scale, scale_in_dtype=False)
    divisor = r.float("logits_scaling", 1.0)
    head = Head(tied=r.bool("tie_word_embeddings", False), divisor=None if divisor == 1.0 else divisor)
    r.finish(MAMBA_INIT_ONLY | TRAINING_ONLY)
    used_ropes = ropes if any(layer.mixer.kind == "attention" for layer in layers) else ()
    return Architecture(model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
                        dtype=c.dtype, embedding=embedding, rope=used_ropes, layers=layers, final_norm=norm, head=head,
                        names=names)
