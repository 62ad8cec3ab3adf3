"""HunYuan (Tencent Hunyuan dense): Llama with a per-head QK-norm applied after RoPE and the
"dynamic NTK alpha" RoPE, which is default RoPE with a stretched base.

Reads exactly the keys transformers 5.24's HunYuanDenseV1Config and model read.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture
from ...basics.errors import ConfigError
from .llama_like import common, llama_like
from .reader import ConfigReader
from .registry import explicit_head_dim, family

HUNYUAN_NAMES = dict(q_norm="query_layernorm", k_norm="key_layernorm")
# Keys of Tencent's own exports that transformers' model never reads: accepted only at the values
# that describe what it computes anyway (always a QK-norm, never cross-layer KV sharing).
HUNYUAN_FIXED = {"use_qk_norm": True, "use_cla": False}


def ntk_alpha_as_theta(r: ConfigReader, head_dim: int) -> None:
    """Rewrite a RoPE dict {type: dynamic, alpha: a} as the default RoPE it computes: base = theta * a^(d / (d - 2))
    (transformers' compute_ntk_alpha_rope_parameters; it does not depend on the sequence length)."""
    for key in ("rope_parameters", "rope_scaling"):
        params = r.raw.get(key)
        if not isinstance(params, dict) or (params.get("rope_type") or params.get("type")) != "dynamic":
            continue
        alpha = params.get("alpha")
        if not alpha:
            continue
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0 or head_dim <= 2:
            raise ConfigError(f"{r.where}: key '{key}.alpha' must be a positive number, got {alpha!r:.40}")
        theta = params.get("rope_theta", r.raw.get("rope_theta", 10000.0))
        base = theta * alpha ** (head_dim / (head_dim - 2))
        rest: dict[str, Any] = {k: v for k, v in r.raw.items() if k not in ("rope_parameters", "rope_scaling")}
        r.raw = {**rest, "rope_theta": base}


@family("hunyuan_v1_dense", title="HunYuan (dense)", replica=explicit_head_dim, pad_token_id=0)
def lower_hunyuan_v1_dense(r: ConfigReader, model_type: str) -> Architecture:
    c = common(r, max_pos=2048)
    ntk_alpha_as_theta(r, c.head_dim)
    for key, value in HUNYUAN_FIXED.items():
        r.require_value(key, (value,), value)
    r.require_value("pretraining_tp", (1,), 1)
    bias = r.bool("attention_bias", False)
    return llama_like(r, model_type, c, eps=1e-5, qkv_bias=bias, o_bias=bias, qk_norm="per_head",
                      qk_norm_after_rope=True, names=HUNYUAN_NAMES,
                      extra_allowed=frozenset({"eod_token_id"}))  # a tokenizer id
