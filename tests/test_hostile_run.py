"""Running a generated model on broken or hostile input (issue 18, part B): every failure is one
``llmgen: error:`` line with exit status 2, before the weights load where it can be.

The checkpoint is a tiny random Llama saved by transformers, with a word-level tokenizer built
by the tokenizers package, compiled by ``llmgen from-config`` (which records it).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import GENERATED
from llmgen.compiler.runtime import chat
from llmgen.compiler.verification import checkpoint as checkpoint_mod
from llmgen.compiler.basics.cli import main
from llmgen.compiler.basics.dtypes import MAX_HEADER_BYTES
from llmgen.compiler.basics.errors import CheckpointError, SourceError

TINY = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 8, "intermediate_size": 32, "num_hidden_layers": 2, "vocab_size": 40,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2}
WORDS = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(37)]
TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant{% endif %}"
NORM = "model.norm.weight"


def write_tokenizer(directory: Path, template: str = TEMPLATE) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(["<s>", "</s>"])
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "chat_template": template}))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(generated model directory, the checkpoint recorded in it)."""
    import transformers

    root = tmp_path_factory.mktemp("hostile")
    checkpoint = root / "ckpt"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY))
    model.save_pretrained(checkpoint)
    write_tokenizer(checkpoint)
    assert main(["from-config", str(checkpoint), "--out", str(root), "--name", "tiny", "--no-verify"]) == 0
    assert (root / "tiny" / "checkpoint.json").is_file()
    return root / "tiny", checkpoint


def generate(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["generate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str, *names: str) -> str:
    """The last stderr line, checked to be the one error line (a progress line may precede it)."""
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("llmgen: error: ") and err.endswith("\n"), err
    assert sum(line.startswith("llmgen: error: ") for line in err.splitlines()) == 1, err
    for name in names:
        assert name in last, (name, last)
    return last


def copy_checkpoint(tiny, tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(tiny[1], copy)
    for name in drop:
        (copy / name).unlink()
    return copy


def import_model(path: Path, name: str):
    if path.name == "model.py":  # with runtime.py and weights.py beside it, as one module
        from llmgen.compiler.runtime.generated_files import import_generated

        return import_generated(path.parent, name)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def rewrite_header(path: Path, change) -> None:
    """Apply ``change`` to the JSON header of a .safetensors file, keeping its data."""
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + length])
    change(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + length:])


def test_generate_runs(tiny, capsys) -> None:
    code, out, err = generate([str(tiny[0]), "--prompt", "w3 w4 w5", "--max-new-tokens", "3"], capsys)
    assert code == 0, err
    assert err.strip().splitlines()[-1].startswith(("3 tokens in ", "2 tokens in ", "1 tokens in ", "0 tokens in "))


# ------------------------------------------------------------------ item 6: refused before the weights load


def test_no_tokenizer_files(tiny, tmp_path, capsys) -> None:
    copy = copy_checkpoint(tiny, tmp_path, drop=("tokenizer.json", "tokenizer_config.json"))
    code, _, err = generate([str(tiny[0]), "--prompt", "w3", "--checkpoint", str(copy)], capsys)
    one_error(code, err, str(copy), "no tokenizer files")
    assert "loading weights" not in err


def test_corrupt_tokenizer_json(tiny, tmp_path, capsys) -> None:
    copy = copy_checkpoint(tiny, tmp_path)
    (copy / "tokenizer.json").write_text('{"model": {"type": "WordLevel", "vocab": 3')
    code, _, err = generate([str(tiny[0]), "--prompt", "w3", "--checkpoint", str(copy)], capsys)
    one_error(code, err, "tokenizer.json", "cannot read its tokenizer")
    assert "loading weights" not in err


def test_prompt_not_utf8(tiny, capsys) -> None:
    prompt = b"w3 \xff w4".decode("utf-8", "surrogateescape")  # what sys.argv holds for those bytes
    code, _, err = generate([str(tiny[0]), "--prompt", prompt], capsys)
    one_error(code, err, "--prompt", "UTF-8", "0xff")


