"""Gemma, Gemma 2, OLMo 2, OLMo 3 and SmolLM3: config keys -> IR.

Each function reads the keys that transformers' config class and model read for the family,
with the same defaults (transformers 5's ``configuration_*.py`` / ``modeling_*.py``).
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Head, Mlp, Norm, Rope
from ...basics.errors import ConfigError, UnsupportedError
from .families import ACTIVATIONS, LAYER_TYPES, Common, build, read_common, read_layer_types
from .reader import ConfigReader
from .rope import lower_rope, rope_table

# GemmaConfig rewrites the legacy hidden_act "gelu" of the official releases to the tanh GELU.
GEMMA_ACTIVATIONS = {**ACTIVATIONS, "gelu": "gelu_tanh"}
# Olmo3Config's default_theta: the sliding layers' theta whenever rope_parameters does not name one.
OLMO3_THETA = 500_000.0


def _refuse_bidirectional(r: ConfigReader) -> None:
    if r.any("use_bidirectional_attention", None):
        raise UnsupportedError(f"{r.where}: key 'use_bidirectional_attention' = true is not supported")


def _refuse_partial_rotary(r: ConfigReader, *dicts: Any) -> None:
    """These families' default RoPE ignores partial_rotary_factor (transformers rotates the whole
    head) while llmgen would honour it; refuse it, top-level or in a RoPE dict, rather than disagree."""
    r.require_value("partial_rotary_factor", (None, 1, 1.0), None)
    for params in dicts:
        if isinstance(params, dict) and params.get("partial_rotary_factor") not in (None, 1, 1.0):
            raise UnsupportedError(f"{r.where}: rope key 'partial_rotary_factor' is not supported for model_type "
                                   f"{r.raw.get('model_type')!r:.40} (its default RoPE rotates the whole head)")


def _single_rope(r: ConfigReader, c: Common, layer_types: list[str], theta: float) -> dict[str, Rope]:
    """One RoPE table shared by every layer (the family's model builds one rotary embedding)."""
    params = r.raw.get("rope_parameters")
    _refuse_partial_rotary(r, params, r.raw.get("rope_scaling"))
    if isinstance(params, dict) and set(params) & set(LAYER_TYPES):
        raise UnsupportedError(
            f"{r.where}: key 'rope_parameters' per layer type is not supported for model_type "
            f"{r.raw.get('model_type')!r} (its model builds one RoPE table for all layers)"
        )
    return lower_rope(r, head_dim=c.head_dim, layer_types=set(layer_types),
                      default_theta={t: theta for t in LAYER_TYPES}, max_position_embeddings=c.max_position_embeddings)


def lower_gemma(r: ConfigReader, model_type: str) -> Architecture:
    """Gemma: pre-norm (1+w) RMSNorms, GeGLU, multi-query attention, sqrt(hidden) embedding scale."""
    c = read_common(r, kv_default=16, head_dim_default=256, max_pos=8192)
    _refuse_bidirectional(r)
    layer_types = ["full_attention"] * c.num_layers
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6), weight_offset=1.0, weight_in_compute_dtype=True)
    bias = r.bool("attention_bias", False)
    return build(
        r, c, layer_types=layer_types, window=None, ropes=_single_rope(r, c, layer_types, 10_000.0), norm=norm,
        attention=dict(q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=c.head_dim**-0.5),
        mlp=Mlp(gated=True, activation=r.str("hidden_act", "gelu_pytorch_tanh", choices=GEMMA_ACTIVATIONS),
                intermediate_size=c.intermediate_size),
        block="pre_norm", embed_scale=c.hidden_size**0.5, head=Head(tied=r.bool("tie_word_embeddings", True)),
        model_type=model_type,
        # transformers 5's Gemma reads hidden_act only; hidden_activation is Gemma 2's key.
        extra_allowed=frozenset({"hidden_activation"}),
    )


