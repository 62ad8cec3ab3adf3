"""Writes the bad-input corpus: one file (or checkpoint directory) per case, plus cases.json.

    python3 tests/bad_inputs/make_corpus.py [OUT]   # rewrite the corpus beside this script (or in OUT)

cases.json maps each case to its file, the kind of input and what must happen:
``error`` is the LlmgenError subclass raised and ``names`` the substrings (a key, a file, a
tensor) the one-line message must contain; ``{file}`` stands for the case's path as given on
the command line. tests/test_bad_inputs.py runs every case through the CLI and checks that
this script still writes exactly the committed corpus.

Kinds:
  config      llmgen from-config FILE
  hub         llmgen from-hub ID, the hub's answer simulated at the huggingface_hub boundary
              (the JSON file says which answer)
  checkpoint  llmgen from-config DIR, DIR holding a config.json and damaged weights
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CATALOG = HERE.parent.parent / "catalog"
BASES = {
    "llama": "meta-llama__Llama-3.2-1B", "smol": "HuggingFaceTB__SmolLM2-135M-Instruct", "qwen3": "Qwen__Qwen3-0.6B",
    "qwen2": "Qwen__Qwen2-0.5B-Instruct", "mistral": "mistralai__Mistral-7B-Instruct-v0.3", "gemma": "google__gemma-3-1b-it",
}
CASES: dict[str, dict[str, Any]] = {}
OUT = HERE  # where the corpus is written (main's argument)


def base(name: str) -> dict[str, Any]:
    return json.loads((CATALOG / f"{BASES[name]}.json").read_text())


def add_case(kind: str, name: str, data: bytes, error: str, names: list[str], suffix: str = ".json") -> None:
    case = f"{len(CASES) + 1:03d}-{name}"
    path = f"{kind}/{case}{suffix}"
    (OUT / path).parent.mkdir(parents=True, exist_ok=True)
    (OUT / path).write_bytes(data)
    CASES[case] = {"kind": kind, "path": path, "error": error, "names": names}


def config_case(name: str, raw: dict[str, Any], error: str, *names: str) -> None:
    add_case("config", name, (json.dumps(raw, indent=2, ensure_ascii=False) + "\n").encode(), error, list(names))


def edit(base_name: str, drop: tuple[str, ...] = (), **values: Any) -> dict[str, Any]:
    raw = base(base_name)
    for key in drop:
        raw.pop(key, None)
    raw.update(values)
    return raw


def malformed_json() -> None:
    texts = {
        "empty-file": b"", "only-whitespace": b"  \n\t\n", "unclosed-object": b'{"model_type": "llama"',
        "trailing-comma": b'{"model_type": "llama",}', "single-quotes": b"{'model_type': 'llama'}",
        "comment": b'{"model_type": "llama" // a comment\n}', "unterminated-string": b'{"model_type": "llama}',
        "trailing-garbage": b'{"model_type": "llama"} x', "bare-word": b"llama", "bom-prefixed": b'\xef\xbb\xbf{"model_type": "llama"}',
        "deep-nesting": b"[" * 3000 + b"]" * 3000,
        "digits-5000": b'{"hidden_size": ' + b"9" * 5000 + b"}",
    }
    for name, text in texts.items():
        add_case("config", f"json-{name}", text, "ConfigError", ["{file}", "JSON"])
    for name, text in {"array": b"[1, 2]", "string": b'"llama"', "number": b"3", "null": b"null", "true": b"true"}.items():
        add_case("config", f"json-top-level-{name}", text, "ConfigError", ["{file}", "not a JSON object"])
    add_case("config", "json-not-utf8", b'{"model_type": "caf\xe9"}', "ConfigError", ["{file}", "not UTF-8"])
    add_case("config", "json-utf16", '{"model_type": "llama"}'.encode("utf-16"), "ConfigError", ["{file}", "UTF-8"])
    qwen = json.dumps(base("qwen3"))
    for token in ("NaN", "Infinity", "-Infinity", "1e400"):
        text = qwen.replace('"rms_norm_eps": 1e-06', f'"rms_norm_eps": {token}').encode()
        add_case("config", f"json-non-finite-{token.strip('-').lower()}", text, "ConfigError", ["{file}", "rms_norm_eps"])
    text = qwen.replace('"head_dim": 128', '"head_dim": 128, "head_dim": 64').encode()
    add_case("config", "json-duplicate-key", text, "ConfigError", ["{file}", "head_dim", "twice"])


INT_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "intermediate_size",
            "vocab_size", "max_position_embeddings", "head_dim")


def wrong_types() -> None:
    for key in INT_KEYS:
        value = base("qwen3")[key]
        for label, bad in (("string", str(value)), ("list", [value]), ("float", value + 0.5), ("bool", True),
                           ("object", {"value": value})):
            config_case(f"type-{key}-{label}", edit("qwen3", **{key: bad}), "ConfigError", key, "integer")
    for key, value in (("rms_norm_eps", 1e-6), ("rope_theta", 1e6)):
        for label, bad in (("string", str(value)), ("bool", True), ("list", [value])):
            config_case(f"type-{key}-{label}", edit("qwen3", **{key: bad}), "ConfigError", key, "number")
    for key in ("tie_word_embeddings", "attention_bias", "use_sliding_window"):
        for label, bad in (("string", "true"), ("int", 1), ("null", None)):
            config_case(f"type-{key}-{label}", edit("qwen3", **{key: bad}), "ConfigError", key, "true or false")
    for label, bad in (("int", 1), ("list", ["silu"]), ("null", None)):
        config_case(f"type-hidden_act-{label}", edit("llama", hidden_act=bad), "ConfigError", "hidden_act", "string")
    config_case("type-torch_dtype-list", edit("llama", torch_dtype=["bfloat16"]), "ConfigError", "torch_dtype")
    config_case("type-torch_dtype-int8", edit("llama", torch_dtype="int8"), "ConfigError", "torch_dtype")
    config_case("type-sliding_window-string", edit("mistral", sliding_window="4096"), "ConfigError", "sliding_window")
    config_case("type-query_pre_attn_scalar-string", edit("gemma", query_pre_attn_scalar="256"), "ConfigError",
                "query_pre_attn_scalar")


def bad_sizes() -> None:
    for key in INT_KEYS:
        for label, bad in (("zero", 0), ("negative", -8), ("huge", 10**12)):
            expected = "implausibly large" if label == "huge" else ">= 1"
            config_case(f"size-{key}-{label}", edit("qwen3", **{key: bad}), "ConfigError", key, expected)
    for key in ("rms_norm_eps", "rope_theta"):
        for label, bad in (("zero", 0), ("negative", -1.0)):
            config_case(f"size-{key}-{label}", edit("qwen3", **{key: bad}), "ConfigError", key, "positive")
    config_case("size-sliding_window-zero", edit("mistral", sliding_window=0), "ConfigError", "sliding_window")
    config_case("size-max_window_layers-negative", edit("qwen2", max_window_layers=-1), "ConfigError", "max_window_layers")
    config_case("size-query_pre_attn_scalar-zero", edit("gemma", query_pre_attn_scalar=0), "ConfigError",
                "query_pre_attn_scalar")


def heads() -> None:
    for name, heads_, kv in (("llama", 32, 5), ("llama", 32, 3), ("qwen3", 16, 6), ("gemma", 4, 3), ("mistral", 32, 12)):
        config_case(f"heads-{name}-{heads_}-kv-{kv}", edit(name, num_attention_heads=heads_, num_key_value_heads=kv),
                    "ConfigError", "num_attention_heads", "num_key_value_heads")
    for name, hidden, heads_ in (("mistral", 4096, 30), ("qwen2", 896, 13), ("smol", 576, 7), ("llama", 2048, 24)):
        raw = edit(name, drop=("head_dim",), hidden_size=hidden, num_attention_heads=heads_, num_key_value_heads=1)
        config_case(f"heads-{name}-hidden-{hidden}-by-{heads_}", raw, "ConfigError", "hidden_size", "num_attention_heads")
    for name, heads_, kv in (("llama", 8, 16), ("qwen3", 16, 32), ("gemma", 1, 4), ("qwen2", 14, 28), ("smol", 3, 9)):
        config_case(f"kv-exceeds-heads-{name}-{heads_}-{kv}", edit(name, num_attention_heads=heads_, num_key_value_heads=kv),
                    "ConfigError", "num_key_value_heads", "exceeds")


def layer_types() -> None:
    pattern = ["sliding_attention"] * 5 + ["full_attention"]
    full = (pattern * 5)[:26]
    for label, value in (("short", full[:-1]), ("long", full + ["full_attention"]), ("empty", []),
                         ("string", "sliding_attention"), ("object", {"0": "full_attention"}), ("null-list", [None])):
        config_case(f"layer_types-{label}", edit("gemma", layer_types=value), "ConfigError", "layer_types")
    for label, kind in (("linear", "linear_attention"), ("mamba", "mamba"), ("empty", ""), ("number", 1),
                        ("null", None), ("upper", "FULL_ATTENTION")):
        config_case(f"layer_types-unknown-{label}", edit("gemma", layer_types=full[:-1] + [kind]),
                    "UnsupportedError", "layer_types")
    config_case("layer_types-qwen3-short", edit("qwen3", layer_types=["full_attention"] * 27), "ConfigError", "layer_types")


def model_types() -> None:
    for label, value, error in (("made-up", "mamba_9000", "UnsupportedError"), ("empty", "", "UnsupportedError"),
                                ("upper", "LLAMA", "UnsupportedError"), ("space", "llama ", "UnsupportedError"),
                                ("t5", "t5", "UnsupportedError"), ("bert", "bert", "UnsupportedError"),
                                ("number", 5, "ConfigError"), ("null", None, "ConfigError"), ("list", ["llama"], "ConfigError"),
                                ("injection", "llama'); import os; os.system('id", "UnsupportedError")):
        config_case(f"model_type-{label}", edit("llama", model_type=value), error, "model_type")
    config_case("model_type-missing", edit("llama", drop=("model_type",)), "ConfigError", "model_type")
    config_case("wrapper-no-text_config", {"model_type": "gemma3", "vision_config": {}}, "ConfigError", "text_config")
    config_case("wrapper-text_config-list", {"model_type": "gemma3", "text_config": [base("gemma")]}, "ConfigError",
                "text_config")
    inner = edit("gemma", drop=("architectures",))
    config_case("wrapper-unknown-key", {"model_type": "gemma3", "text_config": inner, "query_pre_attn_scalar": 256},
                "ConfigError", "query_pre_attn_scalar")
    config_case("wrapper-inner-model_type-list", {"model_type": "gemma3", "text_config": {**inner, "model_type": ["x"]}},
                "UnsupportedError", "model_type")


def unknown_keys() -> None:
    # Keys transformers reads for the family (its modeling code or the shared masking / loading code) that
    # llmgen does not honour; keys it never reads are accepted with a note (tests/test_config_keys.py).
    for name, key, value in (("qwen3", "attention_chunk_size", 8192), ("llama", "unpadded_vocab_size", 128000),
                             ("mistral", "moe_intermediate_size", 1408), ("gemma", "layer_types", ["full_attention"]),
                             ("smol", "hidden_dropout", 0.1), ("qwen2", "moe_intermediate_size", 1408),
                             ("llama", "logits_mup_width_multiplier", 2.0), ("qwen3", "n_routed_experts", 8),
                             ("llama", "__import__('os').system('id')", 1), ("qwen3", "{{ 7*7 }}", 1),
                             ("qwen3", "{% raw %}", 1), ("llama", "a\nb", 1), ("qwen3", "\u202eevil", 1),
                             ("mistral", "'''", 1), ("gemma", "attention_chunk_size", 4096)):
        label = "".join(c if c.isalnum() or c == "_" else "-" for c in key).strip("-")[:30] or "symbols"
        shown = key if key.isprintable() else key.encode("unicode_escape").decode()
        config_case(f"unknown-key-{name}-{label}", edit(name, **{key: value}), "ConfigError", shown)
    for name, key, value in (("llama", "pretraining_tp", 2), ("smol", "rope_interleaved", True),
                             ("gemma", "use_bidirectional_attention", True), ("gemma", "attn_logit_softcapping", 50.0),
                             ("qwen3", "hidden_act", "swiglu_oai"), ("gemma", "hidden_activation", "gelu_fast")):
        config_case(f"unsupported-{name}-{key}", edit(name, **{key: value}), "UnsupportedError", key)


def rope() -> None:
    llama3 = base("llama")["rope_scaling"]
    for label, scaling, error, named in (
        ("unknown-type", {"rope_type": "wat", "factor": 2.0}, "UnsupportedError", "wat"),
        ("type-su", {"type": "su", "factor": 2.0}, "UnsupportedError", "su"),
        ("type-number", {"rope_type": 3}, "UnsupportedError", "rope type"),
        ("linear-no-factor", {"rope_type": "linear"}, "ConfigError", "factor"),
        ("dynamic-no-factor", {"rope_type": "dynamic"}, "ConfigError", "factor"),
        ("yarn-no-factor", {"rope_type": "yarn"}, "ConfigError", "factor"),
        ("longrope-no-short", {"rope_type": "longrope", "long_factor": [1.0] * 32}, "ConfigError", "short_factor"),
        ("linear-factor-string", {"rope_type": "linear", "factor": "2"}, "ConfigError", "factor"),
        ("linear-factor-zero", {"rope_type": "linear", "factor": 0}, "ConfigError", "factor"),
        ("linear-factor-negative", {"rope_type": "linear", "factor": -4.0}, "ConfigError", "factor"),
        ("linear-unknown-key", {"rope_type": "linear", "factor": 2.0, "beta": 1.0}, "ConfigError", "beta"),
        ("llama3-low-above-high", {**llama3, "low_freq_factor": 8.0}, "ConfigError", "low_freq_factor"),
        ("llama3-original-float", {**llama3, "original_max_position_embeddings": 8192.5}, "ConfigError",
         "original_max_position_embeddings"),
        ("yarn-factor-string", {"rope_type": "yarn", "factor": "4"}, "ConfigError", "factor"),
        ("yarn-beta_fast-string", {"rope_type": "yarn", "factor": 4.0, "beta_fast": "32"}, "ConfigError", "beta_fast"),
        ("dynamic-factor-negative", {"rope_type": "dynamic", "factor": -2.0}, "ConfigError", "factor"),
        ("longrope-wrong-length", {"rope_type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 3},
         "ConfigError", "short_factor"),
        ("string", "llama3", "ConfigError", "rope"),
        ("list", [llama3], "ConfigError", "rope"),
    ):
        config_case(f"rope_scaling-{label}", edit("llama", rope_scaling=scaling), error, named)
    for key in ("factor", "low_freq_factor", "high_freq_factor"):
        scaling = {k: v for k, v in llama3.items() if k != key}
        config_case(f"rope_scaling-llama3-no-{key}", edit("llama", rope_scaling=scaling), "ConfigError", key)
        # found by the fuzzer: a null field once compiled into a model that failed at its forward pass
        config_case(f"rope_scaling-llama3-null-{key}", edit("llama", rope_scaling={**llama3, key: None}), "ConfigError", key)
    config_case("rope-both-spellings", edit("llama", rope_parameters={"rope_type": "default", "rope_theta": 1e4}),
                "ConfigError", "rope_parameters", "rope_scaling")
    per_type = {"full_attention": {"rope_type": "default"}, "chunked_attention": {"rope_type": "default"}}
    config_case("rope_parameters-unknown-layer-type", edit("gemma", rope_parameters=per_type), "ConfigError",
                "chunked_attention")
    config_case("rope_parameters-theta-string", edit("qwen3", rope_parameters={"rope_type": "default", "rope_theta": "1e6"}),
                "ConfigError", "rope_theta")
    for label, value in (("zero", 0.0), ("above-one", 1.5), ("string", "0.5")):
        config_case(f"partial_rotary_factor-{label}", edit("llama", partial_rotary_factor=value), "ConfigError",
                    "partial_rotary_factor")


def windows() -> None:
    config_case("window-above-context-mistral", edit("mistral", sliding_window=65536), "ConfigError", "sliding window",
                "context")
    config_case("window-above-context-gemma", edit("gemma", sliding_window=40000), "ConfigError", "sliding window", "context")
    config_case("window-above-context-qwen2", edit("qwen2", use_sliding_window=True, max_window_layers=2,
                                                   sliding_window=65536), "ConfigError", "sliding window", "context")
    config_case("window-missing-for-sliding-layers", edit("gemma", sliding_window=None), "ConfigError", "sliding_window")
    config_case("window-huge", edit("mistral", sliding_window=10**12), "ConfigError", "sliding_window")


def hub() -> None:
    """Hub answers: the test turns each into the exception huggingface_hub raises for it."""
    for label, hub_id, answer, error, names in (
        ("404-unknown-repo", "acme/no-such-model", {"status": 404, "error_code": "RepoNotFound"}, "SourceError",
         ["acme/no-such-model", "no hub repository"]),
        ("404-near-miss", "google/gemma-3-1b", {"status": 404, "error_code": "RepoNotFound"}, "SourceError",
         ["google/gemma-3-1b-it"]),
        ("401-private", "acme/private-model", {"status": 401, "error_code": "RepoNotFound"}, "SourceError",
         ["acme/private-model", "HF_TOKEN"]),
        ("403-gated", "meta-llama/Llama-3.2-1B", {"status": 403, "error_code": "GatedRepo"}, "SourceError",
         ["meta-llama/Llama-3.2-1B", "gated"]),
        ("401-gated-no-token", "acme/gated-model", {"status": 401, "error_code": "GatedRepo"}, "SourceError",
         ["acme/gated-model", "gated"]),
        ("403-forbidden", "acme/forbidden", {"status": 403}, "SourceError", ["acme/forbidden", "token"]),
        ("404-revision", "acme/model", {"status": 404, "error_code": "RevisionNotFound"}, "SourceError",
         ["acme/model", "revision"]),
        ("404-no-config", "acme/weights-only", {"status": 404, "error_code": "EntryNotFound"}, "SourceError",
         ["acme/weights-only", "config.json"]),
        ("disabled", "acme/disabled", {"status": 403, "error_code": "RepoNotFound", "message": "Access to this resource is disabled."},
         "SourceError", ["acme/disabled"]),
        ("offline-unknown", "acme/not-bundled", {"offline": True}, "SourceError", ["acme/not-bundled", "bundled"]),
        ("timeout-unknown", "acme/slow-model", {"network": "ConnectTimeout"}, "SourceError",
         ["acme/slow-model", "ConnectTimeout"]),
        ("connect-error-unknown", "acme/far-model", {"network": "ConnectError"}, "SourceError",
         ["acme/far-model", "ConnectError"]),
        ("503-unknown", "acme/busy-model", {"status": 503}, "SourceError", ["acme/busy-model", "503"]),
        ("offline-pinned-revision", "Qwen/Qwen3-0.6B", {"offline": True, "revision": "v2"}, "SourceError",
         ["Qwen/Qwen3-0.6B", "revision"]),
        ("bad-id-traversal", "../../etc/passwd", {"offline": True}, "SourceError", ["../../etc/passwd"]),
        ("bad-id-space", "acme/my model", {"offline": True}, "SourceError", ["acme/my model"]),
        ("bad-id-three-parts", "a/b/c", {"offline": True}, "SourceError", ["a/b/c"]),
    ):
        data = json.dumps({"id": hub_id, "answer": answer}, indent=2) + "\n"
        add_case("hub", label, data.encode(), error, names)


# A one-layer Llama small enough to commit its checkpoints.
TINY = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 16, "num_hidden_layers": 1, "vocab_size": 32,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "torch_dtype": "float32"}
TINY_TENSORS = {
    "model.embed_tokens.weight": [32, 8], "model.layers.0.input_layernorm.weight": [8],
    "model.layers.0.post_attention_layernorm.weight": [8], "model.layers.0.self_attn.q_proj.weight": [8, 8],
    "model.layers.0.self_attn.k_proj.weight": [4, 8], "model.layers.0.self_attn.v_proj.weight": [4, 8],
    "model.layers.0.self_attn.o_proj.weight": [8, 8], "model.layers.0.mlp.gate_proj.weight": [16, 8],
    "model.layers.0.mlp.up_proj.weight": [16, 8], "model.layers.0.mlp.down_proj.weight": [8, 16],
    "model.norm.weight": [8], "lm_head.weight": [32, 8],
}


def safetensors_bytes(shapes: dict[str, list[int]], header_edit: Any = None) -> bytes:
    """A float32 safetensors file of zeros with these shapes; ``header_edit`` may change the header."""
    header: dict[str, Any] = {}
    offset = 0
    for key in sorted(shapes):
        size = 4 * (shapes[key][0] * shapes[key][1] if len(shapes[key]) == 2 else shapes[key][0])
        header[key] = {"dtype": "F32", "shape": shapes[key], "data_offsets": [offset, offset + size]}
        offset += size
    if header_edit:
        header_edit(header)
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + bytes(offset)


def checkpoint_case(label: str, files: dict[str, bytes], error: str, *names: str) -> None:
    case = f"{len(CASES) + 1:03d}-{label}"
    directory = OUT / "checkpoint" / case
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(TINY, indent=2) + "\n")
    for name, data in files.items():
        (directory / name).write_bytes(data)
    CASES[case] = {"kind": "checkpoint", "path": f"checkpoint/{case}", "error": error, "names": list(names)}


def torch_save(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class Payload:
    """Pickles as a call to os.makedirs: what a hostile .bin does. weights_only=True refuses it."""

    def __reduce__(self):
        return (os.makedirs, ("llmgen-pwned-marker",))


def checkpoints() -> None:
    good = safetensors_bytes(TINY_TENSORS)
    err = "CheckpointError"
    st = "model.safetensors"
    checkpoint_case("st-empty-file", {st: b""}, err, st, "truncated")
    checkpoint_case("st-truncated-length", {st: good[:5]}, err, st, "truncated")
    checkpoint_case("st-truncated-header", {st: good[:40]}, err, st, "header")
    checkpoint_case("st-truncated-data", {st: good[:-100]}, err, st, "outside the file")
    checkpoint_case("st-header-length-huge", {st: struct.pack("<Q", 2**62) + good[8:]}, err, st, "header")
    checkpoint_case("st-header-length-zero", {st: struct.pack("<Q", 0) + good[8:]}, err, st, "header")
    checkpoint_case("st-header-not-json", {st: good[:8] + b"\x00" * (len(good) - 8)}, err, st, "header")
    checkpoint_case("st-header-array", {st: safetensors_bytes({})[:0] + struct.pack("<Q", 8) + b"[1, 2] "}, err, st, "header")
    checkpoint_case("st-not-safetensors", {st: b"PK\x03\x04" + b"\x00" * 60}, err, st, "header")
    for label, change in (
        ("dtype-unknown", lambda h: h["model.norm.weight"].update(dtype="F128")),
        ("shape-negative", lambda h: h["model.norm.weight"].update(shape=[-8])),
        ("offsets-reversed", lambda h: h["model.norm.weight"].update(data_offsets=[32, 0])),
        ("offsets-outside", lambda h: h["model.norm.weight"].update(data_offsets=[10**9, 10**9 + 32])),
        ("size-mismatch", lambda h: h["model.norm.weight"].update(shape=[9])),
        ("entry-not-object", lambda h: h.update({"model.norm.weight": "F32"})),
    ):
        checkpoint_case(f"st-{label}", {st: safetensors_bytes(TINY_TENSORS, change)}, err, st, "model.norm.weight")
    missing = {k: v for k, v in TINY_TENSORS.items() if k != "model.layers.0.self_attn.k_proj.weight"}
    checkpoint_case("tensor-missing", {st: safetensors_bytes(missing)}, err, "missing", "k_proj.weight")
    extra = {**TINY_TENSORS, "model.layers.0.mlp.extra_proj.weight": [8, 8]}
    checkpoint_case("tensor-extra", {st: safetensors_bytes(extra)}, err, "unexpected", "extra_proj.weight")
    checkpoint_case("tensor-extra-layer", {st: safetensors_bytes({**TINY_TENSORS, "model.layers.1.input_layernorm.weight": [8]})},
                    err, "unexpected", "model.layers.1.input_layernorm.weight")
    checkpoint_case("tensor-misshaped", {st: safetensors_bytes({**TINY_TENSORS, "model.norm.weight": [9]})}, err,
                    "wrong shape", "model.norm.weight")
    checkpoint_case("tensor-transposed", {st: safetensors_bytes({**TINY_TENSORS, "model.layers.0.mlp.down_proj.weight": [16, 8]})},
                    err, "wrong shape", "down_proj.weight")
    no_head = {k: v for k, v in TINY_TENSORS.items() if k != "lm_head.weight"}
    checkpoint_case("tensor-head-missing", {st: safetensors_bytes(no_head)}, err, "missing", "lm_head.weight")
    half = {k: v for k, v in TINY_TENSORS.items() if "layers" in k}
    rest = {k: v for k, v in TINY_TENSORS.items() if "layers" not in k}
    index = {"metadata": {}, "weight_map": {**{k: "model-00001-of-00002.safetensors" for k in half},
                                            **{k: "model-00002-of-00002.safetensors" for k in rest}}}
    ix = "model.safetensors.index.json"
    shard1 = safetensors_bytes(half)
    checkpoint_case("index-absent-shard", {ix: json.dumps(index).encode(), "model-00001-of-00002.safetensors": shard1},
                    err, ix, "model-00002-of-00002.safetensors")
    checkpoint_case("index-not-json", {ix: b"{\"weight_map\": "}, err, ix, "weight_map")
    checkpoint_case("index-no-weight_map", {ix: b"{\"metadata\": {}}"}, err, ix, "weight_map")
    traversal = {"weight_map": {k: "../../outside.safetensors" for k in TINY_TENSORS}}
    checkpoint_case("index-shard-traversal", {ix: json.dumps(traversal).encode()}, err, ix, "shard file names")
    absolute = {"weight_map": {k: "/etc/passwd" for k in TINY_TENSORS}}
    checkpoint_case("index-shard-absolute", {ix: json.dumps(absolute).encode()}, err, ix, "shard file names")
    one = {"weight_map": {**{k: "model-00001-of-00001.safetensors" for k in TINY_TENSORS}, "model.extra.weight":
                          "model-00001-of-00001.safetensors"}}
    checkpoint_case("index-lists-absent-tensor", {ix: json.dumps(one).encode(), "model-00001-of-00001.safetensors": good},
                    err, ix, "model.extra.weight")
    checkpoint_case("bin-code-execution", {"pytorch_model.bin": torch_save({"model.norm.weight": Payload()})}, err,
                    "pytorch_model.bin", "weights_only=True")
    checkpoint_case("bin-not-state-dict", {"pytorch_model.bin": torch_save([1, 2, 3])}, err, "pytorch_model.bin",
                    "state dict")
    checkpoint_case("bin-truncated", {"pytorch_model.bin": torch_save({"a": 1})[:50]}, err, "pytorch_model.bin")
    import torch

    state = {k: torch.zeros(v) for k, v in missing.items()}
    checkpoint_case("bin-tensor-missing", {"pytorch_model.bin": torch_save(state)}, err, "missing", "k_proj.weight")
    more_checkpoints()


def more_checkpoints() -> None:
    """Headers the generated loader once let through, and dtypes the two checks must agree on."""
    err, st, norm = "CheckpointError", "model.safetensors", "model.norm.weight"

    def at(header: dict[str, Any], nbytes: int) -> list[int]:  # a span of nbytes where the norm weight's data was
        return [header[norm]["data_offsets"][0], header[norm]["data_offsets"][0] + nbytes]

    for label, change in (
        ("offsets-not-list", lambda h: h[norm].update(data_offsets=0)),
        ("shape-not-list", lambda h: h[norm].update(shape=64)),
        ("dtype-not-string", lambda h: h[norm].update(dtype=["F32"])),
    ):
        checkpoint_case(f"st-{label}", {st: safetensors_bytes(TINY_TENSORS, change)}, err, st, norm)
    checkpoint_case("st-offsets-overlap", {st: safetensors_bytes(TINY_TENSORS, lambda h: h[norm].update(
        data_offsets=[4, 36]))}, err, st, "overlap")
    for label, dtype, nbytes in (("int32", "I32", 32), ("bool", "BOOL", 8), ("float8", "F8_E4M3", 8)):
        checkpoint_case(f"st-dtype-{label}", {st: safetensors_bytes(TINY_TENSORS, lambda h, d=dtype, n=nbytes: h[norm].update(
            dtype=d, data_offsets=at(h, n)))}, err, norm, "not floating point")


def main(argv: list[str]) -> None:
    global OUT
    OUT = Path(argv[0]) if argv else HERE
    for kind in ("config", "hub", "checkpoint"):
        shutil.rmtree(OUT / kind, ignore_errors=True)
    CASES.clear()
    for make in (malformed_json, wrong_types, bad_sizes, heads, layer_types, model_types, unknown_keys, rope, windows,
                 hub, checkpoints):
        make()
    (OUT / "cases.json").write_text(json.dumps(CASES, indent=1, ensure_ascii=True) + "\n")
    print(f"wrote {len(CASES)} cases to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
