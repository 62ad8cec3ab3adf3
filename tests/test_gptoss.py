"""gpt-oss: attention sinks, sliding / full layers, clamped-SwiGLU experts stacked (in, out) with
interleaved gate / up columns, and MXFP4 expert weights dequantized on load.

Tiny-replica parity with every expert hit and around the sliding window, the MXFP4 dequantizer
against transformers' own on tensors quantized here per the OCP MX spec, a replica checkpoint
stored as MXFP4 loaded by both, full-size counts and the hub checkpoint's MXFP4 names, config errors.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import GENERATED, catalog_config, import_path, window_boundary_runs
from test_lowering import _mutated
from test_parity_variants import compile_and_verify

from llmgen.compiler.verification.checkpoint import check_checkpoint, expected_shapes
from llmgen.compiler.basics.errors import CheckpointError, ConfigError, LlmgenError, UnsupportedError
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.verification.mxfp4 import accept_quantized
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.passes.weight_map import active_parameter_count, parameter_count

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402  (installed with transformers)

HUB_ID = "openai/gpt-oss-20b"
SLUG = "gpt-oss-20b"
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])  # OCP MX FP4 (e2m1) magnitudes, codes 0-7
E2M1_EMAX = 2  # exponent of the largest e2m1 normal (6 = 1.5 x 2^2)


def quantize_mxfp4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OCP MX spec, written here independently of both dequantizers: weight (experts, in, out) ->
    blocks (experts, out, in / 32, 16) uint8 (element 2j in the low nibble of byte j, 2j + 1 in the
    high one) and scales (experts, out, in / 32) uint8 (e8m0: shared exponent + 127). The shared
    exponent of 32 values is floor(log2(max |v|)) - emax; each value / 2^exponent is rounded to the
    nearest e2m1 value (saturating at 6)."""
    rows = weight.transpose(1, 2).float()  # (experts, out, in)
    groups = rows.reshape(*rows.shape[:-1], rows.shape[-1] // 32, 32)
    biggest = groups.abs().amax(dim=-1, keepdim=True).clamp(min=2.0**-100)
    exponent = torch.floor(torch.log2(biggest)) - E2M1_EMAX  # (experts, out, groups, 1)
    scaled = groups / torch.exp2(exponent)
    magnitude = (scaled.abs()[..., None] - E2M1).abs().argmin(dim=-1)  # nearest e2m1 magnitude: its code 0-7
    codes = (magnitude | ((scaled < 0).long() << 3)).to(torch.uint8)  # sign bit 3
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return blocks, (exponent[..., 0] + 127).to(torch.uint8)


def decode_mxfp4(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The spec's value of each element, for the round trip: (experts, out, in / 32, 16) -> (experts, in, out)."""
    codes = torch.stack((blocks & 0x0F, blocks >> 4), dim=-1).flatten(-2).long()  # (experts, out, groups, 32)
    values = E2M1[codes & 7] * torch.where(codes >= 8, -1.0, 1.0)
    values = values * torch.exp2(scales.float() - 127)[..., None]
    return values.flatten(-2).transpose(1, 2)


@pytest.fixture(scope="module")
def generated():
    """The committed model.py and its parity test (the tiny replica's configs and randomiser)."""
    directory = GENERATED / SLUG
    return import_path(directory / "model.py", "gptoss_model"), import_path(directory / "test_parity.py", "gptoss_parity")


def reference_replica(parity, seed: int = 1):
    config = transformers.AutoConfig.for_model(**parity.HF_CONFIG)
    model = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="eager", dtype=torch.float32, experts_implementation="eager")
    parity.randomise(model, torch.Generator().manual_seed(seed))
    return model.eval()


def test_committed_parity_every_expert_hit():
    parity = json.loads((GENERATED / SLUG / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-5 and parity["max_abs_logit"] > 0.1
    assert len(parity["expert_hits"]) == 3 and all(min(layer) > 0 for layer in parity["expert_hits"])


def test_parity_every_expert_hit_and_around_the_window(tmp_path):
    """Compiled afresh from the catalog config; the window-1, window, window+1, 2 x window runs too."""
    result = compile_and_verify(catalog_config(HUB_ID), tmp_path, "gptoss")
    assert result["passed"] and result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 0.1, result
    assert all(min(layer) > 0 for layer in result["expert_hits"]), result["expert_hits"]
    module = import_path(tmp_path / "gptoss" / "test_parity.py", "gptoss_window")
    runs = window_boundary_runs(module)
    window = module.WINDOW
    assert window < module.SEQ_LEN and [n for n, _ in runs] == [window - 1, window, window + 1, 2 * window]
    assert all(diff <= 1e-5 for _, diff in runs), runs


def test_sinks_change_the_logits(generated):
    """The sinks are used: zeroing them (a sink logit of 0 still takes a share) and removing them differ."""
    model_py, parity = generated
    reference = reference_replica(parity)
    ours = model_py.CausalLM(model_py.Config(**parity.MODEL_CONFIG))
    ours.load_state_dict(reference.state_dict(), strict=True)
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        assert (ours.eval()(ids) - expected).abs().max().item() <= 1e-5
        for layer in ours.model.layers:
            layer.self_attn.sinks.fill_(-1e4)  # a sink that takes no share: plain softmax attention
        assert (ours(ids) - expected).abs().max().item() > 1e-3


@pytest.mark.parametrize("chunks", [(1,) * 20, (5, 1, 1, 6, 7), (9, 11)])
def test_cached_decoding_with_sinks_equals_the_full_forward(generated, chunks):
    """The sliding layers' ring cache past the window (8) with the sinks joined to every softmax."""
    model_py, parity = generated
    reference = reference_replica(parity, seed=9)
    ours = model_py.CausalLM(model_py.Config(**parity.MODEL_CONFIG))
    ours.load_state_dict(reference.state_dict(), strict=True)
    ids = torch.randint(0, 200, (2, sum(chunks)), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        full = reference(input_ids=ids).logits
        ours.eval().enable_cache(batch=2, max_len=ids.shape[1])
        pieces, start = [], 0
        for size in chunks:
            pieces.append(ours(ids[:, start:start + size]))
            start += size
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-5


def test_interleaved_gate_up_and_clamp(generated):
    """One expert by hand: even columns of gate_up are the gate, odd the up; both clamped at the limit."""
    model_py, parity = generated
    config = model_py.Config(**parity.MODEL_CONFIG)
    experts = model_py.StackedExperts(config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in experts.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 2.0)  # large enough that the clamps bite
    x = torch.randn(7, config.hidden_size, generator=g)
    gate_up = x @ experts.gate_up_proj[2] + experts.gate_up_proj_bias[2]
    gate, up = gate_up[:, 0::2].clamp(max=7.0), gate_up[:, 1::2].clamp(-7.0, 7.0)
    assert (gate_up[:, 0::2] > 7).any() and (gate_up[:, 1::2] < -7).any()
    expected = ((up + 1) * gate * torch.sigmoid(1.702 * gate)) @ experts.down_proj[2] + experts.down_proj_bias[2]
    torch.testing.assert_close(experts(x, 2), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mxfp4_dequantizer_matches_transformers(generated, dtype):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    model_py, _ = generated
    g = torch.Generator().manual_seed(6)
    weight = torch.randn(3, 96, 40, generator=g) * torch.exp2(torch.randint(-12, 4, (3, 1, 40), generator=g).float())
    blocks, scales = quantize_mxfp4(weight)
    assert blocks.shape == (3, 40, 3, 16) and scales.shape == (3, 40, 3)
    ours = model_py.dequantize_mxfp4_tensor(blocks, scales, dtype)
    theirs = convert_moe_packed_tensors(blocks, scales, dtype=dtype)
    assert ours.dtype == theirs.dtype == dtype and ours.shape == theirs.shape == weight.shape
    assert torch.equal(ours, theirs)
    decoded = decode_mxfp4(blocks, scales)
    assert torch.equal(ours.float(), decoded)
    # The quantizer is right: values on the MX grid come back exactly; the others are off by at most half
    # the grid's widest gap (4 to 6, in units of 2^X) or, where 6 saturates a value below 8, by 2 units.
    again = quantize_mxfp4(decoded)  # (codes may differ only in the sign of a zero)
    assert torch.equal(decode_mxfp4(*again), decoded) and torch.equal(again[1], scales)
    step = torch.exp2(scales.float() - 127).repeat_interleave(32, dim=-1).transpose(1, 2)  # 2^X per element
    assert ((decoded - weight).abs() <= 2 * step).all() and ((decoded - weight).abs() > 0).any()


def test_mxfp4_checkpoint_loads_like_transformers(generated, tmp_path):
    """A replica whose experts are stored as <name>_blocks / <name>_scales (and a quantization_config)."""
    model_py, parity = generated
    reference = reference_replica(parity, seed=7)
    quantized: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                blocks, scales = quantize_mxfp4(param)
                param.copy_(decode_mxfp4(blocks, scales))  # the reference holds exactly the stored values
                quantized[f"{name}_blocks"], quantized[f"{name}_scales"] = blocks, scales
    assert len(quantized) == 4 * reference.config.num_hidden_layers
    reference.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    for key in quantized:
        state.pop(key.removesuffix("_blocks").removesuffix("_scales"), None)
    save_file({**state, **quantized}, str(tmp_path / "model.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"] = catalog_config(HUB_ID)["quantization_config"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert check_checkpoint(tmp_path, lower(config)) == tmp_path / "model.safetensors"  # compile-time check agrees
    ours = model_py.load_checkpoint(tmp_path, model_py.Config(**parity.MODEL_CONFIG))
    for name, param in reference.named_parameters():
        assert torch.equal(ours.get_parameter(name), param), name
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager",
                                                               experts_implementation="eager").eval()
    ids = torch.randint(0, 200, (2, 20), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        assert (ours(ids) - expected).abs().max().item() <= 1e-5
        assert (theirs(input_ids=ids).logits - expected).abs().max().item() <= 1e-5  # transformers read it alike
    blocks = next(k for k in quantized if k.endswith("_blocks"))
    del quantized[blocks.replace("_blocks", "_scales")]
    save_file({**state, **quantized}, str(tmp_path / "model.safetensors"))
    with pytest.raises(model_py.WeightLoadError, match=f"{blocks}: MXFP4 blocks without their scales"):
        model_py.load_checkpoint(tmp_path, model_py.Config(**parity.MODEL_CONFIG))
    with pytest.raises(CheckpointError, match=r"missing \(1\): " + blocks.replace("_blocks", "_scales")):
        check_checkpoint(tmp_path, lower(config))


def test_full_size_counts_and_hub_mxfp4_layout():
    """gpt-oss-20b on the meta device: total and active parameters as transformers counts them; the
    hub checkpoint's MXFP4 names (safetensors headers of openai/gpt-oss-20b: 459 tensors) all mapped."""
    raw = catalog_config(HUB_ID)
    arch = lower(raw)
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    params = dict(reference.named_parameters())
    total = sum(p.numel() for p in params.values())
    routed = sum(p.numel() for name, p in params.items() if ".mlp.experts." in name)
    assert parameter_count(arch) == total and round(total / 1e9, 2) == 20.91  # the model card's 21B (20.91B)
    active = active_parameter_count(arch)
    assert active == total - routed + routed * 4 // 32  # top 4 of 32 experts (their biases too)
    assert round((active - 201088 * 2880) / 1e9, 2) == 3.61  # the model card's 3.6B active leaves out the embedding
    wanted = expected_shapes(arch)
    hub = {key: shape for key, shape in wanted.items() if not key.endswith(("experts.gate_up_proj", "experts.down_proj"))}
    for i in range(24):
        e = f"model.layers.{i}.mlp.experts."
        hub.update({f"{e}gate_up_proj_blocks": (32, 5760, 90, 16), f"{e}gate_up_proj_scales": (32, 5760, 90),
                    f"{e}down_proj_blocks": (32, 2880, 90, 16), f"{e}down_proj_scales": (32, 2880, 90)})
    assert len(hub) == 459
    assert accept_quantized(arch, wanted, hub) == hub  # every hub tensor is expected, with its shape
    assert accept_quantized(arch, wanted, wanted) == wanted  # a dequantized checkpoint is accepted as well
    blocks, scales = 90 * 16, 90  # bytes per row: 2880 values at 4 bits, one scale per 32
    assert math.prod(hub["model.layers.0.mlp.experts.down_proj_blocks"]) == 32 * 2880 * blocks
    assert math.prod(hub["model.layers.0.mlp.experts.down_proj_scales"]) == 32 * 2880 * scales


def _changed(**keys):
    return _mutated(HUB_ID, **keys)  # KeyError: the key removed


def test_transformers_defaults_are_read():
    """No RoPE keys: transformers' YaRN default; no quantization_config: plain experts; swiglu_alpha read."""
    arch = lower(_changed(rope_scaling=KeyError, quantization_config=KeyError, swiglu_alpha=1.5))
    table = arch.rope[0]
    assert (table.type, table.factor, table.original_max_position_embeddings, table.truncate) == ("yarn", 32.0, 4096, False)
    assert (table.beta_fast, table.beta_slow, table.theta) == (32.0, 1.0, 150000.0)
    assert arch.mxfp4 is None and arch.layers[0].ffn.swiglu_alpha == 1.5
    assert lower(catalog_config(HUB_ID)).mxfp4.tensors == ("gate_up_proj", "down_proj")
    kept = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.mlp.experts", "lm_head"]}
    assert lower(_changed(quantization_config=kept)).mxfp4 is None  # experts left unquantized
    plain = lower(_changed(layer_types=KeyError, num_hidden_layers=4))
    assert [layer.mixer.span for layer in plain.layers] == ["sliding", "full", "sliding", "full"]


@pytest.mark.parametrize("keys, error, words", [
    ({"quantization_config": {"quant_method": "fp8"}}, UnsupportedError, "quant_method 'fp8' is not supported"),
    ({"quantization_config": {"quant_method": "mxfp4", "group": 16}}, ConfigError, "unknown key 'group'"),
    ({"quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.1.mlp.experts"]}},
     UnsupportedError, "experts of some layers unquantized"),
    ({"intermediate_size": 2890}, ConfigError, "'intermediate_size' (2890) must be a multiple of 32"),
    ({"num_experts_per_tok": 40}, ConfigError, "'num_experts_per_tok' (40) exceeds 'num_local_experts'"),
    ({"swiglu_limit": 0}, ConfigError, "swiglu_limit"),
    ({"attention_chunk_size": 1024}, ConfigError, "attention_chunk_size"),  # read by transformers: not ignored
])
def test_bad_configs_name_the_key(keys, error, words):
    with pytest.raises(error) as info:
        lower(_changed(**keys))
    assert words in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, LlmgenError)


@pytest.mark.parametrize("change, words", [
    ({"storage": "per_expert"}, "clamped SwiGLU is implemented for stacked_in_out experts only"),
    ({"shared_expert_size": 64}, "shared expert beside stacked_in_out experts"),
    ({"router_float32": True}, "router bias is implemented for a plain linear router only"),
])
def test_expert_features_the_templates_lack_are_refused(change, words):
    arch = lower(catalog_config(HUB_ID))
    moe = arch.layers[0].ffn.model_copy(update=change)
    changed = arch.model_copy(update={"layers": tuple(layer.model_copy(update={"ffn": moe}) for layer in arch.layers)})
    with pytest.raises(UnsupportedError, match=words):
        validate(changed)
