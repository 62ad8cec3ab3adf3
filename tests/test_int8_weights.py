"""int8 weights (compiler/runtime/int8_weights.py, `llmgen generate --weights-dtype int8`): the
quantization's rounding bound, the native int8 product at every level this CPU runs against a
float64 product of the dequantized weights, and a float32 model decoding on int8 weights like the
same model holding the dequantized weights as float32 (the only difference: summation order)."""

from __future__ import annotations

import pytest
import torch
from conftest import logits_in_pieces, random_replica

from llmgen.compiler.runtime import int8_weights, native
from llmgen.compiler.runtime.fast_decode import MAX_ROWS, use_fast_decode

pytestmark = pytest.mark.skipif(native.missing("float32") is not None, reason=f"native kernel: {native.missing('float32')}")
# widths around the kernel's steps of 16 and pairs of them; the model's
SHAPES = [(1, 1), (3, 7), (5, 15), (9, 16), (7, 17), (4, 31), (6, 32), (17, 33), (2, 63), (3, 64), (5, 65),
          (33, 100), (200, 576), (37, 1000)]


def test_quantize_rounds_each_weight_to_its_rows_grid() -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(40, 70, generator=generator) * torch.logspace(-3, 1, 40)[:, None]  # rows of every scale
    weight[5] = 0.0  # a row of zeros
    q, scale = int8_weights.quantize(weight)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and q.shape == weight.shape and scale.shape == (40,)
    assert int(q.abs().max()) == 127 and int(q[5].abs().max()) == 0 and float(scale[5]) == 1.0
    assert torch.equal(q.abs().amax(dim=1)[torch.arange(40) != 5], torch.full((39,), 127, dtype=torch.int8))
    error = (int8_weights.dequantize(q, scale) - weight).abs()
    assert bool((error <= scale[:, None] / 2 * (1 + 1e-6)).all())  # half a step of its row's grid


@pytest.mark.parametrize("level", ["portable", "avx2"])
def test_int8_product_on_odd_shapes(level: str) -> None:
    if level not in native.runnable_levels("float32"):
        pytest.skip(f"{level}: this CPU lacks it (flags: {' '.join(native.vector_flags())})")
    module, number = native.kernel("float32"), native.LEVELS.index(level)
    generator = torch.Generator().manual_seed(2)
    for out_features, in_features in SHAPES:
        q, scale = int8_weights.quantize(torch.randn(out_features, in_features, generator=generator))
        bias = torch.randn(out_features, generator=generator)
        exact_weight = int8_weights.dequantize(q, scale).double()
        for rows in range(1, MAX_ROWS + 1):
            x = torch.randn(in_features, rows, generator=generator).t()  # non-contiguous
            for b in (None, bias):
                exact = x.double() @ exact_weight.t() + (0 if b is None else b.double())
                ours = module.gemv_int8(x, q, scale, b, number)
                assert ours.dtype == torch.float32 and ours.shape == (rows, out_features)
                bound = 1e-6 * (x.double().abs() @ exact_weight.abs().t()) + 1e-6 * exact.abs() + 1e-7
                assert bool(((ours.double() - exact).abs() <= bound).all()), (level, out_features, in_features, rows)
        x3 = torch.randn(2, 1, in_features, generator=generator)
        assert torch.equal(module.gemv_int8(x3, q, scale, bias, number),
                           module.gemv_int8(x3.reshape(2, in_features), q, scale, bias, number).unsqueeze(1))
        if level == "avx2":  # prefill's matrix product: many rows of x, odd counts around its blocks of 6
            for rows in (5, 7, 13):
                x = torch.randn(in_features, rows, generator=generator).t()
                exact = x.double() @ exact_weight.t() + bias.double()
                ours = module.prefill_int8(x, q, scale, bias)
                assert ours.dtype == torch.float32 and ours.shape == (rows, out_features)
                bound = 1e-6 * (x.double().abs() @ exact_weight.abs().t()) + 1e-6 * exact.abs() + 1e-7
                assert bool(((ours.double() - exact).abs() <= bound).all()), ("prefill", out_features, in_features, rows)
    op = int8_weights.gemv_int8_op()  # the operator compiled steps call: the same kernel
    x = torch.randn(3, 33, generator=generator)
    q, scale = int8_weights.quantize(torch.randn(17, 33, generator=generator))
    assert torch.equal(op(x, q, scale, None, number), module.gemv_int8(x, q, scale, None, number))


