"""gpt-oss: attention sinks, alternating sliding / full layers, YaRN RoPE, and routed experts with
a clamped SwiGLU whose stacked weights may be MXFP4 on disk.

Reads the keys transformers 5's ``GptOssConfig`` and ``modeling_gpt_oss.py`` read, with their
defaults (``rope_parameters`` defaults to YaRN, factor 32 over 4096 positions, ramp not truncated).
The quantization config is read as transformers' MXFP4 quantizer reads it: the experts of every
layer are stored quantized unless ``modules_to_not_convert`` names them.
"""

from __future__ import annotations

import re
from typing import Any

from ....schemas.arch import Architecture, Head, Mlp, Moe, MoeNames, Mxfp4Weights, Norm
from ...basics.errors import ConfigError, UnsupportedError
from .families import LAYER_TYPES, build, read_common, read_layer_types
from .fam_moe import TRAINING_ONLY, _experts
from .quant import read_quantization
from .reader import ConfigReader
from .rope import lower_rope

# transformers' GptOssConfig fills this in when the config gives no RoPE parameters.
DEFAULT_ROPE = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                "original_max_position_embeddings": 4096}
# Keys the model never reads: its experts' activation is fixed (hidden_act is stored only), and
# the original release's own names for values given again under transformers' keys.
GPTOSS_IGNORED = frozenset({"hidden_act", "experts_per_token", "initial_context_length"})
EXPERT_TENSORS = ("gate_up_proj", "down_proj")  # the stacked tensors the MXFP4 quantizer converts
QUANT_KEYS = frozenset({"quant_method", "modules_to_not_convert", "dequantize"})  # dequantize: a loading switch
MODULE_BOUNDARY = r"(?:(?<=\.)|(?=\.|$))"  # just after a dot, or before one or the end
REPLICA_EXPERTS, REPLICA_TOP_K, REPLICA_EXPERT_WIDTH = 6, 3, 32


def _converted(name: str, patterns: list[str]) -> bool:
    """transformers' rule (quantizers_utils.should_convert_module): a module is left unconverted when a
    pattern matches its name from the start up to a module boundary (as a regex), or as a suffix."""
    return not any(re.match(f"(?:{p}){MODULE_BOUNDARY}", name) or name.endswith(p) for p in patterns)


def _mxfp4(r: ConfigReader, num_layers: int, hidden: int, width: int) -> Mxfp4Weights | None:
    found = read_quantization(r, "mxfp4", QUANT_KEYS)
    if found is None:
        return None
    q, where = found
    patterns = q.get("modules_to_not_convert") or []
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(f"{where}: 'modules_to_not_convert' must be a list of module name patterns")
    try:
        converted = {_converted(f"model.layers.{i}.mlp.experts", patterns) for i in range(num_layers)}
    except re.error:
        raise ConfigError(f"{where}: 'modules_to_not_convert' holds a pattern that is not a regex") from None
    if len(converted) > 1:
        raise UnsupportedError(f"{where}: 'modules_to_not_convert' leaves the experts of some layers unquantized")
    if converted == {False}:
        return None
    for key, size in (("hidden_size", hidden), ("intermediate_size", width)):
        if size % 32:
            raise ConfigError(f"{r.where}: key '{key}' ({size}) must be a multiple of 32 for MXFP4 experts")
    return Mxfp4Weights(tensors=EXPERT_TENSORS)


def lower_gpt_oss(r: ConfigReader, model_type: str) -> Architecture:
    """gpt-oss: pre-norm GQA with biases and attention sinks, sliding / full layers, clamped-SwiGLU experts."""
    c = read_common(r, kv_default=8, head_dim_default=64, max_pos=131072)
    experts, top_k = _experts(r, "num_local_experts", 128, 4)
    if experts < 1:
        raise ConfigError(f"{r.where}: key 'num_local_experts' must be >= 1, got {experts}")
    window = r.int("sliding_window", 128, nullable=True)
    default_types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default_types)
    if r.raw.get("rope_parameters") is None and r.raw.get("rope_scaling") is None:
        r.raw = {**r.raw, "rope_scaling": dict(DEFAULT_ROPE)}  # transformers' default, on a copy
    ropes = lower_rope(r, head_dim=c.head_dim, layer_types=set(layer_types),
                       default_theta={t: 150000.0 for t in LAYER_TYPES})
    if any(table.partial_rotary_factor != 1.0 for table in ropes.values()):
        raise UnsupportedError(f"{r.where}: key 'partial_rotary_factor' < 1 is not supported for model_type "
                               f"{model_type!r} (its model rotates the whole head)")
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=c.intermediate_size, activation="clamped_swiglu",
              swiglu_alpha=r.float("swiglu_alpha", 1.702), swiglu_limit=r.float("swiglu_limit", 7.0),
              router="topk_softmax", router_bias=True, routing_dtype="input", storage="stacked_in_out",
              expert_bias=True, names=MoeNames(router="router", fused_router="router"))
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5), weight_in_compute_dtype=True)
    bias = r.bool("attention_bias", True)
    mxfp4 = _mxfp4(r, c.num_layers, c.hidden_size, c.intermediate_size)
    placeholder = Mlp(gated=True, activation="silu", intermediate_size=c.intermediate_size)  # replaced below
    arch = build(r, c, layer_types=layer_types, window=window, ropes=ropes, norm=norm,
                 attention=dict(scale=c.head_dim**-0.5, q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, sinks=True),
                 mlp=placeholder, block="pre_norm", embed_scale=None,
                 head=Head(tied=r.bool("tie_word_embeddings", False)), model_type=model_type,
                 extra_allowed=TRAINING_ONLY | GPTOSS_IGNORED)
    layers = tuple(layer.model_copy(update={"ffn": moe}) for layer in arch.layers)
    return arch.model_copy(update={"layers": layers, "mxfp4": mxfp4})


def replica_gpt_oss(tiny: dict[str, Any], arch: Architecture) -> None:
    """Six experts, top 3 (each gets tokens of the parity input), narrow experts (a multiple of the
    MXFP4 block of 32); the quantization kept out (the replica is saved in float32;
    tests/test_gptoss.py stores one as MXFP4)."""
    tiny.update(num_local_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K,
                intermediate_size=REPLICA_EXPERT_WIDTH)
    for key in ("experts_per_token", "quantization_config"):
        tiny.pop(key, None)


FAMILIES_GPTOSS = {"gpt_oss": lower_gpt_oss}
REPLICA_GPTOSS = {"gpt_oss": replica_gpt_oss}
