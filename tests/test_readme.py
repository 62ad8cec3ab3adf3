"""The README's figures are the repository's (python3 -m llmgen.compiler.insight.readme_figures), and its
commands use one spelling for a checkpoint (--checkpoint)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

from llmgen.compiler.insight import readme_figures

README = REPO / "README.md"


def test_the_readme_quotes_the_real_figures() -> None:
    _, problems = readme_figures.check(README.read_text(encoding="utf-8"))
    assert not problems, "run `python3 -m llmgen.compiler.insight.readme_figures --write`:\n" + "\n".join(problems)


def test_the_check_catches_drift_and_write_corrects_it(tmp_path: Path, capsys) -> None:
    text = README.read_text(encoding="utf-8")
    cases = re.search(r"<!-- fig:bad_input_cases -->(\d+)<!-- /fig -->", text)
    lines = re.search(r"wrote generated/gemma-3-1b/ \([^)]*\); model\.py has (\d+) lines", text)
    assert cases and lines and "templates/model/moe.py.j2" in text
    drifted = text.replace(cases.group(0), cases.group(0).replace(f"-->{cases.group(1)}<!--", "-->7<!--"))
    drifted = drifted.replace(lines.group(0), lines.group(0).replace(f"has {lines.group(1)} lines", "has 3 lines"))
    drifted = drifted.replace("templates/model/moe.py.j2", "templates/model/gone.py.j2")
    copy = tmp_path / "README.md"
    for name in ("generated", "templates", "tests"):  # the figures are read beside the README
        (tmp_path / name).symlink_to(REPO / name)
    copy.write_text(drifted, encoding="utf-8")
    _, problems = readme_figures.check(drifted, tmp_path)
    assert any(p.startswith("fig:bad_input_cases: the README says '7'") for p in problems), problems
    assert any(p.startswith("gemma-3-1b: the README says model.py has 3 lines") for p in problems), problems
    assert "template list: templates/model/moe.py.j2 is missing" in problems
    assert "template list: templates/model/gone.py.j2 does not exist" in problems
    assert readme_figures.main(["--readme", str(copy)]) == 1
    assert readme_figures.main(["--readme", str(copy), "--write"]) == 1  # the template list stays a person's job
    fixed = copy.read_text(encoding="utf-8")
    assert fixed == drifted.replace("-->7<!--", f"-->{cases.group(1)}<!--").replace(
        "model.py has 3 lines", f"model.py has {lines.group(1)} lines")
    capsys.readouterr()


def test_one_spelling_for_a_checkpoint() -> None:
    text = README.read_text(encoding="utf-8")
    # (--weights-dtype is another option: the products' weight format, not the checkpoint)
    assert re.search(r"--weights(?!-dtype)", text.replace("`--weights` is accepted as an alias", "")) is None
    assert "verify --checkpoint" in text and "generate" in text


def test_the_readme_generate_example_uses_the_example_checkpoint() -> None:
    text = README.read_text(encoding="utf-8")
    assert "llmgen example-checkpoint" in text
    assert re.search(r"llmgen from-config \"\$\(llmgen example-checkpoint\)\"", text)


def test_checkpoint_is_the_spelling_of_every_command_and_weights_an_alias() -> None:
    from llmgen.compiler.basics.cli import build_parser

    parser = build_parser()
    for command in (["verify", "--checkpoint", "CKPT", "DIR"], ["generate", "DIR", "--prompt", "x", "--checkpoint", "CKPT"]):
        spelled = vars(parser.parse_args(command))
        alias = vars(parser.parse_args([("--weights" if a == "--checkpoint" else a) for a in command]))
        assert spelled == alias, command
    assert str(vars(parser.parse_args(["generate", "DIR", "--prompt", "x", "--checkpoint", "CKPT"]))["checkpoint"]) == "CKPT"
    assert vars(parser.parse_args(["verify", "--checkpoint", "DIR"]))["weights"] == "DIR"
    for name in ("verify", "generate"):
        help_text = parser._subparsers._group_actions[0].choices[name].format_help()
        assert "--checkpoint" in help_text, name
