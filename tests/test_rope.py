"""RoPE tables of the generated files against transformers' own, at full size and at
positions far beyond what a tiny parity test reaches (where Llama 3 scaling matters)."""

from __future__ import annotations

import pytest
import torch
from conftest import GENERATED, catalog_config, import_path

transformers = pytest.importorskip("transformers")
from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding  # noqa: E402

POSITIONS = torch.tensor([[0, 1, 511, 512, 8191, 8192, 32767, 100_000, 131_071]])


def generated_tables(module) -> dict[str, torch.Tensor]:
    """The inverse frequencies model.py computes for each of its tables, from its Config."""
    c = module.Config()
    if hasattr(c, "rope_factor") and hasattr(c, "rope_low_freq_factor"):
        base = module.rope_inv_freq(c.rope_theta, c.head_dim)
        tables = {"full_attention": module.llama3_inv_freq(
            base, c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor, c.rope_original_context)}
    else:
        tables = {"full_attention": module.rope_inv_freq(c.rope_theta, c.head_dim)}
    if hasattr(c, "local_rope_theta"):
        tables["sliding_attention"] = module.rope_inv_freq(c.local_rope_theta, c.head_dim)
    return tables


def reference_tables(hub_id: str) -> dict[str, torch.nn.Module]:
    config = transformers.AutoConfig.for_model(**catalog_config(hub_id))
    if config.model_type == "gemma3_text":
        return {t: (Gemma3RotaryEmbedding(config), t) for t in ("full_attention", "sliding_attention")}
    cls = Qwen3RotaryEmbedding if config.model_type == "qwen3" else LlamaRotaryEmbedding
    return {"full_attention": (cls(config), None)}


CASES = {
    "gemma-3-1b-it": "google/gemma-3-1b-it",
    "Llama-3.2-1B": "meta-llama/Llama-3.2-1B",
    "Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "Qwen3-0.6B": "Qwen/Qwen3-0.6B",
    "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rope_tables_match_transformers(name):
    module = import_path(GENERATED / name / "model.py", f"rope_check_{name.replace('-', '_').replace('.', '_')}")
    ours = generated_tables(module)
    refs = reference_tables(CASES[name])
    assert set(ours) == set(refs)
    x = torch.zeros(1, dtype=torch.float32)
    for layer_type, (rotary, arg) in refs.items():
        ref_freq = getattr(rotary, f"{arg}_inv_freq") if arg else rotary.inv_freq
        torch.testing.assert_close(ours[layer_type], ref_freq, rtol=0, atol=0)
        ref_cos, ref_sin = rotary(x, POSITIONS, arg) if arg else rotary(x, POSITIONS)
        cos, sin = module.rope_cos_sin(ours[layer_type], POSITIONS, torch.float32)
        torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-6)
        torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-6)


def test_llama3_scaling_really_changes_low_frequencies():
    module = import_path(GENERATED / "Llama-3.1-8B" / "model.py", "rope_check_llama3_effect")
    c = module.Config()
    base = module.rope_inv_freq(c.rope_theta, c.head_dim)
    scaled = module.llama3_inv_freq(base, c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor,
                                    c.rope_original_context)
    assert torch.equal(scaled[:8], base[:8])  # fast rotations untouched
    torch.testing.assert_close(scaled[-1], base[-1] / c.rope_factor)  # slowest divided by factor
