"""MiMo-V2-Flash (``mimo_v2_flash``) and Step-3.5 (``step3p5``, inside the ``step3p7`` wrapper).

Tiny-replica parity from the real configs (tests/fixtures/mimo, shrunk with every layer kind kept and the
window below the test sequence) and from the config classes' defaults, fp32, batch 2, at sequences of
window - 1, window and window + 1 too; planted bugs in the new attention pieces fail it; cached decoding
equals the full forward; full-size parameter counts on the meta device equal transformers'.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import import_path

from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.passes.weight_map import parameter_count
from llmgen.compiler.passes.write import write_outputs

transformers = pytest.importorskip("transformers")

FIXTURES = Path(__file__).parent / "fixtures" / "mimo"


def mimo_real() -> dict:
    return json.loads((FIXTURES / "MiMo-V2-Flash.json").read_text())


def mimo_defaults() -> dict:
    """transformers' MiMoV2FlashConfig defaults, as save_pretrained writes them (the v5 keys: layer_types,
    mlp_layer_types, per-kind rope_parameters)."""
    return transformers.MiMoV2FlashConfig().to_dict()


def step_flat() -> dict:
    """The fixture as published by its source: Step-3.7-Flash's text keys at the top level of a step3p7 config."""
    return json.loads((FIXTURES / "Step-3.7-Flash.json").read_text())


def step_real() -> dict:
    """The fixture's text keys as the step3p7 config's text_config (where transformers reads them)."""
    flat = step_flat()
    text = {k: v for k, v in flat.items() if k not in ("model_type", "architectures")}
    return {"model_type": "step3p7", "architectures": flat["architectures"], "text_config": text}


def step_sliding_heads() -> dict:
    """The same with the legacy attention_other_setting giving the sliding layers more query heads (96 of 64)."""
    raw = step_real()
    raw["text_config"]["attention_other_setting"] = {"attention_type": "sliding_attention", "num_attention_heads": 96,
                                                     "num_attention_groups": 8, "head_dim": 128}
    return raw


def step_defaults() -> dict:
    """transformers' Step3p7Config defaults as save_pretrained writes them (every text layer full attention)."""
    return transformers.AutoConfig.for_model("step3p7").to_dict()


def mimo_grouped() -> dict:
    """The real config with group-limited routing (8 groups, the best 4), which its router implements too."""
    return {**mimo_real(), "n_group": 8, "topk_group": 4}


CONFIGS = {"mimo-real": mimo_real, "mimo-defaults": mimo_defaults, "mimo-grouped": mimo_grouped, "step-real": step_real,
           "step-sliding-heads": step_sliding_heads, "step-defaults": step_defaults}


FORMATTED = {"mimo-real", "step-real"}  # the others skip black (seconds each): the same code, unformatted


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """name -> the generated directory of CONFIGS[name] at full size (compiled once, on first use)."""
    from unittest import mock

    from llmgen.compiler.passes import pipeline

    root, done = tmp_path_factory.mktemp("mimo_step"), {}

    def get(name: str) -> Path:
        if name not in done:
            raw = CONFIGS[name]()
            loaded = LoadedConfig(raw=raw, text=json.dumps(raw, indent=2), source_id=f"{name}/config.json",
                                  revision="local", origin="file", checkpoint_dir=None, note=None)
            with mock.patch.object(pipeline, "format_source", lambda text, **_: text) if name not in FORMATTED else (
                    contextlib.nullcontext()):
                done[name] = write_outputs(root / name, compile_config(loaded, slug=name).files)
        return done[name]

    return get


def parity_module(directory: Path, tag: str):
    return import_path(directory / "test_parity.py", f"mimo_step_parity_{tag}_{abs(hash(str(directory)))}")


def check(result: dict, name: str, *, every_expert: bool = True) -> float:
    diff, scale = result["max_abs_diff"], result["max_abs_logit"]
    print(f"{name}: seq {result['seq_len']}: max|dlogit| = {diff:.3g}, logits up to {scale:.3g}")
    assert result["batch"] == 2 and result["dtype"] == "float32" and scale > 0.1
    assert diff <= 1e-5 * max(1.0, scale), result
    for hits in result.get("expert_hits", []) if every_expert else []:
        assert min(hits) > 0, f"an expert of the replica got no token: {result['expert_hits']}"
    return diff


