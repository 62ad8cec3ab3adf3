"""Falcon-H1 (falcon_h1): softmax attention and a Mamba-2 block side by side in every layer (Layer.parallel_mixer),
both reading the same normed input, their outputs summed; its muP multipliers (embedding, attention in/out, key,
ssm in/out, the five parts of the Mamba-2 in-projection, the MLP's gate and output, the logits).

Tiny-replica parity from the config-class defaults and from a variant with every multiplier set and the gated
RMSNorm (chunks of 8 positions, sequences past two chunks); planted bugs in the multipliers and the norm order fail
it; cached decoding (KV cache and Mamba-2 state in the same layer) equals the full forward token by token and after
prefills of 1, chunk - 1, chunk, chunk + 1; the state's size does not depend on the text length; full-size
parameter counts equal transformers'; the card and describe name both mixers.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from conftest import REPO, import_path, logits_in_pieces

from llmgen.compiler.insight.card import card, load_model
from llmgen.compiler.insight.describe import features
from llmgen.compiler.insight.diagram import diagram_svg
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.insight.irdiff import differences
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.render_mamba2 import mamba2_of, mamba2_state_bytes
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.verification.verify import verify
from llmgen.compiler.passes.weight_map import parameter_count, weight_map
from llmgen.compiler.passes.write import write_outputs

FIXTURES = REPO / "tests" / "fixtures" / "falcon_h1"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def compile_into(raw: dict, directory, name: str):
    text = json.dumps(raw, indent=2)
    loaded = LoadedConfig(raw=raw, text=text, source_id=f"{name}/config.json", revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    return write_outputs(directory / name, compile_config(loaded, slug=name).files)


def gate_first() -> dict:
    """The muP variant with the norm after the gate, an in_proj bias and no out_proj / attention biases."""
    raw = fixture("falcon_h1_mup.json")
    raw.update(mamba_norm_before_gate=False, mamba_proj_bias=True, projectors_bias=False, attention_bias=False,
               tie_word_embeddings=False)
    raw.pop("head_dim")
    return raw


CONFIGS = {"defaults": lambda: fixture("falcon_h1_defaults.json"), "mup": lambda: fixture("falcon_h1_mup.json"),
           "mup-gate-first": gate_first}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """name -> its generated directory (compiled once for the module)."""
    root = tmp_path_factory.mktemp("falcon_h1")
    return {name: compile_into(make(), root, name) for name, make in CONFIGS.items()}


def check(result: dict, name: str) -> None:
    print(f"{name}: max|dlogit| = {result['max_abs_diff']:.3g}, logits up to {result['max_abs_logit']:.3g}")
    assert result["seq_len"] > 2 * 8 and result["batch"] == 2 and result["max_abs_logit"] > 0.1, result
    assert result["max_abs_diff"] <= 1e-5 * max(1.0, result["max_abs_logit"]), result
    assert result["passed"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parity_past_two_chunks(compiled, name):
    arch = validate(lower(CONFIGS[name]()))
    assert all(layer.mixer.kind == "attention" and layer.parallel_mixer.kind == "mamba2" for layer in arch.layers)
    check(verify(compiled[name]), name)


# bug -> (text of the muP variant's model.py, its replacement)
PLANTED = {
    "in_proj part multipliers ignored": ("m_z, m_x, m_b, m_c, m_dt = self.in_multipliers",
                                         "m_z = m_x = m_b = m_c = m_dt = 1.0"),
    "Mamba-2 branch output multiplier dropped": ("mixed = self.mamba(h * par_in) * par_out", "mixed = self.mamba(h * par_in)"),
    "attention reads the Mamba-2 input scale": ("attended = self.self_attn(h * attn_in,", "attended = self.self_attn(h * par_in,"),
    "gate before the norm": ("h = y.float().view(*y.shape[:-1], self.groups, -1)",
                             "h = (y.float() * F.silu(z.float())).view(*y.shape[:-1], self.groups, -1)"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_fails_parity(compiled, bug, tmp_path):
    target = tmp_path / "mup"
    shutil.copytree(compiled["mup"], target)
    before, after = PLANTED[bug]
    source = (target / "model.py").read_text()
    assert before in source, f"planted-bug anchor vanished from model.py: {before!r}"
    (target / "model.py").write_text(source.replace(before, after))
    diff = verify(target)["max_abs_diff"]
    print(f"{bug}: max|dlogit| = {diff:.3g}")
    assert not diff <= 1e-3, f"{bug}: parity did not catch it (max|dlogit| = {diff:.3g})"


@pytest.fixture(scope="module")
def replica(compiled):
    """The muP variant's generated model at its replica's size (chunks of 8), randomised as its parity test does."""
    gen = import_path(compiled["mup"] / "model.py", "llmgen_falcon_h1_model")
    parity = import_path(compiled["mup"] / "test_parity.py", "llmgen_falcon_h1_parity")
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


@pytest.mark.parametrize("prefill", [1, 7, 8, 9])  # 1, chunk - 1, chunk, chunk + 1
def test_cached_decoding_equals_the_full_forward(replica, prefill):
    _, config, model, _ = replica
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
    size (256: one partial chunk here) equals it at 8 (three chunks)."""
    gen, config, model, _ = replica
    ids = torch.randint(0, config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(5))
    mambas = [module for module in model.modules() if isinstance(module, gen.Mamba2)]
    with torch.no_grad():
        full = model(ids)
        stepped = logits_in_pieces(model, ids, [1] * 20)
        for module in mambas:
            module.chunk = 256  # FalconH1Config's own mamba_chunk_size
        own = model(ids)
        for module in mambas:
            module.chunk = config.mamba_chunk_size
    scale = full.abs().max().item()
    assert (stepped - full).abs().max().item() <= 1e-5 * scale
    assert (own - full).abs().max().item() <= 1e-5 * scale


