"""The static KV cache (`CausalLM.enable_static_cache`: fixed shapes, the position in a tensor)
and the compiled decoding step that it makes possible (compiler/runtime/fast_decode.py, compile=True).

Token by token, the static cache's logits equal the dynamic cache's (float32, <= 1e-5 of the
logit scale) on a dense model, a sliding-window model (past its window) and an MoE model, with
the written-out attention and with torch's fused kernel; greedy tokens are identical on the
real SmolLM2 checkpoint. The compiled step (torch.compile: tens of seconds even for a tiny
model) runs only with LLMGEN_COMPILE_TESTS=1."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import GENERATED, generated_source, import_path, random_replica
from real_checkpoint import smollm2_checkpoint  # noqa: F401  (fixture)

from llmgen.compiler.runtime import native
from llmgen.compiler.basics.cli import main
from llmgen.compiler.runtime.fast_decode import use_fast_decode
from llmgen.compiler.runtime.generate import greedy_tokens

TOLERANCE = 1e-5  # max |logit difference| / max |logit|, float32
MODELS = ["SmolLM2-135M-Instruct", "gemma-3-1b", "Mixtral-8x7B-v0.1"]  # dense, sliding window 8, experts
PROMPT, LENGTH = 5, 14  # a 5-token prefill, then one token at a time past Gemma 3's window of 8


@pytest.fixture(scope="module", params=MODELS)
def replica(request):
    gen, config, model = random_replica(request.param, "llmgen_static_decode")
    return request.param, gen, config, model


def cached_logits(model, ids: torch.Tensor, static: bool) -> torch.Tensor:
    """Logits of every position: the prompt at once, then one token per call."""
    if static:
        model.enable_static_cache(ids.shape[0], ids.shape[1] + 2)  # two slots never written
    else:
        model.enable_cache(ids.shape[0], ids.shape[1])
    with torch.no_grad():
        steps = [model(ids[:, :PROMPT])] + [model(ids[:, i : i + 1]) for i in range(PROMPT, ids.shape[1])]
    model.disable_cache()
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("fused", [False, True])
def test_static_cache_equals_the_dynamic_cache(replica, fused: bool) -> None:
    name, gen, config, model = replica
    model.fast_attention(fused)
    ids = torch.randint(0, config.vocab_size, (2, LENGTH), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(ids)
    dynamic = cached_logits(model, ids, static=False)
    static = cached_logits(model, ids, static=True)
    scale = dynamic.abs().max().item()
    assert (dynamic - whole).abs().max().item() <= TOLERANCE * scale  # the reference path agrees
    diff = (static - dynamic).abs().max().item()
    assert diff <= TOLERANCE * scale, (name, fused, diff, scale)
    with torch.no_grad():
        assert torch.equal(model(ids), whole)  # disabled again: the whole-sequence forward as before
    model.fast_attention(False)


def test_static_cache_state(replica) -> None:
    name, gen, config, model = replica
    cache = model.enable_static_cache(2, 9)
    assert isinstance(cache, gen.StaticCache) and len(cache) == config.num_hidden_layers
    shapes = {tuple(layer.k.shape) for layer in cache}
    assert shapes == {(2, config.num_key_value_heads, 9, config.head_dim)}  # every layer: all 9 slots, windowed too
    with torch.no_grad():
        model(torch.zeros(2, 4, dtype=torch.long))
        assert cache.length == 4 and all(layer.start is cache.start for layer in cache)
        model(torch.zeros(2, 1, dtype=torch.long))
    assert cache.length == 5
    assert all(layer.k[:, :, 5:].abs().sum() == 0 for layer in cache)  # slots past the position untouched
    assert all(layer.k[:, :, :5].abs().sum() > 0 for layer in cache)
    model.disable_cache()
    assert model.model.cache is None


def test_models_without_plain_attention_get_no_static_cache() -> None:
    """Recurrent, hybrid and latent-attention models keep only their own cache: no dead code."""
    for name in ("DeepSeek-V3", "LFM2-1.2B", "Qwen3.5-35B-A3B"):
        text = generated_source(GENERATED / name)
        assert "StaticCache" not in text and "enable_static_cache" not in text, name
    assert "def enable_static_cache" in generated_source(GENERATED / "gemma-3-1b")


def test_greedy_tokens_identical_on_the_real_checkpoint(smollm2_checkpoint) -> None:  # noqa: F811
    module = import_path(GENERATED / "SmolLM2-135M-Instruct" / "model.py", "static_decode_smollm2")
    model = module.load_checkpoint(smollm2_checkpoint, dtype=torch.float32)
    model.fast_attention()  # as `llmgen generate` runs it
    ids = torch.randint(100, 40000, (1, 12), generator=torch.Generator().manual_seed(1))
    runs = []
    for static in (False, True):
        (model.enable_static_cache if static else model.enable_cache)(1, 12 + 16)
        tokens = []
        with torch.inference_mode():
            token = model(ids)[:, -1].argmax(-1, keepdim=True)
            for _ in range(16):
                tokens.append(int(token))
                token = model(token)[:, -1].argmax(-1, keepdim=True)
        model.disable_cache()
        runs.append(tokens)
    assert runs[0] == runs[1]


def test_greedy_tokens_on_the_static_cache(replica) -> None:
    name, gen, config, model = replica
    prompt = [3, 1, 4, 1, 5]
    dynamic = list(greedy_tokens(model, prompt, 9, stop=set()))
    assert list(greedy_tokens(model, prompt, 9, stop=set(), static=True)) == dynamic
    assert model.model.cache is None  # disabled after the run


def test_generate_compile_refuses_the_int8_cache(smollm2_checkpoint, capsys) -> None:  # noqa: F811
    code = main(["generate", str(GENERATED / "SmolLM2-135M-Instruct"), "--prompt", "x", "--compile", "--kv", "int8",
                 "--checkpoint", str(smollm2_checkpoint)])
    err = capsys.readouterr().err
    assert code == 2 and "llmgen: error: --compile needs the float KV cache" in err, err


compile_tests = pytest.mark.skipif(os.environ.get("LLMGEN_COMPILE_TESTS") != "1",
                                   reason="torch.compile takes tens of seconds: set LLMGEN_COMPILE_TESTS=1")


@compile_tests
@pytest.mark.parametrize("kernel", ["off", pytest.param("native", marks=pytest.mark.skipif(
    native.missing("float32") is not None, reason=f"native kernel: {native.missing('float32')}"))])
def test_compiled_steps_compile_once_and_equal_the_dynamic_cache(kernel: str) -> None:
    import torch._dynamo

    gen, config, model = random_replica("SmolLM2-135M-Instruct", f"llmgen_static_compile_{kernel}")
    model.fast_attention()
    ids = torch.randint(0, config.vocab_size, (1, LENGTH), generator=torch.Generator().manual_seed(4))
    reference = cached_logits(model, ids, static=False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert use_fast_decode(model, kernel, threads=2, compile=True)[0] == kernel
    torch._dynamo.config.error_on_recompile = True  # a second compilation fails the test
    try:
        compiled = cached_logits(model, ids, static=True)  # 9 one-token steps, compiled at the first
    finally:
        torch._dynamo.config.error_on_recompile = False
    diff, scale = (compiled - reference).abs().max().item(), reference.abs().max().item()
    assert diff <= TOLERANCE * scale, (diff, scale)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert model.forward.compiled.replays == LENGTH - PROMPT - 1  # every step after the first (Replay)
    if native.kernel() is not None:  # the step's attention runs on the kernel's operator (attend_pass)
        model.enable_static_cache(ids.shape[0], ids.shape[1] + 2)  # the shapes compiled above
        with torch.no_grad(), torch.profiler.profile() as profile:
            model(ids[:, :1])
        model.disable_cache()
        names = [event.name for event in profile.events()]
        assert names.count("llmgen_native::attend") == config.num_hidden_layers, sorted(set(names))
    use_fast_decode(model, "off")


def test_replay_calls_the_graph_directly_only_where_it_is_the_same_call() -> None:
    """compiled_step.Replay: after one step through torch.compile (here a stand-in that gathers the
    graph's inputs and calls it, reporting the call as the backend's graphs do), the next steps on
    the same cache call the graph directly with the inputs it saw and the new token ids: the same
    results, state updated in place; what it keeps of a cache goes with it. A new cache, token ids of another shape, keyword arguments,
    another grad mode, or a graph whose extra output is not one of its inputs: through torch.compile."""
    from llmgen.compiler.runtime.compiled_step import Replay

    class Cache:  # stands for the backbone's static cache (unhashable, as a dataclass with eq)
        __hash__ = None

    cache, weight, state = [Cache()], torch.tensor(2.0), torch.zeros(())
    calls: list[str] = []
    fresh = [False]  # the graph returns a new tensor (not an input) as its second output

    def graph(ids: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append("graph")
        s += 1  # state updated in place
        return ids.float() * w + s, s.clone() if fresh[0] else s

    def through_compile(ids: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append("compile")
        inputs = (ids, weight, state)
        out = graph(*inputs)
        if replay.seen is not None:
            replay.seen.append((graph, inputs, out))
        return out[0]

    replay = Replay(lambda: cache[0])
    replay.compiled = through_compile

    def step(ids: torch.Tensor, **kwargs: object) -> tuple[list[float], list[str]]:
        calls.clear()
        return replay(ids, **kwargs).tolist(), list(calls)

    ids = torch.tensor([1, 2, 3])
    assert step(ids) == ([3.0, 5.0, 7.0], ["compile", "graph"])
    assert step(ids + 1) == ([6.0, 8.0, 10.0], ["graph"])  # replayed: new ids, state advanced in place
    assert step(ids) == ([5.0, 7.0, 9.0], ["graph"]) and replay.replays == 2
    assert step(ids[:2]) == ([6.0, 8.0], ["compile", "graph"])  # another shape
    assert step(ids[:2], position=1)[1] == ["compile", "graph"]  # arguments: never replayed
    assert step(ids[:2])[1] == ["compile", "graph"]  # nor captured while they were given
    assert step(ids[:2])[1] == ["graph"]
    cache[0] = Cache()  # the next generation's cache
    assert step(ids[:2])[1] == ["compile", "graph"]
    cache[0] = None  # disable_cache: what was kept of that cache (its buffers) goes with it
    assert replay.record is None
    cache[0] = Cache()
    assert step(ids[:2])[1] == ["compile", "graph"]
    with torch.no_grad():  # another grad mode
        assert step(ids[:2])[1] == ["compile", "graph"]
    fresh[0] = True
    assert step(ids[:2])[1] == ["compile", "graph"]
    assert step(ids[:2])[1] == ["compile", "graph"]  # its output would have to be stored somewhere


def test_products_of_one_input_grouped_in_a_compiled_step() -> None:
    """compiled_step.group_products on a traced step: the products that read one input become one
    llmgen_native::gemv3 / gemv2 call (in threes, then a pair); those of other inputs stay single;
    the graph's results keep their bits."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from llmgen.compiler.runtime.compiled_step import gemv_op, group_products

    if native.kernel() is None:
        pytest.skip(f"native kernel: {native.missing('float32')}")
    gemv, ops = gemv_op(), torch.ops.llmgen_native

    def step(x: torch.Tensor, ws: list[torch.Tensor], bias: torch.Tensor) -> list[torch.Tensor]:
        q, k, v, g, u = (gemv(x, w, bias if i == 1 else None, 0) for i, w in enumerate(ws[:5]))
        h = torch.nn.functional.silu(g) * u
        return [q, k, v, gemv(h, ws[5], None, 0)]

    generator = torch.Generator().manual_seed(9)
    ws = [torch.randn(rows, 8 if i < 5 else 6, generator=generator) for i, rows in enumerate((8, 4, 4, 6, 6, 8))]
    x, bias = torch.randn(1, 8, generator=generator), torch.randn(4, generator=generator)
    traced = make_fx(step, tracing_mode="fake")(x, ws, bias)
    expected = traced(x, ws, bias)
    group_products(traced.graph)
    traced.recompile()
    targets = [node.target for node in traced.graph.nodes if node.op == "call_function"]
    assert targets.count(ops.gemv3.default) == 1 and targets.count(ops.gemv2.default) == 1
    assert targets.count(ops.gemv.default) == 1  # the product of h
    assert all(torch.equal(a, b) for a, b in zip(traced(x, ws, bias), expected))
