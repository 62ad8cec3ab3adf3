"""Hybrid models: Gated DeltaNet (linear attention) beside softmax attention (Qwen3-Next, Qwen3.5, Qwen3.6).

Tiny-replica parity over 150 tokens (past two chunks of the chunked delta rule) with A_log, dt_bias and
the convolution drawn at trained scales; planted bugs in the delta rule and the gates fail it; cached
decoding (recurrent state + KV cache) equals the full forward after prefills around the chunk size; the
recurrent state's size does not depend on the text length; card, parameter counts and the divergence
report follow the per-layer mixers.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from conftest import GENERATED, REPO, catalog_config, import_path, logits_in_pieces

from llmgen.compiler.insight.card import card, load_model
from llmgen.compiler.insight.divergence import divergence, format_report
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.mixers.gated_deltanet import linear_of, state_bytes as recurrent_state_bytes
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.verification.verify import verify
from llmgen.compiler.passes.weight_map import active_parameter_count, parameter_count
from llmgen.compiler.passes.write import write_outputs

MOE = "Qwen3.5-35B-A3B"  # the committed hybrid: its replica is LLLFL (layer 3 is attention)


def qwen36_architecture() -> dict:
    """Qwen3.6-27B's architecture: its NVFP4 quantization config left out (the weights are another matter)."""
    raw = catalog_config("nvidia/Qwen3.6-27B-NVFP4")
    raw.pop("quantization_config")
    return raw


# model_types proved here: qwen3_next (the defaults), the qwen3_5 wrapper around qwen3_5_text (the published
# Qwen3.5-27B and Qwen3.6-27B configs); the qwen3_5_moe wrapper around qwen3_5_moe_text (Qwen3.5-35B-A3B) by its
# generated/ directory, and at full size and in cached decoding below.
CONFIGS = {
    "qwen3-next-defaults": lambda: json.loads((REPO / "tests" / "fixtures" / "qwen3_next_defaults.json").read_text()),
    "qwen3.5-27b": lambda: catalog_config("Qwen/Qwen3.5-27B"),
    "qwen3.6-27b": qwen36_architecture,
}


