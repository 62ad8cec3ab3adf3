"""The words and numbers inside each box of the architecture diagram, computed from the IR.

Every part of a decoder block becomes a ``Part``: a title line and detail lines, sizes written
as the IR's own integers (``hidden 1152``, ``4 heads × 256``, ``intermediate 6912``,
``256 experts``, ``top-8``). The mixer and the feed-forward are drawn by dispatch on their
``kind``; a kind this module does not know yet (a new mixer or feed-forward in the IR) gets a
generic box titled from its kind name with its numeric fields, so it draws without edits here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ...schemas.arch import Architecture, Norm
from .describe import ACTIVATION_WORDS
from ..passes.mixers import KINDS

TIMES = "×"
ARROW = "→"


@dataclass(frozen=True)
class Part:
    """One box: ``role`` names it for the diff (the same part of two models has the same role)."""

    role: str
    kind: str  # CSS kind: embed, norm, mixer, ffn, head
    title: str
    lines: tuple[str, ...] = ()
    badge: str | None = None  # RoPE / NoPE


def number(value: Any) -> str:
    """Integers as they are (the test compares them with the IR); floats short."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def words(name: str) -> str:
    return name.replace("_", " ")


def norm_title(norm: Norm) -> str:
    title = "RMSNorm" if norm.kind == "rmsnorm" else "LayerNorm"
    if norm.weight_offset:
        title += f" ({number(norm.weight_offset)} + w)"
    return title


def norm_part(role: str, norm: Norm, where: str = "") -> Part:
    return Part(role, "norm", norm_title(norm) + (f" · {where}" if where else ""))


def heads_line(prefix: str, heads: int, width: int) -> str:
    return f"{prefix}{heads} {'head' if heads == 1 else 'heads'} {TIMES} {width}"


def rope_line(arch: Architecture, name: str | None, head_dim: int | None = None) -> str:
    """'RoPE θ 10000', plus scaling and partial rotation; 'NoPE' without a table."""
    if name is None:
        learned = arch.embedding.learned_positions
        return "no RoPE: positions learned at the input" if learned else "NoPE: no position encoding"
    table = arch.rope_table(name)
    line = f"RoPE θ {number(table.theta)}"
    if table.type != "default":
        line += f", {table.type}" + (f" {TIMES}{number(table.factor)}" if table.factor else "")
    if head_dim and table.rotary_dim != head_dim:
        line += f", {table.rotary_dim} of {head_dim} dims"
    return line


def _attention(arch: Architecture, mixer: Any) -> tuple[str, list[str]]:
    heads, kv = mixer.num_heads, mixer.num_kv_heads
    if kv == heads:
        title = "Multi-head attention"
    elif kv == 1:
        title = "Multi-query attention"
    else:
        title = f"Grouped-query attention {heads // kv}:1"
    lines = [heads_line("q: ", heads, mixer.head_dim), heads_line("kv: ", kv, mixer.head_dim)]
    if mixer.span == "sliding":
        lines.append(f"sliding window {mixer.window}")
    elif mixer.span == "chunked":
        lines.append(f"chunked, chunk {mixer.chunk_size}")
    else:
        lines.append("full causal")
    lines.append(rope_line(arch, mixer.rope, mixer.head_dim))
    extras = []
    if mixer.qk_norm != "none":
        extras.append("QK-norm" + (" (L2)" if mixer.qk_norm == "l2" else ""))
    if mixer.softcap:
        extras.append(f"softcap {number(mixer.softcap)}")
    if mixer.sinks:
        extras.append("sinks")
    if mixer.q_bias or mixer.k_bias or mixer.v_bias:
        extras.append("qkv bias")
    if mixer.temperature is not None:
        extras.append("temperature tuning")
    if getattr(mixer, "output_gate", False):
        extras.append("sigmoid output gate")
    if extras:
        lines.append(" · ".join(extras))
    return title, lines


