"""Faster decoding steps (compiler/runtime/fast_decode.py, compiler/runtime/native.py), the speed-up `llmgen
generate` and the benchmark apply to a loaded generated model: few-row products equal
nn.Linear's up to float rounding, prefill keeps torch's own product bit for bit, every switch
turns back off, and the native kernel computes correct dot products for every shape."""

from __future__ import annotations

import pytest
import torch
from conftest import random_replica

from llmgen.compiler.runtime import native
from llmgen.compiler.runtime.fast_decode import MAX_ROWS, choose, greedy_next, row_block_linear, use_fast_decode

TOLERANCE = 5e-6  # max |logit difference| / max |logit|, float32
MODELS = ["SmolLM2-135M-Instruct", "Qwen2-0.5B-Instruct", "Mixtral-8x7B-v0.1", "phi-2"]  # plain, q/k/v bias, experts, biases
needs_native = pytest.mark.skipif(native.missing("float32") is not None, reason=f"native kernel: {native.missing('float32')}")
needs_native_bf16 = pytest.mark.skipif(native.missing("bfloat16") is not None,
                                       reason=f"native bfloat16 kernel: {native.missing('bfloat16')}")
# every instruction-set level this CPU runs: tests/test_native_kernels.py


def replica(name: str, dtype: torch.dtype = torch.float32):
    _, config, model = random_replica(name, "llmgen_fast_decode")
    return model.to(dtype), config


def decode(model, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    model.enable_cache(ids.shape[0], ids.shape[1])
    with torch.no_grad():
        steps = [model(ids[:, :prompt])] + [model(ids[:, i : i + 1]) for i in range(prompt, ids.shape[1])]
    model.disable_cache()
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("kernel", ["row_blocks", pytest.param("native", marks=needs_native)])
@pytest.mark.parametrize("name", MODELS)
def test_kernel_decodes_like_nn_linear(name: str, kernel: str) -> None:
    model, config = replica(name)
    ids = torch.randint(0, config.vocab_size, (2, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(ids)
    plain = decode(model, ids, 8)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    used, count, why = use_fast_decode(model, kernel, threads=2)
    assert (used, count, why) == (kernel, linears + hasattr(model, "head_product"), None)  # a tied head too
    with torch.no_grad():
        again = model(ids)
    if name.startswith("Mixtral"):  # an expert can get <= MAX_ROWS of the 28 tokens: the kernel there
        assert (again - whole).abs().max().item() <= TOLERANCE * whole.abs().max().item()
    else:
        assert torch.equal(again, whole)  # 28 rows > MAX_ROWS: torch's own product, bit for bit
    fast = decode(model, ids, 8)  # batch 2: two rows per decoding step
    diff, scale = (fast - plain).abs().max().item(), plain.abs().max().item()
    assert 0 < diff <= TOLERANCE * scale, (diff, scale)  # a different kernel, the same products
    assert use_fast_decode(model, "off")[:2] == ("off", 0)
    assert torch.equal(decode(model, ids, 8), plain)  # switched off: nn.Linear again


def test_row_block_linear_with_bias_and_batch() -> None:
    generator = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(12, 5, generator=generator), torch.randn(12, generator=generator)
    for rows in range(1, MAX_ROWS + 1):
        x = torch.randn(rows, 1, 5, generator=generator)
        expected = torch.nn.functional.linear(x, weight, bias)
        for blocks in (2, 3, 4):
            assert torch.allclose(row_block_linear(x, weight, bias, blocks), expected, rtol=1e-6, atol=1e-6)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_native_bf16)])
def test_native_kernel_shapes(dtype: torch.dtype) -> None:
    """Odd widths (the vector loop's tail), row counts that do not fill a thread's share,
    1..MAX_ROWS input rows, with and without a bias, a non-contiguous input: each result is
    within the dtype's rounding of the float64 product, like torch's own (the CPU's level)."""
    gemv = native.product(str(dtype).removeprefix("torch."))
    generator = torch.Generator().manual_seed(3)
    for out_features, in_features in ((1, 1), (7, 31), (17, 33), (33, 576), (200, 1000), (1536, 64)):
        weight = torch.randn(out_features, in_features, generator=generator).to(dtype)
        bias = torch.randn(out_features, generator=generator).to(dtype)
        for rows in range(1, MAX_ROWS + 1):
            x = torch.randn(in_features, rows, generator=generator).to(dtype).t()  # non-contiguous
            for b in (None, bias):
                exact = x.double() @ weight.double().t() + (0 if b is None else b.double())
                ours = gemv(x, weight, b)
                theirs = torch.nn.functional.linear(x, weight, b)
                assert ours.dtype == dtype and ours.shape == theirs.shape
                ulp = torch.finfo(dtype).eps * exact.abs().clamp(min=1) * (2 if dtype == torch.float32 else 1)
                own_error = (theirs.double() - exact).abs()
                assert ((ours.double() - exact).abs() <= torch.maximum(own_error, ulp) + in_features * 1e-7).all()


