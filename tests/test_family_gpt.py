"""The GPT group (GPT-2, GPT-NeoX, Phi): tiny-replica parity of the real configs and of
variants, what the generated files contain, what the lowering refuses, and planted bugs
in each family's signature feature that the parity test must catch."""

from __future__ import annotations

import copy
import shutil

import pytest
from conftest import GENERATED, catalog_config, write_py
from test_parity_variants import compile_and_verify

from llmgen.compiler.basics.errors import ConfigError, LlmgenError, UnsupportedError
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.verification.verify import verify

GPT2 = "openai-community/gpt2"
NEOX = "togethercomputer/RedPajama-INCITE-7B-Base"
PHI = "microsoft/phi-2"


def _partial_rope_rendered() -> bool:
    try:
        validate(lower(catalog_config(PHI)))
    except UnsupportedError:
        return False
    return True


# Phi-2 (0.4) and Pythia (0.25) rotate part of each head: rendered once partial RoPE lands.
PARTIAL = pytest.mark.skipif(not _partial_rope_rendered(), reason="partial rotary RoPE is not rendered yet")


def with_keys(hub_id: str, drop: tuple[str, ...] = (), **keys) -> dict:
    raw = catalog_config(hub_id)
    for key in drop:
        raw.pop(key)
    raw.update(keys)
    return raw


def pythia_like() -> dict:
    """Pythia's layout: a quarter of each head rotated, parallel residual, untied head."""
    return with_keys(NEOX, rotary_pct=0.25, use_parallel_residual=True, hidden_act="gelu")


VARIANTS = {
    "gpt2": catalog_config(GPT2),
    "gpt2-untied-unscaled-relu": with_keys(GPT2, tie_word_embeddings=False, scale_attn_weights=False,
                                           activation_function="relu", n_inner=1000),
    "redpajama-sequential": catalog_config(NEOX),
    "pythia-parallel-partial-rope": pytest.param(pythia_like(), marks=PARTIAL),
    "neox-no-bias-tied-v5-rope": pytest.param(with_keys(NEOX, drop=("rotary_emb_base", "rotary_pct"), attention_bias=False,
                                           tie_word_embeddings=True,
                                           rope_parameters={"rope_type": "default", "rope_theta": 500.0,
                                                            "partial_rotary_factor": 0.5}), marks=PARTIAL),
    "phi-2": pytest.param(catalog_config(PHI), marks=PARTIAL),
    "phi-qk-layernorm-gqa-default-partial": pytest.param(
        with_keys(PHI, drop=("partial_rotary_factor",), qk_layernorm=True, num_key_value_heads=8), marks=PARTIAL),
    "phi-linear-rope": pytest.param(with_keys(PHI, rope_scaling={"rope_type": "linear", "factor": 2.0}),
                                    marks=PARTIAL),
}


def _raw(value) -> dict:
    return copy.deepcopy(value if isinstance(value, dict) else value.values[0])


@pytest.mark.parametrize("name", [pytest.param(k, marks=getattr(v, "marks", ())) for k, v in sorted(VARIANTS.items())])
def test_parity(name, tmp_path):
    result = compile_and_verify(_raw(VARIANTS[name]), tmp_path, name)
    assert result["passed"], result
    assert result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 0.1


def test_gpt2_file_has_learned_positions_conv1d_and_no_rope():
    source = (GENERATED / "gpt2" / "model.py").read_text()
    assert "apply_rope" not in source and "RMSNorm" not in source
    assert "class Conv1D" in source and "self.wpe = nn.Embedding" in source
    assert "def gelu_new" in source and "F.gelu" not in source
    assert "self.c_attn = Conv1D" in source and "lm_head" not in source.split("WEIGHT_MAP")[0]


def test_neox_file_has_per_head_qkv_and_sequential_block():
    source = (GENERATED / "RedPajama-INCITE-7B-Base" / "model.py").read_text()
    assert "RMSNorm" not in source and "Conv1D" not in source and "def gelu_new" not in source
    assert "self.query_key_value = nn.Linear" in source and "[q_h; k_h; v_h]" in source
    assert "self.embed_out = nn.Linear" in source and "self.gpt_neox = DecoderModel" in source
    assert "both branches read x" not in source  # use_parallel_residual is false: a sequential block


@PARTIAL
def test_phi_file_has_parallel_block_and_biased_head():
    source = (GENERATED / "phi-2" / "model.py").read_text()
    assert "RMSNorm" not in source and "Conv1D" not in source and "wpe" not in source
    assert "one norm feeds both branches" in source
    assert "self.lm_head = nn.Linear(self.config.hidden_size, self.config.vocab_size, bias=True)" in source
    assert "self.fc1 = nn.Linear" in source and "self.final_layernorm = nn.LayerNorm" in source


