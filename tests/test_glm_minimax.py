"""GLM-4-MoE and MiniMax-M2 (no published config in the catalog: transformers' defaults).

Tiny-replica parity with every expert hit for the defaults and for variants that switch on
what the defaults leave off; both on-disk expert layouts; cached == uncached decoding; full-size
total and active parameter counts against transformers on the meta device; the partial-RoPE
width transformers derives; code only for the features a model has; one-line config errors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_moe import _defaults, _with, both_layout_gaps, counts_against_transformers
from test_moe import compiled as compile_moe
from test_parity_variants import compile_and_verify

from llmgen.compiler.basics.errors import ConfigError, UnsupportedError
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.passes.weight_map import active_parameter_count, parameter_count

transformers = pytest.importorskip("transformers")


def glm() -> dict:  # head_dim 4096 // 96 = 42, RoPE on int(42 x 0.5) = 21 -> 22 channels
    return _defaults(transformers.Glm4MoeConfig, "glm4_moe")


def glm_switched_on() -> dict:  # what the defaults leave off, at GLM-4.5's head_dim
    return _defaults(transformers.Glm4MoeConfig, "glm4_moe", head_dim=128, use_qk_norm=True, attention_bias=True,
                     n_group=8, topk_group=4, routed_scaling_factor=2.5, norm_topk_prob=False, n_shared_experts=2)


def glm_odd_rotary() -> dict:  # the replica keeps an odd rotary width too: int(16 x 0.3125) = 5 -> 6 channels
    return _defaults(transformers.Glm4MoeConfig, "glm4_moe",
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.3125})


def minimax() -> dict:  # the whole head rotates (no rotary_dim)
    return _defaults(transformers.MiniMaxM2Config, "minimax_m2")


def minimax_rotary() -> dict:  # MiniMax-M2's release rotates 64 of 128 channels
    return _defaults(transformers.MiniMaxM2Config, "minimax_m2", rotary_dim=64)


BUILT = {"glm": glm, "glm_switched_on": glm_switched_on, "glm_odd_rotary": glm_odd_rotary, "minimax": minimax,
         "minimax_rotary": minimax_rotary}
DEFAULTS = {"glm4_moe": glm, "minimax_m2": minimax}


def compiled(name: str, tmp_path: Path):
    return compile_moe(name, tmp_path, BUILT[name]())


@pytest.mark.parametrize("name", sorted(BUILT))
def test_parity_every_expert_hit(name, tmp_path):
    result = compile_and_verify(BUILT[name](), tmp_path, name)
    assert result["passed"] and result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 0.1, result
    assert len(result["expert_hits"]) >= 2 and all(min(layer) > 0 for layer in result["expert_hits"]), result


@pytest.mark.parametrize("name", ["glm_switched_on", "minimax"])
def test_both_expert_layouts_load(name, tmp_path):
    """save_pretrained's hub layout (MiniMax: Mixtral's block_sparse_moe / w1 w3 w2 names, the correction bias
    on the block) and transformers 5's fused in-memory layout give the same logits; GLM's multi-token-prediction
    layer is skipped."""
    model_py, parity = compiled(name, tmp_path)
    mtp = {f"model.layers.{parity.HF_CONFIG['num_hidden_layers']}.eh_proj.weight": torch.zeros(2, 2)}
    state, hub_keys, fused_keys, gaps = both_layout_gaps(model_py, parity, tmp_path, mtp if name == "glm_switched_on" else None)
    bias_keys = [k for k in state if k.endswith("e_score_correction_bias")]
    assert bias_keys and all(state[k].abs().sum() > 0 for k in bias_keys)  # randomised: a wrong key would show
    expected = ("block_sparse_moe.experts.7.w1.weight", "block_sparse_moe.e_score_correction_bias") if name == "minimax" \
        else ("mlp.experts.7.gate_proj.weight", "mlp.gate.e_score_correction_bias")
    assert all(any(k.endswith(e) for k in hub_keys) for e in expected), sorted(hub_keys)[:20]
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in fused_keys) and hub_keys != fused_keys
    assert gaps["hub"] <= 1e-5 and gaps["fused"] <= 1e-5, gaps


def _reference(parity, seed: int):
    config = transformers.AutoConfig.for_model(**parity.HF_CONFIG)
    reference = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    parity.randomise(reference, torch.Generator().manual_seed(seed))
    return reference.eval()


@pytest.mark.parametrize("name", ["glm_switched_on", "glm_odd_rotary", "minimax_rotary"])
def test_kv_cache_decoding_matches_a_full_forward(name, tmp_path):
    model_py, parity = compiled(name, tmp_path)
    ours = model_py.CausalLM(model_py.Config(**parity.MODEL_CONFIG))
    ours.load_state_dict(_reference(parity, 3).state_dict(), strict=False)
    ours.eval()
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = ours(ids)
        ours.enable_cache(batch=2, max_len=16)
        steps = [ours(ids[:, :5])] + [ours(ids[:, t:t + 1]) for t in range(5, 9)] + [ours(ids[:, 9:])]
        ours.disable_cache()
    assert full.abs().max().item() > 0.1
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("model_type", sorted(DEFAULTS))
def test_full_size_parameter_counts_match_transformers(model_type):
    arch, reference, total, active = counts_against_transformers(DEFAULTS[model_type]())
    assert parameter_count(arch) == total and active_parameter_count(arch) == active < total // 2
    buffers = {name: b.shape for name, b in reference.named_buffers() if name.endswith("e_score_correction_bias")}
    assert len(buffers) == sum(layer.ffn.kind == "moe" for layer in arch.layers)


@pytest.mark.parametrize("raw", [glm(), glm_odd_rotary(), minimax(), minimax_rotary(),
                                 {**minimax_rotary(), "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.25}},
                                 {**minimax_rotary(), "partial_rotary_factor": 0.75}],
                         ids=["glm", "glm_odd", "minimax", "minimax_rotary", "dict_wins", "top_level_wins"])
def test_rotary_width_is_transformers(raw):
    """The channels rotated: 2 x len(inv_freq) of transformers' rotary embedding (its apply_rotary_pos_emb
    rotates cos.shape[-1] channels), from the same precedence of partial_rotary_factor / rotary_dim."""
    config = transformers.AutoConfig.for_model(**raw)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    rotated = 2 * model.model.rotary_emb.inv_freq.numel()
    table = validate(lower(raw)).rope[0]
    assert table.rotary_dim in (rotated, rotated - 1)
    assert 2 * ((table.rotary_dim + 1) // 2) == rotated
    assert table.theta == config.rope_parameters["rope_theta"]


def test_code_only_for_features_the_model_has(tmp_path):
    sources = {name: Path(compiled(name, tmp_path)[0].__file__).read_text()
               for name in ("glm", "glm_switched_on", "minimax")}
    plain, full, mm = sources["glm"], sources["glm_switched_on"], sources["minimax"]
    assert "class Router" in plain and "shared_experts" in plain and "class MLP" in plain
    for absent in ("q_norm", "group_scores", "routed_scaling_factor", "bias=True"):
        assert absent not in plain, absent
    for present in ("q_norm", "group_scores", "routed_scaling_factor", "bias=True"):
        assert present in full, present
    assert "weights.sum(dim=-1" in plain and "weights.sum(dim=-1" not in full  # norm_topk_prob off
    assert "class Router" not in mm and "shared_expert" not in mm and "class MLP" not in mm
    assert 'self.register_buffer("e_score_correction_bias"' in mm and "torch.sigmoid(logits.float())" in mm
    assert "choice = scores + self.e_score_correction_bias" in mm and "rotary_dim" not in mm
    # The docstring's feature list states the sigmoid routing each config asks for.
    assert "a sigmoid score per expert (plus a learned bias used only to choose); the top 8 per token kept, their " \
        "weights renormalised to sum to 1." in mm and "softmaxes" not in mm
    assert "kept, their weights renormalised to sum to 1." in plain and "groups" not in plain.split('"""')[1]
    assert ("the top 8 per token kept from the best 4 of 8 expert groups (scored by their two best experts) "
            "(weights not renormalised), then scaled by 2.5.") in full
    for text in sources.values():
        imports = {line.split()[1] for line in text.splitlines() if line.startswith(("import ", "from "))}
        assert imports <= {"__future__", "json", "math", "struct", "dataclasses", "pathlib", "torch", "torch.nn.functional",
                           "runtime", "model"}


