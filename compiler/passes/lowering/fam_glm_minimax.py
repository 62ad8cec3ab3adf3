"""GLM-4-MoE (GLM-4.5) and MiniMax-M2: grouped-query attention with partial RoPE and sigmoid routing.

Both read the keys transformers 5's ``Glm4MoeConfig`` / ``MiniMaxM2Config`` and their
``modeling_*.py`` read, with the same defaults.

GLM-4-MoE: Llama-like attention (q/k/v bias from ``attention_bias``, never on o_proj), an
optional per-head QK-norm (``use_qk_norm``), RoPE on the first half of each head by default
(``partial_rotary_factor`` 0.5); the first ``first_k_dense_replace`` layers are dense, the
others DeepSeek-V3's router (float32 sigmoid scores, a correction bias that only picks experts,
group-limited choice, renormalised and scaled weights) plus shared experts.

MiniMax-M2: QK-norm over the whole q and k projections, RoPE on ``rotary_dim`` channels of each
head, every layer routed experts (Mixtral's checkpoint names, width ``intermediate_size``) behind
a sigmoid router whose correction bias is a buffer of the MoE block. transformers renormalises
the kept weights without DeepSeek's 1e-20 guard: the same numbers unless the k kept sigmoid
scores sum to under ~1e-13 (every chosen logit below about -30).
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Head, Layer, Mlp, Moe, MoeNames, Norm
from ...basics.errors import ConfigError
from .fam_deepseek import mtp_layers, sigmoid_experts
from .fam_moe import TRAINING_ONLY, _activation
from .families import Common, build, default_partial_rotary, read_common
from .reader import ConfigReader
from .rope import lower_rope

# Replica routing: 8 experts, top 6; when grouped, 4 groups of 2, the best 3 groups kept, top 5 of their 6.
# The random replica's sigmoid scores share a large component across tokens, so with fewer experts per
# token some stay unused at batch 2 x 32 tokens (measured: top 3 to 5 of 8 leave experts of the default
# configs without tokens; grouped, top 2 of 4 groups left a whole group unused in one variant tried).
REPLICA_EXPERTS, REPLICA_TOP_K, REPLICA_EXPERT_WIDTH = 8, 6, 32
REPLICA_GROUPS, REPLICA_TOPK_GROUPS, REPLICA_GROUPED_TOP_K = 4, 3, 5


def _attention(r: ConfigReader, c: Common, norm: Norm, *, bias: bool, qk_norm: str) -> dict[str, Any]:
    attention: dict[str, Any] = dict(scale=c.head_dim**-0.5, q_bias=bias, k_bias=bias, v_bias=bias)
    if qk_norm != "none":
        attention.update(qk_norm=qk_norm, qk_norm_spec=norm)
    return attention


def _assemble(r: ConfigReader, c: Common, model_type: str, *, theta: float, norm: Norm, attention: dict[str, Any],
              activation: str, moe: Moe, first_dense: int) -> Architecture:
    ropes = lower_rope(r, head_dim=c.head_dim, layer_types={"full_attention"},
                       default_theta={"full_attention": theta, "sliding_attention": theta}, odd_rotary_dim=True)
    mlp = Mlp(gated=True, activation=activation, intermediate_size=c.intermediate_size)
    arch = build(r, c, layer_types=["full_attention"] * c.num_layers, window=None, ropes=ropes, norm=norm,
                 attention=attention, mlp=mlp, block="pre_norm", embed_scale=None,
                 head=Head(tied=r.bool("tie_word_embeddings", False)), model_type=model_type,
                 extra_allowed=TRAINING_ONLY)
    layers = tuple(Layer(index=i, mixer=layer.mixer, ffn=moe if i >= first_dense else mlp, block="pre_norm", norm=norm)
                   for i, layer in enumerate(arch.layers))
    return arch.model_copy(update={"layers": layers})


def lower_glm4_moe(r: ConfigReader, model_type: str) -> Architecture:
    """GLM-4-MoE: partial RoPE, optional per-head QK-norm, dense then routed layers with shared experts."""
    hidden, heads = r.int("hidden_size"), r.int("num_attention_heads")
    c = read_common(r, kv_default=8, head_dim_default=hidden // heads, max_pos=131072)  # transformers floors
    default_partial_rotary(r, 0.5)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5))
    attention = _attention(r, c, norm, bias=r.bool("attention_bias", False),
                           qk_norm="per_head" if r.bool("use_qk_norm", False) else "none")
    activation = _activation(r)
    moe = sigmoid_experts(r, activation, experts=128, groups=1, topk_groups=1, width=1408, scaling=1.0)
    first_dense = r.int("first_k_dense_replace", 1, minimum=0)
    mtp = mtp_layers(r)
    arch = _assemble(r, c, model_type, theta=10000.0, norm=norm, attention=attention, activation=activation, moe=moe,
                     first_dense=first_dense)
    return arch.model_copy(update={"extra_checkpoint_layers": mtp})


def lower_minimax_m2(r: ConfigReader, model_type: str) -> Architecture:
    """MiniMax-M2: whole-projection QK-norm, partial RoPE via rotary_dim, sigmoid-routed experts on every layer."""
    c = read_common(r, kv_default=8, head_dim_default=128, max_pos=196608)
    rotary_dim = r.int("rotary_dim", None, nullable=True)
    if rotary_dim is not None:
        if rotary_dim > c.head_dim:
            raise ConfigError(f"{r.where}: key 'rotary_dim' ({rotary_dim}) exceeds 'head_dim' ({c.head_dim})")
        default_partial_rotary(r, rotary_dim / c.head_dim)  # MiniMaxM2Config: a given partial_rotary_factor wins
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6))
    attention = _attention(r, c, norm, bias=False, qk_norm="whole")
    activation = _activation(r)
    if r.has("num_experts") and r.has("num_local_experts"):
        raise ConfigError(f"{r.where}: give either 'num_local_experts' or its alias 'num_experts', not both")
    count_key = "num_experts" if r.has("num_experts") else "num_local_experts"
    experts, top_k = r.int(count_key, 256), r.int("num_experts_per_tok", 8)
    if top_k > experts:
        raise ConfigError(f"{r.where}: 'num_experts_per_tok' ({top_k}) exceeds '{count_key}' ({experts})")
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=c.intermediate_size, activation=activation,
              router="sigmoid_topk", norm_topk_prob=True, sigmoid_float32=True, score_correction_bias=True,
              score_bias_in_block=True, routing_dtype="float32", storage="per_expert",
              names=MoeNames(gate="w1", up="w3", down="w2"))
    arch = _assemble(r, c, model_type, theta=5_000_000.0, norm=norm, attention=attention, activation=activation,
                     moe=moe, first_dense=0)
    return arch.model_copy(update={"names": arch.names.model_copy(update={"mlp": "block_sparse_moe"})})


# --- tiny replicas -------------------------------------------------------------------------------


def replica_glm4_moe(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers (dense, then routed twice), 8 experts; 4 groups, the best 3 kept, when the original groups."""
    tiny.update(num_hidden_layers=3, first_k_dense_replace=1, n_routed_experts=REPLICA_EXPERTS,
                moe_intermediate_size=REPLICA_EXPERT_WIDTH)
    moe = next(layer.ffn for layer in arch.layers if layer.ffn.kind == "moe")
    if moe.num_groups:
        tiny.update(n_group=REPLICA_GROUPS, topk_group=REPLICA_TOPK_GROUPS, num_experts_per_tok=REPLICA_GROUPED_TOP_K)
    else:
        tiny.update(n_group=1, topk_group=1, num_experts_per_tok=REPLICA_TOP_K)


def replica_minimax_m2(tiny: dict[str, Any], arch: Architecture) -> None:
    """8 experts, top 6 (expert width: the replica's intermediate_size); rotary_dim scaled to the new head_dim."""
    tiny.pop("num_experts", None)
    tiny.update(num_local_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K)
    if tiny.get("rotary_dim") is not None:
        head_dim = tiny.get("head_dim") or tiny["hidden_size"] // tiny["num_attention_heads"]
        tiny["rotary_dim"] = int(head_dim * arch.rope[0].partial_rotary_factor)


FAMILIES_GLM_MINIMAX = {"glm4_moe": lower_glm4_moe, "minimax_m2": lower_minimax_m2}
REPLICA_GLM_MINIMAX = {"glm4_moe": replica_glm4_moe, "minimax_m2": replica_minimax_m2}
