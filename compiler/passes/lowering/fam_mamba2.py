"""Mamba-2 families: the pure state-space stack (``mamba2``) and Bamba (``bamba``: Mamba-2 layers with a few
softmax-attention layers, a SwiGLU MLP on every layer).

Reads exactly the keys transformers 5.24's config classes and models read, with the same defaults. The
Mamba-2 block itself (``read_mamba2``) is shared with the other hybrid families (Nemotron-H, Granite 4.0-H),
each naming its keys its own way.
"""

from __future__ import annotations

import math
from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, Head, Layer, Mamba2, Mlp, Names, Norm
from ...basics.errors import ConfigError
from .families import DTYPES, padding_idx, read_common
from .reader import ConfigReader
from .registry import family
from .rope import lower_rope

# Keys that only shape the initialisation of a Mamba-2 block (the trained dt_bias, A_log carry them).
MAMBA_INIT_ONLY = frozenset({"time_step_min", "time_step_max", "time_step_floor", "time_step_rank",
                             "rescale_prenorm_residual", "initializer_range", "z_loss_coefficient",
                             "num_logits_to_keep", "mamba_dt_rank"})


INFINITY_OBJECT = {"__float__": "Infinity"}


def drop_infinite_limit(tiny: dict[str, Any]) -> None:
    """A replica leaves out a time_step_limit of (min, inf) when min is 0 (the config classes' default): an
    infinity has no Python literal for the generated test's config."""
    limit = tiny.get("time_step_limit")
    if isinstance(limit, list) and len(limit) == 2 and limit[0] == 0 and (limit[1] == math.inf or limit[1] == INFINITY_OBJECT):
        tiny.pop("time_step_limit")


def _reason(error: ValueError) -> str:
    """The message of a pydantic validation error (its text ends with a link), else the error's own text."""
    errors = getattr(error, "errors", None)
    return (errors()[0]["msg"] if callable(errors) else str(error))[:160]


def time_step_limit(r: ConfigReader, key: str = "time_step_limit") -> tuple[float, float | None]:
    """(min, max) of dt; max None when it is infinite (transformers' default (0.0, inf), written Infinity)."""
    value = r.any(key, [0.0, math.inf])
    if isinstance(value, list) and len(value) == 2 and value[1] == INFINITY_OBJECT:
        value = [value[0], math.inf]  # how transformers 5 writes float("inf") into config.json
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{r.where}: key '{key}' must be a list of two numbers [min, max]")
    low, high = float(value[0]), float(value[1])
    if not math.isfinite(low) or low < 0 or math.isnan(high) or high < low or high <= 0:
        raise ConfigError(f"{r.where}: key '{key}' must hold 0 <= min <= max, got {list(value)!r:.60}")
    return low, None if math.isinf(high) else high


def read_mamba2(r: ConfigReader, hidden: int, eps: float, *, keys: dict[str, str], defaults: dict[str, Any],
                limit: tuple[float, float | None]) -> Mamba2:
    """The Mamba-2 block from the family's key names (``keys``: field -> key) and defaults. head_dim may be
    "auto" (expand x hidden / heads, Bamba's and Granite's); intermediate = heads x head_dim."""
    heads = r.int(keys["num_heads"], defaults["num_heads"])
    head_dim = r.any(keys["head_dim"], defaults["head_dim"])
    expand = r.int(keys["expand"], defaults["expand"]) if "expand" in keys else None
    if head_dim == "auto" and expand is not None:
        head_dim = expand * hidden // heads
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ConfigError(f"{r.where}: key '{keys['head_dim']}' must be a positive integer")
    if expand is not None and expand * hidden != heads * head_dim:
        raise ConfigError(f"{r.where}: '{keys['expand']}' x 'hidden_size' ({expand * hidden}) must equal "
                          f"'{keys['num_heads']}' x '{keys['head_dim']}' ({heads * head_dim})")
    r.str(keys["act"], "silu", choices={"silu": "silu", "swish": "silu"})  # the convolution's activation
    try:
        return Mamba2(num_heads=heads, head_dim=head_dim, state_size=r.int(keys["state_size"], defaults["state_size"]),
                      n_groups=r.int(keys["n_groups"], defaults["n_groups"]),
                      conv_kernel=r.int(keys["conv_kernel"], 4), conv_bias=r.bool(keys["conv_bias"], True),
                      proj_bias=r.bool(keys["proj_bias"], False), chunk_size=r.int(keys["chunk_size"], defaults["chunk_size"]),
                      time_step_min=limit[0], time_step_max=limit[1], norm=Norm(kind="rmsnorm", eps=eps))
    except ValueError as error:  # pydantic's, on sizes that do not fit together
        raise ConfigError(f"{r.where}: the Mamba-2 sizes do not fit: {_reason(error)}") from None


# --- mamba2 ---------------------------------------------------------------------------------------

MAMBA2_KEYS = dict(num_heads="num_heads", head_dim="head_dim", expand="expand", state_size="state_size",
                   n_groups="n_groups", conv_kernel="conv_kernel", conv_bias="use_conv_bias", proj_bias="use_bias",
                   chunk_size="chunk_size", act="hidden_act")


def _replica_mamba2(tiny: dict[str, Any], arch: Architecture) -> None:
    for key in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
        tiny.pop(key, None)
    tiny.update(num_heads=8, head_dim=16, expand=2, state_size=16, n_groups=2, chunk_size=8)
    drop_infinite_limit(tiny)


