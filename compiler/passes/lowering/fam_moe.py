"""Mixture-of-experts families: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE and Granite-MoE.

Each reads the keys transformers 5's config class and model read, with the same defaults
(``configuration_*.py`` / ``modeling_*.py``), and builds a Llama-like IR whose feed-forward is
a ``Moe`` on the layers transformers makes sparse and a dense ``Mlp`` on the others.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Head, Mlp, Moe, MoeNames, Norm
from ...basics.errors import ConfigError, UnsupportedError
from .families import ACTIVATIONS, LAYER_TYPES, Common, build, read_common, read_layer_types
from .keys_data import aliases
from .reader import ConfigReader
from .rope import lower_rope

# Keys that only shape the training loss (load-balancing loss, router logits as an output,
# Mixtral's router jitter, applied only in training mode): inference logits never read them.
TRAINING_ONLY = frozenset({"output_router_logits", "router_aux_loss_coef", "router_jitter_noise"})
# Replica: experts and routing kept, widths shrunk.
REPLICA_EXPERTS, REPLICA_TOP_K, REPLICA_EXPERT_WIDTH, REPLICA_SHARED_WIDTH = 8, 4, 32, 48


def _experts(r: ConfigReader, count_key: str, default_count: int, default_k: int) -> tuple[int, int]:
    experts = r.int(count_key, default_count, minimum=0)
    other = "num_local_experts" if count_key == "num_experts" else "num_experts"
    mapped = aliases(str(r.raw.get("model_type")))  # transformers' attribute_map: two names, one attribute
    if r.has(other) and (mapped.get(other) == count_key or mapped.get(count_key) == other):
        value = r.int(other, minimum=0)
        if r.has(count_key) and value != experts:
            raise ConfigError(f"{r.where}: '{other}' ({value}) and its alias '{count_key}' ({experts}) differ")
        experts = value
    top_k = r.int("num_experts_per_tok", default_k)
    if experts and top_k > experts:
        raise ConfigError(f"{r.where}: 'num_experts_per_tok' ({top_k}) exceeds '{count_key}' ({experts})")
    return experts, top_k


def _activation(r: ConfigReader) -> str:
    activation = r.str("hidden_act", "silu", choices=ACTIVATIONS)
    if activation == "gelu_new":
        raise UnsupportedError(f"{r.where}: key 'hidden_act' = 'gelu_new' is not supported for experts")
    return activation


def _full_attention_only(r: ConfigReader, c: Common) -> list[str]:
    """Qwen-MoE: a sliding window is refused (not implemented for these families)."""
    if r.bool("use_sliding_window", False):
        raise UnsupportedError(f"{r.where}: key 'use_sliding_window' = true is not supported for model_type "
                               f"{r.raw.get('model_type')!r}")
    r.any("sliding_window")  # read only when use_sliding_window is true
    r.int("max_window_layers", 28, minimum=0)  # likewise
    layer_types = read_layer_types(r, c.num_layers, ["full_attention"] * c.num_layers)
    if "sliding_attention" in layer_types:
        raise UnsupportedError(f"{r.where}: 'layer_types' with sliding_attention is not supported for this model_type")
    return layer_types


def _sparse_layers(r: ConfigReader, c: Common, experts: int) -> list[bool]:
    """Qwen-MoE: layer i is sparse unless listed in mlp_only_layers or off the decoder_sparse_step grid."""
    step = r.int("decoder_sparse_step", 1)
    dense = r.any("mlp_only_layers", None)
    dense = [] if dense is None else dense
    if not isinstance(dense, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense):
        raise ConfigError(f"{r.where}: key 'mlp_only_layers' must be a list of layer indices")
    if any(not 0 <= i < c.num_layers for i in dense):
        raise ConfigError(f"{r.where}: key 'mlp_only_layers' has an index outside 0..{c.num_layers - 1}")
    return [experts > 0 and i not in dense and (i + 1) % step == 0 for i in range(c.num_layers)]


def _assemble(
    r: ConfigReader, c: Common, model_type: str, *, moe: Moe | None, sparse: list[bool], names: dict[str, str],
    theta: float, norm: Norm, attention: dict[str, Any], mlp: Mlp, head: Head, layer_types: list[str] | None = None,
    window: int | None = None, embed_scale: float | None = None, residual_scale: float | None = None,
) -> Architecture:
    layer_types = layer_types or ["full_attention"] * c.num_layers
    ropes = lower_rope(r, head_dim=c.head_dim, layer_types=set(layer_types), default_theta={t: theta for t in LAYER_TYPES})
    arch = build(r, c, layer_types=layer_types, window=window, ropes=ropes, norm=norm, attention=attention, mlp=mlp,
                 block="pre_norm", embed_scale=embed_scale, head=head, model_type=model_type,
                 extra_allowed=TRAINING_ONLY)
    layers = tuple(
        layer.model_copy(update={"ffn": moe if moe is not None and is_sparse else layer.ffn,
                                 "residual_scale": residual_scale})
        for layer, is_sparse in zip(arch.layers, sparse)
    )
    return arch.model_copy(update={"layers": layers, "names": arch.names.model_copy(update=names)})


def lower_mixtral(r: ConfigReader, model_type: str) -> Architecture:
    """Mixtral: Mistral's block with a softmax top-k router over per-expert SwiGLU MLPs (w1, w3, w2)."""
    c = read_common(r, kv_default=8, head_dim_default=None, max_pos=4096 * 32)
    window = r.int("sliding_window", None, nullable=True)
    experts, top_k = _experts(r, "num_local_experts", 8, 2)
    if experts < 1:
        raise ConfigError(f"{r.where}: key 'num_local_experts' must be >= 1, got {experts}")
    activation = _activation(r)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=c.intermediate_size, activation=activation,
              router="softmax_topk", norm_topk_prob=True, routing_dtype="float32", storage="per_expert",
              names=MoeNames(gate="w1", up="w3", down="w2"))
    kind = "sliding_attention" if window is not None else "full_attention"
    return _assemble(
        r, c, model_type, moe=moe, sparse=[True] * c.num_layers, names={"mlp": "block_sparse_moe"}, theta=1e6,
        norm=Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5)), attention=dict(scale=c.head_dim**-0.5),
        mlp=Mlp(gated=True, activation=activation, intermediate_size=c.intermediate_size),
        head=Head(tied=r.bool("tie_word_embeddings", False)), layer_types=[kind] * c.num_layers, window=window,
    )