BAD = [
    (_with(glm, n_group=3), ConfigError, "n_group"),
    (_with(glm, n_group=8, topk_group=9), ConfigError, "topk_group"),
    (_with(glm, n_group=64, topk_group=2), ConfigError, "num_experts_per_tok"),
    (_with(glm, n_shared_experts=0), ConfigError, "n_shared_experts"),
    (_with(glm, first_k_dense_replace=-1), ConfigError, "first_k_dense_replace"),
    (_with(glm, use_qk_norm="yes"), ConfigError, "use_qk_norm"),
    (_with(glm, routed_scaling_factor=0), ConfigError, "routed_scaling_factor"),
    (_with(glm, hidden_act="gelu_new"), UnsupportedError, "hidden_act"),
    (_with(glm, rope_parameters={"rope_type": "yarn", "factor": 4.0, "partial_rotary_factor": 0.5}), ConfigError,
     "partial_rotary_factor"),
    (_with(glm, attention_chunk_size=4096), ConfigError, "attention_chunk_size"),  # read by transformers: refused (a key it never reads is noted: tests/test_config_keys.py)
    (_with(minimax, rotary_dim=256), ConfigError, "rotary_dim"),
    (_with(minimax, rotary_dim=1), ConfigError, "partial_rotary_factor"),
    (_with(minimax, num_experts=64), ConfigError, "num_local_experts"),
    (_with(minimax, num_experts_per_tok=300), ConfigError, "num_experts_per_tok"),
    (_with(minimax, num_local_experts=0), ConfigError, "num_local_experts"),
    (_with(minimax, attention_chunk_size=4096), ConfigError, "attention_chunk_size"),
]


@pytest.mark.parametrize("raw,error,key", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_config_values_give_one_line_errors(raw, error, key):
    with pytest.raises(error) as info:  # ConfigError and UnsupportedError are apart: neither subclasses the other
        validate(lower(raw))
    assert "\n" not in str(info.value) and key in str(info.value), info.value
