"""``llmgen generate``: a generated model on the real SmolLM2 checkpoint, greedy, streamed.

The expected text is transformers' own greedy continuation, stored by ``verify --weights``
(the smollm2_verified fixture) in reference_logits.safetensors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import GENERATED
from llmgen.compiler.runtime import native
from llmgen.compiler.basics.cli import main
from llmgen.compiler.runtime.generate import Tokenizer, greedy_tokens, render_chat
from llmgen.compiler.verification.reference import REFERENCE_FILE, resolve_checkpoint
from real_checkpoint import reference_metadata as metadata


def generate(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["generate", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def reference(smollm2_verified) -> tuple[Path, dict, Tokenizer]:
    directory = smollm2_verified[0]
    checkpoint, _ = resolve_checkpoint(directory, None)
    return directory, metadata(directory / REFERENCE_FILE), Tokenizer(checkpoint)


def test_generate_streams_transformers_greedy_text(reference, capsys) -> None:
    directory, meta, tokenizer = reference
    code, out, err = generate([str(directory), "--prompt", meta["prompts"][0], "--max-new-tokens", "8"], capsys)
    assert code == 0, err
    assert out == tokenizer.decode(meta["continuations"][0][:8]) + "\n"
    assert "loading weights from" in err and "M parameters in" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("8 tokens in ") and "tokens/s" in last, err
    print(out + err)


def test_chat_template_matches_transformers(reference) -> None:
    directory, meta, tokenizer = reference
    checkpoint, _ = resolve_checkpoint(directory, None)
    text = render_chat(checkpoint, meta["prompts"][-1])
    assert tokenizer.encode(text, special=False) == meta["token_ids"][-1]


def test_generate_chat(reference, capsys) -> None:
    directory, meta, tokenizer = reference
    code, out, err = generate([str(directory), "--prompt", meta["prompts"][-1], "--chat", "--max-new-tokens", "6"], capsys)
    assert code == 0, err
    assert out == tokenizer.decode(meta["continuations"][-1][:6]) + "\n"
    print(out + err)


def test_generate_stops_at_the_end_of_turn(reference, capsys) -> None:
    """The assistant's answer ends with <|im_end|> (eos, id 2) after 7 tokens: generate stops there."""
    directory = reference[0]
    args = [str(directory), "--prompt", "What is the capital of France?", "--chat", "--max-new-tokens", "16"]
    code, out, err = generate(args, capsys)
    assert code == 0 and out == "The capital of France is Paris.\n", out + err
    assert err.strip().splitlines()[-1].startswith("7 tokens in "), err


def test_generate_bfloat16(reference, capsys) -> None:
    directory, meta, _ = reference
    code, out, err = generate([str(directory), "--prompt", meta["prompts"][0], "--max-new-tokens", "4", "--dtype", "bfloat16"], capsys)
    assert code == 0 and out.strip() and "(bfloat16) ..." in err and "bfloat16, KV cache" in err, err
    print(out + err)


def test_committed_dir_finds_the_weights_in_the_hub_cache(reference, smollm2_hub, capsys) -> None:
    """generated/SmolLM2-135M-Instruct was compiled from the catalog: the weights come from the
    Hugging Face cache through huggingface_hub.snapshot_download (offline)."""
    _, meta, tokenizer = reference
    committed = GENERATED / "SmolLM2-135M-Instruct"
    code, out, err = generate([str(committed), "--prompt", meta["prompts"][0], "--max-new-tokens", "3"], capsys)
    assert code == 0, err
    assert "note: weights of HuggingFaceTB/SmolLM2-135M-Instruct: " in err
    assert out == tokenizer.decode(meta["continuations"][0][:3]) + "\n"


def test_kv_cache_and_full_recompute_agree(reference, capsys) -> None:
    directory, meta, tokenizer = reference
    args = [str(directory), "--prompt", meta["prompts"][0], "--max-new-tokens", "6"]
    code, cached, err = generate(args, capsys)
    assert code == 0 and "tokens/s (prompt" in err and ", KV cache)" in err, err
    code, full, err = generate([*args, "--no-kv"], capsys)
    assert code == 0 and "no KV cache" in err, err
    assert cached == full == tokenizer.decode(meta["continuations"][0][:6]) + "\n"
    code, quantized, err = generate([*args, "--kv", "int8"], capsys)
    assert code == 0 and "int8 KV cache" in err, err
    assert quantized == cached  # six tokens: the int8 cache picks the same ones here


def test_every_decoding_kernel_writes_transformers_text(reference, capsys, monkeypatch) -> None:
    """float32: the native kernel, row blocks and torch's own product all give transformers'
    greedy tokens; the kernel in use is reported, and one asked for by name that cannot run
    here is an error before any weights load."""
    directory, meta, tokenizer = reference
    args = [str(directory), "--prompt", meta["prompts"][1], "--max-new-tokens", "12"]
    expected = tokenizer.decode(meta["continuations"][1][:12]) + "\n"
    row_blocks = "row_blocks" if torch.get_num_threads() > 1 else "off"  # row blocks need two threads
    kernels = sorted({row_blocks, "off"}) + (["native"] if native.missing("float32") is None else [])
    for kernel in kernels:
        code, out, err = generate([*args, "--kernel", kernel], capsys)
        assert code == 0 and out == expected, (kernel, out, err)
        assert f"decoding kernel: {kernel}" in err, err
    monkeypatch.setenv("LLMGEN_NATIVE", "0")
    code, out, err = generate([*args, "--kernel", "native"], capsys)
    assert code == 2 and err == "llmgen: error: --kernel native: native kernel unavailable: LLMGEN_NATIVE=0\n", err
    code, out, err = generate(args, capsys)  # auto: falls back, and says why
    assert code == 0 and out == expected and f"decoding kernel: {row_blocks} (native kernel unavailable: LLMGEN_NATIVE=0)" in err


