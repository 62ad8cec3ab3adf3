"""Quantized checkpoints (issue 16 section 3): fine-grained FP8 for every family, NVIDIA ModelOpt NVFP4
(and its per-tensor FP8), dequantized on load; any other method is one error.

The quantizers and reference dequantizers here are written from the formats' definitions, independently
of the generated loader:
- fine-grained FP8 (DeepSeek-V3, transformers' FineGrainedFP8Config, the Qwen3 FP8 releases): a weight
  (out, in) in tiles of weight_block_size; each tile's scale = max|tile| / 448 (e4m3's largest), stored as
  float32 "<name>.weight_scale_inv"; values = tile / scale cast to e4m3; W = value x scale;
- NVFP4 (NVIDIA ModelOpt's unified checkpoint, modelopt/torch/quantization/qtensor/nvfp4_tensor.py):
  16 consecutive values along `in` share an e4m3 scale, the tensor a float32 global scale
  "<name>.weight_scale_2" = max|W| / (6 x 448); group scale = max|group| / 6 / global, cast to e4m3
  ("<name>.weight_scale", (out, in / 16)); codes = nearest e2m1 value (sign bit 8; magnitudes 0, 0.5, 1,
  1.5, 2, 3, 4, 6) of W / (scale x global), two per byte, the even index in the low nibble ("<name>.weight",
  (out, in / 2) uint8); W = e2m1 x (scale x global), the two scales multiplied first as ModelOpt does;
- ModelOpt FP8: e4m3 "<name>.weight" with a float32 scalar "<name>.weight_scale"; W = value x scale.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO, catalog_config, import_path

from llmgen.compiler.verification.checkpoint import check_checkpoint
from llmgen.compiler.basics.cli import main
from llmgen.compiler.basics.errors import UnsupportedError
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

QWEN3_FP8 = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
MODELOPT_NVFP4 = {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16, "kv_cache_quant_algo": "FP8",
                  "exclude_modules": ["lm_head"], "producer": {"name": "modelopt", "version": "0.45.0"}}
E4M3_MAX = 448.0
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ----------------------------------------------------------------------------- the formats, by definition


def quantize_fp8_blocks(w: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = w.shape
    nr, nc = -(-rows // block[0]), -(-cols // block[1])
    values, scale = torch.empty(rows, cols, dtype=torch.float8_e4m3fn), torch.empty(nr, nc)
    for i in range(nr):
        for j in range(nc):
            tile = (slice(i * block[0], (i + 1) * block[0]), slice(j * block[1], (j + 1) * block[1]))
            scale[i, j] = w[tile].abs().max() / E4M3_MAX
            values[tile] = (w[tile] / scale[i, j]).to(torch.float8_e4m3fn)
    return values, scale


def dequantize_fp8_blocks(values: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    out = torch.empty(values.shape)
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            tile = (slice(i * block[0], (i + 1) * block[0]), slice(j * block[1], (j + 1) * block[1]))
            out[tile] = values[tile].float() * scale[i, j]
    return out


def quantize_nvfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, cols = w.shape
    global_scale = (w.abs().max() / (6 * E4M3_MAX)).float()
    groups = w.reshape(rows, cols // 16, 16)
    scale = (groups.abs().amax(-1) / 6 / global_scale).to(torch.float8_e4m3fn)
    effective = scale.float() * global_scale
    x = groups / torch.where(effective == 0, 1.0, effective)[..., None]
    magnitude = (x.abs()[..., None] - torch.tensor(E2M1)).abs().argmin(-1)  # nearest e2m1 magnitude
    codes = (magnitude + 8 * (x < 0)).reshape(rows, cols).to(torch.uint8)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return packed, scale, global_scale.reshape(())


def dequantize_nvfp4(packed: torch.Tensor, scale: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    rows, cols = packed.shape[0], packed.shape[1] * 2
    out = torch.empty(rows, cols)
    for j in range(cols):
        code = (packed[:, j // 2].long() >> (4 * (j % 2))) & 0xF
        magnitude = torch.tensor(E2M1)[code & 7]
        value = torch.where(code >= 8, -magnitude, magnitude)
        out[:, j] = value * (scale[:, j // 16].float() * global_scale)
    return out


def test_quantizers_are_right():
    """Values on each format's grid come back exactly; others within the format's rounding."""
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(0)) * 0.05
    values, scale = quantize_fp8_blocks(w, (32, 48))
    back = dequantize_fp8_blocks(values, scale, (32, 48))
    assert ((back - w).abs() <= w.abs() * 2**-4 + 1e-12).all()  # e4m3: 3 mantissa bits, half-ulp 2^-4
    assert torch.equal(dequantize_fp8_blocks(*quantize_fp8_blocks(back, (32, 48)), (32, 48)), back)
    packed, scale, global_scale = quantize_nvfp4(w)
    back = dequantize_nvfp4(packed, scale, global_scale)
    assert (back - w).norm() / w.norm() < 0.15 and packed.shape == (64, 48) and scale.shape == (64, 6)
    again = dequantize_nvfp4(*quantize_nvfp4(back))
    assert (again - back).abs().max() <= 1e-6 * back.abs().max()


# ----------------------------------------------------------------------------- config handling


def test_every_family_reads_fine_grained_fp8():
    for hub_id in ("Qwen/Qwen3-0.6B", "meta-llama/Llama-3.2-1B", "google/gemma-3-1b-it", "mistralai/Mixtral-8x7B-v0.1"):
        arch = lower({**catalog_config(hub_id), "quantization_config": QWEN3_FP8})
        assert arch.fp8 is not None and arch.fp8.block == (128, 128)
    assert lower(catalog_config("deepseek-ai/DeepSeek-V3")).fp8.block == (128, 128)


def test_qwen36_nvfp4_config_is_read():
    """The published Qwen3.6 NVFP4 config's quantization_config (MIXED_PRECISION: FP8 and NVFP4 layers)."""
    from llmgen.compiler.passes.lowering.quant import lower_quantization

    raw = json.loads((REPO / "tests" / "fixtures" / "quantized" / "nvidia__Qwen3.6-27B-NVFP4.json").read_text())
    assert lower_quantization(raw, "config")["modelopt"].formats == ("nvfp4", "fp8")