@needs_native_bf16
def test_native_bfloat16_decoding() -> None:  # on every CPU: AVX2 and portable too, not only AVX512_BF16
    """bfloat16 model: the native kernel is chosen and its cached decoding stays within bfloat16
    rounding of nn.Linear's (logits of a random replica, relative to their scale)."""
    model, config = replica(MODELS[1], torch.bfloat16)  # Qwen2: q/k/v biases
    ids = torch.randint(0, config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(4))
    plain = decode(model, ids, 6).float()
    assert use_fast_decode(model)[:2] == ("native", sum(isinstance(m, torch.nn.Linear) for m in model.modules()) + 1)
    fast = decode(model, ids, 6).float()
    # (0 is possible: at this replica's widths torch's bfloat16 product sums in float32 too)
    assert (fast - plain).abs().max().item() <= 0.05 * plain.abs().max().item()


def test_choice_and_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMGEN_NATIVE", "0")
    assert choose("auto", torch.float32, 2) == ("row_blocks", "native kernel unavailable: LLMGEN_NATIVE=0")
    assert choose("auto", torch.bfloat16, 2) == ("off", "native kernel unavailable: LLMGEN_NATIVE=0")
    assert choose("row_blocks", torch.float32, 1) == ("off", "row blocks need float32 and more than one thread")
    assert choose("off", torch.float32, 2) == ("off", None)
    model, _ = replica(MODELS[0], torch.bfloat16)
    assert use_fast_decode(model, "auto", threads=2)[:2] == ("off", 0)
    monkeypatch.delenv("LLMGEN_NATIVE")
    assert native.missing("float16") == "no kernel for float16"
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert native.missing("bfloat16") == "no C++ compiler (c++ or $CXX) to build it"


def test_weights_move_to_one_huge_page_area_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """huge_page_weights (run by the native kernel) copies every parameter into one anonymous
    area advised for huge pages, at a huge-page boundary: the same values and outputs bit for bit; LLMGEN_HUGE_PAGES=0 leaves the weights where they are."""
    import mmap

    from llmgen.compiler.runtime.fast_decode import huge_page_weights

    model, config = replica("Qwen2-0.5B-Instruct")  # biases too
    ids = torch.randint(0, config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(3))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        plain = model(ids)
    monkeypatch.setenv("LLMGEN_HUGE_PAGES", "0")
    pointers = [p.data_ptr() for p in model.parameters()]
    assert huge_page_weights(model) == 0 and [p.data_ptr() for p in model.parameters()] == pointers
    monkeypatch.delenv("LLMGEN_HUGE_PAGES")
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        pytest.skip("no MADV_HUGEPAGE on this platform")
    size = huge_page_weights(model)
    params = list(model.parameters())
    assert size >= sum(p.nbytes for p in params)
    first = min(p.data_ptr() for p in params)
    assert first % (2 << 20) == 0 and all(first <= p.data_ptr() < first + size for p in params)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    with torch.no_grad():
        assert torch.equal(model(ids), plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_next_is_the_argmax_of_the_last_position(dtype: torch.dtype) -> None:
    """greedy_next (what `llmgen generate` and the benchmark pick): the index of the largest logit
    of each row's last position, the first one where two tie (bfloat16 widened to float32 keeps
    every value); torch's thread count as it was."""
    logits = torch.randn(3, 4, 49152, generator=torch.Generator().manual_seed(2)).to(dtype)
    logits[1, -1, 7] = logits[1, -1, 30000] = logits[1, -1].max() + 1  # a tie: the first index
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        token = greedy_next(logits)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert token.shape == (3, 1) and torch.equal(token, logits[:, -1].argmax(-1, keepdim=True))
    assert token[1, 0] == 7

