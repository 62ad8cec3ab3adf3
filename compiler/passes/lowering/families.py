"""Per-family lowering: Hugging Face config keys -> architecture IR.

Each family reads exactly the keys its transformers implementation reads, with the same
defaults, and builds the IR from them. New behaviour is a new IR field, never a check on a
model's name downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, Head, Layer, Mlp, Norm, Rope
from ...basics.errors import ConfigError, UnsupportedError
from .reader import ConfigReader
from .rope import lower_rope

ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_new",
    "relu": "relu",
}
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float": "float32", "half": "float16"}
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class Common:
    """The hyper-parameters every decoder family shares."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    dtype: str


def read_common(r: ConfigReader, *, kv_default: int | None, head_dim_default: int | None, max_pos: int) -> Common:
    hidden = r.int("hidden_size")
    heads = r.int("num_attention_heads")
    kv = r.int("num_key_value_heads", kv_default if kv_default is not None else heads, nullable=True) or heads
    head_dim = r.int("head_dim", head_dim_default, nullable=True)
    if head_dim is None:
        if hidden % heads:
            raise ConfigError(
                f"{r.where}: 'hidden_size' ({hidden}) is not divisible by 'num_attention_heads' ({heads})"
                " and no 'head_dim' is given"
            )
        head_dim = hidden // heads
    if kv > heads:
        raise ConfigError(f"{r.where}: 'num_key_value_heads' ({kv}) exceeds 'num_attention_heads' ({heads})")
    if heads % kv:
        raise ConfigError(f"{r.where}: 'num_attention_heads' ({heads}) is not a multiple of 'num_key_value_heads' ({kv})")
    dtype = r.any("torch_dtype", None) or r.any("dtype", None) or "float32"
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ConfigError(f"{r.where}: key 'torch_dtype' = {dtype!r:.40} is not a floating dtype llmgen knows")
    return Common(
        vocab_size=r.int("vocab_size"),
        hidden_size=hidden,
        intermediate_size=r.int("intermediate_size"),
        num_layers=r.int("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        max_position_embeddings=r.int("max_position_embeddings", max_pos),
        dtype=DTYPES[dtype],
    )


def read_layer_types(r: ConfigReader, num_layers: int, default: list[str]) -> list[str]:
    """The v5 ``layer_types`` list when present, else the family's default pattern."""
    layer_types = r.any("layer_types", None)
    if layer_types is None:
        return default
    if not isinstance(layer_types, list) or len(layer_types) != num_layers:
        raise ConfigError(f"{r.where}: 'layer_types' must be a list of {num_layers} entries (one per layer)")
    for value in layer_types:
        if value not in LAYER_TYPES:
            raise UnsupportedError(f"{r.where}: 'layer_types' entry {value!r:.40} is not supported ({', '.join(LAYER_TYPES)})")
    return list(layer_types)


def build(
    r: ConfigReader,
    c: Common,
    *,
    layer_types: list[str],
    window: int | None,
    ropes: dict[str, Rope],
    norm: Norm,
    attention: dict[str, Any],
    mlp: Mlp,
    block: str,
    embed_scale: float | None,
    head: Head,
    model_type: str,
    extra_allowed: frozenset[str] = frozenset(),
) -> Architecture:
    """Assemble the IR once every key is read, then reject the keys nobody read."""
    r.finish(extra_allowed)
    if "sliding_attention" in layer_types and window is None:
        raise ConfigError(f"{r.where}: sliding-window layers need 'sliding_window'")
    tables = {t.name: t for t in ropes.values()}
    layers = []
    for index, layer_type in enumerate(layer_types):
        sliding = layer_type == "sliding_attention"
        mixer = Attention(
            span="sliding" if sliding else "full",
            window=window if sliding else None,
            num_heads=c.num_heads,
            num_kv_heads=c.num_kv_heads,
            head_dim=c.head_dim,
            rope=ropes[layer_type].name,
            **attention,
        )
        layers.append(Layer(index=index, mixer=mixer, ffn=mlp, block=block, norm=norm))
    return Architecture(
        model_type=model_type,
        hidden_size=c.hidden_size,
        max_position_embeddings=c.max_position_embeddings,
        dtype=c.dtype,
        embedding=Embedding(vocab_size=c.vocab_size, scale=embed_scale, padding_idx=padding_idx(r, c.vocab_size)),
        rope=tuple(tables[name] for name in sorted(tables)),
        layers=tuple(layers),
        final_norm=norm,
        head=head,
    )


# transformers' config classes' pad_token_id defaults (None elsewhere); their models give the
# embedding padding_idx=pad_token_id (all families here but GPT-2 and GPT-NeoX).
# the name a generated file gives each family of the tables above (registered families carry theirs)
TITLES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma3_text": "Gemma 3 (text decoder)",
          "gpt2": "GPT-2", "gpt_neox": "GPT-NeoX", "phi": "Phi", "gemma": "Gemma", "gemma2": "Gemma 2", "olmo2": "OLMo 2",
          "olmo3": "OLMo 3", "smollm3": "SmolLM3", "mixtral": "Mixtral", "qwen2_moe": "Qwen2-MoE", "qwen3_moe": "Qwen3-MoE",
          "olmoe": "OLMoE", "granitemoe": "Granite-MoE", "llama4_text": "Llama 4 (text decoder)", "gpt_oss": "gpt-oss",
          "qwen3_next": "Qwen3-Next", "qwen3_5_text": "Qwen3.5 (text decoder)",
          "qwen3_5_moe_text": "Qwen3.5-MoE (text decoder)", "phi3": "Phi-3", "stablelm": "StableLM",
          "cohere": "Cohere (Command R)", "cohere2": "Cohere 2", "granite": "Granite", "deepseek_v2": "DeepSeek-V2",
          "deepseek_v3": "DeepSeek-V3", "glm4_moe": "GLM-4.5 (GLM-4-MoE)", "minimax_m2": "MiniMax-M2",
          "kimi_k2": "Kimi K2", "qwen2_vl_text": "Qwen2-VL (text decoder)", "qwen2_5_vl_text": "Qwen2.5-VL (text decoder)",
          "qwen3_vl_text": "Qwen3-VL (text decoder)"}

