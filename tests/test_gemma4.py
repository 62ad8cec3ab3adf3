"""Gemma 4 (``gemma4_text``, the ``gemma4`` wrapper): tiny-replica parity against transformers 5.24.

Replicas (fp32, batch 2, every parameter and layer scalar random, norm-like vectors around 1): the published
gemma-4-26B-A4B text config shrunk (sliding + full layers, wider full heads, keys as values, one global KV
head, experts beside the MLP), Gemma4TextConfig's defaults shrunk (per-layer embeddings, per_layer_config),
and the defaults with KV sharing and keys as values switched on (the last layer of each kind reads an
earlier layer's keys and values). Also: the sliding window's edges, planted bugs, cached decoding, the
full-size parameter count and on-disk keys, the card's KV bytes, config errors. The wrapper's own parity
(through Gemma4ForConditionalGeneration, vision tower and all) is generated/gemma-4-26B-A4B/test_parity.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import catalog_config, import_path

from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.format import format_source
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.lowering.replica import WINDOW, tiny_replica
from llmgen.compiler.passes.render import Provenance, model_context, render
from llmgen.compiler.passes.render_files import render_model_files
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.passes.weight_map import active_parameter_count, parameter_count, weight_map

transformers = pytest.importorskip("transformers")
HUB_ID = "google/gemma-4-26B-A4B"
SEQ = 2 * WINDOW + 4  # crosses the replica's sliding window
RESULTS: dict[str, float] = {}


def real_text() -> dict:
    return catalog_config(HUB_ID)["text_config"]


def defaults(**keys) -> dict:
    return transformers.Gemma4TextConfig(**keys).to_dict()


BUILT = {
    "real": real_text,
    "defaults": defaults,
    "shared": lambda: defaults(num_kv_shared_layers=10, attention_k_eq_v=True, num_global_key_value_heads=2,
                               final_logit_softcapping=30.0, use_double_wide_mlp=True),
}


def _tiny(raw: dict) -> dict:
    tiny = tiny_replica(raw, lower(raw))
    return {k: v for k, v in tiny.items() if k not in ("transformers_version", "architectures")}


def _compile(raw: dict, tmp_path, name: str):
    """model.py alone (the pipeline's passes without the parity-test files), imported."""
    arch = validate(lower(raw))
    context = model_context(arch, weight_map(arch), Provenance(f"{name}/config.json", "local", "test"))
    directory = tmp_path / f"{name}_model"
    directory.mkdir(exist_ok=True)
    for file, text in render_model_files(context).items():  # model.py with runtime.py and weights.py
        (directory / file).write_text(format_source(text, name=file))
    return import_path(directory / "model.py", f"gemma4_{name}_model")


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *((n, b) for n, b in model.named_buffers() if "layer_scalar" in n)]:
            noise = torch.randn(tensor.shape, generator=generator)
            # vectors (norm weights, router and expert scales, layer scalars) spread around 1, their neutral value
            tensor.copy_(1.0 + 0.2 * noise if tensor.ndim == 1 else 0.05 * noise)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache: dict[str, tuple] = {}

    def build(name: str):
        if name not in cache:
            tmp = tmp_path_factory.mktemp(name)
            tiny = _tiny(BUILT[name]())
            gen = _compile(tiny, tmp, name)
            config = transformers.Gemma4TextConfig(**{k: v for k, v in tiny.items() if k != "model_type"})
            config._attn_implementation = "eager"
            torch.manual_seed(0)
            hf = transformers.Gemma4ForCausalLM(config).eval()
            _randomise(hf)
            hf.save_pretrained(tmp / "ckpt")
            ours = gen.load_checkpoint(tmp / "ckpt")
            ids = torch.randint(1, tiny["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(1))
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


@pytest.mark.parametrize("name", sorted(BUILT))
def test_parity(name, built):
    gen, hf, ours, tiny, ids, expected = built(name)
    gap = _gap(ours, ids, expected)
    RESULTS[name] = gap
    print(f"gemma4 {name}: max|dlogit| = {gap:.3g}, max|logit| = {expected.abs().max().item():.3g}")
    assert expected.abs().max() > 0.1 and gap <= _tolerance(expected), (gap, expected.abs().max())


def test_replicas_keep_the_structure(built):
    """Each replica holds what the test claims it exercises."""
    arch = {name: validate(lower(built(name)[3])) for name in BUILT}
    real, plain, shared = arch["real"], arch["defaults"], arch["shared"]
    spans = [layer.mixer.span for layer in real.layers]
    assert spans == ["sliding", "sliding", "full", "full"]
    assert {(l.mixer.span, l.mixer.head_dim, l.mixer.num_kv_heads, l.mixer.k_eq_v) for l in real.layers} == {
        ("sliding", 32, 2, False), ("full", 64, 1, True)}
    assert real.layers[0].experts_beside is not None and real.per_layer_input is None
    assert plain.per_layer_input is not None and plain.layers[0].experts_beside is None
    assert [layer.mixer.kv_shared_from for layer in shared.layers] == [None, None, None, None, 1, 3]
    assert [layer.ffn.intermediate_size for layer in shared.layers] == [96] * 4 + [192] * 2  # double-wide readers
    assert all(layer.mixer.k_eq_v == (layer.mixer.span == "full") for layer in shared.layers)
    assert real.rope_table("global").type == "proportional"


def test_every_expert_is_hit(built):
    gen, hf, ours, tiny, ids, expected = built("real")
    hits = []
    hooks = [layer.router.register_forward_hook(lambda m, a, out: hits.append(torch.bincount(
        out[2].flatten(), minlength=tiny["num_experts"]))) for layer in hf.model.layers]
    with torch.no_grad():
        hf(ids)
    for hook in hooks:
        hook.remove()
    assert len(hits) == tiny["num_hidden_layers"] and all(h.min() > 0 for h in hits), hits


@pytest.mark.parametrize("name", ["real", "shared"])
def test_window_edges(name, built):
    """Sequences of window - 1, window and window + 1 tokens."""
    gen, hf, ours, tiny, ids, expected = built(name)
    for seq in (WINDOW - 1, WINDOW, WINDOW + 1):
        with torch.no_grad():
            want = hf(ids[:, :seq]).logits
        assert _gap(ours, ids[:, :seq], want) <= _tolerance(want), seq


def _planted(name, built, plant) -> float:
    gen, hf, ours, tiny, ids, expected = built(name)
    broken = copy.deepcopy(ours)
    plant(broken, tiny)
    gap = _gap(broken, ids, expected)
    RESULTS[f"planted:{plant.__name__}"] = gap
    return gap


def drop_per_layer_inputs(model, tiny):
    for layer in model.model.layers:
        layer.per_layer_projection.weight.data.zero_()  # the per-layer branch adds nothing


def share_the_wrong_layer(model, tiny):
    layers = model.model.layers
    for layer in layers:
        if layer.self_attn.kv_source:  # the first layer of the same kind instead of the last
            layer.self_attn.kv_source[0] = next(l for l in layers if l.kind == layer.kind).self_attn


def values_not_from_keys(model, tiny):
    generator = torch.Generator().manual_seed(3)
    for layer in model.model.layers:
        attn = layer.self_attn
        if attn.values_from_keys:  # a value projection of its own, as if attention_k_eq_v were ignored
            attn.values_from_keys = False
            attn.v_proj = torch.nn.Linear(tiny["hidden_size"], attn.num_kv_heads * attn.head_dim, bias=False)
            attn.v_proj.weight.data = 0.05 * torch.randn(attn.v_proj.weight.shape, generator=generator)


@pytest.mark.parametrize("name,plant", [("defaults", drop_per_layer_inputs), ("shared", share_the_wrong_layer),
                                        ("real", values_not_from_keys)])
def test_planted_bugs_fail(name, plant, built):
    gap = _planted(name, built, plant)
    print(f"gemma4 planted {plant.__name__}: max|dlogit| = {gap:.3g}")
    assert gap > 1e-3, gap


@pytest.mark.parametrize("name", ["real", "shared"])
def test_cached_decoding_equals_full_forward(name, built):
    """Prefill, then one token at a time past the sliding window; shared layers read their source's cache.
    In float64: at scale 1 on unit-RMS queries and keys the replica's softmax is sharp, and float32 rounding
    of different matmul shapes alone moves its logits by up to ~1e-4 (transformers' own cached decoding
    differs from its full forward by as much), which would hide nothing and prove nothing."""
    gen, hf, ours, tiny, ids, expected = built(name)
    model = copy.deepcopy(ours).double()
    with torch.no_grad():
        full = model(ids)
        model.enable_cache(batch=2, max_len=SEQ)
        steps = [model(ids[:, :5])] + [model(ids[:, i:i + 1]) for i in range(5, SEQ)]
    gap = (torch.cat(steps, dim=1) - full).abs().max().item()
    RESULTS[f"cached:{name}"] = gap
    print(f"gemma4 {name}: cached decoding vs full forward (float64) max|dlogit| = {gap:.3g}")
    assert gap <= _tolerance(full), gap
    caches = [layer.self_attn.cache for layer in model.model.layers]
    readers = [layer.self_attn.kv_source != [] for layer in model.model.layers] if name == "shared" else []
    assert all((cache is None) == reader for cache, reader in zip(caches, readers)), caches  # readers keep none
    model.disable_cache()


def test_full_size_parameters_and_keys():
    """gemma-4-26B-A4B on the meta device: transformers' parameter count, and every key with its shape."""
    raw = catalog_config(HUB_ID)
    arch = lower(raw)
    config = transformers.Gemma4TextConfig(**{k: v for k, v in raw["text_config"].items() if k != "model_type"})
    with torch.device("meta"):
        hf = transformers.Gemma4ForCausalLM(config)
    expected = {k.replace("model.", "model.language_model.", 1): tuple(v.shape) for k, v in hf.state_dict().items()}
    expected.pop("lm_head.weight")  # tied to the embedding
    ours = {key: entry.shape for entry in weight_map(arch) for key in entry.keys(arch)}
    assert ours == expected
    count = parameter_count(arch)
    RESULTS["parameters"] = count
    assert count == sum(p.numel() for p in hf.parameters()) == 25_233_141_760
    routed = sum(p.numel() for name, p in hf.named_parameters() if ".experts." in name)  # 8 of 128 used per token
    assert active_parameter_count(arch) == count - routed + routed * 8 // 128 == 3_822_530_560


def test_card_kv_bytes_count_shared_layers_once():
    from llmgen.compiler.insight.card import kv_cache

    arch = lower(catalog_config(HUB_ID))
    per_token = kv_cache(arch)["bytes_per_token_bf16"]
    # 25 sliding layers x 8 KV heads x (256 + 256) + 5 full layers x 2 KV heads x (512 + 512), bf16
    assert per_token == (25 * 8 * 512 + 5 * 2 * 1024) * 2 == 225_280
    shared = lower(BUILT["shared"]())  # 30 layers, the last 10 reading earlier layers' keys and values
    cache = kv_cache(shared)
    assert cache["layers_without_cache"] == list(range(20, 30))
    assert cache["bytes_per_token_bf16"] == (17 * 4 * 512 + 3 * 2 * 1024) * 2


def test_code_only_for_the_features_a_model_has(built):
    text = {name: open(built(name)[0].__file__).read() for name in BUILT}
    assert "per_layer" not in text["real"] and "kv_source" not in text["real"]
    assert "ScaledRouter" in text["real"] and "values_from_keys" in text["real"]
    assert "ScaledRouter" not in text["defaults"] and "values_from_keys" not in text["defaults"]
    assert "kv_source" not in text["defaults"] and "embed_tokens_per_layer" in text["defaults"]
    assert "kv_source" in text["shared"]


def test_wrapper_reads_the_text_config_and_skips_the_other_parts():
    raw = catalog_config(HUB_ID)
    arch = lower(raw)
    assert arch.model_type == "gemma4_text" and arch.backbone_checkpoint == "model.language_model."
    assert "model.vision_tower." in arch.skipped_prefixes and "model.audio_tower." in arch.skipped_prefixes
    wrapped = lower(transformers.Gemma4Config().to_dict())  # the wrapper class's defaults: its text defaults
    assert wrapped.model_copy(update={"backbone_checkpoint": "", "skipped_prefixes": ()}) == lower(defaults())
    with pytest.raises(LlmgenError, match="vision_tokens_per_frame"):  # a key neither class reads
        lower({**raw, "vision_tokens_per_frame": 4}, strict=True)


@pytest.mark.parametrize("keys,message", [
    ({"use_bidirectional_attention": "all"}, "use_bidirectional_attention"),
    ({"num_kv_shared_layers": 30}, "num_kv_shared_layers"),
    ({"per_layer_config": {"05": {"sliding_window": 4}}}, "per_layer_config"),
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e6},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}, "rope type 'yarn'"),
    ({"enable_moe_block": True, "num_experts": None}, "num_experts"),
])
def test_config_errors_name_the_key(keys, message):
    raw = {**defaults(), **keys}
    with pytest.raises(LlmgenError, match=message):
        validate(lower(raw))


