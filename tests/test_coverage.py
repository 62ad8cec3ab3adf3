"""The coverage table (issue 16 section 6): every decoder-only text model_type of transformers, compiles
(with the test proving parity) or not yet (the mechanism missing); `llmgen list --all`, the README's
table and the gallery's "not yet compiled" list come from the same data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llmgen.compiler.insight import coverage as coverage_mod
from llmgen.compiler.basics.cli import main
from llmgen.compiler.passes.lowering import FAMILIES, WRAPPERS
from llmgen.compiler.passes.lowering.keys_data import keys_data

REPO = Path(__file__).resolve().parent.parent


def test_list_all_prints_every_decoder_of_transformers(capsys):
    transformers = pytest.importorskip("transformers")
    from transformers.models.auto import modeling_auto

    assert main(["list", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    printed = {line.split()[0]: line.split()[1] for line in lines[1:-1]}
    causal = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    encoders = set(modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    assert {"llama", "qwen3", "gemma3_text", "mamba", "qwen3_next", "jamba"} <= set(printed)
    assert not encoders & set(printed) and "bart" not in printed and "whisper" not in printed
    assert set(printed) <= set(causal) | set(WRAPPERS)
    for model_type, status in printed.items():
        assert (status == "compiles") == (model_type in FAMILIES or model_type in WRAPPERS), model_type
    done = sum(status == "compiles" for status in printed.values())
    assert lines[-1] == (f"{done} of {len(printed)} decoder-only text model_types compile "
                         f"(from the installed transformers {transformers.__version__})")
    assert done >= 32 and len(printed) >= 150


def test_every_compiling_type_names_a_test_that_exists_and_covers_it():
    rows, _ = coverage_mod.coverage()
    for row in rows:
        if row.compiles:
            proof = REPO / row.detail
            assert proof.is_file(), row
            assert row.model_type in proof.read_text().lower(), row
        else:
            assert row.detail and len(row.detail.split()) <= 8, row  # a few words


def test_missing_mechanisms_are_named():
    status = {row.model_type: row.detail for row in coverage_mod.coverage()[0]}
    assert status["mamba"] == "state-space (Mamba) layers"
    assert status["olmo_hybrid"] == "linear-attention layers"
    assert status["deepseek_v4"] == "tests/test_deepseek_v4.py"  # compiles: its proving test
    assert status["deepseek_v32"] == status["glm_moe_dsa"] == "tests/test_dsa.py"  # compiles: its proving test


def test_snapshot_without_transformers(monkeypatch):
    """Without transformers the committed snapshot gives the same table."""
    live = coverage_mod.coverage()[0]
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    rows, origin = coverage_mod.coverage()
    assert origin == f"the transformers {keys_data()['transformers_version']} snapshot" and rows == live


def test_readme_table_is_the_generated_one():
    pytest.importorskip("transformers")  # the README names the installed version as the list's origin
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- coverage:start")
    block = readme[readme.index("\n", start) + 1: readme.index("<!-- coverage:end -->")]
    assert block == coverage_mod.coverage_markdown()
