"""Short-convolution hybrids: LFM2 (``lfm2``) and LFM2-MoE (``lfm2_moe``).

Tiny-replica parity for both families in both spellings of their configs (the first releases' ``full_attn_idxs``
/ ``block_ff_dim`` / ``tie_embedding`` keys and the newer ``layer_types``), every parameter random at a realistic
scale (the convolution's taps included); planted bugs in the block (gates B and C swapped, a convolution that
sees the next token) fail it; cached decoding (convolution windows + KV cache) equals the full forward token by
token and after several prefills; the convolution state's size does not depend on the text length; full-size
parameter counts and checkpoint layouts equal transformers'; the card shows the new layer letter and state bytes.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import GENERATED, import_path, logits_in_pieces

from llmgen.compiler.insight.card import card, load_model
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.verification.verify import verify
from llmgen.compiler.passes.weight_map import active_parameter_count, parameter_count
from llmgen.compiler.passes.write import write_outputs
from llmgen.schemas.short_conv import ShortConv

MODEL = "LFM2-1.2B"  # the committed LFM2 (tests/fixtures/lfm2): attention on layers 2, 5, 8, 10, 12, 14
FIXTURE = Path(__file__).parent / "fixtures" / "lfm2" / "LFM2-1.2B.json"
# An LFM2-style layer pattern for the config-class defaults, whose own pattern is attention everywhere
# (Lfm2Config: full_attn_idxs None -> every layer; Lfm2MoeConfig has no default and builds no model without one).
ATTENTION_AT = (2, 5, 8, 10, 12, 14, 18, 22, 26, 30)


def lfm2_1_2b() -> dict:
    """The LFM2-1.2B config written from its published values (see tests/fixtures/lfm2/SOURCES.md)."""
    return json.loads(FIXTURE.read_text())


def layer_types(layers: int) -> list[str]:
    return ["full_attention" if i in ATTENTION_AT else "conv" for i in range(layers)]


def lfm2_defaults(spelling: str) -> dict:
    """transformers' Lfm2Config defaults, written out in the older or the newer spelling, with the pattern above."""
    raw = {"model_type": "lfm2", "vocab_size": 65536, "hidden_size": 2560, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 128000, "norm_eps": 1e-5,
           "conv_bias": False, "conv_L_cache": 3, "block_multiple_of": 256, "block_ffn_dim_multiplier": 1.0,
           "block_auto_adjust_ff_dim": True, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if spelling == "old":  # the first releases: rope_theta, block_ff_dim, tie_embedding, full_attn_idxs
        return {**raw, "rope_theta": 1000000.0, "block_ff_dim": 12288, "tie_embedding": True,
                "full_attn_idxs": [i for i, t in enumerate(layer_types(32)) if t == "full_attention"]}
    return {**raw, "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "intermediate_size": 12288,
            "tie_word_embeddings": True, "layer_types": layer_types(32)}


def lfm2_moe_defaults(spelling: str) -> dict:
    """transformers' Lfm2MoeConfig defaults with the pattern above (its config class knows only layer_types;
    the older spelling it reads is tie_embedding)."""
    raw = {"model_type": "lfm2_moe", "vocab_size": 65536, "hidden_size": 2048, "intermediate_size": 7168,
           "moe_intermediate_size": 1792, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "max_position_embeddings": 128000, "norm_eps": 1e-5, "conv_bias": False, "conv_L_cache": 3,
           "num_dense_layers": 2, "num_experts_per_tok": 4, "num_experts": 32, "use_expert_bias": True,
           "routed_scaling_factor": 1.0, "norm_topk_prob": True, "pad_token_id": 0, "bos_token_id": 1,
           "eos_token_id": 2, "layer_types": layer_types(32)}
    if spelling == "old":
        return {**raw, "rope_theta": 1000000.0, "tie_embedding": True}
    return {**raw, "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "tie_word_embeddings": True}


def lfm2_moe_variant() -> dict:
    """The other branches of LFM2-MoE's config, in the older spelling: biases in the block, no selection bias,
    a routing scale, an untied head, one dense layer."""
    return {**lfm2_moe_defaults("old"), "conv_bias": True, "use_expert_bias": False, "routed_scaling_factor": 2.5,
            "tie_embedding": False, "num_dense_layers": 1}


CONFIGS = {
    "lfm2-old-keys": lambda: lfm2_defaults("old"),
    "lfm2-layer_types": lambda: lfm2_defaults("new"),
    "lfm2_moe-layer_types": lambda: lfm2_moe_defaults("new"),
    "lfm2_moe-old-keys-variant": lfm2_moe_variant,
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """name -> the generated directory of CONFIGS[name] at full size (compiled once, on first use)."""
    root, done = tmp_path_factory.mktemp("lfm2"), {}

    def get(name: str):
        if name not in done:
            raw = CONFIGS[name]()
            text = json.dumps(raw, indent=2)
            loaded = LoadedConfig(raw=raw, text=text, source_id=f"{name}/config.json", revision="local", origin="file",
                                  checkpoint_dir=None, note=None)
            done[name] = write_outputs(root / name, compile_config(loaded, slug=name).files)
        return done[name]

    return get


def check_parity(result: dict, name: str) -> None:
    print(f"{name}: max|dlogit| = {result['max_abs_diff']:.3g}, logits up to {result['max_abs_logit']:.3g}")
    assert result["batch"] == 2 and result["max_abs_logit"] > 0.1
    assert result["max_abs_diff"] <= 1e-5 * max(1.0, result["max_abs_logit"]), result
    assert result["passed"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parity_of_both_spellings(name, compiled):
    arch = lower(CONFIGS[name]())
    assert {layer.mixer.kind for layer in arch.layers} == {"short_conv", "attention"}
    check_parity(verify(compiled(name)), name)


def test_parity_of_the_committed_model(tmp_path):
    shutil.copytree(GENERATED / MODEL, tmp_path / MODEL)
    check_parity(verify(tmp_path / MODEL), MODEL)


def test_both_spellings_lower_to_one_architecture():
    for defaults in (lfm2_defaults, lfm2_moe_defaults):
        old, new = (validate(lower(defaults(spelling))) for spelling in ("old", "new"))
        assert old == new
    arch = validate(lower(lfm2_defaults("old")))
    assert arch.layers[0].ffn.intermediate_size == 8192  # 2/3 of 12288, rounded up to a multiple of 256
    assert [layer.index for layer in arch.layers if layer.mixer.kind == "attention"] == list(ATTENTION_AT)


# bug -> (text of the committed model.py, its replacement)
PLANTED = {
    "gates B and C swapped": ("b, c, h = self.in_proj(x).chunk(3, dim=-1)", "c, b, h = self.in_proj(x).chunk(3, dim=-1)"),
    "convolution not causal": ("return self.conv(u)[..., :seq]", "return self.conv(u)[..., 1 : seq + 1]"),
}


def planted(tmp_path, before: str, after: str):
    target = tmp_path / MODEL
    shutil.copytree(GENERATED / MODEL, target)
    source = (target / "model.py").read_text()
    assert source.count(before) == 1, f"planted-bug anchor vanished from {MODEL}/model.py: {before!r}"
    (target / "model.py").write_text(source.replace(before, after))
    return target


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_fails_parity(bug, tmp_path):
    diff = verify(planted(tmp_path, *PLANTED[bug]))["max_abs_diff"]
    print(f"{bug}: max|dlogit| = {diff:.3g}")
    assert not diff <= 1e-3, f"{bug}: parity did not catch it (max|dlogit| = {diff:.3g})"  # nan counts as caught


def test_divergence_names_the_first_conv_layer(tmp_path):
    from llmgen.compiler.insight.divergence import divergence, format_report

    report = divergence(planted(tmp_path, *PLANTED["convolution not causal"]))
    first = report.rows[report.first]
    assert first.point.name == "L0.attn_out" and first.point.module == "model.layers.0.conv", format_report(report)
    assert all(not row.over for row in report.rows[: report.first])
    assert "causal depthwise conv" in first.point.suspects


@pytest.fixture(scope="module")
def replica():
    """The committed LFM2 at its replica's size, randomised as its parity test randomises transformers' model."""
    gen = import_path(GENERATED / MODEL / "model.py", "llmgen_lfm2_model")
    parity = import_path(GENERATED / MODEL / "test_parity.py", "llmgen_lfm2_parity")
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
    arch = validate(lower(parity.HF_CONFIG))
    return gen, config, model, arch



@pytest.mark.parametrize("sizes", [[1] * 12, [2] + [1] * 4, [3] + [1] * 3, [7, 1, 1, 1], [5, 4, 1]],
                         ids=["token-by-token", "prefill-2", "prefill-3", "prefill-7", "prefill-5-then-4"])
def test_cached_decoding_equals_the_full_forward(replica, sizes):
    _, config, model, _ = replica
    ids = torch.randint(0, config.vocab_size, (2, sum(sizes)), generator=torch.Generator().manual_seed(len(sizes)))
    with torch.no_grad():
        full, cached = model(ids), logits_in_pieces(model, ids, sizes)
    scale, diff = full.abs().max().item(), (cached - full).abs().max().item()
    print(f"pieces {sizes}: max|cached - full| = {diff:.3g} (logits up to {scale:.3g})")
    assert scale > 0.1 and diff <= 1e-5 * scale


def test_convolution_state_is_constant_in_the_text_length(replica):
    from llmgen.compiler.passes.mixers.short_conv import state_bytes

    _, _, model, arch = replica
    sizes = {}
    with torch.no_grad():
        for length, max_len in ((4, 8), (100, 200)):
            cache = model.enable_cache(batch=1, max_len=max_len)
            model(torch.zeros(1, length, dtype=torch.long))
            sizes[length] = [layer.conv.nbytes for layer in cache if type(layer).__name__ == "ShortConvCache"]
            assert all(layer.length == length for layer in cache)
            model.disable_cache()
    conv = next(layer.mixer for layer in arch.layers if isinstance(layer.mixer, ShortConv))
    assert sizes[4] == sizes[100] and len(sizes[4]) == sum(isinstance(layer.mixer, ShortConv) for layer in arch.layers)
    assert sizes[4][0] == state_bytes(conv, conv_bytes=4) == (conv.kernel - 1) * conv.channels * 4  # a float32 model


def on_disk_layout(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The keys save_pretrained writes (tied copies left out, experts in the hub's per-expert layout)."""
    from transformers.core_model_loading import revert_weight_conversion

    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    state = {k: v for k, v in model.state_dict().items() if k not in tied}
    return {k: tuple(v.shape) for k, v in revert_weight_conversion(model, state).items()}


@pytest.mark.parametrize("name", ["lfm2-layer_types", "lfm2_moe-layer_types", MODEL])
def test_full_size_counts_and_layout_match_transformers(name, compiled):
    """Total and active parameter counts of the real sizes (the config-class defaults, LFM2-1.2B) on the meta
    device, and every tensor of transformers' checkpoint layout mapped to a parameter of the same shape."""
    transformers = pytest.importorskip("transformers")
    directory = GENERATED / MODEL if name == MODEL else compiled(name)
    raw = json.loads((directory / "config.json").read_text())
    module = import_path(directory / "model.py", f"full_size_{name.replace('-', '_').replace('.', '_')}")
    arch = validate(lower(copy.deepcopy(raw)))
    with torch.device("meta"):
        ours = module.CausalLM(module.Config())
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    total = sum(p.numel() for p in reference.parameters())
    experts = sum(p.numel() for n, p in reference.named_parameters() if ".feed_forward.experts." in n)
    moe = next((layer.ffn for layer in arch.layers if layer.ffn.kind == "moe"), None)
    active = total - (experts - experts * moe.top_k // moe.num_experts if moe else 0)
    assert sum(p.numel() for p in ours.parameters()) == parameter_count(arch) == total
    assert active_parameter_count(arch) == active
    layout = on_disk_layout(reference)
    params = {n: tuple(p.shape) for n, p in ours.state_dict().items()}
    keys = module.checkpoint_keys(module.Config())
    assert set(keys) == set(layout), sorted(set(keys) ^ set(layout))[:10]
    assert all(params[keys[k]] == shape for k, shape in layout.items())
    assert set(keys.values()) == set(params)
    print(f"{name}: {total:,} parameters, {active:,} active per token, {len(layout)} checkpoint tensors")


def test_card_shows_pattern_and_state():
    from llmgen.compiler.passes.mixers.short_conv import state_bytes

    data = card(load_model(str(FIXTURE)))
    assert data["pattern"]["legend"]["V"] == "short convolution"
    assert data["pattern"]["strip"] == "V×2 F V×2 F V×2 F V F V F V F V"
    kv = data["kv_cache"]
    state = (3 - 1) * 2048 * 2  # two bf16 inputs of 2048 channels per conv layer
    conv = next(layer.mixer for layer in validate(lower(lfm2_1_2b())).layers if isinstance(layer.mixer, ShortConv))
    assert state_bytes(conv, conv_bytes=2) == state
    assert kv["recurrent_bytes_per_sequence"] == 10 * state and len(kv["recurrent_layers"]) == 10
    assert kv["bytes_per_token_bf16"] == 6 * 2 * 8 * 64 * 2  # K and V of 8 heads of 64, 6 attention layers
    print(f"LFM2-1.2B: convolution state {kv['recurrent_bytes_per_sequence']:,} bytes per sequence")


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.update(layer_types=["mamba"] * 32), "layer_types"),
    (lambda t: t.update(full_attn_idxs=[0, 40]), "full_attn_idxs"),
    (lambda t: t.update(full_attn_idxs=[0]), "full_attn_idxs"),  # disagrees with layer_types
    (lambda t: t.update(conv_L_cache=0), "conv_L_cache"),
])
def test_bad_lfm2_configs_are_refused(edit, words):
    raw = lfm2_defaults("new")
    edit(raw)
    with pytest.raises(LlmgenError, match=words):
        validate(lower(raw))


def test_lfm2_moe_without_layer_types_is_refused():
    raw = lfm2_moe_defaults("new")
    del raw["layer_types"]
    with pytest.raises(LlmgenError, match="layer_types"):
        validate(lower(raw))
