"""Lowering: real configs -> IR, both key spellings, and one-line errors for bad configs."""

from __future__ import annotations

import copy

import pytest
from conftest import catalog_config

from llmgen.compiler.basics.errors import ConfigError, UnsupportedError
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.validate import validate
from llmgen.compiler.passes.weight_map import parameter_count
from llmgen.schemas.arch import Architecture, arch_json_schema

SPINE = [
    "google/gemma-3-1b-it",
    "google/gemma-3-270m",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.1-8B",
    "Qwen/Qwen3-0.6B",
    "HuggingFaceTB/SmolLM2-135M-Instruct",
]


@pytest.mark.parametrize("hub_id", SPINE)
def test_catalog_configs_lower_and_round_trip_through_json(hub_id):
    arch = validate(lower(catalog_config(hub_id)))
    assert Architecture.model_validate_json(arch.model_dump_json()) == arch
    assert arch.num_layers == catalog_config(hub_id)["num_hidden_layers"]


def test_gemma3_layer_pattern_and_rope_tables():
    arch = lower(catalog_config("google/gemma-3-1b-it"))
    spans = "".join("S" if layer.mixer.span == "sliding" else "F" for layer in arch.layers)
    assert spans == "SSSSSF" * 4 + "SS"
    assert {t.name: t.theta for t in arch.rope} == {"global": 1_000_000.0, "local": 10_000.0}
    sliding = arch.layers[0].mixer
    assert (sliding.window, sliding.rope, arch.layers[5].mixer.rope) == (512, "local", "global")
    assert sliding.scale == 256**-0.5 and sliding.qk_norm == "per_head"
    assert arch.layers[0].norm.weight_offset == 1.0 and arch.layers[0].block == "sandwich"
    assert arch.embedding.scale == pytest.approx(1152**0.5) and arch.head.tied


def test_parameter_counts_match_published_sizes():
    # Published totals (embedding counted once when tied).
    assert parameter_count(lower(catalog_config("meta-llama/Llama-3.1-8B"))) == 8_030_261_248
    assert parameter_count(lower(catalog_config("HuggingFaceTB/SmolLM2-135M-Instruct"))) == 134_515_008
    assert parameter_count(lower(catalog_config("Qwen/Qwen3-0.6B"))) == 596_049_920


def test_v4_and_v5_key_spellings_give_the_same_ir():
    v4 = catalog_config("google/gemma-3-1b-it")
    v5 = copy.deepcopy(v4)
    for key in ("rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern"):
        v5.pop(key)
    v5["rope_parameters"] = {
        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    }
    v5["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(26)]
    assert lower(v5) == lower(v4)


def test_v5_single_rope_parameters_dict_equals_v4_rope_scaling():
    v4 = catalog_config("meta-llama/Llama-3.2-1B")
    v5 = copy.deepcopy(v4)
    scaling = v5.pop("rope_scaling")
    v5["rope_parameters"] = {**scaling, "rope_theta": v5.pop("rope_theta")}
    assert lower(v5) == lower(v4)


def test_gemma3_linear_scaling_applies_to_global_layers_only():
    raw = catalog_config("google/gemma-3-1b-it")
    raw["rope_scaling"] = {"rope_type": "linear", "factor": 8.0}
    tables = {t.name: t for t in lower(raw).rope}
    assert tables["global"].type == "linear" and tables["global"].factor == 8.0
    assert tables["local"].type == "default"


def test_multimodal_wrapper_compiles_its_text_decoder():
    text = catalog_config("google/gemma-3-1b-it")
    wrapper = {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {k: v for k, v in text.items() if k not in ("architectures",)},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152},
        "mm_tokens_per_image": 256,
    }
    arch = lower(wrapper)
    assert arch.model_type == "gemma3_text" and arch.checkpoint_prefix == "language_model."
    assert arch.layers == lower(text).layers


def test_legacy_llama_defaults():
    raw = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 100}
    arch = lower(raw)
    attn = arch.layers[0].mixer
    assert (attn.num_kv_heads, attn.head_dim) == (4, 16)
    assert arch.rope[0].theta == 10000.0 and not arch.head.tied


def _mutated(hub_id, **changes):
    raw = catalog_config(hub_id)
    for key, value in changes.items():
        if value is KeyError:
            raw.pop(key)
        else:
            raw[key] = value
    return raw


BAD = [
    ("unknown key transformers reads", dict(attention_chunk_size=8192), ConfigError, "attention_chunk_size"),
    ("missing hidden_size", dict(hidden_size=KeyError), ConfigError, "hidden_size"),
    ("string size", dict(hidden_size="2048"), ConfigError, "hidden_size"),
    ("bool size", dict(num_hidden_layers=True), ConfigError, "num_hidden_layers"),
    ("zero heads", dict(num_attention_heads=0), ConfigError, "num_attention_heads"),
    ("kv > heads", dict(num_key_value_heads=64), ConfigError, "num_key_value_heads"),
    ("heads not multiple", dict(num_key_value_heads=5), ConfigError, "num_key_value_heads"),
    ("negative eps", dict(rms_norm_eps=-1.0), ConfigError, "rms_norm_eps"),
    ("unknown activation", dict(hidden_act="mish"), UnsupportedError, "hidden_act"),
    ("unknown rope type", dict(rope_scaling={"rope_type": "spiral", "factor": 2.0}), UnsupportedError, "spiral"),
    ("rope missing field", dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), ConfigError, "low_freq_factor"),
    ("rope unknown field", dict(rope_scaling={"rope_type": "linear", "factor": 2.0, "zoom": 1}), ConfigError, "zoom"),
    ("unknown model_type", dict(model_type="transmogrifier"), UnsupportedError, "transmogrifier"),
    ("pretraining_tp", dict(pretraining_tp=2), UnsupportedError, "pretraining_tp"),
    ("pad id past the vocabulary", dict(pad_token_id=128256), ConfigError, "pad_token_id"),
    ("pad id not an integer", dict(pad_token_id="<pad>"), ConfigError, "pad_token_id"),
]


