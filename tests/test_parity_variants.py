"""Tiny-replica parity beyond the committed outputs: scaled RoPE, v5 keys, wrappers,
biases, soft-capping, legacy configs; and proof that the parity test catches planted bugs."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from conftest import window_boundary_runs, GENERATED, catalog_config, import_path

from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.verification.verify import verify
from llmgen.compiler.passes.write import write_outputs


def compile_and_verify(raw: dict, tmp_path, name: str) -> dict:
    text = json.dumps(raw, indent=2)
    loaded = LoadedConfig(raw=raw, text=text, source_id=f"{name}/config.json", revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    compiled = compile_config(loaded, slug=name)
    return verify(write_outputs(tmp_path / name, compiled.files))


def gemma3_v5() -> dict:
    raw = catalog_config("google/gemma-3-1b-it")
    for key in ("rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern"):
        raw.pop(key)
    raw["rope_parameters"] = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    }
    raw["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(26)]
    return raw


def gemma3_wrapper() -> dict:
    text = catalog_config("google/gemma-3-1b-it")
    text.pop("architectures")
    return {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], "text_config": text,
            "vision_config": {"model_type": "siglip_vision_model"}, "mm_tokens_per_image": 256,
            "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144}


def with_keys(hub_id: str, **keys) -> dict:
    raw = catalog_config(hub_id)
    raw.update(keys)
    return raw


VARIANTS = {
    "gemma3-linear-rope-v4": with_keys("google/gemma-3-1b-it", rope_scaling={"rope_type": "linear", "factor": 8.0}),
    "gemma3-v5-keys": gemma3_v5(),
    "gemma3-multimodal-wrapper": gemma3_wrapper(),
    "gemma3-final-softcap": with_keys("google/gemma-3-270m", final_logit_softcapping=30.0),
    "qwen3-qkv-bias-untied": with_keys("Qwen/Qwen3-0.6B", attention_bias=True, tie_word_embeddings=False),
    "llama-biases": with_keys("meta-llama/Llama-3.2-1B", attention_bias=True, mlp_bias=True),
    "llama-legacy-7b": catalog_config("huggyllama/llama-7b"),
    "mistral-sliding-window": with_keys("mistralai/Mistral-7B-Instruct-v0.3", sliding_window=4096),
    "qwen2-sliding-upper-layers": with_keys("Qwen/Qwen2-0.5B-Instruct", use_sliding_window=True,
                                            sliding_window=4096, max_window_layers=1),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_parity(name, tmp_path):
    result = verify_result = compile_and_verify(copy.deepcopy(VARIANTS[name]), tmp_path, name)
    assert verify_result["passed"], result
    assert result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 0.1


PLANTED = {
    "drop (1+w) offset": ("(1.0 + self.weight.float())", "self.weight.float()"),
    "local layers use the global theta": ("rope_inv_freq(c.local_rope_theta", "rope_inv_freq(c.rope_theta"),
    "window off by one": ("(j > i - window)", "(j >= i - window)"),
    "missing embedding scale": ("x = x * torch.tensor(c.embed_scale, dtype=x.dtype)", "pass"),
    "no QK-norm": ("q, k = self.q_norm(q), self.k_norm(k)", "pass"),
    "swap sandwich norms": ("self.post_attention_layernorm(\n", "self.post_feedforward_layernorm(\n"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_parity_catches_planted_bugs(bug, tmp_path):
    target = tmp_path / "gemma"
    shutil.copytree(GENERATED / "gemma-3-1b-it", target)
    model = target / "model.py"
    before, after = PLANTED[bug]
    source = model.read_text()
    assert source.count(before) >= 1, f"planted-bug anchor vanished: {before!r}"
    model.write_text(source.replace(before, after, 1))
    result = verify(target)
    assert not result["passed"] and result["max_abs_diff"] > 1e-3, result


@pytest.mark.parametrize("name", ["mistral-sliding-window", "gemma3-v5-keys", "qwen2-sliding-upper-layers"])
def test_window_boundaries(name, tmp_path):
    """window - 1, window, window + 1 and 2 x window tokens, through the generated test itself."""
    compile_and_verify(copy.deepcopy(VARIANTS[name]), tmp_path, name)
    module = import_path(tmp_path / name / "test_parity.py", f"window_test_{name.replace('-', '_')}")
    assert module.WINDOW == 8
    assert [n for n, _ in window_boundary_runs(module)] == [7, 8, 9, 16]
