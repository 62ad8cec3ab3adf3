"""The long tail of self-registered families (compiler/passes/lowering/fam_*.py with @family): one table
of configs drives tiny-replica parity, window boundaries, full size on the meta device and cached
decoding; planted bugs check that each new mechanism is really exercised.

Configs: tests/fixtures/longtail/<name>.json, provenance in tests/fixtures/longtail/SOURCES.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import import_path, window_boundary_runs, write_py
from test_parity_variants import compile_and_verify

from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.lowering.registry import REGISTRY
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.lowering import FAMILIES, family_titles

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "longtail"


def fixture(name: str, **keys) -> dict:
    raw = json.loads((FIXTURES / f"{name}.json").read_text())
    raw.update(keys)
    return raw


def without(raw: dict, *keys: str) -> dict:
    return {k: v for k, v in raw.items() if k not in keys}


# name -> config. Windowed cases also run at window -1 / window / window +1 (WINDOWED).
CASES = {
    "ministral": fixture("ministral"),
    "ministral-mixed": fixture("ministral", layer_types=["sliding_attention", "full_attention"] * 16),
    "seed_oss": fixture("seed_oss"),
    "cwm": fixture("cwm"),
    "helium": fixture("helium"),
    "ernie4_5": fixture("ernie4_5"),
    "ernie4_5-bias": fixture("ernie4_5", use_bias=True),
    "glm": fixture("glm"),
    "glm4": fixture("glm4"),
    # v4 spelling: no rope_parameters, so the config class's partial factor of 0.5 applies
    "starcoder2": fixture("starcoder2"),
    "starcoder2-sliding-nobias": fixture("starcoder2", sliding_window=4096, use_bias=False),
    "gpt_bigcode": fixture("gpt_bigcode"),
    "gpt_bigcode-multi-head": fixture("gpt_bigcode", multi_query=False),
    "gptj": fixture("gptj"),
    "vaultgemma": fixture("vaultgemma"),
    "exaone4": fixture("exaone4"),
    "exaone4-pattern-key": without(fixture("exaone4"), "layer_types"),  # LLLG from sliding_window_pattern = 4
    # no window: every layer full, with RoPE (transformers needs layer_types then: its default divides by 0)
    "exaone4-no-window": fixture("exaone4", sliding_window=None, layer_types=["full_attention"] * 32),
    "arcee": fixture("arcee"),
    "jais2": fixture("jais2"),
    "hunyuan_v1_dense": fixture("hunyuan_v1_dense"),
    "hunyuan_v1_dense-plain-rope-bias": fixture("hunyuan_v1_dense", rope_scaling=None, attention_bias=True,
                                                tie_word_embeddings=False),
    "hyperclovax": fixture("hyperclovax"),
    "hyperclovax-mup-no-post-norm": fixture("hyperclovax", use_post_norm=False, embedding_multiplier=12.0,
                                            residual_multiplier=0.22, attention_multiplier=0.0078125,
                                            logits_scaling=0.25, attention_bias=True, mlp_bias=True),
    "hyperclovax-mup": fixture("hyperclovax", embedding_multiplier=12.0, residual_multiplier=0.22, logits_scaling=0.25),
    "nemotron": fixture("nemotron"),
    "persimmon": fixture("persimmon"),
    "persimmon-no-qk-norm": fixture("persimmon", qk_layernorm=False),
    "granite_swa": fixture("granite_swa"),
    # muP multipliers, and NoPE on the full-attention layers (theta 0)
    "granite_swa-mup-nope": fixture("granite_swa", embedding_multiplier=12.0, residual_multiplier=0.22,
                                    attention_multiplier=0.0078125, logits_scaling=4.0,
                                    layer_rope_theta=[0 if i % 4 == 0 else 10000.0 for i in range(24)]),
    "minicpm3": fixture("minicpm3"),
    "youtu": fixture("youtu"),
    "youtu-no-q-lora-rotate-half": fixture("youtu", q_lora_rank=None, rope_interleave=False),
    "solar_open": fixture("solar_open"),
    "solar_open-bias-scaled": fixture("solar_open", attention_bias=True, routed_scaling_factor=2.5, n_shared_experts=2),
    "flex_olmo": fixture("flex_olmo"),
    "flex_olmo-norm-topk": fixture("flex_olmo", norm_topk_prob=True),
    "glm4-v4-keys": {**without(fixture("glm4"), "rope_parameters"), "rope_theta": 10000.0},
}
WINDOWED = ["ministral", "cwm", "starcoder2-sliding-nobias", "vaultgemma", "exaone4", "granite_swa"]


def compiled(name: str, tmp_path) -> dict:
    return compile_and_verify(copy.deepcopy(CASES[name]), tmp_path, name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_parity(name, tmp_path):
    result = compiled(name, tmp_path)
    print(f"{name}: max|dlogit| = {result['max_abs_diff']:.3g} (logits up to {result['max_abs_logit']:.3g})")
    assert result["passed"], result
    assert result["max_abs_diff"] <= 1e-5 * max(1.0, result["max_abs_logit"]) and result["max_abs_logit"] > 0.1, result


@pytest.mark.parametrize("name", WINDOWED)
def test_window_boundaries(name, tmp_path):
    """window - 1, window, window + 1 and 2 x window tokens, through the generated test itself."""
    compiled(name, tmp_path)
    module = import_path(tmp_path / name / "test_parity.py", f"longtail_window_{name.replace('-', '_')}")
    runs = window_boundary_runs(module)
    assert [n for n, _ in runs] == [7, 8, 9, 16] and all(diff <= 1e-5 for _, diff in runs), runs


@pytest.mark.parametrize("name", sorted(CASES))
def test_full_size_layout_matches_transformers(name, tmp_path):
    """The fixture config at full size on the meta device: parameter count and every on-disk key."""
    import transformers
    from test_full_size import on_disk_layout

    from llmgen.compiler.passes.weight_map import parameter_count

    raw = CASES[name]
    text = json.dumps(raw)
    # the same source and slug as compile_and_verify: the same text, so black's result is reused in this process
    result = compile_config(LoadedConfig(raw=copy.deepcopy(raw), text=text, source_id=f"{name}/config.json",
                                         revision="local", origin="file", checkpoint_dir=None, note=None), slug=name)
    write_py(tmp_path, result.files)
    module = import_path(tmp_path / "model.py", f"longtail_full_{name.replace('-', '_')}")
    with torch.device("meta"):
        ours = module.CausalLM(module.Config())
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) == parameter_count(lower(copy.deepcopy(raw)))
    layout, keys = on_disk_layout(reference), module.checkpoint_keys(module.Config())
    params = {key: tuple(p.shape) for key, p in [*ours.named_buffers(), *ours.named_parameters()]}  # MoE bias buffers
    assert set(keys) == set(layout), sorted(set(keys) ^ set(layout))[:10]
    assert all(params[keys[k]] == shape for k, shape in layout.items())


def test_every_registered_family_has_a_case_and_a_title():
    from llmgen.compiler.insight.coverage import PROOF

    covered = {raw["model_type"] for raw in CASES.values()} | set(PROOF)  # some have a test file of their own
    assert set(REGISTRY) <= covered, sorted(set(REGISTRY) - covered)
    titles = family_titles()
    assert all(titles[model_type] == fam.title for model_type, fam in REGISTRY.items())
    assert set(FAMILIES) <= set(titles), "every family has its name (lowering/families.py TITLES or @family)"


def test_registered_family_reports_unknown_keys():
    """A key transformers' Seed-OSS class never reads is named in a note (and refused with --strict)."""
    from llmgen.compiler.basics.errors import ConfigError
    from llmgen.compiler.passes.lowering import lower_noted

    arch, notes = lower_noted(fixture("seed_oss", no_such_key=1))
    assert arch == lower(fixture("seed_oss")) and any("no_such_key" in note for note in notes)
    with pytest.raises(ConfigError, match="no_such_key"):
        lower_noted(fixture("seed_oss", no_such_key=1), strict=True)