def test_padding_index_as_nn_embedding_takes_it():
    """pad_token_id: absent or null -> none; negative counts from the end of the vocabulary."""
    assert lower(_mutated("meta-llama/Llama-3.2-1B")).embedding.padding_idx is None
    assert lower(_mutated("meta-llama/Llama-3.2-1B", pad_token_id=5)).embedding.padding_idx == 5
    assert lower(_mutated("meta-llama/Llama-3.2-1B", pad_token_id=-1)).embedding.padding_idx == 128255
    assert lower(_mutated("openai-community/gpt2", pad_token_id=5)).embedding.padding_idx is None  # GPT-2 has none


@pytest.mark.parametrize("label,changes,error,named", BAD, ids=[b[0] for b in BAD])
def test_bad_configs_fail_with_one_line_naming_the_key(label, changes, error, named):
    with pytest.raises(error) as info:
        lower(_mutated("meta-llama/Llama-3.2-1B", **changes))
    message = str(info.value)
    assert named in message and "\n" not in message


def test_gemma3_bad_layer_types():
    raw = catalog_config("google/gemma-3-270m")
    raw["layer_types"] = raw["layer_types"][:-1]
    with pytest.raises(ConfigError, match="layer_types"):
        lower(raw)
    raw = catalog_config("google/gemma-3-270m")
    raw["layer_types"][0] = "chunked_attention"
    with pytest.raises(UnsupportedError, match="chunked_attention"):
        lower(raw)


def test_gemma3_attention_softcap_is_refused_not_ignored():
    # transformers' Gemma 3 accepts the key but never applies it: an error beats a guess.
    raw = catalog_config("google/gemma-3-270m")
    raw["attn_logit_softcapping"] = 50.0
    with pytest.raises(UnsupportedError, match="attn_logit_softcapping"):
        lower(raw)


def test_bidirectional_gemma_is_refused_not_ignored():
    raw = catalog_config("google/gemma-3-270m")
    raw["use_bidirectional_attention"] = True
    with pytest.raises(UnsupportedError, match="use_bidirectional_attention"):
        lower(raw)


def test_ir_is_frozen_and_has_a_json_schema():
    arch = lower(catalog_config("Qwen/Qwen3-0.6B"))
    with pytest.raises(Exception):
        arch.hidden_size = 1  # type: ignore[misc]
    schema = arch_json_schema()
    assert schema["title"] == "Architecture" and "layers" in schema["properties"]


def test_validate_refuses_what_the_templates_cannot_print():
    arch = lower(catalog_config("meta-llama/Llama-3.2-1B"))  # tied head
    biased_tied = arch.model_copy(update={"head": arch.head.model_copy(update={"bias": True})})
    with pytest.raises(UnsupportedError, match="biased output head tied"):
        validate(biased_tied)
    gpt_layout = arch.model_copy(update={"linear_layout": "in_out"})  # Conv1D without biases
    with pytest.raises(UnsupportedError, match="Conv1D"):
        validate(gpt_layout)
    mixed = arch.model_copy(update={"layers": (arch.layers[0].model_copy(update={"block": "post_norm"}),
                                               *arch.layers[1:])})
    with pytest.raises(UnsupportedError, match="layer 1: its block differs"):
        validate(mixed)


@pytest.mark.parametrize("hub_id", ["meta-llama/Llama-3.2-1B", "mistralai/Mistral-7B-Instruct-v0.3",
                                    "Qwen/Qwen2-0.5B-Instruct", "Qwen/Qwen3-0.6B", "google/gemma-3-1b-it"])
def test_partial_rotary_is_refused_where_the_model_rotates_the_whole_head(hub_id):
    raw = catalog_config(hub_id)
    raw["partial_rotary_factor"] = 0.5
    with pytest.raises(UnsupportedError, match="partial_rotary_factor"):
        lower(raw)
    raw = catalog_config(hub_id)
    raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    raw.pop("rope_scaling", None)
    raw.pop("rope_theta", None)
    raw.pop("rope_local_base_freq", None)
    with pytest.raises(UnsupportedError, match="partial_rotary_factor"):
        lower(raw)


@pytest.mark.parametrize("hub_id", ["deepseek-ai/DeepSeek-V3", "meta-llama/Llama-3.2-1B"])
def test_rope_theta_of_one_is_refused(hub_id):
    # Found by the long fuzz run: theta 1 made YaRN divide by log(theta) = 0 in the forward pass.
    raw = catalog_config(hub_id)
    raw["rope_theta"] = 1
    with pytest.raises(ConfigError, match="'rope_theta' must be greater than 1"):
        lower(raw)


def test_every_committed_arch_json_loads_back():
    """arch.json is the IR's JSON: it validates as an Architecture again (default names included: A_log)."""
    from conftest import GENERATED

    paths = sorted(GENERATED.glob("*/arch.json"))
    assert len(paths) >= 20
    for path in paths:
        arch = Architecture.model_validate_json(path.read_text())
        assert arch.layers, path
