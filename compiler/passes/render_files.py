"""Pass 5, rendering a model's Python files: model.py (the architecture), runtime.py (the inference
machinery: caches, the decoding switches) and weights.py (reading a checkpoint), each with the
imports its code uses.

The three import one another by plain module name, the generated directory being on sys.path:
weights.py imports model.py's classes, model.py imports runtime.py's caches (tools and tests load
them under names of their own: compiler/runtime/generated_files.py). A file is rendered with its
imports left out (imports.py.j2 leaves a marker line), its code read (ast) for the names it uses, and
the imports of just those names rendered on their own into the marker's place.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from .render import render

IMPORTS_MARK = "# llmgen: imports\n"  # what imports.py.j2 leaves when rendered with used=None
# (file, template, the file it imports from), in import order: each file may import the one before.
MODEL_FILES = (
    ("runtime.py", "model/runtime_file.py.j2", None),  # hyper-connected models: model/hyper/runtime_file.py.j2
    ("model.py", "model/file.py.j2", "runtime"),
    ("weights.py", "model/weights_file.py.j2", "model"),
)


def used_names(source: str) -> set[str]:
    """Every name the code reads (annotations included), by its leftmost part: F.linear -> F."""
    return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}


def defined_names(source: str) -> set[str]:
    """The module-level classes, functions and assigned names of a file."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def runtime_words(context: dict[str, Any]) -> str:
    """What runtime.py holds for this model, for model.py's docstring."""
    if context.get("no_attention"):
        parts = ["the list of the layers' recurrent states"]
    elif context.get("mla"):
        parts = ["the latent-attention KV cache"]
    else:
        parts = ["the preallocated KV cache (optionally int8)"]
    parts += [f"the state of its {r['words']} layers" for r in context.get("recurrent") or ()]
    if context.get("static_cache"):
        parts.append("the static cache for compiled decoding steps")
    if context.get("attn") and context["attn"]["fused"]:
        parts.append("the fused-attention switch")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def weights_words(context: dict[str, Any]) -> dict[str, str]:
    """Two docstrings of weights.py: which maps checkpoint_keys expands (a MoE or hybrid model's), and
    what load_checkpoint does to a published checkpoint of the legacy layout."""
    moe, legacy = context.get("moe"), context.get("legacy") or {}
    maps = ", ".join(["WEIGHT_MAP"] + ["MIXER_WEIGHT_MAP"] * bool(context.get("hybrid")))
    maps += (" and FFN_WEIGHT_MAP" if moe and moe["mixed"] else "") + " expanded over the layers"
    done = ["BACKBONE_PREFIX added"] * bool(legacy.get("bare"))
    done += ["STALE_LAYER_BUFFERS dropped"] * bool(legacy.get("stale"))
    return {"checkpoint_keys_words": maps + (" and experts" if moe else ""), "legacy_words": ", ".join(done)}


def render_model_files(context: dict[str, Any], templates: Path | None = None) -> dict[str, str]:
    """file name -> rendered source (not yet formatted), for runtime.py, model.py and weights.py."""
    hyper = "hyper" in context
    context = {**context, "runtime_words": "" if hyper else runtime_words(context), **weights_words(context)}
    files: dict[str, str] = {}
    defined: dict[str, set[str]] = {}
    for name, template, imports_from in MODEL_FILES:
        if hyper and name == "runtime.py":
            template = "model/hyper/runtime_file.py.j2"
        draft = render(template, {**context, "used": None}, templates)
        used, own = used_names(draft), defined_names(draft)
        wanted = sorted((used & defined[imports_from]) - own) if imports_from else []
        siblings = ((imports_from, wanted),) if wanted else ()
        imports = render("model/imports.py.j2", {"used": frozenset(used), "siblings": siblings}, templates)
        files[name] = draft.replace(IMPORTS_MARK, imports, 1)
        defined[name.removesuffix(".py")] = own
    return files
