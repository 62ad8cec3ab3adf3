"""Falcon-H1 (``falcon_h1``): every layer runs softmax attention (GQA, RoPE) and a Mamba-2 block side by side
on the same normed input and adds their outputs (Layer.parallel_mixer), then a SwiGLU MLP; and its muP
multipliers, each kept as a literal the generated code applies where transformers does:

- ``embedding_multiplier``: the token embeddings (Embedding.scale, a Python float);
- ``attention_in_multiplier`` / ``attention_out_multiplier``, ``ssm_in_multiplier`` / ``ssm_out_multiplier``: the
  inputs and outputs of the two mixers (Layer.mixer_multipliers);
- ``ssm_multipliers``: the five parts [z; x; B; C; dt] of the Mamba-2 in-projection (Mamba2.in_multipliers);
- ``mlp_multipliers``: gate_proj's output and the MLP's output (Mlp.gate_multiplier, down_multiplier);
- ``lm_head_multiplier``: the logits (Head.multiplier);
- ``key_multiplier``: the keys. q . (k m) s = (q . k)(m s): it is folded into the attention's score scale
  (Attention.scale = head_dim^-0.5 x key_multiplier), which the generated Config prints as attention_scale and
  its docstring states.

Reads exactly the keys transformers 5.24's FalconH1Config and model read, with the same defaults: the Mamba-2
width is ``mamba_d_ssm`` (or ``mamba_expand`` x hidden when null), its in_proj bias ``mamba_proj_bias``, its
out_proj bias ``projectors_bias``; ``mamba_rms_norm`` adds the grouped gated RMSNorm (normed before the gate
when ``mamba_norm_before_gate``), else y is only gated by SiLU(z).
"""

from __future__ import annotations

from typing import Any

from ....schemas.arch import Architecture, Attention, Embedding, Head, Layer, Mlp, MixerMultipliers, Names, Norm
from ...basics.errors import ConfigError
from .fam_mamba2 import MAMBA_INIT_ONLY, _reason, drop_infinite_limit, time_step_limit
from .families import padding_idx, read_common
from .llama_like import TRAINING_ONLY
from .reader import ConfigReader
from .registry import family
from .rope import lower_rope

# Runtime switches: how many logits generate() keeps (the logits themselves do not change).
RUNTIME = frozenset({"num_logits_to_keep", "layers_block_type", "layer_types"})