# --- new mechanisms: a planted bug in the generated code must break parity; cached decoding must match ---
ROPE = "        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)\n"
NORM = "        q, k = self.query_layernorm(q), self.key_layernorm(k)  # per-head QK-norm, after RoPE\n"
PLANTED = {
    # relu2 (squared ReLU): the generated function with the square dropped
    "arcee": ("return torch.square(F.relu(x))", "return F.relu(x)"),
    # LayerNorm with an offset weight (Nemotron's LayerNorm1P): the offset dropped
    "nemotron": ("self.weight + 1.0, self.bias", "self.weight, self.bias"),
    # QK-norm after RoPE: the norms moved back before the rotation
    "hunyuan_v1_dense": (ROPE + NORM, NORM + ROPE),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_bug_is_caught(name, tmp_path):
    from llmgen.compiler.verification.verify import verify

    compiled(name, tmp_path)
    path = tmp_path / name / "model.py"
    text = path.read_text()
    right, wrong = PLANTED[name]
    assert text.count(right) == 1, right
    path.write_text(text.replace(right, wrong))
    result = verify(tmp_path / name)
    assert result["max_abs_diff"] > 1e-3, result


@pytest.mark.parametrize("name", ["arcee", "exaone4", "hunyuan_v1_dense", "nemotron", "granite_swa-mup-nope"])
def test_cached_decoding_equals_the_full_forward(name, tmp_path):
    from test_kv_cache import cached_and_full, compiled_module, tiny_model

    module, parity = compiled_module(copy.deepcopy(CASES[name]), tmp_path, f"longtail_{name.replace('-', '_')}")
    model = tiny_model(module, parity)
    for sizes in ([5, 1, 1, 9, 4],):  # a prefill, single tokens, a chunk across the window of 8
        cached, full = cached_and_full(model, sizes)
        assert (cached - full).abs().max().item() <= 1e-5
