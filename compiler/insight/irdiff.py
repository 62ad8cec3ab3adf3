"""``llmgen diff A B``: how two architectures differ, in words, then in generated code.

The words come from walking the IR field by field (so a field the IR gains later shows up
without edits here): every top-level field, every nested model, and every layer field
summarised over the layers (one value, or one value per kind of layer, or runs). Known fields
get readable wording; any other field falls back to ``path: A -> B``. The code diff renders
both models in memory with the same provenance, so only architecture differs.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from ...schemas.arch import Architecture
from .card import Model, attention_kind, compress, human_bytes, layer_letter, load_model, period, recurrent_bytes
from ..basics.errors import LlmgenError
from ..passes.format import format_source
from ..passes.load import shorten
from ..passes.mixers import KINDS
from ..passes.render_files import render_model_files
from ..passes.render import Provenance, model_context
from ..passes.weight_map import weight_map

ABSENT = "absent"
PRESENT = "present"
SPAN_PATHS = ("mixer.span", "mixer.window")
NAMES_PREFIX = "names."
MIXER_PREFIX = {kind: kind for kind in KINDS}  # IR paths of a recurrent mixer's fields: "gated_deltanet.num_v_heads"
LETTER_WORDS = {"S": "sliding", "F": "full", "s": "sliding NoPE", "f": "full NoPE", "L": "linear"}
BLOCK_WORDS = {"pre_norm": "pre", "post_norm": "post", "sandwich": "sandwich", "parallel": "parallel"}
# Readable names of known paths; None silences a path another phrase already covers.
LABELS: dict[str, str | None] = {
    "model_type": "model_type", "hidden_size": "hidden size", "max_position_embeddings": "context length",
    "dtype": "weights dtype", "num_layers": "layers", "embedding.vocab_size": "vocabulary",
    "embedding.scale": "embedding scale", "head.softcap": "final logit soft-cap", "head.bias": "an output-head bias",
    "mixer.num_heads": "query heads", "mixer.num_kv_heads": "KV heads", "mixer.head_dim": "head_dim",
    "mixer.scale": "attention score scale", "mixer.softcap": "attention logit soft-cap",
    "mixer.q_bias": "a query bias", "mixer.k_bias": "a key bias", "mixer.v_bias": "a value bias",
    "mixer.o_bias": "an output-projection bias", "mixer.qk_norm_spec": None, "mixer.rope.type": "RoPE scaling",
    "mixer.rope.theta": "RoPE theta", "mixer.rope": "RoPE", "mixer.kind": "mixer", "ffn.kind": "feed-forward",
    "ffn.gated": "a gated MLP (GLU)", "ffn.activation": "MLP activation", "ffn.intermediate_size": "MLP width",
    "ffn.bias": "MLP biases", "norm.kind": "norm kind", "norm.eps": "norm eps", "norm.bias": "norm biases",
    "final_norm.eps": "final norm eps", "final_norm.kind": "final norm kind", "block": "norms", "names": None,
}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Dotted paths -> leaf values; a nested model also gets a PRESENT marker at its own path."""
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        if prefix:
            out[prefix] = PRESENT
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else key, out)
    else:
        out[prefix] = value


def _layer_fields(arch: Architecture, layer: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in layer:
        if name == "index":
            continue
        if name == "mixer" and getattr(value, "rope", None):
            table = arch.rope_table(value.rope).model_dump(exclude={"name"})
            value = {**dict(value), "rope": table}  # compare the table, not its name
        if name in ("mixer", "ffn") and value is None:  # a layer of one block: the other is absent
            continue
        if name == "mixer" and layer.mixer.kind in MIXER_PREFIX:  # a linear mixer's fields are facts of their own
            name = MIXER_PREFIX[layer.mixer.kind]
        _flatten(value, name, out)
    return out


def summarise(arch: Architecture) -> dict[str, tuple[str, Any]]:
    """path -> ("one", value) or ("mixed", words) for every IR field."""
    facts: dict[str, tuple[str, Any]] = {}
    for name, value in arch:
        if name in ("layers", "rope", "schema_version"):
            continue
        flat: dict[str, Any] = {}
        _flatten(value, name, flat)
        facts.update({path: ("one", v) for path, v in flat.items()})
    facts["num_layers"] = ("one", arch.num_layers)
    letters = [layer_letter(layer) for layer in arch.layers]
    per_layer = [_layer_fields(arch, layer) for layer in arch.layers]
    paths = list(dict.fromkeys(path for fields in per_layer for path in fields))
    for path in paths:
        values = [fields.get(path, ABSENT) for fields in per_layer]
        if path.split(".", 1)[0] in ("mixer", "ffn", *MIXER_PREFIX.values()):  # each block kind: over its own layers
            kept = [(v, letter) for v, letter in zip(values, letters) if v is not ABSENT]
            values, letters_of = [v for v, _ in kept], [letter for _, letter in kept]
            facts[path] = ("one", values[0]) if all(v == values[0] for v in values) else ("mixed", _mixed(values, letters_of))
            continue
        facts[path] = ("one", values[0]) if all(v == values[0] for v in values) else ("mixed", _mixed(values, letters))
    return facts


def _show(value: Any) -> str:
    if value is None or value == ABSENT:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value[:4]) + (", ..." if len(value) > 4 else "") + "]"
    return str(value)