def _mla(arch: Architecture, mixer: Any) -> tuple[str, list[str]]:
    lines = [
        f"{mixer.num_heads} heads; q/k {mixer.qk_nope_head_dim} + {mixer.qk_rope_head_dim} RoPE, v {mixer.v_head_dim}",
        f"q low-rank {mixer.q_lora_rank}" if mixer.q_lora_rank else "q: full projection",
        f"KV latent {mixer.kv_lora_rank} + RoPE key {mixer.qk_rope_head_dim}",
        "cache: latent + RoPE key only",
        rope_line(arch, mixer.rope),
    ]
    return "Multi-head latent attention", lines


def numeric_fields(component: Any, skip: tuple[str, ...] = ("index",)) -> list[str]:
    """'name value' for each number of a component (bools and strings left out): the generic label."""
    out = []
    for name, value in component:
        if name in skip or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out.append(f"{words(name)} {number(value)}")
    return out


def _generic(arch: Architecture, component: Any) -> tuple[str, list[str]]:
    title = words(component.kind)
    lines = numeric_fields(component)
    if hasattr(component, "rope"):
        lines.append(rope_line(arch, component.rope))
    return title[:1].upper() + title[1:], lines


MIXERS: dict[str, Callable[[Architecture, Any], tuple[str, list[str]]]] = {
    "attention": _attention, "mla": _mla}  # recurrent kinds: their MixerKind.diagram (compiler/passes/mixers)


def position_badge(mixer: Any) -> str | None:
    if not hasattr(mixer, "rope"):
        return None
    return "NoPE" if mixer.rope is None else "RoPE"


def mixer_part(arch: Architecture, role: str, mixer: Any) -> Part:
    draw = KINDS[mixer.kind].diagram if mixer.kind in KINDS and KINDS[mixer.kind].diagram else MIXERS.get(mixer.kind, _generic)
    title, lines = draw(arch, mixer)
    return Part(role, "mixer", title, tuple(lines), position_badge(mixer))


ACTIVATIONS = {"silu": "SiLU", "gelu": "GELU", "gelu_tanh": "GELU (tanh)", "gelu_new": "GELU (tanh, gelu_new)",
               "relu": "ReLU"}


def _mlp(arch: Architecture, ffn: Any) -> tuple[str, list[str]]:
    glu = ACTIVATION_WORDS.get(ffn.activation, (words(ffn.activation),))[0]
    title = f"{glu} MLP" if ffn.gated else f"MLP, {ACTIVATIONS.get(ffn.activation, words(ffn.activation))}"
    lines = [f"intermediate {ffn.intermediate_size}",
             f"{arch.hidden_size} {ARROW} {ffn.intermediate_size} {ARROW} {arch.hidden_size}"]
    if ffn.bias:
        lines.append("with biases")
    return title, lines


ROUTERS = {"softmax_topk": "softmax, then top-k", "topk_softmax": "top-k, then softmax",
           "sigmoid_topk": "sigmoid scores", "topk_sigmoid": "top-k, then sigmoid"}


def _moe(arch: Architecture, ffn: Any) -> tuple[str, list[str]]:
    glu = ACTIVATION_WORDS.get(ffn.activation, ("clamped SwiGLU",))[0]
    lines = [f"{ffn.num_experts} experts, top-{ffn.top_k}", f"{glu} experts: intermediate {ffn.intermediate_size}"]
    if ffn.shared_expert_size:
        gate = ", gated" if ffn.shared_expert_gate else ""
        lines.append(f"+ shared expert: intermediate {ffn.shared_expert_size}{gate}")
    router = "router: " + ROUTERS.get(ffn.router, words(ffn.router))
    if ffn.num_groups:
        router += f", best {ffn.topk_groups} of {ffn.num_groups} groups"
    lines.append(router)
    if ffn.routed_scaling_factor is not None:
        lines.append(f"weights {TIMES} {number(ffn.routed_scaling_factor)}")
    return "Mixture of experts", lines


