"""Mixture-of-experts feed-forwards: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, Granite-MoE.

Tiny-replica parity with every expert hit, both on-disk expert layouts (the hub layout
save_pretrained writes and transformers 5's fused in-memory layout), sparse dispatch, layers
mixing experts with dense MLPs, total and active parameter counts, one-line config errors.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import GENERATED, catalog_config, generated_source, import_path
from test_parity_variants import compile_and_verify

from llmgen.compiler.basics.errors import ConfigError, LlmgenError, UnsupportedError
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.passes.weight_map import active_parameter_count, parameter_count

transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file  # noqa: E402  (installed with transformers)


def _defaults(config_class, model_type: str, **changes) -> dict:
    """A config from transformers' own defaults (there is no published one in the catalog)."""
    raw = config_class().to_diff_dict()
    raw.pop("transformers_version", None)
    return {**raw, **changes, "model_type": model_type}


def olmoe() -> dict:
    return _defaults(transformers.OlmoeConfig, "olmoe")


def granitemoe() -> dict:  # muP multipliers as Granite 3 MoE releases set them
    return _defaults(transformers.GraniteMoeConfig, "granitemoe", embedding_multiplier=12.0, residual_multiplier=0.22,
                     attention_multiplier=0.0078125, logits_scaling=6.0)


def qwen3_moe_mixed() -> dict:  # dense MLP on every other layer and on layer 3
    raw = catalog_config("Qwen/Qwen3-30B-A3B")
    raw.update(decoder_sparse_step=2, mlp_only_layers=[3])
    return raw


CATALOG = {"mixtral": "mistralai/Mixtral-8x7B-v0.1", "qwen2_moe": "Qwen/Qwen1.5-MoE-A2.7B-Chat",
           "qwen3_moe": "Qwen/Qwen3-30B-A3B"}
BUILT = {"olmoe": olmoe, "granitemoe": granitemoe, "qwen3_moe_mixed": qwen3_moe_mixed}
FAMILIES = {**{name: (lambda hub_id=hub_id: catalog_config(hub_id)) for name, hub_id in CATALOG.items()}, **BUILT}


def compiled(name: str, tmp_path: Path, raw: dict | None = None):
    """Compile without verifying: the generated model and parity modules (of ``raw`` when given)."""
    raw = FAMILIES[name]() if raw is None else raw
    loaded = LoadedConfig(raw=raw, text=json.dumps(raw), source_id=f"{name}/config.json", revision="local",
                          origin="file", checkpoint_dir=None, note=None)
    out = tmp_path / name
    out.mkdir()
    for file, data in compile_config(loaded, slug=name).files.items():
        (out / file).write_bytes(data)
    tag = name.replace("-", "_")
    return import_path(out / "model.py", f"moe_model_{tag}"), import_path(out / "test_parity.py", f"moe_parity_{tag}")


@pytest.mark.parametrize("name", sorted(BUILT))
def test_parity_every_expert_hit(name, tmp_path):
    """The generated test itself asserts every expert of every MoE layer got tokens."""
    result = compile_and_verify(BUILT[name](), tmp_path, name)
    assert result["passed"] and result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 0.1, result
    assert result["expert_hits"] and all(min(layer) > 0 for layer in result["expert_hits"]), result["expert_hits"]
    module = import_path(tmp_path / name / "test_parity.py", f"moe_hits_{name}")
    module.test_parity_with_transformers()


