"""Gemma 4 text decoder (``gemma4_text``; the ``gemma4`` wrapper's text_config).

Reads the keys transformers 5.24's Gemma4TextConfig and Gemma4TextModel read, with the same defaults:
Gemma 3's sandwich block with plain-weight RMSNorms (weight 1 is neutral), per-head q/k norms and an
unweighted value norm, attention scale 1; sliding / full layers where the full layers have their own
head_dim (``global_head_dim``) and, with ``attention_k_eq_v``, their own KV head count
(``num_global_key_value_heads``) and no value projection (values = the raw key projection); the full
layers' "proportional" RoPE; per-layer embeddings (``hidden_size_per_layer_input``); KV sharing (the
last ``num_kv_shared_layers`` layers read the keys and values of the last earlier layer of their type);
routed experts beside the dense MLP (``enable_moe_block``); a stored scalar per layer; a final softcap.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, Head, Layer, Mlp, Moe, MoeNames, Norm, PerLayerInput, Rope
from ...basics.errors import ConfigError, UnsupportedError
from .families import ACTIVATIONS, LAYER_TYPES, padding_idx, read_common, read_layer_types
from .reader import ConfigReader
from .registry import family
from .rope import rope_table

DEFAULT_ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0}}
EXPERT_NAMES = MoeNames(router="router", router_inner="proj", experts="experts", fused_gate_up="gate_up_proj",
                        fused_down="down_proj")


def _ropes(r: ConfigReader, layer_types: list[str], head_dims: dict[str, int], max_pos: int) -> dict[str, Any]:
    """One table per layer type, each over its layers' head_dim (transformers' per_layer_config)."""
    params = r.any("rope_parameters", None)
    if params is None:
        params = DEFAULT_ROPE
    if not isinstance(params, dict) or not set(params) <= set(LAYER_TYPES):
        raise ConfigError(f"{r.where}: 'rope_parameters' must give one object per layer type ({', '.join(LAYER_TYPES)})")
    tables = {}
    for layer_type in sorted(set(layer_types)):
        where = f"{r.where}: rope parameters of {layer_type}"
        given = params.get(layer_type)
        if not isinstance(given, dict):
            raise ConfigError(f"{where}: missing (the model builds a RoPE table for every layer type)")
        given = dict(given)
        kind = given.get("rope_type", "default")
        head_dim = head_dims[layer_type]
        name = "local" if layer_type == "sliding_attention" else "global"
        if kind == "proportional":
            unknown = sorted(set(given) - {"rope_type", "rope_theta", "partial_rotary_factor", "factor"})
            if unknown:
                raise ConfigError(f"{where}: unknown key '{unknown[0]}' for rope type 'proportional'")
            theta, partial, factor = (given.get("rope_theta", 10_000.0), given.get("partial_rotary_factor", 1.0),
                                      given.get("factor", 1.0))
            for key, value in (("rope_theta", theta), ("partial_rotary_factor", partial), ("factor", factor)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise ConfigError(f"{where}: '{key}' must be a positive number, got {value!r:.40}")
            if not (partial <= 1 and theta > 1) or int(partial * head_dim // 2) < 1:
                raise ConfigError(f"{where}: 'partial_rotary_factor' must be in (0, 1] and turn at least one "
                                  f"frequency of head_dim {head_dim}, and 'rope_theta' exceed 1")
            if factor != 1:
                raise UnsupportedError(f"{where}: 'factor' with proportional RoPE is not implemented")
            tables[layer_type] = Rope(name=name, type="proportional", theta=float(theta), rotary_dim=head_dim,
                                      partial_rotary_factor=float(partial),
                                      factor=None if factor == 1 else float(factor))
        elif kind == "default":
            if given.get("partial_rotary_factor") not in (None, 1, 1.0):
                raise UnsupportedError(f"{where}: 'partial_rotary_factor' with default RoPE is ignored by transformers' "
                                       "Gemma 4 (it rotates the whole head); refusing rather than guessing")
            given.pop("partial_rotary_factor", None)
            tables[layer_type] = rope_table(name, given, theta=10_000.0, head_dim=head_dim, partial=1.0, where=where,
                                            max_position_embeddings=max_pos, nested=True)
        else:
            raise UnsupportedError(f"{where}: rope type {kind!r:.40} is not supported for Gemma 4 (default, proportional)")
    return tables


def _layer_shapes(r: ConfigReader, layer_types: list[str], base: tuple[int, int], full: tuple[int, int]) -> list[tuple[int, int]]:
    """(head_dim, key/value heads) per layer: transformers 5.24's per_layer_config when the config carries one
    (keys: zero-padded layer indices; global_head_dim and num_global_key_value_heads are then unused), else
    the full layers' global values."""
    given = r.any("per_layer_config", None)
    if given is None:
        return [full if t == "full_attention" else base for t in layer_types]
    if not isinstance(given, dict):
        raise ConfigError(f"{r.where}: 'per_layer_config' must be an object of layer index -> overrides")
    shapes = [base] * len(layer_types)
    for key, overrides in given.items():
        index = int(key) if isinstance(key, str) and key.isdigit() else None
        if index is None or index >= len(layer_types) or not isinstance(overrides, dict):
            raise ConfigError(f"{r.where}: 'per_layer_config' entry {key!r:.20}: expected a layer index below "
                              f"{len(layer_types)} and an object")
        unknown = sorted(set(overrides) - {"head_dim", "num_key_value_heads"})
        if unknown:
            raise UnsupportedError(f"{r.where}: 'per_layer_config' key {unknown[0]!r:.40} is not supported "
                                   "(head_dim, num_key_value_heads)")
        values = []
        for name, default in (("head_dim", base[0]), ("num_key_value_heads", base[1])):
            value = overrides.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{r.where}: 'per_layer_config.{key}.{name}' must be a positive integer")
            values.append(value)
        shapes[index] = (values[0], values[1])
    return shapes


