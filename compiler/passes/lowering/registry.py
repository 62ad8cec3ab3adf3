"""Families that register themselves: one declaration per model_type, next to its lowering.

A family module (``lowering/fam_*.py``) writes

    @family("seed_oss", title="Seed-OSS", replica=explicit_head_dim)
    def lower_seed_oss(r: ConfigReader, model_type: str) -> Architecture: ...

and nothing else changes: ``lowering/__init__.py`` installs every registered lowering and
replica adjust (``install``), ``render.py`` reads the titles (``titles``). ``pad_token_id`` is
the family's config-class default, which becomes the embedding's padding_idx when a config
names none. Modules are found by name (``fam_*``), so adding a family is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....schemas.arch import Architecture
from .reader import ConfigReader

Lowering = Callable[[ConfigReader, str], Architecture]
ReplicaAdjust = Callable[[dict[str, Any], Architecture], None]


@dataclass(frozen=True)
class Family:
    model_type: str
    lower: Lowering
    title: str
    replica: ReplicaAdjust | None = None
    pad_token_id: int | None = None


REGISTRY: dict[str, Family] = {}


def family(model_type: str, *, title: str, replica: ReplicaAdjust | None = None,
           pad_token_id: int | None = None) -> Callable[[Lowering], Lowering]:
    """Register the decorated lowering for ``model_type`` (stack the decorator for several types)."""

    def register(lower: Lowering) -> Lowering:
        if model_type in REGISTRY:
            raise ValueError(f"model_type {model_type!r} is registered twice")
        REGISTRY[model_type] = Family(model_type, lower, title, replica, pad_token_id)
        return lower

    return register


def discover() -> dict[str, Family]:
    """Import every ``fam_*`` module of this package (their decorators fill the registry)."""
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("fam_"):
            importlib.import_module(f"{__package__}.{info.name}")
    return REGISTRY


def install(families: dict[str, Lowering], replicas: dict[str, ReplicaAdjust]) -> None:
    """Add the registered families to the lowering's tables (a table entry already there wins no tie:
    a model_type defined both ways is an error)."""
    from .families import PAD_DEFAULTS

    for model_type, fam in discover().items():
        if model_type in families:
            raise ValueError(f"model_type {model_type!r} is both registered and in a family table")
        families[model_type] = fam.lower
        if fam.replica is not None:
            replicas[model_type] = fam.replica
        if fam.pad_token_id is not None:
            PAD_DEFAULTS[model_type] = fam.pad_token_id


def titles() -> dict[str, str]:
    """model_type -> the name generated files give the family."""
    return {model_type: fam.title for model_type, fam in discover().items()}


# --- replica adjusts many families share --------------------------------------------------------


def explicit_head_dim(tiny: dict[str, Any], arch: Architecture) -> None:
    """The family's config class has a head_dim default of its own: give the replica a small explicit one
    (different from hidden / heads)."""
    from .replica import HEAD_DIM  # replica imports the lowering package: import it late

    tiny["head_dim"] = HEAD_DIM


def derived_head_dim(tiny: dict[str, Any], arch: Architecture) -> None:
    """The family always uses hidden / heads: the replica carries no head_dim."""
    tiny.pop("head_dim", None)
