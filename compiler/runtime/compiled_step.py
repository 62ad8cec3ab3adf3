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
    options = {"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe, "cpp_wrapper": True}
    # torch.compile keeps its graphs with the code it compiled, and guards on tensors only do not
    # look at parameters: a second model of the same class whose weights differ in kind (int8
    # weights, another dtype) would run the first one's graph. A copy of the code per model keeps
    # each model's graphs its own, at no cost to a step (guards on the parameters instead would
    # check ~270 more tensors before each one).
    forward = type(model).forward
    own = types.FunctionType(forward.__code__.replace(), forward.__globals__, forward.__name__,
                             forward.__defaults__, forward.__closure__)
    own.__kwdefaults__ = forward.__kwdefaults__
    if native.kernel() is not None:  # the step's attention on the kernel's operator (attend_pass)
        options["post_grad_custom_post_pass"] = attend_pass()
    compiled = torch.compile(own.__get__(model), dynamic=False, options=options)
    return compiled, lambda: type(backbone.cache).__name__ == "StaticCache"


@functools.cache
def gemv_op() -> Any:
    """The native kernel as a torch operator (llmgen_native::gemv, kernels/gemv.cpp) that
    torch.compile keeps whole: one opaque call with a known output shape, instead of a break of
    its graph at every product, called from the compiled graph without Python in between."""
    import torch

    from . import native

    native.kernel()  # loading the module registers the operator

    @torch.library.register_fake("llmgen_native::gemv")
    def _(x: Any, w: Any, bias: Any, level: int) -> Any:
        return x.new_empty((*x.shape[:-1], w.shape[0]))

    return torch.ops.llmgen_native.gemv.default


@functools.cache
def attend_pass() -> Any:
    """An inductor graph pass for compiled decoding steps: torch's fused CPU attention of at most
    MAX_ROWS float32 queries becomes llmgen_native::attend (kernels/attend.h). torch's kernel
    costs ~60 microseconds a layer for one query over 144 cache slots and attends every slot of
    a static cache, empty or not; attend skips the masked ones (measured: ~18 microseconds at 80
    of 144 slots in use). The same float32 operations, summed in another order."""
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
            return "llmgen-attend-2"

    return AttendPass()
