"""The Llama block with experts: most long-tail MoE families are "a dense family's block whose
feed-forward is routed experts on these layers", and their lowering reads the experts (``Moe``),
which layers are sparse, then calls ``moe_like`` with the dense block's switches.

Every key the experts need is read before the dense block is built (``build`` rejects keys nobody
read), so a family reads its router keys first, then calls this.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Moe
from .families import Common
from .fam_moe import TRAINING_ONLY
from .llama_like import llama_like
from .reader import ConfigReader


def moe_like(r: ConfigReader, model_type: str, c: Common, moe: Moe, sparse: list[bool], *,
             extra_allowed: frozenset[str] = frozenset(), **switches: Any) -> Architecture:
    """``llama_like`` with ``moe`` as the feed-forward of each layer ``sparse`` marks (the others dense)."""
    arch = llama_like(r, model_type, c, extra_allowed=TRAINING_ONLY | extra_allowed, **switches)
    layers = tuple(layer.model_copy(update={"ffn": moe}) if is_sparse else layer
                   for layer, is_sparse in zip(arch.layers, sparse))
    return arch.model_copy(update={"layers": layers})


def first_dense(r: ConfigReader, c: Common, default: int) -> list[bool]:
    """DeepSeek's layout: the first ``first_k_dense_replace`` layers dense, the rest sparse."""
    k = r.int("first_k_dense_replace", default, minimum=0)
    return [i >= k for i in range(c.num_layers)]
