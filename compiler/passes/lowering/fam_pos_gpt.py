"""GPT-style families with learned absolute positions and their own key names: GPT-Neo (global and local
attention layers, unscaled scores, the checkpoint's attention nested as ``attn.attention``).

Each reads exactly the keys its transformers 5.24 config class and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, Head, Layer, Mlp, Names, Norm
from ...basics.errors import ConfigError
from .fam_gpt import DROPOUTS, _assemble, _common, _torch_layernorm
from .families import ACTIVATIONS
from .reader import ConfigReader
from .registry import family

GPT_NEO_NAMES = Names(backbone="transformer", embed="wte", positions="wpe", layers="h", final_norm="ln_f", attn="attn",
                      attn_checkpoint="attn.attention", input_norm="ln_1", post_attn_norm="ln_2", o="out_proj",
                      up="c_fc", down="c_proj")


def _gpt_neo_layers(r: ConfigReader, num_layers: int) -> list[str]:
    """attention_types ([[kinds, repeat], ...], default global/local alternating) expanded to one kind per layer."""
    types = r.any("attention_types", None)
    if types is None:
        types = [[["global", "local"], num_layers // 2]]
    kinds: list[str] = []
    if not isinstance(types, list):
        raise ConfigError(f"{r.where}: key 'attention_types' must be a list of [kinds, repeat] pairs")
    for item in types:
        ok = isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], list) and isinstance(item[1], int)
        if not ok or not all(kind in ("global", "local") for kind in item[0]):
            raise ConfigError(f"{r.where}: key 'attention_types' must be a list of [[\"global\" | \"local\", ...], repeat]"
                              f" pairs, got {item!r:.60}")
        kinds += list(item[0]) * item[1]
    if len(kinds) != num_layers:
        raise ConfigError(f"{r.where}: 'attention_types' gives {len(kinds)} layers, 'num_layers' is {num_layers}")
    written = r.any("attention_layers", None)  # the expansion, which the config class recomputes
    if written is not None and written != kinds:
        raise ConfigError(f"{r.where}: key 'attention_layers' disagrees with 'attention_types'")
    return kinds


def _replica_gpt_neo(tiny: dict[str, Any], arch: Architecture) -> None:
    from .replica import WINDOW

    tiny.pop("num_key_value_heads", None)
    tiny["num_heads"], tiny["num_layers"] = tiny.pop("num_attention_heads"), tiny.pop("num_hidden_layers")
    kinds = ["local" if layer.mixer.span == "sliding" else "global" for layer in arch.layers[:tiny["num_layers"]]]
    tiny["attention_types"] = [[[kind], 1] for kind in kinds]
    tiny.pop("attention_layers", None)
    tiny["window_size"] = WINDOW
    tiny.pop("sliding_window", None)
    tiny["max_position_embeddings"] = 64  # a small learned position table, still longer than the test sequences


@family("gpt_neo", title="GPT-Neo", replica=_replica_gpt_neo)
def lower_gpt_neo(r: ConfigReader, model_type: str) -> Architecture:
    """GPT-Neo: GPT-2's block with nn.Linear weights, learned positions, unscaled attention scores, no q/k/v biases,
    and layers alternating global (full) and local attention (the last window_size keys)."""
    hidden, heads = r.int("hidden_size", 2048), r.int("num_heads", 16)
    layers = r.int("num_layers", 24)
    c = _common(r, vocab=r.int("vocab_size", 50257), hidden=hidden, heads=heads, layers=layers,
                intermediate=r.int("intermediate_size", None, nullable=True) or 4 * hidden,
                max_pos=r.int("max_position_embeddings", 2048))
    kinds = _gpt_neo_layers(r, layers)
    window = r.int("window_size", 256)
    if window > c.max_position_embeddings:
        raise ConfigError(f"{r.where}: 'window_size' ({window}) exceeds 'max_position_embeddings'")
    norm = _torch_layernorm(r.float("layer_norm_epsilon", 1e-5))
    mlp = Mlp(gated=False, activation=r.str("activation_function", "gelu_new", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=True)
    tied = r.bool("tie_word_embeddings", True)
    r.finish(DROPOUTS | {"embed_dropout", "resid_dropout", "gradient_checkpointing"})

    def mixer(kind: str) -> Attention:
        local = kind == "local"
        return Attention(span="sliding" if local else "full", window=window if local else None, num_heads=c.num_heads,
                         num_kv_heads=c.num_heads, head_dim=c.head_dim, rope=None, o_bias=True, scale=1.0)

    return Architecture(
        model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
        dtype=c.dtype, embedding=Embedding(vocab_size=c.vocab_size, learned_positions=c.max_position_embeddings),
        layers=tuple(Layer(index=i, mixer=mixer(kind), ffn=mlp, block="pre_norm", norm=norm) for i, kind in enumerate(kinds)),
        final_norm=norm, head=Head(tied=tied), names=GPT_NEO_NAMES,
    )



OPT_NAMES = Names(final_norm="final_layer_norm", input_norm="self_attn_layer_norm", post_attn_norm="final_layer_norm",
                  o="out_proj", up="fc1", down="fc2", mlp_checkpoint="")
OPT_POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding: position p reads row p + 2


def _replica_opt(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.pop("num_key_value_heads", None)
    tiny["ffn_dim"] = tiny.pop("intermediate_size")
    if tiny.get("word_embed_proj_dim") is not None:
        tiny["word_embed_proj_dim"] = tiny["hidden_size"]
    tiny["max_position_embeddings"] = 64  # a small learned position table, still longer than the test sequences


@family("opt", title="OPT", replica=_replica_opt, pad_token_id=1)
def lower_opt(r: ConfigReader, model_type: str) -> Architecture:
    """OPT (pre-norm releases: 125M, 1.3B and up): learned positions read two rows further (position + 2), queries
    scaled before q.k, LayerNorms with bias, ReLU MLP fc1/fc2, one enable_bias switch, the decoder's keys under
    model.decoder (decoder.* in the published files)."""
    hidden, heads = r.int("hidden_size", 768), r.int("num_attention_heads", 12)
    c = _common(r, vocab=r.int("vocab_size", 50272), hidden=hidden, heads=heads, layers=r.int("num_hidden_layers", 12),
                intermediate=r.int("ffn_dim", 3072), max_pos=r.int("max_position_embeddings", 2048))
    r.require_value("do_layer_norm_before", (True,), True)  # the post-norm variant (OPT-350M) is not compiled yet
    r.require_value("_remove_final_layer_norm", (False,), False)
    r.require_value("layer_norm_elementwise_affine", (True,), True)
    projection = r.int("word_embed_proj_dim", None, nullable=True)
    if projection is not None and projection != hidden:
        raise ConfigError(f"{r.where}: key 'word_embed_proj_dim' = {projection} (embeddings projected to and from "
                          f"hidden_size {hidden}, as OPT-350M) is not supported")
    bias = r.bool("enable_bias", True)
    mlp = Mlp(gated=False, activation=r.str("activation_function", "relu", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=bias)
    arch = _assemble(
        r, c, model_type=model_type, rope=None, norm=_torch_layernorm(1e-5),
        attention=dict(q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=c.head_dim**-0.5, scale_queries=True),
        mlp=mlp, block="pre_norm", head=Head(tied=r.bool("tie_word_embeddings", True)), names=OPT_NAMES,
        extra_allowed=DROPOUTS | {"dropout", "layerdrop", "init_std"},
        learned_positions=c.max_position_embeddings + OPT_POSITION_OFFSET, padding=True,
    )
    embedding = arch.embedding.model_copy(update={"positions_offset": OPT_POSITION_OFFSET})
    return arch.model_copy(update={"embedding": embedding, "backbone_checkpoint": "model.decoder.",
                                   "bare_decoder_checkpoints": True})


BIOGPT_NAMES = Names(backbone="biogpt", final_norm="layer_norm", input_norm="self_attn_layer_norm",
                     post_attn_norm="final_layer_norm", o="out_proj", up="fc1", down="fc2", mlp_checkpoint="",
                     head="output_projection")


def _replica_biogpt(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.pop("num_key_value_heads", None)
    tiny["max_position_embeddings"] = 64  # a small learned position table, still longer than the test sequences


@family("biogpt", title="BioGPT", replica=_replica_biogpt, pad_token_id=1)
def lower_biogpt(r: ConfigReader, model_type: str) -> Architecture:
    """BioGPT: OPT's learned positions (position + 2), token embeddings times sqrt(hidden) as a Python float,
    pre-norm LayerNorms (eps 1e-5 whatever layer_norm_eps says: its model never reads it), GELU MLP fc1/fc2,
    biases everywhere, the head (output_projection) tied to the embedding."""
    hidden, heads = r.int("hidden_size", 1024), r.int("num_attention_heads", 16)
    c = _common(r, vocab=r.int("vocab_size", 42384), hidden=hidden, heads=heads, layers=r.int("num_hidden_layers", 24),
                intermediate=r.int("intermediate_size", 4096), max_pos=r.int("max_position_embeddings", 1024))
    r.float("layer_norm_eps", 1e-12)  # a config field transformers' BioGPT model never reads (its LayerNorms use 1e-5)
    scale = hidden**0.5 if r.bool("scale_embedding", True) else None
    mlp = Mlp(gated=False, activation=r.str("hidden_act", "gelu", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=True)
    arch = _assemble(
        r, c, model_type=model_type, rope=None, norm=_torch_layernorm(1e-5),
        attention=dict(q_bias=True, k_bias=True, v_bias=True, o_bias=True, scale=c.head_dim**-0.5),
        mlp=mlp, block="pre_norm", head=Head(tied=r.bool("tie_word_embeddings", True)), names=BIOGPT_NAMES,
        extra_allowed=frozenset({"hidden_dropout_prob", "attention_probs_dropout_prob", "layerdrop",
                                 "activation_dropout"}),
        learned_positions=c.max_position_embeddings + OPT_POSITION_OFFSET, padding=True,
    )
    embedding = arch.embedding.model_copy(update={"positions_offset": OPT_POSITION_OFFSET, "scale": scale,
                                                  "scale_in_dtype": False})
    return arch.model_copy(update={"embedding": embedding})


XGLM_NAMES = Names(final_norm="layer_norm", input_norm="self_attn_layer_norm", post_attn_norm="final_layer_norm",
                   o="out_proj", up="fc1", down="fc2", mlp_checkpoint="")


def _replica_xglm(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.pop("num_key_value_heads", None)
    for generic, own in (("hidden_size", "d_model"), ("num_attention_heads", "attention_heads"),
                         ("num_hidden_layers", "num_layers"), ("intermediate_size", "ffn_dim")):
        tiny[own] = tiny.pop(generic)


@family("xglm", title="XGLM", replica=_replica_xglm, pad_token_id=1)
def lower_xglm(r: ConfigReader, model_type: str) -> Architecture:
    """XGLM: fixed sinusoidal positions read two rows further (position + 2), token embeddings times sqrt(d_model)
    as a Python float, queries scaled before q.k, pre-norm LayerNorms (eps 1e-5), GELU MLP fc1/fc2, biases
    everywhere, a tied head."""
    hidden, heads = r.int("d_model", 1024), r.int("attention_heads", 16)
    c = _common(r, vocab=r.int("vocab_size", 256008), hidden=hidden, heads=heads, layers=r.int("num_layers", 24),
                intermediate=r.int("ffn_dim", 4096), max_pos=r.int("max_position_embeddings", 2048))
    r.require_value("add_cross_attention", (False,), False)
    scale = hidden**0.5 if r.bool("scale_embedding", True) else None
    mlp = Mlp(gated=False, activation=r.str("activation_function", "gelu", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=True)
    arch = _assemble(
        r, c, model_type=model_type, rope=None, norm=_torch_layernorm(1e-5),
        attention=dict(q_bias=True, k_bias=True, v_bias=True, o_bias=True, scale=c.head_dim**-0.5, scale_queries=True),
        mlp=mlp, block="pre_norm", head=Head(tied=r.bool("tie_word_embeddings", True)), names=XGLM_NAMES,
        extra_allowed=frozenset({"dropout", "activation_dropout", "layerdrop", "init_std", "decoder_start_token_id"}),
        padding=True,
    )
    embedding = arch.embedding.model_copy(update={"sinusoidal_positions": True, "positions_offset": OPT_POSITION_OFFSET,
                                                  "scale": scale, "scale_in_dtype": False})
    return arch.model_copy(update={"embedding": embedding})


CODEGEN_NAMES = Names(backbone="transformer", embed="wte", layers="h", final_norm="ln_f", attn="attn", input_norm="ln_1",
                      o="out_proj", up="fc_in", down="fc_out")
CODEGEN_BLOCKS = 4  # CodeGenAttention's mp_num: the fused projection is 4 blocks of [q; v; k]


def _replica_codegen(tiny: dict[str, Any], arch: Architecture) -> None:
    from .fam_gpt import replica_gpt2

    replica_gpt2(tiny, arch)
    tiny["n_ctx"] = tiny["n_positions"]
    tiny["rotary_dim"] = tiny["n_embd"] // tiny["n_head"] // 2  # part of each head rotates, as in the releases


@family("codegen", title="CodeGen", replica=_replica_codegen)
def lower_codegen(r: ConfigReader, model_type: str) -> Architecture:
    """CodeGen (1, 2): GPT-J's block (parallel attention + MLP under one LayerNorm, interleaved RoPE on the first
    rotary_dim channels of each head, no attention biases, a biased head) with q, k and v in one matrix of four
    [q_b; v_b; k_b] blocks."""
    from .rope import rope_table

    hidden = r.int("n_embd", 4096)
    c = _common(r, vocab=r.int("vocab_size", 50400), hidden=hidden, heads=r.int("n_head", 16), layers=r.int("n_layer", 28),
                intermediate=r.int("n_inner", None, nullable=True) or 4 * hidden, max_pos=r.int("n_positions", 2048))
    r.int("n_ctx", 2048)  # a config field transformers' CodeGen model never reads
    rotary_dim = r.int("rotary_dim", 64, nullable=True)
    if rotary_dim is None or rotary_dim > c.head_dim or rotary_dim % 2:
        raise ConfigError(f"{r.where}: key 'rotary_dim' must be an even number of channels up to the head size "
                          f"({c.head_dim}), got {rotary_dim!r}")
    if hidden % CODEGEN_BLOCKS:
        raise ConfigError(f"{r.where}: 'n_embd' ({hidden}) must be a multiple of {CODEGEN_BLOCKS} (the q/v/k blocks)")
    rope = rope_table("global", {}, theta=10000.0, head_dim=c.head_dim, partial=rotary_dim / c.head_dim,
                      where=f"{r.where}: rope").model_copy(update={"layout": "interleaved"})
    r.require_value("tie_word_embeddings", (False,), False)  # a tied head would still carry its own bias
    mlp = Mlp(gated=False, activation=r.str("activation_function", "gelu_new", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=True)
    arch = _assemble(
        r, c, model_type=model_type, rope=rope, norm=_torch_layernorm(r.float("layer_norm_epsilon", 1e-5)),
        attention=dict(qkv="fused_qvk_blocks", qkv_blocks=CODEGEN_BLOCKS, scale=c.head_dim**-0.5), mlp=mlp,
        block="parallel", head=Head(tied=False, bias=True), names=CODEGEN_NAMES, extra_allowed=DROPOUTS,
    )
    # Published checkpoints store each layer's causal-mask buffer, which transformers ignores on load.
    return arch.model_copy(update={"stale_layer_buffers": ("attn.causal_mask",)})
