"""``llmgen card``: pattern strips, parameter counts (checked against transformers), KV-cache
sizes with sliding windows, the MoE / MLA / no-cache / NoPE hooks, the three formats, errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import GENERATED

from llmgen.compiler.insight.card import (
    Model,
    _active_share,
    card,
    compress,
    format_card,
    layer_letter,
    kv_bytes_per_token,
    load_model,
    parameters,
)
from llmgen.compiler.basics.cli import main
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.verification.verify import _import


@pytest.mark.parametrize(
    "letters, strip",
    [("SSSSSF" * 3, "SSSSSF×3"), ("SSSSSF" * 4 + "SS", "SSSSSF×4 + SS"), ("F" * 16, "F×16"), ("SSFFS", "S×2 F×2 S"),
     ("F", "F"), ("sF" * 2, "sF×2")],
)
def test_compress(letters, strip):
    assert compress(letters) == strip


def test_gemma3_1b_card():
    data = card(load_model("google/gemma-3-1b-it"))
    assert data["pattern"]["strip"] == "SSSSSF×4 + SS"
    assert data["pattern"]["legend"] == {"S": "sliding window 512", "F": "full attention"}
    assert data["attention"] == "MQA, sliding 5:1 (window 512)"
    kv = data["kv_cache"]
    per_layer = 2 * 1 * 256 * 2  # K and V, one KV head of 256, bf16
    assert kv["bytes_per_token_bf16"] == 26 * per_layer
    assert kv["effective_bytes_bf16"]["4k"] == (22 * 512 + 4 * 4096) * per_layer
    assert kv["effective_bytes_bf16"]["128k"] == (22 * 512 + 4 * 131072) * per_layer
    assert kv["beyond_trained_context"] == ["128k"]
    p = data["parameters"]
    assert p["embedding"] == 262144 * 1152 and p["total"] == p["embedding"] + p["non_embedding"]
    assert p["active_per_token"] == p["total"]


def test_llama_kv_cache_has_no_window():
    kv = card(load_model("meta-llama/Llama-3.2-1B"))["kv_cache"]
    assert kv["bytes_per_token_bf16"] == 16 * 2 * 8 * 64 * 2
    assert kv["effective_bytes_bf16"]["32k"] == 32768 * kv["bytes_per_token_bf16"]


@pytest.mark.parametrize("model", sorted(d.name for d in GENERATED.iterdir() if (d / "test_parity.py").is_file()))
def test_parameter_count_matches_transformers(model):
    """The tiny replica's count from the IR equals the transformers model's (tied head counted once)."""
    import torch
    import transformers

    module = _import(GENERATED / model / "test_parity.py")
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**module.HF_CONFIG))
    others = ("vision_tower", "embed_vision", "audio_tower", "embed_audio")  # a wrapper's other modalities
    expected = sum(p.numel() for name, p in reference.named_parameters() if not any(f".{o}." in f".{name}" for o in others))
    assert parameters(lower(module.HF_CONFIG))["total"] == expected


def test_moe_mla_and_cacheless_layers_are_designed_for():
    """Fields the IR does not have yet are read by name: routed experts count by their share."""
    arch = SimpleNamespace(layers=[SimpleNamespace(ffn=SimpleNamespace(num_experts=8, experts_per_token=2))])
    expert = SimpleNamespace(param="model.layers.{i}.mlp.experts.{e}.up_proj.weight")
    shared = SimpleNamespace(param="model.layers.{i}.self_attn.q_proj.weight")
    assert _active_share(arch, expert) == 0.25 and _active_share(arch, shared) == 1.0
    mla = SimpleNamespace(mixer=SimpleNamespace(kv_lora_rank=512, qk_rope_head_dim=64))
    assert kv_bytes_per_token(mla) == (512 + 64) * 2
    assert kv_bytes_per_token(SimpleNamespace(mixer=SimpleNamespace(kind="ssm"))) == 0


def test_nope_layers_are_shown():
    model = load_model("meta-llama/Llama-3.2-1B")
    layers = tuple(
        layer.model_copy(update={"mixer": layer.mixer.model_copy(update={"rope": None})}) if layer.index % 4 == 3 else layer
        for layer in model.arch.layers
    )
    data = card(Model("nope", "nope", model.arch.model_copy(update={"layers": layers})))
    assert data["pattern"]["strip"] == "FFFf×4"
    assert data["nope_layers"] == [3, 7, 11, 15]
    assert data["pattern"]["legend"]["f"] == "full attention, no RoPE (NoPE)"
    assert any("NoPE" in note for note in data["features"])


def test_generated_directory_and_catalog_id_agree():
    from_dir, from_id = card(load_model(str(GENERATED / "gemma-3-270m"))), card(load_model("google/gemma-3-270m"))
    assert from_dir == from_id and from_dir["id"] == "google/gemma-3-270m"


def test_formats():
    data = card(load_model("google/gemma-3-270m"))
    text = format_card(data)
    assert text.splitlines()[0] == "google/gemma-3-270m  (gemma3_text)"
    assert "18: SSSSSF×3" in text and "18.0 KiB per token in bf16" in text
    md = format_card(data, "md")
    assert md.startswith("## google/gemma-3-270m (`gemma3_text`)") and "| parameters |" in md
    assert json.loads(format_card(data, "json")) == json.loads(json.dumps(data))


def test_cli(capsys):
    assert main(["card", "google/gemma-3-270m", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_layers"] == 18
    assert main(["card", str(GENERATED / "Qwen3-0.6B")]) == 0
    assert "F×28" in capsys.readouterr().out


def test_cli_errors(capsys, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "not_a_family", "hidden_size": 8}')
    assert main(["card", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmgen: error: ") and "not_a_family" in err and err.count("\n") == 1
    assert main(["card", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "arch.json").write_text("{}")
    with pytest.raises(LlmgenError, match="arch.json"):
        load_model(str(tmp_path / "gen"))


def test_pattern_letters_mean_one_thing():
    """Latent attention is A (Mamba-2 keeps M), and no recurrent kind may take a letter the card gives others."""
    import dataclasses

    from llmgen.compiler.passes.mixers import KINDS, RESERVED_LETTERS, register

    assert layer_letter(load_model("deepseek-ai/DeepSeek-V3").arch.layers[0]) == "A"
    letters = [kind.letter for kind in KINDS.values()]
    assert len(set(letters)) == len(letters) and not set("".join(letters).upper()) & set(RESERVED_LETTERS)
    some = next(iter(KINDS.values()))
    for letter in ("A", "e", "S", some.letter):
        with pytest.raises(ValueError, match="is taken"):
            register(dataclasses.replace(some, kind="another_kind", letter=letter))
    assert "another_kind" not in KINDS
