"""The mixer protocol: each kind of token mixer (``Layer.mixer``) in one place.

A kind is declared once, in its own module of this package (``mixers/<kind>.py``), as a
``MixerKind``: its pattern letter, the module name its layers store it under, its generated class
and template, its checkpoint tensors, its Config fields and template context, the cache its layers
get, and its words for the card, describe and diagrams. Every other pass asks here instead of
reading ``arch.layers[0].mixer``: a model may mix kinds (Qwen3.5: three Gated DeltaNet layers for
every attention layer), and only softmax-attention layers have spans, windows, RoPE and a KV cache.

The two softmax kinds (plain attention, latent attention) are the templates' own; every other kind
is *recurrent*: its generated class takes ``forward(x)`` (no mask, no positions), keeps a state of
constant size in ``self.cache`` when decoding, and makes an empty one with ``new_cache(batch)``.
Modules are found by name, so adding a kind is adding a file (and its IR model to ``schemas``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ....schemas.arch import Architecture, Attention, Layer, Mla, Names

SOFTMAX_KINDS = ("attention", "mla")  # attention over cached keys and values
CLASS_NAMES = {"attention": "Attention", "mla": "Attention"}
CACHE_WORDS = {"attention": "KV cache", "mla": "latent cache"}
SOFTMAX_WORDS = {"attention": "attention", "mla": "latent attention"}


def _none(*_: Any) -> Any:
    return None


@dataclass(frozen=True)
class MixerKind:
    """One recurrent mixer kind. The callables receive the kind's IR model (``mixer``) first."""

    kind: str  # the IR discriminator (Layer.mixer.kind)
    letter: str  # its letter in the layer pattern (softmax layers: S/C/F/N from their span)
    class_name: str  # the generated class
    attr: str  # the Names field that holds the block's module (and checkpoint) name
    template: str  # included by file.py.j2 (model.py) when a model has layers of the kind
    cache_template: str  # the state its layers keep between decoding calls: included by runtime_file.py.j2
    words: str  # "linear attention (Gated DeltaNet)": card, describe, diff
    short_words: str  # "linear attention": comments in the generated file
    title: str  # "Gated DeltaNet": diagram labels
    cache_word: str  # "recurrent state": what enable_cache gives its layers
    # rows(mixer, prefix, hidden, linear, norm_rows, rows): the block's checkpoint tensors (weight_map)
    rows: Callable[..., None]
    # state_bytes(mixer, conv_bytes) -> bytes of one layer's cache per sequence, constant in the text length
    state_bytes: Callable[[Any, int], int]
    # config_fields(mixer) -> the Config fields the generated class reads
    config_fields: Callable[[Any], list[dict[str, Any]]]
    # context(mixer) -> what the kind's template prints (templates: mx[kind])
    context: Callable[[Any], dict[str, Any]]
    # parity_scales(mixer, block, norm_spread) -> parameter-name suffix -> (mean, std) for replicas
    parity_scales: Callable[[Any, str, float], dict[str, tuple[float, float]]] = lambda *_: {}
    # features(arch, mixer) -> describe's sentences about the kind's layers
    features: Callable[[Architecture, Any], list[str]] = lambda *_: []
    # suspects(mixer, module) -> divergence report: what to look at when such a layer diverges first
    suspects: Callable[[Any, str], str] = lambda mixer, module: f"{module}"
    # diagram(arch, mixer) -> (box title, lines)
    diagram: Callable[[Architecture, Any], tuple[str, list[str]]] | None = None
    # validate(arch, mixer) -> None or raises UnsupportedError: what the template implements
    validate: Callable[[Architecture, Any], None] = _none
    extra: dict[str, Any] = field(default_factory=dict)


KINDS: dict[str, MixerKind] = {}
# letters the card gives layers that are not a registered kind: attention spans (S sliding, C chunked, F full,
# N none), latent attention (A), feed-forward-only layers (E experts, D dense); lower case: the same without RoPE
RESERVED_LETTERS = "SCFNADE"


def register(kind: MixerKind) -> MixerKind:
    if kind.kind in KINDS or kind.kind in SOFTMAX_KINDS:
        raise ValueError(f"mixer kind {kind.kind!r} is registered twice")
    if any(other.letter == kind.letter for other in KINDS.values()) or kind.letter.upper() in RESERVED_LETTERS:
        raise ValueError(f"mixer kind {kind.kind!r}: pattern letter {kind.letter!r} is taken")
    KINDS[kind.kind] = kind
    return kind


def discover() -> dict[str, MixerKind]:
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        importlib.import_module(f"{__package__}.{info.name}")
    return KINDS


def recurrent(kind: str) -> MixerKind | None:
    """The registered recurrent kind ``kind`` (None for the softmax kinds)."""
    return KINDS.get(kind)


def is_softmax(layer: Layer) -> bool:
    return layer.mixer is not None and layer.mixer.kind in SOFTMAX_KINDS


def attention_layers(arch: Architecture) -> list[Layer]:
    """The layers whose mixer is softmax attention (plain or latent): those with spans, RoPE and a KV cache."""
    return [layer for layer in arch.layers if is_softmax(layer)]


def first_attention(arch: Architecture) -> Attention | Mla | None:
    return next((layer.mixer for layer in attention_layers(arch)), None)


def mixer_kinds(arch: Architecture) -> dict[str, object]:
    """The first mixer of each kind, in order of first appearance."""
    kinds: dict[str, object] = {}
    for layer in arch.layers:
        for mixer in (layer.mixer, layer.parallel_mixer):  # None: a layer that is only a feed-forward block
            if mixer is not None:
                kinds.setdefault(mixer.kind, mixer)
    return kinds


def recurrent_kinds(arch: Architecture) -> list[tuple[MixerKind, Any]]:
    """(kind, its first mixer) for each recurrent kind the model has, in order of first appearance."""
    return [(KINDS[kind], mixer) for kind, mixer in mixer_kinds(arch).items() if kind in KINDS]


def is_hybrid(arch: Architecture) -> bool:
    """Layers of more than one mixer kind: the DecoderLayer picks its mixer per layer (a parallel mixer, beside
    the layer's attention in every layer, does not make a model hybrid)."""
    return len({layer.mixer.kind for layer in arch.layers if layer.mixer is not None}) > 1


def module_name(kind: str, names: Names) -> str:
    """The attribute (and checkpoint name) of a layer's mixer block."""
    return getattr(names, KINDS[kind].attr) if kind in KINDS else names.attn


def letter_of(layer: Layer) -> str | None:
    """A recurrent layer's pattern letter (None: softmax attention, lettered by its span)."""
    kind = KINDS.get(layer.mixer.kind) if layer.mixer is not None else None
    return kind.letter if kind else None


def kind_words(kind: str) -> str:
    return KINDS[kind].words if kind in KINDS else SOFTMAX_WORDS.get(kind, kind)


def cache_word(kind: str) -> str:
    return KINDS[kind].cache_word if kind in KINDS else CACHE_WORDS[kind]


def class_name(kind: str) -> str:
    return KINDS[kind].class_name if kind in KINDS else CLASS_NAMES[kind]


def layer_state_bytes(layer: Layer, conv_bytes: int) -> int:
    """Bytes of a recurrent layer's cache per sequence, constant in the text length (0: a softmax layer)."""
    return sum(KINDS[mixer.kind].state_bytes(mixer, conv_bytes) for mixer in (layer.mixer, layer.parallel_mixer)
               if mixer is not None and mixer.kind in KINDS)


discover()
