"""Fuzzing the compiler with mutated real configs (hypothesis).

Every bundled catalog config is mutated (keys dropped, values replaced by other values or
other types, keys added, nested rope / text_config objects edited) and written to a file.
Each case must end one of two ways:

* it compiles: model.py imports, and a forward pass on its tiny replica (the MODEL_CONFIG
  of the test_parity.py generated beside it) gives finite logits of the right shape; or
* it fails with an ``LlmgenError`` whose message is one line (the CLI prints it as
  ``llmgen: error: ...`` and exits 2).

Anything else (a traceback, a pydantic ValidationError, a hang) is a crash.

CI runs ``FUZZ_EXAMPLES`` cases (default 200, derandomized so CI is reproducible). The long
run takes the count and a fresh random seed from the environment:

    LLMGEN_FUZZ_EXAMPLES=10000 python3 -m pytest tests/test_fuzz.py -p no:cacheprovider -q

(``LLMGEN_FUZZ_SEED`` fixes the seed of a long run; split a long run over processes by giving
each a different seed.)
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CATALOG, GENERATED
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from llmgen.compiler.runtime.generated_files import import_generated
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.load import load_config
from llmgen.compiler.passes.pipeline import compile_config

CI_EXAMPLES = 200  # the suite's share; a long run sets LLMGEN_FUZZ_EXAMPLES (above)
EXAMPLES = int(os.environ.get("LLMGEN_FUZZ_EXAMPLES", CI_EXAMPLES))
LONG_RUN = EXAMPLES != CI_EXAMPLES or "LLMGEN_FUZZ_SEED" in os.environ

BASES = {p.name: json.loads(p.read_text()) for p in sorted(CATALOG.glob("*.json"))}
# A multimodal wrapper (none is bundled): Gemma 3 1B's decoder as the text_config of a "gemma3".
_TEXT = {k: v for k, v in BASES["google__gemma-3-1b-it.json"].items() if k not in ("architectures", "model_type")}
BASES["wrapper:gemma3"] = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                           "text_config": _TEXT, "vision_config": {"model_type": "siglip_vision_model"},
                           "mm_tokens_per_image": 256, "image_token_index": 262144}
# Bases that compile today: those with a committed generated/ directory (plus the wrapper).
SUPPORTED = sorted(n for n in BASES if (GENERATED / n.split("__")[-1].removesuffix(".json")).is_dir()
                   or n.startswith("wrapper:"))
OTHERS = sorted(set(BASES) - set(SUPPORTED))

HOSTILE_STRINGS = [
    "", " ", "x", "llama", "gemma3_text", "silu", "gelu", "default", "linear", "llama3", "yarn",
    "full_attention", "sliding_attention", "float32", "bfloat16",
    "'; import os; os.system('echo pwned') #", '"""', "'''", "\\", "a\nb", "\r\n", "\u2028", "\x00",
    "__import__('os').system('id')", "{{ 7*7 }}", "{% raw %}", "{# c #}", "\\u0041", "\ud800",
    "ｌｌａｍａ", "../../etc/passwd", "C:\\x", "model.layers.0", "rope_scaling", "$(id)", "\x1b[31m",
]
COUNTS = [0, 1, 2, 3, 4, 7, 8, 16, 64, 100, 4096, -1, -64, 2**31, 2**40, 2**40 + 1, 10**30]
NUMBERS = [0.0, -0.0, 1e-12, 1e-6, 0.5, 1.0, 8.0, 1e4, 1e308, -1.0, math.nan, math.inf, -math.inf]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(COUNTS),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.sampled_from(NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(HOSTILE_STRINGS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def nearby(value: Any) -> st.SearchStrategy:
    """Values of the same kind as ``value``, close to it: these keep more cases compiling."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.sampled_from([value * 2, value // 2, value + 1, value - 1, 0, -value, 1, value * 7])
    if isinstance(value, float):
        return st.sampled_from([value * 2, value / 2, 0.0, -value, value + 1, math.nan])
    if isinstance(value, str):
        return st.sampled_from(HOSTILE_STRINGS)
    if isinstance(value, list):
        return st.one_of(
            st.just(value[:-1]), st.just(value + value[-1:]), st.just(list(reversed(value))), st.just([])
        ) if value else st.just([None])
    return json_values


@st.composite
def mutate_object(draw: st.DrawFn, obj: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """One edit of ``obj`` (a JSON object): drop, replace, retype, add, or recurse."""
    keys = sorted(obj)
    kinds = ["add"] + (["drop", "near", "retype"] if keys else [])
    nested = [k for k in keys if isinstance(obj[k], dict) and obj[k]]
    if nested and depth < 2:
        kinds.append("nested")
    kind = draw(st.sampled_from(kinds))
    out = dict(obj)
    if kind == "add":
        out[draw(st.sampled_from(HOSTILE_STRINGS) | st.text(max_size=10) | st.sampled_from(keys or ["k"]))] = draw(json_values)
        return out
    key = draw(st.sampled_from(keys if kind != "nested" else nested))
    if kind == "drop":
        del out[key]
    elif kind == "near":
        out[key] = draw(nearby(obj[key]))
    elif kind == "retype":
        out[key] = draw(json_values)
    else:
        out[key] = draw(mutate_object(obj[key], depth + 1))
    return out


@st.composite
def mutated_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(SUPPORTED) if draw(st.integers(0, 9)) else st.sampled_from(OTHERS))
    raw = copy.deepcopy(BASES[name])
    for _ in range(draw(st.integers(1, 3))):
        raw = draw(mutate_object(raw))
    return name, raw


def import_source(source: bytes, filename: str, name: str):
    """Run generated source as module ``name``. The file name is fixed (not a temporary path), so
    a failure replays at the same location and hypothesis can shrink and print it."""
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module  # dataclasses look their module up
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


OUTCOMES: dict[str, int] = {"compiled": 0, "error": 0}


def compile_and_run(raw: dict[str, Any], workdir: Path) -> str:
    """Compile ``raw`` from a file; return "compiled" or "error"; anything else propagates."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    path.write_text(json.dumps(raw, indent=1))  # NaN / Infinity are written as JSON5-style tokens
    try:
        compiled = compile_config(load_config(str(path), prefer="path"), slug="fuzz")
    except LlmgenError as err:
        message = str(err)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        OUTCOMES["error"] += 1
        return "error"
    tag = f"_llmgen_fuzz_{id(compiled)}"
    for name in ("runtime.py", "model.py", "weights.py"):  # the model imports its siblings by plain name
        if name in compiled.files:
            (workdir / name).write_bytes(compiled.files[name])
    gen = import_generated(workdir, tag + "_model")
    parity = import_source(compiled.files["test_parity.py"], "<fuzz>/test_parity.py", tag + "_parity")
    config = gen.Config(**parity.MODEL_CONFIG)
    torch.manual_seed(0)
    model = gen.CausalLM(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # parameters may be left uninitialised (they are meant to be loaded)
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    ids = torch.randint(0, config.vocab_size, (2, 11))
    with torch.no_grad():
        logits = model(ids)
    assert logits.shape == (2, 11, config.vocab_size)
    assert torch.isfinite(logits).all()
    OUTCOMES["compiled"] += 1
    return "compiled"


def _fuzz_settings(test):
    test = settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not LONG_RUN,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )(test)
    if "LLMGEN_FUZZ_SEED" in os.environ:
        test = seed(int(os.environ["LLMGEN_FUZZ_SEED"]))(test)
    return test


@_fuzz_settings
@given(case=mutated_configs())
def test_mutated_catalog_configs_compile_and_run_or_fail_cleanly(case):
    _name, raw = case
    with tempfile.TemporaryDirectory(prefix="llmgen-fuzz-") as workdir:
        compile_and_run(raw, Path(workdir))


def test_fuzz_report():
    """Runs after the fuzz test: both outcomes occurred, so the fuzzing exercised both paths."""
    total = sum(OUTCOMES.values())
    if total == 0:
        pytest.skip("the fuzz test did not run in this session")
    print(f"\nfuzz: {total} cases, {OUTCOMES['compiled']} compiled and ran, {OUTCOMES['error']} clean errors")
    assert OUTCOMES["compiled"] > 0 and OUTCOMES["error"] > 0, OUTCOMES


@pytest.mark.parametrize("name", SUPPORTED)
def test_unmutated_supported_configs_compile_and_run(name, tmp_path):
    assert compile_and_run(copy.deepcopy(BASES[name]), tmp_path) == "compiled"


@pytest.mark.parametrize("name", OTHERS)
def test_other_catalog_configs_compile_and_run_or_fail_cleanly(name, tmp_path):
    assert compile_and_run(copy.deepcopy(BASES[name]), tmp_path) in ("compiled", "error")