PAD_DEFAULTS = {"gemma": 0, "gemma2": 0, "gemma3_text": 0, "cohere": 0, "cohere2": 0, "olmo2": 1, "olmo3": 1,
                "olmoe": 1, "smollm3": 128004, "phi3": 32000}


def padding_idx(r: ConfigReader, vocab_size: int) -> int | None:
    """pad_token_id as nn.Embedding takes it (a negative index counts from the end), or None."""
    pad = r.int("pad_token_id", PAD_DEFAULTS.get(r.raw.get("model_type")), nullable=True, minimum=-vocab_size)
    if pad is not None and pad >= vocab_size:
        raise ConfigError(f"{r.where}: key 'pad_token_id' ({pad}) must be below 'vocab_size' ({vocab_size})")
    return None if pad is None else pad % vocab_size


def default_partial_rotary(r: ConfigReader, partial: float) -> None:
    """The family's top-level partial_rotary_factor when the config gives none (as its config class sets it)."""
    if "partial_rotary_factor" not in r.raw:
        r.raw = {**r.raw, "partial_rotary_factor": partial}


def full_head_rotary(r: ConfigReader, ropes: dict[str, Rope]) -> dict[str, Rope]:
    """For families whose model rotates the whole head: a partial_rotary_factor (top level or in
    the RoPE parameters) would make transformers' tables and rotation disagree, so refuse it."""
    if any(table.partial_rotary_factor != 1.0 for table in ropes.values()):
        raise UnsupportedError(
            f"{r.where}: key 'partial_rotary_factor' < 1 is not supported for model_type "
            f"{r.raw.get('model_type')!r} (its model rotates the whole head)"
        )
    return ropes


