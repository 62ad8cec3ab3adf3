"""Tensor-parallel plan: which module of the generated model is split across ranks, and how.

``tp_plan(arch)`` reads the IR and returns the literals that ``templates/model/parallel.py.j2``
prints into the model directory's ``parallel.py`` (module paths and split styles); the split
arithmetic itself runs there, against the Config the model is built from, so a tiny replica of
the same model uses the same plan. ``check_degree(arch, tp)`` refuses a degree that does not fit
before anything loads; ``per_rank_bytes`` gives the card's per-rank weight and cache sizes.

Styles (what ``parallel.py`` does with each path, relative to one decoder layer):
  colwise PARTS   output rows split across ranks (torch's ColwiseParallel); PARTS name the blocks of
                  rows stacked in the matrix: "q" query heads, "kv" key/value heads (replicated when
                  fewer than ranks), "rows" plain rows. A fused matrix lists several blocks and each
                  rank takes its slice of every block, so [q; k; v] and [gate; up] stay correct.
  rowwise PARTS   input columns split, outputs summed (RowwiseParallel).
  partial PARTS   rowwise, left unsummed: the MoE block sums it with the routed experts.
  heads PARTS     a per-head parameter (attention sinks), sliced to this rank's heads.
  experts         expert parallel: each rank keeps a contiguous range of the experts.
  reduce          the block's output is summed over ranks (a MoE: routed experts + shared part).
  attention ATTRS the module's head-count attributes, set to this rank's counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schemas.arch import Architecture, Attention, Mla, Mlp, Moe
from .errors import UnsupportedError

Entry = tuple[str, tuple[str, ...]]
STACKED_EXPERTS = ("per_expert", "stacked_in_out")  # expert storages whose forward takes the expert index


@dataclass(frozen=True)
class TpPlan:
    embedding: str  # path of the token embedding (vocabulary-parallel)
    head: str | None  # path of the untied output head (vocabulary-parallel); None: tied to the embedding
    layers: str  # path of the decoder layer list
    layer_plan: dict[str, Entry]  # path inside a layer -> (style, parts or attributes)


def unsupported_reason(arch: Architecture) -> str | None:
    """Why this architecture has no tensor-parallel plan yet (None: it has one)."""
    if arch.linear_layout != "out_in":
        return "projections stored (in, out) (Conv1D)"
    if arch.embedding.learned_positions:
        return "learned position embeddings"
    for layer in arch.layers:
        mixer, ffn = layer.mixer, layer.ffn
        if isinstance(mixer, Attention):
            if mixer.qkv == "fused_per_head":
                return "q/k/v fused per head"
            if mixer.qk_norm not in ("none", "per_head", "l2"):
                return f"a {mixer.qk_norm!r} QK-norm (it spans the heads)"
            if mixer.head_gate:  # its projection's rows are heads: not sliced by the plan yet
                return "a per-head gate projection"
        elif not isinstance(mixer, Mla):
            return f"a {mixer.kind!r} mixer"
        if isinstance(ffn, Moe):
            if ffn.storage not in STACKED_EXPERTS:
                return f"{ffn.storage!r} expert storage"
            if ffn.shared_expert_gate:
                return "a gated shared expert"
    return None


def _attention_entries(arch: Architecture, mixer: Attention | Mla) -> dict[str, Entry]:
    n = arch.names
    if isinstance(mixer, Mla):
        m, a = mixer.names, n.attn
        q = m.q_b if mixer.q_lora_rank else m.q
        return {
            a: ("attention", ("num_heads",)),
            f"{a}.{q}": ("colwise", ("q",)),
            f"{a}.{m.kv_b}": ("colwise", ("q",)),  # per head: [k_nope; v]
            f"{a}.{m.o}": ("rowwise", ("q",)),
        }  # q_a, kv_a and their norms are the latent: replicated
    a = n.attn
    out = {a: ("attention", ("num_heads", "num_kv_heads"))}
    if mixer.qkv == "fused":
        out[f"{a}.{n.qkv}"] = ("colwise", ("q", "kv", "kv"))
    else:
        out |= {f"{a}.{n.q}": ("colwise", ("q",)), f"{a}.{n.k}": ("colwise", ("kv",)), f"{a}.{n.v}": ("colwise", ("kv",))}
    out[f"{a}.{n.o}"] = ("rowwise", ("q",))
    if mixer.sinks:
        out[f"{a}.{n.sinks}"] = ("heads", ("q",))
    return out


def _mlp_entries(prefix: str, gated: bool, fused: bool, gate: str, up: str, down: str, gate_up: str,
                 last: str = "rowwise") -> dict[str, Entry]:
    if fused:
        out = {f"{prefix}.{gate_up}": ("colwise", ("rows", "rows"))}
    else:
        out = {f"{prefix}.{up}": ("colwise", ("rows",))}
        if gated:
            out[f"{prefix}.{gate}"] = ("colwise", ("rows",))
    out[f"{prefix}.{down}"] = (last, ("rows",))
    return out


def _ffn_entries(arch: Architecture, ffn: Mlp | Moe) -> dict[str, Entry]:
    n = arch.names
    if isinstance(ffn, Mlp):
        return _mlp_entries(n.mlp, ffn.gated, ffn.fused_gate_up, n.gate, n.up, n.down, n.gate_up)
    m = ffn.names
    out = {n.mlp: ("reduce", ()), f"{n.mlp}.{m.experts}": ("experts", ())}  # router: replicated
    if ffn.shared_expert_size:
        out |= _mlp_entries(f"{n.mlp}.{m.shared_expert}", True, False, m.gate, m.up, m.down, "", "partial")
    return out


def tp_plan(arch: Architecture) -> TpPlan | None:
    """The tensor-parallel plan of this architecture, or None when it has none yet."""
    if unsupported_reason(arch):
        return None
    plan: dict[str, Entry] = {}
    for layer in arch.layers:
        for path, entry in (_attention_entries(arch, layer.mixer) | _ffn_entries(arch, layer.ffn)).items():
            if plan.setdefault(path, entry) != entry:  # one path, two roles in different layers
                return None
    n = arch.names
    return TpPlan(
        embedding=f"{n.backbone}.{n.embed}",
        head=None if arch.head.tied else n.head,
        layers=f"{n.backbone}.{n.layers}",
        layer_plan=plan,
    )


def check_degree(arch: Architecture, tp: int) -> None:
    """Refuse (one line) a tensor-parallel degree the model cannot be split into."""
    if tp < 1:
        raise UnsupportedError(f"--tp {tp}: the degree must be a positive number of processes")
    reason = unsupported_reason(arch)
    if reason and tp > 1:
        raise UnsupportedError(f"--tp {tp}: no tensor-parallel plan for {arch.model_type} yet ({reason})")
    if tp == 1:
        return
    if arch.embedding.vocab_size % tp:
        raise UnsupportedError(f"--tp {tp}: vocab_size {arch.embedding.vocab_size} is not divisible by {tp}")
    for layer in arch.layers:
        mixer, ffn = layer.mixer, layer.ffn
        heads = mixer.num_heads
        if heads % tp:
            raise UnsupportedError(f"--tp {tp}: layer {layer.index} has {heads} attention heads, not divisible by {tp}")
        kv = mixer.num_kv_heads if isinstance(mixer, Attention) else heads
        if kv % tp and tp % kv:
            raise UnsupportedError(
                f"--tp {tp}: layer {layer.index} has {kv} key/value heads: {tp} must divide them or be a multiple of them"
            )
        widths = [ffn.intermediate_size] if isinstance(ffn, Mlp) else [ffn.shared_expert_size or 0]
        for width in widths:
            if width % tp:
                raise UnsupportedError(f"--tp {tp}: layer {layer.index}'s MLP width {width} is not divisible by {tp}")


def _summary(arch: Architecture, plan: TpPlan) -> list[str]:
    styles = {style for style, _ in plan.layer_plan.values()}
    lines = ["the token embedding split over the vocabulary (each rank looks up its rows, the ranks sum)"]
    lines.append("the output head split over the vocabulary, logits gathered" if plan.head else
                 "logits from the tied embedding's vocabulary slices, gathered")
    mixers = {type(layer.mixer) for layer in arch.layers}
    if Attention in mixers:
        fused = any(isinstance(lay.mixer, Attention) and lay.mixer.qkv == "fused" for lay in arch.layers)
        lines.append(("the fused q/k/v projection split per head block" if fused else "q/k/v split over the heads")
                     + ", o summed; key/value heads fewer than the ranks are replicated")
    if Mla in mixers:
        lines.append("latent attention split over the heads (q_b, kv_b column-wise, o row-wise); the latent is replicated")
    if "experts" in styles:
        lines.append("experts split across ranks (expert parallel), the router replicated, outputs summed")
    if any(isinstance(lay.ffn, Mlp) for lay in arch.layers):
        fused = any(isinstance(lay.ffn, Mlp) and lay.ffn.fused_gate_up for lay in arch.layers)
        lines.append(("the fused [gate; up] projection split per block" if fused else "MLP up/gate column-wise")
                     + ", down row-wise")
    if "heads" in styles:
        lines.append("attention sinks sliced to each rank's heads")
    return lines


def parallel_context(arch: Architecture, plan: TpPlan, version: str, source: str, command: str, title: str) -> dict:
    """The literals templates/model/parallel.py.j2 prints."""
    return {
        "version": version, "source": source, "command": command, "title": title,
        "summary": _summary(arch, plan),
        "embedding": repr(plan.embedding), "head": plan.head is not None, "head_literal": repr(plan.head),
        "layers": repr(plan.layers),
        "layer_plan": [(repr(path), repr(entry)) for path, entry in plan.layer_plan.items()],
    }