def test_prompt_not_utf8_as_a_process(tiny, tmp_path) -> None:
    done = subprocess.run([sys.executable.encode(), b"-m", b"llmgen.compiler.basics.cli", b"generate", str(tiny[0]).encode(),
                           b"--prompt", b"w3 \xff"], capture_output=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count(b"\n") == 1 and b"not valid UTF-8" in done.stderr, done.stderr


def test_model_py_with_a_syntax_error(tiny, tmp_path, capsys) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(tiny[0], edited)
    text = (edited / "model.py").read_text()
    (edited / "model.py").write_text(text + "\ndef broken(:\n    pass\n")
    code, _, err = generate([str(edited), "--prompt", "w3"], capsys)
    one_error(code, err, str(edited / "model.py"), f"line {text.count(chr(10)) + 2}")


def test_model_py_that_raises_on_import(tiny, tmp_path, capsys) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(tiny[0], edited)
    (edited / "model.py").write_text((edited / "model.py").read_text() + "\nraise RuntimeError('edited\\nbadly')\n")
    code, _, err = generate([str(edited), "--prompt", "w3"], capsys)
    one_error(code, err, "model.py", "RuntimeError: edited")


def test_int8_cache_on_latent_attention_is_refused_first(capsys) -> None:
    """DeepSeek-V3 has no checkpoint here at all: the refusal comes before any is looked for."""
    code, _, err = generate([str(GENERATED / "DeepSeek-V3"), "--prompt", "x", "--kv", "int8"], capsys)
    one_error(code, err, "--kv int8", "latent attention")
    assert "loading weights" not in err and "checkpoint" not in err


# ------------------------------------------------------------ items 7, 12, 13, 15: what the loader refuses


@pytest.mark.parametrize("change, named", [
    (lambda h: h[NORM].update(data_offsets=0), NORM),
    (lambda h: h[NORM].update(shape=64), NORM),
    (lambda h: h[NORM].update(dtype="I32"), "not floating point"),
    (lambda h: h[NORM].update(data_offsets=[0, 64]), "overlap"),
], ids=["offsets-int", "shape-int", "int32-norm", "overlap"])
def test_generate_on_a_bad_header(tiny, tmp_path, capsys, change, named) -> None:
    copy = copy_checkpoint(tiny, tmp_path)
    rewrite_header(copy / "model.safetensors", change)
    code, _, err = generate([str(tiny[0]), "--prompt", "w3", "--checkpoint", str(copy)], capsys)
    one_error(code, err, str(copy), named)


def huge_header_file(path: Path, entries: int) -> int:
    """A .safetensors file whose header holds ``entries`` empty tensors (valid JSON, ~55 bytes each)."""
    blob = b"{" + b",".join(b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(entries)) + b"}"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    return len(blob)


def test_header_over_the_cap_is_refused_unread(tiny, tmp_path, monkeypatch, capsys) -> None:
    """A header longer than MAX_HEADER_BYTES is refused from its length field: neither reader parses it."""
    copy = copy_checkpoint(tiny, tmp_path)
    size = huge_header_file(copy / "model.safetensors", 320_000)
    assert size > MAX_HEADER_BYTES
    module = import_model(tiny[0] / "model.py", "_hostile_cap")

    def no_parsing(*args, **kwargs):
        raise AssertionError("the header was parsed")

    monkeypatch.setattr(checkpoint_mod.json, "loads", no_parsing)
    with pytest.raises(CheckpointError, match="at most 16 MiB"):
        checkpoint_mod.safetensors_entries(copy / "model.safetensors")
    with pytest.raises(module.WeightLoadError, match="at most 16 MiB"):
        module.load_checkpoint(copy)
    monkeypatch.undo()
    code, _, err = generate([str(tiny[0]), "--prompt", "w3", "--checkpoint", str(copy)], capsys)
    one_error(code, err, "model.safetensors", "16 MiB")


def test_truncated_before_load(tiny, tmp_path, capsys) -> None:
    copy = copy_checkpoint(tiny, tmp_path)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[:-100])
    code, _, err = generate([str(tiny[0]), "--prompt", "w3", "--checkpoint", str(copy)], capsys)
    one_error(code, err, "model.safetensors", "outside the file")