def _lower_llama_like(
    r: ConfigReader, model_type: str, c: Common, *, layer_types: list[str], window: int | None,
    qkv_bias: bool, o_bias: bool, mlp_bias: bool, qk_norm: bool = False,
    extra_allowed: frozenset[str] = frozenset(),
) -> Architecture:
    """The Llama block (pre-norm, GQA, SwiGLU, RoPE) with the switches its descendants flip."""
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6))
    ropes = full_head_rotary(r, lower_rope(r, head_dim=c.head_dim, layer_types=set(layer_types),
                                           default_theta={t: 10000.0 for t in LAYER_TYPES}))
    mlp = Mlp(gated=True, activation=r.str("hidden_act", "silu", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size, bias=mlp_bias)
    attention: dict[str, Any] = dict(q_bias=qkv_bias, k_bias=qkv_bias, v_bias=qkv_bias, o_bias=o_bias,
                                     scale=c.head_dim**-0.5)
    if qk_norm:
        attention.update(qk_norm="per_head", qk_norm_spec=norm)
    return build(
        r, c, layer_types=layer_types, window=window, ropes=ropes, norm=norm, attention=attention, mlp=mlp,
        block="pre_norm", embed_scale=None, head=Head(tied=r.bool("tie_word_embeddings", False)),
        model_type=model_type, extra_allowed=extra_allowed,
    )


def _qwen_sliding(r: ConfigReader, c: Common) -> tuple[list[str], int | None]:
    """Qwen 2/3: an optional window on the layers from `max_window_layers` on."""
    use_sliding = r.bool("use_sliding_window", False)
    window = r.int("sliding_window", 4096, nullable=True) if use_sliding else None
    r.any("sliding_window")
    first_sliding = r.int("max_window_layers", 28, minimum=0)
    default_types = [
        "sliding_attention" if window is not None and i >= first_sliding else "full_attention"
        for i in range(c.num_layers)
    ]
    return read_layer_types(r, c.num_layers, default_types), window


def lower_llama(r: ConfigReader, model_type: str) -> Architecture:
    """Llama 1/2/3 and SmolLM2: pre-norm, GQA, SwiGLU, RoPE (default / linear / llama3)."""
    c = read_common(r, kv_default=None, head_dim_default=None, max_pos=2048)
    r.require_value("pretraining_tp", (1, None), 1)
    r.require_value("rope_interleaved", (False,), False)
    bias = r.bool("attention_bias", False)
    return _lower_llama_like(
        r, model_type, c, layer_types=["full_attention"] * c.num_layers, window=None,
        qkv_bias=bias, o_bias=bias, mlp_bias=r.bool("mlp_bias", False),
        extra_allowed=frozenset({"max_sequence_length"}),  # early Llama exports: informational only
    )


def lower_mistral(r: ConfigReader, model_type: str) -> Architecture:
    """Mistral: Llama's block with an optional sliding window on every layer."""
    c = read_common(r, kv_default=8, head_dim_default=None, max_pos=4096 * 32)
    window = r.int("sliding_window", 4096, nullable=True)
    kind = "sliding_attention" if window is not None else "full_attention"
    return _lower_llama_like(r, model_type, c, layer_types=[kind] * c.num_layers, window=window,
                             qkv_bias=False, o_bias=False, mlp_bias=False)


def lower_qwen2(r: ConfigReader, model_type: str) -> Architecture:
    """Qwen2: Llama's block with biases on q, k and v (not o)."""
    c = read_common(r, kv_default=32, head_dim_default=None, max_pos=32768)
    layer_types, window = _qwen_sliding(r, c)
    return _lower_llama_like(r, model_type, c, layer_types=layer_types, window=window,
                             qkv_bias=True, o_bias=False, mlp_bias=False)


def lower_qwen3(r: ConfigReader, model_type: str) -> Architecture:
    """Qwen3: Llama's block plus RMSNorm on each query and key head (QK-norm)."""
    c = read_common(r, kv_default=32, head_dim_default=128, max_pos=32768)
    layer_types, window = _qwen_sliding(r, c)
    bias = r.bool("attention_bias", False)
    return _lower_llama_like(r, model_type, c, layer_types=layer_types, window=window,
                             qkv_bias=bias, o_bias=bias, mlp_bias=False, qk_norm=True)


def lower_gemma3_text(r: ConfigReader, model_type: str, *, tied_default: bool = True) -> Architecture:
    """Gemma 3 text decoder: sandwich (1+w) RMSNorms, QK-norm, 5:1 local/global attention, two RoPE tables."""
    c = read_common(r, kv_default=4, head_dim_default=256, max_pos=131072)
    if r.bool("use_bidirectional_attention", False):
        raise UnsupportedError(f"{r.where}: key 'use_bidirectional_attention' = true is not supported")
    window = r.int("sliding_window", 4096, nullable=True)
    given = r.int("sliding_window_pattern", None, nullable=True), r.int("_sliding_window_pattern", None, nullable=True)
    if None not in given and given[0] != given[1]:  # transformers' to_dict writes the private copy too
        raise ConfigError(f"{r.where}: 'sliding_window_pattern' and '_sliding_window_pattern' differ ({given[0]}, {given[1]})")
    pattern = given[0] or given[1] or 6
    default_types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(c.num_layers)]
    layer_types = read_layer_types(r, c.num_layers, default_types)
    bias = r.bool("attention_bias", False)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-6), weight_offset=1.0, weight_in_compute_dtype=True)
    ropes = full_head_rotary(r, lower_rope(
        r, head_dim=c.head_dim, layer_types=set(layer_types),
        default_theta={"full_attention": 1_000_000.0, "sliding_attention": 10_000.0},
        local_theta_key="rope_local_base_freq",
    ))
    mlp = Mlp(gated=True, activation=r.str("hidden_activation", "gelu_pytorch_tanh", choices=ACTIVATIONS),
              intermediate_size=c.intermediate_size)
    scalar = r.float("query_pre_attn_scalar", 256.0)
    # transformers' Gemma 3 reads this key but never applies it; refuse rather than guess.
    r.require_value("attn_logit_softcapping", (None,), None)
    return build(
        r, c, layer_types=layer_types, window=window, ropes=ropes, norm=norm,
        attention=dict(q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=scalar**-0.5,
                       qk_norm="per_head", qk_norm_spec=norm),
        mlp=mlp, block="sandwich", embed_scale=c.hidden_size**0.5,
        head=Head(tied=r.bool("tie_word_embeddings", tied_default),
                  softcap=r.float("final_logit_softcapping", None, nullable=True)),
        model_type=model_type,
    )
