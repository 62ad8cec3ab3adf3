"""Kimi Linear (``kimi_linear``) and the text model of its multimodal wrapper Kimi-K3 (``kimi_k3``).

Reads the keys transformers 5's ``KimiLinearConfig`` and modeling file read, with their defaults and
their aliases (``attribute_map``: the saved config writes ``num_experts``, ``num_experts_per_token``,
``moe_renormalize``, ... for ``num_local_experts``, ``num_experts_per_tok``, ``norm_topk_prob``, ...).
Layers of ``layer_types`` "linear_attention" get Kimi Delta Attention, "full_attention" ones latent
attention without any RoPE (NoPE MLA: the "rope" channels of q and the shared key are used unrotated);
the feed-forward is a dense MLP on the "dense" layers of ``mlp_layer_types`` (the first
``first_k_dense_replace``), DeepSeek-V3-style sigmoid-routed experts with shared experts on the others.

The published checkpoint layout is transformers' ``save_pretrained`` output: every layer's feed-forward
under ``block_sparse_moe`` (the dense ones too), experts ``w1``/``w3``/``w2``, the shared experts
``gate_proj``/``up_proj``/``down_proj``, the three convolutions ``q_conv1d``/``k_conv1d``/``v_conv1d``.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Embedding, Head, Layer, Mla, Mlp, Moe, MoeNames, Names, Norm
from ....schemas.kda import KimiDelta
from ...basics.errors import ConfigError, UnsupportedError
from .fam_deepseek import REPLICA_MLA, _grouping
from .fam_moe import TRAINING_ONLY
from .families import padding_idx, read_common
from .quant import lower_quantization
from .reader import ConfigReader
from .registry import family

HYBRID_TYPES = ("linear_attention", "full_attention")
FFN_TYPES = ("dense", "sparse")
# transformers' attribute_map: the key a saved config writes -> the alias it also accepts.
ALIASES = {"model_max_length": "max_position_embeddings", "moe_renormalize": "norm_topk_prob",
           "num_expert_group": "n_group", "num_experts": "num_local_experts",
           "num_experts_per_token": "num_experts_per_tok", "num_shared_experts": "n_shared_experts"}
LINEAR_ATTN_KEYS = {"head_dim": "linear_head_dim", "num_heads": "linear_num_heads",
                    "short_conv_kernel_size": "linear_conv_kernel_dim"}
# Keys of Moonshot's own Kimi code that transformers' kimi_linear does not implement, and the values at
# which they change nothing transformers computes (None: absent). Any other value is refused, all named.
NOT_IN_TRANSFORMERS: dict[str, tuple[Any, ...]] = {
    "activation_situ_beta": (None,), "activation_situ_linear_beta": (None,),  # hidden_act "situ"
    "mla_use_output_gate": (None, False), "mla_use_nope": (None, True),
    "routed_expert_hidden_size": (None,), "latent_moe_use_norm": (None, False),  # experts in a latent width
    "attn_res_block_size": (None,), "moe_layer_freq": (None, 1), "num_nextn_predict_layers": (None, 0),
    "moe_router_activation_func": (None, "sigmoid"), "topk_method": (None, "noaux_tc"), "use_grouped_topk": (None, True),
}
LINEAR_NOT_IN_TRANSFORMERS: dict[str, tuple[Any, ...]] = {"gate_lower_bound": (None,), "use_full_rank_gate": (None, False)}
KIMI_NAMES = Names(mlp="block_sparse_moe")
KIMI_MOE_NAMES = MoeNames(gate="w1", up="w3", down="w2", shared_expert="shared_experts", shared_gate="gate_proj",
                          shared_up="up_proj", shared_down="down_proj")


def _aliased(r: ConfigReader) -> None:
    """Fold each alias into the key transformers saves (both given: they must agree)."""
    raw = dict(r.raw)
    for key, alias in ALIASES.items():
        if alias in raw:
            value = raw.pop(alias)
            if key in raw and raw[key] != value:
                raise ConfigError(f"{r.where}: keys '{key}' and '{alias}' (the same setting) disagree")
            raw[key] = value
    r.raw = raw


def _refuse_extensions(r: ConfigReader) -> None:
    """One error naming every feature of the config that transformers' kimi_linear lacks (Kimi-K3's text model)."""
    linear = r.raw.get("linear_attn_config")
    linear = linear if isinstance(linear, dict) else {}
    found = [f"{key!r} = {r.raw[key]!r:.20}" for key, neutral in NOT_IN_TRANSFORMERS.items()
             if key in r.raw and r.raw[key] not in neutral]
    found += [f"'linear_attn_config.{key}' = {linear[key]!r:.20}" for key, neutral in LINEAR_NOT_IN_TRANSFORMERS.items()
              if key in linear and linear[key] not in neutral]
    act = r.raw.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        found.insert(0, f"'hidden_act' = {act!r:.20}")
    if found:
        raise UnsupportedError(
            f"{r.where}: this kimi_linear model uses what transformers 5.24's kimi_linear does not implement (no "
            f"reference to prove it against): {', '.join(found)}")
    for key in NOT_IN_TRANSFORMERS:
        r.any(key)  # read: at a neutral value


def _linear_attn(r: ConfigReader, num_layers: int) -> tuple[dict[str, int], list[str] | None]:
    """The KDA sizes (``linear_attn_config`` wins over the flat keys, as in transformers) and its layer lists."""
    block = r.any("linear_attn_config", None)
    sizes = {flat: r.int(flat, default) for flat, default in
             (("linear_head_dim", 128), ("linear_num_heads", 32), ("linear_conv_kernel_dim", 4))}
    if block is None:
        return sizes, None
    if not isinstance(block, dict):
        raise ConfigError(f"{r.where}: key 'linear_attn_config' must be an object")
    inner = ConfigReader(block, f"{r.where}.linear_attn_config")
    for key, flat in LINEAR_ATTN_KEYS.items():
        sizes[flat] = inner.int(key, sizes[flat])
    full, kda = inner.any("full_attn_layers", None), inner.any("kda_layers", None)
    for key in LINEAR_NOT_IN_TRANSFORMERS:
        inner.any(key)
    inner.finish()
    if full is None or kda is None:
        return sizes, None
    types: list[str | None] = [None] * num_layers
    for key, numbers, kind in (("full_attn_layers", full, "full_attention"), ("kda_layers", kda, "linear_attention")):
        if not isinstance(numbers, list) or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= num_layers
                                                    for n in numbers):
            raise ConfigError(f"{inner.where}: key '{key}' must list layer numbers from 1 to {num_layers}")
        for n in numbers:
            types[n - 1] = kind
    if None in types:
        raise ConfigError(f"{inner.where}: layer {types.index(None) + 1} is in neither 'full_attn_layers' nor 'kda_layers'")
    return sizes, types  # type: ignore[return-value]


def _types(r: ConfigReader, key: str, allowed: tuple[str, ...], default: list[str], n: int) -> list[str]:
    value = r.any(key, None)
    if value is None:
        return default
    if not isinstance(value, list) or len(value) != n or any(v not in allowed for v in value):
        raise ConfigError(f"{r.where}: key '{key}' must be a list of {n} entries from {', '.join(allowed)}")
    return list(value)


# --- tiny replica --------------------------------------------------------------------------------

REPLICA_KDA_HEADS, REPLICA_KDA_DIM = 3, 16
REPLICA_EXPERTS, REPLICA_TOP_K, REPLICA_EXPERT_WIDTH = 8, 4, 32  # top 4: 300 tokens reach all 8


def replica_kimi_linear(tiny: dict[str, Any], arch: Architecture) -> None:
    """Three layers, KDA, attention, KDA (each kind once before the other, as in the model, and KDA again after
    attention), the feed-forwards of the model's first three layers; narrow KDA heads (3 of 16 channels), narrow
    latents (v_head_dim != qk_nope_head_dim), 8 experts top 4 (in 4 groups top 2 where the model limits groups)."""
    kinds = [layer.mixer.kind for layer in arch.layers]
    layers = tiny["num_hidden_layers"] = 3
    order = ["kda", "mla", "kda"] if kinds[0] == "kda" else ["mla", "kda", "mla"]
    for alias, key in ALIASES.items():  # the saved names only
        if key in tiny:
            tiny[alias] = tiny.pop(key)
    tiny.pop("max_position_embeddings", None)
    mla = next(layer.mixer for layer in arch.layers if layer.mixer.kind == "mla")
    tiny.update({k: v for k, v in REPLICA_MLA.items() if k != "q_lora_rank" or mla.q_lora_rank is not None})
    tiny.update(head_dim=REPLICA_MLA["qk_rope_head_dim"], qk_head_dim=REPLICA_MLA["qk_nope_head_dim"] + REPLICA_MLA["qk_rope_head_dim"])
    tiny.update(linear_head_dim=REPLICA_KDA_DIM, linear_num_heads=REPLICA_KDA_HEADS)
    block = tiny.get("linear_attn_config")
    if isinstance(block, dict):
        block.update(head_dim=REPLICA_KDA_DIM, num_heads=REPLICA_KDA_HEADS)
        for key, kind in (("full_attn_layers", "mla"), ("kda_layers", "kda")):
            if key in block:
                block[key] = [i + 1 for i, k in enumerate(order) if k == kind]
    tiny["layer_types"] = ["full_attention" if kind == "mla" else "linear_attention" for kind in order]
    tiny["mlp_layer_types"] = ["sparse" if layer.ffn.kind == "moe" else "dense" for layer in arch.layers[:layers]]
    moe = next((layer.ffn for layer in arch.layers if layer.ffn.kind == "moe"), None)
    groups = dict(num_expert_group=4, topk_group=2) if moe and moe.num_groups else dict(num_expert_group=1, topk_group=1)
    tiny.update(num_experts=REPLICA_EXPERTS, num_experts_per_token=REPLICA_TOP_K, moe_intermediate_size=REPLICA_EXPERT_WIDTH,
                **groups)


@family("kimi_linear", title="Kimi Linear", replica=replica_kimi_linear, pad_token_id=163839)
def lower_kimi_linear(r: ConfigReader, model_type: str) -> Architecture:
    """Kimi Linear: KDA and NoPE MLA layers, DeepSeek-V3 routing over per-expert SwiGLUs, shared experts."""
    _refuse_extensions(r)
    quant = lower_quantization(r.raw, r.where)  # read here, after the refusal above names the model's gaps
    r.any("quantization_config")
    _aliased(r)
    r.raw = {**r.raw, "max_position_embeddings": r.raw.get("model_max_length", 1048576)}
    r.used.add("model_max_length")
    nope, rope_dim, v_dim = r.int("qk_nope_head_dim", 128), r.int("qk_rope_head_dim", 64), r.int("v_head_dim", 128)
    c = read_common(r, kv_default=32, head_dim_default=rope_dim, max_pos=1048576)  # head_dim: set by __post_init__
    r.str("hidden_act", "silu", choices={"silu": "silu", "swish": "silu"})  # MLPs, experts and the convolutions
    r.require_value("pretraining_tp", (1, None), 1)
    if c.num_kv_heads != c.num_heads:
        raise UnsupportedError(f"{r.where}: key 'num_key_value_heads' ({c.num_kv_heads}) must equal "
                               f"'num_attention_heads' ({c.num_heads}) for latent attention")
    eps = r.float("rms_norm_eps", 1e-5)
    norm = Norm(kind="rmsnorm", eps=eps)
    for key, derived in (("head_dim", rope_dim), ("qk_head_dim", nope + rope_dim)):  # written by __post_init__
        if r.any(key, derived) != derived:
            raise ConfigError(f"{r.where}: key '{key}' ({r.raw[key]!r:.20}) must be {derived} (derived by the config class)")
    mla = Mla(num_heads=c.num_heads, q_lora_rank=r.int("q_lora_rank", None, nullable=True),
              kv_lora_rank=r.int("kv_lora_rank", 512), qk_nope_head_dim=nope, qk_rope_head_dim=rope_dim,
              v_head_dim=v_dim, rope=None, bias=r.bool("attention_bias", False),
              latent_norm=Norm(kind="rmsnorm", eps=1e-6), scale=(nope + rope_dim) ** -0.5)
    sizes, listed = _linear_attn(r, c.num_layers)
    kda = KimiDelta(num_heads=sizes["linear_num_heads"], head_dim=sizes["linear_head_dim"],
                    conv_kernel=sizes["linear_conv_kernel_dim"],
                    norm=Norm(kind="rmsnorm", eps=eps, weight_in_compute_dtype=True))
    default_types = listed or ["full_attention" if i and i % 4 == 0 else "linear_attention" for i in range(c.num_layers)]
    layer_types = _types(r, "layer_types", HYBRID_TYPES, default_types, c.num_layers)
    first_dense = r.int("first_k_dense_replace", 1, minimum=0)
    ffn_types = _types(r, "mlp_layer_types", FFN_TYPES,
                       ["dense" if i < first_dense else "sparse" for i in range(c.num_layers)], c.num_layers)
    experts, top_k = r.int("num_experts", 256), r.int("num_experts_per_token", 8)
    groups, topk_groups = r.int("num_expert_group", 1), r.int("topk_group", 1, nullable=True) or 1
    width, shared = r.int("moe_intermediate_size", 1024), r.int("num_shared_experts", 1, minimum=0)
    if experts % groups or topk_groups > groups or top_k > topk_groups * (experts // groups) or experts // groups < 2:
        raise ConfigError(f"{r.where}: keys 'num_experts', 'num_expert_group', 'topk_group', 'num_experts_per_token' "
                          f"do not fit ({experts} experts in {groups} groups of >= 2, top {topk_groups} groups, {top_k} "
                          "experts per token)")
    scaling = r.float("routed_scaling_factor", 2.446)
    moe = Moe(num_experts=experts, top_k=top_k, intermediate_size=width, activation="silu", router="sigmoid_topk",
              norm_topk_prob=r.bool("moe_renormalize", True), router_float32=True, score_correction_bias=True,
              **_grouping("top2_sum", groups, topk_groups), routed_scaling_factor=None if scaling == 1.0 else scaling,
              routing_dtype="float32", storage="per_expert", shared_expert_size=width * shared or None,
              names=KIMI_MOE_NAMES)
    mlp = Mlp(gated=True, activation="silu", intermediate_size=c.intermediate_size)
    layers = tuple(Layer(index=i, mixer=kda if kind == "linear_attention" else mla,
                         ffn=moe if ffn == "sparse" else mlp, block="pre_norm", norm=norm)
                   for i, (kind, ffn) in enumerate(zip(layer_types, ffn_types)))
    embedding = Embedding(vocab_size=c.vocab_size, padding_idx=padding_idx(r, c.vocab_size))
    head = Head(tied=r.bool("tie_word_embeddings", False))
    r.finish(TRAINING_ONLY)
    return Architecture(model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
                        dtype=c.dtype, embedding=embedding, layers=layers, final_norm=norm, head=head,
                        names=KIMI_NAMES, **quant)