@pytest.mark.parametrize("slug", ["Mixtral-8x7B-v0.1", "Qwen1.5-MoE-A2.7B-Chat", "Qwen3-30B-A3B"])
def test_committed_parity_records_expert_hits(slug):
    parity = json.loads((GENERATED / slug / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-5
    assert len(parity["expert_hits"]) >= 2 and all(min(layer) > 0 for layer in parity["expert_hits"])


def both_layout_gaps(model_py, parity, tmp_path: Path, extra: dict | None = None):
    """A randomised reference saved in save_pretrained's hub layout and in transformers 5's fused in-memory
    layout (plus ``extra`` tensors), each loaded by the generated loader: (reference state, hub keys, fused
    keys, max |logit difference| per layout)."""
    config = transformers.AutoConfig.for_model(**parity.HF_CONFIG)
    reference = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="eager", dtype=torch.float32, experts_implementation="eager")
    parity.randomise(reference, torch.Generator().manual_seed(1))
    reference.eval()
    hub, fused = tmp_path / "hub", tmp_path / "fused"
    reference.save_pretrained(hub)
    fused.mkdir()
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file({**state, **(extra or {})}, str(fused / "model.safetensors"))
    from safetensors import safe_open

    def keys(directory: Path) -> set[str]:
        with safe_open(str(directory / "model.safetensors"), "pt") as f:
            return set(f.keys())

    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(2))
    gaps = {}
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        for directory in (hub, fused):
            ours = model_py.load_checkpoint(directory, model_py.Config(**parity.MODEL_CONFIG))
            gaps[directory.name] = (ours(ids) - expected).abs().max().item()
    return state, keys(hub), keys(fused), gaps


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "olmoe", "granitemoe", "qwen3_moe_mixed"])
def test_both_expert_layouts_load(name, tmp_path):
    """save_pretrained's hub layout and transformers 5's fused in-memory layout give the same logits."""
    _, hub_keys, fused_keys, gaps = both_layout_gaps(*compiled(name, tmp_path), tmp_path)
    assert any(k.endswith("experts.gate_up_proj") for k in fused_keys)
    if name == "granitemoe":  # the hub layout is stacked too, under other names
        assert any(k.endswith("block_sparse_moe.input_linear.weight") for k in hub_keys)
    else:
        assert any(re.search(r"\.experts\.7\.(w1|gate_proj)\.weight$", k) for k in hub_keys)
    assert hub_keys != fused_keys
    assert gaps["hub"] <= 1e-5 and gaps["fused"] <= 1e-5, gaps


def test_dispatch_runs_only_the_chosen_experts(tmp_path):
    """One token runs exactly top_k experts: no dense all-expert compute."""
    model_py, parity = compiled("qwen2_moe", tmp_path)
    config = model_py.Config(**parity.MODEL_CONFIG)
    torch.manual_seed(0)
    model = model_py.CausalLM(config)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    calls = []
    for layer in model.model.layers:
        for expert in layer.mlp.experts:
            expert.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        model(torch.tensor([[5]]))
    assert len(calls) == config.num_hidden_layers * config.num_experts_per_tok < config.num_hidden_layers * config.num_experts
    assert set(calls) == {1}


def test_code_only_for_features_the_model_has(tmp_path):
    mixtral = (GENERATED / "Mixtral-8x7B-v0.1" / "model.py").read_text()
    assert "class MoE" in mixtral and "class Expert" in mixtral
    for absent in ("class MLP", "shared_expert", "StackedLinear", "ffn_pattern"):
        assert absent not in mixtral, absent
    assert "weights stay float32" in mixtral and "weights.sum(dim=-1" in mixtral
    qwen2 = (GENERATED / "Qwen1.5-MoE-A2.7B-Chat" / "model.py").read_text()
    assert "torch.sigmoid(self.shared_expert_gate(x))" in qwen2 and "weights.sum(dim=-1" not in qwen2
    dense = (GENERATED / "Qwen3-0.6B" / "model.py").read_text()
    assert "MoE" not in dense and "expert" not in dense.lower()
    granite_py, _ = compiled("granitemoe", tmp_path)
    source = Path(granite_py.__file__).read_text()
    assert "StackedLinear" in source and "class Expert(" not in source and 'nn.ModuleDict' in source
    mixed_py, _ = compiled("qwen3_moe_mixed", tmp_path)
    source = generated_source(Path(mixed_py.__file__).parent)
    assert "class MLP" in source and "class MoE" in source and "FFN_WEIGHT_MAP" in source
    assert mixed_py.Config().ffn_pattern.startswith("DEDD")
    for text in (mixtral, qwen2, source):
        imports = {line.split()[1] for line in text.splitlines() if line.startswith(("import ", "from "))}
        assert imports <= {"__future__", "json", "math", "struct", "dataclasses", "pathlib", "torch", "torch.nn.functional",
                           "runtime", "model"}


def test_features_state_the_sparse_dispatch():
    text = (GENERATED / "Mixtral-8x7B-v0.1" / "model.py").read_text()
    assert "MoE dispatch loops over the experts that received tokens" in text
    assert "Mixture of experts: 8 SwiGLU experts" in text


EXPECTED_ACTIVE = {  # published: Mixtral 12.9B active, Qwen1.5-MoE-A2.7B, Qwen3-30B-A3B (3.3B)
    "mistralai/Mixtral-8x7B-v0.1": (46_702_792_704, 12_879_925_248),
    "Qwen/Qwen1.5-MoE-A2.7B-Chat": (14_315_784_192, 2_689_173_504),
    "Qwen/Qwen3-30B-A3B": (30_532_122_624, 3_353_032_704),
}


