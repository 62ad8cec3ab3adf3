"""The GPT group: GPT-2, GPT-NeoX (Pythia, RedPajama-INCITE) and Phi (1, 1.5, 2).

What sets them apart from the Llama block: LayerNorm with a bias (torch's own), learned
absolute positions and transposed Conv1D weights (GPT-2), fused qkv projections (GPT-2's
[q; k; v], GPT-NeoX's per-head [q_h; k_h; v_h]), parallel attention + MLP blocks (GPT-NeoX
with two norms, Phi with one shared norm), partial rotary embeddings and biased output heads.
Their configs use their own key names (GPT-2's n_embd, GPT-NeoX's rotary_pct), so each
family also has a tiny-replica adjust that renames the replica's generic keys.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, Head, Layer, Mlp, Names, Norm, Rope
from ...basics.errors import ConfigError, UnsupportedError
from .families import ACTIVATIONS, DTYPES, Common, padding_idx
from .reader import ConfigReader
from .rope import rope_table

# Training-only or task-head keys of these families: they never change causal-LM logits.
DROPOUTS = frozenset({"attn_pdrop", "embd_pdrop", "resid_pdrop", "hidden_dropout", "classifier_dropout"})
GPT2_IRRELEVANT = DROPOUTS | frozenset(
    {
        "n_ctx",  # an old alias of n_positions that transformers no longer reads
        "summary_type",  # summary_*: the multiple-choice head of GPT2DoubleHeadsModel
        "summary_use_proj",
        "summary_activation",
        "summary_proj_to_labels",
        "summary_first_dropout",
        "summary_last_dropout",
        "task_specific_params",  # generation defaults
    }
)
NEOX_IRRELEVANT = DROPOUTS | frozenset({"is_decoder"})  # is_decoder: encoder-decoder plumbing only
PHI_IRRELEVANT = DROPOUTS

GPT2_NAMES = Names(
    backbone="transformer", embed="wte", positions="wpe", layers="h", final_norm="ln_f", attn="attn",
    input_norm="ln_1", post_attn_norm="ln_2", qkv="c_attn", o="c_proj", up="c_fc", down="c_proj",
)
GPT2_STALE_BUFFERS = ("attn.bias", "attn.masked_bias")
NEOX_NAMES = Names(
    backbone="gpt_neox", embed="embed_in", layers="layers", final_norm="final_layer_norm", head="embed_out",
    attn="attention", qkv="query_key_value", o="dense", up="dense_h_to_4h", down="dense_4h_to_h",
)
PHI_NAMES = Names(
    final_norm="final_layernorm", o="dense", up="fc1", down="fc2", q_norm="q_layernorm", k_norm="k_layernorm",
)


def _dtype(r: ConfigReader) -> str:
    dtype = r.any("torch_dtype", None) or r.any("dtype", None) or "float32"
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ConfigError(f"{r.where}: key 'torch_dtype' = {dtype!r:.40} is not a floating dtype llmgen knows")
    return DTYPES[dtype]


def _common(r: ConfigReader, *, vocab: int, hidden: int, heads: int, layers: int, intermediate: int,
            max_pos: int, head_dim: int | None = None, kv: int | None = None) -> Common:
    if head_dim is None:
        if hidden % heads:
            raise ConfigError(f"{r.where}: the hidden size ({hidden}) is not divisible by the number of heads ({heads})")
        head_dim = hidden // heads
    kv = kv or heads
    if kv > heads or heads % kv:
        raise ConfigError(f"{r.where}: 'num_attention_heads' ({heads}) is not a multiple of 'num_key_value_heads' ({kv})")
    return Common(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_layers=layers,
                  num_heads=heads, num_kv_heads=kv, head_dim=head_dim, max_position_embeddings=max_pos,
                  dtype=_dtype(r))


def _single_rope(r: ConfigReader, c: Common, *, theta_key: str, partial_key: str, partial_default: float) -> Rope:
    """One RoPE table from v4 keys (a theta key, a partial-rotary key, ``rope_scaling``) or the v5
    ``rope_parameters`` dict, with this family's defaults: transformers' config classes fill
    ``rope_parameters`` from ``rope_scaling or rope_parameters`` and default the theta and the
    partial factor from the family's own keys."""
    scaling, params = r.any("rope_scaling", None), r.any("rope_parameters", None)
    if scaling is not None and params is not None:
        raise ConfigError(f"{r.where}: give either 'rope_parameters' or 'rope_scaling', not both")
    theta = r.float(theta_key, 10000.0)
    partial = r.float(partial_key, partial_default)
    return rope_table("global", scaling or params or {}, theta=theta, head_dim=c.head_dim, partial=partial,
                      where=f"{r.where}: rope parameters")


