"""Every RoPE type through the whole pipeline: a Llama config with that type is compiled,
model.py imported and compared with transformers by the generated test_parity.py's own
``measure()``.

Tiny replicas run short sequences, so the replicas here have small contexts
(``max_position_embeddings`` / ``original_max_position_embeddings`` of 8): the dynamic and
longrope tables then switch inside the test sequence, and the YaRN / Llama 3 ramps sit in
the middle of the frequencies. Planted bugs show the measurement sees each type's switch.
"""

from __future__ import annotations

import copy
import json

import pytest
from conftest import catalog_config, import_path

from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.write import write_outputs

pytest.importorskip("transformers")
TOLERANCE = 1e-5


def llama(head_dim: int | None = None, **keys) -> dict:
    raw = catalog_config("meta-llama/Llama-3.2-1B")
    raw.pop("rope_scaling")
    raw.update({"rope_theta": 10000.0, **keys})
    if head_dim:
        raw["head_dim"] = head_dim
    return raw


def factors(n: int, start: float, step: float) -> list[float]:
    return [start + i * step for i in range(n)]


def gemma3_two_tables(global_params: dict) -> dict:
    """Gemma 3 with v5 per-layer-type rope_parameters: a scaled global table, a plain local one."""
    raw = catalog_config("google/gemma-3-1b-it")
    for key in ("rope_theta", "rope_local_base_freq", "rope_scaling"):
        raw.pop(key)
    raw.update(max_position_embeddings=32, sliding_window=16)
    raw["rope_parameters"] = {"full_attention": {"rope_theta": 1000000.0, **global_params},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
    return raw


# name: (config, sequence lengths to measure)
VARIANTS = {
    "default": (llama(), (16,)),
    "linear": (llama(rope_scaling={"rope_type": "linear", "factor": 4.0}), (16,)),
    "dynamic-long-context": (llama(rope_scaling={"rope_type": "dynamic", "factor": 4.0}), (16,)),
    "dynamic-past-context": (llama(max_position_embeddings=8, rope_scaling={"rope_type": "dynamic", "factor": 4.0}),
                             (7, 8, 9, 16, 24)),
    "llama3-small-context": (llama(max_position_embeddings=64, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8}), (16,)),
    "yarn": (llama(max_position_embeddings=32, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}), (16,)),
    "yarn-untruncated-betas": (llama(max_position_embeddings=64, rope_theta=150000.0, rope_scaling={
        "rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8, "beta_fast": 8.0,
        "beta_slow": 0.5, "truncate": False}), (16,)),
    "yarn-mscale": (llama(rope_scaling={"rope_type": "yarn", "factor": 16.0, "mscale": 1.0, "mscale_all_dim": 0.5,
                                        "original_max_position_embeddings": 8192}), (16,)),
    "yarn-attention-factor-v5": (llama(rope_parameters={
        "rope_type": "yarn", "factor": 8.0, "attention_factor": 1.25, "original_max_position_embeddings": 16384,
        "rope_theta": 500000.0}), (16,)),
    "longrope-past-context": (llama(head_dim=32, max_position_embeddings=32, rope_scaling={
        "rope_type": "longrope", "short_factor": factors(16, 1.0, 0.05), "long_factor": factors(16, 1.5, 0.5),
        "original_max_position_embeddings": 8}), (7, 8, 9, 16)),
    "longrope-long-context": (llama(head_dim=32, rope_scaling={
        "rope_type": "longrope", "short_factor": factors(16, 1.0, 0.05), "long_factor": factors(16, 1.5, 0.5),
        "original_max_position_embeddings": 4096, "factor": 32.0}), (16,)),
    "gemma3-yarn-global-default-local": (gemma3_two_tables({
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}), (20,)),
    "gemma3-dynamic-global-default-local": (gemma3_two_tables({"rope_type": "dynamic", "factor": 2.0}), (20, 40)),
}


def compile_variant(name: str, tmp_path):
    raw = copy.deepcopy(VARIANTS[name][0])
    loaded = LoadedConfig(raw=raw, text=json.dumps(raw, indent=2), source_id=f"{name}/config.json",
                          revision="local", origin="file", checkpoint_dir=None, note=None)
    directory = write_outputs(tmp_path / name, compile_config(loaded, slug=name).files)
    return directory, import_path(directory / "test_parity.py", f"rope_parity_{name.replace('-', '_')}")


def measure_all(parity, lengths) -> list[dict]:
    return [parity.measure(seq_len=length) for length in lengths]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rope_type_parity(name, tmp_path):
    _, parity = compile_variant(name, tmp_path)
    results = measure_all(parity, VARIANTS[name][1])
    worst = max(r["max_abs_diff"] for r in results)
    print(f"{name}: max|dlogit| = {worst:.3g} over seq_len {[r['seq_len'] for r in results]}")
    for result in results:
        assert result["max_abs_logit"] > 0.1, result
        assert result["max_abs_diff"] <= TOLERANCE, result


def test_each_type_prints_only_its_own_code(tmp_path):
    """No code for features a model lacks: one type's function per model, no scaling when unused."""
    functions = {"dynamic": "def dynamic_inv_freq", "llama3": "def llama3_inv_freq", "yarn": "def yarn_inv_freq",
                 "longrope": "def longrope_inv_freq"}
    for name in ("default", "linear", "dynamic-past-context", "llama3-small-context", "yarn", "longrope-past-context"):
        source = (compile_variant(name, tmp_path)[0] / "model.py").read_text()
        kind = name.split("-")[0]
        for other, definition in functions.items():
            assert (definition in source) == (other == kind), (name, other)
        assert ("scaling: float" in source) == (kind in ("yarn", "longrope")), name
        assert "rotary_dim" not in source and "repeat_interleave(2" not in source, name


PLANTED = {
    # (variant, sequence length, anchor, replacement)
    "longrope never switches to the long factors": (
        "longrope-past-context", 16, "long_factor if seq_len > context else short_factor", "short_factor"),
    "longrope switches one position late": (
        "longrope-past-context", 9, "long_factor if seq_len > context else short_factor",
        "long_factor if seq_len > context + 1 else short_factor"),
    "dynamic NTK never grows theta": ("dynamic-past-context", 16, "if seq_len <= context:", "if True:"),
    "yarn without the attention factor": ("yarn", 16, "(angles.cos() * scaling)", "angles.cos()"),
    "yarn ramp truncated when it should not be": ("yarn-untruncated-betas", 16, "if truncate:", "if not truncate:"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_rope_parity_catches_planted_bugs(bug, tmp_path):
    name, length, before, after = PLANTED[bug]
    directory, parity = compile_variant(name, tmp_path)
    model = directory / "model.py"
    source = model.read_text()
    assert source.count(before) == 1, f"planted-bug anchor vanished: {before!r}"
    model.write_text(source.replace(before, after))
    result = parity.measure(seq_len=length)
    assert result["max_abs_diff"] > 1e-3, result
