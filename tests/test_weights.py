"""The weight code of the generated model files: load_checkpoint, read_checkpoint, checkpoint_keys.

Every test works on the tiny replica described by a generated test_parity.py (HF_CONFIG for
transformers, MODEL_CONFIG for model.py's Config). The transformers reference is built from
HF_CONFIG, randomised with the replica's own ``randomise`` and written with ``save_pretrained``;
the checkpoints the loader must reject are derived from that one by rewriting its tensors with
``safetensors.torch`` or by damaging the bytes of the file.
"""

from __future__ import annotations

import importlib.util
import collections
import json
import re
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from llmgen.compiler.runtime.generated_files import import_generated
from safetensors.torch import load_file, save_file

GENERATED = Path(__file__).resolve().parents[1] / "generated"
BATCH, SEQ_LEN = 2, 20
TOLERANCE = 1e-5
SHARD_SIZE = "20KB"


def import_by_path(path: Path, name: str) -> ModuleType:
    """Import a file under a unique module name (registered first: model.py uses dataclasses);
    model.py: the directory's runtime.py, model.py and weights.py as one module."""
    if path.name == "model.py":
        return import_generated(path.parent, name)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Replica:
    """A generated model directory, its tiny replica in transformers, and a saved checkpoint."""

    name: str
    gen: ModuleType  # the generated model.py
    parity: ModuleType  # the generated test_parity.py
    reference: Any  # the randomised transformers PreTrainedModel
    checkpoint: Path  # directory written by save_pretrained (single file)
    input_ids: torch.Tensor
    expected: torch.Tensor  # float32 logits of the reference

    def config(self):
        return self.gen.Config(**self.parity.MODEL_CONFIG)

    def load(self, path: Path, **kwargs) -> torch.nn.Module:
        return self.gen.load_checkpoint(path, self.config(), **kwargs)

    def logits(self, model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return model(self.input_ids)


def build_replica(name: str, root: Path, seed: int = 0) -> Replica:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    slug = re.sub(r"\W", "_", name)
    gen = import_by_path(GENERATED / name / "model.py", f"_test_weights_model_{slug}")
    parity = import_by_path(
        GENERATED / name / "test_parity.py", f"_test_weights_parity_{slug}"
    )
    hf_config = transformers.AutoConfig.for_model(**parity.HF_CONFIG)
    reference = transformers.AutoModelForCausalLM.from_config(
        hf_config, attn_implementation="eager", dtype=torch.float32
    )
    generator = torch.Generator().manual_seed(seed)
    parity.randomise(reference, generator)
    reference.eval()
    input_ids = torch.randint(
        0, parity.HF_CONFIG["vocab_size"], (BATCH, SEQ_LEN), generator=generator
    )
    with torch.no_grad():
        expected = reference(input_ids=input_ids).logits
    assert expected.abs().max().item() > 0.1, "degenerate reference logits"
    checkpoint = root / "single"
    reference.save_pretrained(checkpoint)
    assert (checkpoint / "model.safetensors").is_file()
    return Replica(name, gen, parity, reference, checkpoint, input_ids, expected)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Replica:
    return build_replica("gemma-3-1b-it", tmp_path_factory.mktemp("gemma"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Replica:
    return build_replica("Llama-3.2-1B", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def llama_untied(tmp_path_factory: pytest.TempPathFactory) -> Replica:
    return build_replica("Llama-3.1-8B", tmp_path_factory.mktemp("llama_untied"))


@pytest.fixture(params=["gemma", "llama"])
def replica(request: pytest.FixtureRequest) -> Replica:
    return request.getfixturevalue(request.param)


def rewrite(
    replica: Replica, dest: Path, edit: Callable[[dict[str, torch.Tensor]], None]
) -> Path:
    """A copy of the replica's checkpoint whose tensors were changed in place by `edit`."""
    tensors = load_file(replica.checkpoint / "model.safetensors")
    edit(tensors)
    dest.mkdir(parents=True, exist_ok=True)
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def load_error(replica: Replica, path: Path) -> str:
    """The message of the WeightLoadError that loading `path` raises, checked to be one line."""
    with pytest.raises(replica.gen.WeightLoadError) as err:
        replica.load(path)
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------ loading


def test_single_file_checkpoint_matches_transformers(replica: Replica) -> None:
    diff = (
        (replica.logits(replica.load(replica.checkpoint)) - replica.expected)
        .abs()
        .max()
    )
    assert diff.item() <= TOLERANCE


def test_checkpoint_given_as_file_path(gemma: Replica) -> None:
    model = gemma.load(gemma.checkpoint / "model.safetensors")
    assert (gemma.logits(model) - gemma.expected).abs().max().item() <= TOLERANCE


def test_sharded_checkpoint_matches_transformers(
    replica: Replica, tmp_path: Path
) -> None:
    replica.reference.save_pretrained(tmp_path, max_shard_size=SHARD_SIZE)
    index = tmp_path / "model.safetensors.index.json"
    assert index.is_file()
    assert not (tmp_path / "model.safetensors").exists()
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    assert len(shards) > 1, shards
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == shards

    model = replica.load(tmp_path)
    diff = (replica.logits(model) - replica.expected).abs().max()
    assert diff.item() <= TOLERANCE


def test_loaded_parameters_are_real_and_model_is_in_eval_mode(replica: Replica) -> None:
    model = replica.load(replica.checkpoint)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    on_meta = [name for name, t in tensors.items() if t.is_meta]
    assert not on_meta, on_meta
    assert not model.training
    assert not any(module.training for module in model.modules())
    # The values are the checkpoint's, not a fresh initialisation.
    reference = replica.reference.state_dict()
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32, name
        assert torch.equal(param, reference[name]), name


def test_bfloat16_loading(replica: Replica) -> None:
    model = replica.load(replica.checkpoint, dtype=torch.bfloat16)
    params = dict(model.named_parameters())
    assert params
    assert {p.dtype for p in params.values()} == {torch.bfloat16}
    assert not any(p.is_meta for p in params.values())
    reference = replica.reference.state_dict()
    for name, param in params.items():
        assert torch.equal(param, reference[name].to(torch.bfloat16)), name
    logits = replica.logits(model)
    assert logits.dtype == torch.bfloat16
    assert logits.shape == replica.expected.shape
    assert torch.isfinite(logits).all()


# ------------------------------------------------------------------------ mismatched checkpoints

MISSING_KEY = "model.layers.1.self_attn.k_proj.weight"
EXTRA_KEY = "model.layers.1.mlp.extra_proj.weight"
RESHAPED_KEY = "model.norm.weight"


def drop_key(tensors: dict[str, torch.Tensor]) -> None:
    del tensors[MISSING_KEY]


def add_key(tensors: dict[str, torch.Tensor]) -> None:
    tensors[EXTRA_KEY] = torch.ones(3, 5)


def reshape_key(tensors: dict[str, torch.Tensor]) -> None:
    tensors[RESHAPED_KEY] = torch.ones(tensors[RESHAPED_KEY].shape[0] + 1)


LABELS = ("missing", "unexpected", "wrong shape")


@pytest.mark.parametrize(
    ("edit", "key", "label"),
    [
        (drop_key, MISSING_KEY, "missing"),
        (add_key, EXTRA_KEY, "unexpected"),
        (reshape_key, RESHAPED_KEY, "wrong shape"),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_mismatched_checkpoint_is_reported(
    replica: Replica, tmp_path: Path, edit, key: str, label: str
) -> None:
    assert MISSING_KEY in replica.gen.checkpoint_keys(replica.config())
    message = load_error(replica, rewrite(replica, tmp_path, edit))
    assert key in message
    assert label in message
    for other in LABELS:
        if other != label:
            assert other not in message, message


def test_wrong_shape_message_gives_both_shapes(gemma: Replica, tmp_path: Path) -> None:
    message = load_error(gemma, rewrite(gemma, tmp_path, reshape_key))
    hidden = gemma.parity.MODEL_CONFIG["hidden_size"]
    assert f"({hidden + 1},)" in message and f"({hidden},)" in message


def test_all_problems_reported_in_one_error(replica: Replica, tmp_path: Path) -> None:
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        drop_key(tensors)
        add_key(tensors)
        reshape_key(tensors)

    message = load_error(replica, rewrite(replica, tmp_path, edit))
    for key, label in zip((MISSING_KEY, EXTRA_KEY, RESHAPED_KEY), LABELS):
        assert key in message and label in message, message


def test_extra_layer_is_unexpected(gemma: Replica, tmp_path: Path) -> None:
    layers = gemma.parity.MODEL_CONFIG["num_hidden_layers"]
    extra = f"model.layers.{layers}.mlp.up_proj.weight"

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        tensors[extra] = tensors["model.layers.0.mlp.up_proj.weight"].clone()

    message = load_error(gemma, rewrite(gemma, tmp_path, edit))
    assert "unexpected" in message and extra in message


# ---------------------------------------------------------------------------------- tied head


def test_tied_model_ignores_a_stored_lm_head(replica: Replica, tmp_path: Path) -> None:
    assert "lm_head.weight" in replica.gen.IGNORED_KEYS
    assert "lm_head.weight" not in replica.gen.checkpoint_keys(replica.config())

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        # A different value from the embedding: the tied model must not use it.
        tensors["lm_head.weight"] = torch.full_like(
            tensors["model.embed_tokens.weight"], 3.0
        )

    path = rewrite(replica, tmp_path, edit)
    assert "lm_head.weight" in load_file(path / "model.safetensors")
    model = replica.load(path)
    assert (replica.logits(model) - replica.expected).abs().max().item() <= TOLERANCE


def test_untied_model_uses_its_lm_head(llama_untied: Replica) -> None:
    assert "lm_head.weight" not in llama_untied.gen.IGNORED_KEYS
    assert "lm_head.weight" in load_file(llama_untied.checkpoint / "model.safetensors")
    model = llama_untied.load(llama_untied.checkpoint)
    head = dict(model.named_parameters())["lm_head.weight"]
    embed = dict(model.named_parameters())["model.embed_tokens.weight"]
    assert not torch.equal(head, embed)
    diff = (llama_untied.logits(model) - llama_untied.expected).abs().max()
    assert diff.item() <= TOLERANCE


def test_untied_model_reports_missing_lm_head(
    llama_untied: Replica, tmp_path: Path
) -> None:
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        del tensors["lm_head.weight"]

    message = load_error(llama_untied, rewrite(llama_untied, tmp_path, edit))
    assert "missing" in message and "lm_head.weight" in message
    assert "unexpected" not in message


# ---------------------------------------------------------------------------------- corrupt files


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def corrupt_error(replica: Replica, path: Path, names: Path) -> str:
    """Loading `path` raises WeightLoadError (nothing rawer) whose message names `names`."""
    message = load_error(replica, path)
    assert str(names) in message, message
    return message


def test_header_length_past_end_of_file(gemma: Replica, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 1000))  # 8 bytes claiming a 1000-byte header
    corrupt_error(gemma, path, path)
    corrupt_error(gemma, tmp_path, path)  # found inside a directory too


def test_file_shorter_than_header_length_field(gemma: Replica, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x01\x02\x03")
    corrupt_error(gemma, path, path)


def test_header_is_not_json(gemma: Replica, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    text = b"this is not json at all!"
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(16))
    corrupt_error(gemma, path, path)


def test_header_is_json_but_not_an_object(gemma: Replica, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes([1, 2, 3], bytes(16)))  # type: ignore[arg-type]
    corrupt_error(gemma, path, path)


def test_tensor_data_past_end_of_file(gemma: Replica, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    header = {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}
    path.write_bytes(safetensors_bytes(header, bytes(16)))  # 16 of the 64 bytes
    message = corrupt_error(gemma, path, path)
    assert "'w'" in message


def test_truncated_real_checkpoint(gemma: Replica, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    data = (gemma.checkpoint / "model.safetensors").read_bytes()
    path.write_bytes(
        data[:-100]
    )  # an interrupted download: the last tensor is cut short
    corrupt_error(gemma, tmp_path, path)


def test_unknown_dtype(gemma: Replica, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    header = {"w": {"dtype": "F8_XYZ", "shape": [4], "data_offsets": [0, 4]}}
    path.write_bytes(safetensors_bytes(header, bytes(4)))
    corrupt_error(gemma, path, path)


def test_index_names_a_missing_shard(gemma: Replica, tmp_path: Path) -> None:
    gemma.reference.save_pretrained(tmp_path, max_shard_size=SHARD_SIZE)
    index = tmp_path / "model.safetensors.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    assert len(shards) > 1
    (tmp_path / shards[1]).unlink()
    message = corrupt_error(gemma, tmp_path, index)
    assert shards[1] in message


def test_index_is_not_json(gemma: Replica, tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("{ not json")
    corrupt_error(gemma, tmp_path, index)


def test_directory_without_checkpoint(gemma: Replica, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    corrupt_error(gemma, tmp_path, tmp_path)


def test_path_that_does_not_exist(gemma: Replica, tmp_path: Path) -> None:
    corrupt_error(gemma, tmp_path / "nowhere", tmp_path / "nowhere")


# Malformed headers that currently escape as raw exceptions (see the test ids). Each is
# strict: once the loader is fixed it XPASSes, which fails, and the marker should go.
RAW_ESCAPES = [
    pytest.param(
        {"w": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}},
        id="negative-dims-RuntimeError",
    ),
    pytest.param(
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0.0, 16.0]}},
        id="float-offsets-TypeError",
    ),
]


@pytest.mark.parametrize("header", RAW_ESCAPES)
def test_malformed_header_entry_is_a_weight_load_error(
    gemma: Replica, tmp_path: Path, header: dict
) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(header, bytes(16)))
    corrupt_error(gemma, path, path)


@pytest.mark.parametrize(
    "weight_map",
    [
        pytest.param(["model-00001-of-00001.safetensors"], id="list-AttributeError"),
        pytest.param({"model.norm.weight": 3}, id="non-string-shard-TypeError"),
        pytest.param({"model.norm.weight": "../outside.safetensors"}, id="shard-outside-the-directory"),
    ],
)
def test_malformed_index_is_a_weight_load_error(
    gemma: Replica, tmp_path: Path, weight_map
) -> None:
    shard = tmp_path / "model-00001-of-00001.safetensors"
    shutil.copy(gemma.checkpoint / "model.safetensors", shard)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    corrupt_error(gemma, tmp_path, index)


# ------------------------------------------------------------------------------ checkpoint_keys


@pytest.mark.parametrize("name", ["gemma-3-1b-it", "Llama-3.2-1B", "Llama-3.1-8B"])
@pytest.mark.parametrize("layers", [1, 3, 30])
def test_checkpoint_keys_expand_each_layer(name: str, layers: int) -> None:
    slug = re.sub(r"\W", "_", name)
    gen = import_by_path(GENERATED / name / "model.py", f"_test_weights_keys_{slug}")
    keys = gen.checkpoint_keys(gen.Config(num_hidden_layers=layers, **pattern_for(gen, layers)))
    assert not any("{" in k or "{" in v for k, v in keys.items())
    per_layer = collections.Counter(int(m.group(1)) for k in keys if (m := re.match(r"model\.layers\.(\d+)\.", k)))
    assert set(per_layer) == set(range(layers)) and len(set(per_layer.values())) == 1  # each layer alike
    assert [k for k in keys if not k.startswith("model.layers.")]  # embedding, final norm
    if hasattr(gen, "WEIGHT_MAP"):  # a map from the checkpoint's names to the parameters'
        for template, name in gen.WEIGHT_MAP.items():
            for i in range(layers) if "{i}" in template else [0]:
                assert keys[template.format(i=i)] == name.format(i=i)
    else:  # the checkpoint's names are the parameters' own
        assert all(key == name for key, name in keys.items())
    # The expanded names are exactly the parameters of a model of that depth.
    with torch.device("meta"):
        model = gen.CausalLM(
            gen.Config(num_hidden_layers=layers, **pattern_for(gen, layers))
        )
    assert set(keys.values()) == {n for n, _ in model.named_parameters()}


def pattern_for(gen: ModuleType, layers: int) -> dict:
    """A layer pattern long enough for `layers`, for models that have one."""
    if "layer_pattern" not in gen.Config.__dataclass_fields__:
        return {}
    default = gen.Config().layer_pattern
    return {"layer_pattern": (default * (layers // len(default) + 1))[:layers]}
