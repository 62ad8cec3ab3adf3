"""Llama 4 text decoder (llama4_text): chunked local attention, NoPE layers with temperature tuning,
L2 QK-norm, top-k sigmoid experts fed the token times their weight, fused (in, out) expert tensors.

No published config is in the catalog: configs are built from transformers' Llama4TextConfig
defaults, plus a Scout-like variant (MoE on every other layer, llama3 RoPE scaling) and a
Maverick-like one (no QK-norm, no temperature tuning, no chunking). Tiny-replica parity with
every expert hit and sequences around the chunk, cached == uncached decoding across chunk
boundaries, full-size parameter counts against transformers on the meta device, one-line errors.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import window_boundary_runs
from test_kv_cache import cached_and_full, compiled_module, tiny_model
from test_moe import counts_against_transformers
from test_parity_variants import compile_and_verify

from llmgen.compiler.basics.errors import ConfigError, UnsupportedError
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.verification.verify import verify
from llmgen.compiler.passes.weight_map import active_parameter_count, parameter_count

transformers = pytest.importorskip("transformers")
TOLERANCE = 1e-5


def defaults(**changes) -> dict:
    """transformers' Llama4TextConfig defaults (the lists its __post_init__ derives included)."""
    raw = transformers.Llama4TextConfig().to_diff_dict()
    raw.pop("transformers_version", None)
    return {**raw, **changes, "model_type": "llama4_text"}


def derived(**changes) -> dict:
    """Defaults without the derived per-layer lists, so the interval / step keys decide them."""
    raw = defaults()
    for key in ("moe_layers", "layer_types", "no_rope_layers"):
        raw.pop(key)
    return {**raw, **changes}


def scout() -> dict:
    """MoE on every other layer and Llama 4 Scout's published llama3 RoPE scaling: low_freq_factor ==
    high_freq_factor == 1 (no smoothed band: slow frequencies divided by 16, the rest kept)."""
    return derived(interleave_moe_layer_step=2, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 16.0, "low_freq_factor": 1.0,
        "high_freq_factor": 1.0, "original_max_position_embeddings": 8192})


def maverick_like() -> dict:  # Maverick: MoE on every other layer, no QK-norm
    return derived(interleave_moe_layer_step=2, use_qk_norm=False)


def unchunked() -> dict:
    """No chunking (RoPE layers attend to everything), no QK-norm, no temperature tuning. Experts on
    layer 0 only: behind full attention over the whole test sequence the tiny replica's tokens become
    alike and some of its experts get no token; the MoE itself is covered by the other variants."""
    return derived(attention_chunk_size=None, use_qk_norm=False, attn_temperature_tuning=False, moe_layers=[0])


VARIANTS = {"defaults": defaults, "scout": scout, "maverick_like": maverick_like, "unchunked": unchunked}


def compiled(raw: dict, tmp_path, name: str):
    return compiled_module(raw, tmp_path, f"l4_{name}")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parity_every_expert_hit(name, tmp_path):
    result = compile_and_verify(VARIANTS[name](), tmp_path, name)
    assert result["passed"] and result["max_abs_diff"] <= TOLERANCE and result["max_abs_logit"] > 0.1, result
    assert result["expert_hits"] and all(min(layer) > 0 for layer in result["expert_hits"]), result["expert_hits"]
    print(f"{name}: max|dlogit| {result['max_abs_diff']:.3g} at seq {result['seq_len']}, hits {result['expert_hits']}")


@pytest.mark.parametrize("name", ["defaults", "scout"])
def test_parity_around_the_chunk(name, tmp_path):
    """chunk - 1, chunk, chunk + 1 and 2 x chunk tokens (the replica's chunk is 8)."""
    _, parity = compiled(VARIANTS[name](), tmp_path, f"chunk_{name}")
    assert parity.CHUNK == 8 and parity.HF_CONFIG["attention_chunk_size"] == 8
    runs = window_boundary_runs(parity, "test_parity_around_the_chunk")
    assert [seq for seq, _ in runs] == [7, 8, 9, 16]
    assert max(diff for _, diff in runs) <= TOLERANCE
    print(f"{name}: {runs}")


