"""The figures the README quotes, computed from the repository, and a check that it quotes them right.

    python3 -m llmgen.compiler.insight.readme_figures            # check: one line per wrong figure, exit 1 if any
    python3 -m llmgen.compiler.insight.readme_figures --write    # put the real figures into README.md

Three kinds of figure (tests/test_readme.py runs the check):

- in prose, a number between markers, ``<!-- fig:NAME -->261<!-- /fig -->`` (the markers do not
  show when the Markdown is rendered); NAME is a key of :func:`figures`;
- in pasted command output, ``wrote .../SLUG/ (...); model.py has N lines (the architecture;
  runtime.py R, weights.py W)`` against ``generated/SLUG/``, and the gallery's ``N models compiled,
  M listed as not yet compiled``;
- the table of every committed model's line counts per file, between ``<!-- line-counts -->`` and
  ``<!-- /line-counts -->`` (rewritten whole by --write);
- the template list between ``<!-- templates -->`` and ``<!-- /templates -->``: it must name every
  file under templates/, and only those (its descriptions are prose, not checked).

This is a tool for a source checkout (it reads tests/, templates/, generated/ beside the package).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
FIGURE = re.compile(r"<!-- fig:([a-z_]+) -->([^<]*)<!-- /fig -->")
WROTE = re.compile(r"wrote \S*?([A-Za-z0-9._-]+)/ \([^)]*\); model\.py has (\d+) lines"
                   r"(?: \(the architecture; runtime\.py (\d+), weights\.py (\d+)\))?")
LINE_COUNTS = re.compile(r"(<!-- line-counts -->\n)(.*?)(<!-- /line-counts -->)", re.S)
COUNTED = ("model.py", "weights.py", "runtime.py", "parallel.py")
GALLERY = re.compile(r"(\d+) models compiled, (\d+) listed as not yet compiled")
TEMPLATES = re.compile(r"<!-- templates -->(.*?)<!-- /templates -->", re.S)
TEMPLATE_PATH = re.compile(r"^(templates/\S+\.j2)\b", re.M)


def _catalog_counts() -> tuple[int, int]:
    """(catalog configs, those that compile), as the gallery counts them."""
    from ..basics.catalog import catalog_entries
    from ..basics.errors import LlmgenError
    from ..passes.load import load_config
    from ..passes.lowering import lower
    from ..passes.validate import validate

    entries = catalog_entries()
    compiled = 0
    for entry in entries:
        try:
            validate(lower(load_config(str(entry.path), prefer="path").raw))
            compiled += 1
        except LlmgenError:
            pass
    return len(entries), compiled


def figures(repo: Path = REPO) -> dict[str, Callable[[], str]]:
    """Figure name -> how to compute it (as the README prints it)."""
    counts: list[tuple[int, int]] = []

    def catalog(i: int) -> Callable[[], str]:
        def value() -> str:
            if not counts:
                counts.append(_catalog_counts())
            return str(counts[0][i])
        return value

    return {
        "bad_input_cases": lambda: str(len(json.loads((repo / "tests/bad_inputs/cases.json").read_text()))),
        "catalog_configs": catalog(0),
        "catalog_compiles": catalog(1),
        "generated_models": lambda: str(sum(1 for d in (repo / "generated").iterdir() if (d / "llmgen.json").is_file())),
        "templates": lambda: str(len(template_files(repo))),
    }


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def line_count_table(repo: Path = REPO) -> str:
    """Markdown: the lines of each committed model's files (architecture, reader, machinery, tensor parallel)."""
    rows = ["| model | model.py (architecture) | weights.py (reader) | runtime.py (caches, switches) | parallel.py |",
            "|---|---|---|---|---|"]
    for directory in sorted((repo / "generated").iterdir(), key=lambda d: d.name.lower()):
        if (directory / "model.py").is_file():
            cells = [str(_lines(directory / n)) if (directory / n).is_file() else "–" for n in COUNTED]
            rows.append(f"| {directory.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def template_files(repo: Path = REPO) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in (repo / "templates").rglob("*.j2"))


def check(text: str, repo: Path = REPO) -> tuple[str, list[str]]:
    """The README text with every figure corrected, and one line per figure that was wrong."""
    known = figures(repo)
    problems: list[str] = []

    def fix_figure(match: re.Match[str]) -> str:
        name, quoted = match.groups()
        if name not in known:
            problems.append(f"fig:{name}: no such figure (known: {', '.join(sorted(known))})")
            return match.group(0)
        real = known[name]()
        if quoted != real:
            problems.append(f"fig:{name}: the README says {quoted!r}, the repository has {real}")
        return f"<!-- fig:{name} -->{real}<!-- /fig -->"

    def fix_lines(match: re.Match[str]) -> str:
        slug = match.group(1)
        directory = repo / "generated" / slug
        if not (directory / "model.py").is_file():
            return match.group(0)  # output of a model that is not committed: nothing to compare
        fixed = match.group(0)
        for group, name in reversed(((2, "model.py"), (3, "runtime.py"), (4, "weights.py"))):
            if match.group(group) is None or not (directory / name).is_file():
                continue
            quoted, real = match.group(group), str(_lines(directory / name))
            if quoted != real:
                problems.append(f"{slug}: the README says {name} has {quoted} lines, generated/{slug}/{name} has {real}")
            fixed = fixed[: match.start(group) - match.start(0)] + real + fixed[match.end(group) - match.start(0):]
        return fixed

    def fix_gallery(match: re.Match[str]) -> str:
        from .gallery import collect  # the gallery's own count: catalog models, then transformers' other decoders

        compiled, skipped = collect()
        real = f"{len(compiled)} models compiled, {len(skipped)} listed as not yet compiled"
        if match.group(0) != real:
            problems.append(f"gallery: the README says {match.group(0)!r}, the catalog gives {real!r}")
        return real

    text = FIGURE.sub(fix_figure, text)
    text = WROTE.sub(fix_lines, text)
    text = GALLERY.sub(fix_gallery, text)
    counts = LINE_COUNTS.search(text)
    if counts is not None:
        table = line_count_table(repo)
        if counts.group(2) != table:
            problems.append("line-counts: the table differs from the committed models' files")
            text = text[: counts.start(2)] + table + text[counts.end(2):]
    block = TEMPLATES.search(text)
    if block is None:
        problems.append("no template list (<!-- templates --> ... <!-- /templates -->)")
    else:
        listed = TEMPLATE_PATH.findall(block.group(1))
        real = template_files(repo)
        for path in sorted(set(real) - set(listed)):
            problems.append(f"template list: {path} is missing")
        for path in sorted(set(listed) - set(real)):
            problems.append(f"template list: {path} does not exist")
        if len(listed) != len(set(listed)):
            problems.append("template list: a template is listed twice")
    return text, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m llmgen.compiler.insight.readme_figures", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md with the real figures")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args(argv)
    if not args.readme.is_file():
        print(f"readme_figures: error: {args.readme}: no such file (run it in a source checkout)", file=sys.stderr)
        return 2
    text = args.readme.read_text(encoding="utf-8")
    fixed, problems = check(text, args.readme.parent)
    for line in problems:
        print(line)
    if args.write and fixed != text:
        args.readme.write_text(fixed, encoding="utf-8")
        print(f"wrote {args.readme}")
    unfixable = [p for p in problems if p.startswith(("template list", "no template list")) or "no such figure" in p]
    return 1 if (problems and not args.write) or unfixable else 0


if __name__ == "__main__":
    sys.exit(main())