WINDOW_RUNS = {"mimo-real", "step-real"}  # the others: the default length only (their replicas have the same window)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parity_around_the_window(name, compiled):
    """Full forward at window - 1, window, window + 1 and the default length (past two windows)."""
    parity = parity_module(compiled(name), name)
    lengths = (parity.WINDOW - 1, parity.WINDOW, parity.WINDOW + 1) if name in WINDOW_RUNS else ()
    assert not lengths or parity.WINDOW + 1 < parity.SEQ_LEN
    for seq_len in (*lengths, parity.SEQ_LEN):
        # (mimo-grouped: the random correction biases keep the weakest group out of every choice, as they should)
        check(parity.measure(seq_len=seq_len), name, every_expert=seq_len == parity.SEQ_LEN and name != "mimo-grouped")


def test_mimo_lowering_reads_the_remote_code_keys():
    arch = validate(lower(mimo_real()))
    full, sliding = arch.layers[0].mixer, arch.layers[1].mixer
    assert (full.span, full.num_kv_heads, full.sinks) == ("full", 4, False)
    assert (sliding.span, sliding.window, sliding.num_kv_heads, sliding.sinks) == ("sliding", 129, 8, True)
    assert (full.head_dim, full.v_head_dim, full.value_scale) == (192, 128, 0.707)
    assert [t.rotary_dim for t in arch.rope] == [64, 64] and {t.theta for t in arch.rope} == {5e6, 1e4}
    assert [i for i, layer in enumerate(arch.layers) if layer.mixer.span == "full"] == [0, 5, 11, 17, 23, 29, 35, 41, 47]
    assert arch.layers[0].ffn.kind == "mlp" and {layer.ffn.kind for layer in arch.layers[1:]} == {"moe"}
    moe = arch.layers[1].ffn
    assert (moe.router, moe.score_correction_bias, moe.shared_expert_size, moe.num_experts, moe.top_k) == (
        "sigmoid_topk", True, None, 256, 8)
    # transformers ignores these remote-code keys: a value contradicting what it builds is refused
    for key, value in (("swa_num_key_value_heads", 4), ("add_full_attention_sink_bias", True),
                       ("hybrid_layer_pattern", [1] * 48), ("swa_rope_theta", 20000)):
        with pytest.raises(Exception, match=key):
            lower({**mimo_real(), key: value})


def test_step_lowering_reads_the_text_config():
    arch = validate(lower(step_sliding_heads()))
    full, sliding = arch.layers[0].mixer, arch.layers[1].mixer
    assert (full.num_heads, sliding.num_heads, full.num_kv_heads, sliding.num_kv_heads) == (64, 96, 8, 8)
    assert full.head_gate and sliding.head_gate and (sliding.span, sliding.window) == ("sliding", 512)
    assert arch.layers[0].norm.weight_offset == 1.0 and full.qk_norm == "per_head"
    assert [layer.ffn.kind for layer in arch.layers[:4]] == ["mlp", "mlp", "mlp", "moe"]
    moe = arch.layers[3].ffn
    assert (moe.num_experts, moe.top_k, moe.shared_expert_size, moe.routed_scaling_factor) == (288, 8, 1280, 3.0)
    assert arch.extra_checkpoint_layers == 3 and arch.skipped_prefixes == ("vision_model.", "vit_large_projector.")


@pytest.mark.parametrize("name", ["mimo-real", "step-sliding-heads"])
def test_saved_config_lowers_to_the_same_model(name):
    """The config as transformers saves it after reading it (v5 keys: layer_types, per-kind rope_parameters,
    num_sliding_attention_heads and per_layer_config with zero-padded indices) is the same model."""
    raw = CONFIGS[name]()
    saved = transformers.AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "quantization_config"}).to_dict()
    assert validate(lower(saved)).layers == validate(lower(raw)).layers


def test_step_flat_config_is_refused_in_one_line():
    """transformers builds its default text model from a step3p7 config without text_config (the top-level text
    keys are ignored): compiling them as the text model would not be the model transformers builds."""
    from llmgen.compiler.basics.errors import LlmgenError

    with pytest.raises(LlmgenError, match="'step3p7' needs a 'text_config'"):
        lower(step_flat())
    with pytest.raises(LlmgenError, match="text decoder of a 'step3p7'"):
        lower({**step_flat(), "model_type": "step3p5"})


