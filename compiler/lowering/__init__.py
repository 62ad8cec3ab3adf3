"""Pass 2, lowering: the only code that knows Hugging Face config key names.

``lower(raw)`` turns a parsed config.json into the architecture IR, or raises a one-line
``ConfigError`` / ``UnsupportedError`` naming the key at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ...schemas.arch import Architecture
from ..errors import ConfigError, UnsupportedError
from .families import lower_gemma3_text, lower_llama, lower_mistral, lower_qwen2, lower_qwen3
from .fam_gemma_olmo import FAMILIES_GEMMA_OLMO, REPLICA_GEMMA_OLMO
from .fam_gpt import FAMILIES as FAMILIES_GPT, REPLICAS as REPLICA_GPT
from .fam_phi3_cohere import FAMILIES_PHI3_COHERE, REPLICA_PHI3_COHERE
from .fam_moe import FAMILIES_MOE, REPLICA_MOE
from .fam_deepseek import FAMILIES_DEEPSEEK, REPLICA_DEEPSEEK
from .fam_glm_minimax import FAMILIES_GLM_MINIMAX, REPLICA_GLM_MINIMAX
from .fam_llama4 import FAMILIES_LLAMA4, REPLICA_LLAMA4
from .fam_gptoss import FAMILIES_GPTOSS, REPLICA_GPTOSS
from .reader import ConfigReader

FAMILIES: dict[str, Callable[[ConfigReader, str], Architecture]] = {
    "llama": lower_llama,
    "mistral": lower_mistral,
    "qwen2": lower_qwen2,
    "qwen3": lower_qwen3,
    "gemma3_text": lower_gemma3_text,
}
FAMILIES.update(FAMILIES_GEMMA_OLMO)
FAMILIES.update(FAMILIES_GPT)
FAMILIES.update(FAMILIES_PHI3_COHERE)
FAMILIES.update(FAMILIES_MOE)
FAMILIES.update(FAMILIES_DEEPSEEK)
FAMILIES.update(FAMILIES_GLM_MINIMAX)
FAMILIES.update(FAMILIES_LLAMA4)
FAMILIES.update(FAMILIES_GPTOSS)
# Multimodal wrappers whose text decoder we compile: model_type -> default text model_type.
WRAPPERS = {"gemma3": "gemma3_text"}
# Wrapper keys that only concern the other modalities.
WRAPPER_KEYS = frozenset(
    {"vision_config", "mm_tokens_per_image", "boi_token_index", "eoi_token_index", "image_token_index",
     "initializer_range", "text_config", "tie_word_embeddings"}
)


def text_decoder_config(wrapper: dict[str, Any]) -> dict[str, Any]:
    """A multimodal wrapper's text_config, with the text model_type it defaults to."""
    return {"model_type": WRAPPERS[wrapper["model_type"]], **wrapper["text_config"]}


def supported_model_types() -> list[str]:
    return sorted([*FAMILIES, *WRAPPERS])


def lower(raw: dict[str, Any]) -> Architecture:
    """Lower a config dict to the IR (pass 2 of the pipeline)."""
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a JSON object")
    model_type = raw.get("model_type")
    if not isinstance(model_type, str):
        raise ConfigError("config: missing required key 'model_type'")
    prefix = ""
    where = "config"
    if model_type in WRAPPERS:
        outer = ConfigReader(raw, "config")
        text = outer.any("text_config", None)
        if not isinstance(text, dict):
            raise ConfigError(f"config: model_type {model_type!r} needs a 'text_config' object")
        outer.finish(WRAPPER_KEYS)
        raw = {"tie_word_embeddings": raw.get("tie_word_embeddings", True), **text_decoder_config(raw)}
        model_type, prefix, where = raw["model_type"], "language_model.", "config.text_config"
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        known = ", ".join(supported_model_types())
        raise UnsupportedError(f"config: model_type {model_type!r:.60} is not supported (supported: {known})")
    try:
        arch = family(ConfigReader(raw, where), model_type)
        return arch.model_copy(update={"checkpoint_prefix": prefix}) if prefix else arch
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(part) for part in err["loc"]) or exc.title
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: invalid value for {loc}: {msg}") from None


from .replica import REPLICA_ADJUST  # noqa: E402  (replica imports this package)

REPLICA_ADJUST.update(REPLICA_GEMMA_OLMO)
REPLICA_ADJUST.update(REPLICA_GPT)
REPLICA_ADJUST.update(REPLICA_PHI3_COHERE)
REPLICA_ADJUST.update(REPLICA_MOE)
REPLICA_ADJUST.update(REPLICA_DEEPSEEK)
REPLICA_ADJUST.update(REPLICA_GLM_MINIMAX)
REPLICA_ADJUST.update(REPLICA_LLAMA4)
REPLICA_ADJUST.update(REPLICA_GPTOSS)
from .registry import install  # noqa: E402  (families that register themselves: lowering/fam_*.py)

install(FAMILIES, REPLICA_ADJUST)