def _assemble(
    r: ConfigReader, c: Common, *, model_type: str, rope: Rope | None, norm: Norm, attention: dict[str, Any],
    mlp: Mlp, block: str, head: Head, names: Names, extra_allowed: frozenset[str], parallel_norms: int = 1,
    learned_positions: int | None = None, linear_layout: str = "out_in", padding: bool = False,
) -> Architecture:
    """Every layer alike (full attention, one optional RoPE table); rejects the keys nobody read."""
    pad = padding_idx(r, c.vocab_size) if padding else None  # Phi's embedding has padding_idx, GPT-2's and NeoX's not
    r.finish(extra_allowed)
    mixer = Attention(span="full", num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                      rope=rope.name if rope else None, **attention)
    layers = tuple(
        Layer(index=i, mixer=mixer, ffn=mlp, block=block, parallel_norms=parallel_norms, norm=norm,
              parallel_sum="branches_first" if block == "parallel" else "residual_first")  # attn + mlp + x
        for i in range(c.num_layers)
    )
    return Architecture(
        model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
        dtype=c.dtype, embedding=Embedding(vocab_size=c.vocab_size, learned_positions=learned_positions, padding_idx=pad),
        rope=(rope,) if rope else (), layers=layers, final_norm=norm, head=head, linear_layout=linear_layout,
        names=names,
    )


def _torch_layernorm(eps: float) -> Norm:
    """nn.LayerNorm: weight and bias, computed in the input's dtype."""
    return Norm(kind="layernorm", eps=eps, bias=True, compute_dtype="input")


