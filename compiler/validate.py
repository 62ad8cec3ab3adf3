"""Pass 3, validation: reject IR the renderer cannot print faithfully.

Lowering guarantees a well-formed IR; this pass checks what the *templates* support, so a
model that would need code llmgen cannot write fails here with one line instead of
producing a file with wrong logits.
"""

from __future__ import annotations

from ..schemas.arch import Architecture
from .errors import ConfigError, UnsupportedError
from .rope_fields import rope_unsupported



def validate(arch: Architecture) -> Architecture:
    """Return ``arch`` unchanged if every feature it uses can be rendered, else raise."""
    first = arch.layers[0]
    for layer in arch.layers[1:]:
        for part in ("ffn", "block", "norm"):
            if getattr(layer, part) != getattr(first, part):
                raise UnsupportedError(f"layer {layer.index}: its {part} differs from layer 0 (not supported yet)")
        a, b = layer.mixer, first.mixer
        if a.model_copy(update={"span": b.span, "window": b.window, "rope": b.rope}) != b:
            raise UnsupportedError(f"layer {layer.index}: attention shape differs from layer 0 (not supported yet)")
    spans = {layer.mixer.span: layer.mixer for layer in arch.layers}
    windows = {layer.mixer.window for layer in arch.layers if layer.mixer.span == "sliding"}
    if len(windows) > 1:
        raise UnsupportedError(f"sliding layers use different windows {sorted(windows)} (not supported yet)")
    for span, mixer in spans.items():
        ropes = {layer.mixer.rope for layer in arch.layers if layer.mixer.span == span}
        if len(ropes) > 1:
            raise UnsupportedError(f"{span} layers use different RoPE tables {sorted(map(str, ropes))}")
        if mixer.rope is None:
            raise UnsupportedError("layers without RoPE (NoPE) are not supported yet")
    if windows and max(windows) > arch.max_position_embeddings:
        raise ConfigError(
            f"sliding window {max(windows)} exceeds the context length {arch.max_position_embeddings}"
        )
    names = {table.name for table in arch.rope}
    for layer in arch.layers:
        if layer.mixer.rope is not None and layer.mixer.rope not in names:
            raise ConfigError(f"layer {layer.index}: unknown RoPE table {layer.mixer.rope!r}")
    for table in arch.rope:
        problem = rope_unsupported(table)
        if problem:
            raise UnsupportedError(problem)
    if first.block not in ("pre_norm", "sandwich"):
        raise UnsupportedError(f"block layout {first.block!r} is not implemented yet")
    if first.norm.kind != "rmsnorm" or first.norm.bias:
        raise UnsupportedError(f"norm kind {first.norm.kind!r} is not implemented yet")
    if first.mixer.qk_norm == "whole":
        raise UnsupportedError("QK-norm over the whole projection is not implemented yet")
    if arch.head.bias:
        raise UnsupportedError("a biased output head is not implemented yet")
    return arch