@torch.no_grad()
def decode(model, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """A prefill of `prompt` tokens, then one token a step, through the model's cache."""
    return logits_in_pieces(model, ids, [prompt] + [1] * (ids.shape[1] - prompt))


@pytest.mark.parametrize("name", ["SmolLM2-135M-Instruct", "Qwen2-0.5B-Instruct"])  # tied head; q/k/v biases
def test_model_decodes_on_int8_weights_like_its_dequantized_float32_twin(name: str) -> None:
    _, config, model = random_replica(name, "llmgen_int8_weights")
    _, _, twin = random_replica(name, "llmgen_int8_twin")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():  # the twin holds what the int8 weights stand for, in float32
        for module in twin.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(int8_weights.dequantize(*int8_weights.quantize(module.weight)))
    tied = hasattr(model, "head_product")
    if tied:  # the twin's head: the dequantized embedding matrix, its lookup the float32 one
        head = int8_weights.dequantize(*int8_weights.quantize(twin.model.embed_tokens.weight))
        twin.head_product = lambda x, weight, bias=None: torch.nn.functional.linear(x, head, bias)
    ids = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    expected, float_bytes = decode(twin, ids, 7), sum(m.weight.nbytes for m in linears)
    used, count, why = use_fast_decode(model, "native", threads=2, weights="int8")
    assert (used, count, why) == ("native", len(linears) + tied, None)
    assert all(m.weight is None and m.weight_int8.dtype == torch.int8 for m in linears)
    assert sum(m.weight_int8.nbytes for m in linears) * 4 == float_bytes
    got = decode(model, ids, 7)  # prefill: dequantized blocks; steps: the int8 kernel at batch 2
    diff, scale = (got - expected).abs().max().item(), expected.abs().max().item()
    assert diff <= 5e-6 * scale, (diff, scale)
    plain = decode(random_replica(name, "llmgen_int8_plain")[2], ids, 7)
    assert (got - plain).abs().max().item() > 100 * diff  # and int8 is not the float32 model itself


def test_int8_weights_refuse_what_they_do_not_cover() -> None:
    _, _, model = random_replica("SmolLM2-135M-Instruct", "llmgen_int8_refuse")
    with pytest.raises(ValueError, match="int8 weights need a float32 model and the native kernel"):
        use_fast_decode(model.to(torch.bfloat16), "native", weights="int8")
    with pytest.raises(ValueError, match="int8 weights need a float32 model and the native kernel"):
        use_fast_decode(model.float(), "off", weights="int8")
    with pytest.raises(ValueError, match="weights 'int4': not one of model, int8"):
        use_fast_decode(model, "native", weights="int4")


def test_compiled_steps_on_int8_weights_decode_like_uncompiled() -> None:
    """The static cache's compiled step calls the int8 operator (llmgen_native::gemv_int8) in every
    layer: the same logits as the uncompiled steps (a compiled piece reused across layers of
    different widths would fail here), also after a float32 model of the same class compiled
    its own step in this process (whose graph, reused, would read the int8 model's missing
    float32 weights)."""
    gen, config, first = random_replica("SmolLM2-135M-Instruct", "llmgen_int8_compiled")
    eager, compiled = gen.CausalLM(config).eval(), gen.CausalLM(config).eval()
    eager.load_state_dict(first.state_dict())
    compiled.load_state_dict(first.state_dict())
    use_fast_decode(first, "native", compile=True)
    use_fast_decode(eager, "native", weights="int8")
    use_fast_decode(compiled, "native", weights="int8", compile=True)
    ids = torch.randint(0, config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(4))

    def run(model, static: bool) -> torch.Tensor:
        (model.enable_static_cache if static else model.enable_cache)(1, 16)
        with torch.no_grad():
            out = [model(ids[:, :6])] + [model(ids[:, i : i + 1]) for i in range(6, 10)]
        model.disable_cache()
        return torch.cat(out, 1)

    plain = gen.CausalLM(config).eval()
    plain.load_state_dict(first.state_dict())
    use_fast_decode(plain, "native")
    # float32, compiled first: its q, k, v and gate, up products grouped (compiled_step.group_products),
    # its steps after the first called directly (compiled_step.Replay)
    first_got, first_expected = run(first, True), run(plain, False)
    assert (first_got - first_expected).abs().max().item() <= 5e-6 * first_expected.abs().max().item()
    assert first.forward.compiled.replays == 3
    expected, got = run(eager, False), run(compiled, True)
    assert (got - expected).abs().max().item() <= 5e-6 * expected.abs().max().item()
    assert compiled.forward.compiled.replays == 3
