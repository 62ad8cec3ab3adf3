"""The compiler, pass by pass:

    load config -> lower to IR -> validate -> weight map -> render -> format -> write

``compile_config`` runs passes 2-6 in memory; ``generate`` adds loading and writing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...schemas.arch import Architecture
from .. import __version__
from ..verification.checkpoint import check_checkpoint
from ..basics.contenthash import stamp
from .format import format_source
from .load import LoadedConfig, load_config
from .lowering import lower_noted
from .parallel_plan import parallel_context, tp_plan
from ..verification.parity import parity_context
from ..verification.reference import checkpoint_record, reference_context
from .render import Provenance, model_context, render
from .render_files import render_model_files
from .validate import validate
from .weight_map import weight_map
from .write import slug_for, write_model

MANIFEST = "llmgen.json"


@dataclass(frozen=True)
class Compiled:
    slug: str
    arch: Architecture
    files: dict[str, bytes]
    notes: tuple[str, ...] = ()  # config keys ignored because transformers never reads them either


def regenerate_command(loaded: LoadedConfig) -> str:
    if loaded.origin in ("hub", "catalog"):
        pinned = f" --revision {loaded.revision}" if loaded.origin == "hub" else ""
        return f"llmgen from-hub {loaded.requested or loaded.source_id}{pinned}"
    return f"llmgen from-config {loaded.source_id}"


def dump_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def compile_config(
    loaded: LoadedConfig, *, slug: str | None = None, templates: Path | None = None, strict: bool = False
) -> Compiled:
    """Passes 2-6: every output file as bytes; nothing touches the disk (``strict``: a config key
    transformers never reads is an error instead of a note)."""
    arch, notes = lower_noted(loaded.raw, strict=strict)
    arch = validate(arch)
    weights = weight_map(arch)
    prov = Provenance(loaded.source_id, loaded.revision, regenerate_command(loaded))
    context = model_context(arch, weights, prov)
    sources = {name: format_source(text, name=name) for name, text in render_model_files(context, templates).items()}
    test = format_source(
        render("tests/test_parity.py.j2", parity_context(loaded.raw, arch, weights, prov), templates),
        name="test_parity.py",
    )
    reference = format_source(render("tests/test_reference.py.j2", reference_context(prov), templates), name="test_reference.py")
    files = {
        "config.json": loaded.text.encode(),
        "arch.json": dump_json(arch.model_dump(mode="json")),
        # each file's header carries the hash of its body: hand edits show
        **{name: stamp(text).encode() for name, text in sources.items()},
        "test_parity.py": test.encode(),
        "test_reference.py": reference.encode(),
    }
    plan = tp_plan(arch)
    if plan is not None:  # tensor parallelism (torch.distributed), beside the model
        files["parallel.py"] = format_source(render("model/parallel.py.j2", parallel_context(
            arch, plan, context["version"], context["source"], context["command"], context["title"]), templates),
            name="parallel.py").encode()
    manifest = {
        "generator": f"llmgen {__version__}",
        "source": loaded.source_id,
        "revision": loaded.revision,
        "origin": loaded.origin,
        "command": prov.command,
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    if loaded.requested:  # the id given (google/gemma-3-1b), when it resolved to `source`
        manifest["requested"] = loaded.requested
    if notes:
        manifest["ignored_keys"] = list(notes)
    files[MANIFEST] = dump_json(manifest)
    return Compiled(slug=slug or slug_for(loaded.requested or loaded.source_id), arch=arch, files=files, notes=notes)


def generate(
    source: str,
    out: Path,
    *,
    revision: str | None = None,
    token: str | None = None,
    prefer: str = "auto",
    slug: str | None = None,
    templates: Path | None = None,
    force: bool = False,
    strict: bool = False,
) -> tuple[LoadedConfig, Compiled, Path]:
    """All passes: load, compile, write. Returns what was loaded, compiled and where it went."""
    loaded = load_config(source, revision=revision, token=token, prefer=prefer)
    compiled = compile_config(loaded, slug=slug, templates=templates, strict=strict)
    files = {**compiled.files, **checkpoint_record(loaded.checkpoint_dir)}  # + where the weights are
    if loaded.origin == "dir" and loaded.checkpoint_dir is not None:
        check_checkpoint(loaded.checkpoint_dir, compiled.arch)  # weights beside the config must fit
    return loaded, compiled, write_model(out, compiled.slug, files, force=force)


def reload_generated(directory: Path) -> LoadedConfig:
    """The LoadedConfig a generated directory was compiled from (its snapshot + manifest)."""
    manifest = json.loads((directory / MANIFEST).read_text())
    text = (directory / "config.json").read_text()
    return LoadedConfig(
        raw=json.loads(text), text=text, source_id=manifest["source"], revision=manifest["revision"],
        origin=manifest["origin"], checkpoint_dir=None, note=None, requested=manifest.get("requested"),
    )
