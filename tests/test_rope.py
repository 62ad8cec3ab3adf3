"""RoPE tables of the generated files against transformers' own, at full size and at
positions far beyond what a tiny parity test reaches (where Llama 3 scaling matters)."""

from __future__ import annotations

import pytest
import torch
from conftest import GENERATED, catalog_config, import_path

transformers = pytest.importorskip("transformers")
from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding  # noqa: E402

POSITIONS = torch.tensor([[0, 1, 511, 512, 8191, 8192, 32767, 100_000, 131_071]])


def generated_tables(module) -> dict[str, torch.Tensor]:
    """The inverse frequencies model.py computes for each of its tables, from its Config."""
    c = module.Config()
    if hasattr(c, "rope_factor") and hasattr(c, "rope_low_freq_factor"):
        base = module.rope_inv_freq(c.rope_theta, c.head_dim)
        tables = {"full_attention": module.llama3_inv_freq(
            base, c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor, c.rope_original_context)}
    else:
        tables = {"full_attention": module.rope_inv_freq(c.rope_theta, c.head_dim)}
    if hasattr(c, "local_rope_theta"):
        tables["sliding_attention"] = module.rope_inv_freq(c.local_rope_theta, c.head_dim)
    return tables


def reference_tables(hub_id: str) -> dict[str, torch.nn.Module]:
    config = transformers.AutoConfig.for_model(**catalog_config(hub_id))
    if config.model_type == "gemma3_text":
        return {t: (Gemma3RotaryEmbedding(config), t) for t in ("full_attention", "sliding_attention")}
    cls = Qwen3RotaryEmbedding if config.model_type == "qwen3" else LlamaRotaryEmbedding
    return {"full_attention": (cls(config), None)}


CASES = {
    "gemma-3-1b-it": "google/gemma-3-1b-it",
    "Llama-3.2-1B": "meta-llama/Llama-3.2-1B",
    "Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "Qwen3-0.6B": "Qwen/Qwen3-0.6B",
    "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rope_tables_match_transformers(name):
    module = import_path(GENERATED / name / "model.py", f"rope_check_{name.replace('-', '_').replace('.', '_')}")
    ours = generated_tables(module)
    refs = reference_tables(CASES[name])
    assert set(ours) == set(refs)
    x = torch.zeros(1, dtype=torch.float32)
    for layer_type, (rotary, arg) in refs.items():
        ref_freq = getattr(rotary, f"{arg}_inv_freq") if arg else rotary.inv_freq
        torch.testing.assert_close(ours[layer_type], ref_freq, rtol=0, atol=0)
        ref_cos, ref_sin = rotary(x, POSITIONS, arg) if arg else rotary(x, POSITIONS)
        cos, sin = module.rope_cos_sin(ours[layer_type], POSITIONS, torch.float32)
        torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-6)
        torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-6)


def test_llama3_scaling_really_changes_low_frequencies():
    module = import_path(GENERATED / "Llama-3.1-8B" / "model.py", "rope_check_llama3_effect")
    c = module.Config()
    base = module.rope_inv_freq(c.rope_theta, c.head_dim)
    scaled = module.llama3_inv_freq(base, c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor,
                                    c.rope_original_context)
    assert torch.equal(scaled[:8], base[:8])  # fast rotations untouched
    torch.testing.assert_close(scaled[-1], base[-1] / c.rope_factor)  # slowest divided by factor


# ---- every RoPE type, partial rotary and the interleaved layout, against transformers ------------
#
# Each case lowers a rope dict with llmgen's own lowering, renders the model file around it,
# runs the exact line DecoderModel.forward prints (templates/model/rope_call.j2) and compares
# inverse frequencies (exactly) and cos/sin (1e-6) with transformers' rotary module, a fresh one
# per sequence length, at positions far beyond the original context.

import math  # noqa: E402

from llmgen.compiler.passes.format import format_source  # noqa: E402
from llmgen.compiler.passes.lowering import lower  # noqa: E402
from llmgen.compiler.passes.lowering.rope import rope_table  # noqa: E402
from llmgen.compiler.passes.render import Provenance, environment, identifier, model_context, render  # noqa: E402
from llmgen.compiler.passes.render_files import render_model_files
from llmgen.compiler.passes.rope_fields import attention_scaling, rope_context  # noqa: E402
from llmgen.compiler.passes.validate import validate  # noqa: E402
from llmgen.compiler.passes.weight_map import weight_map  # noqa: E402

