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

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
PositiveInt = Annotated[int, Field(gt=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Norm(_Frozen):
    """A normalisation layer and exactly how it computes."""

    kind: Literal["rmsnorm", "layernorm"]
    eps: Annotated[float, Field(gt=0)]
    weight_offset: float = Field(
        0.0, description="Added to the stored weight before scaling: 1.0 is Gemma's (1 + w)."
    )
    bias: bool = False
    compute_dtype: Literal["float32"] = "float32"
    weight_in_compute_dtype: bool = Field(
        False,
        description="True: the weight multiplies in float32 and the product is cast back "
        "(Gemma). False: the normalised input is cast back first, then scaled (Llama).",
    )


class Rope(_Frozen):
    """One table of rotary position embeddings; layers refer to it by ``name``."""

    name: Identifier
    type: Literal["default", "linear", "dynamic", "llama3", "yarn", "longrope"]
    theta: Annotated[float, Field(gt=0)]
    rotary_dim: PositiveInt = Field(description="Channels rotated per head (head_dim x partial factor).")
    partial_rotary_factor: Annotated[float, Field(gt=0, le=1)] = 1.0
    layout: Literal["rotate_half", "interleaved"] = "rotate_half"
    factor: float | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    attention_factor: float | None = None
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None


class Attention(_Frozen):
    """Multi-head (grouped-query) softmax attention."""

    kind: Literal["attention"] = "attention"
    span: Literal["full", "sliding"]
    window: PositiveInt | None = Field(None, description="Keys within the last `window` positions (self included).")
    num_heads: PositiveInt
    num_kv_heads: PositiveInt
    head_dim: PositiveInt
    rope: Identifier | None = Field(description="Name of the RoPE table, or None for NoPE.")
    qk_norm: Literal["none", "per_head", "whole"] = "none"
    qk_norm_spec: Norm | None = None
    q_bias: bool = False
    k_bias: bool = False
    v_bias: bool = False
    o_bias: bool = False
    scale: Annotated[float, Field(gt=0)] = Field(description="Multiplies q.k before the softmax.")
    softcap: Annotated[float, Field(gt=0)] | None = None


class Mlp(_Frozen):
    """A dense feed-forward block: down(act(gate(x)) * up(x)) when gated, else down(act(up(x)))."""

    kind: Literal["mlp"] = "mlp"
    gated: bool
    activation: Literal["silu", "gelu", "gelu_tanh", "relu"]
    intermediate_size: PositiveInt
    bias: bool = False


Mixer = Annotated[Union[Attention], Field(discriminator="kind")]
FeedForward = Annotated[Union[Mlp], Field(discriminator="kind")]


class Layer(_Frozen):
    """One decoder block."""

    index: Annotated[int, Field(ge=0)]
    mixer: Mixer
    ffn: FeedForward
    block: Literal["pre_norm", "post_norm", "sandwich", "parallel"] = Field(
        description="pre_norm: x + f(norm(x)). post_norm: x + norm(f(x)) (OLMo 2). sandwich: "
        "x + post_norm(f(pre_norm(x))) (Gemma 2/3). parallel: x + attn(norm(x)) + mlp(norm(x))."
    )
    norm: Norm


class Embedding(_Frozen):
    vocab_size: PositiveInt
    scale: float | None = Field(None, description="Embeddings are multiplied by this (Gemma: sqrt(hidden)).")


class Head(_Frozen):
    tied: bool = Field(description="Logits use the embedding matrix instead of a separate lm_head.")
    bias: bool = False
    softcap: Annotated[float, Field(gt=0)] | None = None


class Architecture(_Frozen):
    """A whole decoder-only causal language model."""

    schema_version: Literal[1] = SCHEMA_VERSION
    model_type: Identifier
    hidden_size: PositiveInt
    max_position_embeddings: PositiveInt
    dtype: Literal["float32", "float16", "bfloat16"]
    embedding: Embedding
    rope: tuple[Rope, ...] = ()
    layers: tuple[Layer, ...] = Field(min_length=1)
    final_norm: Norm
    head: Head
    checkpoint_prefix: str = Field(
        "", pattern=r"^([a-z_][a-z0-9_]*\.)*$", description="Prefix of every key in the checkpoint (wrappers)."
    )

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
