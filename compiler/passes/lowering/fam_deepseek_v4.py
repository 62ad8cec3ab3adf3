"""DeepSeek-V4 (``deepseek_v4``): every layer attends through one shared key=value head over a sliding
window, and most add compressed entries: compressed sparse attention (CSA: entries pooled from
overlapping windows of ``compress_rates['compressed_sparse_attention']`` tokens, a lightning indexer
keeping the top ``index_topk`` per query) or heavily compressed attention (HCA: every entry of
non-overlapping ``compress_rates['heavily_compressed_attention']``-token windows); learned sinks; a
grouped low-rank output. Feed-forwards are clamped-SwiGLU routed experts plus a shared expert, routed by
a token-id table in the ``hash_moe`` layers and by sqrt(softplus) scores elsewhere. The residual stream
is ``hc_mult`` hyper-connected streams (Sinkhorn-normalised mixing).

Reads the keys transformers 5.24's ``DeepseekV4Config`` and modeling file read, with their defaults,
including the legacy keys its ``__post_init__`` folds in (``compress_ratios``, ``num_hash_layers``,
``qk_rope_head_dim``, ``rope_scaling``). Sliding-only layers use the ``main`` RoPE (``rope_theta``);
compressed layers the ``compress`` RoPE (``compress_rope_theta``, YaRN from ``rope_scaling`` with an
attention factor of 1).
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import (Architecture, ClampedMoe, CompressedAttention, Compressor, Embedding, Head,
                             HyperConnections, Layer, Norm, Rope, SparseSelection)
from ...basics.errors import ConfigError, UnsupportedError
from .fam_deepseek import mtp_layers
from .fam_moe import TRAINING_ONLY
from .families import DTYPES
from .reader import ConfigReader
from .registry import family

SLIDING, CSA, HCA = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"
RATIO_TYPES = {0: SLIDING, 4: CSA, 128: HCA}
# norm_topk_prob: transformers always renormalises the kept scores; topk_method: never read.
IGNORED = TRAINING_ONLY | frozenset({"initializer_range", "attention_dropout", "use_cache", "topk_method",
                                     "norm_topk_prob"})


def _list(r: ConfigReader, key: str, layers: int, allowed: tuple[str, ...], default: list[str]) -> list[str]:
    value = r.any(key, None)
    if value is None:
        return default
    if not isinstance(value, list) or len(value) < layers or any(v not in allowed for v in value):
        raise ConfigError(f"{r.where}: key '{key}' must list one of {', '.join(allowed)} for each of the {layers} layers")
    return list(value[:layers])


def _layer_types(r: ConfigReader, layers: int) -> list[str]:
    ratios = r.any("compress_ratios", None)
    default = [HCA] * min(layers, 2) + [CSA if i % 2 else HCA for i in range(max(layers - 2, 0))]
    if ratios is not None:
        if not isinstance(ratios, list) or len(ratios) < layers or any(x not in RATIO_TYPES for x in ratios):
            raise ConfigError(f"{r.where}: key 'compress_ratios' must list 0, 4 or 128 for each of the {layers} layers")
        default = [RATIO_TYPES[x] for x in ratios[:layers]]
    return _list(r, "layer_types", layers, (SLIDING, CSA, HCA), default)


def _rates(r: ConfigReader) -> dict[str, int]:
    rates = r.any("compress_rates", None)
    rates = {CSA: 4, HCA: 128} if rates is None else rates
    if not isinstance(rates, dict) or set(rates) != {CSA, HCA} or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in rates.values()):
        raise ConfigError(f"{r.where}: key 'compress_rates' must give a positive integer for {CSA} and {HCA}")
    rates = dict(rates)
    for key, kind in (("compress_rate_csa", CSA), ("compress_rate_hca", HCA)):
        if r.has(key):
            rates[kind] = r.int(key)
    return rates


def _ropes(r: ConfigReader, head_dim: int, rope_dim: int, max_pos: int) -> tuple[Rope, Rope]:
    """The ``main`` and ``compress`` tables, as DeepseekV4Config.__post_init__ derives them."""
    params = r.any("rope_parameters", None) or r.any("rope_scaling", None) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{r.where}: key 'rope_parameters' must be an object")
    theta, compress_theta = r.float("rope_theta", 10000.0), r.float("compress_rope_theta", 160000.0)
    if isinstance(params.get("main"), dict) and isinstance(params.get("compress"), dict):
        main, compress = params["main"], params["compress"]
        theta, compress_theta = float(main.get("rope_theta", theta)), float(compress.get("rope_theta", compress_theta))
        if main.get("rope_type", main.get("type", "default")) != "default":
            raise UnsupportedError(f"{r.where}: key 'rope_parameters.main' supports only rope_type 'default'")
        for table in (main, compress):  # the tables' own factors size the rotation
            if int(head_dim * table.get("partial_rotary_factor", 1.0)) != rope_dim:
                raise UnsupportedError(f"{r.where}: key 'rope_parameters' rotates {int(head_dim * table.get('partial_rotary_factor', 1.0))} "
                                       f"channels, not the {rope_dim} of 'partial_rotary_factor'")
    else:
        compress = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
    kind = compress.get("rope_type", compress.get("type", "default"))
    factor = rope_dim / head_dim
    main_table = Rope(name="main", type="default", theta=theta, rotary_dim=rope_dim, partial_rotary_factor=factor,
                      layout="interleaved")
    if kind == "default":
        return main_table, Rope(name="compress", type="default", theta=compress_theta, rotary_dim=rope_dim,
                                partial_rotary_factor=factor, layout="interleaved")
    if kind != "yarn":
        raise UnsupportedError(f"{r.where}: key 'rope_scaling' type {kind!r:.40} is not supported (only 'yarn')")
    unknown = sorted(set(compress) - {"type", "rope_type", "factor", "original_max_position_embeddings", "beta_fast",
                                      "beta_slow", "attention_factor", "rope_theta", "partial_rotary_factor"})
    if unknown:
        raise UnsupportedError(f"{r.where}: rope_scaling key {unknown[0]!r:.40} is not supported")
    if compress.get("attention_factor", 1.0) != 1.0:
        raise UnsupportedError(f"{r.where}: a compress RoPE attention_factor other than 1.0 is not supported")
    original = compress.get("original_max_position_embeddings")
    if not isinstance(original, int) or isinstance(original, bool) or original < 1:
        raise ConfigError(f"{r.where}: rope_scaling needs an integer 'original_max_position_embeddings'")
    yarn_factor = compress.get("factor") or max_pos / original
    return main_table, Rope(name="compress", type="yarn", theta=compress_theta, rotary_dim=rope_dim,
                            partial_rotary_factor=factor, layout="interleaved", factor=float(yarn_factor),
                            original_max_position_embeddings=original, truncate=True, attention_factor=1.0,
                            beta_fast=float(compress.get("beta_fast") or 32), beta_slow=float(compress.get("beta_slow") or 1))


def _replica(tiny: dict[str, Any], arch: Architecture) -> None:
    """Every attention kind of the model in order of appearance (CSA twice), hashed then scored experts;
    windows of 4 (CSA) and 8 (HCA) tokens, an 8-token sliding window, the indexer's top 3. The indexer
    keeps 8 heads: with fewer, entries often score exactly 0 (every head's ReLU at 0) and a tie decides
    the selection, which then depends on how many entries the call sees (in transformers too)."""
    kinds = []
    for layer in arch.layers:
        comp = layer.mixer.compressor
        kind = SLIDING if comp is None else CSA if layer.mixer.selection else HCA
        if kind not in kinds:
            kinds.append(kind)
    kinds += [CSA] if CSA in kinds else [kinds[0]]
    hashed = [layer.ffn.hashed for layer in arch.layers]
    mlp = (["hash_moe"] if any(hashed) else []) + (["moe"] * len(kinds) if not all(hashed) else ["hash_moe"] * len(kinds))
    for key in ("compress_ratios", "num_hash_layers", "compress_rate_csa", "compress_rate_hca", "qk_rope_head_dim",
                "quantization_config", "expert_dtype"):
        tiny.pop(key, None)
    tiny.update(hidden_size=32, num_attention_heads=4, num_key_value_heads=1, head_dim=16, partial_rotary_factor=0.5,
                q_lora_rank=24, o_groups=2, o_lora_rank=8, moe_intermediate_size=16, n_routed_experts=4,
                num_experts_per_tok=2, index_n_heads=8, index_head_dim=8, index_topk=3, sliding_window=8,
                vocab_size=128, num_hidden_layers=len(kinds), layer_types=kinds, mlp_layer_types=mlp[:len(kinds)],
                compress_rates={CSA: 4, HCA: 8}, hc_mult=arch.hyper.streams, torch_dtype="float32")
    tiny.pop("intermediate_size", None)
    for table in (tiny.get("rope_parameters") or {}).values():
        if isinstance(table, dict):  # nested main / compress tables: the replica's rotation
            table["partial_rotary_factor"] = 0.5


@family("deepseek_v4", title="DeepSeek-V4", replica=_replica)
def lower_deepseek_v4(r: ConfigReader, model_type: str) -> Architecture:
    hidden, layers = r.int("hidden_size", 4096), r.int("num_hidden_layers", 43)
    heads, head_dim = r.int("num_attention_heads", 64), r.int("head_dim", 512)
    if r.int("num_key_value_heads", 1) != 1:
        raise UnsupportedError(f"{r.where}: key 'num_key_value_heads' must be 1 (one shared key=value head)")
    partial = r.float("partial_rotary_factor", None, nullable=True)
    legacy = r.int("qk_rope_head_dim", None, nullable=True)
    rope_dim = int(head_dim * partial) if partial is not None else legacy if legacy is not None else head_dim // 8
    for key in ("attention_bias", "mlp_bias"):
        r.require_value(key, (False,), False)
    r.require_value("hidden_act", ("silu",), "silu")
    r.require_value("tie_word_embeddings", (False,), False)
    r.require_value("n_shared_experts", (1,), 1)
    dtype = r.any("torch_dtype", None) or r.any("dtype", None) or "bfloat16"
    if dtype not in DTYPES:
        raise ConfigError(f"{r.where}: key 'torch_dtype' = {dtype!r:.40} is not a floating dtype llmgen knows")
    expert_dtype = r.any("expert_dtype", None)
    if expert_dtype not in (None, "fp4", "fp8", "bf16"):
        raise UnsupportedError(f"{r.where}: key 'expert_dtype' = {expert_dtype!r:.40} is not supported")
    max_pos, eps = r.int("max_position_embeddings", 1048576), r.float("rms_norm_eps", 1e-6)
    main, compress = _ropes(r, head_dim, rope_dim, max_pos)
    kinds, rates = _layer_types(r, layers), _rates(r)
    n_hash = r.int("num_hash_layers", 3, minimum=0)
    mlp_kinds = _list(r, "mlp_layer_types", layers, ("hash_moe", "moe"),
                      ["hash_moe"] * min(layers, n_hash) + ["moe"] * max(0, layers - n_hash))
    index = SparseSelection(num_heads=r.int("index_n_heads", 64), head_dim=r.int("index_head_dim", 128),
                            topk=r.int("index_topk", 512), compressor=Compressor(
                                rate=rates[CSA], head_dim=r.raw.get("index_head_dim", 128), overlapping=True))
    if index.head_dim < rope_dim:
        raise ConfigError(f"{r.where}: key 'index_head_dim' ({index.head_dim}) must be at least the rope dim ({rope_dim})")
    base = dict(num_heads=heads, head_dim=head_dim, rope_dim=rope_dim, q_lora_rank=r.int("q_lora_rank", 1024),
                window=r.int("sliding_window", 128), o_groups=r.int("o_groups", 8), o_lora_rank=r.int("o_lora_rank", 1024),
                scale=head_dim ** -0.5, eps=eps)
    mixers = {
        SLIDING: CompressedAttention(**base, rope="main"),
        CSA: CompressedAttention(**base, rope="compress", selection=index,
                                 compressor=Compressor(rate=rates[CSA], head_dim=head_dim, overlapping=True)),
        HCA: CompressedAttention(**base, rope="compress",
                                 compressor=Compressor(rate=rates[HCA], head_dim=head_dim, overlapping=False)),
    }
    experts, top_k = r.int("n_routed_experts", 256), r.int("num_experts_per_tok", 6)
    if top_k > experts:
        raise ConfigError(f"{r.where}: 'num_experts_per_tok' ({top_k}) exceeds 'n_routed_experts' ({experts})")
    moe = dict(num_experts=experts, top_k=top_k, intermediate_size=r.int("moe_intermediate_size", 2048),
               scoring=r.str("scoring_func", "sqrtsoftplus", choices={"sqrtsoftplus": "sqrtsoftplus", "sigmoid": "sigmoid"}),
               routed_scaling_factor=r.float("routed_scaling_factor", 1.5), swiglu_limit=r.float("swiglu_limit", 10.0))
    norm = Norm(kind="rmsnorm", eps=eps, weight_in_compute_dtype=True)
    hyper = HyperConnections(streams=r.int("hc_mult", 4), sinkhorn_iters=r.int("hc_sinkhorn_iters", 20),
                             eps=r.float("hc_eps", 1e-6), norm_eps=eps)
    pad = r.int("pad_token_id", None, minimum=0, nullable=True)
    vocab = r.int("vocab_size", 129280)
    extra = mtp_layers(r)
    for key in ("bos_token_id", "eos_token_id", "transformers_version", "architectures"):
        r.any(key, None)
    r.finish(IGNORED)
    return Architecture(
        model_type=model_type, hidden_size=hidden, max_position_embeddings=max_pos, dtype=DTYPES[dtype],
        embedding=Embedding(vocab_size=vocab, padding_idx=pad), rope=(main, compress),
        layers=tuple(Layer(index=i, mixer=mixers[kinds[i]], block="pre_norm", norm=norm,
                           ffn=ClampedMoe(**moe, hashed=mlp_kinds[i] == "hash_moe")) for i in range(layers)),
        final_norm=norm, head=Head(tied=False), hyper=hyper, extra_checkpoint_layers=extra)
