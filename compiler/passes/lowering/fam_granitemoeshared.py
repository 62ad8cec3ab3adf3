"""Granite-MoE with a shared MLP (``granitemoeshared``): Granite-MoE (muP multipliers, top-k logits softmaxed
over those k, experts stacked on disk) plus, when ``shared_intermediate_size`` is above 0, a shared MLP that is
a module of the layer beside the experts block (``shared_mlp.input_linear`` [gate; up], ``output_linear``),
fed the same normed input, its output added to the experts'.

Reads exactly the keys transformers 5.24's GraniteMoeSharedConfig and model read, with the same defaults.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe
from .fam_moe import REPLICA_EXPERTS, REPLICA_TOP_K, lower_granitemoe
from .reader import ConfigReader
from .registry import family

SHARED_MLP = dict(shared_expert="shared_mlp", shared_gate_up="input_linear", shared_down="output_linear")


def with_layer_shared_mlp(arch: Architecture, width: int) -> Architecture:
    """Every MoE layer gets Granite's shared MLP (a module of the layer) of this width; none when 0."""
    if not width:
        return arch
    layers = tuple(layer.model_copy(update={"ffn": layer.ffn.model_copy(update={
        "shared_expert_size": width, "shared_expert_in_layer": True,
        "names": layer.ffn.names.model_copy(update=SHARED_MLP)})}) if isinstance(layer.ffn, Moe) else layer
        for layer in arch.layers)
    return arch.model_copy(update={"layers": layers})


def _replica_granitemoeshared(tiny: dict[str, Any], arch: Architecture) -> None:
    tiny.update(num_local_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K)
    if tiny.get("shared_intermediate_size"):
        tiny["shared_intermediate_size"] = 48


@family("granitemoeshared", title="Granite-MoE (shared MLP)", replica=_replica_granitemoeshared)
def lower_granitemoeshared(r: ConfigReader, model_type: str) -> Architecture:
    width = r.int("shared_intermediate_size", 0, minimum=0)
    return with_layer_shared_mlp(lower_granitemoe(r, model_type), width)
