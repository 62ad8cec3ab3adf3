"""Step-3.5 (``step3p5``): the text decoder of Step-3.7-Flash's ``step3p7`` wrapper.

transformers 5.24 has no ``step3p5`` model of its own: its Step3p7TextConfig (model_type ``step3p5``) is read
inside a ``step3p7`` config's ``text_config`` and built by Step3p7ForConditionalGeneration beside a vision
tower. As that model computes text logits: Gemma-style (1 + w) RMSNorms, a per-head QK-norm, sliding /
full layers (``layer_types``; the sliding ones may have more query heads, ``num_sliding_attention_heads``
or the legacy ``attention_other_setting``), scale ``query_pre_attn_scalar``^-0.5, one sigmoid gate per head
from its own projection (``g_proj``, ``gating``), RoPE per layer kind (``rope_theta`` and
``partial_rotary_factors`` may be per-layer lists: each kind takes its first layer's value); the first layers
dense (``mlp_layer_types``, else ``moe_layers_enum``, else layers 3 on routed), the others routed experts
with a sigmoid router whose correction bias only chooses, the kept weights renormalised, the routed sum
scaled by ``moe_router_scaling_factor`` (the sum, not the weights, as there), plus one
shared expert of ``share_expert_dim``. The hub checkpoint stacks each expert projection (``moe.gate_proj``
...), keeps the shared expert in the layer (``share_expert``) and the multi-token-prediction layers after
the decoder's; the loader maps them.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe, MoeNames, Norm
from ...basics.errors import ConfigError, UnsupportedError
from .families import LAYER_TYPES
from .llama_like import common
from .moe_like import moe_like
from .reader import ConfigReader
from .registry import family
from .replica import WINDOW

REPLICA_EXPERTS, REPLICA_TOP_K, REPLICA_EXPERT_WIDTH, REPLICA_SHARED = 8, 6, 32, 48
REPLICA_LAYERS = 5  # full + dense, sliding + dense twice, sliding + routed, full + routed
# Keys of the legacy attention_other_setting transformers does not read: accepted when they restate the model.
OTHER_SETTING = {"num_attention_groups": "num_key_value_heads", "head_dim": "head_dim", "true_head_dim": "head_dim"}


def _agree(r: ConfigReader, key: str, used: Any, what: str) -> None:
    value = r.any(key, None)
    if value is not None and value != used:
        raise UnsupportedError(f"{r.where}: key '{key}' = {value!r:.60} disagrees with the {what} transformers "
                               f"builds ({used!r:.60}); it ignores the key")


def _trimmed(r: ConfigReader, key: str, layers: int, mtp: int) -> Any:
    """A per-layer list; legacy configs pad it with one entry per multi-token-prediction layer (dropped)."""
    value = r.any(key, None)
    if isinstance(value, list) and mtp and len(value) == layers + mtp:
        return value[:layers]
    if value is not None and (not isinstance(value, list) or len(value) != layers):
        raise ConfigError(f"{r.where}: key '{key}' must be a list of {layers} entries (one per layer)")
    return value


def _sliding_heads(r: ConfigReader, heads: int, kv: int, head_dim: int) -> int:
    given = r.int("num_sliding_attention_heads", None, nullable=True)
    other = r.any("attention_other_setting", None)
    if given is None and other:
        if not isinstance(other, dict):
            raise ConfigError(f"{r.where}: key 'attention_other_setting' must be an object")
        values = {"num_key_value_heads": kv, "head_dim": head_dim}
        for key, value in other.items():
            if key == "num_attention_heads" or (key == "attention_type" and value == "sliding_attention"):
                continue
            if key not in OTHER_SETTING or value != values[OTHER_SETTING[key]]:
                raise UnsupportedError(f"{r.where}: 'attention_other_setting' entry '{key}' = {value!r:.40} is not "
                                       "supported (transformers reads only its num_attention_heads)")
        given = other.get("num_attention_heads", heads)
    given = heads if given is None else given
    if not isinstance(given, int) or given < 1 or given % kv:
        raise ConfigError(f"{r.where}: the sliding layers' heads ({given!r:.20}) must be a multiple of "
                          f"'num_key_value_heads' ({kv})")
    return given


def _ropes(r: ConfigReader, layer_types: list[str], mtp: int) -> None:
    """rope_parameters per layer kind as transformers builds them (on a copy of the config for lower_rope)."""
    params = r.any("rope_parameters", None)
    kinds = sorted(set(layer_types))
    if isinstance(params, dict) and all(isinstance(params.get(kind), dict) for kind in kinds):
        params = {kind: {"partial_rotary_factor": 1.0, **params[kind]} for kind in kinds}
        r.any("rope_theta"), r.any("partial_rotary_factors"), r.any("rope_scaling")  # ignored beside them
    else:
        n = len(layer_types)
        theta = _trimmed(r, "rope_theta", n, mtp) if isinstance(r.raw.get("rope_theta"), list) else r.float("rope_theta", 10000.0)
        partial = _trimmed(r, "partial_rotary_factors", n, mtp)
        params = {}
        for kind in kinds:
            i = layer_types.index(kind)
            params[kind] = {"rope_type": "default", "rope_theta": theta[i] if isinstance(theta, list) else theta,
                            "partial_rotary_factor": partial[i] if partial else 1.0}
        scaling = r.any("rope_scaling", None)
        if scaling and "full_attention" in params:
            params["full_attention"] = {**params["full_attention"], **scaling}
    _agree(r, "partial_rotary_factor", None, "rotated fraction (per layer kind, partial_rotary_factors)")
    r.raw = {**{k: v for k, v in r.raw.items() if k != "rope_scaling"}, "rope_parameters": params}


def replica_step3p5(tiny: dict[str, Any], arch: Architecture) -> None:
    """Five layers (full + dense, sliding + dense twice, sliding + routed, full + routed; one kind throughout when the
    model has one), 8 experts, top 6, a narrow
    shared expert; the sliding layers keep twice the full layers' heads when the model has more there."""
    heads = {layer.mixer.span: layer.mixer.num_heads for layer in arch.layers}
    full, sliding = heads.get("full", 0), heads.get("sliding", 0)
    kinds = ["full_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]
    if not sliding or not full:  # one kind only (the config class's default: every layer full)
        kinds = [f"{'sliding' if sliding else 'full'}_attention"] * REPLICA_LAYERS
    tiny.update(num_hidden_layers=REPLICA_LAYERS, layer_types=kinds, n_routed_experts=REPLICA_EXPERTS,
                num_experts_per_tok=REPLICA_TOP_K, moe_intermediate_size=REPLICA_EXPERT_WIDTH,
                share_expert_dim=REPLICA_SHARED)
    for key in ("num_experts", "moe_num_experts"):
        if key in tiny:
            tiny[key] = REPLICA_EXPERTS
    for key in ("mlp_layer_types", "moe_layers_enum", "moe_layer_freq", "rope_theta", "partial_rotary_factors"):
        value = tiny.get(key)
        if isinstance(value, list):
            tiny[key] = value[:3] + value[-2:] if key != "mlp_layer_types" else ["dense"] * 3 + ["sparse"] * 2
    tiny.pop("per_layer_config", None)  # a saved config's copy (per layer index): transformers rebuilds it
    if tiny.get("query_pre_attn_scalar") is not None:  # the scale stays head_dim^-0.5 if it was
        full_dim = arch.layers[0].mixer.head_dim
        scalar = tiny["query_pre_attn_scalar"]
        tiny["query_pre_attn_scalar"] = tiny.get("head_dim", scalar) if scalar == full_dim else scalar
    if tiny.get("sliding_window") is None:  # transformers' model builds a sliding mask even when no layer uses one
        tiny["sliding_window"] = WINDOW
    if tiny.get("first_k_dense_replace") is not None:
        tiny["first_k_dense_replace"] = 3
    heads = tiny["num_attention_heads"] * (2 if sliding > full else 1)
    if tiny.get("num_sliding_attention_heads") is not None:
        tiny["num_sliding_attention_heads"] = heads
    other = tiny.get("attention_other_setting")
    if isinstance(other, dict):
        tiny["attention_other_setting"] = {**other, "num_attention_heads": heads,
                                           **{k: tiny[v] for k, v in OTHER_SETTING.items() if k in other}}


@family("step3p5", title="Step-3.5", replica=replica_step3p5, pad_token_id=1)
def lower_step3p5(r: ConfigReader, model_type: str) -> Architecture:
    if r.where == "config":
        raise UnsupportedError(f"{r.where}: model_type 'step3p5' is the text decoder of a 'step3p7' config (transformers "
                               "5.24 builds it only inside Step3p7ForConditionalGeneration): give that config")
    c = common(r, kv=8, head_dim=128, max_pos=128000)
    mtp = r.int("num_nextn_predict_layers", 0, minimum=0) if r.has("num_nextn_predict_layers") else r.int("num_mtp_layers", 0, minimum=0)
    layer_types = _trimmed(r, "layer_types", c.num_layers, mtp) or ["full_attention"] * c.num_layers
    for key in ("mtp_layer_types", "mtp_mlp_layer_types"):  # the multi-token-prediction layers': never in the logits
        r.any(key)
    if not set(layer_types) <= set(LAYER_TYPES):
        raise UnsupportedError(f"{r.where}: 'layer_types' holds a kind other than {', '.join(LAYER_TYPES)}")
    if r.bool("use_bidirectional_attention", False):
        raise UnsupportedError(f"{r.where}: key 'use_bidirectional_attention' = true is not supported")
    if r.any("sparse_attention_config", None):
        raise UnsupportedError(f"{r.where}: key 'sparse_attention_config' (sparse attention layers) is not supported")
    gating = r.any("gating", True)
    if gating is not True and gating != "per-head":  # any other value builds a gate transformers cannot apply
        raise UnsupportedError(f"{r.where}: key 'gating' = {gating!r:.40} is not supported (only true, 'per-head')")
    sliding_heads = _sliding_heads(r, c.num_heads, c.num_kv_heads, c.head_dim)
    per_layer = r.any("per_layer_config", None)  # written on save: must restate the sliding layers' heads
    if per_layer:  # saved with zero-padded layer indices as keys ("01")
        expected = {i: {"num_attention_heads": sliding_heads} for i, t in enumerate(layer_types) if t == "sliding_attention"}
        if not isinstance(per_layer, dict) or not all(str(k).isdigit() for k in per_layer):
            raise ConfigError(f"{r.where}: key 'per_layer_config' must map layer indices to objects")
        if {int(k): v for k, v in per_layer.items()} != expected:
            raise UnsupportedError(f"{r.where}: key 'per_layer_config' other than the sliding layers' head count is not supported")
    scalar = r.float("query_pre_attn_scalar", None, nullable=True) or c.head_dim
    for key in ("swiglu_limits", "swiglu_limits_shared"):
        limits = _trimmed(r, key, c.num_layers, mtp) or []
        if any(limit for limit in limits):
            raise UnsupportedError(f"{r.where}: key '{key}' (clamped SwiGLU) is not supported yet")
    if r.bool("mlp_bias", False):
        raise UnsupportedError(f"{r.where}: key 'mlp_bias' = true is not supported for model_type 'step3p5'")
    r.any("hidden_act")  # transformers replaces it by silu whatever it says (the hub's "swigluoai"): so does this copy
    r.raw = {**r.raw, "hidden_act": "silu"}
    kinds = _trimmed(r, "mlp_layer_types", c.num_layers, mtp)
    enum = r.any("moe_layers_enum", None)
    if kinds is None:
        items = (enum.split(",") if isinstance(enum, str) else enum) if enum is not None else range(3, c.num_layers)
        routed = {int(i) for i in items if str(i).strip()}
        kinds = ["sparse" if i in routed else "dense" for i in range(c.num_layers)]
    if not set(kinds) <= {"dense", "sparse"}:
        raise ConfigError(f"{r.where}: key 'mlp_layer_types' must list 'dense' or 'sparse' for each layer")
    sparse = [kind == "sparse" for kind in kinds]
    _agree(r, "moe_layer_freq", [int(s) for s in sparse], "routed layers")
    leading = next((i for i, s in enumerate(sparse) if s), c.num_layers)
    _agree(r, "first_k_dense_replace", leading, "leading dense layers")
    experts = r.int("n_routed_experts", None, nullable=True) or r.int("moe_num_experts", 288)
    _agree(r, "num_experts", experts, "routed experts (n_routed_experts)")
    top_k = r.int("num_experts_per_tok", None, nullable=True) or r.int("moe_top_k", 8)
    if top_k > experts:
        raise ConfigError(f"{r.where}: 'num_experts_per_tok' ({top_k}) exceeds the experts ({experts})")
    _agree(r, "num_local_experts", experts, "routed experts (n_routed_experts, which it aliases)")
    shared = r.int("share_expert_dim", None, nullable=True) or r.int("share_expert_dims", 1280)
    _agree(r, "n_shared_experts", 1, "shared experts (one)")
    _agree(r, "scoring_func", "sigmoid", "router scores")
    _agree(r, "use_moe_router_bias", True, "router's correction bias")
    scaling = r.float("moe_router_scaling_factor", 1.0)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=r.int("moe_intermediate_size", 1280), activation="silu",
              router="sigmoid_topk", norm_topk_prob=True, sigmoid_float32=True, score_correction_bias=True,
              routed_scaling_factor=None if scaling == 1.0 else scaling, scale_routed_sum=scaling != 1.0,
              routing_dtype="float32", storage="per_expert",
              shared_expert_size=shared, names=MoeNames(shared_expert="shared_experts", hub_block="moe",
                                                        hub_bias="router_bias", hub_shared="share_expert"))
    _ropes(r, layer_types, mtp)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5), weight_offset=1.0, weight_in_compute_dtype=True)
    bias = r.bool("attention_bias", False)
    arch = moe_like(r, model_type, c, moe, sparse, norm=norm, qkv_bias=bias, o_bias=bias, qk_norm="per_head",
                    partial_rotary=True, layer_types=layer_types, window=r.int("sliding_window", None, nullable=True),
                    scale=float(scalar) ** -0.5, head_gate=True)
    layers = tuple(layer.model_copy(update={"mixer": layer.mixer.model_copy(update={"num_heads": sliding_heads})})
                   if layer.mixer.span == "sliding" else layer for layer in arch.layers)
    return arch.model_copy(update={"layers": layers, "extra_checkpoint_layers": mtp})