def test_double_wide_mlp_on_the_sharing_layers():
    arch = validate(lower(BUILT["shared"]()))
    widths = [layer.ffn.intermediate_size for layer in arch.layers]
    assert widths == [9216] * 20 + [2 * 9216] * 10


def test_published_copies_of_shared_layers_kv_tensors_are_ignored(built, tmp_path):
    """A checkpoint may still hold k/v projections and norms for the layers that read another layer's keys and
    values (transformers ignores them on load): so does the generated loader; a stray key stays an error."""
    from safetensors.torch import load_file, save_file

    gen, hf, ours, tiny, ids, expected = built("shared")
    state = {k: v.clone() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    width = tiny["head_dim"]
    for i in (4, 5):  # the two reading layers
        state[f"model.layers.{i}.self_attn.k_proj.weight"] = torch.zeros(width * 2, tiny["hidden_size"])
        state[f"model.layers.{i}.self_attn.k_norm.weight"] = torch.zeros(width)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    assert _gap(gen.load_checkpoint(tmp_path), ids, expected) <= _tolerance(expected)
    save_file({**load_file(tmp_path / "model.safetensors"), "model.layers.0.self_attn.stray.weight": torch.zeros(2)},
              tmp_path / "model.safetensors")
    with pytest.raises(gen.WeightLoadError, match="stray"):
        gen.load_checkpoint(tmp_path)