# Sequence lengths (max position + 1) below, at and past each original context, up to 131072.
LENGTHS = (16, 4096, 4097, 8192, 8193, 32768, 32769, 131072)
TYPE_CASES = {
    # name: (family of the reference, head_dim, rope dict, extra transformers config keys)
    "default": ("llama", 128, {"rope_type": "default", "rope_theta": 500000.0}, {}),
    "linear": ("llama", 128, {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}, {}),
    "dynamic": ("llama", 128, {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0},
                {"max_position_embeddings": 8192}),
    "dynamic-factor-1.5": ("llama", 64, {"rope_type": "dynamic", "factor": 1.5, "rope_theta": 500000.0},
                           {"max_position_embeddings": 4096}),
    "llama3": ("llama", 128, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192, "rope_theta": 500000.0}, {}),
    # gpt-oss-20b: no truncation of the ramp
    "yarn-gpt-oss": ("llama", 64, {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                   "original_max_position_embeddings": 4096, "truncate": False,
                                   "rope_theta": 150000.0}, {}),
    # Olmo 3.1: attention factor given
    "yarn-olmo3": ("llama", 128, {"rope_type": "yarn", "factor": 8.0, "beta_fast": 32, "beta_slow": 1,
                                  "attention_factor": 1.2079441541679836, "original_max_position_embeddings": 8192,
                                  "rope_theta": 500000.0}, {"max_position_embeddings": 65536}),
    # DeepSeek-V3's rope dict (mscale = mscale_all_dim: attention factor 1)
    "yarn-deepseek-mscale": ("llama", 64, {"rope_type": "yarn", "factor": 40.0, "beta_fast": 32, "beta_slow": 1,
                                           "mscale": 1.0, "mscale_all_dim": 1.0,
                                           "original_max_position_embeddings": 4096, "rope_theta": 10000.0},
                             {"max_position_embeddings": 163840}),
    "yarn-mscale-ratio": ("llama", 128, {"rope_type": "yarn", "factor": 16.0, "mscale": 1.0, "mscale_all_dim": 0.707,
                                         "original_max_position_embeddings": 8192, "rope_theta": 10000.0}, {}),
    "yarn-defaults": ("llama", 128, {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1000000.0},
                      {"max_position_embeddings": 32768}),
    "longrope-phi3.5": ("phi3", 96, None, {}),
    "longrope-explicit": ("llama", 64, {"rope_type": "longrope", "short_factor": [1.0 + i / 64 for i in range(32)],
                                        "long_factor": [1.0 + i for i in range(32)], "factor": 8.0,
                                        "original_max_position_embeddings": 4096, "rope_theta": 10000.0}, {}),
}


def _tiny_llama(head_dim: int, max_pos: int) -> dict:
    raw = catalog_config("meta-llama/Llama-3.2-1B")
    raw.update(head_dim=head_dim, rope_scaling=None, rope_theta=10000.0, max_position_embeddings=max_pos)
    return raw


def rope_module(tables, head_dim: int, max_pos: int, tmp_path, tag: str):
    """model.py rendered for a Llama skeleton whose RoPE table is replaced by ``tables``."""
    arch = validate(lower(_tiny_llama(head_dim, max_pos)))
    arch = validate(arch.model_copy(update={"rope": tuple(tables)}))
    prov = Provenance("test", "local", "test")
    directory = tmp_path / tag
    directory.mkdir(exist_ok=True)
    for file, text in render_model_files(model_context(arch, weight_map(arch), prov)).items():
        (directory / file).write_text(format_source(text, name=file))
    return import_path(directory / "model.py", f"rope_types_{tag.replace('-', '_').replace('.', '_')}"), arch


def generated_rope(module, arch, positions: torch.Tensor, dtype=torch.float32):
    """Run the generated forward's own RoPE lines: {table: (inv_freq, cos, sin)}."""
    macros = environment().get_template("model/rope_call.j2").module
    out = {}
    for t in rope_context(arch)["rope_tables"]:
        scope = {**vars(module), "c": module.Config(), "positions": positions, "x": torch.zeros(1, dtype=dtype)}
        exec(f"inv_freq = {macros.inv_freq(t)}\n{macros.rope_tables_code(t)}", scope)
        out[t["name"]] = (scope["inv_freq"], scope[f"{t['name']}_cos"], scope[f"{t['name']}_sin"])
    return out


def reference_case(name: str):
    """(transformers config, rotary class, llmgen Rope table) of a case."""
    from transformers import LlamaConfig, Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    family, head_dim, params, extra = TYPE_CASES[name]
    if family == "phi3":
        raw = catalog_config("microsoft/Phi-3.5-mini-instruct")
        config = Phi3Config(**raw)
        table = rope_table("global", raw["rope_scaling"], theta=raw["rope_theta"], head_dim=head_dim, partial=1.0,
                           where="test", max_position_embeddings=raw["max_position_embeddings"],
                           original_max_position_embeddings=raw["original_max_position_embeddings"])
        return config, Phi3RotaryEmbedding, table
    max_pos = extra.get("max_position_embeddings", 131072)
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                         max_position_embeddings=max_pos, rope_parameters=dict(params))
    lowered = {k: v for k, v in params.items() if k != "rope_theta"}
    table = rope_table("global", lowered, theta=params["rope_theta"], head_dim=head_dim, partial=1.0, where="test",
                       max_position_embeddings=max_pos)
    return config, LlamaRotaryEmbedding, table