FEED_FORWARDS: dict[str, Callable[[Architecture, Any], tuple[str, list[str]]]] = {"mlp": _mlp, "moe": _moe}


def ffn_part(arch: Architecture, role: str, ffn: Any) -> Part:
    title, lines = FEED_FORWARDS.get(ffn.kind, _generic)(arch, ffn)
    return Part(role, "ffn", title, tuple(lines))


def embedding_part(arch: Architecture) -> Part:
    emb = arch.embedding
    lines = [f"vocab {emb.vocab_size} {TIMES} hidden {arch.hidden_size}"]
    if emb.scale:
        lines.append(f"{TIMES} {number(emb.scale)}" + (" (√hidden)" if emb.scale_in_dtype else ""))
    if emb.learned_positions:
        lines.append(f"+ learned positions {emb.learned_positions}")
    return Part("embed", "embed", "Token embedding", tuple(lines))


def head_part(arch: Architecture) -> Part:
    head = arch.head
    lines = [f"hidden {arch.hidden_size} {ARROW} vocab {arch.embedding.vocab_size}",
             "tied to the embedding" if head.tied else "separate weights (lm_head)"]
    if head.bias:
        lines.append("with a bias")
    if head.multiplier is not None:
        lines.append(f"logits {TIMES} {number(head.multiplier)}")
    if head.divisor is not None:
        lines.append(f"logits ÷ {number(head.divisor)}")
    if head.softcap:
        lines.append(f"logit softcap {number(head.softcap)}")
    return Part("head", "head", "LM head", tuple(lines))


FFN_WORDS = {"mlp": "MLP", "moe": "MoE"}
MIXER_WORDS = {"mla": "latent attention"}  # recurrent kinds: their MixerKind.title


def kind_meaning(layer: Any) -> str:
    """A column's heading: 'sliding window 512 + MLP', 'latent attention + MoE', 'full attention, NoPE + MLP'."""
    mixer = layer.mixer
    if mixer is None:  # a layer that is only a feed-forward block
        return f"{FFN_WORDS.get(layer.ffn.kind, words(layer.ffn.kind))} only"
    if mixer.kind == "attention":
        text = (f"sliding window {mixer.window}" if mixer.span == "sliding" else f"chunked {mixer.chunk_size}"
                if mixer.span == "chunked" else "full attention")
    else:
        text = MIXER_WORDS.get(mixer.kind) or (KINDS[mixer.kind].title if mixer.kind in KINDS else words(mixer.kind))
    if getattr(mixer, "rope", "") is None:
        text += ", NoPE"
    if layer.parallel_mixer is not None:  # Falcon-H1: a recurrent mixer beside the attention
        text += f" beside {KINDS[layer.parallel_mixer.kind].title}"
    if layer.ffn is None:  # a layer that is only a mixer
        return text
    return f"{text} + {FFN_WORDS.get(layer.ffn.kind, words(layer.ffn.kind))}"


BLOCK_WORDS = {"pre_norm": "pre-norm", "post_norm": "post-norm", "sandwich": "sandwich norms", "parallel": "parallel"}


def block_parts(arch: Architecture, layer: Any, col: int) -> dict[str, Any]:
    """The parts of one decoder block, by role; the layout decides where each goes."""
    prefix = f"col{col}."
    return {
        "mixer": mixer_part(arch, prefix + "mixer", layer.mixer) if layer.mixer is not None else None,
        "ffn": ffn_part(arch, prefix + "ffn", layer.ffn) if layer.ffn is not None else None,  # None: one block
        "parallel_mixer": (mixer_part(arch, prefix + "parallel", layer.parallel_mixer)
                           if layer.parallel_mixer is not None else None),  # beside the mixer, on the same input
        "norm": layer.norm,
        "block": layer.block,
        "parallel_norms": layer.parallel_norms,
        "residual_scale": layer.residual_scale,
    }
