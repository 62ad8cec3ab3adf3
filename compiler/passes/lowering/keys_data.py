"""What transformers itself does with a config's keys, as data (``transformers_keys.json``).

The file is generated out of the installed transformers (the reference, 5.24.0) by
``python -m llmgen.compiler.passes.lowering.keys_data --write``; a test regenerates it and compares.
It holds:

- ``pretrained_config``: the attributes ``PreTrainedConfig`` itself defines or pops from its
  keyword arguments (generic to every model), and ``legacy_pretrained_config``: those the 4.x
  ``PretrainedConfig.__init__`` (4.57.1) took, which full-form configs saved then still carry;
- ``families``: per model_type of the causal-LM auto mapping (and the wrappers llmgen knows),
  the ``ForCausalLM`` class, the keys its config class ``defines`` (dataclass fields, attribute_map
  aliases, keyword arguments its ``__init__``/``__post_init__`` pops) and the config attributes its
  modeling code ``reads`` (``config.<name>``, ``getattr(config, "<name>")``, ... in its modeling file
  and the sibling modeling files it imports from);
- ``generic_reads``: the config attributes transformers' shared modeling code reads.

A key a config carries that its class does not define and no modeling code reads is stored and
ignored by transformers: llmgen ignores it too, with a note (``ConfigReader.finish``).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

DATA = "transformers_keys.json"
# The 4.x PretrainedConfig.__init__ arguments (transformers 4.57.1 configuration_utils.py): named
# parameters and the kwargs it pops, generation parameters aside (they are in generation_params).
LEGACY_PRETRAINED_CONFIG = (
    "output_hidden_states", "output_attentions", "return_dict", "torchscript", "torch_dtype", "dtype",
    "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder",
    "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder", "architectures",
    "finetuning_task", "id2label", "label2id", "num_labels", "task_specific_params", "problem_type",
    "tokenizer_class", "prefix", "bos_token_id", "pad_token_id", "eos_token_id", "sep_token_id",
    "decoder_start_token_id", "name_or_path", "_name_or_path", "_commit_hash", "attn_implementation",
    "_attn_implementation_autoset", "transformers_version", "tf_legacy_loss", "use_bfloat16",
    "gradient_checkpointing",
)
# Shared modeling code whose config reads count for every family.
GENERIC_SOURCES = (
    "modeling_utils.py", "modeling_rope_utils.py", "masking_utils.py", "cache_utils.py",
    "modeling_layers.py", "modeling_flash_attention_utils.py", "generation/utils.py",
    "integrations/sdpa_attention.py", "integrations/eager_paged.py", "integrations/moe.py",
    "integrations/hub_kernels.py", "integrations/accelerate.py", "integrations/tensor_parallel.py",
)
_READ = re.compile(r"\b(\w*config\w*)(?:\(\))?\s*\.\s*([A-Za-z_]\w*)")
_GETATTR = re.compile(r"\b(?:getattr|hasattr)\(\s*[\w.()]*?(\w*config\w*)\s*,\s*[\"']([A-Za-z_]\w*)[\"']")
# Objects named like a config that are not the model's: their attributes are no config keys.
NOT_MODEL_CONFIGS = frozenset({"generation_config", "compile_config", "watermarking_config", "quantization_config",
                               "distributed_config", "cache_config", "assistant_config", "GenerationConfig"})
_POPPED = re.compile(r"\bkwargs\.(?:pop|get)\(\s*[\"']([A-Za-z_]\w*)[\"']")
_ASSIGNED = re.compile(r"\bself\.([A-Za-z_]\w*)\s*=[^=]")
_SIBLING = re.compile(r"from \.\.(\w+)\.modeling_(\w+) import")


@functools.lru_cache(maxsize=1)
def keys_data() -> dict[str, Any]:
    """The committed data (see the module docstring)."""
    return json.loads(resources.files("llmgen.compiler.passes.lowering").joinpath(DATA).read_text())


def generic_keys() -> frozenset[str]:
    data = keys_data()
    return frozenset(data["pretrained_config"]) | frozenset(data["legacy_pretrained_config"]) | frozenset(
        data["generation_params"])


def ignored_by_transformers(model_type: Any, keys: set[str]) -> tuple[str | None, list[str]]:
    """(the transformers class, the subset of ``keys`` it never reads); (None, []) for an unknown family."""
    family = keys_data()["families"].get(model_type) if isinstance(model_type, str) else None
    if family is None:
        return None, []
    known = set(family["defines"]) | set(family["reads"]) | set(keys_data()["generic_reads"]) | generic_keys()
    return family["class"], sorted(keys - known)


def aliases(model_type: str) -> dict[str, str]:
    """The family config class's attribute_map: alias key -> the attribute it stands for."""
    family = keys_data()["families"].get(model_type)
    return family["aliases"] if family else {}


