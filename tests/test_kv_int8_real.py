"""The int8 KV cache on real weights (SmolLM2-135M-Instruct): memory against a bf16 cache, and
how often its greedy choice agrees with the float cache over generated tokens (64 in CI; set
LLMGEN_INT8_TOKENS=256 for the full measurement reported in the issue)."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import GENERATED, import_path
from real_checkpoint import smollm2_checkpoint  # noqa: F401  (fixture)

NEW_TOKENS = int(os.environ.get("LLMGEN_INT8_TOKENS", "64"))
PROMPT = "The history of the printing press begins"


@pytest.fixture(scope="module")
def model(smollm2_checkpoint):  # noqa: F811
    module = import_path(GENERATED / "SmolLM2-135M-Instruct" / "model.py", "kv_int8_smollm2")
    return module.load_checkpoint(smollm2_checkpoint, dtype=torch.float32)


def prompt_ids(checkpoint) -> torch.Tensor:
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    return torch.tensor([tokenizer.encode(PROMPT).ids])


@torch.inference_mode()
def greedy_choices(model, ids: torch.Tensor, forced: torch.Tensor | None, int8: bool) -> torch.Tensor:
    """Greedy tokens over NEW_TOKENS steps with the cache; with `forced`, each step is fed the
    forced token instead of its own choice (teacher forcing), so choices compare position by position."""
    model.enable_cache(1, ids.shape[1] + NEW_TOKENS, int8=int8)
    logits = model(ids)[:, -1]
    choices = []
    for step in range(NEW_TOKENS):
        choice = logits.argmax(-1)
        choices.append(choice)
        feed = choice if forced is None else forced[:, step]
        logits = model(feed[:, None])[:, -1]
    model.disable_cache()
    return torch.stack(choices, 1)


def test_int8_cache_agrees_with_the_float_cache_on_smollm2(model, smollm2_checkpoint):  # noqa: F811
    ids = prompt_ids(smollm2_checkpoint)
    reference = greedy_choices(model, ids, None, int8=False)
    quantized = greedy_choices(model, ids, reference, int8=True)
    agreement = (quantized == reference).float().mean().item()
    print(f"int8 KV cache: top-1 agreement {agreement:.4f} over {NEW_TOKENS} tokens")
    assert agreement >= 0.95
    bf16 = model.to(torch.bfloat16).enable_cache(1, 4096).nbytes()
    int8 = model.enable_cache(1, 4096, int8=True).nbytes()
    model.disable_cache()
    model.float()
    head_dim = model.config.head_dim
    print(f"int8 / bf16 cache bytes: {int8 / bf16:.4f}")
    assert int8 / bf16 == pytest.approx((head_dim + 2) / (2 * head_dim))
