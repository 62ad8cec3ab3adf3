"""Lowering of Phi-3, StableLM, Cohere, Cohere 2 and Granite configs.

Each function reads the keys that transformers' config class and model read for the family,
with the same defaults (transformers 5 sources: ``models/<family>/``).
FAMILIES_PHI3_COHERE and REPLICA_PHI3_COHERE are registered in ``lowering/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ....schemas.arch import Architecture, Head, Mlp, Names, Norm, Rope
from ...basics.errors import UnsupportedError
from .families import ACTIVATIONS, LAYER_TYPES, Common, build, default_partial_rotary, read_common, read_layer_types
from .reader import ConfigReader
from .rope import lower_rope

DEFAULT_THETA = 10000.0


def _amend(arch: Architecture, edit: Callable[[dict[str, Any]], None]) -> Architecture:
    """A validated copy of ``arch`` after ``edit`` changed its plain-data form in place."""
    data = arch.model_dump()
    edit(data)
    return Architecture.model_validate(data)


def _ropes(r: ConfigReader, c: Common, layer_types: list[str], theta: float, original: int | None = None,
           **update: Any) -> dict[str, Rope]:
    tables = lower_rope(r, head_dim=c.head_dim, layer_types=set(layer_types),
                        default_theta={t: theta for t in LAYER_TYPES},
                        max_position_embeddings=c.max_position_embeddings, original_max_position_embeddings=original)
    return {kind: table.model_copy(update=update) for kind, table in tables.items()} if update else tables


def _derived_head_dim(r: ConfigReader, c: Common) -> None:
    """Families whose attention always uses hidden_size / num_attention_heads."""
    if c.hidden_size % c.num_heads or c.head_dim != c.hidden_size // c.num_heads:
        raise UnsupportedError(
            f"{r.where}: key 'head_dim' = {c.head_dim} differs from hidden_size / num_attention_heads, "
            f"which model_type {r.raw.get('model_type')!r} always uses"
        )


# --- Phi-3 / Phi-3.5 / Phi-4 -------------------------------------------------------------------

def lower_phi3(r: ConfigReader, model_type: str) -> Architecture:
    """Phi-3: the Llama block with [q; k; v] and [gate; up] each stored as one matrix."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=4096)
    for key in ("rope_scaling", "rope_parameters"):
        params = r.raw.get(key)
        if isinstance(params, dict) and (params.get("rope_type") or params.get("type")) in ("su", "yarn"):
            # transformers renames these legacy Phi-3 spellings to longrope (configuration_phi3.py).
            r.raw = {**r.raw, key: {**params, "type": "longrope", "rope_type": "longrope"}}
    # Phi3Config always carries original_max_position_embeddings and it overrides the rope dict's.
    original = r.int("original_max_position_embeddings", 4096)
    # The mask is a sliding window on every layer whenever the key is set. A window at least as
    # long as the context (Phi-3.5: 262144 > 131072) masks nothing within it: full attention.
    window = r.int("sliding_window", None, nullable=True)
    if window is not None and window >= c.max_position_embeddings:
        window = None
    kind = "full_attention" if window is None else "sliding_attention"
    ropes = _ropes(r, c, [kind], DEFAULT_THETA, original)
    for table in ropes.values():
        if table.type not in ("default", "longrope"):
            raise UnsupportedError(f"{r.where}: rope type {table.type!r} is not one Phi-3 accepts (default, longrope)")
    mlp = Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, fused_gate_up=True)
    return build(
        r, c, layer_types=[kind] * c.num_layers, window=window, ropes=ropes,
        norm=Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5)),
        attention=dict(qkv="fused", scale=c.head_dim**-0.5), mlp=mlp, block="pre_norm", embed_scale=None,
        head=Head(tied=r.bool("tie_word_embeddings", False)), model_type=model_type,
        # Dropouts; and attention_bias, which Phi3 never reads (none of its projections has a bias).
        extra_allowed=frozenset({"resid_pdrop", "embd_pdrop", "attention_bias"}),
    )


def _replica_head_dim() -> int:
    from .replica import HEAD_DIM  # replica imports the lowering package: import it late

    return HEAD_DIM


