"""Mamba-2 (state-space) layers: the pure stack (mamba2), Bamba (beside attention), Nemotron-H / Nemotron 3 (model_type nemotron_h)
(single-block layers by pattern: Mamba-2, NoPE attention, ReLU^2 MLP, ReLU^2 experts, a latent MoE), Granite 4.0-H
(NoPE attention, muP multipliers, a fused shared MLP; routed experts beside it or not).

Tiny-replica parity with chunks of 8 positions over sequences past two chunks, A_log, dt_bias, D and the
convolution drawn at trained scales; planted bugs in the scan fail it; cached decoding (conv window + state,
KV cache on attention layers) equals the full forward token by token and after prefills around the chunk
size; the state's size does not depend on the text length; full-size parameter counts, card and diff.
"""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch
from conftest import GENERATED, REPO, catalog_config, import_path, logits_in_pieces

from llmgen.compiler.insight.card import card, load_model
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.insight.irdiff import differences
from llmgen.compiler.passes.load import LoadedConfig, load_config
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.render_mamba2 import mamba2_of, mamba2_state_bytes
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.verification.verify import verify
from llmgen.compiler.passes.weight_map import parameter_count
from llmgen.compiler.passes.write import write_outputs

FIXTURES = REPO / "tests" / "fixtures" / "mamba"
NANO_ID = "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16"
NANO = "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16"  # the committed Mamba-2 model (replica: M E * M ... chunks of 8)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


# model_type -> config (the replica keeps its layer pattern: every kind of layer, in order). Nemotron-3 Nano's
# replica is checked through its committed generated/ directory (test_planted_bug_fails_parity's baseline).
CONFIGS = {
    "mamba2-defaults": lambda: fixture("mamba2_defaults.json"),  # every layer Mamba-2, no feed-forward
    "bamba-defaults": lambda: fixture("bamba_defaults.json"),  # Mamba-2 + MLP on every layer, no attention
    "bamba-attention": lambda: fixture("bamba_attention.json"),  # the defaults with attention layers (9, 18, 27)
    "nemotron-3-ultra": lambda: fixture("nvidia__NVIDIA-Nemotron-3-Ultra-550B-A55B-BF16.json"),  # latent experts
    "granitemoehybrid-dense": lambda: fixture("granitemoehybrid_dense.json"),  # NoPE attention, muP multipliers
    # routed experts beside the shared MLP (Granite 4.0-H Tiny / Small): the config class's defaults (every layer
    # Mamba-2) and the dense fixture's layers and multipliers with 32 experts, top 4
    "granitemoehybrid-defaults": lambda: fixture("granitemoehybrid_defaults.json"),
    "granitemoehybrid-experts": lambda: fixture("granitemoehybrid_experts.json"),
}