@family("mamba2", title="Mamba-2", replica=_replica_mamba2, pad_token_id=1)
def lower_mamba2(r: ConfigReader, model_type: str) -> Architecture:
    """Mamba-2: every layer RMSNorm + Mamba-2 block + residual, no feed-forward; no attention, no positions.
    The residual stream of a half-precision model is kept in float32 by transformers (``residual_in_fp32``):
    the float32 computation this file renders is the same."""
    hidden = r.int("hidden_size", 4096)
    eps = r.float("layer_norm_epsilon", 1e-5)
    r.bool("residual_in_fp32", True)
    defaults = dict(num_heads=128, head_dim=64, expand=2, state_size=128, n_groups=8, chunk_size=256)
    mamba = read_mamba2(r, hidden, eps, keys=MAMBA2_KEYS, defaults=defaults, limit=time_step_limit(r))
    norm = Norm(kind="rmsnorm", eps=eps)
    layers = tuple(Layer(index=i, mixer=mamba, ffn=None, block="pre_norm", norm=norm)
                   for i in range(r.int("num_hidden_layers", 64)))
    vocab = r.int("vocab_size", 32768)
    embedding = Embedding(vocab_size=vocab, padding_idx=None)
    r.any("pad_token_id", None)  # nn.Embedding of Mamba-2 takes no padding_idx
    names = Names(backbone="backbone", embed="embeddings", final_norm="norm_f", input_norm="norm", mamba="mixer")
    head = Head(tied=r.bool("tie_word_embeddings", False))
    r.finish(MAMBA_INIT_ONLY)
    dtype = r.raw.get("torch_dtype") or r.raw.get("dtype") or "float32"
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ConfigError(f"{r.where}: key 'torch_dtype' = {dtype!r:.40} is not a floating dtype llmgen knows")
    return Architecture(model_type=model_type, hidden_size=hidden, max_position_embeddings=2**20, dtype=DTYPES[dtype],
                        embedding=embedding, layers=layers, final_norm=norm, head=head, names=names)


# --- bamba ----------------------------------------------------------------------------------------

BAMBA_KEYS = dict(num_heads="mamba_n_heads", head_dim="mamba_d_head", expand="mamba_expand", state_size="mamba_d_state",
                  n_groups="mamba_n_groups", conv_kernel="mamba_d_conv", conv_bias="mamba_conv_bias",
                  proj_bias="mamba_proj_bias", chunk_size="mamba_chunk_size", act="hidden_act")


def _replica_bamba(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers, the middle one attention if the model has any; narrow Mamba-2 heads in two groups, chunks of 8."""
    attention = any(layer.mixer.kind == "attention" for layer in arch.layers)
    tiny.update(num_hidden_layers=3, attn_layer_indices=[1] if attention else None, mamba_n_heads=8, mamba_d_head=16, mamba_expand=2, mamba_d_state=16, mamba_n_groups=2, mamba_chunk_size=8)
    if not attention:  # transformers' Bamba cannot measure a cache without attention layers: run it without one
        tiny.update(use_cache=False, num_key_value_heads=2)  # (and the unused kv heads must divide the query heads)
    drop_infinite_limit(tiny)


@family("bamba", title="Bamba", replica=_replica_bamba, pad_token_id=0)
def lower_bamba(r: ConfigReader, model_type: str) -> Architecture:
    """Bamba: Mamba-2 layers, softmax attention (GQA, half the head rotated) at ``attn_layer_indices``, a SwiGLU
    MLP after every mixer."""
    c = read_common(r, kv_default=8, head_dim_default=None, max_pos=262144)
    eps = r.float("rms_norm_eps", 1e-5)
    norm = Norm(kind="rmsnorm", eps=eps)
    r.raw = {**r.raw, "partial_rotary_factor": 0.5}  # BambaConfig sets it whatever the config says
    defaults = dict(num_heads=128, head_dim="auto", expand=2, state_size=256, n_groups=1, chunk_size=256)
    mamba = read_mamba2(r, c.hidden_size, eps, keys=BAMBA_KEYS, defaults=defaults, limit=time_step_limit(r))
    attn_layers = r.any("attn_layer_indices", None) or []
    if not isinstance(attn_layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in attn_layers):
        raise ConfigError(f"{r.where}: key 'attn_layer_indices' must be a list of layer indices")
    rope = lower_rope(r, head_dim=c.head_dim, layer_types={"full_attention"},
                      default_theta={"full_attention": 10000.0, "sliding_attention": 10000.0})["full_attention"]
    bias = r.bool("attention_bias", False)
    attention = Attention(span="full", num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                          rope=rope.name, q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=c.head_dim**-0.5)
    act = r.str("hidden_act", "silu", choices={"silu": "silu", "swish": "silu"})
    mlp = Mlp(gated=True, activation=act, intermediate_size=c.intermediate_size, bias=r.bool("mlp_bias", False))
    layers = tuple(Layer(index=i, mixer=attention if i in attn_layers else mamba, ffn=mlp, block="pre_norm", norm=norm)
                   for i in range(c.num_layers))
    names = Names(final_norm="final_layernorm", post_attn_norm="pre_ff_layernorm", mlp="feed_forward")
    embedding = Embedding(vocab_size=c.vocab_size, padding_idx=padding_idx(r, c.vocab_size))
    head = Head(tied=r.bool("tie_word_embeddings", False))
    r.finish(MAMBA_INIT_ONLY)
    rope_tables = (rope,) if any(layer.mixer.kind == "attention" for layer in layers) else ()
    return Architecture(model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
                        dtype=c.dtype, embedding=embedding, rope=rope_tables, layers=layers, final_norm=norm, head=head,
                        names=names)