def lower_gpt2(r: ConfigReader, model_type: str) -> Architecture:
    """GPT-2: learned positions, Conv1D weights, fused [q; k; v], LayerNorm with bias, tied head."""
    for key in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        r.require_value(key, (False,), False)  # a per-layer attention scale / an encoder-decoder model
    # Eager attention with this flag computes q.k in float32 with the scale inside baddbmm: not the
    # same float operations as the plain path, and only in eager mode (sdpa ignores it). Refused.
    r.require_value("reorder_and_upcast_attn", (False,), False)
    hidden = r.int("n_embd", 768)
    c = _common(r, vocab=r.int("vocab_size", 50257), hidden=hidden, heads=r.int("n_head", 12),
                layers=r.int("n_layer", 12), intermediate=r.int("n_inner", None, nullable=True) or 4 * hidden,
                max_pos=r.int("n_positions", 1024))
    scale = c.head_dim**-0.5 if r.bool("scale_attn_weights", True) else 1.0
    mlp = Mlp(gated=False, activation=r.str("activation_function", "gelu_new", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=True)
    arch = _assemble(
        r, c, model_type=model_type, rope=None, norm=_torch_layernorm(r.float("layer_norm_epsilon", 1e-5)),
        attention=dict(qkv="fused", q_bias=True, k_bias=True, v_bias=True, o_bias=True, scale=scale), mlp=mlp,
        block="pre_norm", head=Head(tied=r.bool("tie_word_embeddings", True)), names=GPT2_NAMES,
        extra_allowed=GPT2_IRRELEVANT, learned_positions=c.max_position_embeddings, linear_layout="in_out",
    )
    # The published GPT-2 checkpoints were saved from the bare decoder (keys "h.0.attn.c_attn.weight", not
    # "transformer.h.0...") and hold the old causal-mask buffers of each attention block.
    return arch.model_copy(update={"bare_decoder_checkpoints": True, "stale_layer_buffers": GPT2_STALE_BUFFERS})


def lower_gpt_neox(r: ConfigReader, model_type: str) -> Architecture:
    """GPT-NeoX: per-head fused qkv, partial RoPE, parallel residual with two LayerNorms (or sequential)."""
    c = _common(r, vocab=r.int("vocab_size", 50432), hidden=r.int("hidden_size", 6144),
                heads=r.int("num_attention_heads", 64), layers=r.int("num_hidden_layers", 44),
                intermediate=r.int("intermediate_size", 24576), max_pos=r.int("max_position_embeddings", 2048))
    rope = _single_rope(r, c, theta_key="rotary_emb_base", partial_key="rotary_pct", partial_default=0.25)
    bias = r.bool("attention_bias", True)
    parallel = r.bool("use_parallel_residual", True)
    mlp = Mlp(gated=False, activation=r.str("hidden_act", "gelu", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=True)
    return _assemble(
        r, c, model_type=model_type, rope=rope, norm=_torch_layernorm(r.float("layer_norm_eps", 1e-5)),
        attention=dict(qkv="fused_per_head", q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias,
                       scale=c.head_dim**-0.5),
        mlp=mlp, block="parallel" if parallel else "pre_norm", parallel_norms=2 if parallel else 1,
        head=Head(tied=r.bool("tie_word_embeddings", False)), names=NEOX_NAMES, extra_allowed=NEOX_IRRELEVANT,
    )


def lower_phi(r: ConfigReader, model_type: str) -> Architecture:
    """Phi 1/1.5/2: parallel attention + MLP under one shared LayerNorm, partial RoPE, biases everywhere."""
    hidden, heads = r.int("hidden_size", 2048), r.int("num_attention_heads", 32)
    c = _common(r, vocab=r.int("vocab_size", 51200), hidden=hidden, heads=heads,
                layers=r.int("num_hidden_layers", 24), intermediate=r.int("intermediate_size", 8192),
                max_pos=r.int("max_position_embeddings", 2048), head_dim=r.int("head_dim", None, nullable=True),
                kv=r.int("num_key_value_heads", None, nullable=True))
    # transformers' PhiConfig defaults the partial factor to 0.5 when the config names none.
    rope = _single_rope(r, c, theta_key="rope_theta", partial_key="partial_rotary_factor", partial_default=0.5)
    norm = _torch_layernorm(r.float("layer_norm_eps", 1e-5))
    attention: dict[str, Any] = dict(q_bias=True, k_bias=True, v_bias=True, o_bias=True, scale=c.head_dim**-0.5)
    if r.bool("qk_layernorm", False):
        if c.head_dim != hidden // heads:
            raise UnsupportedError(f"{r.where}: key 'qk_layernorm' = true with a 'head_dim' other than "
                                   "hidden_size / num_attention_heads is not supported")
        attention.update(qk_norm="per_head", qk_norm_spec=norm)  # a LayerNorm over each head's channels
    mlp = Mlp(gated=False, activation=r.str("hidden_act", "gelu_new", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=True)
    return _assemble(
        r, c, model_type=model_type, rope=rope, norm=norm, attention=attention, mlp=mlp, block="parallel",
        head=Head(tied=r.bool("tie_word_embeddings", False), bias=True), names=PHI_NAMES,
        extra_allowed=PHI_IRRELEVANT, padding=True,
    )


# Tiny replicas: the generic shrink writes Llama-style keys; rename them to each family's own.
def replica_gpt2(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.pop("num_key_value_heads", None)
    for generic, own in (("hidden_size", "n_embd"), ("num_attention_heads", "n_head"),
                         ("num_hidden_layers", "n_layer"), ("intermediate_size", "n_inner")):
        tiny[own] = tiny.pop(generic)
    tiny["n_positions"] = 64  # a small learned position table, still longer than the test sequence
    tiny.pop("n_ctx", None)


def replica_gpt_neox(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.pop("num_key_value_heads", None)  # GPT-NeoX has no grouped key/value heads


FAMILIES = {"gpt2": lower_gpt2, "gpt_neox": lower_gpt_neox, "phi": lower_phi}
REPLICAS = {"gpt2": replica_gpt2, "gpt_neox": replica_gpt_neox}
