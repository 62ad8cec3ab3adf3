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
  gathered PARTS  a norm over the whole (split) projection width (OLMo-2's QK-norm): its input is
                  gathered from the ranks, normed whole with the full weight, and cut back to the
                  rank's channels (exactly the one-process arithmetic).
  colwise_t / rowwise_t  colwise / rowwise for a projection stored (in, out) (GPT-2's Conv1D): plain
                  per-rank tensors, a rowwise output summed over ranks (its bias on rank 0 only).
Mixers with no split here (Gated DeltaNet, KDA, Mamba-2, short convolution) are replicated: every
rank holds and runs the whole mixer of those layers (correct, not faster); ``replicated_mixers`` names them.
A vocabulary the degree does not divide leaves the embedding and head replicated.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ...schemas.arch import Architecture, Attention, Mla, Mlp, Moe
from ..basics.errors import UnsupportedError
from .mixers import KINDS
from .tp_hyper import hyper_check_degree, hyper_summary

Entry = tuple[str, tuple[str, ...]]
STACKED_EXPERTS = ("per_expert", "stacked_in_out")  # expert storages whose forward takes the expert index


@dataclass(frozen=True)
class TpPlan:
    embedding: str  # path of the token embedding (vocabulary-parallel)
    head: str | None  # path of the untied output head (vocabulary-parallel); None: tied to the embedding
    layers: str  # path of the decoder layer list
    layer_plan: dict[str, dict[str, Entry]]  # block class -> path inside a layer -> (style, parts or attributes)


REPLICATED_MIXERS = {"gated_deltanet": "Gated DeltaNet", "kda": "Kimi Delta Attention", "mamba2": "Mamba-2",
                     "short_conv": "short-convolution"}  # mixer kind -> its name in the plan's summary


def _split_mixer(arch: Architecture, mixer) -> tuple[str, dict[str, Entry]] | None:
    """(the block's class in the templates, its entries) of a recurrent mixer split over its heads; None
    where that kind (or this layout of it) has no split: the mixer is then replicated."""
    module = _mixer_module(mixer.kind)
    if not hasattr(module, "tp_entries"):
        return None
    kind = KINDS[mixer.kind]
    entries = module.tp_entries(mixer, getattr(arch.names, kind.attr))
    return (kind.class_name, entries) if entries else None


def splits_mixer(arch: Architecture, mixer) -> bool:
    """Whether the plan splits this recurrent mixer over the ranks (else every rank runs it whole)."""
    return mixer is not None and mixer.kind in KINDS and _split_mixer(arch, mixer) is not None


def _mixer_module(kind: str):
    """compiler/passes/mixers/<kind>.py: its optional tp_entries(mixer, path) and tp_counts(mixer) hooks."""
    return importlib.import_module(f"{__package__}.mixers.{kind}")


def replicated_mixers(arch: Architecture) -> list[str]:
    """The mixer kinds of this architecture that every rank runs whole (no split of their heads yet)."""
    kinds = {layer.mixer.kind for layer in arch.layers
             if layer.mixer is not None and layer.mixer.kind in REPLICATED_MIXERS and not _split_mixer(arch, layer.mixer)}
    return [REPLICATED_MIXERS[kind] for kind in REPLICATED_MIXERS if kind in kinds]


def unsupported_reason(arch: Architecture) -> str | None:
    """Why this architecture has no tensor-parallel plan yet (None: it has one)."""
    if arch.hyper is not None:  # compiler/passes/tp_hyper.py, templates/model/hyper/parallel.py.j2
        return None
    for layer in arch.layers:
        mixer, ffn = layer.mixer, layer.ffn
        if layer.parallel_mixer is not None and not splits_mixer(arch, layer.parallel_mixer):
            return f"a {layer.parallel_mixer.kind!r} mixer beside the attention"
        if isinstance(mixer, Attention):
            if mixer.qkv == "fused_per_head" and mixer.num_kv_heads != mixer.num_heads:
                return "q/k/v fused per head with fewer key/value heads"
            if mixer.qk_norm not in ("none", "per_head", "l2", "whole"):
                return f"a {mixer.qk_norm!r} QK-norm"
            if mixer.alibi is not None:
                return "ALiBi slopes (computed from the head count)"
            if mixer.output_norm:
                return "a norm over the heads' concatenated output"
        elif mixer is not None and not isinstance(mixer, Mla) and mixer.kind not in REPLICATED_MIXERS:
            return f"a {mixer.kind!r} mixer"
        if isinstance(ffn, Moe):
            if ffn.storage not in STACKED_EXPERTS:
                return f"{ffn.storage!r} expert storage"
            if ffn.latent_size:
                return "latent routed experts"
        elif isinstance(ffn, Mlp) and ffn.inner_norm:
            return "a norm over the MLP's intermediate activation"
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
    elif mixer.qkv == "fused_per_head":  # [q_h; k_h; v_h] per head: one block of heads
        out[f"{a}.{n.qkv}"] = ("colwise", ("q",))
    else:
        out |= {f"{a}.{n.q}": ("colwise", ("q",)), f"{a}.{n.k}": ("colwise", ("kv",)), f"{a}.{n.v}": ("colwise", ("kv",))}
    out[f"{a}.{n.o}"] = ("rowwise", ("q",))
    if mixer.qk_norm == "whole":  # over all heads' channels: gathered, normed whole, cut back
        out |= {f"{a}.{n.q_norm}": ("gathered", ("q",)), f"{a}.{n.k_norm}": ("gathered", ("kv",))}
    if mixer.sinks:
        out[f"{a}.{n.sinks}"] = ("heads", ("q",))
    if mixer.head_gate:  # one row per query head: split with the heads
        out[f"{a}.{n.head_gate}"] = ("colwise", ("q",))
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
    if ffn.shared_expert_size:  # its gate (shared_expert_gate, one value per token) replicated
        out |= _mlp_entries(f"{n.mlp}.{m.shared_expert}", ffn.gated, False, m.shared_gate or m.gate,
                            m.shared_up or m.up, m.shared_down or m.down, "", "partial")
    return out


TRANSPOSED = {"colwise": "colwise_t", "rowwise": "rowwise_t"}


def tp_plan(arch: Architecture) -> TpPlan | None:
    """The tensor-parallel plan of this architecture, or None when it has none yet."""
    if unsupported_reason(arch):
        return None
    if arch.hyper is not None:  # the hyper template's plan is its own (literal names)
        return TpPlan(embedding="embed", head="head", layers="layers", layer_plan={})
    plan: dict[str, dict[str, Entry]] = {}
    for layer in arch.layers:
        groups = []  # (the class the templates give the block, its entries)
        if isinstance(layer.mixer, (Attention, Mla)):
            groups.append(("Attention", _attention_entries(arch, layer.mixer)))
        elif layer.mixer is not None and _split_mixer(arch, layer.mixer):
            groups.append(_split_mixer(arch, layer.mixer))
        if layer.parallel_mixer is not None:  # beside the attention (Falcon-H1): split over its own heads
            groups.append(_split_mixer(arch, layer.parallel_mixer))
        if layer.ffn is not None:
            groups.append(("MoE" if isinstance(layer.ffn, Moe) else "MLP", _ffn_entries(arch, layer.ffn)))
        for block, entries in groups:
            for path, (style, parts) in entries.items():
                entry = (TRANSPOSED.get(style, style), parts) if arch.linear_layout == "in_out" else (style, parts)
                if plan.setdefault(block, {}).setdefault(path, entry) != entry:  # two roles in different layers
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
    if arch.hyper is not None:
        return hyper_check_degree(arch, tp)
    for layer in arch.layers:
        mixer, ffn = layer.mixer, layer.ffn
        for split in (mixer, layer.parallel_mixer):
            if split is not None and split.kind in KINDS and _split_mixer(arch, split):
                for what, count in _mixer_module(split.kind).tp_counts(split).items():
                    if count % tp:
                        raise UnsupportedError(f"--tp {tp}: layer {layer.index}'s {KINDS[split.kind].title} has "
                                               f"{count} {what}, not divisible by {tp}")
        if not isinstance(mixer, (Attention, Mla)):  # none, split above, or replicated whole
            mixer = None
        heads = mixer.num_heads if mixer else tp
        if heads % tp:
            raise UnsupportedError(f"--tp {tp}: layer {layer.index} has {heads} attention heads, not divisible by {tp}")
        kv = mixer.num_kv_heads if isinstance(mixer, Attention) else heads
        if kv % tp and tp % kv:
            raise UnsupportedError(
                f"--tp {tp}: layer {layer.index} has {kv} key/value heads: {tp} must divide them or be a multiple of them"
            )
        widths = [ffn.intermediate_size] if isinstance(ffn, Mlp) else [ffn.shared_expert_size or 0] if ffn else []
        for width in widths:
            if width % tp:
                raise UnsupportedError(f"--tp {tp}: layer {layer.index}'s MLP width {width} is not divisible by {tp}")


def _summary(arch: Architecture, plan: TpPlan) -> list[str]:
    styles = {style for group in plan.layer_plan.values() for style, _ in group.values()}
    lines = ["the token embedding split over the vocabulary (each rank looks up its rows, the ranks sum); "
             "replicated, with the head, when the degree does not divide the vocabulary"]
    lines.append("the output head split over the vocabulary, logits gathered" if plan.head else
                 "logits from the tied embedding's vocabulary slices, gathered")
    mixers = {type(layer.mixer) for layer in arch.layers}
    if Attention in mixers:
        qkv = {lay.mixer.qkv for lay in arch.layers if isinstance(lay.mixer, Attention)}
        lines.append(("the fused q/k/v projection split per head block" if "fused" in qkv else
                      "the q/k/v projection fused per head split over the heads" if "fused_per_head" in qkv else
                      "q/k/v split over the heads")
                     + ", o summed; key/value heads fewer than the ranks are replicated")
    if "gathered" in styles:
        lines.append("the QK-norm over the whole projection width: its input gathered from the ranks, normed whole, "
                     "cut back to the rank's heads")
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
    if any(isinstance(lay.mixer, Attention) and lay.mixer.head_gate for lay in arch.layers):
        lines.append("the per-head gate projection split with the query heads (one row per head)")
    if arch.linear_layout == "in_out":
        lines.append("projections stored (in, out) (Conv1D) split as plain per-rank tensors, row-wise outputs summed")
    if arch.embedding.learned_positions:
        lines.append("the learned position table replicated")
    if any(isinstance(lay.ffn, Moe) and lay.ffn.shared_expert_gate for lay in arch.layers):
        lines.append("the shared expert split like an MLP, its sigmoid gate replicated")
    if "KimiDeltaAttention" in plan.layer_plan:
        lines.append("Kimi Delta Attention split over its heads (q, k, v, their convolutions, the gates' "
                     "up-projections, dt_bias, A_log and b sliced; the gates' low-rank down-projections replicated), "
                     "o_proj summed")
    if "Mamba2" in plan.layer_plan:
        lines.append("Mamba-2 split over its groups of heads ([z; x; B; C; dt] column-wise on head and group "
                     "boundaries, their conv channels, A_log, dt_bias, D and the per-group norm sliced), out_proj summed")
    if any(group == "GatedDeltaNet" for group in plan.layer_plan):
        lines.append("Gated DeltaNet split over its heads: each rank whole key heads with the value heads they serve "
                     "([q; k; v], z, a, b column-wise, their conv channels, A_log and dt_bias sliced), out_proj summed")
    if any(group == "ShortConv" for group in plan.layer_plan):
        lines.append("the short convolutions split over their channels (in_proj's B, C, h blocks and the conv's "
                     "channels column-wise), out_proj summed")
    if any(getattr(lay, "experts_beside", None) for lay in arch.layers):
        lines.append("the routed experts beside the MLP (and their router) replicated: every rank runs them whole")
    for name in replicated_mixers(arch):
        lines.append(f"the {name} mixers replicated: every rank holds and runs them whole (not split yet)")
    return lines


def parallel_context(arch: Architecture, plan: TpPlan, version: str, source: str, command: str, title: str) -> dict:
    """The literals templates/model/parallel.py.j2 prints."""
    return {
        "version": version, "source": source, "command": command, "title": title, "hyper": arch.hyper is not None,
        "summary": hyper_summary(arch) if arch.hyper is not None else _summary(arch, plan),
        "embedding": repr(plan.embedding), "head": plan.head is not None, "head_literal": repr(plan.head),
        "layers": repr(plan.layers),
        "layer_plan": [(repr(block), [(repr(path), repr(entry)) for path, entry in group.items()])
                       for block, group in plan.layer_plan.items()],
        "replicated": repr(tuple(replicated_mixers(arch))),
    }
