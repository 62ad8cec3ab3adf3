"""Nemotron-H / Nemotron 3 (``nemotron_h``): a stack of single-block layers, each RMSNorm + one block +
residual, the block named by a letter of the layer pattern: ``M`` Mamba-2, ``*`` softmax attention without
positions (NoPE), ``-`` an MLP without a gate (ReLU^2), ``E`` experts without gates (sigmoid routing with
groups, a shared expert, a latent space where the config has one). Every block is stored as ``mixer``.

Reads exactly the keys transformers 5.24's NemotronHConfig and model read, with the same defaults: the
pattern as ``layers_block_type`` (also its legacy names) or the older ``hybrid_override_pattern`` string.
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, Head, Layer, Mlp, Moe, MoeNames, Names, Norm
from ...basics.errors import ConfigError, UnsupportedError
from .fam_mamba2 import MAMBA_INIT_ONLY, _reason, drop_infinite_limit, read_mamba2, time_step_limit
from .fam_moe import REPLICA_EXPERT_WIDTH, REPLICA_SHARED_WIDTH
from .families import DTYPES
from .reader import ConfigReader
from .registry import family

PATTERN_LETTERS = {"M": "linear_attention", "E": "moe", "*": "full_attention", "-": "mlp"}
LEGACY_TYPES = {"mamba": "linear_attention", "attention": "full_attention"}
# Keys that change nothing transformers computes: runtime switches, training-only dropout, the multi-token-
# prediction head (its weights, mtp.*, are skipped), and keys NemotronH's model does not read (no positions:
# rope keys; expand: the Mamba width is heads x head_dim; moe_shared_expert_overlap: a kernel schedule).
NEMOTRON_IGNORED = frozenset({"use_mamba_kernels", "hidden_dropout", "moe_shared_expert_overlap", "num_nextn_predict_layers",
                              "mtp_layers_block_type", "mtp_hybrid_override_pattern", "rope_theta", "partial_rotary_factor",
                              "rope_scaling", "rope_parameters", "expand", "output_router_logits", "n_shared_experts",
                              "mamba_proj_bias"})
MAMBA_KEYS = dict(num_heads="mamba_num_heads", head_dim="mamba_head_dim", state_size="ssm_state_size", n_groups="n_groups",
                  conv_kernel="conv_kernel", conv_bias="use_conv_bias", proj_bias="use_bias", chunk_size="chunk_size",
                  act="mamba_hidden_act")
# The config class also takes the Mamba keys under older names (it renames them).
OLD_NAMES = {"mamba_n_groups": "n_groups", "mamba_d_conv": "conv_kernel", "mamba_expand": "expand",
             "mamba_dt_min": "time_step_min", "mamba_dt_max": "time_step_max", "mamba_dt_limit": "time_step_limit",
             "mamba_dt_init_floor": "time_step_floor", "mamba_conv_bias": "use_conv_bias", "mamba_chunk_size": "chunk_size"}


def _block_types(r: ConfigReader) -> list[str]:
    """The kind of each layer (linear_attention, full_attention, mlp, moe)."""
    types = r.any("layers_block_type", None)
    pattern = r.any("hybrid_override_pattern", None)
    if types is None and pattern is not None:
        if not isinstance(pattern, str) or not pattern or set(pattern) - set(PATTERN_LETTERS):
            raise ConfigError(f"{r.where}: key 'hybrid_override_pattern' must be a string of the letters M, E, *, -")
        types = [PATTERN_LETTERS[letter] for letter in pattern]
    if types is None:
        types = ["linear_attention", "moe", "full_attention", "mlp"]  # the config class's default
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{r.where}: key 'layers_block_type' must be a non-empty list of layer kinds")
    types = [LEGACY_TYPES.get(t, t) for t in types]
    for value in types:
        if value not in PATTERN_LETTERS.values():
            raise UnsupportedError(f"{r.where}: 'layers_block_type' entry {value!r:.40} is not supported "
                                   f"({', '.join(PATTERN_LETTERS.values())})")
    r.int("num_hidden_layers", len(types), nullable=True)  # deprecated: the pattern decides (transformers warns)
    return types


def _moe(r: ConfigReader, hidden: int, bias: bool) -> Moe:
    experts = r.int("n_routed_experts", 8)
    if bias:
        raise UnsupportedError(f"{r.where}: key 'mlp_bias' = true is not supported with experts (llmgen's experts have no biases)")
    try:
        return Moe(num_experts=experts, top_k=r.int("num_experts_per_tok", 2), intermediate_size=r.int("moe_intermediate_size", 7688),
                   gated=False, latent_size=r.int("moe_latent_size", None, nullable=True), activation="relu2",
                   router="sigmoid_topk", norm_topk_prob=r.bool("norm_topk_prob", True), router_float32=True,
                   score_correction_bias=True, group_limit="top2_sum", num_groups=r.int("n_group", 1),
                   topk_groups=r.int("topk_group", 1), routed_scaling_factor=r.float("routed_scaling_factor", 1.0),
                   routing_dtype="float32", storage="per_expert",
                   shared_expert_size=r.int("moe_shared_expert_intermediate_size", 7688),
                   names=MoeNames(shared_expert="shared_experts", fused_block="mixer"))
    except ValueError as error:
        raise ConfigError(f"{r.where}: the experts' sizes do not fit: {_reason(error)}") from None


def _replica_nemotron_h(tiny: dict[str, Any], arch: Architecture) -> None:
    """One layer of each kind in the config's order of first appearance; narrow Mamba heads in two groups,
    chunks of 8; 8 experts in 2 groups (top-2 of 1 group), a latent space where the config has one."""
    tiny.pop("intermediate_size", None)
    kinds: list[str] = []
    for t in _types_of(arch):
        if t not in kinds:
            kinds.append(t)
    types = kinds + kinds[:1]  # the first kind repeats
    for key in ("hybrid_override_pattern", "num_hidden_layers"):
        tiny.pop(key, None)
    tiny.update(layers_block_type=types, intermediate_size=96, head_dim=24, mamba_num_heads=8, mamba_head_dim=16,
                ssm_state_size=16, n_groups=2, chunk_size=8, n_routed_experts=8, num_experts_per_tok=2, n_group=2,
                topk_group=1, moe_intermediate_size=REPLICA_EXPERT_WIDTH,
                moe_shared_expert_intermediate_size=REPLICA_SHARED_WIDTH)
    if tiny.get("moe_latent_size"):
        tiny["moe_latent_size"] = 40
    tiny.pop("mtp_layers_block_type", None)
    tiny["num_nextn_predict_layers"] = 0
    drop_infinite_limit(tiny)


def _types_of(arch: Architecture) -> list[str]:
    return ["linear_attention" if layer.mixer is not None and layer.mixer.kind == "mamba2"
            else "full_attention" if layer.mixer is not None else layer.ffn.kind for layer in arch.layers]


@family("nemotron_h", title="Nemotron-H", replica=_replica_nemotron_h, pad_token_id=0)
def lower_nemotron_h(r: ConfigReader, model_type: str) -> Architecture:
    """Nemotron-H: single-block layers by pattern (Mamba-2, NoPE attention, ReLU^2 MLP, ReLU^2 experts)."""
    for old, new in OLD_NAMES.items():
        if old in r.raw:
            if new in r.raw:
                raise ConfigError(f"{r.where}: keys '{old}' and '{new}' name the same setting; give one")
            r.raw = {**{k: v for k, v in r.raw.items() if k != old}, new: r.raw[old]}
    types = _block_types(r)
    hidden = r.int("hidden_size", 4096)
    eps = r.float("layer_norm_epsilon", 1e-5)
    norm = Norm(kind="rmsnorm", eps=eps)
    r.bool("residual_in_fp32", False)  # NemotronH's blocks do not read it
    r.any("norm_eps", None)  # an older spelling NemotronH's model does not read (layer_norm_epsilon is used)
    # Transformers clamps dt to (time_step_min, inf) whatever time_step_limit says (read: it must be well formed).
    time_step_limit(r)
    low = r.float("time_step_min", 0.001, positive=False)  # 0 allowed; negative refused by the IR
    r.float("time_step_max", 0.1)
    r.float("time_step_floor", 1e-4)
    mamba = read_mamba2(r, hidden, eps, keys=MAMBA_KEYS, defaults=dict(num_heads=128, head_dim=64, state_size=128,
                        n_groups=8, chunk_size=128), limit=(low, None))
    r.require_value("mamba_ssm_cache_dtype", ("float32",), "float32")  # the state is kept in float32
    r.require_value("attention_bias", (False,), False)  # NemotronH's attention has no biases whatever it says
    r.require_value("sliding_window", (None,), None)
    heads = r.int("num_attention_heads", 32)
    kv = r.int("num_key_value_heads", 8, nullable=True) or heads
    head_dim = r.int("head_dim", 128)
    if heads % kv:
        raise ConfigError(f"{r.where}: 'num_attention_heads' ({heads}) is not a multiple of 'num_key_value_heads' ({kv})")
    attention = Attention(span="full", num_heads=heads, num_kv_heads=kv, head_dim=head_dim, rope=None, scale=head_dim**-0.5)
    bias = r.bool("mlp_bias", False)
    r.str("mlp_hidden_act", "relu2", choices={"relu2": "relu2"})
    mlp = Mlp(gated=False, activation="relu2", intermediate_size=r.int("intermediate_size", 21504), bias=bias)
    moe = _moe(r, hidden, bias) if "moe" in types else None
    if moe is None:
        for key in ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "moe_latent_size", "norm_topk_prob",
                    "n_group", "topk_group", "routed_scaling_factor", "moe_shared_expert_intermediate_size"):
            r.any(key, None)  # read: without expert layers they change nothing
    blocks = {"linear_attention": (mamba, None), "full_attention": (attention, None), "mlp": (None, mlp), "moe": (None, moe)}
    layers = tuple(Layer(index=i, mixer=blocks[t][0], ffn=blocks[t][1], block="pre_norm", norm=norm) for i, t in enumerate(types))
    vocab = r.int("vocab_size", 131072)
    r.int("pad_token_id", 0, nullable=True, minimum=-vocab)  # NemotronH's nn.Embedding takes no padding_idx
    names = Names(backbone="backbone", embed="embeddings", final_norm="norm_f", input_norm="norm", mamba="mixer",
                  attn="mixer", mlp="mixer")
    head = Head(tied=r.bool("tie_word_embeddings", False))
    max_pos = r.int("max_position_embeddings", 4096)
    dtype = r.raw.get("torch_dtype") or r.raw.get("dtype") or "float32"
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ConfigError(f"{r.where}: key 'torch_dtype' = {dtype!r:.40} is not a floating dtype llmgen knows")
    r.finish(MAMBA_INIT_ONLY | NEMOTRON_IGNORED)
    return Architecture(model_type=model_type, hidden_size=hidden, max_position_embeddings=max_pos, dtype=DTYPES[dtype],
                        embedding=Embedding(vocab_size=vocab), layers=layers, final_norm=norm, head=head, names=names)
