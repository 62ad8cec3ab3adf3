"""The tiny-replica parity test: what goes into each generated test_parity.py.

The replica config comes from the lowering (it knows HF keys); here it is lowered again
and checked to need exactly the same code as the full model, so the committed model.py
is what the test exercises.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture
from .. import __version__
from ..basics.errors import UnsupportedError
from ..passes.mixers import KINDS
from ..passes.lowering import WRAPPERS, lower
from ..passes.lowering.replica import WINDOW, tiny_replica
from ..passes.render_moe import moe_of
from ..passes.render_chunked import chunk_parity_context
from ..passes.render_linear import parity_scales
from ..passes.render import Provenance, config_kwargs, literal, model_context, safe_comment, structure
from ..passes.validate import validate
from ..passes.weight_map import WeightEntry, weight_map

TOLERANCE = 1e-5
WEIGHT_STD = 0.05
NORM_SPREAD = 0.2
BATCH = 2
LINEAR_EXTRA = 22  # 2 x 64 + 22 = 150 positions through the linear layers: a third, partial chunk
MOE_SEQ_LEN = 32  # batch 2 x 32 tokens x top 2 of 8 experts: every expert gets tokens (the test asserts it)


def py_literal(value: Any) -> str:
    """A Python literal for JSON-like data (dicts, lists, numbers, strings, None)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(str(k))}: {py_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    return literal(value)

# A float8 (MXFP4, ModelOpt) checkpoint's replica is saved in float32: its dequantizer is checked
# against transformers' own by tests/test_deepseek.py (tests/test_gptoss.py), against the format's
# definition by tests/test_quantized.py, instead.
REPLICA_UNQUANTIZED = ("fp8", "mxfp4", "modelopt")
# Wrappers whose transformers forward cannot return text-only logits: the part of the wrapper that computes them.
WRAPPER_TEXT_FORWARD = {"llama4": "language_model"}


def parity_context(raw: dict[str, Any], arch: Architecture, weights: list[WeightEntry], prov: Provenance) -> dict[str, Any]:
    """Context for templates/tests/test_parity.py.j2."""
    if arch.hyper is not None:  # hyper-connected streams: templates/tests/hyper_parity.py.j2
        from ..passes.render_dsv4 import hyper_parity_context

        return hyper_parity_context(raw, arch, weights, prov)
    tiny_raw = tiny_replica(raw, arch)
    tiny = validate(lower(tiny_raw))
    full_structure = structure(model_context(arch, weights, prov))
    tiny_structure = structure(model_context(tiny, weight_map(tiny), prov))
    for key in REPLICA_UNQUANTIZED:
        full_structure.pop(key, None), tiny_structure.pop(key, None)
    if full_structure != tiny_structure:
        differing = sorted(k for k in full_structure if full_structure[k] != tiny_structure.get(k))
        raise UnsupportedError(f"cannot build a tiny replica with the same structure (differs in: {', '.join(differing)})")
    sliding = any(getattr(layer.mixer, "span", None) == "sliding" for layer in tiny.layers)
    # a recurrent kind with chunks (the delta rule's, the SSD scan's): its replica runs past two of them
    linear = next((mixer for layer in tiny.layers for mixer in (layer.mixer, layer.parallel_mixer)
                   if getattr(mixer, "chunk_size", None) and mixer.kind in KINDS), None)
    scales = parity_scales(tiny, NORM_SPREAD)
    moe = moe_of(tiny)
    norms = [e for e in weight_map(tiny) if e.role == "norm"]
    buffers = (((moe.names.score_bias,) if moe and moe.score_correction_bias else ())
               + (("layer_scalar",) if tiny.layers[0].layer_scalar else ()))  # learned buffers saved with the weights
    return {
        "version": __version__,
        "source": prov.label,
        "command": safe_comment(prov.command),
        "hf_config": py_literal(tiny_raw),
        # a multimodal wrapper's own class (transformers' causal-LM class of llama4 is its text decoder alone)
        "auto_class": "AutoModelForImageTextToText" if tiny_raw.get("model_type") in WRAPPERS else "AutoModelForCausalLM",
        "text_forward": WRAPPER_TEXT_FORWARD.get(tiny_raw.get("model_type"), ""),
        "model_config": py_literal(config_kwargs(tiny)),
        "norm_neutral": literal(norms[0].neutral if norms else 1.0),  # 1.0: no norm stores a weight
        "norm_count": literal(sum(e.count(tiny) for e in norms)),  # over layers, experts and heads
        "weight_std": literal(WEIGHT_STD),
        "norm_spread": literal(NORM_SPREAD),
        "batch": literal(BATCH),
        # linear layers: past two of the delta rule's chunks
        "seq_len": literal(2 * linear.chunk_size + LINEAR_EXTRA if linear else 2 * WINDOW + 4 if sliding
                           else MOE_SEQ_LEN if moe else 16),
        "param_scales": py_literal({k: list(v) for k, v in scales.items()}) if scales else "",
        "tolerance": literal(TOLERANCE),
        "window": literal(WINDOW if sliding else None),
        "has_window": sliding,
        "experts": literal(moe.num_experts) if moe else "",
        "random_buffers": repr(buffers) if buffers else "",
        "moe_layers": literal(sum(getattr(layer.ffn, "kind", None) == "moe" for layer in tiny.layers)),
        **chunk_parity_context(tiny),
    }
