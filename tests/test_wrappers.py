"""Multimodal wrappers (issue 16 section 2): a config whose text decoder sits under `text_config` compiles
when the text type does; its checkpoint keys are read under the wrapper's prefix, the other modalities'
weights skipped. Tiny-replica parity through transformers' wrapper classes (`llama4`:
Llama4ForConditionalGeneration, `kimi_k25`: Kimi_K25ForConditionalGeneration, `qwen2_vl` / `qwen2_5_vl`:
Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration, `qwen3_vl`: Qwen3VLForConditionalGeneration),
the replica saved with every vision weight."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import import_path
from test_llama4 import maverick_like, scout
from test_parity_variants import compile_and_verify

from llmgen.compiler.basics.cli import main
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower, lower_noted
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.write import write_outputs

transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "wrappers"


def llama4_wrapper(text: dict) -> dict:
    """A Llama 4 hub-style config: transformers' Llama4Config keys around a Scout / Maverick-shaped text part."""
    raw = transformers.Llama4Config().to_diff_dict()
    raw.pop("transformers_version")
    return {**raw, "architectures": ["Llama4ForConditionalGeneration"], "text_config": text}


def kimi_k25() -> dict:
    return json.loads((FIXTURES / "moonshotai__Kimi-K2.5.json").read_text())


@pytest.mark.parametrize("name,text", [("scout", scout), ("maverick", maverick_like)])
def test_llama4_wrapper_parity_through_the_wrapper_class(name, text, tmp_path):
    raw = llama4_wrapper(text())
    arch, notes = lower_noted(raw)
    assert arch.checkpoint_prefix == "language_model." and not arch.head.tied and notes == ()
    assert arch.model_dump(exclude={"checkpoint_prefix"}) == lower({**text(), "tie_word_embeddings": False}).model_dump(
        exclude={"checkpoint_prefix"})
    result = compile_and_verify(raw, tmp_path, f"llama4-{name}")
    assert result["passed"] and result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 0.1, result
    parity = (tmp_path / f"llama4-{name}" / "test_parity.py").read_text()
    assert "AutoModelForImageTextToText" in parity and '"vision_config"' in parity  # the wrapper class, with vision


