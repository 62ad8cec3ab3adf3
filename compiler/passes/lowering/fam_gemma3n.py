"""Gemma 3n text decoder (``gemma3n_text``; the ``gemma3n`` wrapper's text_config).

Reads the keys transformers 5.24's Gemma3nTextConfig and Gemma3nTextModel read, with the same defaults:
Gemma 3's sandwich block with plain-weight RMSNorms, per-head q/k norms and an unweighted value norm,
attention scale 1, sliding / full layers (every fifth full by default), one RoPE table per layer type,
a final softcap, and what is new in 3n: alternating updates over ``altup_num_inputs`` residual streams
(IR ``Architecture.altup``), the low-rank LAuReL branch beside attention (``Layer.laurel``), activation
sparsity on the first layers' gates (``Mlp.gate_sparsity_std``), per-layer MLP widths. Per-layer
embeddings (PLE) and KV sharing are Gemma 4's IR fields, read by Gemma 4's helpers.
"""

from __future__ import annotations

import statistics
import struct
from typing import Any

from ....schemas.arch import (Architecture, AltUp, Attention, Embedding, Head, Laurel, Layer, Mlp, Norm)
from ...basics.errors import ConfigError, UnsupportedError
from .fam_gemma4 import _kv_sources, _per_layer_input
from .families import ACTIVATIONS, LAYER_TYPES, padding_idx, read_common, read_layer_types
from .reader import ConfigReader
from .registry import family
from .rope import rope_table

ROPE_THETA = {"full_attention": 1_000_000.0, "sliding_attention": 10_000.0}  # Gemma3nTextConfig.default_theta
# Gemma3nTextModel: a projected stream's mean square is clamped to this before its RMS divides it.
ALTUP_MAGNITUDE_FLOOR = 1e-5


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def sparsity_std(target: float) -> float:
    """The standard normal's quantile of the target sparsity (Normal(0, 1).icdf(target) in transformers),
    rounded to float32 as transformers computes it: statistics.NormalDist().inv_cdf, so no torch at compile time."""
    return _float32(statistics.NormalDist().inv_cdf(target))


def _widths(r: ConfigReader, num_layers: int) -> list[int] | None:
    """intermediate_size as a list of one width per layer (None: a single int, read by read_common)."""
    widths = r.raw.get("intermediate_size")
    if not isinstance(widths, list):
        return None
    if len(widths) != num_layers or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ConfigError(f"{r.where}: 'intermediate_size' must be a positive integer or a list of {num_layers} "
                          "(one per layer)")
    return widths


def _sparsity(r: ConfigReader, num_layers: int) -> list[float | None]:
    """Per layer, the gate's cutoff in standard deviations (None: dense), from activation_sparsity_pattern
    (default: the first 10 layers at 0.95 when there are more than 10)."""
    pattern = r.any("activation_sparsity_pattern", None)
    if pattern is None:
        sparse = 10 if num_layers > 10 else 0
        pattern = [0.95] * sparse + [0.0] * (num_layers - sparse)
    if not isinstance(pattern, list) or len(pattern) != num_layers:
        raise ConfigError(f"{r.where}: 'activation_sparsity_pattern' must be a list of {num_layers} values (one per layer)")
    for value in pattern:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(f"{r.where}: 'activation_sparsity_pattern' values must be in [0, 1), got {value!r:.40}")
    return [sparsity_std(float(value)) if value > 0 else None for value in pattern]


def _ropes(r: ConfigReader, layer_types: list[str], head_dim: int, max_pos: int) -> dict[str, Any]:
    """One table per layer type: rope_parameters (transformers 5), else the legacy rope_theta (full layers,
    with rope_scaling) and rope_local_base_freq (sliding layers), as Gemma3nTextConfig converts them."""
    params = r.any("rope_parameters", None)
    theta, local, scaling = r.any("rope_theta", None), r.any("rope_local_base_freq", None), r.any("rope_scaling", None)
    if params is None:
        params = {"full_attention": {"rope_type": "default", **({"rope_theta": theta} if theta is not None else {})},
                  "sliding_attention": {"rope_type": "default", **({"rope_theta": local} if local is not None else {})}}
        if scaling is not None:
            if not isinstance(scaling, dict):
                raise ConfigError(f"{r.where}: 'rope_scaling' must be an object or null")
            params["full_attention"].update(scaling)
    if not isinstance(params, dict) or not set(params) <= set(LAYER_TYPES):
        raise ConfigError(f"{r.where}: 'rope_parameters' must give one object per layer type ({', '.join(LAYER_TYPES)})")
    tables = {}
    for layer_type in sorted(set(layer_types)):
        given = params.get(layer_type) or {"rope_type": "default"}
        name = "local" if layer_type == "sliding_attention" else "global"
        tables[layer_type] = rope_table(name, given, theta=ROPE_THETA[layer_type], head_dim=head_dim, partial=1.0,
                                        where=f"{r.where}: rope parameters of {layer_type}",
                                        max_position_embeddings=max_pos, nested=True)
    return tables


