"""The bundled offline catalog: real hub ``config.json`` files shipped in ``llmgen.catalog``.

A file ``org__model.json`` holds the config of hub id ``org/model``. A trailing ``__TRIMMED``
(``org__model__TRIMMED.json``) is not part of the id: it marks a file from which a third party
dropped some hub keys; :func:`is_trimmed` reports it.
"""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from pathlib import Path
from typing import NamedTuple

TRIMMED_SUFFIX = "__TRIMMED"
MAX_SUGGESTIONS = 5


class Release(NamedTuple):
    """A short model name that is not a hub repository, and the repository it stands for."""

    id: str  # the hub repository used (the pretrained release)
    stand_in: str  # a bundled config of the same architecture, for when ``id`` cannot be read offline
    relation: str  # what ``stand_in`` is, in a few words


# The mission's own command, `llmgen from-hub google/gemma-3-1b`: Google publishes the 1B Gemma 3 as
# google/gemma-3-1b-pt (pretrained) and google/gemma-3-1b-it (instruction-tuned), one architecture.
RELEASES = {
    "google/gemma-3-1b": Release("google/gemma-3-1b-pt", "google/gemma-3-1b-it", "the instruction-tuned release"),
}


def release_for(hub_id: str) -> Release | None:
    """The release a short name like ``google/gemma-3-1b`` stands for (case-insensitive), or None."""
    return RELEASES.get(hub_id.lower())


class CatalogEntry(NamedTuple):
    """One bundled config, as ``llmgen list`` shows it."""

    id: str
    model_type: str | None
    architecture: str | None
    path: Path


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, tuple[str, Path, bool]]:
    """Map lower-cased hub id -> (hub id, file path, trimmed) for every bundled file."""
    root = Path(str(resources.files("llmgen.catalog")))
    index: dict[str, tuple[str, Path, bool]] = {}
    for path in sorted(root.glob("*.json")):
        stem = path.stem
        trimmed = stem.endswith(TRIMMED_SUFFIX)
        if trimmed:
            stem = stem[: -len(TRIMMED_SUFFIX)]
        hub_id = stem.replace("__", "/", 1)
        index[hub_id.lower()] = (hub_id, path, trimmed)
    return index


def catalog_ids() -> list[str]:
    """All bundled hub ids, sorted case-insensitively."""
    return sorted((hub_id for hub_id, _, _ in _index().values()), key=lambda s: (s.lower(), s))


def canonical_id(hub_id: str) -> str | None:
    """The bundled spelling of ``hub_id`` (matched case-insensitively), or None."""
    found = _index().get(hub_id.lower())
    return found[0] if found else None


def catalog_path(hub_id: str) -> Path | None:
    """The bundled ``config.json`` of ``hub_id`` (case-insensitive exact match), or None."""
    found = _index().get(hub_id.lower())
    return found[1] if found else None


def is_trimmed(hub_id: str) -> bool:
    """Whether the bundled file of ``hub_id`` lacks some hub keys (False when not bundled)."""
    found = _index().get(hub_id.lower())
    return bool(found and found[2])


def suggest(hub_id: str) -> list[str]:
    """Bundled ids close to ``hub_id`` (case-insensitive), best first.

    First ids extending it with ``-...`` (``google/gemma-3-1b`` -> ``google/gemma-3-1b-it``), then
    ids whose model name matches or extends it under another org (``gpt2`` ->
    ``openai-community/gpt2``), then look-alikes. ``hub_id`` itself is never suggested; at most
    :data:`MAX_SUGGESTIONS` ids are returned.
    """
    wanted = hub_id.lower()
    name = wanted.rsplit("/", 1)[-1]
    ids = catalog_ids()
    by_lower = {i.lower(): i for i in ids}
    picks = [i for i in ids if i.lower().startswith(wanted + "-")]
    for i in ids:
        other = i.lower().rsplit("/", 1)[-1]
        if other == name or other.startswith(name + "-"):
            picks.append(i)
    close = difflib.get_close_matches(wanted, list(by_lower), n=MAX_SUGGESTIONS, cutoff=0.75)
    picks += [by_lower[c] for c in close]
    out: list[str] = []
    for pick in picks:
        if pick.lower() != wanted and pick not in out:
            out.append(pick)
    return out[:MAX_SUGGESTIONS]


def catalog_entries() -> list[CatalogEntry]:
    """(id, model_type, architectures[0], path) of every bundled config, in :func:`catalog_ids` order."""
    entries = []
    for hub_id in catalog_ids():
        path = catalog_path(hub_id)
        assert path is not None
        raw = json.loads(path.read_text(encoding="utf-8"))
        archs = raw.get("architectures") or [None]
        entries.append(CatalogEntry(hub_id, raw.get("model_type"), archs[0], path))
    return entries
