"""``llmgen card``: a model's facts at a glance, computed from the IR.

Parameter counts come from the weight map (the same one the generated file loads), the layer
pattern and the KV-cache sizes from each layer's mixer, and the feature sentences from
``describe.features`` (the generated file's own docstring). Everything works on any
``Architecture``; fields a newer IR adds (MoE experts, MLA latents, NoPE, layers without a
cache) are read with ``getattr`` so they show up without edits here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ...schemas.arch import Architecture
from .describe import features
from ..basics.errors import ConfigError, SourceError
from ..passes.load import load_config, path_exists
from .card_pattern import (  # noqa: F401  (re-exported: diagram, irdiff, gallery use them from here)
    LATENT_LETTER, LATENT_WORDS, MIXER_LETTERS, MIXER_WORDS, compress, layer_letter, letter_meaning, period,
)
from ..passes.mixers import layer_state_bytes
from ..passes.lowering import lower
from ..passes.validate import validate
from ..passes.weight_map import WeightEntry, active_parameter_count, entry_size, weight_map

KV_BYTES = 2  # bf16
CONTEXTS = {"4k": 4096, "32k": 32768, "128k": 131072}
EXPERT_COUNT = ("num_experts",)
EXPERTS_ACTIVE = ("experts_per_token", "num_experts_per_tok", "top_k")


@dataclass(frozen=True)
class Model:
    """A model to describe: a label, where it came from and its IR."""

    label: str
    source: str
    arch: Architecture


def load_model(source: str) -> Model:
    """A generated directory (its arch.json, else its config.json), a config file or dir, or a hub/catalog id."""
    path = Path(source).expanduser()
    arch_file = path / "arch.json"
    if path_exists(path, source) and path.is_dir() and arch_file.is_file():
        label = path.resolve().name
        manifest = path / "llmgen.json"
        if manifest.is_file():
            try:
                label = json.loads(manifest.read_bytes()).get("source") or label
            except (ValueError, AttributeError, OSError):
                pass
        try:
            text = arch_file.read_bytes().decode("utf-8")
        except OSError as err:
            raise SourceError(f"cannot read {arch_file}: {err.strerror or type(err).__name__}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{arch_file}: not UTF-8 text (byte {err.start}: {err.reason})") from None
        try:
            return Model(label, str(path), validate(Architecture.model_validate_json(text)))
        except ValidationError:
            if not (path / "config.json").is_file():
                raise ConfigError(f"{arch_file}: not an architecture this llmgen reads, and no config.json beside it") from None
    loaded = load_config(source)
    return Model(loaded.source_id, loaded.source_id, validate(lower(loaded.raw)))


# --- parameters and KV cache ------------------------------------------------------------------


def _size(entry: WeightEntry, arch: Architecture) -> int:
    return entry_size(entry, arch)  # over its layers (and experts)


def _first(obj: Any, names: tuple[str, ...]) -> Any:
    return next((getattr(obj, name) for name in names if getattr(obj, name, None) is not None), None)


def _active_share(arch: Architecture, entry: WeightEntry) -> float:
    """Share of this tensor used per token: experts_per_token / num_experts for routed experts, else 1."""
    ffn = arch.layers[0].ffn
    total, active = _first(ffn, EXPERT_COUNT), _first(ffn, EXPERTS_ACTIVE)
    if total and active and ".experts." in entry.param:
        return active / total
    return 1.0


def _is_embedding(arch: Architecture, entry: WeightEntry) -> bool:
    """Token (and position) embeddings and an untied output head: the vocabulary-sized tables."""
    return entry.role == "embedding" or (not entry.per_layer and entry.shape[:1] == (arch.embedding.vocab_size,))


def parameters(arch: Architecture) -> dict[str, Any]:
    entries = [e for e in weight_map(arch) if e.role != "buffer"]  # stored buffers are not parameters
    total = sum(_size(e, arch) for e in entries)
    embedding = sum(_size(e, arch) for e in entries if _is_embedding(arch, e))
    if any(e.routed for e in entries):
        active = active_parameter_count(arch)
    else:
        active = round(sum(_size(e, arch) * _active_share(arch, e) for e in entries))
    return {"total": total, "active_per_token": active, "embedding": embedding, "non_embedding": total - embedding,
            "embedding_share": embedding / total if total else 0.0}


def kv_bytes_per_token(layer: Any, bytes_per_value: int = KV_BYTES) -> int:
    """Bytes one token adds to this layer's cache: K and V of every KV head; MLA: its latent (and indexer key). 0: no cache."""
    mixer = layer.mixer
    if (getattr(mixer, "kv_shared", None) or getattr(mixer, "kv_source", None) is not None
            or getattr(mixer, "kv_shared_from", None) is not None):
        return 0  # reuses another layer's cache
    if getattr(mixer, "kind", None) == "compressed_attention":  # one key=value head; pooled entries per token
        comp, sel = mixer.compressor, mixer.selection
        if comp is None:
            return mixer.head_dim * bytes_per_value
        return (comp.head_dim // comp.rate + (sel.head_dim // sel.compressor.rate if sel else 0)) * bytes_per_value
    latent = getattr(mixer, "kv_lora_rank", None)
    if latent:
        indexer = getattr(mixer, "indexer", None)  # DeepSeek Sparse Attention: the indexer's key joins the latent
        index_keys = indexer.head_dim if indexer is not None else 0
        return (latent + (getattr(mixer, "qk_rope_head_dim", None) or 0) + index_keys) * bytes_per_value
    if getattr(mixer, "num_kv_heads", None) and getattr(mixer, "head_dim", None):
        value_dim = getattr(mixer, "v_head_dim", None) or mixer.head_dim
        return mixer.num_kv_heads * (mixer.head_dim + value_dim) * bytes_per_value
    return 0


def cached_tokens(layer: Any, tokens: int) -> int:
    window = getattr(layer.mixer, "window", None) or getattr(layer.mixer, "chunk_size", None)  # chunked: a ring
    if getattr(layer.mixer, "kind", None) == "compressed_attention" and layer.mixer.compressor is None:
        return min(tokens, window)  # DeepSeek-V4's sliding-only layers
    return min(tokens, window) if getattr(layer.mixer, "span", "full") in ("sliding", "chunked") and window else tokens


def recurrent_bytes(layer: Any) -> int:
    """Bytes of a linear-attention layer's state per sequence, constant in the text length (0: none)."""
    return layer_state_bytes(layer, KV_BYTES)


def cache_bytes(arch: Architecture, tokens: int) -> int:
    """Bytes (bf16) the whole cache holds after ``tokens`` tokens: each layer's bytes per token times the
    tokens it keeps (a sliding window keeps at most its window). The card's "KV at length" and the
    gallery's memory chart both use this. A linear-attention layer adds its
    constant recurrent state."""
    return sum(kv_bytes_per_token(layer) * cached_tokens(layer, tokens) + recurrent_bytes(layer)
               + compressed_window_bytes(layer, tokens) for layer in arch.layers)


def compressed_window_bytes(layer: Any, tokens: int) -> int:
    """A compressed attention layer's sliding window of key=value rows beside its pooled entries (else 0)."""
    mixer = layer.mixer
    if getattr(mixer, "kind", None) != "compressed_attention" or mixer.compressor is None:
        return 0
    return mixer.head_dim * min(tokens, mixer.window) * KV_BYTES


def kv_cache(arch: Architecture) -> dict[str, Any]:
    per_layer = [kv_bytes_per_token(layer) for layer in arch.layers]
    state = [recurrent_bytes(layer) for layer in arch.layers]
    return {
        "bytes_per_token_bf16": sum(per_layer),
        "layers_without_cache": [layer.index for layer, b, r in zip(arch.layers, per_layer, state) if not b and not r],
        "recurrent_layers": [layer.index for layer, r in zip(arch.layers, state) if r],
        "recurrent_bytes_per_sequence": sum(state),  # conv window in bf16, delta-rule state in float32
        **({"parallel_layers": [layer.index for layer in arch.layers if layer.parallel_mixer is not None]}
           if any(layer.parallel_mixer is not None for layer in arch.layers) else {}),  # a KV cache and a state
        "effective_bytes_bf16": {name: cache_bytes(arch, tokens) for name, tokens in CONTEXTS.items()},
        "beyond_trained_context": [name for name, tokens in CONTEXTS.items() if tokens > arch.max_position_embeddings],
    }


def attention_kind(arch: Architecture) -> str:
    """'MQA', 'GQA 8:1' or 'MHA', plus the sliding share: e.g. 'GQA 4:1, sliding 5:1 (window 512)'."""
    kinds = []
    for layer in arch.layers:
        mixer = layer.mixer
        if mixer is None or mixer.kind in MIXER_WORDS:
            continue  # said after the attention's kind (or no mixer at all)
        if mixer.kind != "attention":
            kinds.append(mixer.kind.upper())
        elif mixer.num_kv_heads == 1 and mixer.num_heads > 1:
            kinds.append("MQA")
        elif mixer.num_kv_heads < mixer.num_heads:
            kinds.append(f"GQA {mixer.num_heads // mixer.num_kv_heads}:1")
        else:
            kinds.append("MHA")
    words = ", ".join(dict.fromkeys(kinds)) or "no attention"
    spans = [getattr(layer.mixer, "span", None) for layer in arch.layers]
    sliding, full = spans.count("sliding"), spans.count("full")
    windows = sorted({layer.mixer.window for layer in arch.layers if getattr(layer.mixer, "span", None) == "sliding"})
    if sliding and not full:
        words += f", sliding (window {'/'.join(map(str, windows))})"
    elif sliding:
        unit = period("".join("S" if span == "sliding" else "F" for span in spans)) or ""
        if unit.count("S") and unit.count("F"):
            sliding, full = unit.count("S"), unit.count("F")
        ratio = f"{sliding // full}:1" if sliding % full == 0 else f"{sliding}:{full}"
        words += f", sliding {ratio} (window {'/'.join(map(str, windows))})"
    elif "chunked" in spans:
        chunks = sorted({layer.mixer.chunk_size for layer in arch.layers if layer.mixer.span == "chunked"})
        words += f", chunked on {spans.count('chunked')} of {len(spans)} layers (chunk {'/'.join(map(str, chunks))})"
    else:
        words += ", full"
    mixers = [m.kind for layer in arch.layers for m in (layer.mixer, layer.parallel_mixer) if m is not None]
    for kind in dict.fromkeys(kind for kind in mixers if kind in MIXER_WORDS):
        count = mixers.count(kind)
        words += f"; {MIXER_WORDS[kind]} on {count} of {len(arch.layers)} layers"
    return words


def card(model: Model) -> dict[str, Any]:
    """Everything the card shows, as JSON-ready data."""
    arch = model.arch
    letters = "".join(layer_letter(layer) for layer in arch.layers)
    legend = {}
    for layer in arch.layers:
        legend.setdefault(layer_letter(layer), letter_meaning(layer))
    nope = [layer.index for layer in arch.layers if getattr(layer.mixer, "rope", "") is None]
    notes = list(features(arch))
    if nope:
        notes.append(f"No positional encoding (NoPE) on {len(nope)} of {arch.num_layers} layers: {nope}.")
    kv = kv_cache(arch)
    if kv["layers_without_cache"]:
        notes.append(f"{len(kv['layers_without_cache'])} layers keep no KV cache of their own: {kv['layers_without_cache']}.")
    return {
        "id": model.label,
        "model_type": arch.model_type,
        "num_layers": arch.num_layers,
        "hidden_size": arch.hidden_size,
        "max_position_embeddings": arch.max_position_embeddings,
        "dtype": arch.dtype,
        "pattern": {"letters": letters, "strip": compress(letters), "legend": legend},
        "attention": attention_kind(arch),
        "parameters": parameters(arch),
        "kv_cache": kv,
        "nope_layers": nope,
        "features": notes,
    }


# --- formatting -------------------------------------------------------------------------------


def _three_digits(value: float) -> str:
    return f"{value:.2f}" if value < 9.995 else f"{value:.1f}" if value < 99.95 else f"{value:.0f}"


def human_count(n: float) -> str:
    """1236814848 -> '1.24B'; 999885952 -> '1.00B'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size * 0.9995:
            return _three_digits(n / size) + unit
    return str(int(n))


def human_bytes(n: float) -> str:
    """Binary units: 26624 -> '26.0 KiB'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size * 0.9995:
            return f"{_three_digits(n / size)} {unit}"
    return f"{int(n)} B"


def tp_rows(data: dict[str, Any], human_bytes: Any) -> list[tuple[str, str]]:
    from .tp_card import tp_rows as rows

    return rows(data, human_bytes)


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    p, kv = data["parameters"], data["kv_cache"]
    legend = ", ".join(f"{k} = {v}" for k, v in data["pattern"]["legend"].items())
    params = f"{human_count(p['total'])} total"
    if p["active_per_token"] != p["total"]:
        params += f", {human_count(p['active_per_token'])} active per token"
    params += (f"; embedding {human_count(p['embedding'])} ({p['embedding_share']:.1%}), "
               f"non-embedding {human_count(p['non_embedding'])} ({1 - p['embedding_share']:.1%})")
    recurrent = kv.get("recurrent_layers", [])
    with_cache = data["num_layers"] - len(kv["layers_without_cache"]) - len(recurrent) + len(kv.get("parallel_layers", []))
    per_token = f"{human_bytes(kv['bytes_per_token_bf16'])} per token in bf16 ({with_cache} layers, full attention assumed)"
    if recurrent:
        per_token += (f"; recurrent state {human_bytes(kv['recurrent_bytes_per_sequence'])} per sequence, constant "
                      f"({len(recurrent)} recurrent layers)")
    beyond = kv["beyond_trained_context"]
    effective = ", ".join(f"{name}: {human_bytes(b)}" for name, b in kv["effective_bytes_bf16"].items())
    effective += " (sliding windows counted" + (", recurrent layers' constant state included" if recurrent else "") + (f"; {', '.join(beyond)} beyond the trained context "
                                               f"{data['max_position_embeddings']})" if beyond else ")")
    return [
        ("layers", f"{data['num_layers']}: {data['pattern']['strip']}  ({legend})"),
        ("attention", data["attention"]),
        ("parameters", params),
        ("KV cache", per_token),
        ("KV at length", effective),
        ("context", f"{data['max_position_embeddings']} tokens, weights in {data['dtype']}"),
    ] + (tp_rows(data["tensor_parallel"], human_bytes) if "tensor_parallel" in data else [])


def format_text(data: dict[str, Any]) -> str:
    rows = summary_rows(data)
    width = max(len(k) for k, _ in rows)
    lines = [f"{data['id']}  ({data['model_type']})"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines.append("  features:")
    lines += [f"    - {note}" for note in data["features"]]
    return "\n".join(lines)


def format_markdown(data: dict[str, Any]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"## {cell(data['id'])} (`{data['model_type']}`)", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {cell(v)} |" for k, v in summary_rows(data)]
    lines += ["", "Notable features:", ""] + [f"- {cell(note)}" for note in data["features"]]
    return "\n".join(lines)


def format_card(data: dict[str, Any], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    return format_markdown(data) if fmt == "md" else format_text(data)
