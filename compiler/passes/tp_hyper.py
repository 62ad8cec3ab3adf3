"""Tensor-parallel plan of a hyper-connected model (Architecture.hyper: DeepSeek-V4), printed by
templates/model/hyper/parallel.py.j2: attention split over its query heads (the one key=value head,
the query latent, the compressors and the indexer replicated), the grouped low-rank output split by
whole groups, routed experts split across ranks (expert parallel) with the router replicated, the
shared expert split like an MLP, the hyper-connection weights replicated."""

from __future__ import annotations

from ...schemas.arch import Architecture
from ..basics.errors import UnsupportedError


def hyper_check_degree(arch: Architecture, tp: int) -> None:
    """Refuse (one line) a degree this hyper-connected model cannot be split into."""
    for layer in arch.layers:
        attn, ffn = layer.mixer, layer.ffn
        for what, count in (("attention heads", attn.num_heads), ("output groups (wo_a)", attn.o_groups),
                            ("shared-expert channels", ffn.intermediate_size)):
            if count % tp:
                raise UnsupportedError(f"--tp {tp}: layer {layer.index} has {count} {what}, not divisible by {tp}")


def hyper_summary(arch: Architecture) -> list[str]:
    attn, ffn = arch.layers[0].mixer, arch.layers[0].ffn
    return [
        "the token embedding split over the vocabulary (each rank looks up its rows, the ranks sum); replicated, "
        "with the head, when the degree does not divide the vocabulary",
        "the output head split over the vocabulary, logits gathered",
        f"attention split over its {attn.num_heads} query heads (wq_b rows, the sinks); the query latent (wq_a, "
        "q_norm), the one key=value head (wkv), the compressors and the indexer replicated",
        f"the grouped low-rank output split by whole groups ({attn.o_groups}: wo_a rows, wo_b columns), the "
        "ranks' outputs summed",
        f"the {ffn.num_experts} routed experts split across ranks (expert parallel), the router replicated; the "
        "shared expert split like an MLP (w1, w3 rows, w2 columns); the block's output summed",
        "the hyper-connection weights (hc_*) and the norms replicated: every rank mixes the whole streams",
    ]
