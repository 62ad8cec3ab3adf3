"""The names of a generated Config's fields: one vocabulary for every model family.

The rule: a quantity that transformers' configs spell one way keeps that spelling (hidden_size,
num_key_value_heads, kv_lora_rank, attn_logit_softcapping ...); a quantity the families spell
differently (rms_norm_eps / layer_norm_epsilon / norm_epsilon), that a config nests (the entries of
rope_parameters) or that the config does not hold at all (a derived scale, a layer pattern) gets one
name of llmgen's own, listed in OWN_NAMES with what it means. So a name means the same thing in every
generated file, and `llmgen diff` compares like with like. tests/test_config_names.py renders every
catalog model and checks each field against this module and against transformers' configs.
"""

from __future__ import annotations

from .render_layer_extras import KIND_PREFIX

# llmgen's own names: what each holds.
OWN_NAMES = {
    # (a few configs call it norm_eps too; most say rms_norm_eps, layer_norm_epsilon, layer_norm_eps ...)
    "norm_eps": "the norms' epsilon",
    "attention_scale": "multiplies q.k (1 / sqrt(head width) unless the config scales otherwise)",
    "embed_scale": "multiplies the token embeddings",
    "layer_pattern": "one letter per layer naming its kind (from layer_types, a pattern or a period)",
    "ffn_pattern": "one letter per layer naming its feed-forward (routed experts or a dense MLP)",
    "position_offset": "added to positions before the learned position embedding (OPT's 2)",
    "latent_norm_eps": "latent attention: the epsilon of the q and kv latent norms",
    "index_norm_eps": "sparse-attention indexer: the epsilon of its key norm",
    "linear_chunk_size": "linear attention: positions per chunk of the chunked delta rule",
    "mamba_conv_kernel": "Mamba-2: the causal convolution's kernel (conv_kernel, mamba_d_conv)",
    "mamba_norm_eps": "Mamba-2: the epsilon of its gated norm",
    "mamba_in_multipliers": "Mamba-2 (Falcon-H1): per-slice multipliers of in_proj's output",
    "mlp_gate_multiplier": "multiplies the MLP's gate input (Falcon-H1)",
    "mlp_down_multiplier": "multiplies the MLP's output (Falcon-H1)",
    "parallel_in_multiplier": "multiplies the input of the block beside attention (Falcon-H1)",
    "parallel_out_multiplier": "multiplies the output of the block beside attention (Falcon-H1)",
    "gate_sparsity_std": "per layer: the MLP gate's cutoff in standard deviations (activation sparsity)",
    "kv_shared_from": "per layer: the earlier layer whose keys and values it reads (-1: its own)",
    "altup_magnitude_floor": "AltUp: the floor of the streams' magnitude",
    "altup_router_scale": "AltUp: multiplies the router's input",
    "laurel_divisor": "LAuReL: divides the residual sum",
    "per_layer_embed_scale": "multiplies the per-layer embeddings",
    "per_layer_input_scale": "multiplies the sum of the per-layer inputs",
    "per_layer_projection_scale": "multiplies the projection of the hidden state into per-layer inputs",
    "router_input_scale": "multiplies the router's input",
    "sparsemixer_eps": "SparseMixer router: relative logit window / 2",
    "csa_rate": "DeepSeek-V4: tokens per compressed entry in the compressed sparse-attention layers",
    "hca_rate": "DeepSeek-V4: tokens per compressed entry in the heavily compressed layers",
    "rope_head_dim": "channels of a head that RoPE rotates (DeepSeek-V4)",
    "rope_rotary_dim": "channels of a head that RoPE rotates",
    "rope_rotated_frequencies": "frequencies a partial RoPE table rotates (the rest are zero)",
    "rope_factor": "RoPE scaling: the context extension factor",
    "rope_low_freq_factor": "Llama 3 RoPE scaling: low_freq_factor",
    "rope_high_freq_factor": "Llama 3 RoPE scaling: high_freq_factor",
    "rope_original_context": "RoPE scaling: original_max_position_embeddings",
    "rope_beta_fast": "YaRN: beta_fast",
    "rope_beta_slow": "YaRN: beta_slow",
    "rope_truncate": "YaRN: whether the correction range is truncated",
    "rope_attention_factor": "multiplies cos and sin (YaRN / LongRoPE attention factor)",
    "rope_short_factor": "LongRoPE: per-frequency divisors within the original context",
    "rope_long_factor": "LongRoPE: per-frequency divisors beyond it",
    "yarn_factor": "DeepSeek-V4 compressed layers' YaRN: factor",
    "yarn_original_context": "DeepSeek-V4 compressed layers' YaRN: original context",
    "yarn_beta_fast": "DeepSeek-V4 compressed layers' YaRN: beta_fast",
    "yarn_beta_slow": "DeepSeek-V4 compressed layers' YaRN: beta_slow",
}

# An attention kind's own shape, when the kinds differ (render_layer_extras: the field's name after the
# kind's prefix, KIND_PREFIX: full_, sliding_, chunked_, nope_).
KIND_FIELDS = {
    "head_dim": "head width of that kind's layers",
    "num_key_value_heads": "key/value heads of that kind's layers",
    "num_attention_heads": "query heads of that kind's layers",
}


def own_name(name: str) -> bool:
    """Whether ``name`` is one of llmgen's own: listed, an attention kind's field (``sliding_head_dim``), or
    a field of a RoPE table other than the global one (rope_fields.rope_prefix: ``local_rope_theta`` holds
    for the table ``local`` what ``rope_theta`` holds for the global one)."""
    if name in OWN_NAMES or any(name == prefix + f for prefix in KIND_PREFIX.values() for f in KIND_FIELDS):
        return True
    table, found, field = name.partition("_rope_")
    return bool(found) and table.isidentifier() and (f"rope_{field}" in OWN_NAMES or field == "theta")
