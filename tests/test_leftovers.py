"""The generated files carry no leftovers of the templates: no multiply by 1.0, no `x * (w)` wrapper around a
single term, no add of 0.0, no loop over an empty tuple, no empty or placeholder comments.

It reads the committed files under generated/, which `llmgen check` (tests/test_cli.py) proves are exactly what
the templates render today, so every committed model (dense, MoE, MLA, hybrid, sliding) is covered without
rendering them again."""

from __future__ import annotations

import re

import pytest
from conftest import GENERATED

LEFTOVERS = {
    "a multiply by 1.0": re.compile(r"\* 1\.0\b(?![\d.])|(?<![\d.])\b1\.0 \*(?! \()"),
    "a division by 1.0": re.compile(r"/ 1\.0\b(?![\d.])"),
    "an add of 0.0": re.compile(r"[+-] 0\.0\b(?![\d.])"),
    "one term in parentheses after *": re.compile(r"\* \((self\.[\w.]+(\(\))?|[a-z_]\w*)\)"),
    "a loop over an empty tuple": re.compile(r"\bin \(\):"),
    "an empty comment": re.compile(r"#\s*$"),
    "a placeholder comment": re.compile(r"#.*\b(TODO|FIXME|XXX)\b"),
    "a doubled word": re.compile(r"#.*\b(the|a|of|to|is) \1\b"),
}
FILES = sorted(GENERATED.glob("*/*.py"))


def test_there_are_files_to_read():
    assert len({path.parent for path in FILES}) >= 20


@pytest.mark.parametrize("what, pattern", LEFTOVERS.items(), ids=list(LEFTOVERS))
def test_no_leftover(what, pattern):
    found = [f"{path.relative_to(GENERATED)}:{number}: {line.strip()}"
             for path in FILES for number, line in enumerate(path.read_text().splitlines(), 1)
             if pattern.search(line) and not line.lstrip().startswith(("#!", "# fmt:"))]
    assert not found, f"{what}:\n" + "\n".join(found[:20])


def test_the_patterns_catch_what_they_name():
    samples = {"a multiply by 1.0": "y = x * 1.0", "a division by 1.0": "y = x / 1.0", "an add of 0.0": "y = x + 0.0",
               "one term in parentheses after *": "return (h * (self.weight.float())).type_as(x)",
               "a loop over an empty tuple": "for key in ():", "an empty comment": "x = 1  #",
               "a placeholder comment": "# TODO: later", "a doubled word": "# scale the the keys"}
    for what, sample in samples.items():
        assert LEFTOVERS[what].search(sample), what
    for fine in ("return 1.0 / (theta ** x)", "y = x * 1.05", "eps = 1e-06  # of the norm", "y = x * (1 + w)"):
        assert not any(pattern.search(fine) for pattern in LEFTOVERS.values()), fine
