"""The native decoding kernel at every instruction-set level this CPU runs (compiler/runtime/native.py,
compiler/runtime/kernels/): each level's products against a float64 product and nn.Linear on odd
shapes, LLMGEN_ISA forcing each lower level through a whole decoding run, a level above the
CPU's refused, and results that do not depend on how many threads share a product."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import random_replica

from llmgen.compiler.runtime import native
from llmgen.compiler.runtime.fast_decode import MAX_ROWS, choose, label, use_fast_decode

pytestmark = pytest.mark.skipif(native.missing("float32") is not None, reason=f"native kernel: {native.missing('float32')}")
DTYPES = [torch.float32, torch.bfloat16]
# widths around every vector step (8, 16, 32, 64 elements) and the model's; row counts that do
# not fill a chunk; a single element
SHAPES = [(1, 1), (3, 7), (5, 15), (9, 16), (7, 17), (4, 31), (6, 32), (17, 33), (2, 63), (3, 64), (5, 65),
          (33, 100), (200, 576), (1536, 64), (37, 1000)]


def name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def within_rounding(ours: torch.Tensor, theirs: torch.Tensor, exact: torch.Tensor, in_features: int) -> bool:
    """ours is as close to the float64 product as nn.Linear's result, or within the dtype's rounding."""
    ulp = torch.finfo(ours.dtype).eps * exact.abs().clamp(min=1) * (2 if ours.dtype == torch.float32 else 1)
    own_error = (theirs.double() - exact).abs()
    return bool(((ours.double() - exact).abs() <= torch.maximum(own_error, ulp) + in_features * 1e-7).all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_level_on_odd_shapes(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(3)
    for level in native.runnable_levels(name(dtype)):
        gemv = native.product(name(dtype), level)
        for out_features, in_features in SHAPES:
            weight = torch.randn(out_features, in_features, generator=generator).to(dtype)
            bias = torch.randn(out_features, generator=generator).to(dtype)
            for rows in range(1, MAX_ROWS + 1):
                x = torch.randn(in_features, rows, generator=generator).to(dtype).t()  # non-contiguous
                for b in (None, bias):
                    exact = x.double() @ weight.double().t() + (0 if b is None else b.double())
                    ours, theirs = gemv(x, weight, b), torch.nn.functional.linear(x, weight, b)
                    assert ours.dtype == dtype and ours.shape == theirs.shape
                    assert within_rounding(ours, theirs, exact, in_features), (level, out_features, in_features, rows)
            x3 = torch.randn(2, 1, in_features, generator=generator).to(dtype)  # (batch, step, in)
            assert torch.equal(gemv(x3, weight, bias), gemv(x3.reshape(2, in_features), weight, bias).unsqueeze(1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", native.LEVELS)
def test_forcing_a_level_decodes_like_nn_linear(dtype: torch.dtype, level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMGEN_ISA caps the level: the kernel runs it (the label says so) and a cached decoding
    run stays within float rounding of nn.Linear's."""
    if dtype == torch.float32 and level == "avx512_bf16":
        pytest.skip("float32 has no AVX512_BF16 kernel (it runs the AVX-512F one)")
    if level not in native.runnable_levels(name(dtype)):
        pytest.skip(f"{level}: this CPU lacks it (flags: {' '.join(native.vector_flags())})")
    monkeypatch.setenv("LLMGEN_ISA", level)
    _, config, model = random_replica("SmolLM2-135M-Instruct", "llmgen_native_levels")
    model = model.to(dtype)
    ids = torch.randint(0, config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(5))
    plain = decode(model, ids, 6).float()
    calls = []
    product = native.product

    def counted(dtype_name: str, at: str | None = None):
        gemv = product(dtype_name, at)
        return lambda *args: calls.append(1) or gemv(*args)

    monkeypatch.setattr(native, "product", counted)
    used, count, why = use_fast_decode(model, "native", threads=2)
    assert (used, why) == ("native", None) and count > 0
    assert native.level(name(dtype)) == level and label(used, dtype) == f"native ({level})"
    fast = decode(model, ids, 6).float()
    diff, scale = (fast - plain).abs().max().item(), plain.abs().max().item()
    assert len(calls) == 4 * count  # every linear layer and the head, at each of the 4 steps
    assert diff <= (5e-6 if dtype == torch.float32 else 0.05) * scale, (diff, scale)
    assert dtype == torch.bfloat16 or diff > 0  # float32: another summation order shows


