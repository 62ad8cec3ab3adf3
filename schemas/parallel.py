"""IR pieces of layers with two mixers side by side (Layer.parallel_mixer, Layer.mixer_multipliers: Falcon-H1) and of
MLP multipliers (Mlp.gate_multiplier, Mlp.down_multiplier), with the checks arch.py's models run on them."""

from __future__ import annotations

from typing import Any

from .base import _Frozen


class MixerMultipliers(_Frozen):
    """Scalars around the two mixers of a layer with a parallel mixer: the branch added to the residual stream is
    mixer(h * mixer_in) * mixer_out + parallel(h * parallel_in) * parallel_out, h the normed input (Falcon-H1's
    attention_in/out_multiplier and ssm_in/out_multiplier)."""

    mixer_in: float = 1.0
    mixer_out: float = 1.0
    parallel_in: float = 1.0
    parallel_out: float = 1.0


def check_parallel_mixer(layer: Any) -> Any:
    """A parallel mixer is recurrent, beside softmax attention, in a pre-norm block with a feed-forward block."""
    parallel = layer.parallel_mixer
    if parallel is not None and (getattr(layer.mixer, "kind", None) != "attention" or layer.ffn is None
                                 or layer.block != "pre_norm" or parallel.kind in ("attention", "mla")):
        raise ValueError("a parallel mixer is a recurrent mixer beside softmax attention in a pre-norm block "
                         "with a feed-forward block")
    if (layer.mixer_multipliers is not None) != (parallel is not None):
        raise ValueError("mixer_multipliers are given exactly when the layer has a parallel mixer")
    return layer


def check_mlp_multipliers(mlp: Any) -> Any:
    """Both MLP multipliers or neither, on a gated MLP with separate gate and up projections."""
    if (mlp.gate_multiplier is None) != (mlp.down_multiplier is None):
        raise ValueError("the MLP's gate and down multipliers are given together")
    if mlp.gate_multiplier is not None and (not mlp.gated or mlp.fused_gate_up or mlp.inner_norm):
        raise ValueError("MLP multipliers are implemented for a gated MLP with separate gate and up projections")
    return mlp
