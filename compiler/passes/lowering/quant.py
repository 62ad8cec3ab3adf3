"""The ``quantization_config`` object of a config: which method, which keys.

Every family's checkpoint may be quantized in a format the generated loader dequantizes: fine-grained
float8 (``fp8``: e4m3 values with a scale per block, as DeepSeek-V3 and the Qwen3 FP8 releases ship)
and NVIDIA ModelOpt (``modelopt``: NVFP4 and per-tensor FP8). gpt-oss reads its own MXFP4 object
(fam_gptoss). Any other method is one error naming it and what llmgen supports.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Fp8Weights, ModeloptWeights
from ...basics.errors import ConfigError, UnsupportedError
from .reader import ConfigReader

SUPPORTED = ("llmgen dequantizes 'fp8' (fine-grained float8 with block scales) and 'modelopt' (NVFP4, FP8)"
             " checkpoints on load, and 'mxfp4' for gpt-oss")
FP8_KEYS = frozenset({"quant_method", "fmt", "activation_scheme", "weight_block_size", "modules_to_not_convert",
                      "dequantize", "scale_fmt"})  # dequantize: transformers' loading switch
MODELOPT_KEYS = frozenset({"quant_method", "quant_algo", "group_size", "kv_cache_quant_algo", "kv_cache_scheme",
                           "exclude_modules", "ignore", "producer", "config_groups", "quantized_layers"})
# ModelOpt's weight algorithms: per layer in `quantized_layers`, or for the whole model in `quant_algo`.
MODELOPT_ALGOS = {"NVFP4": "nvfp4", "W4A16_NVFP4": "nvfp4", "FP8": "fp8"}


def _method_error(where: str, method: Any) -> UnsupportedError:
    return UnsupportedError(f"{where}: quant_method {method!r:.40} is not supported; {SUPPORTED}")


def read_quantization(r: ConfigReader, method: str, keys: frozenset[str]) -> tuple[dict[str, Any], str] | None:
    """(the object, where to say it is in messages), or None without one; a quant_method other than
    ``method`` and a key outside ``keys`` are one-line errors."""
    q = r.any("quantization_config", None)
    if q is None:
        return None
    where = f"{r.where}: key 'quantization_config'"
    if not isinstance(q, dict):
        raise ConfigError(f"{where} must be an object")
    if q.get("quant_method") != method:
        raise _method_error(where, q.get("quant_method"))
    unknown = sorted(set(q) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'")
    return q, where


def _fp8(q: dict[str, Any], where: str) -> Fp8Weights:
    """Fine-grained float8 (transformers' FineGrainedFP8Config): e4m3 weights, a float32 scale per block."""
    if q.get("fmt", "e4m3") != "e4m3":
        raise UnsupportedError(f"{where}: fmt {q.get('fmt')!r:.40} is not supported (only 'e4m3')")
    if q.get("activation_scheme", "dynamic") != "dynamic":
        raise UnsupportedError(f"{where}: activation_scheme {q.get('activation_scheme')!r:.40} is not supported")
    if q.get("scale_fmt", "float") not in ("float", "ue8m0"):  # ue8m0: powers of two, stored as float32 / e8m0
        raise UnsupportedError(f"{where}: scale_fmt {q.get('scale_fmt')!r:.40} is not supported (only 'float', 'ue8m0')")
    block = q.get("weight_block_size", [128, 128])
    if (not isinstance(block, list) or len(block) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise ConfigError(f"{where}: 'weight_block_size' must be two positive integers, got {block!r:.40}")
    return Fp8Weights(block=tuple(block))


def _modelopt(q: dict[str, Any], where: str) -> ModeloptWeights:
    """NVIDIA ModelOpt: `quant_algo` NVFP4 or FP8 for the whole model, or MIXED_PRECISION with one
    algorithm per layer in `quantized_layers`."""
    algo = q.get("quant_algo")
    layers = q.get("quantized_layers")
    if algo == "MIXED_PRECISION":
        if not isinstance(layers, dict) or not layers:
            raise ConfigError(f"{where}: quant_algo 'MIXED_PRECISION' needs a 'quantized_layers' object")
        specs = list(layers.values())
    else:
        specs = [{"quant_algo": algo, "group_size": q.get("group_size", 16)}]
    formats = set()
    for spec in specs:
        name = spec.get("quant_algo") if isinstance(spec, dict) else None
        if name not in MODELOPT_ALGOS:
            known = ", ".join(sorted([*MODELOPT_ALGOS, "MIXED_PRECISION"]))
            raise UnsupportedError(f"{where}: ModelOpt quant_algo {name!r:.40} is not supported (known: {known})")
        if MODELOPT_ALGOS[name] == "nvfp4" and spec.get("group_size", 16) != 16:
            raise UnsupportedError(f"{where}: NVFP4 group_size {spec.get('group_size')!r:.20} is not supported (only 16)")
        formats.add(MODELOPT_ALGOS[name])
    return ModeloptWeights(formats=tuple(sorted(formats, reverse=True)))


def lower_quantization(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The Architecture fields for a config's ``quantization_config`` (none without one)."""
    q = raw.get("quantization_config")
    if q is None:
        return {}
    where = f"{where}: key 'quantization_config'"
    if not isinstance(q, dict):
        raise ConfigError(f"{where} must be an object")
    method = q.get("quant_method")
    keys = {"fp8": FP8_KEYS, "modelopt": MODELOPT_KEYS}.get(method) if isinstance(method, str) else None
    if keys is None:
        raise _method_error(where, method)
    unknown = sorted(set(q) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r:.60} for quant_method {method!r}")
    return {"fp8": _fp8(q, where)} if method == "fp8" else {"modelopt": _modelopt(q, where)}
