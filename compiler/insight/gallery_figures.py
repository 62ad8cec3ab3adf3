"""The gallery's pictures: each model's architecture diagram, the cache-memory series of the chart,
and the legend of the pattern colours. Numbers are computed here; the page template and its
script only draw them.

The chart's memory at a context length is ``card.cache_bytes`` (the card's own "KV at length"):
sliding windows keep at most their window, MLA layers their latent and RoPE key, layers that
reuse another layer's cache nothing.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup

from ...schemas.arch import Architecture
from .card import cache_bytes, human_bytes, layer_letter, letter_meaning
from ..passes.mixers import letter_of
from .diagram import diagram_style, diagram_svg

CHART_MIN, CHART_MAX = 2**10, 2**20  # 1k .. 1M tokens
CHART_TOKENS = tuple(round(2 ** (10 + k / 4)) for k in range(41))  # four points per doubling
CHART_DEFAULT = ("google/gemma-3-1b-it", "google/gemma-2-2b-it", "meta-llama/Llama-3.1-8B", "deepseek-ai/DeepSeek-V3",
                 "openai/gpt-oss-20b", "Qwen/Qwen3-30B-A3B")
LETTER_WORDS = {"S": "sliding-window attention", "F": "full attention", "C": "chunked attention",
                "A": "multi-head latent attention (MLA)"}


def chart_tokens(arch: Architecture) -> list[int]:
    """The chart's context lengths, plus the trained context when it falls inside (where the line turns dashed)."""
    tokens = set(CHART_TOKENS)
    if CHART_MIN <= arch.max_position_embeddings <= CHART_MAX:
        tokens.add(arch.max_position_embeddings)
    return sorted(tokens)


def chart_series(arch: Architecture) -> list[list[int]]:
    """[[tokens, bytes], ...] from 1k to 1M tokens."""
    return [[tokens, cache_bytes(arch, tokens)] for tokens in chart_tokens(arch)]


def figures(arch: Architecture, label: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a gallery row and card add for one model: its diagram and its chart line."""
    series = chart_series(arch)
    at = dict(map(tuple, series))
    return {
        "diagram": Markup(diagram_svg(arch, label, standalone=False, params=params)),
        "kv_series": json.dumps(series, separators=(",", ":")),
        "kv_note": f"32k: {human_bytes(at[32768])} · 1M: {human_bytes(at[CHART_MAX])}",
    }


def chart_selection(ids: list[str]) -> set[str]:
    """The models drawn when the page opens (the reader ticks others)."""
    chosen = {i for i in ids if i in CHART_DEFAULT}
    return chosen or set(ids[:5])


def pattern_legend(arch: Architecture) -> dict[str, str]:
    """letter -> meaning for every pattern letter of one model."""
    out: dict[str, str] = {}
    for layer in arch.layers:
        letter = layer_letter(layer)
        if layer.mixer is None or letter_of(layer):  # feed-forward-only and recurrent layers: the card's words
            out.setdefault(letter, letter_meaning(layer))
            continue
        words = LETTER_WORDS.get(letter.upper(), layer.mixer.kind.replace("_", " "))
        out.setdefault(letter, words + (", no RoPE (NoPE)" if letter.islower() else ""))
    return out


def merged_legend(legends: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Every letter on the page once, known letters first (S F C M, then lower case), others by letter."""
    merged: dict[str, str] = {}
    for legend in legends:
        for letter, words in legend.items():
            if letter in merged and words not in merged[letter].split(" / "):  # M: MLA in one model, Mamba-2 in another
                merged[letter] += f" / {words}"
            merged.setdefault(letter, words)
    order = "SFCMsfcm"
    return sorted(merged.items(), key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0]))


def page_style() -> Markup:
    """The diagrams' style sheet, once for the whole page (our own file: inserted as is)."""
    return Markup(diagram_style())
