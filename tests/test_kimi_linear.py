"""Kimi Linear: Kimi Delta Attention (the delta rule with a channel-wise forget gate) beside NoPE latent attention.

The config class's defaults (tests/fixtures/kimi_linear/Kimi-Linear-defaults.json), shrunk: tiny-replica parity
over 150 tokens (past two chunks of the chunked rule) with A_log, dt_bias and the three convolutions drawn at
trained scales; planted bugs in the rule and the gates fail it; cached decoding equals the full forward after
prefills around the chunk size; the recurrent state's size does not depend on the text length; the full-size
model matches transformers' parameter counts and on-disk layout. Kimi-K3's text model is refused, naming what
transformers 5.24's kimi_linear lacks.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import GENERATED, REPO, import_path, logits_in_pieces

from llmgen.compiler.insight.card import card, load_model
from llmgen.compiler.insight.divergence import divergence, format_report
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.verification.verify import verify
from llmgen.compiler.passes.weight_map import active_parameter_count, parameter_count
from llmgen.compiler.passes.write import write_outputs

FIXTURES = REPO / "tests" / "fixtures" / "kimi_linear"
DEFAULTS = FIXTURES / "Kimi-Linear-defaults.json"
K3 = FIXTURES / "moonshotai__Kimi-K3.json"


def compile_into(raw: dict, directory, name: str):
    text = json.dumps(raw, indent=2)
    loaded = LoadedConfig(raw=raw, text=text, source_id=f"{name}/config.json", revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    return write_outputs(directory / name, compile_config(loaded, slug=name).files)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The defaults compiled once: the directory (model.py, test_parity.py) the tests below read or copy."""
    return compile_into(json.loads(DEFAULTS.read_text()), tmp_path_factory.mktemp("kimi"), "kimi-linear-defaults")


def test_parity_over_150_tokens(compiled):
    arch = validate(lower(json.loads(DEFAULTS.read_text())))
    assert {layer.mixer.kind for layer in arch.layers} == {"kda", "mla"}
    result = verify(compiled)
    print(f"kimi_linear: max|dlogit| = {result['max_abs_diff']:.3g}, logits up to {result['max_abs_logit']:.3g}")
    assert result["seq_len"] >= 150 and result["batch"] == 2 and result["max_abs_logit"] > 0.1
    assert result["max_abs_diff"] <= 1e-5 * max(1.0, result["max_abs_logit"]), result
    assert result["passed"]