def replica_phi3(tiny: dict[str, Any], arch: Architecture) -> None:
    table = arch.rope[0] if arch.rope else None
    if table is not None and table.type == "longrope":
        # Factor lists must match the replica's rotary width, which derives from hidden / heads.
        half = int(tiny["hidden_size"] // tiny["num_attention_heads"] * table.partial_rotary_factor) // 2
        for key in ("rope_scaling", "rope_parameters"):
            if isinstance(tiny.get(key), dict):
                tiny[key] = {**tiny[key], "short_factor": list(table.short_factor[:half]),
                             "long_factor": list(table.long_factor[:half])}
    else:
        tiny["head_dim"] = _replica_head_dim()  # Phi3 honours an explicit head_dim


# --- StableLM ----------------------------------------------------------------------------------

STABLELM_NAMES = Names(q_norm="q_layernorm", k_norm="k_layernorm")


def lower_stablelm(r: ConfigReader, model_type: str) -> Architecture:
    """StableLM: LayerNorm (with bias), partial rotary (default 0.25), optional parallel residual."""
    c = read_common(r, kv_default=32, head_dim_default=None, max_pos=4096)
    _derived_head_dim(r, c)
    default_partial_rotary(r, 0.25)  # StableLmConfig's default
    norm = Norm(kind="layernorm", eps=r.float("layer_norm_eps", 1e-5), bias=True, compute_dtype="input")
    bias = r.bool("use_qkv_bias", False)
    attention: dict[str, Any] = dict(q_bias=bias, k_bias=bias, v_bias=bias, scale=c.head_dim**-0.5)
    if r.bool("qk_layernorm", False):  # a separate bias-free LayerNorm for each query and key head
        attention.update(qk_norm="per_head_modules", qk_norm_spec=norm.model_copy(update={"bias": False}))
    layer_types = ["full_attention"] * c.num_layers
    arch = build(
        r, c, layer_types=layer_types, window=None, ropes=_ropes(r, c, layer_types, DEFAULT_THETA), norm=norm,
        attention=attention,
        mlp=Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS),
                intermediate_size=c.intermediate_size),
        block="parallel" if r.bool("use_parallel_residual", False) else "pre_norm", embed_scale=None,
        head=Head(tied=r.bool("tie_word_embeddings", False)), model_type=model_type,
        extra_allowed=frozenset({"hidden_dropout"}),
    )
    return arch.model_copy(update={"names": STABLELM_NAMES})


# --- Cohere (Command R) and Cohere 2 (Command R7B / A) ------------------------------------------

def _cohere_norm(r: ConfigReader) -> Norm:
    """CohereLayerNorm: mean-centred, weight only (no bias), computed in float32."""
    return Norm(kind="layernorm", eps=r.float("layer_norm_eps", 1e-5), bias=False, compute_dtype="float32")


# Keys of Cohere's own exports that transformers never reads: it always computes what these
# values say, so they are accepted at exactly these values and refused at any other.
COHERE_FIXED = {"use_parallel_block": True, "use_gated_activation": True, "position_embedding_type": "rope_gptj",
                "rotary_pct": 1.0, "order_of_interleaved_layers": "local_attn_first"}
# Tokenizer and tensor-parallel metadata.
COHERE_METADATA = frozenset({"model_max_length", "use_parallel_embedding"})


def _cohere_fixed(r: ConfigReader) -> None:
    for key, value in COHERE_FIXED.items():
        r.require_value(key, (value,), value)


def _cohere_head(r: ConfigReader) -> Head:
    _cohere_fixed(r)
    scale = r.float("logit_scale", 0.0625)
    tied = r.bool("tie_word_embeddings", True)
    r.require_value("use_embedding_sharing", (tied,), tied)  # Cohere's name for a tied head
    return Head(tied=tied, multiplier=None if scale == 1.0 else scale)


