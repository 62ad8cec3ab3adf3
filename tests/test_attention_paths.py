"""The two attention paths of a generated model agree: the written-out eager computation (the
default) and torch's fused scaled_dot_product_attention (CausalLM.fast_attention()), on the tiny
replica of every generated model that has both, for a whole sequence and for cached decoding.

The parity test beside each model.py checks the default path against transformers; this one
checks the fast path that `llmgen generate` and the benchmark use against it.
"""

from __future__ import annotations

import pytest
import torch
from conftest import GENERATED, generated_source, random_replica

TOLERANCE = 5e-6  # max |logit difference| / max |logit| in float32 (parity: 1e-5 on logits up to ~2)
BATCH, PROMPT, STEPS = 2, 12, 4

MODELS = sorted(d.name for d in GENERATED.iterdir() if (d / "model.py").is_file() and "def fast_attention" in generated_source(d))


def set_eager(model: torch.nn.Module, eager: bool) -> int:
    """Switch through the model's own method; returns how many attention layers now run that path."""
    model.fast_attention(not eager)
    return sum(getattr(module, "eager", None) is eager for module in model.modules())


def test_some_models_have_both_paths() -> None:
    assert len(MODELS) >= 10, MODELS
    assert "SmolLM2-135M-Instruct" in MODELS and "gemma-2-2b-it" not in MODELS  # soft-capped: eager only


@pytest.mark.parametrize("name", MODELS)
def test_fused_and_eager_attention_agree(name: str) -> None:
    _, config, model = random_replica(name, "llmgen_attention_paths")
    ids = torch.randint(0, config.vocab_size, (BATCH, PROMPT + STEPS), generator=torch.Generator().manual_seed(1))
    results = {}
    with torch.no_grad():
        for eager in (False, True):
            attention_layers = sum(type(m).__name__ == "Attention" for m in model.modules())  # hybrids: not every layer
            assert set_eager(model, eager) == attention_layers > 0
            whole = model(ids)
            model.enable_cache(BATCH, PROMPT + STEPS)
            steps = [model(ids[:, :PROMPT])]
            steps += [model(ids[:, i : i + 1]) for i in range(PROMPT, PROMPT + STEPS)]
            model.disable_cache()
            results[eager] = (whole, torch.cat(steps, dim=1))
    for fused, eager in zip(results[False], results[True]):
        assert torch.isfinite(fused).all()
        diff, scale = (fused - eager).abs().max().item(), eager.abs().max().item()
        assert diff <= TOLERANCE * scale, f"{name}: fused vs eager attention differ by {diff:.3g} (logits up to {scale:.3g})"
