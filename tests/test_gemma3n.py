"""Gemma 3n (``gemma3n_text``, the ``gemma3n`` wrapper): tiny-replica parity against transformers 5.24.

Replicas (fp32, batch 2, every parameter random, vectors around 1): Gemma3nTextConfig's defaults shrunk to
S F S F + one KV-sharing reader of each kind, the first two layers' MLPs sparse, 4 AltUp streams, LAuReL,
per-layer inputs whose table is smaller than the vocabulary (as in the real model: other tokens read row 0);
and a variant with per-layer MLP widths, 2 streams, the active stream 1 and no correct_output_scale. Also:
the sliding window's edges, planted bugs, cached decoding, the wrapper (its checkpoint layout and skipped
towers), the full-size parameter count and keys, the card's KV bytes, config errors.
No published gemma-3n config.json was found in the reference sources this project may use: the full-size
checks use the config classes' defaults (transformers documents them as gemma-3n-E4B's).
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import import_path

from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.format import format_source
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.lowering.fam_gemma3n import sparsity_std
from llmgen.compiler.passes.lowering.replica import WINDOW, tiny_replica
from llmgen.compiler.passes.render import Provenance, model_context, render
from llmgen.compiler.passes.render_files import render_model_files
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.passes.weight_map import parameter_count, weight_map

transformers = pytest.importorskip("transformers")
SEQ = 2 * WINDOW + 4  # crosses the replica's sliding window
RESULTS: dict[str, float] = {}
VARIANT = {"intermediate_size": [96, 64, 96, 64, 96, 64], "altup_num_inputs": 2, "altup_active_idx": 1,
           "altup_correct_scale": False}


def defaults(**keys) -> dict:
    return transformers.Gemma3nTextConfig(**keys).to_dict()


def _tiny(raw: dict, **overrides) -> dict:
    tiny = tiny_replica(raw, lower(raw))
    return {**{k: v for k, v in tiny.items() if k not in ("transformers_version", "architectures")}, **overrides}


TINY = {"defaults": lambda: _tiny(defaults()), "variant": lambda: _tiny(defaults(), **VARIANT)}


def _compile(raw: dict, tmp_path, name: str):
    """model.py alone (the pipeline's passes without the parity-test files), imported."""
    arch = validate(lower(raw))
    context = model_context(arch, weight_map(arch), Provenance(f"{name}/config.json", "local", "test"))
    directory = tmp_path / f"{name}_model"
    directory.mkdir(exist_ok=True)
    for file, text in render_model_files(context).items():  # model.py with runtime.py and weights.py
        (directory / file).write_text(format_source(text, name=file))
    return import_path(directory / "model.py", f"gemma3n_{name}_model")


def _hf(tiny: dict):
    config = transformers.Gemma3nTextConfig(**{k: v for k, v in tiny.items() if k != "model_type"})
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.Gemma3nForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.parameters():
            noise = torch.randn(tensor.shape, generator=generator)
            # vectors (norm weights, AltUp's correct_output_scale) spread around 1, their neutral value
            tensor.copy_(1.0 + 0.2 * noise if tensor.ndim == 1 else 0.05 * noise)
    return model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache: dict[str, tuple] = {}

    def build(name: str):
        if name not in cache:
            tmp = tmp_path_factory.mktemp(name)
            tiny = TINY[name]()
            gen = _compile(tiny, tmp, name)
            hf = _hf(tiny)
            hf.save_pretrained(tmp / "ckpt")
            ours = gen.load_checkpoint(tmp / "ckpt")
            ids = torch.randint(1, tiny["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(1))
            assert (ids >= tiny["vocab_size_per_layer_input"]).any()  # some tokens past the per-layer table
            with torch.no_grad():
                expected = hf(ids).logits
            cache[name] = (gen, hf, ours, tiny, ids, expected)
        return cache[name]

    return build


def _gap(ours, ids, expected) -> float:
    with torch.no_grad():
        return (ours(ids) - expected).abs().max().item()


def _tolerance(expected: torch.Tensor) -> float:
    return 1e-5 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("name", sorted(TINY))
def test_parity(name, built):
    gen, hf, ours, tiny, ids, expected = built(name)
    gap = _gap(ours, ids, expected)
    RESULTS[name] = gap
    print(f"gemma3n {name}: max|dlogit| = {gap:.3g}, max|logit| = {expected.abs().max().item():.3g}")
    assert expected.abs().max() > 0.1 and gap <= _tolerance(expected), (gap, expected.abs().max())


def test_replicas_keep_the_structure(built):
    """Each replica holds what the test claims it exercises."""
    plain, variant = (validate(lower(built(name)[3])) for name in ("defaults", "variant"))
    assert [layer.mixer.span for layer in plain.layers] == ["sliding", "full"] * 3
    assert [layer.mixer.kv_shared_from for layer in plain.layers] == [None] * 4 + [2, 3]
    assert [layer.ffn.gate_sparsity_std is not None for layer in plain.layers] == [True, True] + [False] * 4
    assert plain.altup.num_inputs == 4 and plain.altup.correct_scale and plain.layers[0].laurel.rank == 8
    assert plain.per_layer_input.vocab_size < plain.embedding.vocab_size and plain.layers[0].mixer.window < SEQ
    assert plain.head.softcap == 30.0
    assert (variant.altup.num_inputs, variant.altup.active_index, variant.altup.correct_scale) == (2, 1, False)
    assert [layer.ffn.intermediate_size for layer in variant.layers] == VARIANT["intermediate_size"]


def test_sparsity_literal_is_the_normal_quantile():
    """The compile-time cutoff is transformers' float32 icdf within one float32 step, and dense at 0."""
    for target in (0.95, 0.9, 0.99):
        want = torch.distributions.normal.Normal(0, 1).icdf(torch.tensor(target)).item()
        assert abs(sparsity_std(target) - want) <= 2.4e-7 * abs(want), target
    assert [layer.ffn.gate_sparsity_std for layer in lower(defaults()).layers][9:11] == [sparsity_std(0.95), None]


def test_window_edges(built):
    """Sequences of window - 1, window and window + 1 tokens."""
    gen, hf, ours, tiny, ids, expected = built("defaults")
    for seq in (WINDOW - 1, WINDOW, WINDOW + 1):
        with torch.no_grad():
            want = hf(ids[:, :seq]).logits
        assert _gap(ours, ids[:, :seq], want) <= _tolerance(want), seq


def drop_per_layer_inputs(model):
    for layer in model.model.layers:
        layer.per_layer_projection.weight.data.zero_()  # the per-layer branch adds nothing


def share_the_wrong_layer(model):
    layers = model.model.layers
    for layer in layers:
        if layer.self_attn.kv_source:  # the first layer of the same kind instead of the last
            layer.self_attn.kv_source[0] = next(l for l in layers if l.kind == layer.kind).self_attn


def skip_altup_correct(model):
    for layer in model.model.layers:
        layer.altup.correct = lambda predictions, activated, active=layer.altup.active: torch.cat(
            [predictions[:active], activated[None], predictions[active + 1:]])  # the block's output, uncorrected


def dense_gates(model):
    for layer in model.model.layers:
        layer.mlp.sparsity_std = None


def drop_laurel(model):
    for layer in model.model.layers:
        layer.laurel.linear_right.weight.data.zero_()
        layer.laurel.post_laurel_norm.weight.data.zero_()


@pytest.mark.parametrize("plant", [drop_per_layer_inputs, share_the_wrong_layer, skip_altup_correct, dense_gates,
                                   drop_laurel])
def test_planted_bugs_fail(plant, built):
    gen, hf, ours, tiny, ids, expected = built("defaults")
    broken = copy.deepcopy(ours)
    plant(broken)
    gap = _gap(broken, ids, expected)
    RESULTS[f"planted:{plant.__name__}"] = gap
    print(f"gemma3n planted {plant.__name__}: max|dlogit| = {gap:.3g}")
    assert gap > 1e-3, gap


def test_cached_decoding_equals_full_forward(built):
    """Prefill, then one token at a time past the sliding window; the sharing layers read their source's cache
    and keep none. In float64, as for Gemma 4 (scale-1 attention on unit-RMS heads is sharp enough that float32
    rounding of different matmul shapes alone moves logits by ~1e-5 relative); the norms still compute in
    float32, which leaves ~1e-6 (Gemma 4's cached test measures the same)."""
    gen, hf, ours, tiny, ids, expected = built("defaults")
    model = copy.deepcopy(ours).double()
    with torch.no_grad():
        full = model(ids)
        model.enable_cache(batch=2, max_len=SEQ)
        steps = [model(ids[:, :5])] + [model(ids[:, i:i + 1]) for i in range(5, SEQ)]
    gap = (torch.cat(steps, dim=1) - full).abs().max().item()
    RESULTS["cached"] = gap
    print(f"gemma3n: cached decoding vs full forward (float64) max|dlogit| = {gap:.3g}")
    assert gap <= _tolerance(full), gap
    readers = [layer.self_attn.kv_source != [] for layer in model.model.layers]
    assert readers == [False] * 4 + [True] * 2
    assert all((layer.self_attn.cache is None) == reader for layer, reader in zip(model.model.layers, readers))
    model.disable_cache()


def _wrapped(state: dict) -> dict:
    """A text model's keys as the multimodal checkpoint stores them, beside stand-ins for the other towers."""
    out = {("model.language_model." + k[len("model."):] if k.startswith("model.") else k): v.clone()
           for k, v in state.items() if k != "lm_head.weight"}
    for prefix in ("model.vision_tower.timm_model.conv_stem.", "model.audio_tower.conformer.0.",
                   "model.embed_vision.embedding.", "model.embed_audio.embedding."):
        out[prefix + "weight"] = torch.zeros(3)
    return out


def test_wrapper_parity_and_layout(built, tmp_path):
    """The gemma3n wrapper compiles its text_config; its checkpoint keeps the decoder under model.language_model.
    and the vision / audio towers (MobileNet, needing timm, and the conformer) are skipped on load."""
    from safetensors.torch import save_file

    gen, hf, ours, tiny, ids, expected = built("defaults")
    wrapper = transformers.Gemma3nConfig(text_config=dict(tiny)).to_dict()
    arch = lower(wrapper)
    assert arch.model_type == "gemma3n_text" and arch.backbone_checkpoint == "model.language_model."
    assert {"model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio."} == set(
        arch.skipped_prefixes)
    assert arch.model_copy(update={"backbone_checkpoint": "", "skipped_prefixes": ()}) == lower(tiny)
    wrapped_gen = _compile(wrapper, tmp_path, "wrapper")
    save_file(_wrapped(hf.state_dict()), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    gap = _gap(wrapped_gen.load_checkpoint(tmp_path), ids, expected)
    RESULTS["wrapper"] = gap
    print(f"gemma3n wrapper (model.language_model. keys, towers skipped): max|dlogit| = {gap:.3g}")
    assert gap <= _tolerance(expected), gap
    full = lower(transformers.Gemma3nConfig().to_dict())
    assert full.model_copy(update={"backbone_checkpoint": "", "skipped_prefixes": ()}) == lower(defaults())
    with pytest.raises(LlmgenError, match="vision_tokens_per_frame"):  # a key neither class reads
        lower({**transformers.Gemma3nConfig().to_dict(), "vision_tokens_per_frame": 4}, strict=True)


def test_full_size_parameters_and_keys():
    """Gemma3nTextConfig's defaults (E4B) on the meta device: transformers' parameter count, every key and shape."""
    raw = defaults()
    arch = lower(raw)
    config = transformers.Gemma3nTextConfig(**{k: v for k, v in raw.items() if k != "model_type"})
    with torch.device("meta"):
        hf = transformers.Gemma3nForCausalLM(config)
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items() if k != "lm_head.weight"}  # tied
    ours = {key: entry.shape for entry in weight_map(arch) for key in entry.keys(arch)}
    assert ours == expected
    count = parameter_count(arch)
    RESULTS["parameters"] = count
    print(f"gemma3n defaults: {count:,} parameters")
    assert count == sum(p.numel() for p in hf.parameters())
    wrapped = lower(transformers.Gemma3nConfig().to_dict())
    assert {key for entry in weight_map(wrapped) for key in entry.keys(wrapped)} == {
        "model.language_model." + key[len("model."):] for key in expected}


def test_card_kv_bytes_count_shared_layers_once():
    from llmgen.compiler.insight.card import kv_cache

    cache = kv_cache(lower(defaults()))  # 35 layers, the last 15 reading earlier layers' keys and values
    assert cache["layers_without_cache"] == list(range(20, 35))
    # 20 layers x 2 KV heads x (256 + 256), bf16
    assert cache["bytes_per_token_bf16"] == 20 * 2 * 512 * 2 == 40_960


@pytest.mark.parametrize("keys,message", [
    ({"activation_sparsity_pattern": [0.95]}, "activation_sparsity_pattern"),
    ({"activation_sparsity_pattern": [1.0] * 35}, "activation_sparsity_pattern"),
    ({"altup_active_idx": 4}, "altup_active_idx"),
    ({"intermediate_size": [16_384] * 3}, "intermediate_size"),
    ({"num_kv_shared_layers": 35}, "num_kv_shared_layers"),
    ({"hidden_size_per_layer_input": 0}, "hidden_size_per_layer_input"),
    ({"laurel_ranks": 4}, "laurel_ranks"),  # a key transformers does not read either: refused under --strict
])
def test_config_errors_name_the_key(keys, message):
    with pytest.raises(LlmgenError, match=message):
        validate(lower({**defaults(), **keys}, strict=True))


def test_legacy_rope_keys():
    """Published configs carry rope_theta / rope_local_base_freq instead of rope_parameters."""
    raw = {k: v for k, v in defaults().items() if k != "rope_parameters"}
    arch = lower({**raw, "rope_theta": 500_000.0, "rope_local_base_freq": 20_000.0, "rope_scaling": None})
    assert {t.name: t.theta for t in arch.rope} == {"global": 500_000.0, "local": 20_000.0}
    assert lower(raw) == lower(defaults())
