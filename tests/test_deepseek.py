"""DeepSeek-V3: multi-head latent attention, sigmoid group-limited routing, the latent KV cache,
block float8 dequantization (against transformers' own), full-size counts, config errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import GENERATED, catalog_config, import_path

from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.weight_map import active_parameter_count, parameter_count

transformers = pytest.importorskip("transformers")
HUB_ID = "deepseek-ai/DeepSeek-V3"


def build_replica(directory, tag: str):
    """A generated directory's model.py with its parity test's tiny replica, weights randomised:
    (model module, parity module, transformers model, generated model)."""
    model_py = import_path(directory / "model.py", f"{tag}_model")
    parity = import_path(directory / "test_parity.py", f"{tag}_parity")
    config = transformers.AutoConfig.for_model(**parity.HF_CONFIG)
    reference = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="eager", dtype=torch.float32, experts_implementation="eager")
    parity.randomise(reference, torch.Generator().manual_seed(3))
    ours = model_py.CausalLM(model_py.Config(**parity.MODEL_CONFIG))
    ours.load_state_dict(reference.state_dict(), strict=False)
    return model_py, parity, reference.eval(), ours.eval()


@pytest.fixture(scope="module")
def replica():
    """The committed model.py with the committed parity test's tiny replica."""
    return build_replica(GENERATED / "DeepSeek-V3", "deepseek_v3")


def test_committed_parity_every_expert_hit():
    parity = json.loads((GENERATED / "DeepSeek-V3" / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-5 and parity["max_abs_logit"] > 0.1
    assert len(parity["expert_hits"]) == 2 and all(min(layer) > 0 for layer in parity["expert_hits"])


def test_generated_parity_test_passes():
    import_path(GENERATED / "DeepSeek-V3" / "test_parity.py", "deepseek_v3_parity_run").test_parity_with_transformers()


@pytest.mark.parametrize("chunks", [[1] * 12, [5, 1, 4, 2]])
def test_latent_cache_decoding_matches_full_forward(replica, chunks):
    """Token by token and in chunks: cached logits equal one uncached forward; the cache holds
    kv_lora_rank + qk_rope_head_dim values per token and layer, nothing per head."""
    check_latent_cache(replica, chunks)


def check_latent_cache(replica, chunks: list[int]) -> None:
    _, parity, _, ours = replica
    ids = torch.randint(0, 200, (2, sum(chunks)), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = ours(ids)
        cache = ours.enable_cache(batch=2, max_len=16)
        pieces, start = [], 0
        for size in chunks:
            pieces.append(ours(ids[:, start:start + size]))
            start += size
        ours.disable_cache()
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-5
    c = parity.MODEL_CONFIG
    assert cache.nbytes() == c["num_hidden_layers"] * 2 * 16 * (c["kv_lora_rank"] + c["qk_rope_head_dim"]) * 4


def test_deepseek_v3_cache_bytes_per_token():
    arch = lower(catalog_config(HUB_ID))
    mla = arch.layers[0].mixer
    latent = arch.num_layers * (mla.kv_lora_rank + mla.qk_rope_head_dim) * 2  # bf16
    full_kv = arch.num_layers * mla.num_heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim) * 2
    assert latent == 70_272 and full_kv == 61 * 128 * 320 * 2  # 4,997,120 B: 71x more


def test_full_size_parameter_counts():
    arch = lower(catalog_config(HUB_ID))
    config = transformers.AutoConfig.for_model(**catalog_config(HUB_ID))
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(config)
    assert parameter_count(arch) == sum(p.numel() for p in reference.parameters()) == 671_026_404_352
    assert active_parameter_count(arch) == 37_552_282_624


def _quantize_blocks(weight: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Per the format: each block x block tile scaled so its max |value| maps to e4m3's 448."""
    rows, cols = weight.shape
    tiles = weight.reshape(rows // block, block, cols // block, block)
    scale = tiles.abs().amax(dim=(1, 3)) / torch.finfo(torch.float8_e4m3fn).max  # (rows/block, cols/block)
    values = (tiles / scale[:, None, :, None]).to(torch.float8_e4m3fn).reshape(rows, cols)
    return values, scale.float()


def test_fp8_dequantizer_matches_transformers(replica):
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize

    model_py = replica[0]
    weight = torch.randn(384, 256, generator=torch.Generator().manual_seed(5)) * 0.05
    values, scale_inv = _quantize_blocks(weight)
    theirs = Fp8Dequantize(None)._dequantize_one(values, scale_inv, torch.float32)
    ours = model_py.dequantize_fp8_blocks(values, scale_inv, torch.float32)
    assert (ours - theirs).abs().max().item() == 0.0
    assert ((ours - weight).abs() <= weight.abs() * 2**-4 + 1e-6).all()  # e4m3: 3 mantissa bits, half-ulp rounding
    # A ragged edge (DeepSeek's kv_a_proj_with_mqa has 576 rows: 4.5 blocks) uses the partial block's scale.
    ragged = model_py.dequantize_fp8_blocks(values[:320], scale_inv, torch.bfloat16)
    assert torch.equal(ragged, theirs[:320].to(torch.bfloat16))


def test_loader_dequantizes_and_skips_the_mtp_layer(replica, tmp_path):
    from safetensors.torch import save_file

    model_py, parity, reference, ours = replica
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    key = "model.layers.0.self_attn.kv_b_proj.weight"
    assert state[key].shape == (112, 32)  # one ragged block: the scale grid is (1, 1)
    values, scale_inv = _quantize_blocks(torch.nn.functional.pad(state[key], (0, 96, 0, 16)), block=128)
    state[key], state[key + "_scale_inv"] = values[:112, :32].contiguous(), scale_inv
    state["model.layers.3.eh_proj.weight"] = torch.zeros(2, 2)  # a multi-token-prediction layer's tensor
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = model_py.load_checkpoint(tmp_path, model_py.Config(**parity.MODEL_CONFIG))
    expected = model_py.dequantize_fp8_blocks(values, scale_inv, torch.float32)[:112, :32]
    assert torch.equal(loaded.model.layers[0].self_attn.kv_b_proj.weight, expected)


@pytest.mark.parametrize("change, word", [
    ({"n_group": 3}, "n_group"),
    ({"scoring_func": "softmax"}, "scoring_func"),
    ({"quantization_config": {"quant_method": "awq"}}, "quantization_config"),
    ({"num_key_value_heads": 64}, "num_key_value_heads"),
    ({"qk_rope_head_dim": 63}, "qk_rope_head_dim"),
    ({"kv_lora_rank": "512"}, "kv_lora_rank"),
    ({"attention_chunk_size": 1024}, "attention_chunk_size"),  # read by transformers: not ignored
])
def test_bad_config_values_name_the_key(change, word):
    raw = copy.deepcopy(catalog_config(HUB_ID))
    raw.update(change)
    with pytest.raises(LlmgenError) as info:
        lower(raw)
    message = str(info.value)
    assert word in message and "\n" not in message, message