def _mixed(values: list[Any], letters: list[str]) -> str:
    by_letter: dict[str, set[str]] = {}
    for value, letter in zip(values, letters):
        by_letter.setdefault(letter, set()).add(_show(value))
    if all(len(shown) == 1 for shown in by_letter.values()):
        return ", ".join(f"{LETTER_WORDS.get(k, k)}: {next(iter(v))}" for k, v in by_letter.items())
    runs: list[str] = []
    for value in values:
        shown = _show(value)
        if runs and runs[-1].rsplit("×", 1)[0] == shown:
            head, _, count = runs[-1].rpartition("×")
            runs[-1] = f"{head}×{int(count) + 1}"
        else:
            runs.append(f"{shown}×1")
    runs = [r[:-2] if r.endswith("×1") else r for r in runs]
    return ", ".join(runs[:8]) + (", ..." if len(runs) > 8 else "") + " (by layer)"


def span_words(arch: Architecture) -> str:
    spans = "".join("S" if getattr(layer.mixer, "span", "full") == "sliding" else "F" for layer in arch.layers)
    windows = sorted({layer.mixer.window for layer in arch.layers if spans[layer.index] == "S"})
    window = "/".join(map(str, windows))
    if "S" not in spans:
        return "full attention on every layer"
    if "F" not in spans:
        return f"sliding window {window} on every layer"
    unit = period(spans)
    if unit and unit.count("S") % unit.count("F") == 0:
        return f"{unit.count('S') // unit.count('F')}:1 sliding window {window} ({compress(spans)})"
    return f"sliding window {window} on {spans.count('S')} of {len(spans)} layers ({compress(spans)})"


LABELS.update({kind.kind: f"{kind.title} ({kind.short_words}) layers" for kind in KINDS.values()})
PREFIX_WORDS = (("mixer.rope.", "RoPE "), ("mixer.", "attention "),
                *((f"{kind.kind}.", f"{kind.title} ") for kind in KINDS.values()), ("ffn.", "MLP "),
                ("final_norm.", "final norm "), ("norm.", "norm "), ("embedding.", "embedding "), ("head.", "output head "))


def label_for(path: str) -> str | None:
    """Readable words for an IR path: a known label, else the path in words."""
    if path in LABELS:
        return LABELS[path]
    if path.endswith("weight_in_compute_dtype"):
        return f"{'final norm' if path.startswith('final_norm') else 'norm'} weight applied in float32"
    for prefix, words in PREFIX_WORDS:
        if path.startswith(prefix):
            return words + path[len(prefix):].replace("_", " ")
    return path.replace("_", " ")


def _phrase(path: str, a: tuple[str, Any], b: tuple[str, Any]) -> str | None:
    label = label_for(path)
    if label is None:
        return None
    (kind_a, va), (kind_b, vb) = a, b
    if kind_a == kind_b == "one":
        if path == "block":
            return f"norms: {BLOCK_WORDS.get(va, va)} → {BLOCK_WORDS.get(vb, vb)}"
        if path == "mixer.qk_norm":
            if va == "none":
                return f"B adds QK-norm ({vb.replace('_', ' ')})"
            return "B drops QK-norm" if vb == "none" else f"QK-norm: {va} → {vb}"
        if path.endswith("norm.weight_offset"):
            where = "B's norms scale" if path == "norm.weight_offset" else f"B's {label_for(path)[:-14]} scales"
            return f"{where} by ({_show(vb)} + w)" if vb else f"{where} by w (no offset)"
        if path == "head.tied":
            return "B ties the output head to the embedding" if vb else "B unties the output head (separate lm_head)"
        if path == "mixer.rope" and {va, vb} <= {PRESENT, None, ABSENT}:
            return "B uses RoPE" if va in (None, ABSENT) else "B drops RoPE (NoPE)"
        if isinstance(va, bool) and isinstance(vb, bool):
            return f"B {'adds' if vb else 'drops'} {label}" if path in LABELS else f"{label}: {_show(va)} → {_show(vb)}"
        if va in (None, ABSENT) and vb not in (None, ABSENT) and vb != PRESENT:
            return f"B adds {label} {_show(vb)}"
        if vb in (None, ABSENT) and va not in (None, ABSENT) and va != PRESENT:
            return f"B drops {label} (A: {_show(va)})"
        if PRESENT in (va, vb):
            return f"B {'adds' if vb == PRESENT else 'drops'} {label}"
    shown = [v if k == "mixed" else _show(v) for k, v in (a, b)]
    return f"{label}: {shown[0]} → {shown[1]}"


