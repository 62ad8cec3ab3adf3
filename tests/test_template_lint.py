"""The templates hold no logic knots (issue 21): every ``*.j2`` under templates/ is checked line by line.

The rule, per physical line of a template:

* **width**: at most ``MAX_WIDTH`` (120) characters. A long Python line is broken inside its
  brackets (black joins it again), a long line of prose with the comment idiom ``{#`` at the
  end of one line and ``#}`` at the start of the next (the newline is inside the comment, so
  nothing changes in what is rendered).
* **conditionals**: a *test* is the keyword ``if`` or ``elif`` in a Jinja tag or expression,
  found by Jinja's own lexer (so ``"if"`` inside a string literal is no test):
  ``{% if %}``, ``{% elif %}``, the ``if`` of ``{{ a if b else c }}`` or of ``{% for x in y if z %}``.
  A line holds at most ``MAX_TESTS`` (2) tests, and none of them is nested on that line: no
  test inside an ``{% if %}`` opened earlier on the same line and not yet closed there (its own
  ``{% elif %}`` excepted: that is one chain, not a nest), and no second ``if`` inside one
  ``{{ }}`` / ``{% %}`` tag (``a if b else c if d else e``). An ``{% if %}`` that opens on one
  line and closes on another is ordinary block structure and is not a knot.

A choice that needs more than that is made in Python (compiler/passes/render*.py) and reaches the
template as a named value.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MAX_WIDTH = 120
MAX_TESTS = 2
_LEXER = jinja2.Environment()
_OPEN = {"block_begin", "variable_begin"}
_CLOSE = {"block_end", "variable_end"}


def problems(source: str, name: str) -> list[str]:
    """Every breach of the rule above in one template's text, as ``name:line: what``."""
    found = []
    for number, line in enumerate(source.splitlines(), 1):
        if len(line) > MAX_WIDTH:
            found.append(f"{name}:{number}: {len(line)} characters (at most {MAX_WIDTH})")
    tests: dict[int, int] = {}  # line -> tests on it
    depth: dict[int, int] = {}  # line -> inline {% if %} blocks opened on it and still open
    nested: set[int] = set()
    tag_first, in_tag_tests = False, 0  # the token after a tag's opening; tests inside this tag
    for lineno, kind, value in _LEXER.lex(source):
        if kind in _OPEN:
            tag_first, in_tag_tests = True, 0
            continue
        if kind in _CLOSE or kind == "whitespace":
            continue
        first, tag_first = tag_first, False
        if kind != "name" or value not in ("if", "elif", "endif"):
            continue
        open_here = depth.get(lineno, 0)
        if value == "endif" and first:
            depth[lineno] = max(open_here - 1, 0)
            continue
        tests[lineno] = tests.get(lineno, 0) + 1
        if value == "if" and first:  # {% if %}: a block opens
            if open_here:
                nested.add(lineno)
            depth[lineno] = open_here + 1
        elif value == "elif" and first:  # the next link of the innermost block's chain
            if open_here > 1:
                nested.add(lineno)
        else:  # an expression's `if` (a ternary, a for-filter)
            in_tag_tests += 1
            if open_here or in_tag_tests > 1:
                nested.add(lineno)
    for lineno in sorted(set(tests) | nested):
        if tests.get(lineno, 0) > MAX_TESTS:
            found.append(f"{name}:{lineno}: {tests[lineno]} conditional tests on one line (at most {MAX_TESTS})")
        if lineno in nested:
            found.append(f"{name}:{lineno}: a conditional nested inside another on one line")
    return sorted(found, key=lambda p: int(p.split(":")[1]))


def all_templates() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.j2"))


def test_templates_are_found():
    assert len(all_templates()) >= 40  # model, hyper, tests, diagram, gallery


@pytest.mark.parametrize("path", all_templates(), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_template_has_no_knots(path: Path):
    found = problems(path.read_text(encoding="utf-8"), str(path.relative_to(TEMPLATES.parent)))
    assert not found, "\n".join(found)


GOOD = """\
def f(x{% if a %}, y{% endif %}{% if b %}, z{% endif %}):
    return {{ "x" if c else "y" }}  # "if" and "elif" in a string are no tests
{% if d %}
    {% if e %}nested, but across lines: block structure{% endif %}
{% elif f %}{% if g %}one block closes, another opens{% endif %}
{% endif %}
{% for k in kinds if k.linear %}{{ k }}{% endfor %}
{{ "if" if loop.first else "elif" }} x:
"""


def test_checker_accepts_plain_structure():
    assert problems(GOOD, "good.j2") == []


@pytest.mark.parametrize("snippet, line, words", [
    ("ok\n" + "x" * 121 + "\n", 2, "121 characters"),
    ("{% if a %}A{% elif b %}B{% endif %}{% if c %}C{% endif %}\n", 1, "3 conditional tests"),
    ("{% if a %}{% if b %}B{% endif %}{% endif %}\n", 1, "nested"),
    ("{% if a %}{{ 1 if b else 2 }}{% endif %}\n", 1, "nested"),
    ("{{ 1 if a else 2 if b else 3 }}\n", 1, "nested"),
    ("x\n{%- if a %}A{% else %}{{ 'p' if b else 'q' }}{% endif %}\n", 2, "nested"),
    ("{% if a %}A{% if b %}\nB{% endif %}{% endif %}\n", 1, "nested"),
])
def test_checker_names_file_and_line(snippet: str, line: int, words: str):
    found = problems(snippet, "bad.j2")
    assert found and all(p.startswith(f"bad.j2:{line}: ") for p in found), found
    assert any(words in p for p in found), found