def compile_into(raw: dict, directory, name: str):
    text = json.dumps(raw, indent=2)
    loaded = LoadedConfig(raw=raw, text=text, source_id=f"{name}/config.json", revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    return write_outputs(directory / name, compile_config(loaded, slug=name).files)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parity_past_two_chunks(name, tmp_path):
    raw = CONFIGS[name]()
    arch = lower(copy.deepcopy(raw))
    assert "mamba2" in {layer.mixer.kind for layer in arch.layers if layer.mixer is not None}
    result = verify(compile_into(raw, tmp_path, name))
    print(f"{name}: max|dlogit| = {result['max_abs_diff']:.3g}, logits up to {result['max_abs_logit']:.3g}")
    assert result["seq_len"] > 2 * 8 and result["batch"] == 2 and result["max_abs_logit"] > 0.1
    assert result["max_abs_diff"] <= 1e-5 * max(1.0, result["max_abs_logit"]), result
    assert result["passed"]


# bug -> (text of the committed model.py, its replacement)
PLANTED = {
    "dt without softplus": ("dt = F.softplus(dt + self.dt_bias)", "dt = (dt + self.dt_bias)"),
    "A sign flipped": ("a = -self.A_log.to(compute).exp()", "a = self.A_log.to(compute).exp()"),
    "convolution sees one token ahead": ("return self.conv1d(xbc)[..., :seq]", "return self.conv1d(xbc)[..., 1 : seq + 1]"),
    "D skip dropped": ("y = y + self.D[:, None, None].to(compute) * xs", "pass"),
    "B/C groups mapped round-robin": (".repeat_interleave(share, dim=2)", ".repeat(1, 1, share, 1)"),
}


def planted(tmp_path, before: str, after: str):
    target = tmp_path / NANO
    shutil.copytree(GENERATED / NANO, target)
    source = (target / "model.py").read_text()
    assert source.count(before) >= 1, f"planted-bug anchor vanished from {NANO}/model.py: {before!r}"
    (target / "model.py").write_text(source.replace(before, after))  # every occurrence (B and C)
    return target


def test_committed_nemotron_nano_parity(tmp_path):
    """The committed Nemotron-3 Nano (Mamba-2, NoPE attention, ReLU^2 experts) against transformers (on a copy:
    verify writes parity.json, and the committed tree stays as the generator wrote it)."""
    shutil.copytree(GENERATED / NANO, tmp_path / NANO)
    result = verify(tmp_path / NANO)
    print(f"nemotron-3-nano: max|dlogit| = {result['max_abs_diff']:.3g}, logits up to {result['max_abs_logit']:.3g}")
    assert result["seq_len"] > 2 * 8 and result["batch"] == 2 and result["max_abs_logit"] > 0.1
    assert result["max_abs_diff"] <= 1e-5 * max(1.0, result["max_abs_logit"]), result


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_fails_parity(bug, tmp_path):
    result = verify(planted(tmp_path, *PLANTED[bug]))
    diff = result["max_abs_diff"]
    print(f"{bug}: max|dlogit| = {diff:.3g}")
    assert not diff <= 1e-3, f"{bug}: parity did not catch it (max|dlogit| = {diff:.3g})"  # nan counts as caught


@pytest.fixture(scope="module")
def replica():
    """The committed Nemotron-3 Nano at its replica's size (chunks of 8), randomised as its parity test does."""
    gen = import_path(GENERATED / NANO / "model.py", "llmgen_mamba_model")
    parity = import_path(GENERATED / NANO / "test_parity.py", "llmgen_mamba_parity")
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
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.normal_(0.0, 0.1)
    return gen, config, model



STEPS = 3


@pytest.mark.parametrize("prefill", [1, 7, 8, 9])  # 1, chunk - 1, chunk, chunk + 1
def test_cached_decoding_equals_the_full_forward(replica, prefill):
    _, config, model = replica
    assert config.mamba_chunk_size == 8
    ids = torch.randint(0, config.vocab_size, (2, prefill + STEPS), generator=torch.Generator().manual_seed(prefill))
    with torch.no_grad():
        full = model(ids)
        cached = logits_in_pieces(model, ids, [prefill] + [1] * STEPS)
    scale = full.abs().max().item()
    diff = (cached - full).abs().max().item()
    print(f"prefill {prefill} + {STEPS} tokens: max|cached - full| = {diff:.3g} (logits up to {scale:.3g})")
    assert scale > 0.1 and diff <= 1e-5 * scale


def test_token_by_token_and_chunk_size_invariance(replica):
    """Decoding every token from the first equals the full forward; the chunked scan at the config's own chunk
    size (one partial chunk here) equals it at 8 (three chunks)."""
    gen, config, model = replica
    ids = torch.randint(0, config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(5))
    mambas = [module for module in model.modules() if isinstance(module, gen.Mamba2)]
    with torch.no_grad():
        full = model(ids)
        stepped = logits_in_pieces(model, ids, [1] * 17)
        for module in mambas:
            module.chunk = 128  # Nemotron-3 Nano's own chunk_size
        own = model(ids)
        for module in mambas:
            module.chunk = config.mamba_chunk_size
    scale = full.abs().max().item()
    assert (stepped - full).abs().max().item() <= 1e-5 * scale
    assert (own - full).abs().max().item() <= 1e-5 * scale


@pytest.fixture(scope="module")
def granite_replica(tmp_path_factory):
    """Granite 4.0-H with routed experts at its replica's size: Mamba-2 and NoPE attention layers in the hybrid
    layer (its mixer picked per layer), experts plus the shared MLP, chunks of 8; randomised as its parity test."""
    directory = compile_into(fixture("granitemoehybrid_experts.json"), tmp_path_factory.mktemp("granite"), "granite")
    gen = import_path(directory / "model.py", "llmgen_granite_hybrid_model")
    parity = import_path(directory / "test_parity.py", "llmgen_granite_hybrid_parity")
    config = gen.Config(**parity.MODEL_CONFIG)
    torch.manual_seed(1)
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
    return config, model


def test_granite_hybrid_cached_decoding_equals_the_full_forward(granite_replica):
    """Mamba-2 states and KV caches side by side (layer pattern M...N): prefills of 1, chunk - 1, chunk, chunk + 1
    then 3 tokens, and every token from the first, equal the full forward."""
    config, model = granite_replica
    assert config.mamba_chunk_size == 8 and set(config.layer_pattern) == {"M", "N"}
    for sizes in ([1] + [1] * STEPS, [7] + [1] * STEPS, [8] + [1] * STEPS, [9] + [1] * STEPS, [1] * 12):
        ids = torch.randint(0, config.vocab_size, (2, sum(sizes)), generator=torch.Generator().manual_seed(len(sizes)))
        with torch.no_grad():
            full, cached = model(ids), logits_in_pieces(model, ids, sizes)
        scale, diff = full.abs().max().item(), (cached - full).abs().max().item()
        print(f"pieces {sizes}: max|cached - full| = {diff:.3g} (logits up to {scale:.3g})")
        assert scale > 0.1 and diff <= 1e-5 * scale, sizes


def state_nbytes(cache) -> list[int]:
    return [layer.conv.nbytes + layer.state.nbytes for layer in cache if type(layer).__name__ == "Mamba2Cache"]


def test_state_is_constant_in_the_text_length(replica):
    _, config, model = replica
    arch = validate(lower(import_path(GENERATED / NANO / "test_parity.py", "llmgen_mamba_parity").HF_CONFIG))
    sizes = {}
    with torch.no_grad():
        for length, max_len in ((4, 8), (40, 80)):
            cache = model.enable_cache(batch=1, max_len=max_len)
            model(torch.zeros(1, length, dtype=torch.long))
            sizes[length] = state_nbytes(cache)
            model.disable_cache()
    mamba_layers = sum(layer.mixer is not None and layer.mixer.kind == "mamba2" for layer in arch.layers)
    assert sizes[4] == sizes[40] and len(sizes[4]) == mamba_layers
    assert sizes[4][0] == mamba2_state_bytes(mamba2_of(arch), conv_bytes=4)  # a float32 model


def test_full_size_parameter_counts_match_transformers():
    """Nemotron-3 Nano and Ultra at their real sizes, from the IR, against transformers' model on the meta device."""
    transformers = pytest.importorskip("transformers")
    for name, raw in (("nano", catalog_config(NANO_ID)), ("ultra", CONFIGS["nemotron-3-ultra"]())):
        arch = validate(lower(copy.deepcopy(raw)))
        with torch.device("meta"):
            reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
        total = sum(p.numel() for p in reference.parameters())
        assert parameter_count(arch) == total, name
        print(f"Nemotron-3 {name}: {total:,} parameters")


def test_nano_checkpoint_layout_matches_transformers():
    """Nemotron-3 Nano at full size on the meta device: every tensor of transformers' on-disk layout (per-expert
    keys, as save_pretrained writes them) is a key of the committed model's checkpoint map, with the shape of the
    parameter it fills, and every parameter is filled."""
    pytest.importorskip("transformers")
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.core_model_loading import revert_weight_conversion

    raw = json.loads((GENERATED / NANO / "config.json").read_text())
    module = import_path(GENERATED / NANO / "model.py", "llmgen_mamba_full_size")
    with torch.device("meta"):
        ours = module.CausalLM(module.Config())
        reference = AutoModelForCausalLM.from_config(AutoConfig.for_model(**raw))
    tied = set(getattr(reference, "all_tied_weights_keys", None) or {})
    state = {k: v for k, v in reference.state_dict().items() if k not in tied}
    layout = {k: tuple(v.shape) for k, v in revert_weight_conversion(reference, state).items()}
    params = {n: tuple(t.shape) for n, t in ours.state_dict().items()}
    keys = module.checkpoint_keys(module.Config())
    assert set(keys) == set(layout), sorted(set(keys) ^ set(layout))[:10]
    assert all(params[keys[k]] == shape for k, shape in layout.items())
    assert set(keys.values()) == set(params)
    print(f"Nemotron-3 Nano: {len(layout)} checkpoint tensors")


def test_card_shows_mamba_layers_and_state():
    data = card(load_model(NANO_ID))
    legend = data["pattern"]["legend"]
    assert legend["M"].startswith("Mamba-2")
    assert data["pattern"]["letters"].startswith("MEMEMf")  # f: full attention without RoPE
    kv = data["kv_cache"]
    state = (4 - 1) * (64 * 64 + 2 * 8 * 128) * 2 + 64 * 64 * 128 * 4  # bf16 conv window + float32 states
    assert kv["recurrent_bytes_per_sequence"] == 23 * state and len(kv["recurrent_layers"]) == 23
    assert kv["bytes_per_token_bf16"] == 6 * 2 * 2 * 128 * 2  # K and V of 2 heads of 128, 6 attention layers
    print(f"Nemotron-3 Nano: state {kv['recurrent_bytes_per_sequence']:,} bytes per sequence")


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.update(hybrid_override_pattern="MEX*"), "hybrid_override_pattern"),
    (lambda t: t.update(time_step_limit=[0.0, math.nan]), "time_step_limit"),
    (lambda t: t.update(mamba_ssm_cache_dtype="bfloat16"), "mamba_ssm_cache_dtype"),
    (lambda t: t.update(mamba_num_heads=60), "n_groups"),
    (lambda t: t.update(mlp_hidden_act="silu"), "mlp_hidden_act"),
])
def test_bad_nemotron_configs_are_refused(edit, words):
    raw = catalog_config(NANO_ID)
    edit(raw)
    with pytest.raises(LlmgenError, match=words):
        validate(lower(raw))


