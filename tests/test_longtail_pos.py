"""Long-tail families that needed position schemes or small new mechanisms (compiler/passes/lowering/fam_pos_*.py):
tiny-replica parity, full size on the meta device, and for each new mechanism a planted bug that must
break parity and cached decoding that must equal the full forward.

Configs: tests/fixtures/longtail/<name>.json, provenance in tests/fixtures/longtail/SOURCES.md. Each case is
compiled and verified once per module (``verified``); the other tests reuse its generated files.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import import_path, write_py
from test_parity_variants import compile_and_verify

from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "longtail"


def fixture(name: str, **keys) -> dict:
    raw = json.loads((FIXTURES / f"{name}.json").read_text())
    raw.update(keys)
    return raw


# model_type -> its published (or default) config: full size on the meta device.
FULL_SIZE = ["apertus", "biogpt", "bitnet", "bloom", "codegen", "exaone", "falcon", "gpt_neo", "internlm3", "iquestcoder",
             "ministral3", "mpt", "nanochat", "olmo", "opt", "xglm"]
# name -> config for tiny-replica parity: the fixture, or the fixture with the switches a variant exercises.
CASES = {
    "internlm3": fixture("internlm3"),
    # OLMo-7B-0424 clips at 8; at the replica's scale (projections ~0.5) a clip of 0.3 bites on most entries
    "olmo-clip-bias": fixture("olmo", clip_qkv=0.3, attention_bias=True, tie_word_embeddings=False),
    "ministral3-sliding": fixture("ministral3", sliding_window=4096),
    "nanochat": fixture("nanochat"),
    "bitnet": fixture("bitnet"),
    "apertus": fixture("apertus"),
    "gpt_neo": fixture("gpt_neo"),
    "exaone": fixture("exaone"),
    "opt": fixture("opt"),
    "bloom": fixture("bloom"),
    "iquestcoder": fixture("iquestcoder"),
    "biogpt": fixture("biogpt"),
    "xglm": fixture("xglm"),
    "falcon": fixture("falcon"),  # the old layout: multi-query [q; k; v], one norm for parallel attention and MLP
    # the new layout at Falcon-40B's sizes: grouped [q..; k; v], ln_attn and ln_mlp
    "falcon-new-decoder": fixture("falcon", new_decoder_architecture=True, hidden_size=8192, num_attention_heads=128,
                                  num_kv_heads=8, num_hidden_layers=60, ffn_hidden_size=None),
    "falcon-new-decoder-one-norm-bias": fixture("falcon", new_decoder_architecture=True, num_attention_heads=32,
                                                hidden_size=4096, num_kv_heads=8, num_ln_in_parallel_attn=1, bias=True),
    "codegen": fixture("codegen"),
    # Falcon-RW-1B's layout without its ALiBi: per-head [q_h; k_h; v_h], sequential blocks, biases
    "falcon-per-head-sequential-bias": fixture("falcon", multi_query=False, parallel_attn=False, bias=True,
                                               hidden_size=2048, num_attention_heads=32, num_kv_heads=None,
                                               num_hidden_layers=24, vocab_size=50304, ffn_hidden_size=None),
    "mpt-clip-scale": fixture("mpt", attn_config={**fixture("mpt")["attn_config"], "clip_qkv": 0.3, "softmax_scale": 0.2}),
}
WINDOWED = ["ministral3-sliding", "gpt_neo"]
# new mechanism -> (case, text in the generated model.py, its planted-bug replacement)
PLANTED = {
    "layernorm without a learned scale": (
        "olmo-clip-bias", "return F.layer_norm(x.float(), (self.dim,), eps=self.eps).to(x.dtype)",
        "return F.layer_norm(x.float(), (self.dim,), eps=self.eps).to(x.dtype) * 1.01"),
    "clip_qkv": ("olmo-clip-bias", "t.clamp(-self.clip_qkv, self.clip_qkv)", "t"),
    # Ministral 3's temperature: the position offset Llama 4 has put back
    "temperature without a position offset": (
        "ministral3-sliding", "torch.floor(positions[0].float() / c.floor_scale)",
        "torch.floor((positions[0].float() + 1.0) / c.floor_scale)"),
    "rmsnorm without a learned scale": (
        "nanochat", "return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)",
        "return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * 1.01"),
    "embedding norm": ("nanochat", "        x = self.embed_norm(x)\n", ""),
    "RoPE turned by minus the angle": (
        "nanochat", "(x[..., half:], -x[..., :half]), dim=-1", "(-x[..., half:], x[..., :half]), dim=-1"),
    "norm before o_proj": ("bitnet", "out = self.attn_sub_norm(out)", "out = out"),
    "norm before down_proj": ("bitnet", "return self.down_proj(self.ffn_sub_norm(h))", "return self.down_proj(h)"),
    "xIELU": ("apertus", "(torch.expm1(torch.min(x, self.eps)) - x) * alpha_n", "(torch.expm1(torch.min(x, self.eps)) - x)"),
    "queries scaled before q.k": ("opt", "q = q * self.scale", "q = q * self.scale * 1.1"),
    "learned positions offset by 2": ("opt", "self.embed_positions(positions + c.position_offset)",
                                      "self.embed_positions(positions + 1)"),
    "ALiBi (geometric slopes, from the first key)": ("bloom", "scores = scores + alibi", "scores = scores"),
    "ALiBi slopes beyond the largest power of two": ("bloom", "torch.arange(1, 1 + 2 * remaining, 2", "torch.arange(5, 5 + 2 * remaining, 2"),
    "BLOOM's written-out tanh GELU": ("bloom", "x * 0.5 * (1.0 + torch.tanh(0.79788456", "x * 0.4 * (1.0 + torch.tanh(0.79788456"),
    "ALiBi (max-bias slopes, from the last key)": ("mpt-clip-scale", "torch.cat([slopes[1::2], slopes[::2]])", "torch.cat([slopes[::2], slopes[1::2]])"),
    "sinusoidal positions": ("xglm", "torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)",
                             "torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)"),
    "q/k/v grouped per key/value head": ("falcon-new-decoder", "qkv[:, :, :, -2].flatten(2),\n            qkv[:, :, :, -1]",
                                         "qkv[:, :, :, -1].flatten(2),\n            qkv[:, :, :, -2]"),
    "q/v/k blocks": ("codegen", "q, v, k = (", "q, k, v = ("),
}
CACHED = ["olmo-clip-bias", "ministral3-sliding", "nanochat", "bitnet", "gpt_neo", "opt", "bloom", "mpt-clip-scale", "xglm", "falcon-new-decoder", "codegen"]


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """case name -> (directory of its generated files, verify's result), compiled on first use."""
    done: dict[str, tuple[Path, dict]] = {}
    root = tmp_path_factory.mktemp("longtail_pos")

    def get(name: str) -> tuple[Path, dict]:
        if name not in done:
            result = compile_and_verify(copy.deepcopy(CASES[name]), root, name)
            done[name] = (root / name, result)
        return done[name]

    return get


@pytest.mark.parametrize("name", sorted(CASES))
def test_parity(name, verified):
    _, result = verified(name)
    print(f"{name}: max|dlogit| = {result['max_abs_diff']:.3g} (logits up to {result['max_abs_logit']:.3g})")
    assert result["passed"], result
    assert result["max_abs_diff"] <= 1e-5 * max(1.0, result["max_abs_logit"]) and result["max_abs_logit"] > 0.1, result


@pytest.mark.parametrize("name", WINDOWED)
def test_window_boundaries(name, verified):
    """window - 1, window, window + 1 and 2 x window tokens, through the generated test itself."""
    from conftest import window_boundary_runs

    directory, _ = verified(name)
    module = import_path(directory / "test_parity.py", f"longtail_pos_window_{name.replace('-', '_')}")
    runs = window_boundary_runs(module)
    assert [n for n, _ in runs] == [7, 8, 9, 16] and all(diff <= 1e-5 for _, diff in runs), runs


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_layout_matches_transformers(name, tmp_path):
    """The config at full size on the meta device: parameter count and every on-disk key."""
    import transformers
    from test_full_size import on_disk_layout

    from llmgen.compiler.passes.weight_map import parameter_count

    raw = fixture(name)
    result = compile_config(LoadedConfig(raw=copy.deepcopy(raw), text=json.dumps(raw), source_id=name, revision="local",
                                         origin="file", checkpoint_dir=None, note=None), slug="m")
    write_py(tmp_path, result.files)
    module = import_path(tmp_path / "model.py", f"longtail_pos_full_{name.replace('-', '_')}")
    with torch.device("meta"):
        ours = module.CausalLM(module.Config())
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) == parameter_count(lower(copy.deepcopy(raw)))
    layout, keys = on_disk_layout(reference), module.checkpoint_keys(module.Config())
    params = {key: tuple(p.shape) for key, p in [*ours.named_buffers(), *ours.named_parameters()]}
    assert set(keys) == set(layout), sorted(set(keys) ^ set(layout))[:10]
    assert all(params[keys[k]] == shape for k, shape in layout.items())


