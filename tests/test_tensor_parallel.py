"""Tensor parallelism (issue 20): the generated parallel.py beside model.py splits the model over a
torch.distributed process group (gloo on CPU here) and gives the logits of one process.

One spawn of 4 processes checks every family at TP=2 and TP=4 (tiny replicas: the committed
generated models at their test_parity.py sizes, a few recurrent-mixer head counts raised so that 4
ranks divide them, every parameter random): the issue's six (Llama 3, Gemma 3, Qwen3-MoE,
DeepSeek-V3, gpt-oss with MXFP4 on disk, Phi-3), then OLMo-2 and Olmo-3 (whole-width QK-norm),
GPT-NeoX (per-head fused qkv), GPT-2 (Conv1D), Qwen1.5-MoE (gated shared expert), the hybrids
(Qwen3.5's Gated DeltaNet, LFM2's short convolution, Kimi Linear's KDA + MLA, Nemotron-H's Mamba-2
+ MoE), Gemma 4 (per-layer head counts), DeepSeek-V3.2 (DSA), MiMo-V2-Flash, DeepSeek-V4-Flash
(hyper-connections: templates/model/hyper/parallel.py.j2), and two compiled on the fly from fixtures (no
committed directory): Step-3.7 (per-head gate projection) and Falcon-H1 (Mamba-2 beside the attention).
The run has a hard timeout, so a
hang fails instead of blocking the suite. gloo on CPU only: the NCCL path is untested here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import GENERATED
from tp_worker import (
    COMPILED, FAMILIES, TOLERANCE, memory_config, random_model, replica, save_checkpoint, spawn, tp_worker, write_checkpoints,
)

from llmgen.compiler.basics.errors import UnsupportedError
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.parallel_plan import check_degree, tp_plan
from llmgen.compiler.passes.validate import validate

def compiled_config(name: str) -> dict:
    """The config of a COMPILED family, from the fixtures its own test file uses."""
    from conftest import REPO

    fixtures = REPO / "tests" / "fixtures"
    if name == "Step-3.7-Flash":  # the text keys as the step3p7 config's text_config (where transformers reads them)
        flat = json.loads((fixtures / "mimo" / "Step-3.7-Flash.json").read_text())
        text = {k: v for k, v in flat.items() if k not in ("model_type", "architectures")}
        return {"model_type": "step3p7", "architectures": flat["architectures"], "text_config": text}
    return json.loads((fixtures / "falcon_h1" / "falcon_h1_mup.json").read_text())


def compile_families(root: Path) -> list[str]:
    """COMPILED into root (unformatted: black takes seconds and changes no arithmetic)."""
    from unittest import mock

    from llmgen.compiler.passes import pipeline
    from llmgen.compiler.passes.load import LoadedConfig
    from llmgen.compiler.passes.write import write_outputs

    out = []
    for name in COMPILED:
        raw = compiled_config(name)
        loaded = LoadedConfig(raw=raw, text=json.dumps(raw, indent=2), source_id=f"{name}/config.json",
                              revision="local", origin="file", checkpoint_dir=None, note=None)
        with mock.patch.object(pipeline, "format_source", lambda text, **_: text):
            out.append(str(write_outputs(root / name, pipeline.compile_config(loaded, slug=name).files)))
    return out


@pytest.fixture(scope="module")
def tp_results(tmp_path_factory):
    """One spawn of 4 processes: TP=4, and TP=2 twice side by side."""
    out = tmp_path_factory.mktemp("tp") / "results.json"
    directories = [str(GENERATED / name) for name in FAMILIES] + compile_families(out.parent / "compiled")
    write_checkpoints(directories, out.parent / "checkpoints")  # the tiny replicas
    _, gen, _ = replica(GENERATED / FAMILIES[0])
    big = random_model(gen, memory_config(gen))
    save_checkpoint(gen, big.config, big, out.parent / "checkpoints" / "memory")
    (out.parent / "weight_bytes").write_text(str(sum(p.nbytes for p in big.parameters())))
    del big
    spawn(tp_worker, 4, directories, str(out), timeout=300)
    results = json.loads(out.read_text())
    results["weight_bytes"] = int((out.parent / "weight_bytes").read_text())
    return results


@pytest.mark.parametrize("degree", [2, 4])
@pytest.mark.parametrize("family", FAMILIES + COMPILED)
def test_tp_logits_equal_one_process(tp_results, family, degree):
    """TP=2: parallelize() on the model in memory; TP=4: load_parallel(), each rank reading its
    slices of the memory-mapped checkpoint (gpt-oss: MXFP4 on disk, each rank dequantizing its own
    experts), against model.py's load_checkpoint. Whole sequence and cached decoding. Recurrent
    mixers with a split (Gated DeltaNet, short convolution) hold 1/n of their heads or channels."""
    result = tp_results[f"{degree}/{family}"]
    bound = TOLERANCE * max(1.0, result["scale"])
    print(f"TP={degree} {family}: max|dlogit| whole {result['whole']:.2e}, cached {result['cached']:.2e}")
    assert result["whole"] <= bound and result["cached"] <= bound, result
    assert result["local_heads"] == [result["heads"] // degree]  # the heads really were split
    assert all(local * degree == whole for local, whole in result["split"]), result["split"]  # and split mixers


@pytest.mark.parametrize("degree", [2, 4])
def test_sharded_load_peak_memory_is_a_rank_share(tp_results, degree):
    """Per-rank peak resident memory of load_parallel: about 1/n of the weights (the replicated
    norms are a few KB), not the whole checkpoint."""
    weights = tp_results["weight_bytes"]
    ranks = range(degree) if degree == 4 else (0, 1)
    for rank in ranks:
        result = tp_results[f"memory/{degree}/{rank}"]
        print(f"TP={degree} rank {rank}: peak {result['peak'] / 2**20:.1f} MiB, its parameters "
              f"{result['params'] / 2**20:.1f} MiB, weights {weights / 2**20:.1f} MiB")
        assert result["params"] < weights / degree * 1.05
        assert result["peak"] < weights / degree * 1.3, result


@pytest.mark.parametrize("family", ["Llama-3.2-1B", "gemma-3-1b"])
def test_fsdp2_training_step_equals_one_process(tp_results, family):
    """parallel.shard_for_training (fully_shard per decoder layer, then the root) at 2 ranks, data
    parallel (one sequence per rank): the mean loss equal and every gradient within 1e-5 (relative to
    its largest value) of one process on both sequences."""
    result = tp_results[f"fsdp/{family}"]
    print(f"FSDP2 {family}: loss {result['loss']:.6f} vs {result['sharded_loss']:.6f}, "
          f"worst gradient difference {result['grad_rel']:.2e} (relative)")
    assert abs(result["loss"] - result["sharded_loss"]) <= 1e-6 * abs(result["loss"])
    assert result["grad_rel"] <= 1e-5


def test_plan_is_emitted_for_each_family():
    for name in FAMILIES:
        text = (GENERATED / name / "parallel.py").read_text()
        assert "TP_LAYER_PLAN" in text and "import llmgen" not in text and "from llmgen" not in text


def test_fused_projections_split_on_block_boundaries():
    par, _, _ = replica(GENERATED / "Phi-3.5-mini-instruct")
    # [q (4 heads); k (2); v (2)] of width 3 per head over 2 ranks: rank 1 takes q heads 2-3, k 1, v 1.
    assert par.block_ranges(24, ("q", "kv", "kv"), {"q": 4, "kv": 2}, 1, 2) == [(6, 12), (15, 18), (21, 24)]
    # One key/value head, 4 ranks: every rank a copy of it.
    assert par.block_ranges(8, ("kv",), {"q": 4, "kv": 1}, 3, 4) == [(0, 8)]
    assert par.block_ranges(10, ("rows", "rows"), {}, 0, 5) == [(0, 1), (5, 6)]
    # Gated DeltaNet's [q; k; v]: 2 key heads of 3 (q and k), 4 value heads of 5, rank 1 of 2.
    assert par.block_ranges(32, ("lk", "lk", "lv"), {"lk": (2, 3), "lv": (4, 5)}, 1, 2) == [(3, 6), (9, 12), (22, 32)]
    assert par.block_ranges(4, ("lv",), {"lk": (2, 3), "lv": (4, 5)}, 1, 2) == [(2, 4)]  # one value per head


def test_plans_of_the_harder_layouts():
    """What the plan says for each layout that needs more than column/row-wise splits."""
    plans = {name: _plan(name) for name in ("OLMo-2-1124-7B", "gpt2", "RedPajama-INCITE-7B-Base",
                                            "Qwen3.5-35B-A3B", "LFM2-1.2B", "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16")}
    assert plans["OLMo-2-1124-7B"]["Attention"]["self_attn.q_norm"] == ("gathered", ("q",))
    assert plans["gpt2"]["Attention"]["attn.c_attn"] == ("colwise_t", ("q", "kv", "kv"))
    assert plans["gpt2"]["MLP"]["mlp.c_proj"] == ("rowwise_t", ("rows",))
    assert plans["RedPajama-INCITE-7B-Base"]["Attention"]["attention.query_key_value"] == ("colwise", ("q",))
    assert plans["Qwen3.5-35B-A3B"]["GatedDeltaNet"]["linear_attn.in_proj_qkv"] == ("colwise", ("lk", "lk", "lv"))
    assert plans["LFM2-1.2B"]["ShortConv"]["conv.in_proj"] == ("colwise", ("rows", "rows", "rows"))
    # Nemotron-H's "mixer" is attention in some layers, a MoE in others: one group per block class.
    assert plans["NVIDIA-Nemotron-3-Nano-30B-A3B-BF16"]["MoE"]["mixer"] == ("reduce", ())
    assert plans["NVIDIA-Nemotron-3-Nano-30B-A3B-BF16"]["Attention"]["mixer"][0] == "attention"
    text = (GENERATED / "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16" / "parallel.py").read_text()
    assert plans["NVIDIA-Nemotron-3-Nano-30B-A3B-BF16"]["Mamba2"]["mixer.in_proj"] == ("colwise", ("mh", "mh", "mg", "mg", "md"))
    assert "TP_REPLICATED_MIXERS = ()" in text
    # Kimi Linear's self_attn is latent attention in some layers, Kimi Delta Attention in the others.
    assert _plan("Kimi-Linear-defaults")["KimiDeltaAttention"]["self_attn.A_log"] == ("heads", ("kh",))
    assert _plan("Kimi-Linear-defaults")["Attention"]["self_attn.kv_b_proj"] == ("colwise", ("q",))


def _plan(name: str) -> dict:
    from tp_worker import _import

    return _import(GENERATED / name / "parallel.py", f"tp_plan_{name.replace('-', '_').replace('.', '_')}").TP_LAYER_PLAN


def _arch(hub_id: str, **changes):
    from conftest import catalog_config

    raw = catalog_config(hub_id) | changes
    return validate(lower(raw))


def test_degree_that_does_not_divide_heads_is_refused():
    arch = _arch("meta-llama/Llama-3.2-1B")
    check_degree(arch, 8)  # 32 heads, 8 key/value heads
    with pytest.raises(UnsupportedError, match="32 attention heads, not divisible by 3"):
        check_degree(arch, 3)
    check_degree(arch, 16)  # 8 key/value heads: replicated, two ranks per head
    qwen35 = _arch("Qwen/Qwen3.5-35B-A3B")  # Gated DeltaNet: 16 key heads, 32 value heads
    check_degree(qwen35, 8)
    with pytest.raises(UnsupportedError, match="Gated DeltaNet has 16 key heads, not divisible by 32"):
        check_degree(qwen35, 32)
    assert tp_plan(_arch("Qwen/Qwen3-30B-A3B")) is not None
    # Falcon-H1's Mamba-2 beside the attention splits by whole groups of heads: its default single group does not
    falcon = validate(lower(compiled_config("Falcon-H1-mup")))
    with pytest.raises(UnsupportedError, match="layer 0's Mamba-2 has 1 groups of heads, not divisible by 2"):
        check_degree(falcon, 2)
    check_degree(validate(lower(compiled_config("Falcon-H1-mup") | {"mamba_n_groups": 8})), 8)
    # DeepSeek-V4's grouped low-rank output splits by whole groups: 8 of them
    from conftest import REPO

    dsv4 = validate(lower(json.loads((REPO / "tests" / "fixtures" / "deepseek_v4" / "DeepSeek-V4-Flash.json").read_text())))
    check_degree(dsv4, 8)
    with pytest.raises(UnsupportedError, match="layer 0 has 8 output groups \\(wo_a\\), not divisible by 16"):
        check_degree(dsv4, 16)


@pytest.fixture(scope="module")
def tiny_smollm2(smollm2_checkpoint, tmp_path_factory):
    """SmolLM2's config shrunk (6 heads, 3 key/value heads, 2 layers; its real vocabulary and
    tokenizer) compiled with from-config, and a random checkpoint for it beside the tokenizer."""
    import shutil

    from llmgen.compiler.basics.cli import main
    from tp_worker import _import

    root = tmp_path_factory.mktemp("tiny-smollm2")
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    raw = json.loads((smollm2_checkpoint / "config.json").read_text())
    raw.update(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=6,
               num_key_value_heads=3, torch_dtype="float32")
    raw.pop("head_dim", None)
    (root / "config.json").write_text(json.dumps(raw))
    (checkpoint / "config.json").write_text(json.dumps(raw))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (smollm2_checkpoint / name).is_file():
            shutil.copy(smollm2_checkpoint / name, checkpoint / name)
    assert main(["from-config", str(root / "config.json"), "--out", str(root), "--name", "tiny", "--no-verify"]) == 0
    gen = _import(root / "tiny" / "model.py", "tp_tiny_smollm2")
    config = gen.Config()
    save_checkpoint(gen, config, random_model(gen, config), checkpoint)
    return root / "tiny", checkpoint


def test_generate_refuses_a_degree_that_does_not_fit_before_loading(tiny_smollm2, capsys):
    """6 heads, 3 key/value heads: --tp 4 is one error line, before any weight is read."""
    from llmgen.compiler.basics.cli import main

    code = main(["generate", str(tiny_smollm2[0]), "--prompt", "Hi", "--tp", "4", "--checkpoint", "/nonexistent"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("llmgen: error: --tp 4: layer 0 has 6 attention heads, not divisible by 4"), err


def test_generate_on_three_processes_writes_the_one_process_text(tiny_smollm2, capsys):
    """`llmgen generate --tp 3` (6 heads, 3 key/value heads; torch's launcher, gloo): the same
    greedy text as one process, SmolLM2's real tokenizer, random weights."""
    from llmgen.compiler.basics.cli import main

    directory, checkpoint = tiny_smollm2
    args = ["generate", str(directory), "--prompt", "The capital of France is", "--max-new-tokens", "6",
            "--checkpoint", str(checkpoint)]
    assert main(args + ["--kernel", "off"]) == 0
    single = capsys.readouterr().out
    assert main(args + ["--tp", "3"]) == 0
    out, err = capsys.readouterr()
    print(single, out, err)
    assert out == single and len(out.strip()) > 0
    assert "on 3 processes" in err


def _card(source: str, tp: int) -> dict:
    from llmgen.compiler.insight.card import card, load_model

    model = load_model(source)
    return model.arch, card(model), __import__("llmgen.compiler.insight.tp_card", fromlist=["tp_card"]).tp_card(model.arch, tp)


def test_full_size_llama_70b_plan_at_tp8_on_meta():
    """Llama-3.1-70B's shape at TP=8, the generated plan applied on the meta device: every rank an
    eighth of each split matrix (one of the 8 key/value heads each), bf16 bytes per rank from it."""
    from conftest import REPO

    arch, data, tp = _card(str(REPO / "tests" / "fixtures" / "tp" / "Llama-3.1-70B-shaped.json"), 8)
    shapes = tp["shapes"]["0"]
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == [1024, 8192]  # 8 of 64 heads x 128
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == [128, 8192]  # 1 of 8 key/value heads
    assert shapes["model.layers.0.self_attn.o_proj.weight"] == [8192, 1024]
    assert shapes["model.layers.0.mlp.down_proj.weight"] == [8192, 28672 // 8]
    assert shapes["model.embed_tokens.weight"] == [128256 // 8, 8192] and shapes["lm_head.weight"] == [16032, 8192]
    replicated = (2 * 80 + 1) * 8192  # the norms
    total = data["parameters"]["total"]
    assert tp["weights_bytes_bf16"]["0"] == 2 * ((total - replicated) // 8 + replicated)
    assert tp["kv_bytes_bf16_at"]["per_rank"] == data["kv_cache"]["bytes_per_token_bf16"] * 8192 // 8
    print(f"Llama-3.1-70B shape, TP=8: {tp['weights_bytes_bf16']['0'] / 2**30:.2f} GiB of bf16 weights per rank")


def test_full_size_deepseek_v3_plan_at_tp8_on_meta():
    """DeepSeek-V3 at TP=8 on meta: 16 of 128 heads per rank in q_b/kv_b/o, 32 of 256 routed experts,
    the latent projections, router and norms whole; bytes per rank from the split model."""
    arch, data, tp = _card("deepseek-ai/DeepSeek-V3", 8)
    shapes = tp["shapes"]["0"]
    assert shapes["model.layers.0.self_attn.q_b_proj.weight"] == [16 * 192, 1536]
    assert shapes["model.layers.0.self_attn.kv_b_proj.weight"] == [16 * 256, 512]
    assert shapes["model.layers.0.self_attn.o_proj.weight"] == [7168, 16 * 128]
    assert shapes["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"] == [576, 7168]  # the latent: whole
    assert shapes["model.layers.3.mlp.gate.weight"] == [256, 7168]  # the router: whole
    experts = {int(name.split(".")[5]) for name in shapes if ".mlp.experts." in name and name.startswith("model.layers.3.")}
    assert experts == set(range(32))
    assert shapes["model.layers.3.mlp.shared_experts.down_proj.weight"] == [7168, 2048 // 8]
    per_rank = tp["weights_bytes_bf16"]["0"]
    assert 2 * data["parameters"]["total"] / 8 < per_rank < 2 * data["parameters"]["total"] / 8 * 1.05
    assert tp["kv_bytes_bf16_at"]["per_rank"] == data["kv_cache"]["bytes_per_token_bf16"] * 8192  # latent: whole
    print(f"DeepSeek-V3, TP=8: {per_rank / 2**30:.1f} GiB of bf16 weights per rank")


def test_full_size_qwen35_plan_at_tp8_on_meta():
    """Qwen3.5-27B at TP=8 on meta: each Gated DeltaNet layer keeps 2 of 16 key heads and 6 of 48 value
    heads ([q; k; v] rows, conv channels, A_log, dt_bias), its recurrent state split with them."""
    arch, data, tp = _card("Qwen/Qwen3.5-27B", 8)
    shapes = tp["shapes"]["0"]
    assert shapes["model.layers.0.linear_attn.in_proj_qkv.weight"] == [(2 * 2 * 128 + 6 * 128), 5120]
    assert shapes["model.layers.0.linear_attn.conv1d.weight"] == [2 * 2 * 128 + 6 * 128, 1, 4]
    assert shapes["model.layers.0.linear_attn.A_log"] == [6] and shapes["model.layers.0.linear_attn.out_proj.weight"] == [5120, 768]
    per_rank = tp["weights_bytes_bf16"]["0"]
    assert 2 * data["parameters"]["total"] / 8 < per_rank < 2 * data["parameters"]["total"] / 8 * 1.05
    # 4 key/value heads on 8 ranks: each rank a quarter of the KV cache; an eighth of the recurrent state.
    expected = data["kv_cache"]["bytes_per_token_bf16"] * 8192 // 4 + data["kv_cache"]["recurrent_bytes_per_sequence"] / 8
    assert abs(tp["kv_bytes_bf16_at"]["per_rank"] - expected) < 64
    print(f"Qwen3.5-27B, TP=8: {per_rank / 2**30:.2f} GiB of bf16 weights per rank")


def test_full_size_deepseek_v4_plan_at_tp8_on_meta():
    """DeepSeek-V4-Flash at TP=8 on meta (templates/model/hyper/parallel.py.j2): 8 of 64 query heads in wq_b and
    the sinks, 1 of 8 output groups in wo_a / wo_b, 32 of 256 routed experts, an eighth of the shared expert; the
    query latent, the one key=value head, the router and the hyper-connection weights whole."""
    from conftest import REPO

    arch, data, tp = _card(str(REPO / "generated" / "DeepSeek-V4-Flash"), 8)
    shapes = tp["shapes"]["0"]
    assert shapes["layers.3.attn.wq_b.weight"] == [8 * 512, 1024] and shapes["layers.3.attn.attn_sink"] == [8]
    assert shapes["layers.3.attn.wo_a.weight"] == [1024, 8 * 512] and shapes["layers.3.attn.wo_b.weight"] == [4096, 1024]
    assert shapes["layers.3.attn.wkv.weight"] == [512, 4096] and shapes["layers.3.attn.wq_a.weight"] == [1024, 4096]
    assert shapes["layers.3.ffn.gate.weight"] == [256, 4096] and shapes["layers.3.hc_attn_fn"] == [24, 4 * 4096]
    assert shapes["layers.3.ffn.shared_experts.w2.weight"] == [4096, 2048 // 8]
    experts = {int(name.split(".")[4]) for name in shapes if name.startswith("layers.3.ffn.experts.")}
    assert experts == set(range(32))
    per_rank = tp["weights_bytes_bf16"]["0"]
    assert 2 * data["parameters"]["total"] / 8 < per_rank < 2 * data["parameters"]["total"] / 8 * 1.05
    print(f"DeepSeek-V4-Flash, TP=8: {per_rank / 2**30:.1f} GiB of bf16 weights per rank")
