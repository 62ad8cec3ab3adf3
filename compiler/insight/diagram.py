"""``llmgen card --format svg``: an architecture block diagram drawn from the IR.

Top to bottom: token embedding, the decoder-layer stack, final norm, LM head. The stack is one
frame with its total ``× N``, a strip of one cell per layer (coloured by the layer's pattern
letter, as in ``llmgen card``) and one column per distinct kind of block with its own ``× n``
(Gemma 3: 22 sliding + 4 full; DeepSeek-V3: 3 dense + 58 MoE), each block's parts in data-flow
order with the residual path: pre-norm, post-norm, sandwich or parallel.

This module computes every position and number; ``templates/diagram/`` only prints the shapes
(``figure.svg.j2``, ``shapes.svg.j2``) and holds the style (``style.css.j2``: colours, fonts, line
widths), so restyling is an edit there. Output is deterministic: no timestamps, no element ids
(a page may inline many diagrams), shapes in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jinja2

from ...schemas.arch import Architecture
from .card import compress, human_count, layer_letter
from .diagram_parts import (
    BLOCK_WORDS, FFN_WORDS, TIMES, Part, block_parts, embedding_part, head_part, kind_meaning, norm_part,
)
from ..passes.render import BUILTIN_TEMPLATES

MARGIN = 24
PAD = 10
GAP = 20  # arrow length between boxes
TITLE_H, LINE_H = 20, 15
NORM_H = 24
LANE = 16  # residual lane, from the column's left edge
COL_PAD = 12
ADD_R = 8
MIN_BOX = 230
BADGE_W = 40
FONT = {"t": 13.0, "l": 11.5}  # box titles and lines (px), as style.css.j2 sets them


def text_width(text: str, size: float, bold: bool = False) -> float:
    """A generous estimate of rendered width (sans-serif): layout only, never measured."""
    narrow = sum(ch in "il.,:;'|!()[] tfjr1" for ch in text)
    wide = sum(ch.isupper() or ch in "mwMW×→" for ch in text)
    em = (len(text) - narrow - wide) * 0.58 + narrow * 0.34 + wide * 0.78
    return em * size * (1.07 if bold else 1.0)


def r1(value: float) -> float | int:
    value = round(value, 1)
    return int(value) if value == int(value) else value


@dataclass
class Figure:
    label: str
    width: float = 0
    height: float = 0
    shapes: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # each column's kind: pattern letter + feed-forward kind

    def add(self, el: str, cls: str, role: str | None = None, **attrs: Any) -> dict[str, Any]:
        values = {k: r1(v) if isinstance(v, float) else v for k, v in attrs.items()}
        shape = {"el": el, "cls": cls, "role": role, **values}
        self.shapes.append(shape)
        return shape

    def text(self, x: float, y: float, text: str, cls: str, role: str | None = None) -> None:
        self.add("text", cls, role, x=x, y=y, text=text)

    def arrow(self, x: float, y1: float, y2: float) -> None:
        self.add("path", "lgd-flow", d=f"M{r1(x)} {r1(y1)}V{r1(y2 - 5)}")
        self.head(x, y2, "down")

    def head(self, x: float, y: float, way: str) -> None:
        pts = ((x - 4, y - 6), (x + 4, y - 6), (x, y)) if way == "down" else ((x - 6, y - 4), (x - 6, y + 4), (x, y))
        self.add("polygon", "lgd-tip", points=" ".join(f"{r1(a)},{r1(b)}" for a, b in pts))


def part_width(part: Part) -> float:
    widths = [text_width(part.title, FONT["t"], True) + (2 * BADGE_W if part.badge else 0)]
    widths += [text_width(line, FONT["l"]) for line in part.lines]
    return max(widths) + 2 * PAD


def part_height(part: Part) -> float:
    if part.kind == "norm":
        return NORM_H
    return PAD + TITLE_H + LINE_H * len(part.lines) + (PAD - 4 if part.lines else 0)


def draw_part(fig: Figure, part: Part, cx: float, y: float, w: float) -> float:
    """The box of ``part`` centred on cx from y; returns its bottom."""
    h = part_height(part)
    fig.add("rect", f"lgd-box lgd-{part.kind}", part.role, x=cx - w / 2, y=y, w=w, h=h, rx=6)
    if part.kind == "norm":
        fig.text(cx, y + 16, part.title, "lgd-n", part.role)
        return y + h
    fig.text(cx, y + PAD + 13, part.title, "lgd-t", part.role)
    for i, line in enumerate(part.lines):
        fig.text(cx, y + PAD + TITLE_H + 11 + LINE_H * i, line, "lgd-l", part.role)
    if part.badge:
        bx = cx + w / 2 - BADGE_W - 5
        fig.add("rect", f"lgd-badge lgd-{part.badge.lower()}", part.role, x=bx, y=y + 5, w=BADGE_W, h=16, rx=8)
        fig.text(bx + BADGE_W / 2, y + 17, part.badge, "lgd-bt", part.role)
    return y + h


# --- layer kinds ----------------------------------------------------------------------------------


@dataclass
class Kind:
    """Layers of one structure (equal but for their index): one column."""

    col: int
    layers: list[int]
    letter: str
    parts: dict[str, Any]
    meaning: str


def layer_kinds(arch: Architecture) -> list[Kind]:
    kinds: dict[str, Kind] = {}
    for layer in arch.layers:
        key = repr(layer.model_copy(update={"index": 0}))  # the structure, whatever kinds it holds
        if key not in kinds:
            col = len(kinds)
            kinds[key] = Kind(col, [], layer_letter(layer), block_parts(arch, layer, col), kind_meaning(layer))
        kinds[key].layers.append(layer.index)
    return list(kinds.values())


def layer_span(indices: list[int]) -> str:
    """'layers 0–2', 'layers 5, 11, … (every 6th)', 'layer 7', or '' when irregular."""
    first, last = indices[0], indices[-1]
    if len(indices) == 1:
        return f"layer {first}"
    step = indices[1] - first
    if any(b - a != step for a, b in zip(indices, indices[1:])):
        return ""
    if step == 1:
        return f"layers {first}–{last}"
    nth = {2: "2nd", 3: "3rd"}.get(step, f"{step}th")
    return f"layers {first}, {first + step}, … {last} (every {nth})"


def _norms(kind: Kind, branch: str) -> tuple[list[Part], list[Part]]:
    """(norms before, norms after) the branch's main part, by the block's norm placement."""
    block, norm, col = kind.parts["block"], kind.parts["norm"], kind.col
    before = [norm_part(f"col{col}.{branch}.pre", norm)] if block in ("pre_norm", "sandwich") else []
    after = [norm_part(f"col{col}.{branch}.post", norm, "post")] if block in ("post_norm", "sandwich") else []
    return before, after


def column_box_width(kind: Kind) -> float:
    mixer, ffn = kind.parts["mixer"], kind.parts["ffn"]
    if kind.parts["block"] == "parallel":
        return max(2 * max(part_width(mixer), part_width(ffn)) + 16, MIN_BOX)
    if kind.parts["parallel_mixer"] is not None:  # two mixers side by side
        return max(2 * max(part_width(mixer), part_width(kind.parts["parallel_mixer"])) + 16, part_width(ffn), MIN_BOX)
    return max(*(part_width(part) for part in (mixer, ffn) if part is not None), MIN_BOX)


def column_header_width(kind: Kind) -> float:
    second = BLOCK_WORDS[kind.parts["block"]] + " · " + layer_span(kind.layers)  # as draw_column writes it
    return max(26 + text_width(f"{TIMES} {len(kind.layers)}", 14, True) + 8 + text_width(kind.meaning, FONT["l"]),
               text_width(second, FONT["l"]))


def _add_node(fig: Figure, cx: float, y_top: float, lane: float, fork: float, scale: float | None) -> float:
    """The residual add (⊕) below y_top with the skip path from the fork; returns its bottom."""
    cy = y_top + ADD_R
    fig.add("path", "lgd-res", d=f"M{r1(cx)} {r1(fork)}H{r1(lane)}V{r1(cy)}H{r1(cx - ADD_R - 5)}")
    fig.head(cx - ADD_R, cy, "right")
    fig.add("circle", "lgd-add", cx=cx, cy=cy, r=ADD_R)
    fig.add("path", "lgd-plus", d=f"M{r1(cx - 4)} {r1(cy)}H{r1(cx + 4)}M{r1(cx)} {r1(cy - 4)}V{r1(cy + 4)}")
    if scale is not None:
        fig.text(cx + ADD_R + 6, cy + 4, f"branch {TIMES} {scale:g}", "lgd-note")
    return cy + ADD_R


def draw_column(fig: Figure, kind: Kind, x0: float, y0: float, w: float) -> tuple[float, float]:
    """One kind of block from y0 (its header) down; returns (where its flow ends, the flow's x)."""
    role = f"col{kind.col}.header"
    fig.add("rect", f"lgd-swatch lgk-{kind.letter}", x=x0 + COL_PAD, y=y0 + 8, w=12, h=12, rx=2)
    fig.text(x0 + COL_PAD + 18, y0 + 19, f"{TIMES} {len(kind.layers)}", "lgd-count", role)
    fig.text(x0 + COL_PAD + 26 + text_width(f"{TIMES} {len(kind.layers)}", 14, True), y0 + 19, kind.meaning,
             "lgd-meta", role)
    span = layer_span(kind.layers)
    second = BLOCK_WORDS[kind.parts["block"]] + (f" · {span}" if span else "")
    fig.text(x0 + COL_PAD, y0 + 36, second, "lgd-meta", role)
    bw = w - LANE - COL_PAD - 10
    cx, lane = x0 + LANE + COL_PAD + 4 + bw / 2, x0 + LANE
    y = y0 + 48
    fig.add("path", "lgd-flow", d=f"M{r1(cx)} {r1(y0 + 40)}V{r1(y)}")
    scale = kind.parts["residual_scale"]
    if kind.parts["block"] == "parallel":
        y = _parallel(fig, kind, cx, y, bw, lane, scale)
    else:
        for branch in ("mixer", "ffn"):
            if kind.parts[branch] is None:  # a layer of one block
                continue
            fork = y
            fig.add("circle", "lgd-fork", cx=cx, cy=fork, r=2.5)
            before, after = _norms(kind, branch)
            for part in [*before, kind.parts[branch], *after]:
                if branch == "mixer" and part is kind.parts[branch] and kind.parts["parallel_mixer"] is not None:
                    y = _side_by_side(fig, (part, kind.parts["parallel_mixer"]), cx, y, bw)
                    continue
                fig.arrow(cx, y, y + GAP)
                y = draw_part(fig, part, cx, y + GAP, bw)
            fig.arrow(cx, y, y + GAP - 2)
            y = _add_node(fig, cx, y + GAP - 2, lane, fork, scale)
            fig.add("path", "lgd-flow", d=f"M{r1(cx)} {r1(y)}V{r1(y + 12)}")
            y += 12
    return y, cx


def _side_by_side(fig: Figure, parts: tuple[Part, Part], cx: float, y: float, bw: float) -> float:
    """Two mixers reading the same input (Layer.parallel_mixer), their outputs summed; returns the join's bottom."""
    half = (bw - 16) / 2
    centres = (cx - bw / 2 + half / 2, cx + bw / 2 - half / 2)
    fig.add("path", "lgd-flow", d=f"M{r1(cx)} {r1(y)}V{r1(y + 8)}M{r1(centres[0])} {r1(y + 8)}H{r1(centres[1])}")
    bottoms = []
    for part, bx in zip(parts, centres):
        fig.arrow(bx, y + 8, y + 8 + GAP)
        bottoms.append(draw_part(fig, part, bx, y + 8 + GAP, half))
    join = max(bottoms) + 12
    for bx, yb in zip(centres, bottoms):
        fig.add("path", "lgd-flow", d=f"M{r1(bx)} {r1(yb)}V{r1(join)}")
    fig.add("path", "lgd-flow", d=f"M{r1(centres[0])} {r1(join)}H{r1(centres[1])}")
    return join


def _parallel(fig: Figure, kind: Kind, cx: float, y: float, bw: float, lane: float, scale: float | None) -> float:
    fork, half = y, (bw - 16) / 2
    fig.add("circle", "lgd-fork", cx=cx, cy=fork, r=2.5)
    centres = (cx - bw / 2 + half / 2, cx + bw / 2 - half / 2)
    norm = kind.parts["norm"]
    if kind.parts["parallel_norms"] == 1:
        fig.arrow(cx, y, y + GAP)
        y = draw_part(fig, norm_part(f"col{kind.col}.norm", norm, "shared"), cx, y + GAP, half)
    fig.add("path", "lgd-flow", d=f"M{r1(cx)} {r1(y)}V{r1(y + 8)}M{r1(centres[0])} {r1(y + 8)}H{r1(centres[1])}")
    y += 8
    bottoms = []
    for branch, bx in zip(("mixer", "ffn"), centres):
        yb = y
        parts = [kind.parts[branch]]
        if kind.parts["parallel_norms"] == 2:
            parts.insert(0, norm_part(f"col{kind.col}.{branch}.pre", norm))
        for part in parts:
            fig.arrow(bx, yb, yb + GAP)
            yb = draw_part(fig, part, bx, yb + GAP, half)
        bottoms.append(yb)
    join = max(bottoms) + 12
    for bx, yb in zip(centres, bottoms):
        fig.add("path", "lgd-flow", d=f"M{r1(bx)} {r1(yb)}V{r1(join)}")
    fig.add("path", "lgd-flow", d=f"M{r1(centres[0])} {r1(join)}H{r1(centres[1])}")
    fig.arrow(cx, join, join + GAP - 2)
    y = _add_node(fig, cx, join + GAP - 2, lane, fork, scale)
    fig.add("path", "lgd-flow", d=f"M{r1(cx)} {r1(y)}V{r1(y + 12)}")
    return y + 12


# --- the whole model ------------------------------------------------------------------------------


def _strip(fig: Figure, arch: Architecture, x: float, y: float, width: float) -> float:
    """One cell per layer, coloured by its pattern letter; a second row when dense and MoE layers mix."""
    letters = "".join(layer_letter(layer) for layer in arch.layers)
    cell = max(2.0, min(12.0, width / len(letters)))
    for i, letter in enumerate(letters):
        fig.add("rect", f"lgd-cell lgk-{letter}", x=x + i * cell, y=y, w=max(cell - 1, 1), h=12, rx=1)
    note = f"pattern {compress(letters)}"
    ffn_kinds = [layer.ffn.kind for layer in arch.layers if layer.ffn is not None]
    if len(set(ffn_kinds)) > 1 and all(layer.ffn is not None for layer in arch.layers):  # one-block layers: the letters say it
        for i, kind in enumerate(ffn_kinds):
            fig.add("rect", f"lgd-cell lgf-{kind}", x=x + i * cell, y=y + 14, w=max(cell - 1, 1), h=5)
        note += " · lower row: " + " / ".join(FFN_WORDS.get(k, k) + f" ({ffn_kinds.count(k)})"
                                               for k in dict.fromkeys(ffn_kinds))
        y += 7
    fig.text(x, y + 28, note, "lgd-meta", "frame")
    return y + 32


def subtitle(arch: Architecture, params: dict[str, Any] | None) -> str:
    """model_type, layers, hidden, parameters (the card's counts, when given), context."""
    words = [arch.model_type, f"{arch.num_layers} layers", f"hidden {arch.hidden_size}"]
    if params:
        words.append(f"{human_count(params['total'])} parameters" + (
            f" ({human_count(params['active_per_token'])} active)" if params["active_per_token"] != params["total"]
            else ""))
    return " · ".join(words + [f"context {arch.max_position_embeddings}"])


def figure(arch: Architecture, label: str, params: dict[str, Any] | None = None) -> Figure:
    """Every shape of the diagram, positioned; ``params``: ``card.parameters(arch)`` for the subtitle."""
    fig = Figure(label)
    kinds = layer_kinds(arch)
    fig.columns = [kind.letter + (kind.parts["ffn"].title if kind.parts["ffn"] else "") for kind in kinds]
    col_w = [max(column_box_width(k) + LANE + COL_PAD + 14, column_header_width(k) + 2 * COL_PAD) for k in kinds]
    embed, head = embedding_part(arch), head_part(arch)
    sub = subtitle(arch, params)
    cols_w = sum(col_w) + 12 * (len(kinds) - 1)
    stream = f"residual stream: hidden {arch.hidden_size}"
    frame_w = max(cols_w + 2 * 14, text_width("Decoder layers", 15, True) + text_width(stream, FONT["l"]) + 110, 320)
    inner = max(frame_w, part_width(embed), part_width(head), text_width(label, 17, True), text_width(sub, 12))
    width = inner + 2 * MARGIN
    cx = width / 2
    fig.text(MARGIN, MARGIN + 14, label, "lgd-title")
    fig.text(MARGIN, MARGIN + 34, sub, "lgd-sub")
    y = MARGIN + 50
    y = draw_part(fig, embed, cx, y, part_width(embed))
    fig.arrow(cx, y, y + GAP)
    # the layer stack
    fx, fy = cx - frame_w / 2, y + GAP
    frame = fig.add("rect", "lgd-frame", "frame", x=fx, y=fy, w=frame_w, h=0, rx=10)
    fig.text(fx + 14, fy + 24, "Decoder layers", "lgd-frame-t", "frame")
    fig.text(fx + frame_w - 14, fy + 27, f"{TIMES} {arch.num_layers}", "lgd-total", "frame")
    fig.text(fx + 14 + text_width("Decoder layers", 15, True) + 12, fy + 24, stream, "lgd-meta", "frame")
    ys = _strip(fig, arch, fx + 14, fy + 38, frame_w - 28)
    x, bottoms, col_top = fx + (frame_w - cols_w) / 2, [], ys + 8
    for kind, w in zip(kinds, col_w):
        col = fig.add("rect", f"lgd-col lgc-{kind.letter}", x=x, y=col_top, w=w, h=0, rx=8)
        bottoms.append((col, *draw_column(fig, kind, x, col_top, w)))
        x += w + 12
    low = max(b for _, b, _ in bottoms) + 8
    for col, end, flow_x in bottoms:
        col["h"] = r1(low - col_top)
        fig.add("path", "lgd-flow", d=f"M{r1(flow_x)} {r1(end)}V{r1(low)}")  # each kind's output leaves the column
    frame["h"] = r1(low + 14 - fy)
    y = low + 14
    fig.arrow(cx, y, y + GAP)
    final = norm_part("final", arch.final_norm, "final")
    y = draw_part(fig, final, cx, y + GAP, max(part_width(final), 160))
    fig.arrow(cx, y, y + GAP)
    y = draw_part(fig, head, cx, y + GAP, part_width(head))
    fig.width, fig.height = r1(width), r1(y + MARGIN)
    return fig


# --- SVG ------------------------------------------------------------------------------------------


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES / "diagram")), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                              lstrip_blocks=True)


def render_svg(panels: list[tuple[float, float, Figure]], width: float, height: float, label: str,
               standalone: bool = True) -> str:
    """The SVG of figures placed at (dx, dy); ``standalone`` adds the XML prolog, namespace and style
    (a page that inlines several diagrams includes ``style.css.j2`` once instead)."""
    return _env().get_template("figure.svg.j2").render(
        panels=[{"dx": r1(dx), "dy": r1(dy), "shapes": fig.shapes} for dx, dy, fig in panels],
        width=r1(width), height=r1(height), label=label, standalone=standalone)


def diagram_svg(arch: Architecture, label: str, standalone: bool = True, params: dict[str, Any] | None = None) -> str:
    fig = figure(arch, label, params)
    return render_svg([(0, 0, fig)], fig.width, fig.height, f"Architecture of {label}", standalone)


def diagram_style() -> str:
    return (BUILTIN_TEMPLATES / "diagram" / "style.css.j2").read_text()