@pytest.mark.parametrize("mechanism", sorted(PLANTED))
def test_planted_bug_is_caught(mechanism, verified):
    """The generated model with the bug planted, against the same file without it, on the same random weights:
    the unplanted file equals transformers (test_parity), so the difference is the planted bug's distance from the
    reference, measured without building the reference again."""
    from test_kv_cache import tiny_model

    name, right, wrong = PLANTED[mechanism]
    directory, _ = verified(name)
    text = (directory / "model.py").read_text()
    assert text.count(right) == 1, right
    tag = f"{name}_{abs(hash(mechanism))}".replace("-", "_")
    bugged_path = directory / f"planted_{tag}.py"  # beside runtime.py and weights.py, which it imports
    bugged_path.write_text(text.replace(right, wrong))
    parity = import_path(directory / "test_parity.py", f"longtail_pos_planted_parity_{tag}")
    ids = torch.randint(0, 200, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        good = tiny_model(import_path(directory / "model.py", f"longtail_pos_planted_good_{tag}"), parity)(ids)
        bad = tiny_model(import_path(bugged_path, f"longtail_pos_planted_bad_{tag}"), parity)(ids)
    diff = (good - bad).abs().max().item()
    print(f"{mechanism}: planted bug gives max|dlogit| = {diff:.3g}")
    assert diff > 1e-3, diff


@pytest.mark.parametrize("name", CACHED)
def test_cached_decoding_equals_the_full_forward(name, verified):
    from test_kv_cache import cached_and_full, tiny_model

    directory, _ = verified(name)
    tag = name.replace("-", "_")
    module = import_path(directory / "model.py", f"longtail_pos_{tag}")
    parity = import_path(directory / "test_parity.py", f"longtail_pos_parity_{tag}")
    model = tiny_model(module, parity)
    cached, full = cached_and_full(model, [5, 1, 1, 9, 4])  # a prefill, single tokens, a chunk
    assert (cached - full).abs().max().item() <= 1e-5
    if hasattr(model, "fast_attention"):  # torch's fused kernel path: equal up to float rounding
        model.fast_attention(True)
        fused, _ = cached_and_full(model, [20])
        assert (fused - full).abs().max().item() <= 1e-5


def test_every_family_here_has_a_case_and_is_shown_in_the_coverage_table():
    """`llmgen list --all` (compiler/insight/coverage.py) names this file as the proof of each family here."""
    from llmgen.compiler.insight.coverage import PROOF
    from llmgen.compiler.passes.lowering import FAMILIES

    mine = {model_type for model_type, proof in PROOF.items() if proof == "tests/test_longtail_pos.py"}
    assert mine == {raw["model_type"] for raw in CASES.values()} == set(FULL_SIZE) and mine <= set(FAMILIES)


@pytest.mark.parametrize("name, keys, words", [
    ("falcon", {"alibi": True}, "'alibi' = true is not supported"),
    ("internlm3", {"qkv_bias": True}, "must agree"),  # transformers refuses the config too  # transformers' eager and SDPA paths disagree
    ("opt", {"do_layer_norm_before": False}, "'do_layer_norm_before'"),
    ("opt", {"word_embed_proj_dim": 512}, "'word_embed_proj_dim'"),
    ("mpt", {"expansion_ratio": 8}, "'expansion_ratio'"),  # transformers' MPT would build 4 x d_model anyway
])
def test_variants_not_compiled_are_refused_by_name(name, keys, words):
    from llmgen.compiler.basics.errors import LlmgenError

    with pytest.raises(LlmgenError, match=words):
        lower(fixture(name, **keys))