def _kv_sources(r: ConfigReader, layer_types: list[str], shared: int) -> list[int | None]:
    """Gemma4TextConfig.kv_sharing_modes: the last `shared` layers reuse the keys and values of the last
    earlier layer of their type."""
    n = len(layer_types)
    if shared == 0:
        return [None] * n
    if shared >= n:
        raise UnsupportedError(f"{r.where}: 'num_kv_shared_layers' ({shared}) leaves no layer computing keys and values")
    first = n - shared
    sources: list[int | None] = [None] * first
    for i in range(first, n):
        owners = [j for j in range(first) if layer_types[j] == layer_types[i]]
        if not owners:
            raise ConfigError(f"{r.where}: 'num_kv_shared_layers' ({shared}): no earlier {layer_types[i]} layer "
                              f"computes the keys and values layer {i} reuses")
        sources.append(owners[-1])
    return sources


def _experts(r: ConfigReader, enabled: bool) -> Moe | None:
    count = r.int("num_experts", None, nullable=True)
    top_k = r.int("top_k_experts", None, nullable=True)
    width = r.int("moe_intermediate_size", None, nullable=True)
    if not enabled:
        return None
    for key, value in (("num_experts", count), ("top_k_experts", top_k), ("moe_intermediate_size", width)):
        if value is None:
            raise ConfigError(f"{r.where}: 'enable_moe_block' needs key '{key}'")
    activation = r.str("hidden_activation", "gelu_pytorch_tanh", choices=ACTIVATIONS)
    if activation not in ("silu", "gelu", "gelu_tanh", "relu"):
        raise UnsupportedError(f"{r.where}: experts with activation {activation!r} are not supported")
    return Moe(num_experts=count, top_k=top_k, intermediate_size=width, activation=activation, router="softmax_topk",
               norm_topk_prob=True, router_input_scale=True, per_expert_scale=True, routing_dtype="float32",
               storage="fused_out_in", names=EXPERT_NAMES)


def _per_layer_input(r: ConfigReader, hidden: int, norm: Norm, activation: str) -> PerLayerInput | None:
    width = r.int("hidden_size_per_layer_input", 256, minimum=0)
    vocab = r.int("vocab_size_per_layer_input", 262_144)
    if not width:
        return None
    if activation not in ("silu", "gelu", "gelu_tanh", "relu"):
        raise UnsupportedError(f"{r.where}: per-layer inputs with activation {activation!r} are not supported")
    return PerLayerInput(width=width, vocab_size=vocab, embed_scale=width**0.5, projection_scale=hidden**-0.5,
                         combine_scale=2.0**-0.5, norm=norm, activation=activation)


REPLICA_PLE_WIDTH, REPLICA_EXPERTS, REPLICA_TOP_K, REPLICA_EXPERT_WIDTH = 8, 4, 2, 16


def replica_gemma4(tiny: dict[str, Any], arch: Architecture) -> None:
    """Every kind of layer twice (S S F F; with KV sharing, then one reader of each kind), full layers twice
    as wide as sliding ones, one global KV head, small per-layer inputs and experts."""
    from .replica import HEAD_DIM  # replica imports the lowering package: import it late

    tiny.update(head_dim=HEAD_DIM, global_head_dim=2 * HEAD_DIM, vocab_size_per_layer_input=tiny["vocab_size"])
    if tiny.get("num_global_key_value_heads") is not None:
        tiny["num_global_key_value_heads"] = 1
    if tiny.get("hidden_size_per_layer_input", 256):
        tiny["hidden_size_per_layer_input"] = REPLICA_PLE_WIDTH
    if tiny.get("enable_moe_block"):
        tiny.update(num_experts=REPLICA_EXPERTS, top_k_experts=REPLICA_TOP_K, moe_intermediate_size=REPLICA_EXPERT_WIDTH)
    kinds = sorted({layer.mixer.span for layer in arch.layers}, reverse=True)  # sliding first
    types = [f"{span}_attention" for span in kinds for _ in range(2)]
    if any(layer.mixer.kv_shared_from is not None for layer in arch.layers):
        readers = [f"{span}_attention" for span in kinds]
        tiny["num_kv_shared_layers"] = len(readers)
        types += readers
    tiny.update(layer_types=types, num_hidden_layers=len(types))
    if "per_layer_config" in tiny:  # the same overrides for the replica's full layers
        first = next(iter(tiny["per_layer_config"].values()), {})
        full = {"head_dim": 2 * HEAD_DIM, **({"num_key_value_heads": 1} if "num_key_value_heads" in first else {})}
        tiny["per_layer_config"] = {str(i): dict(full) for i, t in enumerate(types) if t == "full_attention"}