def lower_gemma2(r: ConfigReader, model_type: str) -> Architecture:
    """Gemma 2: Gemma plus sandwich norms, alternating sliding/full layers, soft-capped
    attention and final logits, and a query_pre_attn_scalar attention scale."""
    c = read_common(r, kv_default=4, head_dim_default=256, max_pos=8192)
    _refuse_bidirectional(r)
    window = r.int("sliding_window", 4096, nullable=True)
    default_types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default_types)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6), weight_offset=1.0, weight_in_compute_dtype=True)
    bias = r.bool("attention_bias", False)
    attention = dict(q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias,
                     scale=r.float("query_pre_attn_scalar", 256.0) ** -0.5,
                     softcap=r.float("attn_logit_softcapping", 50.0, nullable=True))
    return build(
        r, c, layer_types=layer_types, window=window, ropes=_single_rope(r, c, layer_types, 10_000.0), norm=norm,
        attention=attention,
        mlp=Mlp(gated=True, activation=r.str("hidden_activation", "gelu_pytorch_tanh", choices=ACTIVATIONS),
                intermediate_size=c.intermediate_size),
        block="sandwich", embed_scale=c.hidden_size**0.5,
        head=Head(tied=r.bool("tie_word_embeddings", True),
                  softcap=r.float("final_logit_softcapping", 30.0, nullable=True)),
        model_type=model_type,
        # Gemma 2 reads hidden_activation; hidden_act is a leftover its model never reads.
        extra_allowed=frozenset({"hidden_act"}),
    )


def _olmo_block(r: ConfigReader, c: Common, model_type: str, *, layer_types: list[str], window: int | None,
                ropes: dict[str, Rope]) -> Architecture:
    """OLMo 2/3: norms inside the residual after each branch, QK-norm over whole projections."""
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5), weight_in_compute_dtype=True)
    bias = r.bool("attention_bias", False)
    return build(
        r, c, layer_types=layer_types, window=window, ropes=ropes, norm=norm,
        attention=dict(q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=c.head_dim**-0.5,
                       qk_norm="whole", qk_norm_spec=norm),
        mlp=Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS),
                intermediate_size=c.intermediate_size),
        block="post_norm", embed_scale=None, head=Head(tied=r.bool("tie_word_embeddings", False)),
        model_type=model_type,
    )


def lower_olmo2(r: ConfigReader, model_type: str) -> Architecture:
    """OLMo 2: Llama's attention and SwiGLU with post-norm blocks and whole-projection QK-norm."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=2048)
    layer_types = ["full_attention"] * c.num_layers
    return _olmo_block(r, c, model_type, layer_types=layer_types, window=None,
                       ropes=_single_rope(r, c, layer_types, 10_000.0))


def _olmo3_ropes(r: ConfigReader, c: Common, layer_types: list[str]) -> dict[str, Rope]:
    """Olmo3Config's RoPE: a v4 rope_scaling applies to full-attention layers only, and sliding
    layers keep theta 500000 unless rope_parameters names one (rope_theta sets the full layers')."""
    params, scaling = r.any("rope_parameters", None), r.any("rope_scaling", None)
    _refuse_partial_rotary(r, scaling, *(params.values() if isinstance(params, dict) else ()))
    if params is not None and scaling is not None:
        raise ConfigError(f"{r.where}: give either 'rope_parameters' or 'rope_scaling', not both")
    theta = {"full_attention": r.float("rope_theta", OLMO3_THETA), "sliding_attention": OLMO3_THETA}
    if params is None:
        per_type: dict[str, Any] = {"full_attention": scaling or {}, "sliding_attention": {}}
    elif isinstance(params, dict) and params and set(params) <= set(LAYER_TYPES):
        per_type = {t: params.get(t) or {} for t in LAYER_TYPES}
    else:
        raise UnsupportedError(
            f"{r.where}: key 'rope_parameters' must give one dict per layer type ({', '.join(LAYER_TYPES)}) "
            "for model_type 'olmo3' (transformers ignores a single dict)"
        )
    # Always nested: Olmo3Config stores even a v4 rope_scaling per layer type.
    tables = {
        t: rope_table("global" if t == "full_attention" else "local", per_type[t], theta=theta[t],
                      head_dim=c.head_dim, partial=1.0, where=f"{r.where}: rope parameters of {t}",
                      max_position_embeddings=c.max_position_embeddings, nested=True)
        for t in sorted(set(layer_types))
    }
    if len(tables) == 2 and tables["sliding_attention"].model_copy(update={"name": "global"}) == tables["full_attention"]:
        tables["sliding_attention"] = tables["full_attention"]  # identical tables: compute one
    return tables


def lower_olmo3(r: ConfigReader, model_type: str) -> Architecture:
    """OLMo 3: OLMo 2 with 3:1 sliding-window/full layers and a RoPE table per layer type."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=2048)
    window = r.int("sliding_window", 4096, nullable=True)
    default_types = ["sliding_attention" if (i + 1) % 4 else "full_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default_types)
    return _olmo_block(r, c, model_type, layer_types=layer_types, window=window,
                       ropes=_olmo3_ropes(r, c, layer_types))


def lower_smollm3(r: ConfigReader, model_type: str) -> Architecture:
    """SmolLM3: Llama's block, with no position embeddings (NoPE) on the layers no_rope_layers marks 0."""
    c = read_common(r, kv_default=4, head_dim_default=None, max_pos=32768)
    interval = r.int("no_rope_layer_interval", 4)
    use_rope = r.any("no_rope_layers", None)
    if use_rope is None:
        use_rope = [int((i + 1) % interval != 0) for i in range(c.num_layers)]
    if not isinstance(use_rope, list) or len(use_rope) != c.num_layers or any(v not in (0, 1) for v in use_rope):
        raise ConfigError(f"{r.where}: 'no_rope_layers' must be a list of {c.num_layers} entries, each 0 or 1")
    use_sliding = r.bool("use_sliding_window", False)
    window = r.int("sliding_window", None, nullable=True)
    # Default: the NoPE layers slide when use_sliding_window is set (SmolLM3Config.__post_init__).
    default_types = ["sliding_attention" if use_sliding and window is not None and not use_rope[i]
                     else "full_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default_types)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6))
    bias = r.bool("attention_bias", False)
    arch = build(
        r, c, layer_types=layer_types, window=window, ropes=_single_rope(r, c, layer_types, 2_000_000.0), norm=norm,
        attention=dict(q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=c.head_dim**-0.5),
        mlp=Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS),
                intermediate_size=c.intermediate_size, bias=r.bool("mlp_bias", False)),
        block="pre_norm", embed_scale=None, head=Head(tied=r.bool("tie_word_embeddings", True)),
        model_type=model_type,
        # Read by neither SmolLM3Config nor its model: Qwen-style leftovers of the export.
        extra_allowed=frozenset({"max_window_layers", "pretraining_tp"}),
    )
    layers = tuple(
        layer if rope else layer.model_copy(update={"mixer": layer.mixer.model_copy(update={"rope": None})})
        for layer, rope in zip(arch.layers, use_rope)
    )
    used = {layer.mixer.rope for layer in layers}
    return arch.model_copy(update={"layers": layers, "rope": tuple(t for t in arch.rope if t.name in used)})