def _reads(text: str) -> set[str]:
    """Attribute names read from a config object (lower-case: config keys, not prose after a "config.")."""
    found = _READ.findall(text) + _GETATTR.findall(text)
    return {name for owner, name in found if owner not in NOT_MODEL_CONFIGS and not name[0].isupper()}


def _modeling_reads(models: Path, module: str, seen: set[str]) -> set[str]:
    """Config attributes read by models/<module>/modeling_<module>.py and the sibling files it imports."""
    path = models / module / f"modeling_{module}.py"
    if module in seen or not path.is_file():
        return set()
    seen.add(module)
    text = path.read_text()
    found = _reads(text)
    for folder, name in _SIBLING.findall(text):
        if folder == name:
            found |= _modeling_reads(models, folder, seen)
    return found


def _config_defines(config_class: type) -> set[str]:
    import dataclasses
    import inspect

    defined = {f.name for f in dataclasses.fields(config_class)} if dataclasses.is_dataclass(config_class) else set()
    aliases = getattr(config_class, "attribute_map", {})
    defined |= set(aliases) | set(aliases.values())
    for klass in config_class.__mro__:
        if klass.__module__.startswith("transformers.models."):
            source = inspect.getsource(klass)
            defined |= set(_POPPED.findall(source)) | set(_ASSIGNED.findall(source))
    return defined


def wrapper_types() -> dict[str, str]:
    """Wrappers llmgen compiles (model_type -> its text model_type)."""
    from . import FOREIGN_WRAPPERS, WRAPPERS

    return {name: text for name, text in WRAPPERS.items() if name not in FOREIGN_WRAPPERS}


def decoder_model_types() -> dict[str, str]:
    """Every decoder-only text model_type of the causal-LM auto mapping -> its ForCausalLM class: encoder
    models (also masked-LM), sequence-to-sequence decoders and encoder-decoder configs left out."""
    from transformers.models.auto import configuration_auto, modeling_auto as auto

    left_out = set(auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES) | set(auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)
    found = {}
    for model_type, name in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items():
        if model_type in left_out:
            continue
        config_class = configuration_auto.CONFIG_MAPPING[model_type]
        if getattr(config_class, "is_encoder_decoder", False) is True:
            continue
        subs = set(getattr(config_class, "sub_configs", {}) or {})
        if subs and "text_config" not in subs:  # decoders of audio / encoder-decoder models
            continue
        found[model_type] = name
    return found


def generate() -> dict[str, Any]:
    """The data, out of the installed transformers."""
    import dataclasses
    import inspect

    import transformers
    from transformers import GenerationConfig, PreTrainedConfig
    from transformers.models.auto import configuration_auto

    root = Path(transformers.__file__).parent
    models = root / "models"
    base = {f.name for f in dataclasses.fields(PreTrainedConfig)} | set(
        _POPPED.findall(inspect.getsource(PreTrainedConfig.__post_init__)))
    generic = set()
    for name in GENERIC_SOURCES:
        if (root / name).is_file():
            generic |= _reads((root / name).read_text())
    types = decoder_model_types()
    for wrapper in wrapper_types():
        types.setdefault(wrapper, "")
    families = {}
    for model_type, name in sorted(types.items()):
        config_class = configuration_auto.CONFIG_MAPPING[model_type]
        module = configuration_auto.model_type_to_module_name(model_type)
        reads = _modeling_reads(models, module, set())
        families[model_type] = {
            "class": name or config_class.__name__.removesuffix("Config") + "ForConditionalGeneration",
            "defines": sorted(_config_defines(config_class) - base),
            "aliases": dict(sorted(getattr(config_class, "attribute_map", {}).items())),
            "reads": sorted(reads - generic),
        }
    return {
        "transformers_version": transformers.__version__,
        "pretrained_config": sorted(base | {"num_labels", "name_or_path", "_name_or_path"}),
        "legacy_pretrained_config": sorted(LEGACY_PRETRAINED_CONFIG),
        "generation_params": sorted(GenerationConfig._get_default_generation_params()),
        "generic_reads": sorted(generic),
        "families": families,
        "decoder_model_types": decoder_model_types(),  # the snapshot `llmgen list --all` uses without transformers
    }


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    text = dump(generate())
    if "--write" in sys.argv:
        (Path(__file__).parent / DATA).write_text(text)
    else:
        sys.stdout.write(text)