def test_diff_names_the_mixer_kinds_that_differ():
    nano = validate(lower(catalog_config(NANO_ID)))
    qwen = validate(lower(catalog_config("Qwen/Qwen3.5-35B-A3B")))
    line = next(words for words in differences(nano, qwen) if words.startswith("layer pattern"))
    assert "M: state space (Mamba-2), 23 → 0 layers" in line, line
    assert "L: linear attention (Gated DeltaNet), 0 → 30 layers" in line, line
    state = next(words for words in differences(nano, qwen) if words.startswith("recurrent state per sequence"))
    assert state.endswith(": 46.8 MiB → 61.4 MiB"), state  # Mamba-2 x 23 vs Gated DeltaNet x 30 (the cards' figures)


@pytest.mark.parametrize("upper", ["Infinity", '{"__float__": "Infinity"}', "1e308"])
def test_time_step_limit_spellings(upper, tmp_path):
    """transformers writes float("inf") as Infinity (older) or {"__float__": "Infinity"} (5.x); Ultra writes 1e308."""
    text = (FIXTURES / "mamba2_defaults.json").read_text()
    start = text.index('"time_step_limit"')
    end = text.index("]", start) + 1
    path = tmp_path / "config.json"
    path.write_text(text[:start] + f'"time_step_limit": [0.001, {upper}]' + text[end:])
    mamba = mamba2_of(validate(lower(load_config(str(path)).raw)))
    assert mamba.time_step_min == 0.001 and mamba.time_step_max == (1e308 if upper == "1e308" else None)