def test_replica_keeps_every_kind(tmp_path):
    _, parity = compiled(scout(), tmp_path, "kinds")
    config = parity.MODEL_CONFIG
    assert config["layer_pattern"] == "CCCNC" and config["ffn_pattern"] == "DEDED"
    assert parity.HF_CONFIG["floor_scale"] == 4  # the NoPE query scale steps within the test sequence


CHUNKINGS = {
    "token by token": [1] * 24,
    "prefill 5, then tokens": [5] + [1] * 19,
    "pieces across chunks": [11, 3, 3, 7],
    "prefill a chunk, then chunk + 1": [8, 9, 7],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    module, parity = compiled(defaults(), tmp_path_factory.mktemp("cache"), "cache")
    return module, parity, tiny_model(module, parity)


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
def test_cached_decoding_equals_the_full_forward(tiny, chunking):
    """Across chunk boundaries: the chunked layers' ring of `chunk` slots holds every key they need."""
    cached, full = cached_and_full(tiny[2], CHUNKINGS[chunking])
    assert full.abs().max() > 0.1
    diff = (cached - full).abs().max().item()
    assert diff <= TOLERANCE
    print(f"{chunking}: cached vs uncached max|dlogit| {diff:.3g}")


def test_chunked_layers_keep_only_the_chunk(tiny):
    _, _, model = tiny
    chunk = model.config.attention_chunk_size
    for layer_cache, kind in zip(model.enable_cache(1, 64), model.config.layer_pattern):
        assert layer_cache.k.shape[2] == (chunk if kind == "C" else 64)
    model.disable_cache()


def test_chunk_mask(tiny):
    module, _, _ = tiny
    pos = torch.arange(10)
    mask = module.attention_mask(pos, pos, chunk=4)
    expected = torch.tensor([[j <= i and j // 4 == i // 4 for j in range(10)] for i in range(10)])
    assert torch.equal(mask, expected)
    assert torch.equal(module.attention_mask(pos, pos), torch.ones(10, 10).tril().bool())


def test_an_earlier_chunk_reaches_a_token_only_through_the_nope_layers(tiny):
    """Changing token 0 changes position 9's logits; with the NoPE layers' attention confined to the
    chunk too, it no longer does (a chunked layer really hides earlier chunks)."""
    module, _, model = tiny
    ids = torch.randint(0, 200, (1, 12), generator=torch.Generator().manual_seed(3))
    other = ids.clone()
    other[0, 0] = (ids[0, 0] + 1) % 200
    with torch.no_grad():
        assert (model(ids)[0, 9] - model(other)[0, 9]).abs().max() > 1e-4
        home = module.model_module  # model.py's own module: the forward looks attention_mask up there
        original = home.attention_mask
        home.attention_mask = lambda q, k, chunk=None: original(q, k, chunk=model.config.attention_chunk_size)
        try:
            # Only rounding is left: the experts' matmuls see a different set of rows (token 0's routing).
            assert (model(ids)[0, 9] - model(other)[0, 9]).abs().max() <= 1e-6
        finally:
            home.attention_mask = original


def test_routing_weight_scales_the_expert_input(tiny):
    """out = shared(x) + sum_k expert_k(w_k x), which is not shared(x) + sum_k w_k expert_k(x)."""
    _, _, model = tiny
    moe = model.model.layers[0].feed_forward
    x = torch.randn(1, 1, model.config.hidden_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        weights, experts = moe.route(x[0])
        flat = x[0]
        on_input = moe.shared_expert(flat) + sum(moe.experts(flat * w, int(e)) for w, e in zip(weights[0], experts[0]))
        on_output = moe.shared_expert(flat) + sum(w * moe.experts(flat, int(e)) for w, e in zip(weights[0], experts[0]))
        out = moe(x)[0]
    assert (out - on_input).abs().max() <= 1e-6
    assert (out - on_output).abs().max() > 1e-4
    assert ((weights > 0) & (weights < 1)).all()  # sigmoids of the kept logits, not renormalised


def test_ir_per_layer():
    arch = validate(lower(defaults()))
    chunked = [layer.mixer for layer in arch.layers if layer.mixer.rope is not None]
    nope = [layer.mixer for layer in arch.layers if layer.mixer.rope is None]
    assert len(nope) == 12 and [layer.index for layer in arch.layers if layer.mixer.rope is None][:2] == [3, 7]
    assert all(a.span == "chunked" and a.chunk_size == 8192 and a.qk_norm == "l2" and a.temperature is None
               for a in chunked)
    assert all(a.span == "full" and a.qk_norm == "none" and a.temperature.floor_scale == 8192 for a in nope)
    assert arch.rope[0].layout == "interleaved" and arch.rope[0].theta == 500000.0
    moe = arch.layers[0].ffn
    assert (moe.router, moe.weighted, moe.storage, moe.shared_expert_size) == ("topk_sigmoid", "input", "fused_in_out", 8192)
    mixed = validate(lower(scout()))
    assert "".join("E" if layer.ffn.kind == "moe" else "D" for layer in mixed.layers)[:4] == "DEDE"
    assert mixed.layers[0].ffn.intermediate_size == 16384
    plain = validate(lower(unchunked()))
    assert all(layer.mixer.span == "full" and layer.mixer.qk_norm == "none" and layer.mixer.temperature is None
               for layer in plain.layers)
    assert "".join("E" if layer.ffn.kind == "moe" else "D" for layer in plain.layers) == "E" + "D" * 47


def test_code_only_for_features_the_model_has(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    full, _ = compiled(defaults(), tmp_path / "a", "code_a")
    source = Path(full.__file__).read_text()
    for present in ("def l2_norm", "q_scale", "chunk=c.attention_chunk_size", "class StackedExperts", "torch.sigmoid"):
        assert present in source, present
    assert "FUSED_EXPERTS" not in source and "unfuse_experts" not in source  # on disk as in memory
    plain, _ = compiled(unchunked(), tmp_path / "b", "code_b")
    source = Path(plain.__file__).read_text()
    for absent in ("l2_norm", "q_scale", "attention_chunk_size", "chunked_keys", "floor_scale"):
        assert absent not in source, absent


@pytest.mark.parametrize("name", ["defaults", "scout"])
def test_total_and_active_parameters_match_transformers(name):
    arch, _, total, active = counts_against_transformers(VARIANTS[name]())
    assert parameter_count(arch) == total
    assert active_parameter_count(arch) == active
    print(f"{name}: total {total:,}, active {active_parameter_count(arch):,}")


BAD = [
    ({"no_rope_layers": [1, 1]}, ConfigError, "no_rope_layers"),
    ({"no_rope_layers": [2] * 48}, ConfigError, "no_rope_layers"),
    ({"moe_layers": [48]}, ConfigError, "moe_layers"),
    ({"moe_layers": "all"}, ConfigError, "moe_layers"),
    ({"layer_types": ["chunked_attention"] * 48}, UnsupportedError, "layer_types"),
    ({"layer_types": ["sliding_attention"] * 48}, UnsupportedError, "layer_types"),
    ({"attention_chunk_size": None, "layer_types": ["chunked_attention", "chunked_attention", "chunked_attention",
                                                    "full_attention"] * 12}, ConfigError, "attention_chunk_size"),
    ({"interleave_moe_layer_step": 0, "moe_layers": None}, ConfigError, "interleave_moe_layer_step"),
    ({"floor_scale": 0}, ConfigError, "floor_scale"),
    ({"hidden_act": "gelu_new"}, UnsupportedError, "hidden_act"),
    ({"num_experts_per_tok": 17}, ConfigError, "num_experts_per_tok"),
    ({"partial_rotary_factor": 0.5}, UnsupportedError, "partial_rotary_factor"),
    ({"sliding_window": 4096}, ConfigError, "sliding_window"),  # read by transformers' masks: refused
]


@pytest.mark.parametrize("changes, error, key", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_configs_fail_in_one_line_naming_the_key(changes, error, key):
    with pytest.raises(error) as info:
        validate(lower(defaults(**changes)))
    message = str(info.value)
    assert key in message and "\n" not in message, message


def test_validate_refuses_what_the_code_cannot_print():
    arch = validate(lower(defaults()))
    layers = list(arch.layers)
    nope = layers[3]
    layers[3] = nope.model_copy(update={"mixer": nope.mixer.model_copy(update={"qk_norm": "l2",
                                                                                "qk_norm_spec": layers[0].norm})})
    with pytest.raises(UnsupportedError, match="L2 QK-norm"):
        validate(arch.model_copy(update={"layers": tuple(layers)}))
    moe = arch.layers[0].ffn.model_copy(update={"storage": "stacked"})
    with pytest.raises(UnsupportedError, match="input"):
        validate(arch.model_copy(update={"layers": tuple(lay.model_copy(update={"ffn": moe}) for lay in arch.layers)}))


def test_scout_rope_tables_match_transformers_far_out(tmp_path):
    """The full-size Scout table (llama3, equal low / high factors) against Llama4TextRotaryEmbedding, at
    positions far beyond what the tiny parity test reaches; cos/sin in the interleaved (complex) layout."""
    from transformers.models.llama4.modeling_llama4 import Llama4TextRotaryEmbedding

    module, _ = compiled(scout(), tmp_path, "scout_rope")
    c = module.Config()
    base = module.rope_inv_freq(c.rope_theta, c.head_dim)
    ours = module.llama3_inv_freq(base, c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor,
                                  c.rope_original_context)
    rotary = Llama4TextRotaryEmbedding(transformers.AutoConfig.for_model(**scout()))
    torch.testing.assert_close(ours, rotary.inv_freq, rtol=0, atol=0)
    assert torch.equal(ours[:8], base[:8]) and torch.equal(ours[-1], base[-1] / 16)  # a step, no smoothed band
    positions = torch.tensor([[0, 1, 8191, 8192, 100_000, 1_000_000]])
    freqs_cis = rotary(torch.zeros(1), positions)  # (1, positions, head_dim / 2), complex
    cos, sin = module.rope_cos_sin(ours, positions, torch.float32)
    torch.testing.assert_close(cos[..., ::2], freqs_cis.real, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin[..., 1::2], freqs_cis.imag, rtol=0, atol=1e-6)


PLANTED = {  # (before, after) replacements in the generated model.py
    "no chunk limit": [("allowed = allowed & (j // chunk == i // chunk)", "allowed = allowed")],
    "no temperature tuning": [("q = (q * q_scale).to(q.dtype)", "q = q")],
    "no L2 QK-norm": [("q, k = l2_norm(q, self.norm_eps), l2_norm(k, self.norm_eps)", "q, k = q, k")],
    "softmax over the kept logits": [("torch.sigmoid(top_logits.float())", "torch.softmax(top_logits.float(), -1)")],
    "gate and up swapped": [("gate, up = gate_up.chunk(2, dim=-1)", "up, gate = gate_up.chunk(2, dim=-1)")],
    "routing weight on the output": [
        ("routed = (x[token] * weights[token, slot, None]).to(x.dtype)", "routed = x[token]"),
        ("self.experts(routed, e).to(out.dtype)", "(self.experts(routed, e) * weights[token, slot, None]).to(out.dtype)"),
    ],
}


@pytest.fixture(scope="module")
def defaults_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("planted")
    compile_and_verify(defaults(), directory, "defaults")
    return directory / "defaults"


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_parity_catches_planted_bugs(bug, defaults_dir, tmp_path):
    target = tmp_path / "bugged"
    shutil.copytree(defaults_dir, target)
    source = (target / "model.py").read_text()
    for before, after in PLANTED[bug]:
        assert source.count(before) == 1, f"planted-bug anchor vanished: {before!r}"
        source = source.replace(before, after)
    (target / "model.py").write_text(source)
    result = verify(target)
    assert not result["passed"] and result["max_abs_diff"] > 1e-3, result
    print(f"{bug}: max|dlogit| {result['max_abs_diff']:.3g}")


def test_card_counts_the_chunk_ring():
    from llmgen.compiler.insight.card import Model, card

    data = card(Model("llama4", "llama4", validate(lower(defaults()))))
    assert data["pattern"]["strip"] == "CCCf×12"
    per_token = data["kv_cache"]["bytes_per_token_bf16"]  # 48 layers x 8 kv heads x 2 x 128 x 2 bytes
    assert per_token == 48 * 8 * 2 * 128 * 2
    # at 128k: the 12 NoPE layers hold every token, the 36 chunked layers 8192 each
    assert data["kv_cache"]["effective_bytes_bf16"]["128k"] == per_token // 48 * (12 * 131072 + 36 * 8192)
