"""Pass 2, lowering: the only code that knows Hugging Face config key names.

``lower(raw)`` turns a parsed config.json into the architecture IR, or raises a one-line
``ConfigError`` / ``UnsupportedError`` naming the key at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ....schemas.arch import Architecture, NestedDecoder
from ...basics.errors import ConfigError, UnsupportedError
from .families import lower_gemma3_text, lower_llama, lower_mistral, lower_qwen2, lower_qwen3
from .fam_gemma_olmo import FAMILIES_GEMMA_OLMO, REPLICA_GEMMA_OLMO
from .fam_gpt import FAMILIES as FAMILIES_GPT, REPLICAS as REPLICA_GPT
from .fam_phi3_cohere import FAMILIES_PHI3_COHERE, REPLICA_PHI3_COHERE
from .fam_moe import FAMILIES_MOE, REPLICA_MOE
from .fam_deepseek import FAMILIES_DEEPSEEK, REPLICA_DEEPSEEK
from .fam_glm_minimax import FAMILIES_GLM_MINIMAX, REPLICA_GLM_MINIMAX
from .fam_llama4 import FAMILIES_LLAMA4, REPLICA_LLAMA4
from .fam_gptoss import FAMILIES_GPTOSS, REPLICA_GPTOSS
from .fam_qwen3_next import FAMILIES_QWEN3_NEXT, REPLICA_QWEN3_NEXT
from .fam_vl import FAMILIES_VL, REPLICA_VL
from .quant import lower_quantization
from .reader import NOTES, STRICT, ConfigReader

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
FAMILIES.update(FAMILIES_VL)
FAMILIES.update(FAMILIES_QWEN3_NEXT)
# Multimodal wrappers whose text decoder we compile: model_type -> default text model_type.
WRAPPERS = {"gemma3": "gemma3_text", "llama4": "llama4_text", "kimi_k25": "deepseek_v3", "qwen2_vl": "qwen2_vl_text",
            "qwen2_5_vl": "qwen2_5_vl_text", "qwen3_vl": "qwen3_vl_text", "qwen3_vl_moe": "qwen3_vl_moe_text",
            "glm4v": "glm4v_text", "glm4v_moe": "glm4v_moe_text",
            "qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text", "gemma4": "gemma4_text",
            "gemma3n": "gemma3n_text", "kimi_k3": "kimi_linear", "step3p7": "step3p5"}
# Wrappers transformers 5.24 does not define (no config class, not in its tables): read only to refuse them with
# what their text model needs (Kimi-K3: see fam_kimi_linear).
FOREIGN_WRAPPERS = frozenset({"kimi_k3"})
# Where the text decoder's keys sit in a wrapper's checkpoint (the hub releases' layout; default below).
# (transformers 5 saves Qwen3.5's text model from AutoModelForCausalLM without one.)
WRAPPER_PREFIX: dict[str, str] = {name: "" for name in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "glm4v",
                                                       "glm4v_moe", "qwen3_5", "qwen3_5_moe", "gemma4", "gemma3n",
                                                       "step3p7")}
# Wrappers keeping the backbone's keys elsewhere than the head's (Architecture.backbone_checkpoint).
WRAPPER_BACKBONE = {name: "model.language_model." for name in ("qwen3_vl", "qwen3_vl_moe", "glm4v", "glm4v_moe", "gemma4",
                                                                "gemma3n")}
# Wrappers whose decoder keys have no prefix: the other parts' prefixes, skipped on load.
WRAPPER_SKIPPED = {"qwen2_vl": ("visual.",), "qwen2_5_vl": ("visual.",), "qwen3_vl": ("model.visual.",),
                   "qwen3_vl_moe": ("model.visual.",), "glm4v": ("model.visual.",),
                   "glm4v_moe": ("model.visual.",),
                   **{name: ("model.vision_tower.", "model.embed_vision.", "model.audio_tower.", "model.embed_audio.")
                      for name in ("gemma4", "gemma3n")},
                   "step3p7": ("vision_model.", "vit_large_projector.")}
# Wrappers whose hub configs may hold the text keys at the top level, without a text_config (transformers 4.x).
FLAT_WRAPPERS = frozenset({"qwen2_vl", "qwen2_5_vl"})
# Published checkpoints of these wrappers nest the decoder (model.language_model.*) beside the vision tower
# and the multi-token-prediction head: the generated loader renames and skips (IR: nested_decoder).
WRAPPER_NESTED = {name: NestedDecoder(prefix="model.language_model.", skipped=("model.visual.", "mtp."))
                  for name in ("qwen3_5", "qwen3_5_moe")}
DEFAULT_WRAPPER_PREFIX = "language_model."
# The wrapper config class's tie_word_embeddings default (transformers ties by the wrapper's config).
WRAPPER_TIED = {"llama4": False, "qwen2_vl": False, "qwen2_5_vl": False, "qwen3_vl": False, "qwen3_vl_moe": False,
                "glm4v": False, "glm4v_moe": False, "step3p7": False}
# Families that read their quantization_config themselves (gpt-oss: MXFP4 experts).
OWN_QUANTIZATION = frozenset({"gpt_oss", "kimi_linear"})  # kimi_linear: after naming Kimi-K3's gaps
# Wrapper keys that only concern the other modalities.
WRAPPER_KEYS = frozenset(
    {"vision_config", "mm_tokens_per_image", "boi_token_index", "eoi_token_index", "image_token_index",
     "initializer_range", "text_config", "tie_word_embeddings",
     # Kimi-K2.5 (transformers' Kimi_K25Config and the hub file's remote-code keys)
     "projection_hidden_size", "projection_layer_norm_eps", "image_token_id", "video_token_id",
     "vision_start_token_id", "vision_end_token_id", "media_placeholder_token_id", "video_placeholder",
     "use_unified_vision_chunk", "ignore_index",
     "image_placeholder",  # Kimi-K3
     # Qwen2-VL, Qwen2.5-VL
     "vision_token_id", "language_model_only",
     # Gemma 4 (the audio tower and its tokens, the image tokens' count)
     "audio_config", "audio_token_id", "boa_token_id", "eoa_token_id", "eoa_token_index", "boi_token_id",
     "eoi_token_id", "vision_soft_tokens_per_image",
     "audio_soft_tokens_per_image",  # Gemma 3n
     # GLM-4V
     "image_start_token_id", "image_end_token_id", "video_start_token_id", "video_end_token_id",
     # Step-3.7 (the vision projector's bias)
     "projector_bias"}
)


def text_decoder_config(wrapper: dict[str, Any]) -> dict[str, Any]:
    """A multimodal wrapper's text_config, with the text model_type it defaults to (a flat wrapper's
    top-level keys but its own, as transformers moves them into its text_config)."""
    text = wrapper.get("text_config")
    if text is None and wrapper["model_type"] in FLAT_WRAPPERS:
        text = {k: v for k, v in wrapper.items() if k not in WRAPPER_KEYS and k not in ("model_type", "architectures")}
    return {"model_type": WRAPPERS[wrapper["model_type"]], **text}


def wrapper_prefix(model_type: str) -> str:
    return WRAPPER_PREFIX.get(model_type, DEFAULT_WRAPPER_PREFIX)


def family_titles() -> dict[str, str]:
    """model_type -> the family's name in generated files (docstring, README): the tables' and the registered."""
    from .families import TITLES
    from .registry import titles

    return {**TITLES, **titles()}


def supported_model_types() -> list[str]:
    return sorted([*FAMILIES, *WRAPPERS])


def lower(raw: dict[str, Any], *, strict: bool = False) -> Architecture:
    """Lower a config dict to the IR (pass 2 of the pipeline)."""
    return lower_noted(raw, strict=strict)[0]


def lower_noted(raw: dict[str, Any], *, strict: bool = False) -> tuple[Architecture, tuple[str, ...]]:
    """The IR and one note per config object with keys transformers itself never reads (ignored here
    too; ``strict``: refused)."""
    notes: list[str] = []
    tokens = NOTES.set(notes), STRICT.set(strict)
    try:
        return _lower(raw), tuple(notes)
    finally:
        NOTES.reset(tokens[0])
        STRICT.reset(tokens[1])


def _lower(raw: dict[str, Any]) -> Architecture:
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a JSON object")
    model_type = raw.get("model_type")
    if not isinstance(model_type, str):
        raise ConfigError("config: missing required key 'model_type'")
    prefix, nested = "", None
    where = "config"
    quant: dict[str, Any] = {}
    skipped: tuple[str, ...] = ()
    backbone = ""
    if model_type in WRAPPERS:
        quant = lower_quantization(raw, where)  # a wrapper's checkpoint is quantized as a whole
        outer = ConfigReader(raw, "config")
        text = outer.any("text_config", None)
        flat = text is None and model_type in FLAT_WRAPPERS
        if not isinstance(text, dict) and not flat:
            raise ConfigError(f"config: model_type {model_type!r} needs a 'text_config' object")
        if not flat:  # a flat wrapper's keys are read as its text decoder's
            outer.finish(WRAPPER_KEYS | {"quantization_config"})
        tied = raw.get("tie_word_embeddings", WRAPPER_TIED.get(model_type, True))  # the wrapper's decides
        prefix = wrapper_prefix(model_type)
        raw = {**text_decoder_config(raw), "tie_word_embeddings": tied}
        nested = WRAPPER_NESTED.get(model_type)
        skipped = WRAPPER_SKIPPED.get(model_type, ())
        backbone = WRAPPER_BACKBONE.get(model_type, "")
        model_type, where = raw["model_type"], "config" if flat else "config.text_config"
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        known = ", ".join(supported_model_types())
        raise UnsupportedError(f"config: model_type {model_type!r:.60} is not supported (supported: {known})")
    if model_type not in OWN_QUANTIZATION and "quantization_config" in raw:
        quant = lower_quantization(raw, where)
        raw = {key: value for key, value in raw.items() if key != "quantization_config"}
    try:
        arch = family(ConfigReader(raw, where), model_type)
        update = {**quant, **({"checkpoint_prefix": prefix} if prefix else {}),
                  **({"skipped_prefixes": skipped} if skipped else {}),
                  **({"backbone_checkpoint": backbone} if backbone else {})}
        if nested is not None:
            update["nested_decoder"] = nested
        return arch.model_copy(update=update) if update else arch
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
REPLICA_ADJUST.update(REPLICA_VL)
REPLICA_ADJUST.update(REPLICA_QWEN3_NEXT)
from .registry import install  # noqa: E402  (families that register themselves: lowering/fam_*.py)

install(FAMILIES, REPLICA_ADJUST)
