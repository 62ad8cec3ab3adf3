"""No code injection: strings from a config (or its path) reach generated code only as literals.

The hostile strings below (quotes, newlines, ``__import__``, unicode escapes, bidi controls,
jinja syntax) are put everywhere a config string can go: values and nested keys of the keys
llmgen passes through to the parity test (architectures, auto_map, _name_or_path, ...), the
source path and the regenerate command in the headers. The files generated from that config
must be the files generated from a benign config of the same shape with only string
constants differing, every hostile string must come back unchanged when the file is imported,
and no hostile string may appear in the source outside a string literal or a comment. Where a
string would have to become code (model_type, activation names, keys llmgen reads), anything
not on the whitelist is refused.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import sys
import tokenize
from pathlib import Path

import pytest
from conftest import catalog_config

from llmgen.compiler.basics.cli import main
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.pipeline import compile_config

HOSTILE = [
    "'); __import__('os').system('echo pwned') #",
    '"""; import os; os.system("id"); """',
    "\nimport os\nos.system('id')\n#",
    "\r\n__import__('subprocess').call(['id'])",
    "\\u0027); __import__(\\u0027os\\u0027)",
    "{{ 7*7 }}{% for x in range(3) %}X{% endfor %}{# c #}",
    "\u202e__import__('os')\u2066\u2069",
    "tail\\",
    "\x00\x1b[31m\u2028\x85",
]
MARKERS = ["__import__", "os.system", "subprocess", "pwned", "{{", "{%", "{#", "\u202e", "\u2066"]


def hostile_config(base: str, strings: list[str]) -> dict:
    raw = catalog_config(base)
    raw["architectures"] = list(strings)
    raw["_name_or_path"] = strings[0]
    raw["transformers_version"] = strings[1]
    raw["auto_map"] = {s: s for s in strings}
    raw["tokenizer_class"] = strings[2]
    return raw


def benign(n: int) -> list[str]:
    return [f"benign_{i}" for i in range(n)]


def compiled_files(raw: dict, source: str) -> dict[str, bytes]:
    import json

    loaded = LoadedConfig(raw=raw, text=json.dumps(raw), source_id=source, revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    return compile_config(loaded, slug="x").files


def code_only(source: str) -> str:
    """The source with every string literal and comment removed."""
    kept = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.STRING, tokenize.COMMENT):
            kept.append(token.string)
    return " ".join(kept)


class _Constants(ast.NodeTransformer):
    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        return ast.Constant(value="S" if isinstance(node.value, str) else node.value)


def shape(source: str) -> str:
    """The AST with every string constant replaced by one placeholder."""
    return ast.dump(_Constants().visit(ast.parse(source)))


def import_source(path: Path, name: str):
    if path.name == "model.py":  # with runtime.py and weights.py beside it, as one module
        from llmgen.compiler.runtime.generated_files import import_generated

        return import_generated(path.parent, name)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.mark.parametrize("base", ["Qwen/Qwen3-0.6B", "google/gemma-3-1b-it"])
def test_hostile_strings_stay_string_literals(base, tmp_path):
    source = "dir with ' quote\nand newline/\\\"__import__('os')\"{{x}}/config.json"
    hostile = compiled_files(hostile_config(base, HOSTILE), source)
    plain = compiled_files(hostile_config(base, benign(len(HOSTILE))), "plain/config.json")
    for name in ("model.py", "runtime.py", "weights.py", "test_parity.py"):
        text = hostile[name].decode()
        # Same program as for the benign config: only string constants (and comments) differ.
        assert shape(text) == shape(plain[name].decode()), name
        code = code_only(text)
        for marker in MARKERS:
            assert marker not in code, (name, marker)
        assert "\u202e" not in text and "\u2066" not in text and "\x00" not in text, name
    # The strings come back exactly: they were written as faithful literals.
    for name in ("model.py", "runtime.py", "weights.py", "test_parity.py"):
        (tmp_path / name).write_bytes(hostile[name])
    parity = import_source(tmp_path / "test_parity.py", "_llmgen_injection_parity")
    assert parity.HF_CONFIG["architectures"] == HOSTILE
    assert parity.HF_CONFIG["auto_map"] == {s: s for s in HOSTILE}
    model = import_source(tmp_path / "model.py", "_llmgen_injection_model")
    assert model.Config().num_hidden_layers == catalog_config(base)["num_hidden_layers"]


def test_header_comments_cannot_be_broken_by_newlines():
    source = "a\nimport os\nos.system('id')\n# b/config.json"
    files = compiled_files(catalog_config("Qwen/Qwen3-0.6B"), source)
    for name in ("model.py", "runtime.py", "weights.py", "test_parity.py"):
        lines = files[name].decode().split("\n")
        assert not any(line.startswith(("import os", "os.system")) for line in lines), name
        header = [line for line in lines[:6] if "from-config" in line or "Generated by" in line]
        assert header and all("\\n" in line for line in header), header
        assert "os.system" not in code_only(files[name].decode())


@pytest.mark.parametrize("key,value", [
    ("model_type", "llama\nimport os"), ("model_type", "llama'); __import__('os')"), ("model_type", "{{ 7*7 }}"),
    ("hidden_act", "silu); __import__('os'"), ("hidden_act", "F.silu"), ("hidden_act", "{% raw %}"),
    ("torch_dtype", "torch.float32; import os"), ("__import__('os').system('id')", 1), ("{{ config }}", 1),
])
def test_strings_that_would_become_code_are_refused(key, value, tmp_path, capsys):
    import json

    raw = catalog_config("meta-llama/Llama-3.2-1B")
    raw[key] = value
    with pytest.raises(LlmgenError):
        compiled_files(raw, "x/config.json")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    assert main(["from-config", str(path), "--out", str(tmp_path / "out"), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_hostile_directory_name_through_the_cli(tmp_path, capsys):
    import json

    weird = tmp_path / "ckpt'\n__import__('os').system('id')\n#\u202e{{x}}"
    weird.mkdir()
    (weird / "config.json").write_text(json.dumps(hostile_config("meta-llama/Llama-3.2-1B", HOSTILE)))
    assert main(["from-config", str(weird), "--out", str(tmp_path / "out"), "--name", "safe", "--no-verify"]) == 0
    for name in ("model.py", "test_parity.py"):
        text = (tmp_path / "out" / "safe" / name).read_text()
        ast.parse(text)
        assert "__import__" not in code_only(text) and "\u202e" not in text
        assert not any(line.startswith("__import__") for line in text.split("\n"))


def test_no_trust_remote_code_anywhere():
    """trust_remote_code is never passed: not by the compiler, the templates or the generated tests."""
    root = Path(__file__).resolve().parent.parent
    files = [*root.glob("compiler/**/*.py"), *root.glob("templates/**/*.j2"), *root.glob("generated/*/*.py")]
    assert len(files) > 20
    offenders = [str(p) for p in files if re.search(r"trust_remote_code\s*[=:]", p.read_text())]
    assert not offenders, offenders


def test_auto_map_is_compiled_from_keys_never_imported(tmp_path, capsys):
    """A config whose auto_map points at code beside it compiles and verifies from its keys alone:
    the module is never imported (by llmgen or by transformers in the parity check)."""
    import json

    ckpt = tmp_path / "remote-code-model"
    ckpt.mkdir()
    marker = tmp_path / "remote-code-ran"
    (ckpt / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (ckpt / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    raw = catalog_config("HuggingFaceTB/SmolLM2-135M-Instruct")
    raw["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                       "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (ckpt / "config.json").write_text(json.dumps(raw))
    status = main(["from-config", str(ckpt), "--out", str(tmp_path / "out")])  # with verification
    out = capsys.readouterr().out
    assert status == 0, out
    assert "max|dlogit| = 0" in out and " ok" in out
    assert not marker.exists()
    assert not any("evil" in name for name in sys.modules)


# ------------------------------------------------------------------------ weights are data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """model.py of a one-layer Llama, a random state dict for it, and the same tensors saved as
    model.safetensors and as pytorch_model.bin in two checkpoint directories."""
    import json

    import torch
    from safetensors.torch import save_file

    from llmgen.compiler.passes.pipeline import generate

    root = tmp_path_factory.mktemp("tiny-weights")
    corpus = Path(__file__).resolve().parent / "bad_inputs"
    config = next((corpus / "checkpoint").glob("*-tensor-missing")) / "config.json"
    _, _, where = generate(str(config), root, prefer="path", slug="tiny")
    model = import_source(where / "model.py", "_llmgen_injection_tiny")
    sys.modules["_llmgen_injection_tiny"] = model  # its dataclass is used after import
    generator = torch.Generator().manual_seed(0)
    shapes = {key: tuple(p.shape) for key, p in model.CausalLM(model.Config()).named_parameters()}
    state = {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}
    (root / "st").mkdir()
    save_file(state, root / "st" / "model.safetensors")
    (root / "bin").mkdir()
    torch.save(state, root / "bin" / "pytorch_model.bin")
    (root / "bin" / "config.json").write_text(json.dumps(json.loads(config.read_text())))
    return model, root


def test_pickled_checkpoint_is_refused_by_default(tiny):
    model, root = tiny
    with pytest.raises(model.WeightLoadError) as err:
        model.load_checkpoint(root / "bin")
    message = str(err.value)
    assert "pytorch_model.bin" in message and "allow_bin=True" in message and "weights_only=True" in message


def test_pickled_checkpoint_loads_through_weights_only_and_says_so(tiny, monkeypatch):
    import torch

    model, root = tiny
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    with pytest.warns(UserWarning, match=r"torch.load\(weights_only=True\)"):
        from_bin = model.load_checkpoint(root / "bin", allow_bin=True)
    assert calls and all(call.get("weights_only") is True for call in calls)
    from_st = model.load_checkpoint(root / "st")
    ids = torch.randint(0, 32, (1, 7))
    with torch.no_grad():
        assert torch.equal(from_bin(ids), from_st(ids))


def test_compile_time_checkpoint_check_reads_bin_with_weights_only(tiny, tmp_path, monkeypatch, capsys):
    import torch

    _, root = tiny
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert main(["from-config", str(root / "bin"), "--out", str(tmp_path), "--no-verify"]) == 0
    assert calls and all(call.get("weights_only") is True for call in calls)
