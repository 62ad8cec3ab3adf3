"""Row-block linear layers for decoding: a runtime switch that `llmgen generate` and the
benchmark apply to a loaded generated model (the generated file itself is unchanged).

One decoding step multiplies each weight matrix by a single vector. torch runs such a
matrix-vector product on one core, whatever its thread count, and one core does not saturate
the memory bandwidth. Splitting the matrix's rows into `blocks` equal blocks and computing them
with one batched product (torch.bmm) lets torch give each block its own thread: on a 2-core
machine this reads the weights about twice as fast. The result equals nn.Linear up to float
rounding (the same dot products, each on its own; only the kernel differs). Float32 weights
only: in bfloat16 the batched kernel was slower than torch's own and its different rounding
changed greedy choices (tests/test_fast_decode.py, benchmarks/bench_inference.py).
"""

from __future__ import annotations

from typing import Any

MAX_ROWS = 4  # inputs with more rows than this (prefill) keep torch's own matrix product


def row_block_linear(x: Any, weight: Any, bias: Any, blocks: int) -> Any:
    """x @ weight.T (+ bias), for inputs of at most MAX_ROWS rows, as `blocks` row blocks."""
    import torch
    import torch.nn.functional as F

    rows = x.reshape(-1, x.shape[-1])  # (n, in)
    if rows.shape[0] > MAX_ROWS:
        return F.linear(x, weight, bias)
    # weight (out, in) -> (blocks, out / blocks, in): a view; the product is (blocks, out / blocks, n)
    out = torch.bmm(weight.view(blocks, -1, weight.shape[1]), rows.t().expand(blocks, -1, -1))
    out = out.reshape(weight.shape[0], -1).t()  # (n, out)
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def use_row_blocks(model: Any, blocks: int) -> int:
    """Give every float32 nn.Linear of `model` whose rows split evenly the row-block forward
    (blocks > 1), or its own forward back (blocks == 1); likewise a tied output head (a generated
    model's `head_product`). Returns how many layers and heads now run in row blocks."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    product = _row_block_product(blocks)
    count = 0
    if hasattr(model, "head_product"):
        model.head_product = F.linear
        if blocks > 1 and next(model.parameters()).dtype == torch.float32:
            model.head_product = product  # the embedding matrix: checked by `product` on each call
            count += 1
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        module.__dict__.pop("forward", None)  # back to nn.Linear.forward
        if blocks > 1 and _fits(module.weight, blocks):
            module.forward = lambda x, m=module: product(x, m.weight, m.bias)
            count += 1
    return count


def _fits(weight: Any, blocks: int) -> bool:
    """Row blocks apply: a contiguous float32 matrix whose rows split evenly."""
    import torch

    return weight.dtype == torch.float32 and weight.shape[0] % blocks == 0 and weight.is_contiguous()


def _row_block_product(blocks: int) -> Any:
    """F.linear(x, weight, bias), in row blocks where they apply."""
    import torch.nn.functional as F

    def product(x: Any, weight: Any, bias: Any = None) -> Any:
        return row_block_linear(x, weight, bias, blocks) if _fits(weight, blocks) else F.linear(x, weight, bias)

    return product
