"""MiMo-V2-Flash (``mimo_v2_flash``): Llama's pre-norm block with a 5:1 sliding / full attention pattern
whose layer kinds differ in more than the window.

As transformers 5.24's MiMoV2FlashConfig and modeling_mimo_v2_flash.py build it: queries and keys
``head_dim`` wide, values ``v_head_dim`` wide (o_proj reads num_heads x v_head_dim), the values multiplied
by ``attention_value_scale``; sliding layers with twice the full layers' key/value heads and a learned sink
logit per head (the hub checkpoint's ``attention_sink_bias``); partial RoPE (int(head_dim x 0.334)
channels) with a table per layer kind; the first layer a dense MLP, the others DeepSeek-V3-style routed
experts (float32 sigmoid router, a correction bias that only chooses, group-limited choice, renormalised
weights) without shared experts.

The hub config is the remote code's: transformers reads only some of its keys (``sliding_window_size``
+ 1 becomes the window; ``rope_theta``, ``swa_*``, ``hybrid_layer_pattern``, ``moe_layer_freq``,
``layernorm_epsilon``, the sink switches are left to its own defaults). Those are read here and must agree
with what transformers builds, so a config they contradict is refused rather than compiled differently.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe, MoeNames
from ...basics.errors import ConfigError, UnsupportedError
from .fam_deepseek import _grouping
from .fam_hy_v3 import mlp_layer_kinds
from .fam_moe import _activation
from .families import read_layer_types
from .llama_like import common
from .moe_like import moe_like
from .reader import ConfigReader
from .registry import family

# transformers' per-layer-kind RoPE when the config gives no rope_parameters (MiMoV2FlashConfig.__post_init__).
THETA = {"full_attention": 5_000_000.0, "sliding_attention": 10_000.0}
PARTIAL = 0.334  # its compute_default_rope_parameters' default partial_rotary_factor
SINK_NAME = "attention_sink_bias"
MTP_PREFIXES = ("model.mtp.",)  # the hub checkpoint's name of the sinks (transformers renames it on load)
REPLICA_EXPERTS, REPLICA_TOP_K, REPLICA_EXPERT_WIDTH = 8, 6, 32
REPLICA_HEADS, REPLICA_KV, REPLICA_V_HEAD_DIM = 8, 2, 16
REPLICA_GROUPS, REPLICA_TOPK_GROUPS, REPLICA_GROUPED_TOP_K = 4, 3, 5


def _agree(r: ConfigReader, key: str, used: Any, what: str) -> None:
    """A remote-code key transformers does not read: accepted when it says what transformers does anyway."""
    value = r.any(key, None)
    if value is not None and value != used:
        raise UnsupportedError(f"{r.where}: key '{key}' = {value!r:.60} disagrees with the {what} transformers "
                               f"builds ({used!r:.60}); it ignores the key, so the checkpoint would not fit")


def _ropes(r: ConfigReader) -> None:
    """The per-kind rope_parameters transformers uses, on a copy of the config (lower_rope reads them)."""
    params = r.any("rope_parameters", None)
    if params is None:
        _agree(r, "rope_theta", THETA["full_attention"], "full layers' RoPE theta")
        _agree(r, "swa_rope_theta", THETA["sliding_attention"], "sliding layers' RoPE theta")
        _agree(r, "partial_rotary_factor", PARTIAL, "rotated fraction of each head")
        params = {kind: {"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": PARTIAL}
                  for kind, theta in THETA.items()}
    elif not isinstance(params, dict) or set(params) != set(THETA) or not all(isinstance(p, dict) for p in params.values()):
        raise ConfigError(f"{r.where}: key 'rope_parameters' must hold one object for each of {sorted(THETA)}")
    else:  # the model reads partial_rotary_factor from each kind's parameters, 0.334 when missing
        for key in ("rope_theta", "swa_rope_theta", "partial_rotary_factor"):
            r.any(key)  # transformers ignores these beside rope_parameters
        params = {kind: {"partial_rotary_factor": PARTIAL, **p} for kind, p in params.items()}
    for kind, p in params.items():
        if p.get("rope_type", p.get("type", "default")) != "default":
            raise UnsupportedError(f"{r.where}: rope type {p.get('rope_type')!r:.40} of {kind} is not supported for "
                                   "model_type 'mimo_v2_flash' (its partial rotation is written for default RoPE)")
    r.raw = {**r.raw, "rope_parameters": params}


def replica_mimo(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers (full + dense, then sliding + routed twice), grouped queries on both kinds (8 heads, 2 and
    4 key/value heads), value heads half as wide as the keys', 8 experts, top 6; the remote-code keys shrunk
    alike so they still agree with what transformers builds."""
    layers = 3
    tiny.update(num_hidden_layers=layers, num_attention_heads=REPLICA_HEADS, num_key_value_heads=REPLICA_KV,
                v_head_dim=REPLICA_V_HEAD_DIM, n_routed_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K,
                moe_intermediate_size=REPLICA_EXPERT_WIDTH)
    kinds = ["full_attention" if i == 0 or not (i + 1) % 6 else "sliding_attention" for i in range(layers)]
    for key, value in (("layer_types", kinds), ("mlp_layer_types", ["dense"] + ["sparse"] * (layers - 1)),
                       ("hybrid_layer_pattern", [int(k == "sliding_attention") for k in kinds]),
                       ("moe_layer_freq", [0] + [1] * (layers - 1)), ("swa_num_attention_heads", REPLICA_HEADS),
                       ("swa_num_key_value_heads", 2 * REPLICA_KV), ("swa_head_dim", tiny.get("head_dim")),
                       ("swa_v_head_dim", REPLICA_V_HEAD_DIM)):
        if key in tiny:
            tiny[key] = value
    if (tiny.get("n_group") or 1) > 1:  # group-limited routing kept: 4 groups of 2, the best 3 groups, top 5
        tiny.update(n_group=REPLICA_GROUPS, topk_group=REPLICA_TOPK_GROUPS, num_experts_per_tok=REPLICA_GROUPED_TOP_K)
    if tiny.get("sliding_window_size") is not None:  # the window is sliding_window_size + 1
        tiny["sliding_window_size"] = tiny["sliding_window"] - 1