def _qwen_moe(r: ConfigReader, model_type: str, c: Common, *, shared: bool, qk_norm: bool, bias: dict[str, bool]) -> Architecture:
    layer_types = _full_attention_only(r, c)
    experts, top_k = _experts(r, "num_experts", 60 if shared else 128, 4 if shared else 8)
    sparse = _sparse_layers(r, c, experts)
    activation = _activation(r)
    moe_width = r.int("moe_intermediate_size", 1408 if shared else 768)
    norm_topk = r.bool("norm_topk_prob", False)
    shared_width = r.int("shared_expert_intermediate_size", 5632) if shared else None
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=moe_width, activation=activation,
              router="softmax_topk", norm_topk_prob=norm_topk, routing_dtype="input", storage="per_expert",
              shared_expert_size=shared_width, shared_expert_gate=shared) if experts else None
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6))
    attention: dict[str, Any] = dict(scale=c.head_dim**-0.5, **bias)
    if qk_norm:
        attention.update(qk_norm="per_head", qk_norm_spec=norm)
    return _assemble(
        r, c, model_type, moe=moe, sparse=sparse, names={}, theta=10000.0, norm=norm, attention=attention,
        mlp=Mlp(gated=True, activation=activation, intermediate_size=c.intermediate_size),
        head=Head(tied=r.bool("tie_word_embeddings", False)), layer_types=layer_types,
    )


def lower_qwen2_moe(r: ConfigReader, model_type: str) -> Architecture:
    """Qwen2-MoE (Qwen1.5-MoE): Qwen2's block; routed experts plus a shared expert behind a sigmoid gate."""
    c = read_common(r, kv_default=16, head_dim_default=None, max_pos=32768)
    qkv = r.bool("qkv_bias", True)
    return _qwen_moe(r, model_type, c, shared=True, qk_norm=False, bias=dict(q_bias=qkv, k_bias=qkv, v_bias=qkv))


def lower_qwen3_moe(r: ConfigReader, model_type: str) -> Architecture:
    """Qwen3-MoE: Qwen3's block (QK-norm per head); routed experts, no shared expert."""
    c = read_common(r, kv_default=4, head_dim_default=None, max_pos=32768)
    b = r.bool("attention_bias", False)
    return _qwen_moe(r, model_type, c, shared=False, qk_norm=True, bias=dict(q_bias=b, k_bias=b, v_bias=b, o_bias=b))


def _derived_head_dim(r: ConfigReader, c: Common) -> None:
    if c.head_dim * c.num_heads != c.hidden_size:
        raise UnsupportedError(f"{r.where}: key 'head_dim' ({c.head_dim}) must equal hidden_size / num_attention_heads "
                               f"for model_type {r.raw.get('model_type')!r}")