@family("gemma4_text", title="Gemma 4 (text decoder)", pad_token_id=0, replica=replica_gemma4)
def lower_gemma4_text(r: ConfigReader, model_type: str) -> Architecture:
    c = read_common(r, kv_default=4, head_dim_default=256, max_pos=131_072)
    bidirectional = r.any("use_bidirectional_attention", None)
    if bidirectional not in (None, "vision"):  # "vision": only image tokens see each other; text stays causal
        raise UnsupportedError(f"{r.where}: key 'use_bidirectional_attention' = {bidirectional!r:.40} is not supported "
                               "(only null or 'vision', causal for text)")
    window = r.int("sliding_window", 512)
    default_types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default_types)
    layer_types[-1] = "full_attention"  # Gemma4TextConfig forces the last layer to full attention
    k_eq_v = r.bool("attention_k_eq_v", False)
    global_head_dim = r.int("global_head_dim", 512)
    global_kv = r.int("num_global_key_value_heads", None, nullable=True)
    full_kv = global_kv if (k_eq_v and global_kv is not None) else c.num_kv_heads
    shapes = _layer_shapes(r, layer_types, (c.head_dim, c.num_kv_heads), (global_head_dim, full_kv))
    for index, (_, kv) in enumerate(shapes):
        if c.num_heads % kv:
            raise ConfigError(f"{r.where}: layer {index}: 'num_attention_heads' ({c.num_heads}) is not a multiple of "
                              f"its key/value heads ({kv})")
    head_dims = {}
    for layer_type, (head_dim, _) in zip(layer_types, shapes):
        if head_dims.setdefault(layer_type, head_dim) != head_dim:
            raise ConfigError(f"{r.where}: the {layer_type} layers differ in head_dim (transformers builds one RoPE "
                              "table per layer type)")
    ropes = _ropes(r, layer_types, head_dims, c.max_position_embeddings)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6), weight_in_compute_dtype=True)
    bias = r.bool("attention_bias", False)
    r.float("attention_dropout", 0.0, positive=False, nullable=True)  # training only
    activation = r.str("hidden_activation", "gelu_pytorch_tanh", choices=ACTIVATIONS)
    sources = _kv_sources(r, layer_types, r.int("num_kv_shared_layers", 0, minimum=0))
    double_wide = r.bool("use_double_wide_mlp", False)
    experts = _experts(r, r.bool("enable_moe_block", False))
    ple = _per_layer_input(r, c.hidden_size, norm, activation)
    head = Head(tied=r.bool("tie_word_embeddings", True), softcap=r.float("final_logit_softcapping", None, nullable=True))
    r.finish()
    layers = []
    for i, layer_type in enumerate(layer_types):
        sliding = layer_type == "sliding_attention"
        attn = Attention(
            span="sliding" if sliding else "full", window=window if sliding else None, num_heads=c.num_heads,
            num_kv_heads=shapes[i][1], head_dim=shapes[i][0],
            rope=ropes[layer_type].name, q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=1.0,
            qk_norm="per_head", qk_norm_spec=norm, v_norm=True, k_eq_v=k_eq_v and not sliding,
            kv_shared_from=sources[i],
        )
        width = c.intermediate_size * (2 if double_wide and sources[i] is not None else 1)
        mlp = Mlp(gated=True, activation=activation, intermediate_size=width)
        layers.append(Layer(index=i, mixer=attn, ffn=mlp, block="sandwich", norm=norm, experts_beside=experts,
                            layer_scalar=True))
    tables = {t.name: t for t in ropes.values()}
    return Architecture(
        model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
        dtype=c.dtype,
        embedding=Embedding(vocab_size=c.vocab_size, scale=c.hidden_size**0.5,
                            padding_idx=padding_idx(r, c.vocab_size)),
        rope=tuple(tables[name] for name in sorted(tables)), layers=tuple(layers), final_norm=norm, head=head,
        per_layer_input=ple,
    )