def test_arch_of_each_family():
    gpt2 = lower(catalog_config(GPT2))
    assert gpt2.linear_layout == "in_out" and gpt2.embedding.learned_positions == 1024 and not gpt2.rope
    assert gpt2.head.tied and gpt2.layers[0].mixer.qkv == "fused" and gpt2.layers[0].ffn.activation == "gelu_new"
    neox = lower(pythia_like())
    assert neox.layers[0].block == "parallel" and neox.layers[0].parallel_norms == 2
    assert neox.rope[0].rotary_dim == 32 and neox.layers[0].mixer.qkv == "fused_per_head"
    assert lower(catalog_config(NEOX)).layers[0].block == "pre_norm"
    phi = lower(catalog_config(PHI))
    assert phi.layers[0].block == "parallel" and phi.layers[0].parallel_norms == 1 and phi.head.bias
    assert phi.rope[0].rotary_dim == 32 and phi.rope[0].partial_rotary_factor == 0.4
    default_partial = lower(with_keys(PHI, drop=("partial_rotary_factor",)))
    assert default_partial.rope[0].partial_rotary_factor == 0.5  # PhiConfig's default


REFUSED = {
    "gpt2 per-layer attention scale": (GPT2, {"scale_attn_by_inverse_layer_idx": True},
                                       UnsupportedError, "scale_attn_by_inverse_layer_idx"),
    "gpt2 reordered upcast attention": (GPT2, {"reorder_and_upcast_attn": True}, UnsupportedError,
                                        "reorder_and_upcast_attn"),
    "gpt2 cross-attention": (GPT2, {"add_cross_attention": True}, UnsupportedError, "add_cross_attention"),
    "gpt2 unknown key": (GPT2, {"hidden_size": 768}, ConfigError, "hidden_size"),
    "gpt2 unknown activation": (GPT2, {"activation_function": "gelu_10"}, UnsupportedError,
                                "activation_function"),
    "neox rope twice": (NEOX, {"rope_scaling": {"rope_type": "linear", "factor": 2.0},
                               "rope_parameters": {"rope_type": "default"}}, ConfigError, "rope_parameters"),
    "neox top-level rope_theta": (NEOX, {"rope_theta": 500.0}, ConfigError, "rope_theta"),
    "neox head_dim": (NEOX, {"head_dim": 64}, ConfigError, "head_dim"),
    "phi qk_layernorm with its own head_dim": (PHI, {"qk_layernorm": True, "head_dim": 40}, UnsupportedError,
                                               "qk_layernorm"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_lowering_refuses(case):
    hub_id, keys, error, key = REFUSED[case]
    with pytest.raises(error, match=key):
        lower(with_keys(hub_id, **keys))


@PARTIAL
def test_phi_tied_biased_head_is_refused():
    with pytest.raises(UnsupportedError, match="biased output head tied"):
        validate(lower(with_keys(PHI, tie_word_embeddings=True)))


def _plant(tmp_path, source_dir, before: str, after: str) -> dict:
    target = tmp_path / "planted"
    shutil.copytree(source_dir, target)
    model = target / "model.py"
    text = model.read_text()
    assert text.count(before) == 1, f"planted-bug anchor vanished: {before!r}"
    model.write_text(text.replace(before, after))
    return verify(target)


PLANTED = {
    "gpt2 without learned positions": ("gpt2", "x = x + self.wpe(positions)", "x = x + 0 * self.wpe(positions)"),
    "gpt2 Conv1D read as (out, in)": ("gpt2", "torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)",
                                      "torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight.t().reshape("
                                      "self.weight.shape))"),
    "neox qkv read as [q; k; v]": ("RedPajama-INCITE-7B-Base",
                                   "qkv = self.query_key_value(x).view(batch, seq, self.num_heads, 3 * self.head_dim)",
                                   "qkv = self.query_key_value(x).view(batch, seq, 3, self.num_heads * self.head_dim)"
                                   ".transpose(2, 3).reshape(batch, seq, self.num_heads, 3 * self.head_dim)"),
    "phi without the shared-norm parallel block": ("phi-2", "x = self.self_attn(h, mask, cos, sin) + self.mlp(h) + x",
                                                   "x = x + self.self_attn(h, mask, cos, sin)\n"
                                                   "        x = x + self.mlp(self.input_layernorm(x))"),
    "phi head without its bias": ("phi-2", "logits = self.lm_head(h)", "logits = F.linear(h, self.lm_head.weight)"),
}


@pytest.mark.parametrize("bug", [pytest.param(k, marks=PARTIAL if v[0] == "phi-2" else ()) for k, v in sorted(PLANTED.items())])
def test_parity_catches_planted_bugs(bug, tmp_path):
    directory, before, after = PLANTED[bug]
    result = _plant(tmp_path, GENERATED / directory, before, after)
    assert not result["passed"] and result["max_abs_diff"] > 1e-3, result


@PARTIAL
def test_pythia_parallel_residual_is_checked(tmp_path):
    """The two-norm parallel block: feeding the MLP the attention's output must fail parity."""
    compile_and_verify(pythia_like(), tmp_path, "pythia")
    before = "x = attn_out + self.mlp(self.post_attention_layernorm(x)) + x"
    after = "x = x + attn_out\n        x = x + self.mlp(self.post_attention_layernorm(x))"
    try:
        result = _plant(tmp_path / "p", tmp_path / "pythia", before, after)
    except LlmgenError as exc:  # pragma: no cover - a crash would also be a caught bug, but say so
        pytest.fail(f"planted bug crashed instead of failing parity: {exc}")
    assert not result["passed"] and result["max_abs_diff"] > 1e-3, result


@pytest.mark.parametrize("bare", [True, False], ids=["bare-decoder", "prefixed"])
def test_gpt2_published_checkpoint_layout_loads(bare, tmp_path):
    """GPT-2's release holds the decoder alone (keys "h.0.attn.c_attn.weight", no "transformer.")
    plus each block's old causal-mask buffers (attn.bias, attn.masked_bias); later uploads keep
    the prefix. transformers reads both; so must the generated loader and the compile-time check."""
    import json

    import torch
    import transformers
    from conftest import import_path
    from safetensors.torch import load_file, save_file

    from llmgen.compiler.verification.checkpoint import check_checkpoint
    from llmgen.compiler.basics.errors import CheckpointError
    from llmgen.compiler.passes.load import LoadedConfig
    from llmgen.compiler.passes.lowering.replica import tiny_replica
    from llmgen.compiler.passes.pipeline import compile_config

    raw = catalog_config(GPT2)
    tiny = tiny_replica(raw, lower(raw))
    torch.manual_seed(0)
    reference = transformers.GPT2LMHeadModel(transformers.GPT2Config(**tiny)).eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            neutral = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
            param.copy_(torch.randn_like(param) * 0.05 + neutral)
    reference.save_pretrained(tmp_path / "saved")
    tensors = load_file(tmp_path / "saved" / "model.safetensors")
    published = {}
    for key, tensor in tensors.items():
        if key.startswith("lm_head."):
            continue  # tied: the release stores only wte
        published[key.removeprefix("transformer.") if bare else key] = tensor
    positions = tiny["n_positions"]
    for i in range(tiny["n_layer"]):
        prefix = "" if bare else "transformer."
        causal = torch.tril(torch.ones(positions, positions, dtype=torch.bool))
        published[f"{prefix}h.{i}.attn.bias"] = causal.view(1, 1, positions, positions)
        published[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    checkpoint = tmp_path / "published"
    checkpoint.mkdir()
    save_file(published, checkpoint / "model.safetensors", metadata={"format": "pt"})
    (checkpoint / "config.json").write_text(json.dumps(tiny))

    ids = torch.randint(0, tiny["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        theirs = transformers.GPT2LMHeadModel.from_pretrained(checkpoint).eval()(input_ids=ids).logits
    assert torch.equal(theirs, expected)  # a layout transformers itself reads

    arch = validate(lower(tiny))
    assert check_checkpoint(checkpoint, arch) == checkpoint / "model.safetensors"
    loaded = LoadedConfig(raw=tiny, text=json.dumps(tiny), source_id="gpt2-tiny", revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    write_py(tmp_path, compile_config(loaded, slug="m").files)
    module = import_path(tmp_path / "model.py", f"gpt2_published_{bare}")
    with torch.no_grad():
        ours = module.load_checkpoint(checkpoint, module.Config())(ids)
    assert (ours - expected).abs().max().item() <= 1e-5

    published["h.0.attn.surprise" if bare else "transformer.h.0.attn.surprise"] = torch.zeros(1)
    save_file(published, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="surprise"):
        check_checkpoint(checkpoint, arch)
    with pytest.raises(module.WeightLoadError, match="surprise"):
        module.load_checkpoint(checkpoint, module.Config())
