"""One naming rule for Config fields (compiler/passes/config_names.py): a field is named as transformers'
configs name the quantity, or it is one of llmgen's own names, listed with what it means. Checked on
every committed model's model.py, against the installed transformers' config classes."""

from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path

import pytest

from llmgen.compiler.passes.config_names import OWN_NAMES, own_name

REPO = Path(__file__).resolve().parent.parent
MODELS = sorted(p.parent for p in (REPO / "generated").glob("*/llmgen.json"))
# Fields whose value is knowingly not the one transformers' config attribute holds, and why.
ADJUSTED = {("lfm2", "intermediate_size"): "LFM2's block_auto_adjust_ff_dim shrinks the width (2/3, rounded up to "
            "block_multiple_of) when the layers are built; Config holds the width the layers have"}


def config_fields(model_py: Path) -> dict[str, object]:
    """Config's fields and their default values (None where the default is not a plain literal)."""
    for node in ast.parse(model_py.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == "Config":
            fields = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    try:
                        fields[item.target.id] = ast.literal_eval(item.value)
                    except ValueError:
                        fields[item.target.id] = None  # an expression (256**-0.5, math.sqrt(1152))
            return fields
    raise AssertionError(f"{model_py}: no Config class")


def _keys(config) -> set[str]:
    data = config.to_dict()
    keys = set(data) | set(getattr(type(config), "attribute_map", {}))
    for value in data.values():  # one level down: rope_parameters, text_config, attn_config
        if isinstance(value, dict):
            keys |= set(value)
    return keys


@lru_cache(maxsize=1)
def transformers_spellings() -> frozenset[str]:
    """Every key any transformers config class holds with its defaults (and the names it maps)."""
    from transformers import CONFIG_MAPPING

    found: set[str] = set()
    for model_type in CONFIG_MAPPING.keys():
        try:
            found |= _keys(CONFIG_MAPPING[model_type]())
        except Exception:  # noqa: BLE001 - a config class that needs arguments: skipped
            continue
    return frozenset(found)


def test_the_models_are_found() -> None:
    assert len(MODELS) >= 30


@pytest.mark.parametrize("directory", MODELS, ids=[m.name for m in MODELS])
def test_every_field_follows_the_rule(directory: Path) -> None:
    spellings = transformers_spellings()
    strays = [name for name in config_fields(directory / "model.py") if not own_name(name) and name not in spellings]
    assert not strays, f"{directory.name}: Config fields neither transformers' nor in OWN_NAMES: {strays}"


@pytest.mark.parametrize("directory", MODELS, ids=[m.name for m in MODELS])
def test_a_transformers_name_holds_the_configs_value(directory: Path) -> None:
    """Where transformers' config of the checkpoint answers to a field's name, the field holds that value
    (GPT-2's hidden_size is its n_embd; MiMo's sliding_window is its sliding_window_size + 1)."""
    from transformers import CONFIG_MAPPING

    raw = json.loads((directory / "config.json").read_text())
    config = CONFIG_MAPPING[raw["model_type"]](**{k: v for k, v in raw.items() if k != "model_type"})
    config = getattr(config, "text_config", None) or config
    differing = {}
    for name, value in config_fields(directory / "model.py").items():
        try:
            theirs = getattr(config, name, None)
        except Exception:  # noqa: BLE001 - per-layer attributes (Nemotron-H) refuse a global read
            continue
        if (raw["model_type"], name) in ADJUSTED or own_name(name) or value is None or isinstance(theirs, bool) or not isinstance(theirs, (int, float, str)):
            continue
        if value != theirs:
            differing[name] = (value, theirs)
    assert not differing, f"{directory.name}: (Config, transformers' config) differ: {differing}"


def test_own_names_are_not_transformers_spellings_of_one_quantity() -> None:
    """An own name that transformers spells the same way would be two rules at once."""
    clashes = sorted(name for name in OWN_NAMES if name in transformers_spellings() and name != "norm_eps")  # see there
    assert not clashes, clashes


def test_the_rule_fails_on_a_stray_name(tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text("class Config:\n    hidden_size: int = 8\n    my_own_width: int = 4\n")
    fields = config_fields(model)
    assert [n for n in fields if not own_name(n) and n not in transformers_spellings()] == ["my_own_width"]