def test_each_layer_keeps_a_kv_cache_and_a_constant_state(replica):
    gen, config, model, parity = replica
    arch = validate(lower(parity.HF_CONFIG))
    sizes = {}
    with torch.no_grad():
        for length, max_len in ((4, 8), (40, 80)):
            cache = model.enable_cache(batch=1, max_len=max_len)
            model(torch.zeros(1, length, dtype=torch.long))
            kinds = [type(layer).__name__ for layer in cache]
            sizes[length] = [layer.conv.nbytes + layer.state.nbytes for layer in cache
                             if type(layer).__name__ == "Mamba2Cache"]
            assert cache.length == length
            model.disable_cache()
    assert kinds == ["LayerCache", "Mamba2Cache"] * config.num_hidden_layers
    assert sizes[4] == sizes[40] == [mamba2_state_bytes(mamba2_of(arch), conv_bytes=4)] * config.num_hidden_layers


@pytest.mark.parametrize("name", ["defaults", "mup"])
def test_full_size_parameter_counts_and_keys_match_transformers(name):
    transformers = pytest.importorskip("transformers")
    raw = CONFIGS[name]()
    arch = validate(lower(copy.deepcopy(raw)))
    raw["time_step_limit"] = [0.0, float("inf")]  # as transformers reads its JSON spelling
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    total = sum(p.numel() for p in reference.parameters())
    assert parameter_count(arch) == total
    shapes = {key: tuple(t.shape) for key, t in reference.state_dict().items()}
    if arch.head.tied:
        shapes.pop("lm_head.weight")
    ours = {key: entry.shape for entry in weight_map(arch) for key in entry.keys(arch)}
    assert ours == shapes
    print(f"Falcon-H1 {name}: {total:,} parameters")


def test_card_describe_diagram_and_diff_name_both_mixers():
    arch = validate(lower(fixture("falcon_h1_mup.json")))
    words = " ".join(features(arch))
    assert "Parallel mixers: on 32 of 32 layers softmax attention and Mamba-2" in words
    assert "x + attention(h * 0.75) * 0.9375 + Mamba-2(h * 1.25) * 0.235702" in words
    assert "0.353553, 0.25, 0.353553, 0.5, 0.707107" in words  # the in-projection's parts
    assert "y RMS-normed per group, times SiLU(z)" in words
    data = card(load_model(str(FIXTURES / "falcon_h1_defaults.json")))
    kv = data["kv_cache"]
    state = (4 - 1) * (1024 + 2 * 256) * 2 + 128 * 8 * 256 * 4  # bf16 conv window + float32 states
    assert kv["recurrent_bytes_per_sequence"] == 32 * state and len(kv["recurrent_layers"]) == 32
    assert kv["bytes_per_token_bf16"] == 32 * 2 * 8 * 128 * 2  # K and V of 8 heads of 128 on every layer
    assert data["pattern"]["legend"]["F"] == "full attention + Mamba-2 (state space) in parallel"
    print(f"Falcon-H1 defaults: state {kv['recurrent_bytes_per_sequence']:,} bytes per sequence")
    svg = diagram_svg(arch, "falcon-h1")
    assert "full attention beside Mamba-2 + MLP" in svg and "RMSNorm, then gate" in svg
    granite = validate(lower(json.loads((REPO / "tests/fixtures/mamba/granitemoehybrid_experts.json").read_text())))
    words = differences(arch, granite)
    assert "B drops parallel mixer" in words
    assert any("M: state space (Mamba-2), 32 → 28 layers" in line for line in words), words


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.update(ssm_multipliers=[1.0, 1.0]), "ssm_multipliers"),
    (lambda t: t.update(mlp_multipliers="1"), "mlp_multipliers"),
    (lambda t: t.update(mamba_d_head=7), "mamba_d_head"),
    (lambda t: t.update(mamba_n_groups=3), "n_groups"),
    (lambda t: t.update(hidden_act="gelu"), "hidden_act"),
])
def test_bad_configs_are_refused(edit, words):
    raw = fixture("falcon_h1_defaults.json")
    edit(raw)
    with pytest.raises(LlmgenError, match=words):
        validate(lower(raw))


def test_mamba_width_from_expand_when_d_ssm_is_null():
    """FalconH1Config: mamba_d_ssm null -> the Mamba-2 width is mamba_expand x hidden, head_dim "auto" divides it."""
    raw = fixture("falcon_h1_defaults.json")
    raw.update(mamba_d_ssm=None, mamba_d_head="auto")
    mamba = mamba2_of(validate(lower(raw)))
    assert (mamba.num_heads, mamba.head_dim, mamba.intermediate_size) == (128, 64, 2 * 4096)
    assert mamba.gate == "gate_only" and mamba.in_multipliers == (1.0,) * 5 and mamba.has_out_bias is False
