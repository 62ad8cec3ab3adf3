"""Phi-3, StableLM, Cohere, Cohere 2 and Granite: tiny-replica parity, features of the
generated source, refused keys, and planted bugs that the parity test must catch.

Phi-3 uses the real catalog configs (microsoft/phi-4, microsoft/Phi-3.5-mini-instruct). The
other families have no catalog config: tests/fixtures/phi3_cohere/<family>.json are the
config.json files transformers 5.24 writes for ``<Family>Config()`` (its defaults; generated
with ``Config().to_json_string(use_diff=True)``, transformers_version dropped), and the
variants below change a few keys of them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import catalog_config, import_path, window_boundary_runs, write_py
from test_parity_variants import compile_and_verify

from llmgen.compiler.basics.errors import ConfigError, UnsupportedError
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.verification.verify import verify

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "phi3_cohere"


def fixture(family: str, **keys) -> dict:
    raw = json.loads((FIXTURES / f"{family}.json").read_text())
    raw.update(keys)
    return raw


def phi(hub_id: str, **keys) -> dict:
    raw = catalog_config(hub_id)
    raw.update(keys)
    return raw


MUP = dict(embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.0078125, logits_scaling=4.0)
VARIANTS = {
    "phi-4": phi("microsoft/phi-4"),
    "phi-4-sliding": phi("microsoft/phi-4", sliding_window=4096),
    "phi-3.5-longrope": phi("microsoft/Phi-3.5-mini-instruct"),
    # an original context of 8 < the 16-token test sequence: the long factors are the ones in use
    "phi-3.5-longrope-long-factors": phi("microsoft/Phi-3.5-mini-instruct", original_max_position_embeddings=8),
    "phi-4-partial-rotary": phi("microsoft/phi-4", partial_rotary_factor=0.75),
    "stablelm": fixture("stablelm"),
    "stablelm-parallel-gqa-bias": fixture("stablelm", use_parallel_residual=True, use_qkv_bias=True,
                                          num_key_value_heads=8),
    # a LayerNorm module per query head and per key/value head (stored as q_layernorm.norms.{h})
    "stablelm-qk-layernorm-gqa": fixture("stablelm", qk_layernorm=True, num_key_value_heads=8),
    # logit_scale 0.25 rather than the default 0.0625: the replica's logits stay clearly above 0.1
    "cohere": fixture("cohere", logit_scale=0.25),
    "cohere-gqa-bias": fixture("cohere", num_key_value_heads=8, attention_bias=True, logit_scale=0.25),
    "cohere-qk-norm": fixture("cohere", num_key_value_heads=8, use_qk_norm=True, logit_scale=0.25),
    "cohere2": fixture("cohere2", logit_scale=0.25),
    "granite": fixture("granite"),
    "granite-mup-gqa-bias": fixture("granite", num_key_value_heads=8, attention_bias=True, mlp_bias=True, **MUP),
}


def compiled(name: str, tmp_path) -> dict:
    return compile_and_verify(copy.deepcopy(VARIANTS[name]), tmp_path, name)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parity(name, tmp_path):
    result = compiled(name, tmp_path)
    assert result["passed"], result
    assert result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 0.1, result


@pytest.mark.parametrize("name", ["phi-4-sliding", "cohere2"])
def test_window_boundaries(name, tmp_path):
    """window - 1, window, window + 1 and 2 x window tokens, through the generated test itself."""
    compiled(name, tmp_path)
    module = import_path(tmp_path / name / "test_parity.py", f"phi3_cohere_window_{name.replace('-', '_')}")
    assert [n for n, _ in window_boundary_runs(module)] == [7, 8, 9, 16]


@pytest.mark.parametrize("name", [n for n in sorted(VARIANTS) if not n.startswith("phi")])
def test_full_size_layout_matches_transformers(name, tmp_path):
    """The fixture configs at full size on the meta device: parameter count and checkpoint layout."""
    import torch
    import transformers
    from test_full_size import on_disk_layout

    from llmgen.compiler.passes.weight_map import parameter_count

    raw = VARIANTS[name]
    text = json.dumps(raw)
    compiled = compile_config(LoadedConfig(raw=copy.deepcopy(raw), text=text, source_id=name, revision="local",
                                           origin="file", checkpoint_dir=None, note=None), slug="m")
    write_py(tmp_path, compiled.files)
    module = import_path(tmp_path / "model.py", f"phi3_cohere_full_{name.replace('-', '_')}")
    with torch.device("meta"):
        ours = module.CausalLM(module.Config())
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) == parameter_count(lower(raw))
    layout, keys = on_disk_layout(reference), module.checkpoint_keys(module.Config())
    params = {key: tuple(p.shape) for key, p in ours.named_parameters()}
    assert set(keys) == set(layout), sorted(set(keys) ^ set(layout))[:10]
    assert all(params[keys[k]] == shape for k, shape in layout.items())


def source(name: str, tmp_path) -> str:
    compiled(name, tmp_path)
    return (tmp_path / name / "model.py").read_text()


def test_phi3_source_has_fused_projections_and_no_layernorm(tmp_path):
    text = source("phi-4", tmp_path)
    assert "self.qkv_proj = nn.Linear" in text and "self.gate_up_proj = nn.Linear" in text
    assert "q_proj" not in text and "self.gate_proj" not in text
    assert "class RMSNorm" in text and "LayerNorm" not in text and "sliding_window" not in text
    assert "sliding_window: int = 4096" in source("phi-4-sliding", tmp_path)


def test_granite_source_has_its_multipliers(tmp_path):
    text = source("granite-mup-gqa-bias", tmp_path)
    assert "x = x * c.embed_scale" in text and "torch.tensor(c.embed_scale" not in text
    assert text.count("* self.residual_scale") == 2 and "logits / self.config.logits_scaling" in text
    assert "attention_scale: float = 0.0078125" in text
    plain = source("granite", tmp_path)  # all multipliers 1: none of that code
    assert "embed_scale" not in plain and "residual_scale" not in plain and "logits_scaling" not in plain


def test_stablelm_source(tmp_path):
    text = source("stablelm-parallel-gqa-bias", tmp_path)
    assert "nn.LayerNorm(" in text and "RMSNorm" not in text and "post_attention_layernorm" not in text
    assert "one norm feeds both branches" in text and "rope_rotary_dim: int = 20" in text  # 0.25 x 80


def test_stablelm_per_head_norm_modules(tmp_path):
    """qk_layernorm: one norm module per head, named as in the checkpoint, and "{h}" keys expanded per head."""
    text = source("stablelm-qk-layernorm-gqa", tmp_path)
    assert "class HeadNorms" in text and "self.q_layernorm = HeadNorms(self.num_heads" in text
    assert "self.k_layernorm = HeadNorms(self.num_kv_heads" in text and "HeadNorms" not in source("stablelm", tmp_path)
    module = import_path(tmp_path / "stablelm-qk-layernorm-gqa" / "model.py", "stablelm_head_norms")
    config = module.Config()
    keys = module.checkpoint_keys(config)
    q_norms = [k for k in keys if ".q_layernorm.norms." in k]
    k_norms = [k for k in keys if ".k_layernorm.norms." in k]
    assert len(q_norms) == config.num_hidden_layers * config.num_attention_heads
    assert len(k_norms) == config.num_hidden_layers * config.num_key_value_heads
    assert "model.layers.0.self_attn.k_layernorm.norms.7.weight" in keys
    assert "model.layers.0.self_attn.k_layernorm.norms.8.weight" not in keys


def test_cohere_sources(tmp_path):
    text = source("cohere", tmp_path)
    assert "class LayerNorm" in text and "self.bias" not in text and "RMSNorm" not in text
    assert "logits * self.config.logit_scale" in text and "one norm feeds both branches" in text
    assert "x[..., 1::2]" in text and "x[..., half:]" not in text  # adjacent channel pairs only
    text2 = source("cohere2", tmp_path)
    assert "if cos is not None" in text2 and "None, None" in text2  # full layers skip RoPE (NoPE)


# --- lowering: what each family reads, refuses and derives ---------------------------------------

def test_phi3_window_longer_than_the_context_is_full_attention():
    arch = lower(phi("microsoft/Phi-3.5-mini-instruct"))
    assert arch.layers[0].mixer.span == "full"  # 262144 > 131072: the mask never bites
    assert arch.rope[0].type == "longrope" and arch.rope[0].original_max_position_embeddings == 4096
    sliding = lower(phi("microsoft/phi-4", sliding_window=2047))
    assert {layer.mixer.window for layer in sliding.layers} == {2047}


def test_phi3_legacy_su_scaling_is_longrope():
    raw = phi("microsoft/Phi-3.5-mini-instruct")
    raw["rope_scaling"] = {**raw["rope_scaling"], "type": "su"}
    assert lower(raw).rope[0].type == "longrope"


def test_granite_multipliers_in_the_ir():
    arch = lower(fixture("granite", **MUP))
    assert (arch.embedding.scale, arch.embedding.scale_in_dtype) == (12.0, False)
    assert {layer.residual_scale for layer in arch.layers} == {0.22}
    assert arch.layers[0].mixer.scale == 0.0078125 and arch.head.divisor == 4.0


def test_cohere_export_keys_at_the_values_transformers_implements():
    keys = dict(use_parallel_block=True, use_gated_activation=True, position_embedding_type="rope_gptj",
                rotary_pct=1.0, order_of_interleaved_layers="local_attn_first", use_embedding_sharing=True,
                use_parallel_embedding=True, model_max_length=131072)
    assert lower(fixture("cohere2", **keys)) == lower(fixture("cohere2"))


def test_cohere2_full_layers_have_no_rope():
    arch = lower(fixture("cohere2"))
    assert [layer.mixer.rope is None for layer in arch.layers[:4]] == [False, False, False, True]
    assert {table.layout for table in arch.rope} == {"interleaved"} and arch.head.multiplier == 0.0625


@pytest.mark.parametrize(
    "raw, error, key",
    [
        (fixture("stablelm", head_dim=64), UnsupportedError, "head_dim"),
        (fixture("cohere2", head_dim=64), UnsupportedError, "head_dim"),
        (fixture("cohere2", use_parallel_block=False), UnsupportedError, "use_parallel_block"),
        (fixture("cohere", position_embedding_type="rope"), UnsupportedError, "position_embedding_type"),
        (fixture("cohere", use_embedding_sharing=False), UnsupportedError, "use_embedding_sharing"),
        (fixture("cohere2", sliding_window=None), ConfigError, "sliding_window"),
        (fixture("granite", logits_scaling=0), ConfigError, "logits_scaling"),
        (fixture("granite", attention_chunk_size=4096), ConfigError, "attention_chunk_size"),  # read by transformers: refused (a key it never reads is noted: tests/test_config_keys.py)
        (phi("microsoft/phi-4", rope_scaling={"rope_type": "linear", "factor": 2.0}), UnsupportedError, "linear"),
        (phi("microsoft/phi-4", rope_scaling={"rope_type": "dynamic", "factor": 2.0}), UnsupportedError, "dynamic"),
    ],
)
def test_refused_keys(raw, error, key):
    with pytest.raises(error, match=key):
        lower(raw)


# --- planted bugs: the parity test must fail by more than 1e-3 ------------------------------------

PLANTED = {
    "phi3: gate and up swapped": ("phi-4", "gate, up = self.gate_up_proj(x)", "up, gate = self.gate_up_proj(x)"),
    "phi3: k and v swapped": ("phi-4", "q, k, v = self.qkv_proj(x)", "q, v, k = self.qkv_proj(x)"),
    "granite: no residual multiplier": ("granite-mup-gqa-bias", " * self.residual_scale\n", "\n"),
    "granite: logits not divided": ("granite-mup-gqa-bias", "logits = logits / self.config.logits_scaling", "pass"),
    "phi3: longrope attention factor dropped": ("phi-3.5-longrope", "            c.rope_attention_factor,\n",
                                                "            1.0,\n"),
    "stablelm: whole head rotated": ("stablelm", "rope_inv_freq(c.rope_theta, c.rope_rotary_dim)",
                                     "rope_inv_freq(c.rope_theta, c.head_dim)"),
    "cohere: rotate-half pairs instead of adjacent pairs": (
        "cohere", "rotated = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)",
        "rotated = torch.cat((-x[..., x.shape[-1] // 2 :], x[..., : x.shape[-1] // 2]), dim=-1)"),
    "cohere: query QK-norm dropped": ("cohere-qk-norm", "q = self.q_norm(q.view(batch, seq, self.num_heads, self.head_dim)).flatten(2)",
                                      "pass"),
    "cohere: no logit scale": ("cohere-gqa-bias", "logits = logits * self.config.logit_scale", "pass"),
    "cohere: LayerNorm not mean-centred": ("cohere", "mean = h.mean(-1, keepdim=True)", "mean = 0.0"),
    "cohere2: RoPE on the NoPE layers": ("cohere2", "None, None", "global_cos, global_sin"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_parity_catches_planted_bugs(bug, tmp_path):
    name, before, after = PLANTED[bug]
    compiled(name, tmp_path)
    model = tmp_path / name / "model.py"
    text = model.read_text()
    assert text.count(before) >= 1, f"planted-bug anchor vanished: {before!r}"
    model.write_text(text.replace(before, after))
    result = verify(tmp_path / name)
    assert not result["passed"] and result["max_abs_diff"] > 1e-3, result
