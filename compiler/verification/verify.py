"""Verification: run a generated directory's parity test and record the numbers.

The measurement code lives in the generated test_parity.py (so a user's CI can run it
without llmgen); this module imports it, runs it and writes parity.json beside it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from ..basics.atomic import write_file
from ..basics.errors import LlmgenError, SourceError


def _import(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"llmgen_parity_{abs(hash(str(path.resolve())))}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def verify(directory: Path) -> dict[str, Any]:
    """Measure parity for one generated model directory; writes and returns parity.json's data."""
    test_file = directory / "test_parity.py"
    if not test_file.is_file():
        raise SourceError(f"{directory}: no test_parity.py (not a generated model directory)")
    if importlib.util.find_spec("transformers") is None:
        raise LlmgenError("verify needs transformers: pip install 'llmgen[verify]'")
    try:
        result = _import(test_file).measure()
    except Exception as exc:  # a crash is a failed verification, reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LlmgenError(f"{directory}: verification crashed: {type(exc).__name__}: {first:.300}") from None
    result["passed"] = result["max_abs_diff"] <= result["tolerance"]
    if "expert_hits" in result:  # MoE: the input must also have reached every expert of every layer
        result["passed"] = result["passed"] and all(min(layer) > 0 for layer in result["expert_hits"])
    write_file(directory / "parity.json", (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    return result


def summary(name: str, result: dict[str, Any]) -> str:
    verdict = "ok" if result["passed"] else "FAILED"
    return (
        f"{name}: max|dlogit| = {result['max_abs_diff']:.3g} (tolerance {result['tolerance']:g}, "
        f"logits up to {result['max_abs_logit']:.3g}, {result['dtype']}, batch {result['batch']} x "
        f"{result['seq_len']} tokens, transformers {result['transformers']}) {verdict}"
    )
