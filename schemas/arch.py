"""The architecture IR: what a decoder-only language model *is*, layer by layer.

The IR is produced by the lowering pass (the only code that knows Hugging Face config key
names) and consumed by validation, the weight map and rendering. It never says how to
print anything. Every model is frozen; ``extra="forbid"`` makes a typo a loud error.

Room is left for later kinds: ``Layer.mixer`` and ``Layer.ffn`` are discriminated unions
(``kind``) so MoE feed-forwards, MLA attention or non-attention mixers slot in as new
members without touching the existing ones.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import (  # noqa: F401  (re-exported: the IR's public names)
    MAX_CONTEXT, MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH, HeadCount, Identifier, Norm, PositiveInt, Width,
    _Frozen, _unset,
)
from .altup import AltUp, Laurel  # noqa: F401
from .kda import KimiDelta, KimiDeltaNames  # noqa: F401
from .linear import GatedDeltaNet, GatedDeltaNetNames  # noqa: F401
from .short_conv import ShortConv, ShortConvNames  # noqa: F401
from .mla import Indexer, IndexerNames, Mla, MlaNames  # noqa: F401
from .compressed import ClampedMoe, CompressedAttention, Compressor, HyperConnections, SparseSelection  # noqa: F401
from .mamba2 import Mamba2, Mamba2Names  # noqa: F401
from .moe import MAX_EXPERTS, Moe, MoeNames  # noqa: F401
from .parallel import MixerMultipliers, check_mlp_multipliers, check_parallel_mixer
from .positions import Alibi, Rope, TemperatureTuning  # noqa: F401
from .quant import Fp8Weights, ModeloptWeights, Mxfp4Weights  # noqa: F401

SCHEMA_VERSION = 1


class Attention(_Frozen):
    """Multi-head (grouped-query) softmax attention."""

    kind: Literal["attention"] = "attention"
    span: Literal["full", "sliding", "chunked"]
    window: Annotated[int, Field(gt=0, le=MAX_CONTEXT)] | None = Field(None, description="Keys within the last `window` positions (self included).")
    chunk_size: Annotated[int, Field(gt=0, le=MAX_CONTEXT)] | None = Field(
        None, description="chunked: positions form chunks of this many (0..n-1, n..2n-1, ...); a query sees the "
        "keys of its own chunk only, up to itself (Llama 4's attention_chunk_size).")
    num_heads: HeadCount
    num_kv_heads: HeadCount
    head_dim: Width
    rope: Identifier | None = Field(description="Name of the RoPE table, or None for NoPE.")
    qkv: Literal["separate", "fused", "fused_per_head", "fused_grouped", "fused_qvk_blocks"] = Field(
        "separate", description="How the checkpoint stores the q/k/v projections: three matrices, one "
        "matrix of [q; k; v] blocks, or one matrix interleaved per head ([q_h; k_h; v_h] for each head h), or "
        "interleaved per key/value group ([q_g1 .. q_gr; k_g; v_g] for each group g of r query heads: Falcon's new "
        "decoder architecture), or qkv_blocks blocks of [q_b; v_b; k_b] (CodeGen's 4 model-parallel shards; the "
        "queries are the blocks' q parts in order, likewise keys and values)."
    )
    qkv_blocks: PositiveInt | None = Field(None, exclude_if=_unset, description="fused_qvk_blocks: the number of blocks.")
    qk_norm: Literal["none", "per_head", "whole", "per_head_weights", "per_head_modules", "l2"] = Field(
        "none", description="per_head: one norm over head_dim shared by all heads. whole: one norm over "
        "the whole projection (heads x head_dim), before it is split into heads. per_head_weights: a norm "
        "over head_dim with a weight row of its own for each head, stored as one (heads, head_dim) tensor (Cohere). "
        "per_head_modules: the same computation, each head's norm a module of its own, stored as `norms.{h}.weight` "
        "for head h (StableLM); qk_norm_spec may then differ from the layers' norm in its bias only. "
        "l2: x / sqrt(mean(x^2) + eps) over each head's channels, in float32, with no weight, applied after RoPE "
        "(Llama 4; qk_norm_spec gives eps)."
    )
    qk_norm_spec: Norm | None = None
    qk_norm_after_rope: bool = Field(False, exclude_if=_unset, description="per_head: the QK-norm is applied to the "
                                     "rotated queries and keys (after RoPE) rather than before (HunYuan).")
    clip_qkv: Annotated[float, Field(gt=0)] | None = Field(
        None, exclude_if=_unset, description="The query, key and value projections are clamped to "
        "[-clip_qkv, clip_qkv] before anything else (OLMo, MPT).")
    alibi: Alibi | None = Field(None, exclude_if=_unset, description="Linear biases by key position added to the "
                                "scaled scores (ALiBi).")
    scale_queries: bool = Field(False, exclude_if=_unset, description="The scale multiplies the queries (bias "
                                "included) before q.k rather than the scores after it (OPT).")
    output_norm: bool = Field(False, exclude_if=_unset, description="The heads' concatenated output is normalised "
                              "(a norm like the layers', over num_heads x head_dim) before o_proj (BitNet's attn_sub_norm).")
    q_bias: bool = False
    k_bias: bool = False
    v_bias: bool = False
    o_bias: bool = False
    scale: Annotated[float, Field(gt=0)] = Field(description="Multiplies q.k before the softmax.")
    softcap: Annotated[float, Field(gt=0)] | None = None
    temperature: TemperatureTuning | None = Field(None, description="A position-dependent query scale "
                                                  "(Llama 4's attention temperature tuning).")
    sinks: bool = Field(False, exclude_if=_unset, description="A learned logit per head (`sinks`) joins each "
                        "query's scores in the softmax and is dropped after it, so a query may attend to nothing "
                        "(gpt-oss).")
    output_gate: bool = Field(False, exclude_if=_unset, description="q_proj also produces a gate per head, stored "
                              "after each head's query ([q_h; gate_h]): the attention output is multiplied by "
                              "sigmoid(gate) before o_proj (Qwen3-Next, Qwen3.5).")

    v_head_dim: Width | None = Field(None, exclude_if=_unset, description="Width of each value head when it "
                                     "differs from head_dim (the queries' and keys'): v_proj gives num_kv_heads x "
                                     "v_head_dim, o_proj reads num_heads x v_head_dim (MiMo-V2-Flash).")
    value_scale: Annotated[float, Field(gt=0)] | None = Field(
        None, exclude_if=_unset, description="The values are multiplied by this after their projection "
        "(MiMo-V2-Flash's attention_value_scale).")
    head_gate: bool = Field(False, exclude_if=_unset, description="A projection of its own (`head_gate`, hidden -> "
                            "num_heads, no bias) gives one gate per head: each head's output is multiplied by "
                            "sigmoid(gate) before o_proj (Step-3.5's g_proj).")
    k_eq_v: bool = Field(False, exclude_if=_unset, description="No value projection: the values are the key "
                         "projection's output, taken before the key norm and RoPE (Gemma 4's attention_k_eq_v).")
    v_norm: bool = Field(False, exclude_if=_unset, description="Values are RMS-normalised over each head's channels "
                         "with no weight (eps of qk_norm_spec) before attention.")
    kv_shared_from: Annotated[int, Field(ge=0)] | None = Field(
        None, exclude_if=_unset, description="This layer computes no keys or values and keeps no cache: it attends "
        "over the keys and values of layer `kv_shared_from` (an earlier layer of the same span).")

    @model_validator(mode="after")
    def _heads_and_window(self) -> "Attention":
        if self.num_kv_heads > self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.num_heads * self.head_dim > MAX_WIDTH:
            raise ValueError(f"num_heads x head_dim ({self.num_heads} x {self.head_dim}) exceeds {MAX_WIDTH}")
        if (self.span == "sliding") != (self.window is not None):
            raise ValueError("a window is given exactly when the span is 'sliding'")
        if (self.span == "chunked") != (self.chunk_size is not None):
            raise ValueError("a chunk_size is given exactly when the span is 'chunked'")
        return self


class Mlp(_Frozen):
    """A dense feed-forward block: down(act(gate(x)) * up(x)) when gated, else down(act(up(x)))."""

    kind: Literal["mlp"] = "mlp"
    gated: bool
    activation: Literal["silu", "gelu", "gelu_tanh", "gelu_new", "relu", "relu2", "xielu", "gelu_fast_tanh"] = Field(
        description="gelu_tanh: torch's fused tanh GELU. gelu_new: the same formula written out with pow "
        "(GPT-2, Phi): it rounds differently, most visibly in bfloat16. relu2: relu(x) squared (Nemotron, Arcee). "
        "xielu: xIELU with learned alpha_p, alpha_n and stored beta, eps (Apertus; a module `act_fn` of the MLP). "
        "gelu_fast_tanh: x * 0.5 * (1 + tanh(0.79788456 x (1 + 0.044715 x^2))), BLOOM's written-out tanh GELU.")
    intermediate_size: Width
    bias: bool = False
    fused_gate_up: bool = Field(False, description="The checkpoint stores [gate; up] as one matrix.")
    inner_norm: bool = Field(False, exclude_if=_unset, description="The intermediate activation is normalised (a norm "
                             "like the layers', over intermediate_size) before down_proj (BitNet's ffn_sub_norm).")
    gate_sparsity_std: float | None = Field(None, exclude_if=_unset, description="Activation sparsity (gated MLPs): the "
                                            "gate output g becomes relu(g - mean(g) - gate_sparsity_std x std(g)) over "
                                            "its channels (population std), a Gaussian top-k (Gemma 3n).")
    gate_multiplier: float | None = Field(None, exclude_if=_unset, description="The gate projection's output is "
                                          "multiplied by this before the activation (Falcon-H1's mlp_multipliers[0]).")
    down_multiplier: float | None = Field(None, exclude_if=_unset, description="The block's output (after down_proj) "
                                          "is multiplied by this (Falcon-H1's mlp_multipliers[1]).")

    _multipliers = model_validator(mode="after")(check_mlp_multipliers)


Mixer = Annotated[Union[Attention, Mla, GatedDeltaNet, ShortConv, KimiDelta, Mamba2, CompressedAttention],
                  Field(discriminator="kind")]
FeedForward = Annotated[Union[Mlp, Moe, ClampedMoe], Field(discriminator="kind")]


class Layer(_Frozen):
    """One decoder block."""

    index: Annotated[int, Field(ge=0)]
    mixer: Mixer | None = Field(description="The token mixer; None: a layer that is only a feed-forward block "
                                "(Nemotron-H's MLP and MoE layers).")
    ffn: FeedForward | None = Field(description="The feed-forward block; None: a layer that is only a mixer "
                                    "(Mamba-2, Nemotron-H's Mamba and attention layers).")
    block: Literal["pre_norm", "post_norm", "sandwich", "parallel"] = Field(
        description="pre_norm: x + f(norm(x)). post_norm: x + norm(f(x)) (OLMo 2). sandwich: "
        "x + post_norm(f(pre_norm(x))) (Gemma 2/3). parallel: x + attn(norm(x)) + mlp(norm(x)) with one "
        "shared norm (Phi, Cohere) or, with parallel_norms=2, a norm each (GPT-NeoX)."
    )
    parallel_norms: Literal[1, 2] = 1
    parallel_sum: Literal["residual_first", "branches_first"] = Field(
        "residual_first", description="Parallel blocks: the order of the float additions, (x + attn) + mlp "
        "(StableLM, Cohere) or (attn + mlp) + x (Phi, GPT-NeoX).")
    norm: Norm
    residual_scale: float | None = Field(None, description="Branch outputs are multiplied by this before the "
                                         "residual add (Granite's residual_multiplier).")
    experts_beside: Moe | None = Field(
        None, exclude_if=_unset, description="A routed mixture of experts beside the dense MLP (sandwich blocks, "
        "Gemma 4): its router reads the residual stream x, its experts read pre_feedforward_layernorm_2(x); the "
        "branch is post_feedforward_layernorm(post_feedforward_layernorm_1(mlp(...)) + "
        "post_feedforward_layernorm_2(experts(...))).")
    layer_scalar: bool = Field(False, exclude_if=_unset, description="The block's output is multiplied by a "
                               "stored scalar of its own (a buffer `layer_scalar`, shape (1,)).")
    laurel: Laurel | None = Field(None, exclude_if=_unset, description="A low-rank residual branch beside attention.")
    parallel_mixer: Mixer | None = Field(
        None, exclude_if=_unset, description="A recurrent token mixer beside `mixer` (softmax attention) in the same "
        "pre-norm block: both read the layer's normed input and their outputs are summed before the residual add "
        "(Falcon-H1: Mamba-2 beside attention). Its cache lives beside the attention's KV cache.")
    mixer_multipliers: MixerMultipliers | None = Field(None, exclude_if=_unset, description="With a parallel mixer: "
                                                       "the scalars on both mixers' inputs and outputs.")

    @model_validator(mode="after")
    def _one_block_at_least(self) -> "Layer":
        if self.mixer is None and self.ffn is None:
            raise ValueError("a layer has a mixer, a feed-forward block, or both")
        if (self.mixer is None or self.ffn is None) and self.block != "pre_norm":
            raise ValueError("a layer with one block is pre_norm: x + block(norm(x)), its norm the input norm")
        return check_parallel_mixer(self)


class Embedding(_Frozen):
    vocab_size: Annotated[int, Field(gt=0, le=MAX_VOCAB)]
    scale: float | None = Field(None, description="Embeddings are multiplied by this (Gemma: sqrt(hidden)).")
    scale_in_dtype: bool = Field(
        True, description="The scale is rounded to the hidden dtype before multiplying (Gemma) rather than "
        "applied as a Python float (Granite's embedding_multiplier)."
    )
    learned_positions: PositiveInt | None = Field(
        None, description="Size of a learned absolute position table added to the token embeddings (GPT-2)."
    )
    sinusoidal_positions: bool = Field(
        False, exclude_if=_unset, description="A fixed sinusoidal table is added to the token embeddings: for position "
        "p (+ positions_offset), sin(p f_k) on the first half of the channels and cos(p f_k) on the second, "
        "f_k = exp(-k ln(10000) / (half - 1)) (XGLM).")
    positions_offset: Annotated[int, Field(ge=0, le=16)] = Field(
        0, exclude_if=lambda v: v == 0, description="The learned position table has this many leading rows no "
        "position uses: position p reads row p + offset (OPT: 2).")
    norm: Norm | None = Field(None, exclude_if=_unset, description="The token embeddings are normalised by this "
                              "norm before the first layer (BLOOM's word_embeddings_layernorm, NanoChat).")
    padding_idx: Annotated[int, Field(ge=0)] | None = Field(
        None, description="The padding token's row gets no gradient from the lookup (nn.Embedding's padding_idx); "
        "logits are unaffected.")


class Head(_Frozen):
    tied: bool = Field(description="Logits use the embedding matrix instead of a separate lm_head.")
    bias: bool = False
    multiplier: float | None = Field(None, description="Logits are multiplied by this (Cohere's logit_scale).")
    divisor: float | None = Field(None, description="Logits are divided by this (Granite's logits_scaling).")
    softcap: Annotated[float, Field(gt=0)] | None = None


class PerLayerInput(_Frozen):
    """Per-layer embeddings (PLE, Gemma 4 / Gemma 3n): each token gets a small vector per layer, from a
    packed embedding table (`embed_tokens_per_layer`, vocab x layers*width, times embed_scale) plus a
    projection of its main embedding (`per_layer_model_projection` x projection_scale, RMS-normed by
    `per_layer_projection_norm`), the two summed and multiplied by combine_scale. After its feed-forward,
    layer i adds post_norm(projection(act(gate(x)) * input_i)) to the residual stream."""

    width: Width
    vocab_size: Annotated[int, Field(gt=0, le=MAX_VOCAB)]
    embed_scale: float
    projection_scale: float
    combine_scale: float
    norm: Norm
    activation: Literal["silu", "gelu", "gelu_tanh", "relu"]


class Names(_Frozen):
    """Checkpoint names of each part; the generated modules use the same attribute names, so a
    checkpoint key is also the path of the parameter it fills."""

    backbone: Identifier = "model"
    embed: Identifier = "embed_tokens"
    positions: Identifier = "embed_positions"
    embed_norm: Identifier = Field("embed_norm", exclude_if=lambda v: v == "embed_norm",
                                   description="The norm of the token embeddings (Embedding.norm).")
    layers: Identifier = "layers"
    final_norm: Identifier = "norm"
    head: Identifier = "lm_head"
    attn: Identifier = "self_attn"
    linear_attn: Identifier = Field("linear_attn", exclude_if=lambda v: v == "linear_attn",
                                    description="The block of a linear-attention mixer (Gated DeltaNet).")
    short_conv: Identifier = Field("conv", exclude_if=lambda v: v == "conv",
                                   description="The block of a short-convolution mixer (LFM2).")
    mamba: Identifier = Field("mamba", exclude_if=lambda v: v == "mamba",
                              description="The block of a Mamba-2 mixer.")
    mlp: Identifier = "mlp"
    input_norm: Identifier = "input_layernorm"
    post_attn_norm: Identifier = "post_attention_layernorm"
    pre_ffn_norm: Identifier = "pre_feedforward_layernorm"
    post_ffn_norm: Identifier = "post_feedforward_layernorm"
    q: Identifier = "q_proj"
    k: Identifier = "k_proj"
    v: Identifier = "v_proj"
    qkv: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")] = "qkv_proj"  # MPT's `Wqkv`
    o: Identifier = "o_proj"
    sinks: Identifier = Field("sinks", exclude_if=lambda v: v == "sinks")
    head_gate: Identifier = Field("g_proj", exclude_if=lambda v: v == "g_proj",
                                  description="The per-head gate projection (Attention.head_gate).")
    attn_out_norm: Identifier = Field("attn_sub_norm", exclude_if=lambda v: v == "attn_sub_norm",
                                      description="The norm before o_proj (Attention.output_norm).")
    mlp_inner_norm: Identifier = Field("ffn_sub_norm", exclude_if=lambda v: v == "ffn_sub_norm",
                                       description="The norm before down_proj (Mlp.inner_norm).")
    q_norm: Identifier = "q_norm"
    k_norm: Identifier = "k_norm"
    gate: Identifier = "gate_proj"
    up: Identifier = "up_proj"
    down: Identifier = "down_proj"
    gate_up: Identifier = "gate_up_proj"
    attn_checkpoint: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$")] | None = Field(
        None, exclude_if=_unset, description="Where the checkpoint keeps each layer's attention block when it nests it "
        "one module deeper than the code (GPT-Neo's and EXAONE's `attn.attention`): the loader maps its keys.")
    mlp_checkpoint: Annotated[str, Field(pattern=r"^([a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*)?$")] | None = Field(
        None, exclude_if=lambda v: v is None, description="Where the checkpoint keeps each layer's MLP projections "
        "when not under `mlp`: \"\" for directly in the layer (OPT's `fc1`, `fc2`); the loader maps its keys.")
    act_fn: Identifier = Field("act_fn", exclude_if=lambda v: v == "act_fn",
                               description="The MLP's activation module, when it has parameters (xIELU).")


class NestedDecoder(_Frozen):
    """Published checkpoints of a multimodal release (Qwen3.5) store the decoder under `prefix` instead of the
    backbone's name, beside parts the text model does not build (`skipped`: key prefixes of the vision tower,
    the multi-token-prediction head)."""

    prefix: str = Field(pattern=r"^([a-z_][a-z0-9_]*\.)+$")
    skipped: tuple[Annotated[str, Field(pattern=r"^([a-z_][a-z0-9_]*\.)+$")], ...] = ()


class Architecture(_Frozen):
    """A whole decoder-only causal language model."""

    schema_version: Literal[1] = SCHEMA_VERSION
    model_type: Identifier
    hidden_size: Width
    max_position_embeddings: Annotated[int, Field(gt=0, le=MAX_CONTEXT)]
    dtype: Literal["float32", "float16", "bfloat16"]
    embedding: Embedding
    rope: tuple[Rope, ...] = ()
    layers: tuple[Layer, ...] = Field(min_length=1, max_length=MAX_LAYERS)
    final_norm: Norm
    head: Head
    linear_layout: Literal["out_in", "in_out"] = Field(
        "out_in", description="Stored shape of projection matrices: (out, in) as nn.Linear, or (in, out) as "
        "GPT-2's Conv1D."
    )
    names: Names = Names()
    fp8: Fp8Weights | None = Field(None, description="The checkpoint's matrices are block-quantized float8; the "
                                   "loader dequantizes them to the chosen dtype.")
    modelopt: ModeloptWeights | None = Field(None, exclude_if=_unset, description="The checkpoint's matrices are "
                                             "NVFP4 / FP8 (NVIDIA ModelOpt); the loader dequantizes them.")
    mxfp4: Mxfp4Weights | None = Field(None, exclude_if=_unset, description="The experts' stacked matrices are "
                                       "MXFP4 on disk; the loader dequantizes them to the chosen dtype.")
    extra_checkpoint_layers: Annotated[int, Field(ge=0, le=MAX_LAYERS)] = Field(
        0, description="The checkpoint holds this many layers after the decoder's (DeepSeek's multi-token-prediction "
        "layers) that logits never use: the loader skips their keys.")
    checkpoint_prefix: str = Field(
        "", pattern=r"^([a-z_][a-z0-9_]*\.)*$", description="Prefix of every key in the checkpoint (wrappers)."
    )
    backbone_checkpoint: str = Field(
        "", pattern=r"^([a-z_][a-z0-9_]*\.)*$", exclude_if=lambda value: not value,
        description="Where a multimodal checkpoint keeps the backbone's keys when the head's stay outside it "
        "(Qwen3-VL: `model.language_model.`, beside `lm_head`): stands for `<names.backbone>.` in checkpoint keys.")
    skipped_prefixes: tuple[Annotated[str, Field(pattern=r"^([a-z_][a-z0-9_]*\.)+$")], ...] = Field(
        (), exclude_if=lambda value: not value, description="Prefixes of checkpoint keys that belong to a multimodal checkpoint's "
        "other parts (Qwen2-VL's `visual.`) when the decoder's keys have no prefix of their own: the loader skips them.")
    bare_decoder_checkpoints: bool = Field(
        False, description="Published checkpoints may hold the decoder alone, its keys without the `names.backbone` "
        "prefix (saved from the base model, as GPT-2's release is): the loader adds the prefix.")
    nested_decoder: NestedDecoder | None = Field(None, exclude_if=_unset, description="Published checkpoints nest "
                                                 "the decoder inside a multimodal model: the loader renames its keys.")
    per_layer_input: PerLayerInput | None = Field(None, exclude_if=_unset, description="Per-layer embeddings "
                                                  "(PLE) feeding every layer.")
    altup: AltUp | None = Field(None, exclude_if=_unset, description="Alternating updates of several residual streams.")
    hyper: HyperConnections | None = Field(None, exclude_if=_unset, description="Hyper-connections: the residual "
                                           "stream is several streams, mixed around every block.")
    stale_layer_buffers: tuple[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")], ...] = Field(
        (), description="Per-layer buffers that published checkpoints store and nothing reads (GPT-2's causal-mask "
        "`attn.bias` and `attn.masked_bias`): the loader skips them.")

    @model_validator(mode="after")
    def _kv_sources(self) -> "Architecture":
        for layer in self.layers:
            source = getattr(layer.mixer, "kv_shared_from", None)
            if source is None:
                continue
            if source >= layer.index:
                raise ValueError(f"layer {layer.index} shares the keys and values of a later layer ({source})")
            src = self.layers[source].mixer
            if getattr(src, "kv_shared_from", None) is not None or src.kind != "attention" or (
                    src.span, src.window, src.num_kv_heads, src.head_dim) != (
                    layer.mixer.span, layer.mixer.window, layer.mixer.num_kv_heads, layer.mixer.head_dim):
                raise ValueError(f"layer {layer.index} cannot share the keys and values of layer {source}")
        return self

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def rope_table(self, name: str) -> Rope:
        for table in self.rope:
            if table.name == name:
                return table
        raise KeyError(name)


def arch_json_schema() -> dict:
    """The JSON Schema of the IR (``llmgen schema``)."""
    return Architecture.model_json_schema()