@pytest.mark.skipif(native.missing("float32") is not None, reason=f"native kernel: {native.missing('float32')}")
def test_int8_weights_generate_and_refuse_what_they_do_not_cover(reference, capsys, monkeypatch) -> None:
    """--weights-dtype int8 decodes the real checkpoint (the products' count reported, the tokens
    not float32's bit for bit: tests/test_int8_weights.py checks the values); combinations it does
    not cover are one error line each, before any weights load."""
    directory, meta, tokenizer = reference
    args = [str(directory), "--prompt", meta["prompts"][1], "--max-new-tokens", "12"]
    code, out, err = generate([*args, "--weights-dtype", "int8"], capsys)
    assert code == 0 and "211 matrix products on int8 weights" in err and "float32, int8 weights, KV cache" in err, err
    assert len(tokenizer.encode(out.strip(), special=False)) > 0
    for extra, message in ((["--dtype", "bfloat16"], "needs --dtype float32 and the native kernel (here: --dtype bfloat16"),
                           (["--kernel", "off"], "needs --dtype float32 and the native kernel (here: --dtype float32, --kernel off"),
                           (["--tp", "2"], "--weights-dtype int8: not implemented with --tp")):
        code, out, err = generate([*args, "--weights-dtype", "int8", *extra], capsys)
        assert code == 2 and err.startswith("llmgen: error: ") and message in err and err.count("\n") == 1, err
    monkeypatch.setenv("LLMGEN_NATIVE", "0")
    code, out, err = generate([*args, "--weights-dtype", "int8"], capsys)
    assert code == 2 and "native kernel unavailable: LLMGEN_NATIVE=0" in err, err


def test_greedy_tokens_feeds_a_cached_model_only_new_tokens() -> None:
    class Cached(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[list[int]] = []
            self.cache: tuple[int, int] | None = None

        def enable_cache(self, batch: int, max_len: int, int8: bool = False) -> None:
            self.cache = (batch, max_len)

        def disable_cache(self) -> None:
            self.cache = None

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            self.seen.append(ids[0].tolist())
            logits = torch.zeros(1, ids.shape[1], 10)
            logits[0, -1, (ids[0, -1] + 1) % 10] = 1.0
            return logits

    model = Cached()
    assert list(greedy_tokens(model, [3, 4], 4, stop={8})) == [5, 6, 7]
    assert model.seen == [[3, 4], [5], [6], [7]] and model.cache is None
    model.seen.clear()
    assert list(greedy_tokens(model, [3, 4], 2, stop=set(), kv=False)) == [5, 6]
    assert model.seen == [[3, 4], [3, 4, 5]]


# --------------------------------------------------------------------------- bad input


def test_bad_arguments(tmp_path: Path, capsys) -> None:
    code, _, err = generate([str(tmp_path / "none"), "--prompt", "x"], capsys)
    assert code == 2 and err == f"llmgen: error: {tmp_path / 'none'}: no such directory\n"
    code, _, err = generate([str(GENERATED / "SmolLM2-135M-Instruct"), "--prompt", "x", "--max-new-tokens", "0"], capsys)
    assert code == 2 and "--max-new-tokens 0" in err
    code, _, err = generate([str(tmp_path), "--prompt", "x"], capsys)
    assert code == 2 and "no model.py" in err


def test_no_checkpoint(tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text((GENERATED / "SmolLM2-135M-Instruct" / "config.json").read_text())
    assert main(["from-config", str(config), "--out", str(tmp_path), "--name", "m", "--no-verify"]) == 0
    capsys.readouterr()
    code, _, err = generate([str(tmp_path / "m"), "--prompt", "x"], capsys)
    assert code == 2 and "no checkpoint recorded" in err and err.count("\n") == 1


def test_checkpoint_problems(reference, tmp_path: Path, capsys) -> None:
    directory = reference[0]
    checkpoint, _ = resolve_checkpoint(directory, None)
    plain = tmp_path / "no-template"
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (plain / name).symlink_to(checkpoint / name)
    (plain / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    code, _, err = generate([str(directory), "--prompt", "x", "--chat", "--checkpoint", str(plain)], capsys)
    assert code == 2 and "needs a chat template" in err, err
    wrong = tmp_path / "wrong"
    shutil.copytree(plain, wrong, symlinks=True)
    (wrong / "model.safetensors").unlink()
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(4, 4)}, str(wrong / "model.safetensors"))
    code, _, err = generate([str(directory), "--prompt", "x", "--checkpoint", str(wrong)], capsys)
    last = err.splitlines()[-1]  # after the progress line
    assert code == 2 and last.startswith("llmgen: error: ") and "checkpoint does not match the model" in last, err
