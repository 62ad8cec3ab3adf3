"""More of the GPT group: GPT-BigCode (SantaCoder, StarCoder 1) and GPT-J.

They use GPT-2's key names (n_embd, n_head, n_layer, n_inner, n_positions) and GPT-2-style
module names; see fam_gpt.py for the shared assembly.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Head, Mlp, Names
from ...basics.errors import UnsupportedError
from .families import ACTIVATIONS
from .fam_gpt import DROPOUTS, GPT2_NAMES, _assemble, _common, _torch_layernorm, replica_gpt2
from .reader import ConfigReader
from .registry import family
from .rope import rope_table


def _gpt2_sizes(r: ConfigReader, *, vocab: int, hidden: int, heads: int, layers: int, positions: int,
                kv: int | None = None):
    hidden = r.int("n_embd", hidden)
    return _common(r, vocab=r.int("vocab_size", vocab), hidden=hidden, heads=r.int("n_head", heads),
                   layers=r.int("n_layer", layers), intermediate=r.int("n_inner", None, nullable=True) or 4 * hidden,
                   max_pos=r.int("n_positions", positions), kv=kv)


@family("gpt_bigcode", title="GPT-BigCode", replica=replica_gpt2)
def lower_gpt_bigcode(r: ConfigReader, model_type: str) -> Architecture:
    """GPT-BigCode: GPT-2's block with nn.Linear weights and multi-query attention ([q; k; v] with one
    key/value head), or, without multi_query, GPT-NeoX-style per-head [q_h; k_h; v_h]."""
    r.require_value("add_cross_attention", (False,), False)
    multi_query = r.bool("multi_query", True)
    r.any("num_key_value_heads")  # written by the config class, which always recomputes it from multi_query
    heads = r.int("n_head", 12)
    c = _gpt2_sizes(r, vocab=50257, hidden=768, heads=heads, layers=12, positions=1024, kv=1 if multi_query else heads)
    # transformers 5.24's attention reads neither (its eager softmax is always float32): accepted at any value.
    r.bool("attention_softmax_in_fp32", True), r.bool("scale_attention_softmax_in_fp32", True)
    scale = c.head_dim**-0.5 if r.bool("scale_attn_weights", True) else 1.0
    mlp = Mlp(gated=False, activation=r.str("activation_function", "gelu_pytorch_tanh", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=True)
    return _assemble(
        r, c, model_type=model_type, rope=None, norm=_torch_layernorm(r.float("layer_norm_epsilon", 1e-5)),
        attention=dict(qkv="fused" if multi_query else "fused_per_head", q_bias=True, k_bias=True, v_bias=True,
                       o_bias=True, scale=scale),
        mlp=mlp, block="pre_norm", head=Head(tied=r.bool("tie_word_embeddings", True)), names=GPT2_NAMES,
        extra_allowed=DROPOUTS, learned_positions=c.max_position_embeddings,
    )


GPTJ_NAMES = Names(backbone="transformer", embed="wte", layers="h", final_norm="ln_f", attn="attn", input_norm="ln_1",
                   o="out_proj", up="fc_in", down="fc_out")


def replica_gptj(tiny: dict[str, Any], arch: Architecture) -> None:
    replica_gpt2(tiny, arch)
    tiny["rotary_dim"] = tiny["n_embd"] // tiny["n_head"] // 2  # part of each head rotates, as in GPT-J-6B


@family("gptj", title="GPT-J", replica=replica_gptj)
def lower_gptj(r: ConfigReader, model_type: str) -> Architecture:
    """GPT-J: parallel attention + MLP under one LayerNorm, interleaved RoPE on the first rotary_dim channels
    of each head, no attention biases, a biased untied head."""
    c = _gpt2_sizes(r, vocab=50400, hidden=4096, heads=16, layers=28, positions=2048)
    rotary_dim = r.int("rotary_dim", 64, nullable=True)
    if rotary_dim is None or rotary_dim > c.head_dim or rotary_dim % 2:
        # transformers sizes the table by hidden_size when rotary_dim is null, which only works for one head.
        raise UnsupportedError(f"{r.where}: key 'rotary_dim' must be an even number of channels up to the head size "
                               f"({c.head_dim}), got {rotary_dim!r}")
    rope = rope_table("global", {}, theta=10000.0, head_dim=c.head_dim, partial=rotary_dim / c.head_dim,
                      where=f"{r.where}: rope").model_copy(update={"layout": "interleaved"})
    r.require_value("tie_word_embeddings", (False,), False)  # a tied head would still carry its own bias
    mlp = Mlp(gated=False, activation=r.str("activation_function", "gelu_new", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=True)
    return _assemble(
        r, c, model_type=model_type, rope=rope, norm=_torch_layernorm(r.float("layer_norm_epsilon", 1e-5)),
        attention=dict(scale=c.head_dim**-0.5), mlp=mlp, block="parallel", head=Head(tied=False, bias=True),
        names=GPTJ_NAMES, extra_allowed=DROPOUTS,
    )