def test_in_memory_load_survives_truncation(tiny, tmp_path) -> None:
    """load_checkpoint(mmap=False), as generate loads: truncating the file afterwards changes nothing;
    truncated while being read, it is a WeightLoadError."""
    copy = copy_checkpoint(tiny, tmp_path)
    module = import_model(tiny[0] / "model.py", "_hostile_truncate")
    ids = torch.tensor([[3, 4, 5]])
    expected = module.load_checkpoint(tiny[1])(ids)
    model = module.load_checkpoint(copy, mmap=False)
    (copy / "model.safetensors").write_bytes(b"")
    assert torch.equal(model(ids), expected)
    short = tmp_path / "short.bin"
    short.write_bytes(bytes(10))
    with open(short, "rb") as f, pytest.raises(module.WeightLoadError, match="file ends inside a tensor"):
        module.read_cast(f, 0, torch.float32, [8], torch.float32, bytearray(64))


FAULT = """
import sys, torch
from pathlib import Path
from llmgen.compiler.runtime.generate import _report_faults, import_model
_report_faults()
module = import_model(Path(sys.argv[1]))
model = module.load_checkpoint(Path(sys.argv[2]))  # memory-mapped
open(Path(sys.argv[2]) / "model.safetensors", "r+b").truncate(0)
print(float(model.lm_head.weight.sum()))
"""


def test_a_fault_after_mapping_is_reported(tiny, tmp_path) -> None:
    """What generate cannot turn into an error (a memory-mapped file truncated under a running
    model) at least says what happened, through faulthandler."""
    copy = copy_checkpoint(tiny, tmp_path)
    done = subprocess.run([sys.executable, "-c", FAULT, str(tiny[0]), str(copy)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "Fatal Python error: Bus error" in done.stderr, done.stderr


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_named(tiny, tmp_path, capsys, value) -> None:
    from safetensors.torch import load_file, save_file

    copy = copy_checkpoint(tiny, tmp_path)
    tensors = load_file(copy / "model.safetensors")
    tensors["model.layers.1.mlp.down_proj.weight"][3, 5] = value
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    code, _, err = generate([str(tiny[0]), "--prompt", "w3", "--checkpoint", str(copy)], capsys)
    one_error(code, err, "'model.layers.1.mlp.down_proj.weight'", "1 NaN or infinite values")


def test_non_finite_check_is_exact_after_an_overflowing_sum(tiny) -> None:
    module = import_model(tiny[0] / "model.py", "_hostile_sum")
    big = torch.full((4,), 60000.0, dtype=torch.float16)  # finite values whose float16 sum overflows
    assert not torch.isfinite(big.sum()) and module.count_non_finite(big) == 0
    big[1] = float("nan")
    assert module.count_non_finite(big) == 1


def test_float8_norm_weight_is_refused_by_both_checks(tiny, tmp_path, capsys) -> None:
    copy = copy_checkpoint(tiny, tmp_path)
    rewrite_header(copy / "model.safetensors", lambda h: h[NORM].update(
        dtype="F8_E4M3", data_offsets=[h[NORM]["data_offsets"][0], h[NORM]["data_offsets"][0] + 16]))
    assert main(["from-config", str(copy), "--out", str(tmp_path / "out"), "--no-verify"]) == 2
    one_error(2, capsys.readouterr().err, NORM, "not floating point")
    code, _, err = generate([str(tiny[0]), "--prompt", "w3", "--checkpoint", str(copy)], capsys)
    one_error(code, err, NORM, "not floating point", "float8_e4m3fn")


# --------------------------------------------------------------------------- item 14: the context


def test_prompt_longer_than_the_context(tiny, capsys) -> None:
    prompt = " ".join(f"w{3 + i % 30}" for i in range(70))
    code, _, err = generate([str(tiny[0]), "--prompt", prompt], capsys)
    one_error(code, err, "70 tokens", "context holds 64")
    assert "loading weights" not in err


def test_max_new_tokens_beyond_the_context_is_cut_with_a_note(tiny, capsys) -> None:
    code, _, err = generate([str(tiny[0]), "--prompt", "w3 w4 w5", "--max-new-tokens", str(10**23)], capsys)
    assert code == 0, err
    assert f"note: --max-new-tokens {10**23} cut to 61" in err, err


# ------------------------------------------------------------------------ item 16: the recorded checkpoint


def test_moved_checkpoint_is_named(tiny, tmp_path, capsys) -> None:
    root = tmp_path / "m"
    checkpoint = copy_checkpoint(tiny, tmp_path)
    assert main(["from-config", str(checkpoint), "--out", str(root), "--name", "moved", "--no-verify"]) == 0
    checkpoint.rename(tmp_path / "elsewhere")
    capsys.readouterr()
    code, _, err = generate([str(root / "moved"), "--prompt", "w3"], capsys)
    one_error(code, err, f"recorded at compile time, {checkpoint.absolute()}, is gone")
    assert "no checkpoint recorded" not in err


# ---------------------------------------------------------------------- item 11: chat template limits


@pytest.mark.parametrize("template, named", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "range()"),
    ("{{ 'x' * 10**9 }}", "repetition"),
    ("{% for i in range(99999) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}", "wrote more than"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),
    ("{% if %}broken", "TemplateSyntaxError"),
    ("{{ raise_exception('no system role') }}", "no system role"),
    ("{{ ''.__class__.__mro__ }}", "SecurityError"),
], ids=["nested-range", "repetition", "output-size", "recursion", "syntax", "raise", "sandbox"])
def test_chat_template_is_limited(tiny, tmp_path, capsys, template, named) -> None:
    copy = copy_checkpoint(tiny, tmp_path)
    write_tokenizer(copy, template)
    code, _, err = generate([str(tiny[0]), "--prompt", "w3", "--chat", "--checkpoint", str(copy)], capsys)
    one_error(code, err, str(copy), named)
    assert "loading weights" not in err


