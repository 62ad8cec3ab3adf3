"""DeepSeek Sparse Attention: DeepSeek-V3.2 (``deepseek_v32``) and GLM-5 (``glm_moe_dsa``).

Reads the keys transformers 5's ``DeepseekV32Config`` / ``GlmMoeDsaConfig`` and their modeling
files read, with their defaults. Both are DeepSeek-V3 (multi-head latent attention with low-rank
queries; dense then routed layers behind the float32 sigmoid router with its correction bias and
shared experts) plus a lightning indexer on every attention layer: its own queries (from the
query latent) and keys, ReLU scores weighted per head, and the top ``index_topk`` causal keys
per query, the only ones the attention sees. transformers always rotates the main attention's
RoPE channels as adjacent pairs (its ``rope_interleave`` is not read); the indexer's pairs
are split halves in DeepSeek-V3.2 and adjacent pairs in GLM-5.

GLM-5 can share one layer's selection with the next layers (``indexer_types`` "shared", from
``index_topk_freq`` / ``index_skip_topk_offset`` / ``index_topk_pattern``); its published
configs run the indexer on every layer, and sharing is refused with the key named.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Indexer, Layer, Mla, Mlp, Moe, Norm
from ...basics.errors import ConfigError, UnsupportedError
from .fam_deepseek import DEEPSEEK_IGNORED, _assemble, _latent_attention, mtp_layers, replica_deepseek, sigmoid_experts
from .fam_glm_minimax import REPLICA_GROUPED_TOP_K, REPLICA_GROUPS, REPLICA_TOP_K, REPLICA_TOPK_GROUPS
from .fam_moe import TRAINING_ONLY, _activation
from .families import read_common
from .reader import ConfigReader
from .registry import family

# The replica's indexer: a top-k well under the parity test's 32 tokens, so the selection drops keys.
REPLICA_INDEXER = dict(index_topk=8, index_n_heads=16, index_head_dim=16)
# transformers' LayerNorm on the indexer key (eps fixed in the modeling code).
INDEX_NORM = Norm(kind="layernorm", eps=1e-6, bias=True, compute_dtype="input")


def _routed_layers(r: ConfigReader, num_layers: int, first_dense: int) -> list[bool]:
    """Which layers are routed: ``mlp_layer_types`` ("dense" / "sparse") when given, else all but the
    first ``first_k_dense_replace``."""
    kinds = r.any("mlp_layer_types", None)
    if kinds is None:
        return [i >= min(first_dense, num_layers) for i in range(num_layers)]
    if not isinstance(kinds, list) or len(kinds) != num_layers or not set(kinds) <= {"dense", "sparse"}:
        raise ConfigError(f"{r.where}: key 'mlp_layer_types' must be a list of {num_layers} entries, each "
                          f"'dense' or 'sparse'")
    return [kind == "sparse" for kind in kinds]


def _require_list(r: ConfigReader, key: str, num_layers: int, value: str) -> None:
    """A per-layer list transformers derives: only the one pattern llmgen implements."""
    got = r.any(key, None)
    if got is not None and got != [value] * num_layers:
        raise UnsupportedError(f"{r.where}: key '{key}' is supported only as {num_layers} x {value!r}")


def _glm_indexer_sharing(r: ConfigReader, num_layers: int) -> None:
    """GLM-5's per-layer indexer modes, derived as transformers does; every layer must run its own."""
    types = r.any("indexer_types", None)
    key = "indexer_types"
    pattern, freq = r.any("index_topk_pattern", None), r.any("index_topk_freq", 1)
    offset = r.any("index_skip_topk_offset", 2)
    if types is None and pattern is not None:
        key = "index_topk_pattern"
        types = ["shared" if c == "S" else "full" for c in pattern] if isinstance(pattern, str) else list(pattern)
    elif types is None:
        key = "index_topk_freq"
        if isinstance(freq, bool) or not isinstance(freq, int) or isinstance(offset, bool) or not isinstance(offset, int):
            raise ConfigError(f"{r.where}: keys 'index_topk_freq' and 'index_skip_topk_offset' must be integers")
        freq = max(freq, 1)
        types = ["full" if max(i - offset + 1, 0) % freq == 0 else "shared" for i in range(num_layers)]
    if not isinstance(types, list) or any(t not in ("full", "shared") for t in types):
        raise ConfigError(f"{r.where}: key '{key}' must list 'full' or 'shared' per layer")
    if "shared" in types:
        raise UnsupportedError(f"{r.where}: key '{key}' shares one layer's indexer selection with others; llmgen "
                               "compiles DeepSeek Sparse Attention with an indexer on every layer")


