"""The card's layer pattern: one letter per layer (its mixer, or its feed-forward when it has none), the
legend's words, and the compressed strip (``K×4 a K×3``). Split from card.py; card re-exports it."""

from __future__ import annotations

from typing import Any

from ..passes.mixers import KINDS


class _KindTable:
    """kind -> a registered recurrent kind's letter or words (compiler/passes/mixers), read at lookup time."""

    def __init__(self, attr: str) -> None:
        self.attr = attr

    def __contains__(self, kind: object) -> bool:
        return kind in KINDS

    def __getitem__(self, kind: str) -> str:
        return getattr(KINDS[kind], self.attr)


MIXER_LETTERS = _KindTable("letter")  # mixers other than attention with a letter of their own
MIXER_WORDS = _KindTable("words")
# latent attention's letter; with S/C/F/N (attention spans) and E/D (layers without a mixer) it is reserved
# (compiler/passes/mixers.RESERVED_LETTERS): a recurrent kind's letter never means two things in one pattern
LATENT_LETTER, LATENT_WORDS = "A", "multi-head latent attention (MLA)"


def layer_letter(layer: Any) -> str:
    """S sliding-window attention, C chunked attention, F full attention (lower case: no RoPE); other mixers:
    their kind's initial."""
    mixer = layer.mixer
    if mixer is None:  # a layer that is only a feed-forward block
        return "E" if layer.ffn.kind == "moe" else "D"
    if mixer.kind == "attention":
        letter = "S" if mixer.span == "sliding" else "C" if mixer.span == "chunked" else "F"
    elif mixer.kind == "mla":
        letter = LATENT_LETTER
    elif mixer.kind in MIXER_LETTERS:
        letter = MIXER_LETTERS[mixer.kind]
    else:  # a kind spelling its own letters (compressed attention: S, K, H), else its initial
        letter = getattr(mixer, "letter", None) or mixer.kind[0].upper()
    return letter.lower() if getattr(mixer, "rope", "") is None else letter


def letter_meaning(layer: Any) -> str:
    mixer = layer.mixer
    if mixer is None:
        return "experts only (no mixer)" if layer.ffn.kind == "moe" else "MLP only (no mixer)"
    if mixer.kind == "attention":
        words = (f"sliding window {mixer.window}" if mixer.span == "sliding" else f"chunked attention (chunk "
                 f"{mixer.chunk_size})" if mixer.span == "chunked" else "full attention")
    elif mixer.kind == "mla":
        words = LATENT_WORDS
    elif mixer.kind in MIXER_WORDS:
        words = MIXER_WORDS[mixer.kind]
    elif mixer.kind == "compressed_attention":  # DeepSeek-V4: a window, plus pooled entries (chosen by an indexer)
        words = {"S": f"sliding window {mixer.window}", "K": "compressed sparse", "H": "heavily compressed"}[mixer.letter]
    else:
        words = mixer.kind.replace("_", " ")
    if layer.parallel_mixer is not None:  # Falcon-H1: a recurrent mixer beside the attention
        words += f" + {MIXER_WORDS[layer.parallel_mixer.kind]} in parallel"
    return words + (", no RoPE (NoPE)" if getattr(mixer, "rope", "") is None else "")


def period(letters: str) -> str | None:
    """The shortest unit that, repeated at least twice, spells ``letters`` (a partial last repeat allowed)."""
    n = len(letters)
    for size in range(1, n // 2 + 1):
        if letters == (letters[:size] * (n // size + 1))[:n]:
            return letters[:size]
    return None


def compress(letters: str) -> str:
    """SSSSSFSSSSSF...SS -> 'SSSSSF×4 + SS'; FFFF -> 'F×4'; irregular strings as runs."""
    n = len(letters)
    unit = period(letters)
    if unit:
        reps = n // len(unit)
        rest = letters[reps * len(unit):]
        return f"{unit}×{reps}" + (f" + {rest}" if rest else "")
    runs: list[str] = []
    i = 0
    while i < n:
        j = i
        while j < n and letters[j] == letters[i]:
            j += 1
        runs.append(letters[i] if j - i == 1 else f"{letters[i]}×{j - i}")
        i = j
    return " ".join(runs)