def sparse_positions(length: int) -> torch.Tensor:
    """A few positions whose maximum is length - 1 (the table depends on max position + 1)."""
    picks = {0, 1, 2, 511, 4095, 4096, 8191, 8192, 32767, 65535, 100_000, length - 2, length - 1}
    return torch.tensor([sorted(p for p in picks if 0 <= p < length)])


@pytest.mark.parametrize("name", sorted(TYPE_CASES))
def test_rope_type_matches_transformers(name, tmp_path):
    config, rotary_cls, table = reference_case(name)
    head_dim = TYPE_CASES[name][1]
    module, arch = rope_module([table], head_dim, config.max_position_embeddings, tmp_path, name)
    x = torch.zeros(1, dtype=torch.float32)
    for length in LENGTHS:
        positions = sparse_positions(length)
        rotary = rotary_cls(config)  # fresh: transformers caches the longest table seen
        ref_cos, ref_sin = rotary(x, positions)
        inv_freq, cos, sin = generated_rope(module, arch, positions)["global"]
        torch.testing.assert_close(inv_freq.to(rotary.inv_freq.device), rotary.inv_freq, rtol=0, atol=0,
                                   msg=lambda m: f"inv_freq at length {length}: {m}")
        torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-6, msg=lambda m: f"cos at length {length}: {m}")
        torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-6, msg=lambda m: f"sin at length {length}: {m}")
        assert rotary.attention_scaling == attention_scaling(table, config.max_position_embeddings)


def test_attention_factor_defaults():
    """Each default transformers applies: lowering fills the table, rope_fields the attention factor."""
    def table(params, max_pos=131072, **kw):
        made = rope_table("global", params, theta=10000.0, head_dim=64, partial=1.0, where="t",
                          max_position_embeddings=max_pos, **kw)
        return made, attention_scaling(made, max_pos)

    yarn, scale = table({"rope_type": "yarn", "factor": 16.0})
    assert scale == 0.1 * math.log(16.0) + 1.0
    assert (yarn.beta_fast, yarn.beta_slow, yarn.truncate, yarn.original_max_position_embeddings) == (
        32.0, 1.0, True, 131072)
    _, ratio = table({"rope_type": "yarn", "factor": 16.0, "mscale": 1.0, "mscale_all_dim": 0.5})
    assert ratio == (0.1 * math.log(16) + 1) / (0.05 * math.log(16) + 1)
    _, only_mscale = table({"rope_type": "yarn", "factor": 16.0, "mscale": 0.5})  # ignored without mscale_all_dim
    assert only_mscale == scale
    _, given = table({"rope_type": "yarn", "factor": 16.0, "attention_factor": 0.75})
    assert given == 0.75
    short = [1.0] * 32
    _, longrope = table({"rope_type": "longrope", "short_factor": short, "long_factor": short,
                         "original_max_position_embeddings": 4096})
    assert longrope == math.sqrt(1 + math.log(131072 / 4096) / math.log(4096))
    _, factor_one = table({"rope_type": "longrope", "short_factor": short, "long_factor": short, "factor": 1.0,
                           "original_max_position_embeddings": 4096})
    assert factor_one == 1.0
    phi3, _ = table({"rope_type": "longrope", "short_factor": short, "long_factor": short,
                     "original_max_position_embeddings": 2048}, original_max_position_embeddings=4096)
    assert phi3.original_max_position_embeddings == 4096  # the config's top-level value wins (Phi-3)
    assert table({"rope_type": "linear", "factor": 2.0})[1] == 1.0