def _lower_dsa(r: ConfigReader, model_type: str, *, max_pos: int, q_rank: int, index_heads: int,
               indexer_interleave: bool, groups: int, topk_groups: int) -> Architecture:
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=max_pos)
    r.require_value("scoring_func", ("sigmoid",), "sigmoid")
    r.require_value("topk_method", ("noaux_tc",), "noaux_tc")
    r.require_value("mlp_bias", (False,), False)
    r.require_value("rope_interleave", (True, None), True)  # transformers rotates adjacent pairs, whatever it says
    r.require_value("indexer_rope_interleave", (indexer_interleave, None), indexer_interleave)
    if r.raw.get("q_lora_rank", q_rank) is None:
        raise UnsupportedError(f"{r.where}: key 'q_lora_rank' must be set: the indexer reads the query latent")
    mla, ropes, _ = _latent_attention(r, c, q_default=q_rank, deinterleave=True)
    _require_list(r, "layer_types", c.num_layers, "indexed_attention")
    indexer = Indexer(num_heads=r.int("index_n_heads", index_heads), head_dim=r.int("index_head_dim", 128),
                      topk=r.int("index_topk", 2048), rope_interleave=indexer_interleave, k_norm=INDEX_NORM)
    if indexer.head_dim < mla.qk_rope_head_dim:
        raise ConfigError(f"{r.where}: key 'index_head_dim' ({indexer.head_dim}) must be at least "
                          f"'qk_rope_head_dim' ({mla.qk_rope_head_dim})")
    mla = Mla.model_validate({**mla.model_dump(), "indexer": indexer.model_dump()})
    moe = sigmoid_experts(r, _activation(r), experts=256, groups=groups, topk_groups=topk_groups,
                          width=2048, scaling=2.5)
    routed = _routed_layers(r, c.num_layers, r.int("first_k_dense_replace", 3, minimum=0))
    mtp = mtp_layers(r)
    arch = _assemble(r, c, model_type, mla, ropes, moe, c.num_layers, TRAINING_ONLY | DEEPSEEK_IGNORED)
    mlp = arch.layers[0].ffn
    layers = tuple(Layer(index=i, mixer=mla, ffn=moe if routed[i] else mlp, block="pre_norm", norm=layer.norm)
                   for i, layer in enumerate(arch.layers))
    return arch.model_copy(update={"layers": layers, "extra_checkpoint_layers": mtp})


def replica_dsa(tiny: dict[str, Any], arch: Architecture) -> None:
    """DeepSeek-V3's replica (dense, then routed twice) with a small indexer: top 8 of the test's 32 keys."""
    replica_deepseek(tiny, arch)
    # GLM-4-MoE's replica routing (fam_glm_minimax): with DeepSeek's top 3 of 8 some experts stay unused here.
    if tiny["n_group"] > 1:
        tiny.update(n_group=REPLICA_GROUPS, topk_group=REPLICA_TOPK_GROUPS, num_experts_per_tok=REPLICA_GROUPED_TOP_K)
    else:
        tiny.update(num_experts_per_tok=REPLICA_TOP_K)
    tiny.update(REPLICA_INDEXER)
    layers = tiny["num_hidden_layers"]
    if "mlp_layer_types" in tiny:
        tiny["mlp_layer_types"] = ["dense"] * tiny["first_k_dense_replace"] + ["sparse"] * (
            layers - tiny["first_k_dense_replace"])
    if "layer_types" in tiny:
        tiny["layer_types"] = ["indexed_attention"] * layers
    if "indexer_types" in tiny:
        tiny["indexer_types"] = ["full"] * layers


@family("deepseek_v32", title="DeepSeek-V3.2", replica=replica_dsa)
def lower_deepseek_v32(r: ConfigReader, model_type: str) -> Architecture:
    """DeepSeek-V3.2: DeepSeek-V3 plus the lightning indexer, its RoPE on split halves."""
    return _lower_dsa(r, model_type, max_pos=163840, q_rank=1536, index_heads=64, indexer_interleave=False,
                      groups=8, topk_groups=4)


@family("glm_moe_dsa", title="GLM-MoE-DSA", replica=replica_dsa)
def lower_glm_moe_dsa(r: ConfigReader, model_type: str) -> Architecture:
    """GLM-5: the same blocks at GLM's defaults, the indexer's RoPE on adjacent pairs."""
    _glm_indexer_sharing(r, r.int("num_hidden_layers", 78))
    return _lower_dsa(r, model_type, max_pos=202752, q_rank=2048, index_heads=32, indexer_interleave=True,
                      groups=1, topk_groups=1)
