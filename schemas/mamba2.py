"""IR of Mamba-2 state-space mixers (``Layer.mixer`` kind ``mamba2``: Mamba-2, Bamba, Nemotron-H, Granite 4.0-H).

A Mamba-2 layer keeps no keys and values: per head it carries a head_dim x state_size matrix from
token to token (and the convolution's last conv_kernel - 1 inputs), so its cache does not grow with
the text.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import MAX_WIDTH, HeadCount, Identifier, Norm, PositiveInt, Width, _Frozen, _unset


class Mamba2Names(_Frozen):
    """Checkpoint names inside a Mamba-2 block (the block itself is ``Names.mamba``)."""

    in_proj: Identifier = "in_proj"
    conv: Identifier = "conv1d"
    a_log: Identifier = "A_log"
    dt_bias: Identifier = "dt_bias"
    d: Identifier = "D"
    norm: Identifier = "norm"
    out: Identifier = "out_proj"


class Mamba2(_Frozen):
    """Mamba-2 (state-space duality). Per head h a state matrix H (head_dim x state_size):

        H_t = exp(dt_t A) H_{t-1} + dt_t x_t B_t^T,   y_t = H_t C_t + D x_t

    with A = -exp(A_log) a scalar per head, dt_t = clamp(softplus(dt_t + dt_bias), time_step_min,
    time_step_max) per head and position, and B_t, C_t (state_size) shared by the heads of a group
    (n_groups groups). One in-projection yields [z; x; B; C; dt]; [x; B; C] pass a causal depthwise
    convolution and SiLU. y is multiplied by SiLU(z), RMS-normed in n_groups groups of channels, and
    projected back to the hidden size."""

    kind: Literal["mamba2"] = "mamba2"
    num_heads: HeadCount
    head_dim: Width
    state_size: Width = Field(description="Columns of each head's state (B and C have this many channels).")
    n_groups: HeadCount = Field(description="Groups of heads sharing one B and one C.")
    conv_kernel: Annotated[int, Field(ge=1, le=64)] = Field(description="Taps of the causal depthwise convolution.")
    conv_bias: bool = Field(description="The convolution has a bias.")
    proj_bias: bool = Field(False, description="in_proj and out_proj have biases.")
    chunk_size: PositiveInt = Field(description="Positions per chunk of the chunked (prefill) scan.")
    time_step_min: Annotated[float, Field(ge=0)] = Field(0.0, description="dt is clamped to at least this.")
    time_step_max: Annotated[float, Field(gt=0)] | None = Field(None, description="dt is clamped to at most this; "
                                                                "None: no upper bound (infinity).")
    norm: Norm = Field(description="The gated RMSNorm over each group's channels of y * SiLU(z) (weight ones-neutral).")
    gate: Literal["gate_then_norm", "norm_then_gate", "gate_only"] = Field(
        "gate_then_norm", exclude_if=lambda v: v == "gate_then_norm", description="How z gates y: RMSNorm(y * SiLU(z)) "
        "per group; RMSNorm(y) * SiLU(z) per group (Falcon-H1's mamba_norm_before_gate); or y * SiLU(z) with no norm "
        "and no norm weight (Falcon-H1 without mamba_rms_norm).")
    out_proj_bias: bool | None = Field(None, exclude_if=lambda v: v is None, description="out_proj has a bias "
                                       "(None: as proj_bias says; Falcon-H1 sets it apart, projectors_bias).")
    in_multipliers: tuple[float, float, float, float, float] | None = Field(
        None, exclude_if=_unset, description="The in-projection's output parts [z; x; B; C; dt] are each multiplied "
        "by their scalar before anything else (Falcon-H1's ssm_multipliers, its muP vector).")
    names: Mamba2Names = Mamba2Names()

    @property
    def intermediate_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def has_out_bias(self) -> bool:
        return self.proj_bias if self.out_proj_bias is None else self.out_proj_bias

    @property
    def conv_dim(self) -> int:
        """Channels of the convolution: [x; B; C]."""
        return self.intermediate_size + 2 * self.n_groups * self.state_size

    @property
    def projection_size(self) -> int:
        """Rows of in_proj: [z; x; B; C; dt]."""
        return self.intermediate_size + self.conv_dim + self.num_heads

    @model_validator(mode="after")
    def _sizes(self) -> "Mamba2":
        if self.num_heads % self.n_groups:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of n_groups ({self.n_groups})")
        if self.projection_size > MAX_WIDTH:
            raise ValueError(f"the in-projection width exceeds {MAX_WIDTH}")
        if self.time_step_max is not None and self.time_step_max < self.time_step_min:
            raise ValueError("time_step_max is below time_step_min")
        if self.norm.kind != "rmsnorm" or self.norm.bias or self.norm.weight_offset:
            raise ValueError("the gated norm of a Mamba-2 block is a plain RMSNorm")
        return self