def compile_into(raw: dict, directory, name: str):
    text = json.dumps(raw, indent=2)
    loaded = LoadedConfig(raw=raw, text=text, source_id=f"{name}/config.json", revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    return write_outputs(directory / name, compile_config(loaded, slug=name).files)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parity_over_150_tokens(name, tmp_path):
    raw = CONFIGS[name]()
    arch = lower(copy.deepcopy(raw))
    assert {layer.mixer.kind for layer in arch.layers} == {"gated_deltanet", "attention"}
    result = verify(compile_into(raw, tmp_path, name))
    print(f"{name}: max|dlogit| = {result['max_abs_diff']:.3g}, logits up to {result['max_abs_logit']:.3g}")
    assert result["seq_len"] >= 150 and result["batch"] == 2 and result["max_abs_logit"] > 0.1
    assert result["max_abs_diff"] <= 1e-5 * max(1.0, result["max_abs_logit"]), result
    assert result["passed"]


# bug -> (text of the committed model.py, its replacement)
PLANTED = {
    "no L2 norm on q and k": ("q, k = l2_normalize(q, 1e-6), l2_normalize(k, 1e-6)", "pass"),
    "decay sign flipped": ("g = -self.A_log.to(compute).exp()", "g = self.A_log.to(compute).exp()"),
    "convolution sees one token ahead": ("return self.conv1d(qkv)[..., :seq]", "return self.conv1d(qkv)[..., 1 : seq + 1]"),
    "z gate dropped": ("return (h * F.silu(gate.float())).to(x.dtype)", "return h.to(x.dtype)"),
    "attention output gate dropped": ("out = out * torch.sigmoid(gate)", "pass"),
    "chunk boundary off by one": ("k = k * (log_decay[..., -1:] - log_decay)", "k = k * (log_decay[..., -2:-1] - log_decay)"),
}


def planted(tmp_path, before: str, after: str):
    target = tmp_path / MOE
    shutil.copytree(GENERATED / MOE, target)
    source = (target / "model.py").read_text()
    assert source.count(before) >= 1, f"planted-bug anchor vanished from {MOE}/model.py: {before!r}"
    (target / "model.py").write_text(source.replace(before, after, 1))
    return target


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_fails_parity(bug, tmp_path):
    result = verify(planted(tmp_path, *PLANTED[bug]))
    diff = result["max_abs_diff"]
    assert not diff <= 1e-3, f"{bug}: parity did not catch it (max|dlogit| = {diff:.3g})"  # nan counts as caught


@pytest.fixture(scope="module")
def replica():
    """The committed hybrid at its replica's size, randomised as its parity test randomises transformers' model:
    weights ~ N(0, 0.05), norms around their neutral value, A_log, dt_bias and the convolution at trained scales."""
    gen = import_path(GENERATED / MOE / "model.py", "llmgen_hybrid_model")
    parity = import_path(GENERATED / MOE / "test_parity.py", "llmgen_hybrid_parity")
    config = gen.Config(**parity.MODEL_CONFIG)
    torch.manual_seed(0)
    model = gen.CausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = next((s for suffix, s in parity.PARAM_SCALES.items() if name.endswith(suffix)), None)
            if scale is not None:
                param.normal_(*scale)
            elif "norm" in name:
                param.normal_(parity.NORM_NEUTRAL, parity.NORM_SPREAD)
            else:
                param.normal_(0.0, parity.WEIGHT_STD)
    return gen, config, model



STEPS = 3


@pytest.mark.parametrize("prefill", [1, 63, 64, 65, 150])
def test_cached_decoding_equals_the_full_forward(replica, prefill):
    _, config, model = replica
    ids = torch.randint(0, config.vocab_size, (2, prefill + STEPS), generator=torch.Generator().manual_seed(prefill))
    with torch.no_grad():
        full = model(ids)
        cached = logits_in_pieces(model, ids, [prefill] + [1] * STEPS)
    scale = full.abs().max().item()
    diff = (cached - full).abs().max().item()
    print(f"prefill {prefill} + {STEPS} tokens: max|cached - full| = {diff:.3g} (logits up to {scale:.3g})")
    assert scale > 0.1 and diff <= 1e-5 * scale


def test_cached_decoding_is_exact_in_float64(replica):
    """The chunked and the recurrent form are the same rule: in float64 the cache changes nothing but rounding."""
    _, config, model = replica
    model = copy.deepcopy(model).double()
    ids = torch.randint(0, config.vocab_size, (2, 70), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, cached = model(ids), logits_in_pieces(model, ids, [65, 1, 1, 3])
    assert (cached - full).abs().max().item() <= 1e-12 * full.abs().max().item()


def test_chunked_prefill_and_int8_kv(replica):
    """Prompts fed in pieces continue the recurrent state; int8 applies to the attention layers' KV only."""
    _, config, model = replica
    ids = torch.randint(0, config.vocab_size, (2, 140), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = model(ids)
        pieces = logits_in_pieces(model, ids, [70, 1, 64, 5])
        assert (pieces - full).abs().max().item() <= 1e-5 * full.abs().max().item()
        cache = model.enable_cache(batch=2, max_len=140, int8=True)
        kinds = {type(layer).__name__ for layer in cache}
        assert kinds == {"LayerCache", "RecurrentCache"}
        assert all(layer.state.dtype == torch.float32 for layer in cache if type(layer).__name__ == "RecurrentCache")
        assert all(layer.k.dtype == torch.int8 for layer in cache if type(layer).__name__ == "LayerCache")
        model.disable_cache()
        quantized = logits_in_pieces(model, ids, [100, 40], int8=True)
    assert (quantized - full).abs().max().item() <= 0.05 * full.abs().max().item()


def recurrent_nbytes(cache) -> list[int]:
    return [layer.conv.nbytes + layer.state.nbytes for layer in cache if type(layer).__name__ == "RecurrentCache"]


def test_recurrent_state_is_constant_in_the_text_length(replica):
    _, config, model = replica
    arch = validate(lower(import_path(GENERATED / MOE / "test_parity.py", "llmgen_hybrid_parity").HF_CONFIG))
    sizes = {}
    with torch.no_grad():
        for length, max_len in ((4, 8), (200, 400)):
            cache = model.enable_cache(batch=1, max_len=max_len)
            model(torch.zeros(1, length, dtype=torch.long))
            sizes[length] = recurrent_nbytes(cache)
            model.disable_cache()
    assert sizes[4] == sizes[200] and len(sizes[4]) == sum(layer.mixer.kind == "gated_deltanet" for layer in arch.layers)
    assert sizes[4][0] == recurrent_state_bytes(linear_of(arch), state_bytes=4, conv_bytes=4)  # a float32 model


def test_full_size_parameter_counts_match_transformers():
    """Total and active counts of the real sizes, from the IR, against transformers' model on the meta device."""
    transformers = pytest.importorskip("transformers")
    for hub_id in ("Qwen/Qwen3.5-35B-A3B", "Qwen/Qwen3.5-27B"):
        raw = catalog_config(hub_id)
        arch = validate(lower(copy.deepcopy(raw)))
        with torch.device("meta"):
            reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
        total = sum(p.numel() for p in reference.parameters())
        experts = sum(p.numel() for name, p in reference.named_parameters() if ".mlp.experts." in name)
        moe = next((layer.ffn for layer in arch.layers if layer.ffn.kind == "moe"), None)
        active = total - (experts - experts * moe.top_k // moe.num_experts if moe else 0)
        assert parameter_count(arch) == total and active_parameter_count(arch) == active, hub_id
        print(f"{hub_id}: {total:,} parameters, {active:,} active per token")


def test_card_shows_pattern_state_and_kv():
    data = card(load_model("Qwen/Qwen3.5-35B-A3B"))
    assert data["pattern"]["strip"] == "LLLF×10"
    assert data["pattern"]["legend"] == {"L": "linear attention (Gated DeltaNet)", "F": "full attention"}
    kv = data["kv_cache"]
    state = (4 - 1) * (2 * 16 * 128 + 32 * 128) * 2 + 32 * 128 * 128 * 4  # bf16 conv window + float32 matrices
    assert kv["recurrent_bytes_per_sequence"] == 30 * state and len(kv["recurrent_layers"]) == 30
    assert kv["bytes_per_token_bf16"] == 10 * 2 * 2 * 256 * 2  # K and V of 2 heads of 256, 10 attention layers
    assert kv["effective_bytes_bf16"]["4k"] == 4096 * kv["bytes_per_token_bf16"] + 30 * state
    assert kv["layers_without_cache"] == []
    print(f"Qwen3.5-35B-A3B: recurrent state {kv['recurrent_bytes_per_sequence']:,} bytes per sequence")


@pytest.mark.parametrize("bug, point", [("decay sign flipped", "L0.attn_out"), ("attention output gate dropped", "L3.attn_out")])
def test_divergence_names_the_first_diverging_layer(bug, point, tmp_path):
    report = divergence(planted(tmp_path, *PLANTED[bug]))
    first = report.rows[report.first]
    assert first.point.name == point, format_report(report)
    assert all(not row.over for row in report.rows[: report.first])
    assert ("delta rule" if point == "L0.attn_out" else "output gate") in first.point.suspects


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.update(attn_output_gate=False), "attn_output_gate"),
    (lambda t: t.update(mlp_only_layers=[0]), "mlp_only_layers"),
    (lambda t: t.update(layer_types=["mamba"] * 40), "layer_types"),
    (lambda t: t["rope_parameters"].update(mrope_section=[8, 8, 8]), "mrope_section"),
    (lambda t: t.update(mamba_ssm_dtype="bfloat16"), "mamba_ssm_dtype"),
])
def test_bad_hybrid_configs_are_refused(edit, words):
    raw = catalog_config("Qwen/Qwen3.5-35B-A3B")
    edit(raw["text_config"])
    with pytest.raises(LlmgenError, match=words):
        validate(lower(raw))


def test_published_multimodal_layout_loads(replica, tmp_path):
    """Qwen3.5's releases store the decoder as model.language_model.* beside model.visual.* and mtp.*: the
    generated loader renames the first and skips the others."""
    from safetensors.torch import load_file, save_file

    gen, config, model = replica
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "plain.safetensors")
    published = {("model.language_model." + k[len("model."):] if k.startswith("model.") else k): v
                 for k, v in load_file(tmp_path / "plain.safetensors").items()}
    published["model.visual.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    published["mtp.fc.weight"] = torch.zeros(2, 2)
    (tmp_path / "published").mkdir()
    save_file(published, tmp_path / "published" / "model.safetensors")
    loaded = gen.load_checkpoint(tmp_path / "published", config)
    ids = torch.randint(0, config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