def _floats(r: ConfigReader, key: str, count: int) -> tuple[float, ...]:
    """A list of ``count`` numbers (FalconH1Config's default: all 1.0)."""
    value = r.any(key, None)
    if value is None:
        return (1.0,) * count
    if (not isinstance(value, list) or len(value) != count
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{r.where}: key '{key}' must be a list of {count} numbers")
    return tuple(float(v) for v in value)


def _mamba(r: ConfigReader, hidden: int, eps: float):
    from ....schemas.arch import Mamba2

    heads = r.int("mamba_n_heads", 128)
    expand = r.int("mamba_expand", 2)
    inner = r.int("mamba_d_ssm", 1024, nullable=True)
    inner = expand * hidden if inner is None else inner
    head_dim = r.any("mamba_d_head", "auto")
    if head_dim == "auto":
        head_dim = inner // heads
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1 or heads * head_dim != inner:
        raise ConfigError(f"{r.where}: 'mamba_n_heads' x 'mamba_d_head' must equal the Mamba-2 width "
                          f"('mamba_d_ssm', or 'mamba_expand' x 'hidden_size': {inner})")
    low, high = time_step_limit(r)
    rms_norm = r.bool("mamba_rms_norm", False)
    before = r.bool("mamba_norm_before_gate", True)
    try:
        return Mamba2(num_heads=heads, head_dim=head_dim, state_size=r.int("mamba_d_state", 256),
                      n_groups=r.int("mamba_n_groups", 1), conv_kernel=r.int("mamba_d_conv", 4),
                      conv_bias=r.bool("mamba_conv_bias", True), proj_bias=r.bool("mamba_proj_bias", False),
                      out_proj_bias=r.bool("projectors_bias", False), chunk_size=r.int("mamba_chunk_size", 256),
                      time_step_min=low, time_step_max=high, norm=Norm(kind="rmsnorm", eps=eps),
                      gate=("norm_then_gate" if before else "gate_then_norm") if rms_norm else "gate_only",
                      in_multipliers=_floats(r, "ssm_multipliers", 5))
    except ValueError as error:  # pydantic's, on sizes that do not fit together
        raise ConfigError(f"{r.where}: the Mamba-2 sizes do not fit: {_reason(error)}") from None


def _replica(tiny: dict[str, Any], arch: Architecture) -> None:
    """Two layers; 8 Mamba-2 heads of 16 in 2 groups, state 16, chunks of 8."""
    tiny.update(mamba_d_ssm=128, mamba_n_heads=8, mamba_d_head=16, mamba_d_state=16, mamba_n_groups=2,
                mamba_chunk_size=8)
    drop_infinite_limit(tiny)


@family("falcon_h1", title="Falcon-H1", replica=_replica, pad_token_id=0)
def lower_falcon_h1(r: ConfigReader, model_type: str) -> Architecture:
    """Falcon-H1: attention and Mamba-2 in parallel in every layer, a SwiGLU MLP, muP multipliers."""
    c = read_common(r, kv_default=8, head_dim_default=None, max_pos=8192)
    eps = r.float("rms_norm_eps", 1e-5)
    norm = Norm(kind="rmsnorm", eps=eps)
    act = r.str("hidden_act", "silu", choices={"silu": "silu", "swish": "silu"})  # the MLP's and the convolution's
    mamba = _mamba(r, c.hidden_size, eps)
    rope = lower_rope(r, head_dim=c.head_dim, layer_types={"full_attention"},
                      default_theta={"full_attention": 10000.0, "sliding_attention": 10000.0})["full_attention"]
    bias = r.bool("attention_bias", False)
    key_multiplier = r.float("key_multiplier", 1.0)
    attention = Attention(span="full", num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                          rope=rope.name, q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias,
                          scale=c.head_dim**-0.5 * key_multiplier)  # the keys' multiplier, folded in
    gate_m, down_m = _floats(r, "mlp_multipliers", 2)
    mlp = Mlp(gated=True, activation=act, intermediate_size=c.intermediate_size, bias=r.bool("mlp_bias", False),
              gate_multiplier=gate_m, down_multiplier=down_m)
    multipliers = MixerMultipliers(mixer_in=r.float("attention_in_multiplier", 1.0),
                                   mixer_out=r.float("attention_out_multiplier", 1.0),
                                   parallel_in=r.float("ssm_in_multiplier", 1.0),
                                   parallel_out=r.float("ssm_out_multiplier", 1.0))
    layers = tuple(Layer(index=i, mixer=attention, parallel_mixer=mamba, mixer_multipliers=multipliers, ffn=mlp,
                         block="pre_norm", norm=norm) for i in range(c.num_layers))
    embedding = Embedding(vocab_size=c.vocab_size, padding_idx=padding_idx(r, c.vocab_size),
                          scale=r.float("embedding_multiplier", 1.0), scale_in_dtype=False)
    head = Head(tied=r.bool("tie_word_embeddings", False), multiplier=r.float("lm_head_multiplier", 1.0))
    names = Names(final_norm="final_layernorm", post_attn_norm="pre_ff_layernorm", mlp="feed_forward")
    r.finish(MAMBA_INIT_ONLY | TRAINING_ONLY | RUNTIME)
    return Architecture(model_type=model_type, hidden_size=c.hidden_size, max_position_embeddings=c.max_position_embeddings,
                        dtype=c.dtype, embedding=embedding, rope=(rope,), layers=layers, final_norm=norm, head=head,
                        names=names)