FAMILIES_GEMMA_OLMO = {
    "gemma": lower_gemma,
    "gemma2": lower_gemma2,
    "olmo2": lower_olmo2,
    "olmo3": lower_olmo3,
    "smollm3": lower_smollm3,
}


def _explicit_head_dim(tiny: dict[str, Any], arch: Architecture) -> None:
    """These models honour a head_dim attribute (getattr(config, "head_dim", ...)): give the
    replica one that differs from hidden / heads."""
    from .replica import HEAD_DIM

    tiny["head_dim"] = HEAD_DIM


def _replica_smollm3(tiny: dict[str, Any], arch: Architecture) -> None:
    _explicit_head_dim(tiny, arch)
    if isinstance(tiny.get("no_rope_layers"), list):
        tiny["no_rope_layers"] = tiny["no_rope_layers"][: tiny["num_hidden_layers"]]


def _replica_gemma2(tiny: dict[str, Any], arch: Architecture) -> None:
    """Caps at the replica's scale: its attention scores stay below ~0.3 and its logits below ~2,
    where caps of 50 and 30 would change nothing a parity test could see."""
    if arch.layers[0].mixer.softcap is not None:
        tiny["attn_logit_softcapping"] = REPLICA_ATTN_SOFTCAP
    if arch.head.softcap is not None:
        tiny["final_logit_softcapping"] = REPLICA_FINAL_SOFTCAP


REPLICA_ATTN_SOFTCAP, REPLICA_FINAL_SOFTCAP = 0.25, 1.0
def _replica_olmo(tiny: dict[str, Any], arch: Architecture) -> None:
    _explicit_head_dim(tiny, arch)
    tiny.setdefault("eos_token_id", 2)  # Olmo2Config's default (50279) lies outside the replica's vocabulary


REPLICA_GEMMA_OLMO = {"gemma2": _replica_gemma2, "olmo2": _replica_olmo, "olmo3": _replica_olmo,
                      "smollm3": _replica_smollm3}
