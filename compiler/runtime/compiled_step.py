"""Compiled decoding steps: a generated model's forward through torch.compile for single-token
steps on its static cache (compiled_steps), with the native kernel's product and attention as
operators that the compiled graph calls directly (gemv_op, attend_pass). fast_decode.use_fast_decode
(compile=True) puts them in place; the generated file itself is unchanged.
"""

from __future__ import annotations

import functools
import operator
import types
from typing import Any

from .fast_decode import MAX_ROWS


def compiled_steps(model: Any) -> tuple[Any, Any]:
    """The model's own forward through torch.compile, for decoding steps on its static cache, and
    a test that says whether that cache is the one in use. A generated model's
    `enable_static_cache` keeps every shape of a step fixed and its position in a tensor, so the
    step compiles once (the first step: tens of seconds to minutes) and never again; on the
    dynamic cache (`enable_cache`) each step would have new shapes, so it runs uncompiled there."""
    import torch

    from . import native

    if not hasattr(model, "enable_static_cache"):
        raise ValueError(f"{type(model).__name__} has no enable_static_cache: no fixed-shape step to compile")
    backbone = next(child for child in model.children() if hasattr(child, "cache"))
    # Guards on tensors only (shapes, dtypes): checking every module attribute before each step
    # cost more than the step's own small operations (measured: ~3 ms of a 30-layer step). So
    # set the model's switches (fast_attention, kernel) before the first compiled step.
    # cpp_wrapper: the compiled graph's calls (~350 a step: the products, attention, inductor's
    # fused kernels) made from generated C++ instead of a generated Python function (measured on
    # the real SmolLM2 step, products stubbed out, 1 thread: 6.1 against 11.2 ms, 25th percentiles).
    options = {"cpp_wrapper": True}
    # torch.compile keeps its graphs with the code it compiled, and guards on tensors only do not
    # look at parameters: a second model of the same class whose weights differ in kind (int8
    # weights, another dtype) would run the first one's graph. A copy of the code per model keeps
    # each model's graphs its own, at no cost to a step (guards on the parameters instead would
    # check ~270 more tensors before each one).
    forward = type(model).forward
    own = types.FunctionType(forward.__code__.replace(), forward.__globals__, forward.__name__,
                             forward.__defaults__, forward.__closure__)
    own.__kwdefaults__ = forward.__kwdefaults__
    if native.kernel() is not None:  # the step's attention and grouped products on the kernel's operators
        options["post_grad_custom_post_pass"] = attend_pass()
    replay = Replay(lambda: backbone.cache)
    replay.compiled = torch.compile(own.__get__(model), dynamic=False, backend=replay.backend(options),
                                    options={"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe})
    return replay, lambda: type(backbone.cache).__name__ == "StaticCache"


class Replay:
    """A compiled step, called again without torch.compile's per-call work. Before each call of a
    compiled function, torch.compile checks its guards and gathers the graph's inputs from the
    module tree (~335 tensors for SmolLM2-135M: every weight, every layer's cache); after it, it
    stores what the graph returns. Measured on the bfloat16 SmolLM2-135M step, 2 threads: ~0.5 ms
    from the call to the graph's first operation, of a ~12.5 ms step. Those inputs are the same
    tensors at every step of one generation (the weights; the static cache's buffers, which the
    graph updates in place), so after one step through torch.compile (which compiles, or checks
    the guards, and is watched here: the backend's graphs report their calls), the next ones on
    the same cache call the compiled graph directly with the inputs it saw, the new token ids in
    their place. Only where that step is provably the same call: one graph, the token ids one of
    its inputs, the forward's result the graph's first output, and every other output one of its
    inputs (state updated in place, stored back where it came from); else every step goes through
    torch.compile. A new cache (the next generation), other token shapes, arguments, or grad mode:
    through torch.compile again."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache  # the backbone's cache in use now
        self.compiled: Any = None  # the torch.compile'd forward
        # (the cache, weakly; key, graph, inputs, where the ids go), dropped with that cache: the
        # inputs hold its buffers, which go when it goes (disable_cache), not with the model
        self.record: tuple[Any, ...] | None = None
        self.seen: list[tuple[Any, tuple[Any, ...], Any]] | None = None  # graph calls while capturing
        self.replays = 0  # steps called directly (tests read it)

    def _forget(self, ref: Any) -> None:
        if self.record is not None and self.record[0] is ref:
            self.record = None

    def backend(self, options: dict[str, Any]) -> Any:
        """A torch.compile backend: inductor with `options`, whose graphs report their calls."""
        from torch._inductor.compile_fx import compile_fx

        def compile(gm: Any, example_inputs: Any) -> Any:
            inner = compile_fx(gm, example_inputs, config_patches=options)

            def graph(*args: Any) -> Any:
                out = inner(*args)
                if self.seen is not None:
                    self.seen.append((inner, args, out))
                return out

            return graph

        return compile

    def __call__(self, input_ids: Any, *args: Any, **kwargs: Any) -> Any:
        import weakref

        import torch

        key = (input_ids.shape, input_ids.dtype, torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        cache, record = self.cache(), self.record
        if record is not None and cache is not None and not args and not kwargs and record[1] == key \
                and record[0]() is cache:
            inputs = list(record[3])
            inputs[record[4]] = input_ids
            self.replays += 1
            return record[2](*inputs)[0]
        self.record, self.seen = None, []
        try:
            out = self.compiled(input_ids, *args, **kwargs)
        finally:
            seen, self.seen = self.seen, None
        if cache is not None and not args and not kwargs and len(seen) == 1:
            graph, inputs, outputs = seen[0]
            ids = [i for i, tensor in enumerate(inputs) if tensor is input_ids]
            stored = all(any(o is tensor for tensor in inputs) for o in outputs[1:])
            if len(ids) == 1 and len(outputs) >= 1 and outputs[0] is out and stored:
                self.record = (weakref.ref(cache, self._forget), key, graph, tuple(inputs), ids[0])
        return out


@functools.cache
def gemv_op() -> Any:
    """The native kernel as a torch operator (llmgen_native::gemv, kernels/gemv.cpp) that
    torch.compile keeps whole: one opaque call with a known output shape, instead of a break of
    its graph at every product, called from the compiled graph without Python in between."""
    import torch

    from . import native

    native.kernel()  # loading the module registers the operator

    def out(x: Any, w: Any) -> Any:  # a product's output: x's shape, its last dimension w's rows
        return x.new_empty((*x.shape[:-1], w.shape[0]))

    @torch.library.register_fake("llmgen_native::gemv")
    def _(x: Any, w: Any, bias: Any, level: int) -> Any:
        return out(x, w)

    @torch.library.register_fake("llmgen_native::gemv2")
    def _(x: Any, w0: Any, w1: Any, b0: Any, b1: Any, level: int) -> Any:
        return out(x, w0), out(x, w1)

    @torch.library.register_fake("llmgen_native::gemv3")
    def _(x: Any, w0: Any, w1: Any, w2: Any, b0: Any, b1: Any, b2: Any, level: int) -> Any:
        return out(x, w0), out(x, w1), out(x, w2)

    return torch.ops.llmgen_native.gemv.default


@functools.cache
def attend_pass() -> Any:
    """An inductor graph pass for compiled decoding steps: torch's fused CPU attention of at most
    MAX_ROWS float32 queries becomes llmgen_native::attend (kernels/attend.h). torch's kernel
    costs ~60 microseconds a layer for one query over 144 cache slots and attends every slot of
    a static cache, empty or not; attend skips the masked ones (measured: ~18 microseconds at 80
    of 144 slots in use). The same float32 operations, summed in another order. It also groups
    the products of one input (group_products)."""
    import torch
    from torch._inductor.custom_graph_pass import CustomGraphPass

    from . import native

    native.kernel()  # loading the module registers the operator

    @torch.library.register_fake("llmgen_native::attend")
    def _(q: Any, k: Any, v: Any, mask: Any, scale: float) -> Any:
        return q.new_empty(q.shape)

    flash, attend = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default, torch.ops.llmgen_native.attend.default
    convert = torch.ops.prims.convert_element_type.default

    def fits(node: Any) -> bool:
        q, k, v = (arg.meta.get("val") for arg in node.args[:3])
        mask, scale = node.kwargs.get("attn_mask"), node.kwargs.get("scale")
        plain = not any(node.args[3:]) and set(node.kwargs) <= {"attn_mask", "scale"} and scale is not None
        floats = all(t is not None and t.dtype == torch.float32 and t.dim() == 4 for t in (q, k, v))
        masked = mask is None or mask.meta.get("val") is not None and mask.meta["val"].dtype == torch.float32
        first = all(user.target is operator.getitem and user.args[1] == 0 for user in node.users)
        return plain and floats and masked and first and q.shape[2] <= MAX_ROWS

    def unwidened(k: Any, v: Any) -> tuple[Any, Any]:
        """A bfloat16 cache's keys and values themselves where both reach the attention widened to
        float32 (`k.float()`): attend reads bfloat16 as it is, and the float32 copies of the whole
        cache, made for every layer of every step, go."""
        widened = [n.op == "call_function" and n.target is convert and n.args[1] == torch.float32
                   and getattr(n.args[0].meta.get("val"), "dtype", None) == torch.bfloat16 for n in (k, v)]
        return (k.args[0], v.args[0]) if all(widened) else (k, v)

    class AttendPass(CustomGraphPass):
        def __call__(self, graph: Any) -> None:
            group_products(graph)
            for node in [n for n in graph.nodes if n.target is flash and fits(n)]:
                k, v = unwidened(*node.args[1:3])
                with graph.inserting_before(node):
                    new = graph.call_function(attend, (node.args[0], k, v, node.kwargs.get("attn_mask"), node.kwargs["scale"]))
                new.meta["val"] = node.meta["val"][0]
                for user in list(node.users):
                    user.replace_all_uses_with(new)
                    graph.erase_node(user)
                graph.erase_node(node)
            graph.eliminate_dead_code()  # the float32 copies that nothing reads any more

        def uuid(self) -> Any:
            return "llmgen-attend-3"

    return AttendPass()


def group_products(graph: Any) -> None:
    """The products of one input in a compiled step (a layer's q, k and v; gate and up) as one call
    of the kernel (llmgen_native::gemv2 or gemv3): one run of its threads instead of two or three,
    each waiting for its last chunk (measured: ~10 us a layer for q, k, v on 2 threads). The same
    dot products, so the same bits."""
    import torch

    gemv = torch.ops.llmgen_native.gemv.default
    groups: dict[tuple[Any, Any], list[Any]] = {}
    for node in graph.nodes:
        if node.op == "call_function" and node.target is gemv:
            groups.setdefault((node.args[0], node.args[3]), []).append(node)
    ops = {2: torch.ops.llmgen_native.gemv2.default, 3: torch.ops.llmgen_native.gemv3.default}
    for (x, level), nodes in groups.items():
        for part in (nodes[i : i + 3] for i in range(0, len(nodes), 3)):
            if len(part) < 2:
                continue
            weights, biases = [n.args[1] for n in part], [n.args[2] for n in part]
            if any(a is not None and a.op != "placeholder" for a in weights + biases):
                continue  # computed in the graph (maybe after the first product): left alone
            with graph.inserting_before(part[0]):
                fused = graph.call_function(ops[len(part)], (x, *weights, *biases, level))
                fused.meta["val"] = tuple(n.meta["val"] for n in part)
                for i, node in enumerate(part):
                    item = graph.call_function(operator.getitem, (fused, i))
                    item.meta["val"] = node.meta["val"]
                    node.replace_all_uses_with(item)
            for node in part:
                graph.erase_node(node)