def differences(a: Architecture, b: Architecture) -> list[str]:
    """What B changes relative to A, one short phrase each, in IR order."""
    fa, fb = summarise(a), summarise(b)
    out = []
    kinds = [attention_kind(arch).split(", ")[0] for arch in (a, b)]
    if kinds[0] != kinds[1]:
        out.append(f"attention: {kinds[0]} → {kinds[1]}")
    counts = [{kind: sum(kind in (getattr(layer.mixer, "kind", None), getattr(layer.parallel_mixer, "kind", None))
                         for layer in arch.layers) for kind in KINDS}
              for arch in (a, b)]
    if counts[0] != counts[1]:  # hybrid models: which layers are recurrent, of which kind
        strips = [compress("".join(layer_letter(layer) for layer in arch.layers)) for arch in (a, b)]
        legend = ", ".join(f"{KINDS[kind].letter}: {KINDS[kind].short_words} ({KINDS[kind].title}), "
                           f"{counts[0][kind]} → {counts[1][kind]} layers"
                           for kind in KINDS if counts[0][kind] != counts[1][kind])
        out.append(f"layer pattern: {strips[0]} → {strips[1]} ({legend})")
    states = [sum(recurrent_bytes(layer) for layer in arch.layers) for arch in (a, b)]
    if states[0] != states[1]:  # the recurrent layers' cache: constant in the text length
        out.append("recurrent state per sequence (bf16 convolution windows, float32 states): "
                   + " → ".join(human_bytes(n) if n else "none" for n in states))
    spans = span_words(a), span_words(b)
    if spans[0] != spans[1]:
        if spans[0].startswith("full attention on every"):
            out.append(f"B uses {spans[1]}")
        elif spans[1].startswith("full attention on every"):
            out.append(f"B drops sliding-window attention (A: {spans[0]})")
        else:
            out.append(f"sliding pattern: {spans[0]} → {spans[1]}")
    silenced: set[str] = set()
    renamed: list[str] = []
    for path in dict.fromkeys([*fa, *fb]):
        if path in SPAN_PATHS or any(path.startswith(s + ".") for s in silenced):
            continue
        va, vb = fa.get(path, ("one", ABSENT)), fb.get(path, ("one", ABSENT))
        if va == vb:
            continue
        if path.startswith(NAMES_PREFIX) and va[1] != PRESENT:
            renamed.append(f"{_show(va[1])} → {_show(vb[1])}")
            continue
        if PRESENT in (va[1], vb[1]) and va[0] == vb[0] == "one":
            silenced.add(path)  # a whole sub-model appears or goes: say so once, not per field
        phrase = _phrase(path, va, vb)
        if phrase:
            out.append(phrase)
    if renamed:
        out.append("checkpoint names: " + ", ".join(renamed))
    return out


PROVENANCE = Provenance("llmgen-diff", "in-memory", "llmgen diff A B")


def render_model(arch: Architecture) -> str:
    """model.py for ``arch`` with a neutral header, so two renders differ only in architecture."""
    return format_source(render_model_files(model_context(arch, weight_map(arch), PROVENANCE))["model.py"], name="model.py")


def code_diff(a: Model, b: Model, context: int = 3) -> str:
    lines = difflib.unified_diff(render_model(a.arch).splitlines(), render_model(b.arch).splitlines(),
                                 f"A/model.py ({a.label})", f"B/model.py ({b.label})", lineterm="", n=context)
    return "\n".join(lines)


def load_pair(a: str, b: str) -> tuple[Model, Model]:
    """Both models; an error names the side it comes from."""
    models = []
    for side, source in (("A", a), ("B", b)):
        try:
            models.append(load_model(source))
        except LlmgenError as exc:
            raise type(exc)(f"{side} ({shorten(source)}): {exc}") from None
    return models[0], models[1]


def format_diff(a: Model, b: Model, *, code: bool = True, context: int = 3) -> str:
    words = differences(a.arch, b.arch)
    lines = [f"A = {a.label}", f"B = {b.label}"]
    lines += [f"- {w}" for w in words] if words else ["no architectural differences"]
    if code:
        patch = code_diff(a, b, context)
        lines += ["", patch if patch else "(the generated model.py files are identical)"]
    return "\n".join(lines)
