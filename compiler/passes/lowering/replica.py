"""Tiny replicas: a real config shrunk to toy width and depth, its structure kept.

Kept: every kind of layer (in the original order), grouped KV heads (n_kv < n_heads, or
MQA / MHA exactly as the original), an explicit head_dim different from hidden/heads, the
RoPE tables and their scaling, biases, norms and caps. Shrunk: widths, depth, vocabulary,
the sliding window (so a short test sequence crosses it). Output uses Hugging Face keys,
so transformers can build the same model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ....schemas.arch import Architecture
from ...insight.describe import layer_pattern
from ..mixers import is_softmax
from . import WRAPPER_KEYS, WRAPPERS, text_decoder_config

# The smallest other-modality parts a wrapper accepts: they never touch text logits.
TINY_VISION: dict[str, dict[str, Any]] = {
    "qwen3_5": {}, "qwen3_5_moe": {},  # AutoModelForCausalLM builds the text model alone
    "gemma3n": {},  # its MobileNet vision tower needs timm: tests build the text model and wrap its keys
    "gemma3": {
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                          "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        "mm_tokens_per_image": 4, "boi_token_index": 253, "eoi_token_index": 254, "image_token_index": 255,
    },
    "llama4": {
        "vision_config": {"model_type": "llama4_vision_model", "hidden_size": 32, "intermediate_size": 64,
                          "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
                          "vision_output_dim": 32, "projector_input_dim": 32, "projector_output_dim": 32},
        "boi_token_index": 253, "eoi_token_index": 254, "image_token_index": 255,
    },
    **{name: {
        "vision_config": {"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "intermediate_size": 64,
                          "out_hidden_size": 64, "patch_size": 14},
        "image_token_id": 251, "video_token_id": 252, "vision_start_token_id": 253, "vision_end_token_id": 254,
    } for name in ("qwen2_vl", "qwen2_5_vl")},
    **{name: {
        "vision_config": {"depth": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64, "out_hidden_size": 64,
                          "patch_size": 16, "num_position_embeddings": 16, "deepstack_visual_indexes": [0]},
        "image_token_id": 251, "video_token_id": 252, "vision_start_token_id": 253, "vision_end_token_id": 254,
    } for name in ("qwen3_vl", "qwen3_vl_moe")},
    "gemma4": {
        "vision_config": {"model_type": "gemma4_vision", "hidden_size": 32, "intermediate_size": 64,
                          "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16,
                          "global_head_dim": 16, "patch_size": 4, "position_embedding_size": 64},
        "audio_config": None, "image_token_id": 251, "video_token_id": 252, "audio_token_id": 253,
        "boi_token_id": 254, "eoi_token_id": 255, "boa_token_id": 250, "eoa_token_id": 249, "eoa_token_index": 249,
    },
    **{name: {
        "vision_config": {"depth": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64, "out_hidden_size": 64,
                          "patch_size": 14},
        "image_token_id": 251, "video_token_id": 252, "image_start_token_id": 253, "image_end_token_id": 254,
        "video_start_token_id": 249, "video_end_token_id": 250,
    } for name in ("glm4v", "glm4v_moe")},
    "step3p7": {
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                          "image_size": 28, "patch_size": 14},
        "image_token_id": 250,
    },
    "kimi_k25": {
        "vision_config": {"model_type": "kimi_k25_vision", "patch_size": 14, "pos_emb_height": 4, "pos_emb_width": 4,
                          "pos_emb_time": 2, "num_attention_heads": 2, "num_hidden_layers": 1, "hidden_size": 32,
                          "intermediate_size": 64, "merge_kernel_size": [2, 2]},
        "projection_hidden_size": 32, "media_placeholder_token_id": 250, "image_token_id": 251, "video_token_id": 252,
        "vision_start_token_id": 253, "vision_end_token_id": 254, "pad_token_id": 0, "bos_token_id": 1,
        "eos_token_id": 2,
    },
}
# Families whose transformers config has a head_dim of its own (others derive hidden / heads).
EXPLICIT_HEAD_DIM = frozenset({"llama", "mistral", "qwen3", "gemma3_text"})
HIDDEN, HEADS, HEAD_DIM, INTERMEDIATE, VOCAB, WINDOW = 64, 4, 32, 96, 256, 8
# Per-family fix-ups after the generic shrink: rename the generic keys to the family's own
# (GPT-2's n_embd, ...), shrink per-layer lists, keep RoPE factor lists the right length.
# Each takes (tiny, arch) and edits ``tiny`` in place. Registered in lowering/__init__.py.
ReplicaAdjust = Callable[[dict[str, Any], Architecture], None]
REPLICA_ADJUST: dict[str, ReplicaAdjust] = {}


def replica_layers(arch: Architecture) -> int:
    """Fewest leading layers holding every layer kind, plus one (so a kind repeats)."""
    pattern = layer_pattern(arch)  # kinds: sliding, full, full without RoPE
    kinds = set(pattern)
    seen: set[str] = set()
    for index, kind in enumerate(pattern):
        seen.add(kind)
        if seen == kinds:
            return min(arch.num_layers, max(2, index + 2))
    return arch.num_layers


def tiny_replica(raw: dict[str, Any], arch: Architecture) -> dict[str, Any]:
    """A shrunk copy of ``raw`` (a text-decoder config for multimodal wrappers)."""
    if raw.get("model_type") in WRAPPERS:
        wrapper = copy.deepcopy(raw)
        if "text_config" not in wrapper:  # a flat wrapper: its replica nests the text keys, as transformers 5 does
            wrapper = {k: v for k, v in wrapper.items() if k in WRAPPER_KEYS or k in ("model_type", "architectures")}
        wrapper["text_config"] = tiny_replica(text_decoder_config(copy.deepcopy(raw)), arch)
        wrapper.pop("quantization_config", None)
        wrapper.update(TINY_VISION[raw["model_type"]])
        return wrapper
    tiny = copy.deepcopy(raw)
    tiny.pop("quantization_config", None)  # the replica is saved in float32 (dequantizers: tests/test_quantized.py)
    attn = next((layer.mixer for layer in arch.layers if is_softmax(layer)), None)
    if attn is None:  # recurrent layers only: the attention keys (if any) are left to the family's adjust
        kv = None
    elif attn.num_kv_heads == attn.num_heads:
        kv = HEADS
    elif attn.num_kv_heads == 1:
        kv = 1
    else:
        kv = 2
    layers = replica_layers(arch)
    if "head_dim" in tiny or tiny.get("model_type") in EXPLICIT_HEAD_DIM:
        tiny["head_dim"] = HEAD_DIM
    tiny.update(
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        **({"num_key_value_heads": kv} if kv is not None else {}),
        intermediate_size=INTERMEDIATE,
        vocab_size=VOCAB,
        num_hidden_layers=layers,
        torch_dtype="float32",
    )
    if isinstance(tiny.get("layer_types"), list):
        tiny["layer_types"] = tiny["layer_types"][:layers]
    if any(getattr(layer.mixer, "span", None) == "sliding" for layer in arch.layers):
        tiny["sliding_window"] = WINDOW
    for key, value in (("pad_token_id", 0), ("bos_token_id", 1), ("eos_token_id", 2)):
        if tiny.get(key) is not None:
            tiny[key] = value
    adjust = REPLICA_ADJUST.get(tiny.get("model_type", ""))
    if adjust is not None:
        adjust(tiny, arch)
    return tiny