@pytest.mark.parametrize("method", ["gptq", "awq", "bitsandbytes", "compressed-tensors", "hqq", None])
def test_other_methods_are_one_error_naming_what_is_supported(method, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**catalog_config("Qwen/Qwen3-0.6B"),
                                  "quantization_config": {"quant_method": method, "bits": 4}}))
    assert main(["from-config", str(config), "--out", str(tmp_path / "out"), "--no-verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmgen: error:") and repr(method) in err[0]
    assert "'fp8'" in err[0] and "'modelopt'" in err[0] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("change,word", [({"quant_algo": "INT4_AWQ"}, "INT4_AWQ"), ({"group_size": 32}, "group_size"),
                                         ({"bits": 4}, "bits")])
def test_bad_modelopt_configs(change, word):
    with pytest.raises(Exception) as info:
        lower({**catalog_config("Qwen/Qwen3-0.6B"), "quantization_config": {**MODELOPT_NVFP4, **change}})
    assert word in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- tiny replicas


def _compile(raw: dict, tmp_path, name: str):
    loaded = LoadedConfig(raw=raw, text=json.dumps(raw), source_id=f"test/{name}", revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    directory = tmp_path / name
    directory.mkdir()
    for file, data in compile_config(loaded).files.items():
        (directory / file).write_bytes(data)
    return import_path(directory / "model.py", f"quant_{name}"), import_path(directory / "test_parity.py", f"qp_{name}")


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    """A tiny Qwen3 replica (random weights, saved by transformers) and the generated code of its FP8 form."""
    tmp = tmp_path_factory.mktemp("qwen3")
    model_py, parity = _compile({**catalog_config("Qwen/Qwen3-0.6B"), "quantization_config": QWEN3_FP8}, tmp, "fp8")
    reference = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(**parity.HF_CONFIG), attn_implementation="eager", dtype=torch.float32)
    parity.randomise(reference, torch.Generator().manual_seed(5))
    reference.save_pretrained(tmp / "float")
    return tmp, parity, reference.eval(), load_file(str(tmp / "float" / "model.safetensors"))


def _quantized_checkpoint(state, directory, quantize) -> dict[str, torch.Tensor]:
    """Write `state` with every layer projection quantized by `quantize`; returns the dequantized
    weights by the definition."""
    directory.mkdir()
    out, expected = {}, {}
    for key, tensor in state.items():
        if key.endswith(tuple(f"{name}.weight" for name in LINEARS)):
            stored, expected[key] = quantize(key, tensor)
            out.update(stored)
        else:
            out[key] = tensor
    save_file(out, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return expected


def _logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return getattr(out, "logits", out)


def test_fp8_replica_loads_bit_equal_and_passes_parity(qwen3, tmp_path):
    tmp, parity, reference, state = qwen3
    block = (32, 16)  # several blocks per matrix (transformers' own loader refuses ragged ones)
    model_py, _ = _compile({**parity.HF_CONFIG, "quantization_config": {**QWEN3_FP8, "weight_block_size": list(block)}},
                           tmp_path, "fp8_tiny")

    def quantize(key, tensor):
        values, scale = quantize_fp8_blocks(tensor, block)
        return {key: values, f"{key}_scale_inv": scale}, dequantize_fp8_blocks(values, scale, block)

    expected = _quantized_checkpoint(state, tmp_path / "ckpt", quantize)
    check_checkpoint(tmp_path / "ckpt", lower({**parity.HF_CONFIG, "quantization_config": QWEN3_FP8}))
    ours = model_py.load_checkpoint(tmp_path / "ckpt", model_py.Config(**parity.MODEL_CONFIG))
    loaded = ours.state_dict()
    assert len(expected) == 7 * parity.MODEL_CONFIG["num_hidden_layers"]
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key  # bit-equal to the definition
    # Parity within the FP8 rounding of the weights: transformers on the same dequantized weights.
    dequantized = transformers.AutoModelForCausalLM.from_config(reference.config, attn_implementation="eager",
                                                                dtype=torch.float32)
    dequantized.load_state_dict({**reference.state_dict(), **expected})
    ids = torch.randint(0, parity.HF_CONFIG["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(1))
    theirs, mine, unquantized = _logits(dequantized.eval(), ids), _logits(ours, ids), _logits(reference, ids)
    assert (theirs - mine).abs().max().item() <= 1e-5
    rounding = (unquantized - mine).abs().max().item()
    assert 1e-5 < rounding < 0.1 * unquantized.abs().max().item()  # the FP8 rounding shows, and is small
    pytest.importorskip("accelerate")  # transformers' own FP8 loader (dequantizes on a CPU) needs it
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(
        {**reference.config.to_dict(), "quantization_config": {**QWEN3_FP8, "weight_block_size": list(block)}}))
    hf_fp8 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32,
                                                               attn_implementation="eager")
    assert (_logits(hf_fp8.eval(), ids) - mine).abs().max().item() <= 1e-5


def test_nvfp4_replica_loads_bit_equal_and_passes_parity(qwen3, tmp_path):
    """A ModelOpt checkpoint: NVFP4 MLPs, per-tensor FP8 attention (as the Qwen3.6 release mixes them),
    activation and KV-cache scales that the loader skips."""
    tmp, parity, reference, state = qwen3
    layers = {f"model.layers.{i}.{part}.{name}": {"quant_algo": "FP8" if part == "self_attn" else "W4A16_NVFP4",
                                                   "group_size": 16}
              for i in range(parity.MODEL_CONFIG["num_hidden_layers"])
              for part, names in (("self_attn", LINEARS[:4]), ("mlp", LINEARS[4:])) for name in names}
    config = {"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION", "quantized_layers": layers,
              "kv_cache_scheme": {"dynamic": False, "num_bits": 8, "type": "float"}, "ignore": ["lm_head"]}
    model_py, _ = _compile({**parity.HF_CONFIG, "quantization_config": config}, tmp_path, "nvfp4_tiny")

    def quantize(key, tensor):
        base = key.removesuffix(".weight")
        extra = {f"{base}.input_scale": torch.tensor(0.5)}
        if ".mlp." in key:
            packed, scale, global_scale = quantize_nvfp4(tensor)
            stored = {key: packed, f"{key}_scale": scale, f"{key}_scale_2": global_scale}
            return {**stored, **extra}, dequantize_nvfp4(packed, scale, global_scale)
        scale = tensor.abs().max() / E4M3_MAX
        values = (tensor / scale).to(torch.float8_e4m3fn)
        if base.endswith(("k_proj", "v_proj")):
            extra[f"{base}.{base[-6]}_scale"] = torch.tensor(1.0)  # k_proj.k_scale, v_proj.v_scale
        return {key: values, f"{key}_scale": scale.float(), **extra}, values.float() * scale.float()

    expected = _quantized_checkpoint(state, tmp_path / "ckpt", quantize)
    check_checkpoint(tmp_path / "ckpt", lower({**parity.HF_CONFIG, "quantization_config": config}))  # compile time
    ours = model_py.load_checkpoint(tmp_path / "ckpt", model_py.Config(**parity.MODEL_CONFIG))
    loaded = ours.state_dict()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    dequantized = transformers.AutoModelForCausalLM.from_config(reference.config, attn_implementation="eager",
                                                                dtype=torch.float32)
    dequantized.load_state_dict({**reference.state_dict(), **expected})
    ids = torch.randint(0, parity.HF_CONFIG["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(2))
    diff = (_logits(dequantized.eval(), ids) - _logits(ours, ids)).abs().max().item()
    print(f"NVFP4 + FP8 replica: max|dlogit| {diff:.3g} against transformers on the dequantized weights")
    assert diff <= 1e-5


def test_nvfp4_loader_names_a_misfit(qwen3, tmp_path):
    _, parity, _, state = qwen3
    model_py, _ = _compile({**parity.HF_CONFIG, "quantization_config": MODELOPT_NVFP4}, tmp_path, "nvfp4_bad")

    def quantize(key, tensor):
        packed, scale, global_scale = quantize_nvfp4(tensor)
        return {key: packed, f"{key}_scale": scale[:, :-1].contiguous(), f"{key}_scale_2": global_scale}, tensor

    _quantized_checkpoint(state, tmp_path / "ckpt", quantize)
    with pytest.raises(model_py.WeightLoadError, match="NVFP4"):
        model_py.load_checkpoint(tmp_path / "ckpt", model_py.Config(**parity.MODEL_CONFIG))


def test_unquantized_models_have_no_dequantizer():
    arch = lower(catalog_config("Qwen/Qwen3-0.6B"))
    assert arch.fp8 is None and arch.modelopt is None
    assert "modelopt" not in json.dumps(arch.model_dump(mode="json"))
    with pytest.raises(UnsupportedError):
        lower({**catalog_config("Qwen/Qwen3-0.6B"), "quantization_config": {"quant_method": "mxfp4"}})