@pytest.mark.parametrize("params, message", [
    ({"rope_type": "yarn", "factor": 4.0, "truncate": "no"}, "'truncate' must be true or false"),
    ({"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4096}, "ambiguous"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 32}, "list of 32"),
    ({"rope_type": "yarn"}, "needs key 'factor'"),
])
def test_rope_refusals(params, message):
    from llmgen.compiler.basics.errors import LlmgenError

    with pytest.raises(LlmgenError, match=message):
        rope_table("global", params, theta=10000.0, head_dim=64, partial=1.0, where="t", max_position_embeddings=8192)


def _layout_case(name: str):
    """(transformers config, rotary class, apply_rotary_pos_emb, llmgen table, head_dim, cos re-layout)."""
    import transformers.models.cohere.modeling_cohere as cohere
    import transformers.models.glm.modeling_glm as glm
    import transformers.models.gpt_neox.modeling_gpt_neox as neox
    import transformers.models.phi.modeling_phi as phi

    def table(head_dim, partial, theta=10000.0, layout="rotate_half", params=None):
        made = rope_table("global", params or {}, theta=theta, head_dim=head_dim, partial=partial, where="t",
                          max_position_embeddings=2048)
        return made.model_copy(update={"layout": layout})  # the family (Cohere, GLM) sets the layout

    same = lambda cos: cos  # noqa: E731

    def phi_apply(q, k, cos, sin):  # PhiAttention splits off the rotary channels itself
        n = cos.shape[-1]
        q_rot, k_rot = phi.apply_rotary_pos_emb(q[..., :n], k[..., :n], cos, sin)
        return torch.cat((q_rot, q[..., n:]), dim=-1), torch.cat((k_rot, k[..., n:]), dim=-1)

    if name == "partial-phi-2":
        raw = catalog_config("microsoft/phi-2")
        return transformers.PhiConfig(**raw), phi.PhiRotaryEmbedding, phi_apply, table(80, 0.4), 80, same
    if name == "partial-gpt-neox":
        config = transformers.GPTNeoXConfig(hidden_size=256, num_attention_heads=4, rotary_pct=0.25,
                                            rotary_emb_base=10000)
        return config, neox.GPTNeoXRotaryEmbedding, neox.apply_rotary_pos_emb, table(64, 0.25), 64, same
    if name == "interleaved-cohere":
        config = transformers.CohereConfig(hidden_size=256, num_attention_heads=4, rope_theta=10000.0)
        return (config, cohere.CohereRotaryEmbedding, cohere.apply_rotary_pos_emb,
                table(64, 1.0, layout="interleaved"), 64, same)
    if name == "partial-interleaved-glm":  # GLM builds cat-layout cos/sin and interleaves them when applying
        config = transformers.GlmConfig(hidden_size=512, num_attention_heads=4, head_dim=128)
        return (config, glm.GlmRotaryEmbedding, glm.apply_rotary_pos_emb, table(128, 0.5, layout="interleaved"),
                128, lambda cos: cos[..., : cos.shape[-1] // 2].repeat_interleave(2, dim=-1))
    if name == "partial-interleaved-yarn":  # every type composes with both: YaRN on a GLM-shaped head
        params = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256}
        config = transformers.GlmConfig(hidden_size=512, num_attention_heads=4, head_dim=128,
                                        max_position_embeddings=2048, rope_parameters={**params, "rope_theta": 1e4})
        return (config, glm.GlmRotaryEmbedding, glm.apply_rotary_pos_emb,
                table(128, 0.5, layout="interleaved", params=params), 128,
                lambda cos: cos[..., : cos.shape[-1] // 2].repeat_interleave(2, dim=-1))
    raise KeyError(name)


LAYOUT_CASES = ("partial-phi-2", "partial-gpt-neox", "interleaved-cohere", "partial-interleaved-glm",
                "partial-interleaved-yarn")


@pytest.mark.parametrize("name", LAYOUT_CASES)
def test_partial_and_interleaved_rope_match_transformers(name, tmp_path):
    config, rotary_cls, apply_ref, table, head_dim, relayout = _layout_case(name)
    module, arch = rope_module([table], head_dim, 2048, tmp_path, name)
    positions = sparse_positions(131072)
    ref_cos, ref_sin = rotary_cls(config)(torch.zeros(1), positions)
    _, cos, sin = generated_rope(module, arch, positions)["global"]
    assert cos.shape[-1] == table.rotary_dim < head_dim or table.layout == "interleaved"
    torch.testing.assert_close(cos, relayout(ref_cos), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, relayout(ref_sin), rtol=0, atol=1e-6)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 3, positions.shape[1], head_dim, generator=generator)
    k = torch.randn(1, 2, positions.shape[1], head_dim, generator=generator)
    ref_q, ref_k = apply_ref(q, k, ref_cos, ref_sin)
    torch.testing.assert_close(module.apply_rope(q, cos, sin), ref_q, rtol=0, atol=1e-6)
    torch.testing.assert_close(module.apply_rope(k, cos, sin), ref_k, rtol=0, atol=1e-6)
    if table.rotary_dim < head_dim:  # the channels past rotary_dim pass through untouched
        assert torch.equal(module.apply_rope(q, cos, sin)[..., table.rotary_dim:], q[..., table.rotary_dim:])
