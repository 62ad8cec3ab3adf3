"""Importing a generated model directory by path: runtime.py, model.py and weights.py as one module.

The files import one another by plain name (weights.py: ``from model import CausalLM``), as a
user's script does with the directory on sys.path. Tools and tests load many generated models
into one process, so each directory's files get module names of their own, the plain names
pointing at them only while they are being imported.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

SIBLINGS = ("runtime", "model", "weights")  # in import order: each imports only the ones before it


def import_generated(directory: Path, tag: str | None = None, model: Path | None = None) -> types.ModuleType:
    """A module holding every name of the directory's runtime.py, model.py and weights.py (a file
    that is absent is skipped; ``model``: another file in model.py's place, e.g. an edited copy);
    raises what importing them raises, with the file's name in the exception's ``llmgen_file``."""
    directory = Path(directory)
    tag = tag or f"llmgen_generated_{abs(hash(str(directory.resolve())))}"
    merged = types.ModuleType(tag, f"the generated files of {directory}")
    saved = {name: sys.modules.get(name) for name in SIBLINGS}
    try:
        for name in SIBLINGS:
            path = Path(model) if name == "model" and model is not None else directory / f"{name}.py"
            if not path.is_file():
                continue
            spec = importlib.util.spec_from_file_location(f"{tag}_{name}", path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = sys.modules[name] = module  # dataclasses look their module up
            try:
                spec.loader.exec_module(module)
            except BaseException as err:
                sys.modules.pop(spec.name, None)
                err.llmgen_file = path  # type: ignore[attr-defined]
                raise
            merged.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
            if name == "model":
                merged.__file__ = str(path)
            setattr(merged, f"{name}_module", module)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    sys.modules[tag] = merged
    return merged
