"""Llama 4 text decoder (``llama4_text``): chunked local attention, NoPE global layers and
routed experts with a shared expert.

Reads the keys transformers 5's ``Llama4TextConfig`` and ``modeling_llama4.py`` read, with their
defaults (the config class fills ``no_rope_layers``, ``moe_layers`` and ``layer_types`` from
``no_rope_layer_interval``, ``interleave_moe_layer_step`` and ``attention_chunk_size``; given lists
win). Per layer: RoPE (interleaved, complex layout) or none (NoPE); RoPE layers attend within
their chunk and, with ``use_qk_norm``, L2-normalise each query and key head after RoPE; NoPE
layers attend to every earlier key and, with ``attn_temperature_tuning``, scale their queries
with position. The feed-forward is a MoE on the ``moe_layers`` (top-k logits, a sigmoid of each,
the weight scaling the expert's input; plus a shared expert) and a dense MLP of
``intermediate_size_mlp`` elsewhere.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Attention, Head, Layer, Mlp, Moe, MoeNames, Norm, TemperatureTuning
from ...basics.errors import ConfigError, UnsupportedError
from .fam_moe import TRAINING_ONLY, _activation, _experts
from .families import build, full_head_rotary, read_common
from .reader import ConfigReader
from .rope import lower_rope

LLAMA4_LAYER_TYPES = ("chunked_attention", "full_attention")
# Replica: 8 narrow experts, top 4 (as the other MoE replicas); the temperature tuning's floor scale shrunk like the chunk, so
# the NoPE layers' query scale steps several times within the test sequence.
REPLICA_EXPERTS, REPLICA_TOP_K, REPLICA_EXPERT_WIDTH, REPLICA_MLP_WIDTH, REPLICA_FLOOR_SCALE = 8, 4, 32, 96, 4


def _index_list(r: ConfigReader, key: str, values: Any, length: int) -> list[int]:
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{r.where}: key '{key}' must be a list of integers")
    if len(values) < length:
        raise ConfigError(f"{r.where}: key '{key}' needs at least {length} entries (one per layer), got {len(values)}")
    return values


def _rope_layers(r: ConfigReader, layers: int) -> list[bool]:
    """no_rope_layers: 1 = the layer uses RoPE, 0 = NoPE; missing or empty: NoPE every interval-th layer."""
    interval = r.int("no_rope_layer_interval", 4)
    given = r.any("no_rope_layers", None)
    if not given:  # transformers: `no_rope_layers if no_rope_layers else default`
        return [(i + 1) % interval != 0 for i in range(layers)]
    flags = _index_list(r, "no_rope_layers", given, layers)[:layers]
    if any(flag not in (0, 1) for flag in flags):
        raise ConfigError(f"{r.where}: key 'no_rope_layers' entries must be 0 (NoPE) or 1 (RoPE)")
    return [flag == 1 for flag in flags]


def _moe_layers(r: ConfigReader, layers: int) -> set[int]:
    step = r.int("interleave_moe_layer_step", 1)
    given = r.any("moe_layers", None)
    if given is None:
        return set(range(step - 1, layers, step))
    indices = _index_list(r, "moe_layers", given, 0)
    if any(not 0 <= i < layers for i in indices):
        raise ConfigError(f"{r.where}: key 'moe_layers' has an index outside 0..{layers - 1}")
    return set(indices)


def _layer_types(r: ConfigReader, rope: list[bool], chunk: int | None) -> list[str]:
    default = ["chunked_attention" if uses_rope and chunk is not None else "full_attention" for uses_rope in rope]
    given = r.any("layer_types", None)
    if given is None:
        return default
    if not isinstance(given, list) or len(given) != len(rope):
        raise ConfigError(f"{r.where}: 'layer_types' must be a list of {len(rope)} entries (one per layer)")
    for index, (kind, uses_rope) in enumerate(zip(given, rope)):
        if kind not in LLAMA4_LAYER_TYPES:
            raise UnsupportedError(f"{r.where}: 'layer_types' entry {kind!r:.40} is not supported "
                                   f"({', '.join(LLAMA4_LAYER_TYPES)})")
        if kind == "chunked_attention" and chunk is None:
            raise ConfigError(f"{r.where}: 'layer_types' has chunked_attention but 'attention_chunk_size' is null")
        if kind == "chunked_attention" and not uses_rope:
            raise UnsupportedError(f"{r.where}: 'layer_types' entry {index} is chunked on a NoPE layer (not supported)")
    return list(given)


def lower_llama4_text(r: ConfigReader, model_type: str) -> Architecture:
    """Llama 4 text decoder: chunked RoPE layers with L2 QK-norm, NoPE global layers with temperature tuning."""
    c = read_common(r, kv_default=8, head_dim_default=128, max_pos=4096 * 32)
    mlp_width = r.int("intermediate_size_mlp", 16384)
    activation = _activation(r)
    experts, top_k = _experts(r, "num_local_experts", 16, 1)
    if experts < 1:
        raise ConfigError(f"{r.where}: key 'num_local_experts' must be >= 1, got {experts}")
    sparse = _moe_layers(r, c.num_layers)
    rope = _rope_layers(r, c.num_layers)
    chunk = r.int("attention_chunk_size", 8192, nullable=True)
    layer_types = _layer_types(r, rope, chunk)
    qk_norm = r.bool("use_qk_norm", True)
    tuning = r.bool("attn_temperature_tuning", True)
    floor_scale = r.int("floor_scale", 8192)
    attn_scale = r.float("attn_scale", 0.1, positive=False)
    bias = r.bool("attention_bias", False)
    norm = Norm(kind="rmsnorm", eps=r.float("rms_norm_eps", 1e-5))
    ropes = full_head_rotary(r, lower_rope(r, head_dim=c.head_dim, layer_types={"full_attention"},
                                           default_theta={"full_attention": 500000.0, "sliding_attention": 500000.0}))
    table = ropes["full_attention"].model_copy(update={"layout": "interleaved"})  # complex pairs (2i, 2i+1)
    mlp = Mlp(gated=True, activation=activation, intermediate_size=mlp_width)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=c.intermediate_size, activation=activation,
              router="topk_sigmoid", routing_dtype="input", storage="fused_in_out", weighted="input",
              shared_expert_size=c.intermediate_size, names=MoeNames(router="router"))
    arch = build(r, c, layer_types=["full_attention"] * c.num_layers, window=None, ropes={"full_attention": table},
                 norm=norm, attention={"scale": c.head_dim**-0.5}, mlp=mlp, block="pre_norm", embed_scale=None,
                 head=Head(tied=r.bool("tie_word_embeddings", False)), model_type=model_type,
                 extra_allowed=TRAINING_ONLY)
    layers = []
    for i, (uses_rope, kind) in enumerate(zip(rope, layer_types)):
        chunked = kind == "chunked_attention"
        l2 = qk_norm and uses_rope  # transformers: an L2 norm on RoPE layers only
        mixer = Attention(
            span="chunked" if chunked else "full", chunk_size=chunk if chunked else None, num_heads=c.num_heads,
            num_kv_heads=c.num_kv_heads, head_dim=c.head_dim, rope=table.name if uses_rope else None,
            q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias, scale=c.head_dim**-0.5,
            qk_norm="l2" if l2 else "none", qk_norm_spec=norm if l2 else None,
            temperature=TemperatureTuning(floor_scale=floor_scale, attn_scale=attn_scale)
            if tuning and not uses_rope else None,
        )
        layers.append(Layer(index=i, mixer=mixer, ffn=moe if i in sparse else mlp, block="pre_norm", norm=norm))
    return arch.model_copy(update={"layers": tuple(layers), "rope": (table,) if any(rope) else (),
                                   "names": arch.names.model_copy(update={"mlp": "feed_forward"})})


def replica_llama4(tiny: dict[str, Any], arch: Architecture) -> None:
    """Eight narrow experts, top 4; the chunk shrunk to the replica window and the floor scale to 4;
    enough layers for every attention kind and both feed-forward kinds, the per-layer lists
    written out from the full model's layers."""
    layers = tiny["num_hidden_layers"]
    ffn = [layer.ffn.kind for layer in arch.layers]
    for kind in set(ffn):
        layers = max(layers, min(ffn.index(kind) + 2, arch.num_layers))
    kept = arch.layers[:layers]
    tiny.update(
        num_hidden_layers=layers, num_local_experts=REPLICA_EXPERTS, num_experts_per_tok=REPLICA_TOP_K,
        intermediate_size=REPLICA_EXPERT_WIDTH, intermediate_size_mlp=REPLICA_MLP_WIDTH,
        no_rope_layers=[int(layer.mixer.rope is not None) for layer in kept],
        moe_layers=[layer.index for layer in kept if layer.ffn.kind == "moe"],
        layer_types=["chunked_attention" if layer.mixer.span == "chunked" else "full_attention" for layer in kept],
    )
    from .replica import WINDOW  # (replica imports this package)

    if any(layer.mixer.span == "chunked" for layer in arch.layers):
        tiny["attention_chunk_size"] = WINDOW
    if "floor_scale" in tiny or any(layer.mixer.temperature for layer in arch.layers):
        tiny["floor_scale"] = REPLICA_FLOOR_SCALE


FAMILIES_LLAMA4 = {"llama4_text": lower_llama4_text}
REPLICA_LLAMA4 = {"llama4_text": replica_llama4}