@pytest.mark.parametrize("key, value", [("time_step_limit", "[0.0, NaN]"), ("layer_norm_epsilon", "NaN"),
                                        ("time_step_min", "Infinity")])
def test_nan_and_misplaced_infinity_are_refused(key, value, tmp_path):
    raw = fixture("mamba2_defaults.json")
    raw.pop(key, None)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw)[:-1] + f', "{key}": {value}}}')
    with pytest.raises(LlmgenError, match=key):
        validate(lower(load_config(str(path)).raw))


def test_granite_with_experts_matches_transformers_at_full_size():
    """Granite 4.0-H with routed experts beside the shared MLP: the IR's parameter count against transformers' (the
    on-disk keys, input_linear / output_linear stacked experts, are loaded by the parity tests above)."""
    transformers = pytest.importorskip("transformers")
    raw = fixture("granitemoehybrid_experts.json")
    arch = validate(lower(copy.deepcopy(raw)))
    assert all(layer.ffn.kind == "moe" and layer.ffn.shared_expert_in_layer for layer in arch.layers)
    raw["time_step_limit"] = [0.0, math.inf]
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    total = sum(p.numel() for p in reference.parameters())
    assert parameter_count(arch) == total
    print(f"Granite 4.0-H with 32 experts: {total:,} parameters")
    raw["shared_intermediate_size"] = 0
    with pytest.raises(LlmgenError, match="shared_intermediate_size"):
        validate(lower(raw))