def lower_olmoe(r: ConfigReader, model_type: str) -> Architecture:
    """OLMoE: Llama's pre-norm block with QK-norm over whole projections; every layer a softmax top-k MoE."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=4096)
    _derived_head_dim(r, c)  # OLMoE sizes its k_norm from hidden / heads
    r.require_value("clip_qkv", (None,), None)
    experts, top_k = _experts(r, "num_experts", 64, 8)
    if experts < 1:
        raise ConfigError(f"{r.where}: key 'num_experts' must be >= 1, got {experts}")
    activation = _activation(r)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=c.intermediate_size, activation=activation,
              router="softmax_topk", norm_topk_prob=r.bool("norm_topk_prob", False), routing_dtype="input",
              storage="per_expert")
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5))
    b = r.bool("attention_bias", False)
    return _assemble(
        r, c, model_type, moe=moe, sparse=[True] * c.num_layers, names={}, theta=10000.0, norm=norm,
        attention=dict(scale=c.head_dim**-0.5, q_bias=b, k_bias=b, v_bias=b, o_bias=b, qk_norm="whole", qk_norm_spec=norm),
        mlp=Mlp(gated=True, activation=activation, intermediate_size=c.intermediate_size),
        head=Head(tied=r.bool("tie_word_embeddings", False)),
    )


def lower_granitemoe(r: ConfigReader, model_type: str) -> Architecture:
    """Granite-MoE: Granite's muP multipliers; top-k logits then softmax, experts stacked on disk."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=2048)
    experts, top_k = _experts(r, "num_local_experts", 8, 2)
    if experts < 1:
        raise ConfigError(f"{r.where}: key 'num_local_experts' must be >= 1, got {experts}")
    activation = _activation(r)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=c.intermediate_size, activation=activation,
              router="topk_softmax", routing_dtype="input", storage="stacked",
              names=MoeNames(router="router", router_inner="layer", fused_block="block_sparse_moe", fused_router="router"))
    b = r.bool("attention_bias", False)
    embedding = r.float("embedding_multiplier", 1.0)
    residual = r.float("residual_multiplier", 1.0)
    divisor = r.float("logits_scaling", 1.0)
    arch = _assemble(
        r, c, model_type, moe=moe, sparse=[True] * c.num_layers, names={"mlp": "block_sparse_moe"}, theta=10000.0,
        norm=Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6)),
        attention=dict(scale=r.float("attention_multiplier", 1.0), q_bias=b, k_bias=b, v_bias=b, o_bias=b),
        mlp=Mlp(gated=True, activation=activation, intermediate_size=c.intermediate_size),
        head=Head(tied=r.bool("tie_word_embeddings", False), divisor=None if divisor == 1.0 else divisor),
        embed_scale=None if embedding == 1.0 else embedding, residual_scale=None if residual == 1.0 else residual,
    )
    return arch.model_copy(update={"embedding": arch.embedding.model_copy(update={"scale_in_dtype": False})})


# --- tiny replicas -------------------------------------------------------------------------------


def _ffn_letters(arch: Architecture) -> str:
    return "".join("E" if layer.ffn.kind == "moe" else "D" for layer in arch.layers)


def replica_moe(tiny: dict[str, Any], arch: Architecture) -> None:
    """Eight experts, top 2, narrow experts; a dense layer kept where the original mixes them."""
    model_type = tiny["model_type"]
    count_key = "num_local_experts" if model_type in ("mixtral", "granitemoe") else "num_experts"
    tiny[count_key] = REPLICA_EXPERTS
    tiny["num_experts_per_tok"] = REPLICA_TOP_K
    if model_type in ("qwen2_moe", "qwen3_moe"):
        tiny["moe_intermediate_size"] = REPLICA_EXPERT_WIDTH
        if model_type == "qwen2_moe":
            tiny["shared_expert_intermediate_size"] = REPLICA_SHARED_WIDTH
        letters = _ffn_letters(arch)
        if len(set(letters)) > 1:  # keep both kinds: the shortest prefix holding each, plus one
            need = max(letters.index("E"), letters.index("D")) + 2
            if need > 6:
                tiny.update(decoder_sparse_step=1, mlp_only_layers=[1])
                need = 3
            tiny["num_hidden_layers"] = max(tiny["num_hidden_layers"], min(need, arch.num_layers))
        layers = tiny["num_hidden_layers"]
        tiny["mlp_only_layers"] = [i for i in tiny.get("mlp_only_layers") or [] if i < layers]
        if isinstance(tiny.get("layer_types"), list):
            tiny["layer_types"] = ["full_attention"] * layers


FAMILIES_MOE = {"mixtral": lower_mixtral, "qwen2_moe": lower_qwen2_moe, "qwen3_moe": lower_qwen3_moe,
                "olmoe": lower_olmoe, "granitemoe": lower_granitemoe}
REPLICA_MOE = {name: replica_moe for name in FAMILIES_MOE}
