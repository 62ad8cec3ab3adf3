"""Shared pieces of the IR: identifier and size types with their bounds, the frozen base
model, and the norm description every other part uses."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# a module or tensor name as checkpoints spell it: a Python identifier (some have capitals: Mamba-2's A_log)
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
PositiveInt = Annotated[int, Field(gt=0)]
# Upper bounds far above any published model. A larger value is a typo or hostile input, and
# taking it would mean building millions of layers or sizing tensors past any memory.
MAX_WIDTH = 2**20  # hidden size, intermediate size, heads x head_dim
MAX_VOCAB = 2**24
MAX_CONTEXT = 2**30
MAX_LAYERS = 4096
MAX_HEADS = 4096
Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]
HeadCount = Annotated[int, Field(gt=0, le=MAX_HEADS)]


def _unset(value: object) -> bool:
    """For fields added after the first release of the IR (Field's exclude_if): left out of dumps while
    unset (False / None), so the arch.json of a model that does not use them stays as it was."""
    return value is None or value is False


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
    weight: bool = Field(True, exclude_if=lambda v: v is True, description="False: no learned scale at all, "
                         "the plain normalisation (OLMo's non-parametric LayerNorm, NanoChat's RMSNorm).")
    compute_dtype: Literal["float32", "input"] = Field(
        "float32", description="float32: normalise in float32 and cast back. input: in the input's dtype "
        "(torch's own LayerNorm)."
    )
    weight_in_compute_dtype: bool = Field(
        False,
        description="True: the weight multiplies in float32 and the product is cast back "
        "(Gemma). False: the normalised input is cast back first, then scaled (Llama).",
    )
