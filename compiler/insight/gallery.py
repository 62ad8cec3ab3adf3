"""``llmgen gallery --out DIR``: one static HTML page of every bundled catalog model.

Each catalog config goes through the pipeline's load, lower and validate passes; those that
compile get a row in a sortable table (parameters, KV cache, attention kind, pattern strip)
and a card; the others are listed as "not yet compiled" with the one-line reason. The page
is self-contained: inline CSS and JavaScript, no external assets, no network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__
from ..basics.atomic import ensure_dir, write_file
from .card import Model, card, human_bytes, human_count, summary_rows
from ..basics.catalog import catalog_entries
from .coverage import coverage
from ..basics.errors import LlmgenError, SourceError
from .gallery_figures import chart_selection, figures, merged_legend, page_style, pattern_legend
from ..passes.load import load_config
from ..passes.lowering import lower
from ..passes.render import BUILTIN_TEMPLATES
from ..passes.validate import validate

PAGE = "index.html"


def _anchor(hub_id: str) -> str:
    return "m-" + re.sub(r"[^a-z0-9]+", "-", hub_id.lower()).strip("-")


def collect() -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(cards of the catalog models that compile, {id, model_type, reason} of the others)."""
    compiled, skipped = [], []
    for entry in catalog_entries():
        try:
            loaded = load_config(str(entry.path), prefer="path")
            arch = validate(lower(loaded.raw))
            data = card(Model(entry.id, entry.id, arch))
        except LlmgenError as exc:
            reason = re.sub(r" \(supported: [^)]*\)", "", str(exc))
            skipped.append({"id": entry.id, "model_type": entry.model_type or "?", "reason": reason})
            continue
        p, kv = data["parameters"], data["kv_cache"]
        data.update(
            anchor=_anchor(entry.id),
            summary=summary_rows(data),
            params_text=human_count(p["total"]),
            active_text=human_count(p["active_per_token"]),
            non_embedding_text=f"{human_count(p['non_embedding'])} ({1 - p['embedding_share']:.0%})",
            kv_text=human_bytes(kv["bytes_per_token_bf16"]) + (
                f" + {human_bytes(kv['recurrent_bytes_per_sequence'])} state" if kv.get("recurrent_layers") else ""),
            kv32k_text=human_bytes(kv["effective_bytes_bf16"]["32k"]),
            pattern_words=pattern_legend(arch),
            **figures(arch, entry.id, data["parameters"]),
        )
        compiled.append(data)
    listed = {entry["model_type"] for entry in skipped}
    for row in coverage()[0]:  # transformers' other decoders (llmgen list --all): the mechanism each lacks
        if not row.compiles and row.model_type not in listed:
            skipped.append({"id": row.model_type, "model_type": row.causal_lm, "reason": f"not yet: {row.detail}"})
    return compiled, skipped


def render_page(compiled: list[dict[str, Any]], skipped: list[dict[str, str]]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES / "gallery")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("page.html.j2").render(
        compiled=compiled, skipped=skipped, version=__version__, diagram_style=page_style(),
        legend=merged_legend([m["pattern_words"] for m in compiled]),
        charted=chart_selection([m["id"] for m in compiled]))


def build_gallery(out: Path) -> tuple[Path, int, int]:
    """Write ``out/index.html``; returns (its path, models compiled, models skipped)."""
    if out.exists() and not out.is_dir():
        raise SourceError(f"--out {out}: exists and is not a directory")
    compiled, skipped = collect()
    page = write_file(ensure_dir(out, f"--out {out}") / PAGE, render_page(compiled, skipped).encode("utf-8"))
    return page, len(compiled), len(skipped)
