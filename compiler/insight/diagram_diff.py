"""``llmgen diff A B --format svg``: the two architecture diagrams side by side, differences marked.

Each text of a diagram belongs to a part (``role``: the embedding, column 0's mixer, the head...);
a text that the other model's same part does not have is highlighted, and so is the box around it
(or a whole box the other model lacks). Below the pictures, the differences in words, as
``llmgen diff --words`` prints them.
"""

from __future__ import annotations

from .card import Model, parameters
from .diagram import MARGIN, Figure, figure, render_svg, text_width
from .irdiff import differences

GAP_BETWEEN = 36
CHANGED, CHANGED_BOX = "lgd-changed", "lgd-changed-box"


def _texts(fig: Figure) -> set[tuple[str, str]]:
    return {(s["role"], s["text"]) for s in fig.shapes if s["el"] == "text" and s["role"]}


def _roles(fig: Figure) -> set[str]:
    return {s["role"] for s in fig.shapes if s["role"]}


def match_columns(a: Figure, b: Figure) -> None:
    """Give B's columns the roles of A's columns of the same kind (Llama's only column is compared with
    Gemma 3's full-attention column, not its sliding one); the rest keep their order."""
    free = list(range(len(a.columns)))
    mapping: dict[int, int] = {}
    for j, kind in enumerate(b.columns):
        same = next((i for i in free if a.columns[i] == kind), None)
        if same is None:
            same = next((i for i in free if a.columns[i][0] == kind[0]), None)
        if same is not None:
            mapping[j] = same
            free.remove(same)
    spare = iter(free + list(range(len(a.columns), len(a.columns) + len(b.columns))))
    for j in range(len(b.columns)):
        mapping.setdefault(j, next(spare))
    for shape in b.shapes:
        role = shape["role"]
        if role and role.startswith("col"):
            index, rest = role[3:].split(".", 1)
            shape["role"] = f"col{mapping[int(index)]}.{rest}"


def mark_differences(a: Figure, b: Figure) -> int:
    """Highlight, in both figures, every text and box the other lacks; returns how many texts differ."""
    count = 0
    for fig, other in ((a, b), (b, a)):
        texts, roles, changed = _texts(other), _roles(other), set()
        for shape in fig.shapes:
            if shape["el"] == "text" and shape["role"] and (shape["role"], shape["text"]) not in texts:
                shape["cls"] += f" {CHANGED}"
                changed.add(shape["role"])
                count += 1
        for shape in fig.shapes:
            if shape["el"] == "rect" and "lgd-box" in shape["cls"] and (
                    shape["role"] in changed or shape["role"] not in roles):
                shape["cls"] += f" {CHANGED_BOX}"
    return count


def word_list(lines: list[str], heading: str) -> Figure:
    """A heading and one line per difference (a figure of texts only)."""
    fig = Figure(heading)
    fig.text(0, 16, heading, "lgd-diff-t")
    for i, line in enumerate(lines):
        fig.text(0, 40 + 17 * i, f"• {line}", "lgd-diff-l")
    fig.width = max([text_width(heading, 15, True)] + [text_width(f"• {line}", 12) for line in lines])
    fig.height = 40 + 17 * len(lines)
    return fig


def diff_svg(a: Model, b: Model) -> str:
    fa, fb = (figure(m.arch, f"{side}: {m.label}", parameters(m.arch)) for side, m in (("A", a), ("B", b)))
    match_columns(fa, fb)
    mark_differences(fa, fb)
    words = differences(a.arch, b.arch) or ["no architectural differences"]
    listing = word_list(words, "What B changes (highlighted above)")
    top = max(fa.height, fb.height)
    width = max(fa.width + GAP_BETWEEN + fb.width, listing.width + 2 * MARGIN)
    panels = [(0, 0, fa), (fa.width + GAP_BETWEEN, 0, fb), (MARGIN, top, listing)]
    return render_svg(panels, width, top + listing.height + MARGIN, f"Architecture diff: {a.label} vs {b.label}")