# (config, bug) -> (text of the generated model.py, its replacement)
PLANTED = {
    ("mimo-real", "value scale dropped"): ("v = v * self.value_scale", "v = v"),
    ("mimo-real", "sinks ignored"): ("if self.attention_sink_bias is not None:\n", "if False:\n"),
    ("step-real", "per-head gate dropped"): ("out.view(batch, seq, self.num_heads, -1) * torch.sigmoid(gate).unsqueeze(-1)",
                                             "out.view(batch, seq, self.num_heads, -1)"),
}
# A bug the loader catches before any logit: the checkpoint's tensors no longer fit.
LOAD_BUG = ("config.sliding_num_key_value_heads,", "config.num_key_value_heads,")


def planted(source: Path, target: Path, before: str, after: str) -> Path:
    shutil.copytree(source, target)
    text = (target / "model.py").read_text()
    assert text.count(before) == 1, f"planted-bug anchor vanished: {before!r}"
    (target / "model.py").write_text(text.replace(before, after))
    return target


@pytest.mark.parametrize("name,bug", sorted(PLANTED))
def test_planted_bug_fails_parity(name, bug, compiled, tmp_path):
    target = planted(compiled(name), tmp_path / "planted", *PLANTED[name, bug])
    diff = parity_module(target, "planted").measure()["max_abs_diff"]
    print(f"{bug}: max|dlogit| = {diff:.3g}")
    assert not diff <= 1e-3, f"{bug}: parity did not catch it (max|dlogit| = {diff:.3g})"


def test_sliding_layers_with_the_full_layers_kv_heads_do_not_load(compiled, tmp_path):
    target = planted(compiled("mimo-real"), tmp_path / "planted", *LOAD_BUG)
    with pytest.raises(Exception, match="does not match|shape"):
        parity_module(target, "planted_kv").measure()


def random_model(directory: Path, tag: str):
    gen = import_path(directory / "model.py", f"mimo_step_model_{tag}")
    parity = parity_module(directory, f"cache_{tag}")
    config = gen.Config(**parity.MODEL_CONFIG)
    torch.manual_seed(0)
    model = gen.CausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(1.0, 0.2) if "norm" in name else param.normal_(0.0, 0.05)
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.normal_(0.0, 0.1)
    return config, model


@pytest.mark.parametrize("name", ["mimo-real", "step-sliding-heads"])
def test_cached_decoding_equals_the_full_forward(name, compiled):
    config, model = random_model(compiled(name), name)
    for sizes in ([1] * 12, [5, 1, 1, 1, 1, 1, 1, 1], [9, 3, 1]):  # prefills within and past the window (8)
        ids = torch.randint(0, config.vocab_size, (2, sum(sizes)), generator=torch.Generator().manual_seed(len(sizes)))
        with torch.no_grad():
            full = model(ids)
            model.enable_cache(batch=2, max_len=sum(sizes))
            pieces, start = [], 0
            for size in sizes:
                pieces.append(model(ids[:, start : start + size]))
                start += size
            model.disable_cache()
        cached = torch.cat(pieces, dim=1)
        scale, diff = full.abs().max().item(), (cached - full).abs().max().item()
        print(f"{name} pieces {sizes}: max|cached - full| = {diff:.3g} (logits up to {scale:.3g})")
        assert scale > 0.1 and diff <= 1e-5 * scale


def transformers_meta(auto_class, raw: dict) -> torch.nn.Module:
    """transformers' model at full size on the meta device, without its weight initialisation (seconds at this
    size, and nothing to initialise on meta)."""
    from unittest import mock

    config = transformers.AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "quantization_config"})
    with torch.device("meta"), mock.patch.object(transformers.PreTrainedModel, "post_init", lambda self: None):
        return auto_class.from_config(config)


def test_full_size_parameter_count_mimo():
    """The IR's count (the generated weight map's, which loads the replica's checkpoint key for key and shape)
    equals transformers' at the real size (the multi-token-prediction layers are not built by either)."""
    raw = mimo_real()
    reference = transformers_meta(transformers.AutoModelForCausalLM, raw)
    ref, ours = sum(p.numel() for p in reference.parameters()), parameter_count(validate(lower(raw)))
    print(f"MiMo-V2-Flash: {ours} parameters (transformers {ref})")
    assert ours == ref


def test_full_size_parameter_count_step():
    """The text model's parameters (transformers': under model.language_model and lm_head, beside its vision tower)."""
    raw = step_real()
    reference = transformers_meta(transformers.AutoModelForImageTextToText, raw)
    ref = sum(p.numel() for n, p in reference.named_parameters() if n.startswith(("model.language_model.", "lm_head.")))
    ours = parameter_count(validate(lower(raw)))
    print(f"Step-3.7-Flash text model: {ours} parameters (transformers {ref})")
    assert ours == ref
