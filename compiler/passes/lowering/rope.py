"""Lowering of RoPE keys, in both the transformers-v4 and the v5 spelling.

v4: ``rope_theta`` + ``rope_scaling`` (+ Gemma 3's ``rope_local_base_freq``).
v5: ``rope_parameters``, either one dict or one dict per layer type
(``{"full_attention": {...}, "sliding_attention": {...}}``).
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Rope
from ...basics.errors import ConfigError, UnsupportedError
from .reader import ConfigReader

# Keys each RoPE type may carry besides rope_type / rope_theta / partial_rotary_factor.
_TYPE_KEYS: dict[str, frozenset[str]] = {
    "default": frozenset(),
    "linear": frozenset({"factor"}),
    "dynamic": frozenset({"factor", "original_max_position_embeddings"}),
    "llama3": frozenset({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}),
    "yarn": frozenset(
        {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
         "mscale", "mscale_all_dim", "truncate"}
    ),
    "longrope": frozenset({"short_factor", "long_factor", "attention_factor", "original_max_position_embeddings",
                           "factor"}),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
    "yarn": ("factor",),
    "longrope": ("short_factor", "long_factor"),
}
LAYER_TYPE_KEYS = ("full_attention", "sliding_attention")


def _num(where: str, key: str, value: Any, *, integer: bool = False, zero: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{where}: '{key}' must be a positive {'integer' if integer else 'number'}, got {value!r:.40}")
    return value


def rope_table(
    name: str,
    params: dict[str, Any],
    *,
    theta: float,
    head_dim: int,
    partial: float,
    where: str,
    max_position_embeddings: int | None = None,
    original_max_position_embeddings: int | None = None,
    nested: bool = False,
    odd_rotary_dim: bool = False,
) -> Rope:
    """Build one table from a rope_scaling / rope_parameters dict (may be empty: default RoPE).

    ``max_position_embeddings`` is the model's context length, the fallback of
    ``original_max_position_embeddings``; a family whose config class has a top-level
    ``original_max_position_embeddings`` (Phi-3) passes it, and it wins over the dict's
    value as in transformers. ``nested``: the dict is one of several per layer type. A family
    whose transformers code ignores ``partial_rotary_factor`` must refuse it before calling.
    The attention factor stays as given (None: transformers' default, see rope_fields).
    ``odd_rotary_dim``: the family's model rotates cos.shape[-1] channels, so an odd default-RoPE
    dimension d works as in transformers (ceil(d/2) frequencies theta^(-2k/d), 2 ceil(d/2) channels).
    """
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: expected an object or null, got {type(params).__name__}")
    params = dict(params)
    kind = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    if not isinstance(kind, str) or kind not in _TYPE_KEYS:
        raise UnsupportedError(f"{where}: rope type {kind!r:.40} is not supported (known: {', '.join(_TYPE_KEYS)})")
    if "rope_theta" in params:
        theta = _num(where, "rope_theta", params.pop("rope_theta"))
    if "partial_rotary_factor" in params:
        partial = _num(where, "partial_rotary_factor", params.pop("partial_rotary_factor"))
    unknown = sorted(set(params) - _TYPE_KEYS[kind])
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' for rope type {kind!r}")
    missing = [k for k in _REQUIRED.get(kind, ()) if params.get(k) is None]
    if missing:
        raise ConfigError(f"{where}: rope type {kind!r} needs key '{missing[0]}'")
    if not 0 < partial <= 1:
        raise ConfigError(f"{where}: 'partial_rotary_factor' must be in (0, 1], got {partial}")
    rotary_dim = int(head_dim * partial)
    if rotary_dim < 2 or (rotary_dim % 2 and not (odd_rotary_dim and kind == "default")):
        raise ConfigError(f"{where}: rotary dimension {rotary_dim} (head_dim x partial_rotary_factor) must be even")
    fields: dict[str, Any] = {}
    for key in ("factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "attention_factor"):
        if params.get(key) is not None:
            fields[key] = float(_num(where, key, params[key]))
    for key in ("mscale", "mscale_all_dim"):  # 0 is allowed: transformers then ignores both
        if params.get(key) is not None:
            fields[key] = float(_num(where, key, params[key], zero=True))
    if params.get("original_max_position_embeddings") is not None:
        fields["original_max_position_embeddings"] = _num(
            where, "original_max_position_embeddings", params["original_max_position_embeddings"], integer=True
        )
    for key in ("short_factor", "long_factor"):
        if key in params:
            values = params[key]
            if not isinstance(values, list) or len(values) != rotary_dim // 2:
                raise ConfigError(f"{where}: '{key}' must be a list of {rotary_dim // 2} numbers")
            fields[key] = tuple(float(_num(where, key, v)) for v in values)
    if kind == "dynamic":
        # transformers' dynamic NTK scales relative to max_position_embeddings and ignores this key
        given = fields.pop("original_max_position_embeddings", None)
        if given is not None and given != max_position_embeddings:
            raise UnsupportedError(f"{where}: dynamic RoPE with 'original_max_position_embeddings' ({given}) other "
                                   f"than 'max_position_embeddings' ({max_position_embeddings}) is ambiguous")
    if kind in ("llama3", "yarn", "longrope"):
        if original_max_position_embeddings is not None and not nested:
            fields["original_max_position_embeddings"] = original_max_position_embeddings
        fields.setdefault("original_max_position_embeddings", max_position_embeddings)
        if fields["original_max_position_embeddings"] is None:
            raise ConfigError(f"{where}: rope type {kind!r} needs 'original_max_position_embeddings'")
    if kind == "yarn":
        fields.setdefault("beta_fast", 32.0)
        fields.setdefault("beta_slow", 1.0)
        truncate = params.get("truncate", True)
        if not isinstance(truncate, bool):
            raise ConfigError(f"{where}: 'truncate' must be true or false, got {truncate!r:.40}")
        if nested and not truncate:  # transformers reads it from the top level of rope_parameters only
            raise UnsupportedError(f"{where}: 'truncate': false inside per-layer-type rope_parameters is ignored "
                                   "by transformers; refusing rather than guessing")
        fields["truncate"] = truncate
    # Equal factors (Llama 4 Scout's 1 / 1) leave no smoothed band: transformers only warns, and computes
    # a step (slow frequencies / factor, the rest kept), as the generated code does.
    if kind == "llama3" and fields["low_freq_factor"] > fields["high_freq_factor"]:
        raise ConfigError(f"{where}: 'low_freq_factor' must not exceed 'high_freq_factor'")
    if not theta > 1:  # theta 1 makes every frequency 1 (and YaRN divides by log(theta))
        raise ConfigError(f"{where}: 'rope_theta' must be greater than 1, got {theta!r:.40}")
    return Rope(name=name, type=kind, theta=float(theta), rotary_dim=rotary_dim, partial_rotary_factor=partial,
                **fields)


def lower_rope(
    r: ConfigReader,
    *,
    head_dim: int,
    layer_types: set[str],
    default_theta: dict[str, float],
    local_theta_key: str | None = None,
    max_position_embeddings: int | None = None,
    original_max_position_embeddings: int | None = None,
    odd_rotary_dim: bool = False,
) -> dict[str, Rope]:
    """Return the RoPE table of each layer type present (``full_attention`` / ``sliding_attention``).

    ``default_theta`` gives the theta a family uses when the config names none, per layer type.
    ``local_theta_key`` is the v4 key of a separate theta for sliding layers (Gemma 3), which
    gives sliding layers a table of their own. ``max_position_embeddings`` (the family's value,
    default included; read from the config when not given) and ``original_max_position_embeddings``:
    see ``rope_table``, as for ``odd_rotary_dim``.
    """
    partial = r.float("partial_rotary_factor", 1.0)
    if max_position_embeddings is None:
        max_position_embeddings = r.int("max_position_embeddings", None, nullable=True)
    separate_local = local_theta_key is not None
    nested = False
    if r.has("rope_parameters") and r.raw["rope_parameters"] is not None:
        params = r.any("rope_parameters")
        if r.raw.get("rope_scaling") is not None:
            raise ConfigError(f"{r.where}: give either 'rope_parameters' or 'rope_scaling', not both")
        r.any("rope_scaling")
        if isinstance(params, dict) and set(params) & set(LAYER_TYPE_KEYS):
            per_type = params
            unknown = sorted(set(per_type) - set(LAYER_TYPE_KEYS))
            if unknown:
                raise ConfigError(f"{r.where}: unknown layer type '{unknown[0]}' in 'rope_parameters'")
            separate_local = nested = True
        else:
            per_type = {t: params for t in LAYER_TYPE_KEYS}
        theta_fallback = {t: r.float("rope_theta", default_theta[t]) for t in LAYER_TYPE_KEYS}
        if local_theta_key:
            theta_fallback["sliding_attention"] = r.float(local_theta_key, default_theta["sliding_attention"])
    else:
        scaling = r.any("rope_scaling")
        r.any("rope_parameters")
        global_theta = r.float("rope_theta", default_theta["full_attention"])
        local_theta = r.float(local_theta_key, default_theta["sliding_attention"]) if local_theta_key else global_theta
        per_type = {"full_attention": scaling or {}, "sliding_attention": {} if local_theta_key else (scaling or {})}
        theta_fallback = {"full_attention": global_theta, "sliding_attention": local_theta}
    tables: dict[str, Rope] = {}
    for layer_type in sorted(layer_types):
        name = "local" if separate_local and layer_type == "sliding_attention" else "global"
        where = f"{r.where}: rope parameters of {layer_type}"
        params = per_type.get(layer_type) or {}
        tables[layer_type] = rope_table(
            name, params, theta=theta_fallback[layer_type], head_dim=head_dim, partial=partial, where=where,
            max_position_embeddings=max_position_embeddings,
            original_max_position_embeddings=original_max_position_embeddings, nested=nested,
            odd_rotary_dim=odd_rotary_dim,
        )
    return tables