# bug -> (text of the generated model.py, its replacement)
PLANTED = {
    "decay sign flipped": ("g = -self.A_log.to(compute).exp() * f", "g = self.A_log.to(compute).exp() * f"),
    "convolution sees one token ahead": ("return F.silu(conv(x)[..., :seq])", "return F.silu(conv(x)[..., 1 : seq + 1])"),
    "output gate dropped": ("return (h * torch.sigmoid(gate.float())).to(x.dtype)", "return h.to(x.dtype)"),
    "chunk boundary off by one": ("last = log_decay[..., -1:, :]", "last = log_decay[..., -2:-1, :]"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_fails_parity(bug, compiled, tmp_path):
    before, after = PLANTED[bug]
    target = tmp_path / "planted"
    shutil.copytree(compiled, target)
    source = (target / "model.py").read_text()
    assert source.count(before) == 1, f"planted-bug anchor vanished from model.py: {before!r}"
    (target / "model.py").write_text(source.replace(before, after))
    diff = verify(target)["max_abs_diff"]
    print(f"{bug}: max|dlogit| = {diff:.3g}")
    assert not diff <= 1e-3, f"{bug}: parity did not catch it (max|dlogit| = {diff:.3g})"  # nan counts as caught


def test_divergence_names_the_first_diverging_layer(compiled, tmp_path):
    target = tmp_path / "planted"
    shutil.copytree(compiled, target)
    before, after = PLANTED["chunk boundary off by one"]
    (target / "model.py").write_text((target / "model.py").read_text().replace(before, after))
    report = divergence(target)
    first = report.rows[report.first]
    assert first.point.name == "L0.attn_out", format_report(report)  # layer 0: KDA
    assert all(not row.over for row in report.rows[: report.first])
    assert "delta rule" in first.point.suspects


@pytest.fixture(scope="module")
def replica(compiled):
    """The generated model at its replica's size, randomised as its parity test randomises transformers' model."""
    gen = import_path(compiled / "model.py", "llmgen_kimi_model")
    parity = import_path(compiled / "test_parity.py", "llmgen_kimi_parity")
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
    return gen, config, model, parity



STEPS = 3


@pytest.mark.parametrize("prefill", [1, 63, 64, 65])
def test_cached_decoding_equals_the_full_forward(replica, prefill):
    _, config, model, _ = replica
    ids = torch.randint(0, config.vocab_size, (2, prefill + STEPS), generator=torch.Generator().manual_seed(prefill))
    with torch.no_grad():
        full = model(ids)
        cached = logits_in_pieces(model, ids, [prefill] + [1] * STEPS)
    scale, diff = full.abs().max().item(), (cached - full).abs().max().item()
    print(f"prefill {prefill} + {STEPS} tokens: max|cached - full| = {diff:.3g} (logits up to {scale:.3g})")
    assert scale > 0.1 and diff <= 1e-5 * scale


def recurrent_nbytes(cache) -> list[int]:
    return [layer.conv.nbytes + layer.state.nbytes for layer in cache if type(layer).__name__ == "RecurrentCache"]


def test_recurrent_state_is_constant_in_the_text_length(replica):
    from llmgen.compiler.passes.mixers import KINDS

    _, _, model, parity = replica
    arch = validate(lower(parity.HF_CONFIG))
    sizes = {}
    with torch.no_grad():
        for length, max_len in ((4, 8), (130, 260)):
            cache = model.enable_cache(batch=1, max_len=max_len)
            model(torch.zeros(1, length, dtype=torch.long))
            sizes[length] = recurrent_nbytes(cache)
            model.disable_cache()
    kda = next(layer.mixer for layer in arch.layers if layer.mixer.kind == "kda")
    assert sizes[4] == sizes[130] and len(sizes[4]) == sum(layer.mixer.kind == "kda" for layer in arch.layers)
    assert sizes[4][0] == KINDS["kda"].state_bytes(kda, conv_bytes=4)  # a float32 model
    print(f"replica: {sizes[4][0]:,} bytes of recurrent state per KDA layer and sequence")


def test_full_size_counts_and_on_disk_layout_match_transformers(compiled):
    """Kimi Linear's defaults at full size on the meta device: total and active parameters, and every tensor
    of transformers' on-disk layout maps to a parameter of the generated model with the same shape."""
    transformers = pytest.importorskip("transformers")
    from transformers.core_model_loading import revert_weight_conversion

    raw = json.loads(DEFAULTS.read_text())
    arch = validate(lower(raw))
    module = import_path(compiled / "model.py", "llmgen_kimi_full")  # its Config: the full sizes
    with torch.device("meta"):
        ours = module.CausalLM(module.Config())
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    total = sum(p.numel() for p in reference.parameters())
    experts = sum(p.numel() for name, p in reference.named_parameters() if ".mlp.experts." in name)
    moe = next(layer.ffn for layer in arch.layers if layer.ffn.kind == "moe")
    active = total - (experts - experts * moe.top_k // moe.num_experts)
    assert parameter_count(arch) == total == sum(p.numel() for p in ours.parameters())
    assert active_parameter_count(arch) == active
    print(f"Kimi Linear defaults: {total:,} parameters, {active:,} active per token")
    layout = {k: tuple(v.shape) for k, v in revert_weight_conversion(reference, reference.state_dict()).items()}
    params = {name: tuple(p.shape) for name, p in ours.state_dict().items()}
    keys = module.checkpoint_keys(module.Config())
    assert set(keys) == set(layout), sorted(set(keys) ^ set(layout))[:10]
    wrong = [k for k in layout if params[keys[k]] != layout[k]]
    assert not wrong, [(k, params[keys[k]], layout[k]) for k in wrong[:5]]
    assert set(keys.values()) == set(params)


def test_card_shows_pattern_state_and_kv():
    data = card(load_model(str(GENERATED / "Kimi-Linear-defaults")))
    assert data["pattern"]["strip"] == "K×4 a K×3 a K×3 a K×3 a K×3 a K×3 a K×2"
    assert data["pattern"]["legend"] == {"K": "linear attention (Kimi Delta Attention)", "a": "multi-head latent attention (MLA), no RoPE (NoPE)"}
    kv = data["kv_cache"]
    state = (4 - 1) * 3 * 32 * 128 * 2 + 32 * 128 * 128 * 4  # bf16 windows of q, k, v + float32 matrices
    assert kv["recurrent_bytes_per_sequence"] == 21 * state and len(kv["recurrent_layers"]) == 21
    assert kv["bytes_per_token_bf16"] == 6 * (512 + 64) * 2  # the latent and the shared key part, 6 MLA layers
    assert kv["effective_bytes_bf16"]["4k"] == 4096 * kv["bytes_per_token_bf16"] + 21 * state
    print(f"Kimi Linear defaults: recurrent state {kv['recurrent_bytes_per_sequence']:,} bytes per sequence")


def test_kimi_k3_is_refused_naming_what_transformers_lacks():
    raw = json.loads(K3.read_text())
    with pytest.raises(LlmgenError) as caught:
        lower(raw)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("config.text_config:")
    for gap in ("'hidden_act' = 'situ'", "mla_use_output_gate", "routed_expert_hidden_size", "attn_res_block_size",
                "linear_attn_config.gate_lower_bound"):
        assert gap in message, (gap, message)


def test_k3_shaped_config_without_the_extensions_compiles():
    """Kimi-K3's text_config with the keys transformers does not implement taken out is a kimi_linear model
    llmgen lowers (its low-rank queries, 93 layers, 896 experts, counted as transformers counts them), so the
    refusal above is about those keys only."""
    raw = json.loads(K3.read_text())
    text = raw["text_config"]
    for key in ("activation_situ_beta", "activation_situ_linear_beta", "mla_use_output_gate", "routed_expert_hidden_size",
                "latent_moe_use_norm", "attn_res_block_size", "quantization_config"):
        text.pop(key)
    text["hidden_act"] = "silu"
    for key in ("gate_lower_bound", "use_full_rank_gate"):
        text["linear_attn_config"].pop(key)
    arch = validate(lower(raw))
    kinds = "".join("K" if layer.mixer.kind == "kda" else "F" for layer in arch.layers)
    assert kinds == "KKKF" * 23 + "F" and arch.layers[0].mixer.num_heads == 96
    mla = arch.layers[3].mixer
    assert mla.q_lora_rank == 1536 and mla.rope is None
    # Counted as transformers' kimi_linear builds it on the meta device (not Kimi-K3's real size: its experts
    # work in a latent width, routed_expert_hidden_size, which transformers does not implement).
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**text))
    total = sum(p.numel() for p in reference.parameters())
    experts = sum(p.numel() for name, p in reference.named_parameters() if ".mlp.experts." in name)
    moe = next(layer.ffn for layer in arch.layers if layer.ffn.kind == "moe")
    assert parameter_count(arch) == total
    assert active_parameter_count(arch) == total - (experts - experts * moe.top_k // moe.num_experts)


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.update(num_key_value_heads=8), "num_key_value_heads"),
    (lambda t: t.update(layer_types=["mamba"] * 27), "layer_types"),
    (lambda t: t.update(hidden_act="gelu"), "hidden_act"),
    (lambda t: t.update(num_experts=256, num_local_experts=128), "num_local_experts"),
    (lambda t: t.update(qk_head_dim=100), "qk_head_dim"),
])
def test_bad_kimi_configs_are_refused(edit, words):
    raw = json.loads(DEFAULTS.read_text())
    edit(raw)
    with pytest.raises(LlmgenError, match=words):
        validate(lower(raw))