def lower_cohere(r: ConfigReader, model_type: str) -> Architecture:
    """Cohere: parallel block with one shared LayerNorm, interleaved RoPE, scaled logits."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=8192)
    norm = _cohere_norm(r)
    bias = r.bool("attention_bias", False)
    attention: dict[str, Any] = dict(q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=c.head_dim**-0.5)
    if r.bool("use_qk_norm", False):  # Command R+: CohereLayerNorm with a (heads, head_dim) weight
        attention.update(qk_norm="per_head_weights", qk_norm_spec=norm)
    layer_types = ["full_attention"] * c.num_layers
    return build(
        r, c, layer_types=layer_types, window=None,
        ropes=_ropes(r, c, layer_types, 500000.0, layout="interleaved"), norm=norm, attention=attention,
        mlp=Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS),
                intermediate_size=c.intermediate_size),
        block="parallel", embed_scale=None, head=_cohere_head(r), model_type=model_type,
        extra_allowed=COHERE_METADATA,
    )


def replica_explicit_head_dim(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny["head_dim"] = _replica_head_dim()  # Cohere and Granite honour an explicit head_dim


def lower_cohere2(r: ConfigReader, model_type: str) -> Architecture:
    """Cohere 2: Cohere's block; sliding-window layers with RoPE, full-attention layers without (NoPE)."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=8192)
    _derived_head_dim(r, c)  # Cohere2Config overwrites head_dim with hidden / heads
    pattern = r.int("sliding_window_pattern", 4)  # only used when layer_types is absent
    default_types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default_types)
    window = r.int("sliding_window", 4096, nullable=True)
    bias = r.bool("attention_bias", False)
    arch = build(
        r, c, layer_types=layer_types, window=window,
        ropes=_ropes(r, c, layer_types, DEFAULT_THETA, layout="interleaved"), norm=_cohere_norm(r),
        attention=dict(q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=c.head_dim**-0.5),
        mlp=Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS),
                intermediate_size=c.intermediate_size),
        block="parallel", embed_scale=None, head=_cohere_head(r), model_type=model_type,
        extra_allowed=COHERE_METADATA,
    )

    def nope_on_full_layers(data: dict[str, Any]) -> None:
        for layer in data["layers"]:
            if layer["mixer"]["span"] == "full":
                layer["mixer"]["rope"] = None
        used = {layer["mixer"]["rope"] for layer in data["layers"]}
        data["rope"] = [table for table in data["rope"] if table["name"] in used]

    return _amend(arch, nope_on_full_layers)


def replica_cohere2(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny["head_dim"] = tiny["hidden_size"] // tiny["num_attention_heads"]  # the only value Cohere 2 allows


# --- Granite -----------------------------------------------------------------------------------

def lower_granite(r: ConfigReader, model_type: str) -> Architecture:
    """Granite: the Llama block with muP multipliers on embeddings, residual branches, scores and logits."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=2048)
    bias = r.bool("attention_bias", False)
    layer_types = ["full_attention"] * c.num_layers
    embedding = r.float("embedding_multiplier", 1.0)
    residual = r.float("residual_multiplier", 1.0)
    divisor = r.float("logits_scaling", 1.0)
    arch = build(
        r, c, layer_types=layer_types, window=None, ropes=_ropes(r, c, layer_types, DEFAULT_THETA),
        norm=Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6)),
        attention=dict(q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=r.float("attention_multiplier", 1.0)),
        mlp=Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS),
                intermediate_size=c.intermediate_size, bias=r.bool("mlp_bias", False)),
        block="pre_norm", embed_scale=None if embedding == 1.0 else embedding,
        head=Head(tied=r.bool("tie_word_embeddings", False), divisor=None if divisor == 1.0 else divisor),
        model_type=model_type,
    )

    def multipliers(data: dict[str, Any]) -> None:
        data["embedding"]["scale_in_dtype"] = False  # a Python float times the embeddings
        for layer in data["layers"]:
            layer["residual_scale"] = None if residual == 1.0 else residual

    return _amend(arch, multipliers)


FAMILIES_PHI3_COHERE = {"phi3": lower_phi3, "stablelm": lower_stablelm, "cohere": lower_cohere,
                        "cohere2": lower_cohere2, "granite": lower_granite}
REPLICA_PHI3_COHERE = {"phi3": replica_phi3, "cohere": replica_explicit_head_dim, "cohere2": replica_cohere2,
                       "granite": replica_explicit_head_dim}