def test_chat_template_time_limit(monkeypatch) -> None:
    """A template that runs long without touching any counted limit is stopped by the clock."""
    monkeypatch.setattr(chat, "TIME_LIMIT", 0.2)
    monkeypatch.setattr(chat, "RANGE_BUDGET", 10**12)
    with pytest.raises(SourceError, match="took longer than"):
        chat.render_template("{% for i in range(10**6) %}{% for j in range(10**6) %}{% endfor %}{% endfor %}", "t")


def test_chat_template_renders(tiny) -> None:
    assert chat.render_chat(tiny[1], "w3") == "<s>user w3</s><s>assistant"


# ------------------------------------------------------------- items 8, 15: verify --weights on bad input


def test_verify_weights_with_a_broken_chat_template(tiny, tmp_path, capsys) -> None:
    copy = copy_checkpoint(tiny, tmp_path)
    write_tokenizer(copy, "{% if %}broken")
    code = main(["verify", "--weights", str(copy), str(tiny[0])])
    one_error(code, capsys.readouterr().err, str(copy), "chat template")


def test_verify_weights_with_a_hanging_chat_template(tiny, tmp_path, capsys) -> None:
    copy = copy_checkpoint(tiny, tmp_path)
    write_tokenizer(copy, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    code = main(["verify", "--weights", str(copy), str(tiny[0])])
    one_error(code, capsys.readouterr().err, str(copy), "range()")


def test_verify_weights_names_a_non_finite_tensor(tiny, tmp_path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    copy = copy_checkpoint(tiny, tmp_path)
    tensors = load_file(copy / "model.safetensors")
    tensors[NORM][2] = float("nan")
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    code = main(["verify", "--weights", str(copy), str(tiny[0])])
    last = one_error(code, capsys.readouterr().err, f"'{NORM}'", "NaN or infinite")
    assert "crashed" not in last


# ------------------------------------------------------------------ item 19: the generated Config


def test_generated_config_refuses_inconsistent_values() -> None:
    gemma = import_model(GENERATED / "gemma-3-1b-it" / "model.py", "_hostile_gemma")
    with pytest.raises(ValueError, match="layer_pattern"):
        gemma.Config(num_hidden_layers=3)
    with pytest.raises(ValueError, match="layer_pattern"):
        gemma.Config(num_hidden_layers=3, layer_pattern="SXF")
    assert gemma.Config(num_hidden_layers=3, layer_pattern="SSF").num_hidden_layers == 3
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        gemma.Config(num_attention_heads=4, num_key_value_heads=3)
    deepseek = import_model(GENERATED / "DeepSeek-V3" / "model.py", "_hostile_deepseek")
    with pytest.raises(ValueError, match="ffn_pattern"):
        deepseek.Config(num_hidden_layers=4)