def _altup(r: ConfigReader, norm: Norm, hidden: int) -> tuple[AltUp, Laurel]:
    streams = r.int("altup_num_inputs", 4)
    active = r.int("altup_active_idx", 0, minimum=0)
    if active >= streams:
        raise ConfigError(f"{r.where}: 'altup_active_idx' ({active}) must be below 'altup_num_inputs' ({streams})")
    r.float("altup_coef_clip", 120.0, nullable=True)  # clamps the coefficients in training only
    altup = AltUp(num_inputs=streams, active_index=active, correct_scale=r.bool("altup_correct_scale", True),
                  router_norm=norm, router_input_scale=hidden**-1.0, magnitude_floor=ALTUP_MAGNITUDE_FLOOR)
    return altup, Laurel(rank=r.int("laurel_rank", 64), norm=norm, divisor=2.0**0.5)


REPLICA_TYPES = ["sliding_attention", "full_attention"] * 3  # the last two read the first four's keys and values


def replica_gemma3n(tiny: dict[str, Any], arch: Architecture) -> None:
    """S F S F then one KV-sharing reader of each kind; the first two layers sparse; small per-layer inputs
    (their table smaller than the vocabulary, as in the real model), LAuReL rank and AltUp streams kept >= 2."""
    from .replica import HEAD_DIM  # replica imports the lowering package: import it late

    n = len(REPLICA_TYPES)
    tiny.update(head_dim=HEAD_DIM, num_hidden_layers=n, layer_types=list(REPLICA_TYPES), num_kv_shared_layers=2,
                hidden_size_per_layer_input=8, vocab_size_per_layer_input=tiny["vocab_size"] * 3 // 4, laurel_rank=8,
                activation_sparsity_pattern=[0.95, 0.95] + [0.0] * (n - 2),
                altup_num_inputs=max(2, arch.altup.num_inputs if arch.altup else 2))
    if isinstance(tiny.get("intermediate_size"), list):
        tiny["intermediate_size"] = tiny["intermediate_size"][0]


@family("gemma3n_text", title="Gemma 3n (text decoder)", pad_token_id=0, replica=replica_gemma3n)
def lower_gemma3n_text(r: ConfigReader, model_type: str) -> Architecture:
    layers_given = r.raw.get("num_hidden_layers")
    widths = _widths(r, layers_given) if isinstance(layers_given, int) else None
    if widths is not None:  # read_common reads one width; the list is checked above
        r = ConfigReader({**r.raw, "intermediate_size": widths[0]}, r.where)
    c = read_common(r, kv_default=2, head_dim_default=256, max_pos=32_768)
    widths = widths or [c.intermediate_size] * c.num_layers
    window = r.int("sliding_window", 512)
    default_types = ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default_types)
    ropes = _ropes(r, layer_types, c.head_dim, c.max_position_embeddings)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6), weight_in_compute_dtype=True)
    bias = r.bool("attention_bias", False)
    r.float("attention_dropout", 0.0, positive=False, nullable=True)  # training only
    activation = r.str("hidden_activation", "gelu_pytorch_tanh", choices=ACTIVATIONS)
    sources = _kv_sources(r, layer_types, r.int("num_kv_shared_layers", 15, minimum=0))
    sparsity = _sparsity(r, c.num_layers)
    ple = _per_layer_input(r, c.hidden_size, norm, activation)
    if ple is None:
        raise UnsupportedError(f"{r.where}: 'hidden_size_per_layer_input' 0: transformers' Gemma 3n always has "
                               "per-layer inputs")
    altup, laurel = _altup(r, norm, c.hidden_size)
    head = Head(tied=r.bool("tie_word_embeddings", True), softcap=r.float("final_logit_softcapping", 30.0, nullable=True))
    r.finish()
    layers = []
    for i, layer_type in enumerate(layer_types):
        sliding = layer_type == "sliding_attention"
        attn = Attention(
            span="sliding" if sliding else "full", window=window if sliding else None, num_heads=c.num_heads,
            num_kv_heads=c.num_kv_heads, head_dim=c.head_dim, rope=ropes[layer_type].name, q_bias=bias, k_bias=bias,
            v_bias=bias, o_bias=bias, scale=1.0, qk_norm="per_head", qk_norm_spec=norm, v_norm=True,
            kv_shared_from=sources[i],
        )
        mlp = Mlp(gated=True, activation=activation, intermediate_size=widths[i], gate_sparsity_std=sparsity[i])
        layers.append(Layer(index=i, mixer=attn, ffn=mlp, block="sandwich", norm=norm, laurel=laurel))
    tables = {t.name: t for t in ropes.values()}
    return Architecture(
        model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
        dtype=c.dtype,
        embedding=Embedding(vocab_size=c.vocab_size, scale=c.hidden_size**0.5, padding_idx=padding_idx(r, c.vocab_size)),
        rope=tuple(tables[name] for name in sorted(tables)), layers=tuple(layers), final_norm=norm, head=head,
        per_layer_input=ple, altup=altup,
    )