def counts_against_transformers(raw: dict):
    """The IR of ``raw``, transformers' model of it on the meta device, its parameter count and its active
    count (every tensor, but top_k / num_experts of the routed experts' tensors)."""
    arch = validate(lower(raw))
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    total = sum(p.numel() for p in reference.parameters())
    routed = sum(p.numel() for name, p in reference.named_parameters() if ".experts." in name)
    moe = next(layer.ffn for layer in arch.layers if layer.ffn.kind == "moe")
    return arch, reference, total, total - routed + routed * moe.top_k // moe.num_experts


@pytest.mark.parametrize("hub_id", sorted(EXPECTED_ACTIVE))
def test_total_and_active_parameters_match_transformers(hub_id):
    arch, _, total, active = counts_against_transformers(catalog_config(hub_id))
    assert parameter_count(arch) == total == EXPECTED_ACTIVE[hub_id][0]
    assert active_parameter_count(arch) == active == EXPECTED_ACTIVE[hub_id][1]


def test_mixed_layers_count_each_kind(tmp_path):
    raw = qwen3_moe_mixed()
    raw["num_hidden_layers"] = 6
    arch = validate(lower(raw))
    assert "".join("E" if layer.ffn.kind == "moe" else "D" for layer in arch.layers) == "DEDDDE"
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    assert parameter_count(arch) == sum(p.numel() for p in reference.parameters())


def _with(base, **changes):
    raw = copy.deepcopy(base() if callable(base) else catalog_config(base))
    raw.update(changes)
    return raw


BAD = [
    (_with("Qwen/Qwen3-30B-A3B", num_experts_per_tok=200), ConfigError, "num_experts_per_tok"),
    (_with("Qwen/Qwen3-30B-A3B", mlp_only_layers=[48]), ConfigError, "mlp_only_layers"),
    (_with("Qwen/Qwen3-30B-A3B", mlp_only_layers="all"), ConfigError, "mlp_only_layers"),
    (_with("Qwen/Qwen3-30B-A3B", decoder_sparse_step=0), ConfigError, "decoder_sparse_step"),
    (_with("Qwen/Qwen3-30B-A3B", use_sliding_window=True), UnsupportedError, "use_sliding_window"),
    (_with("Qwen/Qwen1.5-MoE-A2.7B-Chat", norm_topk_prob="yes"), ConfigError, "norm_topk_prob"),
    (_with("Qwen/Qwen1.5-MoE-A2.7B-Chat", shared_expert_intermediate_size=0), ConfigError, "shared_expert_intermediate_size"),
    (_with("mistralai/Mixtral-8x7B-v0.1", num_local_experts=0), ConfigError, "num_local_experts"),
    (_with("mistralai/Mixtral-8x7B-v0.1", hidden_act="gelu_new"), UnsupportedError, "hidden_act"),
    (_with("mistralai/Mixtral-8x7B-v0.1", attention_chunk_size=4096), ConfigError, "attention_chunk_size"),  # read by transformers: refused (a key it never reads is noted: tests/test_config_keys.py)
    (_with(olmoe, clip_qkv=8.0), UnsupportedError, "clip_qkv"),
    (_with(olmoe, head_dim=64), UnsupportedError, "head_dim"),
    (_with(granitemoe, num_experts_per_tok=9), ConfigError, "num_experts_per_tok"),
]


@pytest.mark.parametrize("raw,error,key", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_config_values_give_one_line_errors(raw, error, key):
    with pytest.raises(LlmgenError) as info:
        validate(lower(raw))
    assert isinstance(info.value, error), info.value
    message = str(info.value)
    assert "\n" not in message and f"'{key}'" in message, message


def test_kv_cache_decoding_matches_a_full_forward(tmp_path):
    """Experts see one token at a time while decoding: same logits as the whole sequence at once."""
    model_py, parity = compiled("mixtral", tmp_path)
    torch.manual_seed(0)
    model = model_py.CausalLM(model_py.Config(**parity.MODEL_CONFIG)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        full = model(ids)
        model.enable_cache(batch=2, max_len=16)
        steps = [model(ids[:, :6])] + [model(ids[:, t:t + 1]) for t in range(6, 12)]
        model.disable_cache()
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < 1e-5