@family("mimo_v2_flash", title="MiMo-V2-Flash", replica=replica_mimo)
def lower_mimo_v2_flash(r: ConfigReader, model_type: str) -> Architecture:
    c = common(r, kv=4, head_dim=192, max_pos=131072)
    v_head_dim = r.int("v_head_dim", 128)
    value_scale = r.float("attention_value_scale", 0.707, nullable=True)
    window = r.int("sliding_window", 129)
    if r.any("sliding_window_size", None) is not None:  # the remote code's window leaves out the query itself
        window = r.int("sliding_window_size") + 1
    # The remote code's block size for its windowed kernel: transformers' model builds sliding and causal masks
    # only (no chunked layer kind), so its logits do not depend on it.
    r.int("attention_chunk_size", None, nullable=True)
    default_types = ["full_attention" if i == 0 or not (i + 1) % 6 else "sliding_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default_types)
    _agree(r, "hybrid_layer_pattern", [int(t == "sliding_attention") for t in layer_types], "layer pattern (1: sliding)")
    sliding_kv = 2 * c.num_kv_heads  # transformers doubles the key/value heads of sliding layers
    if sliding_kv > c.num_heads or c.num_heads % sliding_kv:
        raise ConfigError(f"{r.where}: 'num_attention_heads' ({c.num_heads}) is not a multiple of the sliding "
                          f"layers' key/value heads (2 x 'num_key_value_heads' = {sliding_kv})")
    for key, used in (("swa_num_attention_heads", c.num_heads), ("swa_num_key_value_heads", sliding_kv),
                      ("swa_head_dim", c.head_dim), ("swa_v_head_dim", v_head_dim)):
        _agree(r, key, used, "sliding layers' head shape")
    _agree(r, "add_swa_attention_sink_bias", True, "sinks of the sliding layers")
    _agree(r, "add_full_attention_sink_bias", False, "sinks of the full layers (none)")
    eps = r.float("rms_norm_eps", 1e-5)
    _agree(r, "layernorm_epsilon", eps, "norms' eps (rms_norm_eps)")
    _ropes(r)
    # The experts: every key read before the dense block is built.
    r.require_value("scoring_func", ("sigmoid",), "sigmoid")
    r.require_value("topk_method", ("noaux_tc",), "noaux_tc")
    _agree(r, "n_shared_experts", 0, "shared experts (none)")
    experts, top_k = r.int("n_routed_experts", 256), r.int("num_experts_per_tok", 8)
    groups, topk_groups = r.int("n_group", 1), r.int("topk_group", 1)
    if experts % groups or topk_groups > groups or top_k > topk_groups * (experts // groups) or experts // groups < 2:
        raise ConfigError(f"{r.where}: keys 'n_routed_experts', 'n_group', 'topk_group', 'num_experts_per_tok' do not "
                          f"fit ({experts} experts in {groups} groups of >= 2, top {topk_groups} groups, {top_k} per token)")
    scaling = r.float("routed_scaling_factor", 1.0, nullable=True) or 1.0  # null in the hub config: 1.0
    activation = _activation(r)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=r.int("moe_intermediate_size", 2048),
              activation=activation, router="sigmoid_topk", norm_topk_prob=r.bool("norm_topk_prob", True),
              router_float32=True, score_correction_bias=True, **_grouping("top2_sum", groups, topk_groups),
              routed_scaling_factor=None if scaling == 1.0 else scaling, routing_dtype="float32", storage="per_expert",
              names=MoeNames())
    sparse = mlp_layer_kinds(r, c.num_layers, 1)
    _agree(r, "moe_layer_freq", [int(s) for s in sparse], "routed layers (1: experts)")
    bias = r.bool("attention_bias", False)
    arch = moe_like(r, model_type, c, moe, sparse, eps=eps, qkv_bias=bias, o_bias=False, activation=activation,
                    partial_rotary=True, layer_types=layer_types, window=window, v_head_dim=v_head_dim,
                    value_scale=None if value_scale in (None, 1.0) else value_scale)
    layers = tuple(layer.model_copy(update={"mixer": layer.mixer.model_copy(update={"num_kv_heads": sliding_kv, "sinks": True})})
                   if layer.mixer.span == "sliding" else layer for layer in arch.layers)
    names = arch.names.model_copy(update={"sinks": SINK_NAME})
    # The hub checkpoint's multi-token-prediction layers (model.mtp.*): transformers skips them on load, as here.
    return arch.model_copy(update={"layers": layers, "names": names, "skipped_prefixes": MTP_PREFIXES})