def decode(model, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    model.enable_cache(ids.shape[0], ids.shape[1])
    with torch.no_grad():
        steps = [model(ids[:, :prompt])] + [model(ids[:, i : i + 1]) for i in range(prompt, ids.shape[1])]
    model.disable_cache()
    return torch.cat(steps, dim=1)


def test_a_level_above_the_cpu_is_refused_and_a_bad_cap_named(monkeypatch: pytest.MonkeyPatch) -> None:
    module = native.kernel("float32")
    top = module.cpu_level()
    x, w = torch.ones(1, 8), torch.ones(4, 8)
    assert torch.equal(module.gemv(x, w, None, 0), torch.full((1, 4), 8.0))
    if top + 1 < len(native.LEVELS):
        with pytest.raises(RuntimeError, match="not available on this CPU"):
            module.gemv(x, w, None, top + 1)
    monkeypatch.setenv("LLMGEN_ISA", "sse9")
    why = "native kernel unavailable: LLMGEN_ISA=sse9: not one of portable, avx2, avx512, avx512_bf16"
    assert choose("auto", torch.float32, 2) == ("row_blocks", why)
    monkeypatch.setenv("LLMGEN_ISA", "PORTABLE")
    assert native.level("bfloat16") == "portable"


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_do_not_change_a_result(dtype: torch.dtype) -> None:
    """Each output element is one row's dot product whichever thread computes it: one thread and
    two threads sharing every product (many chunks, claimed dynamically) give bit-identical
    results, call after call; so do products that the thread tuner (kernels/tuner.h) runs alone
    in some windows and with helpers in others, and it tries both ways."""
    module = native.kernel(name(dtype))
    gemv = native.product(name(dtype))
    generator = torch.Generator().manual_seed(6)
    before, default, tuning = torch.get_num_threads(), None, module.set_thread_tuning(False)
    try:
        for out_features, in_features in ((4099, 67), (1031, 1000)):
            weight = torch.randn(out_features, in_features, generator=generator).to(dtype)
            x = torch.randn(3, in_features, generator=generator).to(dtype)
            torch.set_num_threads(1)
            single = gemv(x, weight)
            torch.set_num_threads(2)
            default = module.set_bytes_per_thread(1024)  # every product on both threads, in small chunks
            for _ in range(20):
                assert torch.equal(gemv(x, weight), single)
            exact = x.double() @ weight.double().t()
            assert within_rounding(single, torch.nn.functional.linear(x, weight), exact, in_features)
            module.set_thread_tuning(True)
            windows = module.thread_tuning()
            for _ in range(4000):  # windows of 48 products; a long pause (preemption) restarts one
                assert torch.equal(gemv(x, weight), single)
                now = module.thread_tuning()
                if now[0] > windows[0] and now[1] > windows[1]:
                    break
            assert now[0] > windows[0] and now[1] > windows[1], (windows, now)
            module.set_thread_tuning(False)
    finally:
        module.set_thread_tuning(tuning)
        if default is not None:
            module.set_bytes_per_thread(default)
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_products_of_one_input_in_one_call(dtype: torch.dtype) -> None:
    """llmgen_native::gemv2 / gemv3 (a layer's gate and up, q, k and v in one run of the pool, the
    compiled step's grouping pass): each result the bits of its own gemv call, at every level, with
    and without biases, on one thread and with both threads sharing every product in small chunks."""
    module = native.kernel(name(dtype))
    gemv, gemv2, gemv3 = (getattr(torch.ops.llmgen_native, op) for op in ("gemv", "gemv2", "gemv3"))
    generator = torch.Generator().manual_seed(8)
    before, default = torch.get_num_threads(), module.set_bytes_per_thread(1 << 16)
    try:
        for level in native.runnable_levels(name(dtype)):
            at = native.LEVELS.index(level)
            for rows, in_features in (((576, 192, 192), 576), ((37, 5, 1000), 67), ((1, 3, 9), 1)):
                weights = [torch.randn(r, in_features, generator=generator).to(dtype) for r in rows]
                biases = [None, torch.randn(rows[1], generator=generator).to(dtype), None]
                x = torch.randn(3, in_features, generator=generator).to(dtype)
                alone = [gemv(x, w, b, at) for w, b in zip(weights, biases)]
                for threads, per_thread in ((1, 1 << 16), (2, 1)):
                    torch.set_num_threads(threads)
                    module.set_bytes_per_thread(per_thread)
                    three = gemv3(x, *weights, *biases, at)
                    two = gemv2(x, *weights[1:], *biases[1:], at)
                    assert all(torch.equal(a, b) for a, b in zip(three, alone)), (level, rows, threads)
                    assert all(torch.equal(a, b) for a, b in zip(two, alone[1:])), (level, rows, threads)
        with pytest.raises(RuntimeError, match="x and w of one dtype"):
            gemv2(x, weights[0], weights[1].double(), None, None, 0)
    finally:
        module.set_bytes_per_thread(default)
        torch.set_num_threads(before)


def test_decoding_steps_run_torch_on_one_thread_and_the_products_on_all() -> None:
    """With the native kernel, a decoding step runs torch's own operations on one thread (its
    products get torch's thread count, kernels/pool.h), prefill on all of torch's threads, and
    the count is restored after each call; "off" gives the model its own forward back."""
    _, config, model = random_replica("SmolLM2-135M-Instruct", "llmgen_native_levels")
    seen: list[int] = []
    model.model.norm.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert use_fast_decode(model, "native")[0] == "native" and "forward" in model.__dict__
        model.enable_cache(1, 8)
        with torch.no_grad():
            prefill = model(torch.arange(6).unsqueeze(0))
            step = model(torch.tensor([[6]]))
        model.disable_cache()
        assert seen == [2, 1] and torch.get_num_threads() == 2
        use_fast_decode(model, "off")
        assert "forward" not in model.__dict__
        model.enable_cache(1, 8)
        with torch.no_grad():
            assert torch.equal(model(torch.arange(6).unsqueeze(0)), prefill)
            assert (model(torch.tensor([[6]])) - step).abs().max() <= 5e-6 * step.abs().max()
        assert seen[2:] == [2, 2]
    finally:
        torch.set_num_threads(before)


def test_bfloat16_prefill_as_float32_products_is_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default a bfloat16 prefill keeps torch's own product bit for bit; with
    LLMGEN_BF16_PREFILL=float32 it runs float32 products (weights upcast a block at a time),
    each within a bfloat16 rounding of the float64 product; an unknown value is named."""
    from llmgen.compiler.runtime import fast_decode

    _, config, model = random_replica("Qwen2-0.5B-Instruct", "llmgen_native_levels")  # q/k/v biases
    model = model.to(torch.bfloat16)
    ids = torch.randint(0, config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        plain = model(ids)
        use_fast_decode(model, "native")
        assert torch.equal(model(ids), plain)
        monkeypatch.setenv("LLMGEN_BF16_PREFILL", "float32")
        calls, upcast_linear = [], fast_decode.upcast_linear
        monkeypatch.setattr(fast_decode, "upcast_linear", lambda *args: calls.append(1) or upcast_linear(*args))
        lookups, gemm = [], fast_decode._gemm
        monkeypatch.setattr(fast_decode, "_gemm", lambda: lookups.append(1) or gemm())
        use_fast_decode(model, "native")
        upcast = model(ids)
    assert len(calls) == sum(isinstance(m, torch.nn.Linear) for m in model.modules()) + 1  # and the tied head
    assert len(lookups) == 1  # the native product looked up once, not per product (~0.1 ms each)
    # (often 0 at these widths: torch's bfloat16 product sums in float32 too)
    assert (upcast.float() - plain.float()).abs().max() <= 0.05 * plain.float().abs().max()
    monkeypatch.setattr(fast_decode, "UPCAST_BLOCK", 64)  # many blocks of rows
    generator = torch.Generator().manual_seed(8)
    weight, bias = torch.randn(37, 30, generator=generator).bfloat16(), torch.randn(37, generator=generator).bfloat16()
    x = torch.randn(2, 6, 30, generator=generator).bfloat16()
    exact = x.double() @ weight.double().t() + bias.double()
    ours = upcast_linear(x, weight, bias, None)  # no native product: the widening fallback (no AVX2)
    assert ours.dtype == torch.bfloat16 and ours.shape == (2, 6, 37)
    wide = torch.empty(37, 30)
    native.kernel("bfloat16").widen(weight, wide)  # the native conversion it widens the blocks with
    assert torch.equal(wide, weight.float())
    assert within_rounding(ours, torch.nn.functional.linear(x, weight, bias), exact, 30)
    monkeypatch.setenv("LLMGEN_BF16_PREFILL", "bf17")
    with pytest.raises(ValueError, match="LLMGEN_BF16_PREFILL=bf17: not one of torch, float32"):
        use_fast_decode(model, "native")


# (rows of x, out, in): x rows around the inner kernel's 6, outputs around its panels of 16 and
# widths around its transposes of 8; the model's shapes; chunks of 1 to 4 panels
GEMM_SHAPES = [(1, 1, 1), (5, 15, 7), (6, 16, 8), (7, 17, 9), (12, 33, 100), (13, 64, 576), (128, 192, 576),
               (9, 1000, 63), (40, 130, 24)]


def test_bfloat16_prefill_product_on_odd_shapes() -> None:
    """kernels/gemm.h's product (bfloat16 prefill as float32 products): within a bfloat16 rounding of
    the float64 product, with and without bias, x non-contiguous or of three dimensions, and the
    same bits on one thread as on two (each output is one thread's)."""
    from llmgen.compiler.runtime import fast_decode

    if "avx2" not in native.runnable_levels("bfloat16"):
        pytest.skip("the product needs AVX2 and FMA")
    product, generator = native.kernel("bfloat16").prefill_bf16, torch.Generator().manual_seed(11)
    assert fast_decode._gemm() is not None  # the product bfloat16 prefill runs here
    before = torch.get_num_threads()
    try:
        for rows, out_features, in_features in GEMM_SHAPES:
            weight = torch.randn(out_features, in_features, generator=generator).bfloat16()
            bias = torch.randn(out_features, generator=generator).bfloat16()
            x = torch.randn(in_features, rows, generator=generator).bfloat16().t()  # non-contiguous
            for b in (None, bias):
                exact = x.double() @ weight.double().t() + (0 if b is None else b.double())
                torch.set_num_threads(1)
                alone = product(x, weight, b)
                torch.set_num_threads(2)
                shared = product(x, weight, b)
                assert alone.dtype == torch.bfloat16 and alone.shape == (rows, out_features)
                assert torch.equal(alone, shared), (rows, out_features, in_features)
                theirs = torch.nn.functional.linear(x, weight, b)
                assert within_rounding(alone, theirs, exact, in_features), (rows, out_features, in_features)
            x3 = x.reshape(1, rows, in_features)
            assert torch.equal(product(x3, weight, bias), product(x, weight, bias).unsqueeze(0))
        # the rounding itself, bit for bit: one-hot rows of x make each sum w[n, k] + bias[n], the
        # same float32 addition as torch's, rounded to bfloat16 as torch rounds it (ties to even,
        # infinities, NaN), in full panels of 16 columns and in the last partial one
        rows, out_features, in_features = 13, 37, 24
        weight = torch.randn(out_features, in_features, generator=generator).bfloat16()
        bias = (torch.randn(out_features, generator=generator) * 4).bfloat16()
        bias[[3, 20, 35]] = torch.tensor([float("inf"), float("nan"), float("-inf")]).bfloat16()
        x = torch.zeros(rows, in_features).bfloat16()
        x[torch.arange(rows), torch.arange(rows) * 5 % in_features] = 1
        expected = (weight.float()[:, torch.arange(rows) * 5 % in_features].t() + bias.float()).bfloat16()
        ours = product(x, weight, bias)
        assert torch.equal(ours.isnan(), expected.isnan()) and ours.isnan()[:, 20].all()  # (NaN's bits vary in torch)
        assert torch.equal(ours.nan_to_num(0).view(torch.int16), expected.nan_to_num(0).view(torch.int16))
    finally:
        torch.set_num_threads(before)


# (batch, heads, kv_heads, queries, keys, dim): grouped queries, odd key counts and widths, a
# group of more query heads than attend.h bundles (16 > kBundle)
ATTEND_SHAPES = [(1, 9, 3, 1, 144, 64), (2, 4, 2, 3, 17, 13), (1, 8, 8, 4, 50, 128), (2, 6, 1, 1, 5, 7), (1, 2, 1, 2, 1, 9),
                 (2, 16, 1, 1, 40, 16)]


def test_attend_equals_attention_in_float64() -> None:
    """llmgen_native::attend (kernels/attend.h), the compiled step's attention for a few queries:
    against torch's attention in float64, with a causal mask over a partly filled cache (the
    empty slots masked) as (queries, keys) and as (batch, 1, queries, keys), and without a mask;
    keys and values read from a slice of a larger cache (non-contiguous); on one thread and split
    between two, the same bits."""
    module = native.kernel()
    attend = torch.ops.llmgen_native.attend
    generator = torch.Generator().manual_seed(5)
    for batch, heads, kv_heads, queries, keys, dim in ATTEND_SHAPES:
        q = torch.randn(batch, heads, queries, dim, generator=generator)
        k = torch.randn(batch, kv_heads, keys + 3, dim, generator=generator)[:, :, :keys]
        v = torch.randn(batch, kv_heads, keys + 3, dim, generator=generator)[:, :, 3:]
        filled = max(queries, keys - 2)  # the last two slots empty
        allowed = torch.arange(keys)[None, :] <= torch.arange(filled - queries, filled)[:, None]
        mask = torch.zeros(queries, keys).masked_fill(~allowed, float("-inf"))
        for m, visible in ((mask, allowed), (mask.expand(batch, 1, -1, -1).clone(), allowed), (None, None)):
            exact = torch.nn.functional.scaled_dot_product_attention(
                q.double(), k.double(), v.double(), visible, scale=0.3, enable_gqa=True)
            ours = attend(q, k, v, m, 0.3)
            assert ours.dtype == torch.float32 and ours.shape == q.shape
            assert (ours.double() - exact).abs().max().item() <= 1e-5, (batch, heads, kv_heads, queries, keys, dim)
            # a bfloat16 cache read as it is (widened exactly as it is read): as close to float64, and
            # for widths of whole vectors (every model's head_dim) the float32 copy's bits
            k16, v16 = k.bfloat16(), v.bfloat16()
            ours16, exact16 = attend(q, k16, v16, m, 0.3), torch.nn.functional.scaled_dot_product_attention(
                q.double(), k16.double(), v16.double(), visible, scale=0.3, enable_gqa=True)
            assert (ours16.double() - exact16).abs().max().item() <= 1e-5, (batch, heads, kv_heads, queries, keys, dim)
            assert dim % 8 != 0 or torch.equal(ours16, attend(q, k16.float(), v16.float(), m, 0.3))
            before, default = torch.get_num_threads(), module.set_bytes_per_thread(1)  # every call on 2 threads
            try:
                torch.set_num_threads(2)
                assert torch.equal(attend(q, k, v, m, 0.3), ours) and torch.equal(attend(q, k16, v16, m, 0.3), ours16)
            finally:
                module.set_bytes_per_thread(default)
                torch.set_num_threads(before)
    hidden = torch.full((1, 4), float("-inf"))  # a row with every key masked: zeros
    assert torch.equal(attend(torch.ones(1, 2, 1, 4), torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4), hidden, 1.0),
                       torch.zeros(1, 2, 1, 4))
    with pytest.raises(RuntimeError, match="both float32 or both bfloat16"):
        attend(torch.ones(1, 2, 1, 4), torch.ones(1, 1, 4, 4).bfloat16(), torch.ones(1, 1, 4, 4), None, 1.0)


def test_compiled_attention_reads_a_bfloat16_cache_as_it_is() -> None:
    """The compiled step's attention pass (compiled_step.attend_pass): a bfloat16 model's written-out
    `k.float(), v.float()` of its cache become attend's own reads of the bfloat16 cache (no float32
    copy of the whole cache per layer and step); the result stays that of the float32 copies."""
    import torch._dynamo
    from torch._inductor.utils import run_and_get_code

    from llmgen.compiler.runtime.compiled_step import attend_pass

    def step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), mask, scale=0.25,
                                                               enable_gqa=True)
        return out.to(q.dtype)

    generator = torch.Generator().manual_seed(6)
    q = torch.randn(1, 4, 1, 16, generator=generator).bfloat16()
    k, v = (torch.randn(1, 2, 40, 16, generator=generator).bfloat16() for _ in range(2))
    mask = torch.zeros(1, 40).masked_fill(torch.arange(40)[None] > 25, float("-inf"))  # 26 slots filled
    torch._dynamo.reset()
    try:  # compiled afresh: a cached graph would not run the pass
        with torch._functorch.config.patch(enable_autograd_cache=False):
            compiled = torch.compile(step, dynamic=False, options={"post_grad_custom_post_pass": attend_pass(),
                                                                   "fx_graph_cache": False})
            out, (code,) = run_and_get_code(compiled, q, k, v, mask)
    finally:
        torch._dynamo.reset()
    calls = re.findall(r"llmgen_native\.attend\.default\(([^)]*)\)", code)
    assert len(calls) == 1, code
    assert re.fullmatch(r"\w+, arg1_1, arg2_1, arg3_1, 0\.25", calls[0]), calls  # k, v: the inputs themselves
    assert torch.equal(out, torch.ops.llmgen_native.attend(q.float(), k.float(), v.float(), mask, 0.25).bfloat16())
