"""Position encodings of the architecture IR: RoPE tables, attention temperature tuning, ALiBi.

Split from ``arch.py`` (which re-exports every name); like the rest of the IR, frozen and free of I/O.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import (  # noqa: F401
    MAX_CONTEXT, MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH, HeadCount, Identifier, Norm, PositiveInt, Width,
    _Frozen, _unset,
)


class Rope(_Frozen):
    """One table of rotary position embeddings; layers refer to it by ``name``.

    Defaults transformers fills into the config are filled in (original context, betas,
    truncate); ``attention_factor`` stays as given, None meaning transformers' default
    (derived when rendering: ``compiler/passes/rope_fields.attention_scaling``).
    """

    name: Identifier
    type: Literal["default", "linear", "dynamic", "llama3", "yarn", "longrope", "proportional"] = Field(
        description="proportional (Gemma 4): the whole head is paired as in default RoPE (channel i with i + "
        "head_dim/2), but only the first partial_rotary_factor x head_dim/2 frequencies turn, theta^(-2k/head_dim); "
        "the others are 0 (those channels pass unrotated); rotary_dim is then the whole head.")
    theta: Annotated[float, Field(gt=0)]
    rotary_dim: PositiveInt = Field(description="Channels rotated per head (head_dim x partial factor).")
    partial_rotary_factor: Annotated[float, Field(gt=0, le=1)] = 1.0
    layout: Literal["rotate_half", "interleaved", "rotate_half_reversed"] = Field(
        "rotate_half", description="rotate_half: channel i pairs with i + rotary_dim/2 (Llama). interleaved: "
        "channels 2i and 2i+1 pair up (Cohere, GLM). rotate_half_reversed: rotate_half's pairs turned the other "
        "way, by minus the angle (NanoChat)."
    )
    factor: float | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = Field(
        None, description="Context the scaling is relative to (llama3, yarn, longrope); dynamic scales "
        "relative to the model's max_position_embeddings."
    )
    beta_fast: float | None = None
    beta_slow: float | None = None
    mscale: float | None = Field(None, description="yarn: used for the default attention factor.")
    mscale_all_dim: float | None = Field(None, description="yarn: used for the default attention factor.")
    truncate: bool | None = Field(None, description="yarn: round the correction range to whole dimensions.")
    attention_factor: float | None = Field(
        None, description="yarn, longrope: cos and sin are multiplied by this; None: transformers' default."
    )
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    mrope_section: tuple[PositiveInt, ...] | None = Field(
        None, exclude_if=_unset, description="Multimodal RoPE (Qwen3.5): the rotated frequencies are split among the "
        "time, height and width position ids in these counts, interleaved; for text alone the three ids are equal "
        "and the table is the plain one.")


class TemperatureTuning(_Frozen):
    """Queries are multiplied by 1 + attn_scale * log(1 + floor((position + 1) / floor_scale)), so
    attention sharpens slowly with position (Llama 4's NoPE layers)."""

    floor_scale: PositiveInt
    attn_scale: float
    position_offset: Literal[0, 1] = Field(
        1, exclude_if=lambda v: v == 1, description="Added to the position before the division: 1 in Llama 4, 0 in "
        "Ministral 3 (1 + beta * log(1 + floor(position / original_max_position_embeddings))).")


class Alibi(_Frozen):
    """ALiBi: each head h adds slope_h x (key position - origin) to its scores, the model's only position signal.

    slopes "geometric" (BLOOM, Falcon): n2 = the largest power of two <= heads; slopes b^1 .. b^n2 with
    b = 2^(-8 / n2), then for the remaining heads c^1, c^3, c^5, ... with c = 2^(-8 / (2 n2)), in float32.
    slopes "max_bias" (MPT): n2 = the smallest power of two >= heads; 1 / 2^(k x max_bias / n2) for k = 1 .. n2,
    then (when n2 > heads) the odd-indexed ones before the even-indexed ones, the first `heads` of them."""

    slopes: Literal["geometric", "max_bias"]
    max_bias: Annotated[float, Field(gt=0)] | None = Field(None, description="max_bias slopes: the largest bias exponent.")
    from_last_key: bool = Field(False, description="Positions count from the last key (j - last, MPT) rather than "
                                "from the first (j, BLOOM): equal after the softmax, rounded differently.")

    @model_validator(mode="after")
    def _max_bias(self) -> "Alibi":
        if (self.slopes == "max_bias") != (self.max_bias is not None):
            raise ValueError("a max_bias is given exactly for 'max_bias' slopes")
        return self
