"""The checkpoint layout of a hyper-connected model (Architecture.hyper: DeepSeek-V4's blocks), in the
published key names, which the generated modules use as attribute paths."""

from __future__ import annotations

from ...schemas.arch import Architecture
from .weight_map import WeightEntry


def hyper_weight_map(arch: Architecture) -> list[WeightEntry]:
    hidden, hc = arch.hidden_size, arch.hyper.streams
    vocab = arch.embedding.vocab_size
    rows: list[WeightEntry] = [WeightEntry("embed.weight", "embed.weight", (vocab, hidden), "embedding")]

    def add(key: str, shape: tuple[int, ...], role: str = "linear", layers: list[int] | None = None, **extra) -> None:
        rows.append(WeightEntry(key, key, shape, role, neutral=1.0 if role == "norm" else None,
                                layers=None if layers is None else tuple(layers), **extra))

    first = arch.layers[0].mixer
    heads, hd, q_rank = first.num_heads, first.head_dim, first.q_lora_rank
    p = "layers.{i}."
    add(p + "attn_norm.weight", (hidden,), "norm")
    add(p + "ffn_norm.weight", (hidden,), "norm")
    for site in ("attn", "ffn"):
        add(f"{p}hc_{site}_fn", ((2 + hc) * hc, hc * hidden))
        add(f"{p}hc_{site}_base", ((2 + hc) * hc,), "bias")
        add(f"{p}hc_{site}_scale", (3,), "bias")
    a = p + "attn."
    add(a + "wq_a.weight", (q_rank, hidden))
    add(a + "q_norm.weight", (q_rank,), "norm")
    add(a + "wq_b.weight", (heads * hd, q_rank))
    add(a + "wkv.weight", (hd, hidden))
    add(a + "norm.weight", (hd,), "norm")
    add(a + "wo_a.weight", (first.o_groups * first.o_lora_rank, heads * hd // first.o_groups))
    add(a + "wo_b.weight", (hidden, first.o_groups * first.o_lora_rank))
    add(a + "attn_sink", (heads,), "bias")
    by_rate: dict[tuple, list[int]] = {}
    for layer in arch.layers:
        if layer.mixer.compressor is not None:
            by_rate.setdefault((layer.mixer.compressor, layer.mixer.selection), []).append(layer.index)
    for (comp, selection), layers in by_rate.items():
        parts = 2 if comp.overlapping else 1
        add(a + "compressor.wkv.weight", (parts * comp.head_dim, hidden), layers=layers)
        add(a + "compressor.wgate.weight", (parts * comp.head_dim, hidden), layers=layers)
        add(a + "compressor.ape", (comp.rate, parts * comp.head_dim), "bias", layers=layers)
        add(a + "compressor.norm.weight", (comp.head_dim,), "norm", layers=layers)
        if selection is not None:
            ic, d = selection.compressor, selection.head_dim
            add(a + "indexer.compressor.wkv.weight", (2 * d, hidden), layers=layers)
            add(a + "indexer.compressor.wgate.weight", (2 * d, hidden), layers=layers)
            add(a + "indexer.compressor.ape", (ic.rate, 2 * d), "bias", layers=layers)
            add(a + "indexer.compressor.norm.weight", (d,), "norm", layers=layers)
            add(a + "indexer.wq_b.weight", (selection.num_heads * d, q_rank), layers=layers)
            add(a + "indexer.weights_proj.weight", (selection.num_heads, hidden), layers=layers)
    moe = arch.layers[0].ffn
    f = p + "ffn."
    hashed = [layer.index for layer in arch.layers if layer.ffn.hashed]
    scored = [layer.index for layer in arch.layers if not layer.ffn.hashed]
    add(f + "gate.weight", (moe.num_experts, hidden))
    if hashed:
        add(f + "gate.tid2eid", (vocab, moe.top_k), "buffer", layers=hashed)
    if scored:
        add(f + "gate.bias", (moe.num_experts,), "buffer", layers=scored)
    width = moe.intermediate_size
    for name, shape in (("w1", (width, hidden)), ("w2", (hidden, width)), ("w3", (width, hidden))):
        add(f"{f}experts.{{e}}.{name}.weight", shape, experts=moe.num_experts, routed=True)
    for name, shape in (("w1", (width, hidden)), ("w2", (hidden, width)), ("w3", (width, hidden))):
        add(f"{f}shared_experts.{name}.weight", shape)
    add("norm.weight", (hidden,), "norm")
    add("head.weight", (vocab, hidden))
    add("hc_head_fn", (hc, hc * hidden))
    add("hc_head_base", (hc,), "bias")
    add("hc_head_scale", (1,), "bias")
    return rows
