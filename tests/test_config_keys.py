"""Keys that change nothing (issue 16 section 1): PreTrainedConfig's own attributes at their neutral
values, keys the family's transformers class never reads (noted; refused by --strict), Infinity in
Mamba's time_step_limit. Keys that do change the model stay one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgen.compiler.basics.catalog import catalog_entries, catalog_path
from llmgen.compiler.basics.cli import main
from llmgen.compiler.basics.errors import ConfigError, UnsupportedError
from llmgen.compiler.passes.load import _read_json
from llmgen.compiler.passes.lowering import lower, lower_noted
from llmgen.compiler.passes.lowering import keys_data

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Every attribute transformers 4.57's PretrainedConfig.__init__ wrote into a full-form config, at its default.
LEGACY_FULL_FORM = {
    "torchscript": False, "use_bfloat16": False, "tf_legacy_loss": False, "pruned_heads": {}, "is_decoder": False,
    "cross_attention_hidden_size": None, "add_cross_attention": False, "tie_encoder_decoder": False,
    "chunk_size_feed_forward": 0, "is_encoder_decoder": False, "finetuning_task": None, "task_specific_params": None,
    "problem_type": None, "tokenizer_class": None, "prefix": None, "sep_token_id": None, "decoder_start_token_id": None,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "return_dict": True,
    "output_hidden_states": False, "output_attentions": False, "max_length": 20, "min_length": 0, "do_sample": False,
    "early_stopping": False, "num_beams": 1, "num_beam_groups": 1, "diversity_penalty": 0.0, "temperature": 1.0,
    "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0, "length_penalty": 1.0,
    "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "num_return_sequences": 1,
    "output_scores": False, "return_dict_in_generate": False, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "remove_invalid_values": False, "exponential_decay_length_penalty": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "_commit_hash": None,
}


def catalog(hub_id: str) -> dict:
    return json.loads(catalog_path(hub_id).read_text())


CATALOG = [entry[0] for entry in catalog_entries()]


def test_committed_data_is_what_the_installed_transformers_gives():
    """transformers_keys.json regenerated from the installed transformers is the committed file."""
    transformers = pytest.importorskip("transformers")
    assert transformers.__version__ == keys_data.keys_data()["transformers_version"]
    fresh = keys_data.generate()
    committed = keys_data.keys_data()
    assert fresh["pretrained_config"] == committed["pretrained_config"]  # PreTrainedConfig's own attributes
    assert keys_data.dump(fresh) == keys_data.dump(committed)


def test_pretrained_config_attributes_are_transformers_own():
    """The generic list holds every attribute PreTrainedConfig writes into a full-form config."""
    transformers = pytest.importorskip("transformers")
    written = set(transformers.PreTrainedConfig().to_dict())
    assert written - {"model_type"} <= set(keys_data.keys_data()["pretrained_config"])
    assert set(LEGACY_FULL_FORM) <= keys_data.generic_keys()


@pytest.mark.parametrize("hub_id", CATALOG)
def test_full_form_config_compiles_to_the_same_arch(hub_id):
    """Every catalog config re-saved by transformers in full form (use_diff=False), and with the 4.x
    generic attributes added, lowers to the same architecture, without notes."""
    transformers = pytest.importorskip("transformers")
    raw = catalog(hub_id)
    full = json.loads(transformers.AutoConfig.for_model(**raw).to_json_string(use_diff=False))
    assert set(full) - set(raw), "the full form adds keys"
    arch, notes = lower_noted(full)
    assert arch.model_dump() == lower(raw).model_dump() and notes == ()
    arch, notes = lower_noted({**LEGACY_FULL_FORM, **raw})
    assert arch.model_dump() == lower(raw).model_dump() and notes == ()


CHANGES_THE_MODEL = [("is_encoder_decoder", True), ("add_cross_attention", True), ("pruned_heads", {"0": [1]}),
                     ("tie_encoder_decoder", True), ("cross_attention_hidden_size", 64), ("chunk_size_feed_forward", 4),
                     ("per_layer_config", {"0": {"hidden_size": 8}})]


@pytest.mark.parametrize("key,value", CHANGES_THE_MODEL)
def test_generic_attribute_that_changes_the_model_is_refused(key, value):
    with pytest.raises(UnsupportedError) as info:
        lower({**catalog("meta-llama/Llama-3.2-1B"), key: value})
    assert key in str(info.value) and "changes the model" in str(info.value)


def _phi3() -> dict:  # keys of remote-code Phi-3 exports
    return {**catalog("microsoft/Phi-3.5-mini-instruct"), "full_attn_mod": 1, "interpolate_factor": 1}


def _cohere() -> dict:
    return {**json.loads((FIXTURES / "phi3_cohere" / "cohere.json").read_text()), "pretraining_tp": 1}


def _qwen3_coder() -> dict:  # Qwen3-Coder-480B's qwen3_moe config carries these
    return {**catalog("Qwen/Qwen3-30B-A3B"), "qkv_bias": False, "use_qk_norm": True,
            "shared_expert_intermediate_size": 0}


def _minimax() -> dict:  # MiniMax-M2.5's extra keys
    transformers = pytest.importorskip("transformers")
    raw = json.loads(transformers.MiniMaxM2Config().to_json_string())
    return {**raw, "model_type": "minimax_m2", "use_mtp": True, "attn_type_list": [1, 1], "scoring_func": "sigmoid"}


def _granite() -> dict:
    return {**json.loads((FIXTURES / "phi3_cohere" / "granite.json").read_text()), "position_embedding_type": "alibi"}


UNREAD = [
    (_phi3, "Phi3ForCausalLM", ["full_attn_mod", "interpolate_factor"]),
    (lambda: {**catalog("google/gemma-2b-it"), "attn_logit_softcapping": 50.0}, "GemmaForCausalLM",
     ["attn_logit_softcapping"]),  # a Gemma 2 key: transformers' Gemma never caps
    (lambda: {**catalog("mistralai/Mixtral-8x7B-v0.1"), "router_bias": True}, "MixtralForCausalLM", ["router_bias"]),
    (_granite, "GraniteForCausalLM", ["position_embedding_type"]),
    (_cohere, "CohereForCausalLM", ["pretraining_tp"]),
    (_qwen3_coder, "Qwen3MoeForCausalLM", ["qkv_bias", "shared_expert_intermediate_size", "use_qk_norm"]),
    (_minimax, "MiniMaxM2ForCausalLM", ["attn_type_list", "scoring_func", "use_mtp"]),
]


@pytest.mark.parametrize("make,owner,keys", UNREAD, ids=[u[1] for u in UNREAD])
def test_keys_transformers_never_reads_are_noted_and_strict_refuses_them(make, owner, keys):
    raw = make()
    bare = {k: v for k, v in raw.items() if k not in keys}
    arch, notes = lower_noted(raw)
    assert arch.model_dump() == lower(bare).model_dump()
    assert len(notes) == 1 and f"transformers' {owner} does not read {'them' if len(keys) > 1 else 'it'} either" in notes[0]
    assert all(repr(key) in notes[0] for key in keys) and owner in notes[0]
    with pytest.raises(ConfigError) as info:
        lower(raw, strict=True)
    assert repr(keys[0]) in str(info.value) and "--strict" in str(info.value)


@pytest.mark.parametrize("key,value", [("attention_chunk_size", 8192),  # read by transformers' masking code
                                       ("pretraining_tp", 2),  # defined by LlamaConfig: llmgen only honours 1
                                       ("{{ 7*7 }}", 1)])  # no identifier: a damaged file
def test_keys_transformers_reads_or_defines_stay_errors(key, value):
    with pytest.raises((ConfigError, UnsupportedError)) as info:
        lower({**catalog("meta-llama/Llama-3.2-1B"), key: value})
    assert key in str(info.value)


def test_cli_prints_the_note_records_it_and_strict_refuses(tmp_path, capsys):
    config = tmp_path / "phi3.json"
    config.write_text(json.dumps(_phi3()))
    assert main(["from-config", str(config), "--out", str(tmp_path / "out"), "--no-verify"]) == 0
    out = capsys.readouterr().out
    note = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "'full_attn_mod', 'interpolate_factor'" in note[0] and "Phi3ForCausalLM" in note[0]
    manifest = json.loads(next((tmp_path / "out").glob("*/llmgen.json")).read_text())
    assert manifest["ignored_keys"] == [note[0].removeprefix("note: ")]
    assert main(["from-config", str(config), "--out", str(tmp_path / "strict"), "--no-verify", "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmgen: error:") and "full_attn_mod" in err[0]
    assert not (tmp_path / "strict").exists()


def test_infinity_only_where_transformers_writes_it(tmp_path):
    def read(text: str):
        path = tmp_path / "config.json"
        path.write_text(text)
        return _read_json(path, "config.json")[0]

    assert read('{"model_type": "mamba", "time_step_limit": [0.0, Infinity]}')["time_step_limit"][1] == float("inf")
    assert read('{"text_config": {"time_step_limit": [0.0, Infinity]}}')
    for bad in ('{"time_step_limit": [0.0, NaN]}', '{"time_step_limit": [-Infinity, 1.0]}',
                '{"rope_theta": Infinity}', '{"time_step_limit": [Infinity, Infinity]}'):
        with pytest.raises(ConfigError, match="non-finite"):
            read(bad)