def test_kimi_k25_as_published_is_one_error_naming_its_quantization(tmp_path, capsys):
    """The release's routed experts are INT4 compressed-tensors: refused in one line saying what llmgen reads."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(kimi_k25()))
    assert main(["from-config", str(path), "--out", str(tmp_path / "out"), "--no-verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.text_config: key 'quantization_config'" in err[0] and "compressed-tensors" in err[0]


def _unquantized_kimi() -> dict:
    raw = kimi_k25()
    raw["text_config"].pop("quantization_config")
    return raw


def test_kimi_k25_text_part_is_deepseek_v3():
    raw = _unquantized_kimi()
    arch, notes = lower_noted(raw)  # the text part is a transformers 4.x full-form dump: generic keys pass
    text = {**raw["text_config"], "model_type": "deepseek_v3", "tie_word_embeddings": False}
    assert notes == () and arch.checkpoint_prefix == "language_model." and not arch.head.tied
    assert arch.model_dump(exclude={"checkpoint_prefix", "model_type"}) == lower(text).model_dump(
        exclude={"checkpoint_prefix", "model_type"})


def test_kimi_k25_parity_through_the_wrapper_class(tmp_path):
    """transformers 5.24 saves this wrapper with the text layers renamed to "blocks" (its vision rename runs
    on every key), so the replica is written in the release's layout instead ("language_model.model.layers",
    "language_model.lm_head", "vision_tower.*", "mm_projector.*"), and transformers itself is shown to read
    that layout back to the same logits."""
    raw = _unquantized_kimi()
    loaded = LoadedConfig(raw=raw, text=json.dumps(raw), source_id="moonshotai/Kimi-K2.5", revision="local",
                          origin="file", checkpoint_dir=None, note=None)
    directory = write_outputs(tmp_path / "kimi", compile_config(loaded).files)
    model_py = import_path(directory / "model.py", "kimi_k25_model")
    parity = import_path(directory / "test_parity.py", "kimi_k25_parity")
    config = transformers.AutoConfig.for_model(**copy.deepcopy(parity.HF_CONFIG))
    reference = transformers.AutoModelForImageTextToText.from_config(
        config, attn_implementation="eager", dtype=torch.float32, experts_implementation="eager")
    assert type(reference).__name__ == "Kimi_K25ForConditionalGeneration"
    parity.randomise(reference, torch.Generator().manual_seed(7))
    reference.eval()
    reference.save_pretrained(tmp_path / "saved")  # for the vision keys and the config, in transformers' spelling
    state = {}
    for key, tensor in reference.state_dict().items():  # the release's names (transformers' load renames, undone)
        key = key.replace("model.language_model.", "language_model.model.", 1)
        state[key.replace("lm_head.", "language_model.lm_head.", 1) if key.startswith("lm_head.") else key] = tensor
    release = tmp_path / "release"
    release.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(release / "model.safetensors"), metadata={"format": "pt"})
    (release / "config.json").write_text((tmp_path / "saved" / "config.json").read_text())
    assert any(k.startswith(("model.vision_tower.", "vision_tower.")) for k in state)  # vision weights are there
    ids = torch.randint(0, parity.MODEL_CONFIG["vocab_size"] - 8, (2, parity.SEQ_LEN),
                        generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        again = transformers.AutoModelForImageTextToText.from_pretrained(
            release, attn_implementation="eager", dtype=torch.float32, experts_implementation="eager").eval()
        assert torch.equal(again(input_ids=ids).logits, expected)  # transformers reads the release layout
        ours = model_py.load_checkpoint(release, model_py.Config(**parity.MODEL_CONFIG))  # vision keys skipped
        diff = (ours(ids) - expected).abs().max().item()
    print(f"kimi_k25 replica: max|dlogit| {diff:.3g} (max|logit| {expected.abs().max().item():.3g})")
    assert diff <= 1e-5 and expected.abs().max().item() > 0.1, diff
    assert "keys outside it belong to the other parts" in (directory / "weights.py").read_text()


def qwen_vl(config_class, form: str) -> dict:
    """transformers' Qwen2-VL / Qwen2.5-VL config keys (M-RoPE sections as the releases give them), nested as
    transformers 5 writes them, or flat as the transformers 4.x hub files are (text keys at the top level,
    rope_scaling {"type": "mrope", ...})."""
    raw = config_class().to_diff_dict()
    raw.pop("transformers_version")
    raw["architectures"] = [config_class.__name__.replace("Config", "ForConditionalGeneration")]
    raw["text_config"]["rope_parameters"]["mrope_section"] = [16, 24, 24]
    if form == "flat":
        text = raw.pop("text_config")
        rope = text.pop("rope_parameters")
        for key in ("model_type", "layer_types"):
            text.pop(key)
        raw.update(text, rope_theta=rope["rope_theta"], rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
    return raw


@pytest.mark.parametrize("name", ["Qwen2VLConfig", "Qwen2_5_VLConfig"])
@pytest.mark.parametrize("form", ["nested", "flat"])
def test_qwen_vl_text_decoder_parity_through_the_wrapper_class(name, form, tmp_path):
    """Text alone gets the same position on M-RoPE's three axes: plain RoPE, checked by parity (exact)."""
    raw = qwen_vl(getattr(transformers, name), form)
    arch, notes = lower_noted(raw)
    assert arch.skipped_prefixes == ("visual.",) and arch.checkpoint_prefix == "" and notes == ()
    assert not arch.head.tied and arch.layers[0].mixer.q_bias and not arch.layers[0].mixer.o_bias
    result = compile_and_verify(raw, tmp_path, f"{name}-{form}")
    assert result["passed"] and result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 0.1, result
    parity = import_path(tmp_path / f"{name}-{form}" / "test_parity.py", f"vl_parity_{name}_{form}")
    assert sum(parity.HF_CONFIG["text_config"]["rope_parameters" if form == "nested" else "rope_scaling"][
        "mrope_section"]) == parity.MODEL_CONFIG["head_dim"] // 2  # the replica's sections are real ones
    model = (tmp_path / f"{name}-{form}" / "weights.py").read_text()  # the reader
    assert 'SKIPPED_PREFIXES = ("visual.",)' in model


@pytest.mark.parametrize("section", [[16, 24], [16, 24, 23], [16, 24, "24"]])
def test_bad_mrope_sections(section):
    raw = qwen_vl(transformers.Qwen2VLConfig, "nested")
    raw["text_config"]["rope_parameters"]["mrope_section"] = section
    with pytest.raises(Exception) as info:
        lower(raw)
    assert "mrope_section" in str(info.value) and "\n" not in str(info.value)


def test_qwen3_vl_text_decoder_parity_through_the_wrapper_class(tmp_path):
    """`qwen3_vl`: Qwen3's block, interleaved M-RoPE (plain RoPE for text alone); the checkpoint keeps the decoder
    under "model.language_model." and the head as "lm_head", the vision tower under "model.visual."."""
    raw = transformers.Qwen3VLConfig().to_diff_dict()
    raw.pop("transformers_version")
    raw["architectures"] = ["Qwen3VLForConditionalGeneration"]
    raw["text_config"]["rope_parameters"].update(mrope_section=[24, 20, 20], mrope_interleaved=True)
    arch, notes = lower_noted(raw)
    assert (arch.backbone_checkpoint, arch.skipped_prefixes, notes) == ("model.language_model.", ("model.visual.",), ())
    result = compile_and_verify(raw, tmp_path, "qwen3-vl")
    assert result["passed"] and result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 0.1, result
    model = (tmp_path / "qwen3-vl" / "weights.py").read_text()  # the reader
    assert '"model.language_model.layers.{i}.self_attn.q_norm.weight"' in model and '"lm_head.weight"' in model
