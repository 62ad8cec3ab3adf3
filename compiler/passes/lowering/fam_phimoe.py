"""PhiMoE (Phi-3.5-MoE): Mixtral's block and checkpoint names (``block_sparse_moe``, experts w1 / w3 / w2) with
torch LayerNorms (with bias), optional biases on every attention projection and on the head, Phi-3's RoPE
(LongRoPE in the published model) and the SparseMixer router (two experts; inference form).

Reads exactly the keys transformers 5.24's PhimoeConfig and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Head, Mlp, Moe, MoeNames, Norm
from ...basics.errors import UnsupportedError
from .fam_moe import _activation, _assemble
from .families import read_common
from .reader import ConfigReader
from .registry import family


def _replica_phimoe(tiny: dict[str, Any], arch: Architecture) -> None:
    """4 experts (the router always picks 2; of 8, some stayed without tokens at batch 2 x 32); LongRoPE factor lists cut to the replica's head_dim / 2."""
    tiny.pop("head_dim", None)
    tiny.update(num_local_experts=4, num_experts_per_tok=2)
    head_dim = tiny["hidden_size"] // tiny["num_attention_heads"]
    for key in ("rope_parameters", "rope_scaling"):
        params = tiny.get(key)
        if isinstance(params, dict):
            for factors in ("short_factor", "long_factor"):
                if isinstance(params.get(factors), list):
                    params[factors] = params[factors][: head_dim // 2]


@family("phimoe", title="PhiMoE (Phi-3.5-MoE)", replica=_replica_phimoe)
def lower_phimoe(r: ConfigReader, model_type: str) -> Architecture:
    c = read_common(r, kv_default=8, head_dim_default=None, max_pos=4096 * 32)
    window = r.int("sliding_window", None, nullable=True)
    experts, top_k = r.int("num_local_experts", 16), r.int("num_experts_per_tok", 2)
    if top_k != 2:
        raise UnsupportedError(f"{r.where}: key 'num_experts_per_tok' = {top_k}: the SparseMixer router picks 2")
    r.float("input_jitter_noise", 0.0, positive=False)  # applied in training only
    eps = r.float("router_jitter_noise", 0.01, positive=False)
    activation = _activation(r)
    moe = Moe(num_experts=experts, top_k=2, intermediate_size=c.intermediate_size, activation=activation,
              router="sparsemixer", sparsemixer_eps=eps, routing_dtype="input", storage="per_expert",
              names=MoeNames(gate="w1", up="w3", down="w2"))
    bias = r.bool("attention_bias", False)
    norm = Norm(kind="layernorm", eps=r.float("rms_norm_eps", 1e-5), bias=True, compute_dtype="input")
    kind = "sliding_attention" if window is not None else "full_attention"
    return _assemble(
        r, c, model_type, moe=moe, sparse=[True] * c.num_layers, names={"mlp": "block_sparse_moe"}, theta=1e6,
        norm=norm, attention=dict(scale=c.head_dim**-0.5, q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias),
        mlp=Mlp(gated=True, activation=activation, intermediate_size=c.intermediate_size),
        head=Head(tied=r.bool("tie_word_embeddings", False), bias=r.bool("lm_head_bias", False)),
        layer_types=[kind] * c.num_layers, window=window,
    )
