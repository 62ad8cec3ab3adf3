"""Row-block linear layers (compiler/fast_decode.py), the decoding speed-up `llmgen generate`
and the benchmark apply to a loaded generated model: few-row products equal nn.Linear's up to
float rounding, prefill keeps torch's own product bit for bit, and the switch turns back off."""

from __future__ import annotations

import pytest
import torch
from conftest import random_replica

from llmgen.compiler.fast_decode import MAX_ROWS, row_block_linear, use_row_blocks

TOLERANCE = 5e-6  # max |logit difference| / max |logit|, float32
MODELS = ["SmolLM2-135M-Instruct", "Qwen2-0.5B-Instruct", "Mixtral-8x7B-v0.1", "phi-2"]  # plain, q/k/v bias, experts, biases


def replica(name: str, dtype: torch.dtype = torch.float32):
    _, config, model = random_replica(name, "llmgen_fast_decode")
    return model.to(dtype), config


def decode(model, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    model.enable_cache(ids.shape[0], ids.shape[1])
    with torch.no_grad():
        steps = [model(ids[:, :prompt])] + [model(ids[:, i : i + 1]) for i in range(prompt, ids.shape[1])]
    model.disable_cache()
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("name", MODELS)
def test_row_blocks_decode_like_nn_linear(name: str) -> None:
    model, config = replica(name)
    ids = torch.randint(0, config.vocab_size, (1, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(ids)
    plain = decode(model, ids, 8)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert use_row_blocks(model, 2) == linears + hasattr(model, "head_product") > 0  # a tied head too
    with torch.no_grad():
        again = model(ids)
    if name.startswith("Mixtral"):  # an expert can get <= MAX_ROWS of the 14 tokens: row blocks there
        assert (again - whole).abs().max().item() <= TOLERANCE * whole.abs().max().item()
    else:
        assert torch.equal(again, whole)  # 14 rows > MAX_ROWS: torch's own product, bit for bit
    blocked = decode(model, ids, 8)
    diff, scale = (blocked - plain).abs().max().item(), plain.abs().max().item()
    assert 0 < diff <= TOLERANCE * scale, (diff, scale)  # a different kernel, the same products
    assert use_row_blocks(model, 1) == 0
    assert torch.equal(decode(model, ids, 8), plain)  # switched off: nn.Linear again


def test_row_block_linear_with_bias_and_batch() -> None:
    generator = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(12, 5, generator=generator), torch.randn(12, generator=generator)
    for rows in range(1, MAX_ROWS + 1):
        x = torch.randn(rows, 1, 5, generator=generator)
        expected = torch.nn.functional.linear(x, weight, bias)
        for blocks in (2, 3, 4):
            assert torch.allclose(row_block_linear(x, weight, bias, blocks), expected, rtol=1e-6, atol=1e-6)


def test_bfloat16_layers_keep_nn_linear() -> None:
    model, _ = replica(MODELS[0], torch.bfloat16)
    assert use_row_blocks(model, 2) == 0
