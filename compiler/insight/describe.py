"""Plain-words description of an architecture, computed from the IR.

Used for the generated file's docstring (and by anything else that explains a model), so
the words always match the code.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture, Moe, Rope
from .describe_extras import extras_features
from .describe_linear import block_features, linear_features
from ..passes.mixers import attention_layers, first_attention, letter_of
from ..passes.render_chunked import chunked_features
from ..passes.rope_fields import attention_scaling

ACTIVATION_WORDS = {
    "silu": ("SwiGLU", "SiLU"),
    "gelu": ("GeGLU", "GELU"),
    "gelu_tanh": ("GeGLU", "tanh-approximate GELU"),
    "gelu_new": ("GeGLU", "tanh-approximate GELU written out (gelu_new)"),
    "relu": ("ReGLU", "ReLU"),
    "relu2": ("ReGLU squared", "squared ReLU"),
    "xielu": ("xIELU-gated", "xIELU (learned alpha_p, alpha_n)"),
    "gelu_fast_tanh": ("GeGLU", "tanh-approximate GELU written out as x (1 + 0.044715 x^2)"),
}


def _num(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.0f}"


def layer_pattern(arch: Architecture) -> str:
    """One letter per layer: S = sliding-window attention, C = chunked attention, F = full attention,
    N = full attention without position embeddings (NoPE); a recurrent kind its own letter (compiler/passes/mixers:
    L = linear attention, Gated DeltaNet; M = Mamba-2); E / D: a layer that is only experts / only an MLP."""
    return "".join(_letter(layer) for layer in arch.layers)


def _letter(layer: Any) -> str:
    if layer.mixer is None:  # a layer that is only a feed-forward block
        return "E" if layer.ffn.kind == "moe" else "D"
    recurrent = letter_of(layer)
    if recurrent:
        return recurrent
    if layer.mixer.kind == "compressed_attention":  # its own letters: sliding, compressed sparse, heavily compressed
        return layer.mixer.letter
    span = layer.mixer.span
    return "S" if span == "sliding" else "C" if span == "chunked" else "F" if layer.mixer.rope else "N"


def _rope_words(table: Rope) -> str:
    words = f"theta={_num(table.theta)}"
    if table.type == "proportional":
        turning = int(table.partial_rotary_factor * table.rotary_dim // 2)
        words += (f", proportional: {turning} of {table.rotary_dim // 2} frequencies turn (partial factor "
                  f"{table.partial_rotary_factor:g}), the other channel pairs pass unrotated")
    elif table.partial_rotary_factor != 1.0:
        words += (f", rotating the first {table.rotary_dim} channels of each head "
                  f"(partial factor {table.partial_rotary_factor:g})")
    if table.layout == "interleaved":
        words += ", adjacent channel pairs (interleaved layout)"
    elif table.layout == "rotate_half_reversed":
        words += ", each channel pair turned by minus the angle"
    if table.type == "linear":
        words += f", positions interpolated linearly by factor {_num(table.factor or 1)}"
    elif table.type == "llama3":
        words += (
            f", Llama 3 frequency scaling (factor {_num(table.factor or 1)}, original context "
            f"{table.original_max_position_embeddings})"
        )
    elif table.type == "dynamic":
        words += f", dynamic NTK scaling (factor {_num(table.factor or 1)}: theta grows past max_position_embeddings)"
    elif table.type == "yarn":
        words += (
            f", YaRN scaling (factor {_num(table.factor or 1)}, original context "
            f"{table.original_max_position_embeddings}, beta {_num(table.beta_fast or 0)}/{_num(table.beta_slow or 0)}"
            f"{'' if table.truncate else ', ramp not truncated'}), cos/sin x {attention_scaling(table, None):.6g}"
        )
    elif table.type == "longrope":
        scale = attention_scaling(table, None)
        words += (
            f", LongRoPE per-frequency factors (short up to {table.original_max_position_embeddings} positions, "
            f"long beyond), cos/sin x "
            + (f"{scale:.6g}" if scale is not None else "sqrt(1 + ln(context ratio) / ln(original context))")
        )
    elif table.type not in ("default", "proportional"):
        words += f", {table.type} scaling"
    return words



def _attention_features(arch: Architecture, attn: Any, attns: list, norm: Any, ffn: Any) -> list[str]:
    """Sentences about the softmax attention (a model without attention layers has none)."""
    out: list[str] = []
    if attn.kind == "mla":
        out += mla_words(attn)
    elif attn.num_kv_heads == 1:
        out.append(f"Multi-query attention: {attn.num_heads} query heads share one key/value head.")
    elif attn.num_kv_heads < attn.num_heads:
        out.append(
            f"Grouped-query attention: {attn.num_heads} query heads, {attn.num_kv_heads} key/value heads "
            f"({attn.num_heads // attn.num_kv_heads} queries per key/value head)."
        )
    else:
        out.append(f"Multi-head attention with {attn.num_heads} heads.")
    if attn.kind == "attention" and attn.head_dim * attn.num_heads != arch.hidden_size:
        out.append(f"head_dim {attn.head_dim} is set explicitly (hidden / heads would be {arch.hidden_size // attn.num_heads}).")
    if attn.kind == "attention" and abs(attn.scale - attn.head_dim**-0.5) > 1e-12:
        out.append(f"Attention scores are scaled by {attn.scale:g}, not 1/sqrt(head_dim).")
    pattern = layer_pattern(arch)
    sliding = pattern.count("S")
    if sliding == arch.num_layers:
        out.append(f"Sliding-window attention on every layer (window {attn.window}).")
    elif sliding:
        window = next(lay.mixer.window for lay in attns if lay.mixer.span == "sliding")
        period = len(pattern) - len(pattern.lstrip("S")) + 1
        out.append(
            f"Sliding-window attention (window {window}) on {sliding} of {arch.num_layers} layers, full attention "
            f"on the rest (pattern {pattern[:period]} repeating)."
        )
    if len(arch.rope) > 1:
        by_span = {lay.mixer.span: lay.mixer.rope for lay in attns}
        parts = [f"{span} layers {_rope_words(arch.rope_table(name))}" for span, name in sorted(by_span.items()) if name]
        out.append("Two RoPE tables: " + "; ".join(parts) + ".")
    elif arch.rope:
        out.append(f"Rotary position embeddings (RoPE), {_rope_words(arch.rope[0])}.")
    if attn.kind == "mla":
        pass
    elif attn.qk_norm == "per_head":
        out.append(f"QK-norm: {'LayerNorm' if norm.kind == 'layernorm' else 'RMSNorm'} over each query and key head before RoPE.")
    elif attn.qk_norm == "per_head_weights":
        out.append(f"QK-norm: {'RMSNorm' if norm.kind == 'rmsnorm' else 'LayerNorm'} over each query and key head, "
                   "each head with its own weight row, before RoPE.")
    elif attn.qk_norm == "per_head_modules":
        out.append("QK-norm: a LayerNorm module of its own (scale, no bias) for each query and key head, before RoPE.")
    elif attn.qk_norm == "whole":
        out.append("QK-norm: RMSNorm over the whole query and key projections (all heads at once) before RoPE.")
    nope = [lay.index for lay in attns if lay.mixer.rope is None]
    if arch.rope and nope:
        out.append(f"No position embeddings (NoPE) on {len(nope)} of {arch.num_layers} layers (layers {', '.join(map(str, nope[:4]))}{', ...' if len(nope) > 4 else ''}).")
    out += chunked_features(arch)
    out += extras_features(arch)
    if attn.kind == "mla":
        pass
    elif attn.softcap:
        out.append(f"Attention logits soft-capped: cap * tanh(scores / cap), cap {_num(attn.softcap)}.")
    if getattr(attn, "alibi", None) is not None:
        a = attn.alibi
        slopes = ("geometric slopes 2^(-8k/n)" if a.slopes == "geometric" else f"slopes 1/2^(k x {_num(a.max_bias)} / n)")
        out.append(f"ALiBi: each head adds slope x key position to its scores ({slopes}, positions counted from the "
                   f"{'last' if a.from_last_key else 'first'} key); no other position encoding.")
    if getattr(attn, "output_norm", False):
        out.append("The heads' concatenated attention output is normalised before the output projection.")
    if ffn is not None and ffn.inner_norm:
        out.append("The MLP's intermediate activation is normalised before the down projection.")
    if getattr(attn, "clip_qkv", None) is not None:
        out.append(f"Query, key and value projections clamped to [-{_num(attn.clip_qkv)}, {_num(attn.clip_qkv)}].")
    if attn.kind == "mla":
        pass
    elif any((attn.q_bias, attn.k_bias, attn.v_bias, attn.o_bias)):
        out.append("Biases on the attention projections.")
    if attn.kind == "attention" and attn.sinks:
        out.append("Attention sinks: a learned logit per head joins each query's softmax as one more column and "
                   "its share is dropped, so the weights on the keys may sum to less than 1.")
    if attn.kind == "mla":
        pass
    elif attn.qkv == "fused":
        out.append("q, k and v projections stored as one matrix ([q; k; v]).")
    elif attn.qkv == "fused_qvk_blocks":
        out.append(f"q, k and v projections stored as one matrix of {attn.qkv_blocks} blocks, each [q_b; v_b; k_b].")
    elif attn.qkv == "fused_grouped":
        out.append("q, k and v projections stored as one matrix, interleaved per key/value group ([q_g..; k_g; v_g]).")
    elif attn.qkv == "fused_per_head":
        out.append("q, k and v projections stored as one matrix, interleaved per head ([q_h; k_h; v_h] for each head h).")
    return out


def features(arch: Architecture) -> list[str]:
    """The model's notable features, one sentence each."""
    layer = arch.layers[0]
    attn, norm = first_attention(arch), layer.norm
    attns = attention_layers(arch)
    ffn = next((lay.ffn for lay in arch.layers if getattr(lay.ffn, "kind", None) == "mlp"), None)  # the dense MLP, if any
    out = [
        f"{arch.num_layers} decoder layers, hidden size {arch.hidden_size}, vocabulary {arch.embedding.vocab_size}.",
    ]
    out += linear_features(arch)
    out += block_features(arch)
    if attn is not None:
        out += _attention_features(arch, attn, attns, norm, ffn)
    if arch.linear_layout == "in_out":
        out.append("Projection weights stored transposed, (in, out), as GPT-2's Conv1D.")
    if arch.embedding.learned_positions:
        out.append(f"Learned absolute position embeddings ({arch.embedding.learned_positions} positions) added to the token embeddings.")
    if arch.embedding.sinusoidal_positions:
        out.append("Fixed sinusoidal position embeddings (sin on half the channels, cos on the other) added to the "
                   "token embeddings" + (f", position p reading row p + {arch.embedding.positions_offset}."
                                         if arch.embedding.positions_offset else "."))
    if arch.embedding.norm is not None:
        out.append("The token embeddings are normalised (a norm like the layers') before the first layer.")
    if ffn is not None and ffn.fused_gate_up:
        out.append("MLP gate and up projections stored as one matrix ([gate; up]).")
    norm_words = "RMSNorm" if norm.kind == "rmsnorm" else "LayerNorm"
    if norm.weight_offset:
        norm_words += f" scaling by ({_num(norm.weight_offset)} + weight)"
    if not norm.weight:
        norm_words += " without a learned scale or bias"
    elif norm.kind == "layernorm":
        norm_words += " with a bias" if norm.bias else " without a bias"
    dtype_words = "computed in float32" if norm.compute_dtype == "float32" else "computed in the input dtype"
    out.append(f"{norm_words}, eps {norm.eps:g}, {dtype_words}.")
    if layer.block == "sandwich":
        out.append("Sandwich norms: attention and MLP inputs and outputs are each normalised (4 norms per layer).")
    elif layer.block == "post_norm":
        out.append("Post-norm inside the residual: x + norm(attn(x)), then x + norm(mlp(x)); branch inputs are not normalised.")
    elif layer.block == "parallel":
        shared = "one norm shared by both branches" if layer.parallel_norms == 1 else "a norm for each branch"
        out.append(f"Parallel block: x + attn(norm(x)) + mlp(norm(x)), {shared}.")
    elif any(lay.mixer is None or lay.ffn is None for lay in arch.layers):
        out.append("Pre-norm residual blocks of one block each: x + block(norm(x)).")
    else:
        out.append("Pre-norm residual blocks.")
    if layer.residual_scale is not None:
        out.append(f"Each branch's output is multiplied by {layer.residual_scale:g} before the residual add.")
    out += moe_features(arch)
    glu, act = ACTIVATION_WORDS[ffn.activation] if ffn is not None else ("", "")
    if ffn is not None and ffn.gated:
        out.append(f"{glu} MLP: down(act(gate(x)) * up(x)) with {act}, intermediate size {ffn.intermediate_size}.")
    elif ffn is not None:
        out.append(f"MLP with {act}, intermediate size {ffn.intermediate_size}.")
    if arch.embedding.scale and arch.embedding.scale_in_dtype:
        out.append(f"Embeddings multiplied by sqrt(hidden) = {arch.embedding.scale:.4f}.")
    elif arch.embedding.scale:
        out.append(f"Embeddings multiplied by {arch.embedding.scale:g}.")
    out.append("Output head tied to the token embedding." if arch.head.tied else "Separate output head (lm_head).")
    if arch.head.bias:
        out.append("The output head has a bias.")
    if arch.head.multiplier is not None:
        out.append(f"Logits multiplied by {arch.head.multiplier:g}.")
    if arch.head.divisor is not None:
        out.append(f"Logits divided by {arch.head.divisor:g}.")
    if arch.head.softcap:
        out.append(f"Final logits soft-capped at {_num(arch.head.softcap)}.")
    if attn is None:
        pass
    elif fused_attention(attn):
        out.append("Eager attention written out (the default, the same float operations as the reference): scores, "
                   "mask, float32 softmax, weighted sum; CausalLM.fast_attention() switches to torch's "
                   "scaled_dot_product_attention (equal up to float rounding).")
    else:
        out.append("Eager attention written out: scores, mask, float32 softmax, weighted sum.")
    return out


def fused_attention(attn) -> bool:
    """Whether the attention can run through torch's scaled_dot_product_attention: plain softmax
    attention over the mask (multi-latent attention, soft-capped scores and attention sinks are
    written out only)."""
    return attn.kind == "attention" and attn.softcap is None and not attn.sinks and getattr(attn, "alibi", None) is None


def moe_features(arch: Architecture) -> list[str]:
    """Sentences for a mixture-of-experts feed-forward (none for a dense model)."""
    moe = next((layer.ffn for layer in arch.layers if isinstance(layer.ffn, Moe)), None)
    if moe is None:
        return []
    glu, act = ACTIVATION_WORDS.get(moe.activation, ("clamped SwiGLU", ""))
    glu = glu if moe.gated else "ungated MLP"
    if moe.activation == "clamped_swiglu":
        act = (f"gate clamped above at {moe.swiglu_limit:g}, up to +-{moe.swiglu_limit:g}, "
               f"(up + 1) * gate * sigmoid({moe.swiglu_alpha:g} * gate)")
    if moe.router == "softmax_topk":
        routing = f"a softmax router over all experts keeps the top {moe.top_k} per token"
        if moe.score_correction_bias:
            routing += " (chosen by the probabilities plus a learned per-expert bias)"
        routing += ", their weights renormalised to sum to 1" if moe.norm_topk_prob else " (weights not renormalised)"
    elif moe.router == "sigmoid_topk":
        routing = sigmoid_routing_words(moe)
    elif moe.router == "sparsemixer":
        routing = ("a SparseMixer router picks 2 experts per token, each weighted by a softmax over the experts whose "
                   f"logit is within {2 * moe.sparsemixer_eps:g} (relative) of the chosen one's")
    elif moe.router == "topk_sigmoid":
        routing = f"the router keeps each token's top {moe.top_k} logits and takes a sigmoid of each"
    else:
        routing = f"the router keeps each token's top {moe.top_k} logits and softmaxes over those {moe.top_k}"
    out = [f"Mixture of experts: {moe.num_experts} {glu} experts ({act}, intermediate size {moe.intermediate_size}); "
           f"{routing}."]
    if moe.router == "softmax_topk" and moe.group_limit == "max":
        out.append(f"Group-limited routing: the experts form {moe.num_groups} groups, each scored by its best "
                   f"expert; a token chooses only among the experts of its best {moe.topk_groups} groups.")
    if moe.router == "softmax_topk" and moe.routed_scaling_factor is not None:
        out.append(f"The routing weights are multiplied by {moe.routed_scaling_factor:g}.")
    sparse = [layer.index for layer in arch.layers if getattr(layer.ffn, "kind", None) == "moe"]
    if len(sparse) < arch.num_layers:
        dense = [layer.index for layer in arch.layers if getattr(layer.ffn, "kind", None) == "mlp"]
        where = "Config.layer_pattern" if any(layer.ffn is None for layer in arch.layers) else "Config.ffn_pattern"
        out.append(f"Experts on {len(sparse)} of {arch.num_layers} layers" + (
            f"; a dense MLP on layers {', '.join(map(str, dense[:6]))}{', ...' if len(dense) > 6 else ''}" if dense else "")
            + f" ({where}).")
    if moe.latent_size:
        out.append(f"Latent experts: tokens pass {moe.names.latent_in} (hidden -> {moe.latent_size}) before the routed "
                   f"experts and {moe.names.latent_out} after their weighted sum; router and shared expert read the hidden states.")
    if moe.routing_dtype == "float32":
        out.append("Routing weights stay in float32 when they scale the expert outputs.")
    if moe.shared_expert_size:
        gate = ", scaled by sigmoid(shared_expert_gate(x))" if moe.shared_expert_gate else ""
        out.append(f"A shared expert (intermediate size {moe.shared_expert_size}) runs on every token{gate}.")
    if moe.weighted == "input":
        out.append("Each routing weight multiplies the token going into its expert, not the expert's output.")
    if moe.router_bias:
        out.append("The router's linear map has a bias.")
    if moe.storage == "stacked":
        out.append("Expert weights stored stacked: one (experts, out, in) tensor per projection for all experts.")
    elif moe.storage == "fused_in_out":
        out.append("Expert weights stored fused and (in, out): experts.gate_up_proj (experts, hidden, 2 x width) "
                   "and experts.down_proj (experts, width, hidden).")
    elif moe.storage == "fused_out_in":
        out.append("Expert weights stored fused, as transformers 5 holds them: experts.gate_up_proj (experts, 2 x "
                   "width, hidden; [gate; up] rows) and experts.down_proj (experts, hidden, width).")
    elif moe.storage == "stacked_in_out":
        out.append("Expert weights stored stacked and transposed: experts.gate_up_proj (experts, hidden, 2 x "
                   "intermediate) with gate and up columns interleaved, experts.down_proj (experts, intermediate, "
                   "hidden)" + (", each with a per-expert bias." if moe.expert_bias else "."))
    else:
        fused = "experts.gate_up_proj, experts.down_proj" if moe.gated else "experts.up_proj, experts.down_proj"
        out.append("Expert weights stored per expert (experts.{e}.*); a checkpoint in transformers 5's fused "
                   f"layout ({fused}) is split into them on load, without copying.")
    if arch.mxfp4 is not None:
        out.append("The checkpoint stores the experts' stacked matrices as MXFP4 (e2m1 values with one power-of-two "
                   "scale per 32): they are dequantized on load to the chosen dtype.")
    out.append("MoE dispatch loops over the experts that received tokens, each running on its own tokens only "
               "(no dense all-expert compute).")
    return out


def sigmoid_routing_words(moe: Moe) -> str:
    """A sigmoid router: independent scores, a choice that may be biased and group-limited, the weights."""
    words = "a sigmoid score per expert"
    if moe.score_correction_bias:
        words += " (plus a learned bias used only to choose)"
    words += f"; the top {moe.top_k} per token kept"
    if moe.group_limit != "none":
        best = "best expert" if moe.group_limit == "max" else "two best experts"
        words += f" from the best {moe.topk_groups} of {moe.num_groups} expert groups (scored by their {best})"
    words += ", their weights renormalised to sum to 1" if moe.norm_topk_prob else " (weights not renormalised)"
    if moe.routed_scaling_factor is not None and moe.scale_routed_sum:
        words += f"; the routed experts' summed output scaled by {moe.routed_scaling_factor:g}"
    elif moe.routed_scaling_factor is not None:
        words += f", then scaled by {moe.routed_scaling_factor:g}"
    return words


def mla_words(mla) -> list[str]:
    """Sentences on multi-head latent attention."""
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    q = (f"queries through a rank-{mla.q_lora_rank} projection (q_a, RMSNorm, q_b)" if mla.q_lora_rank
         else "queries through q_proj")
    if mla.rope is None:  # NoPE (Kimi Linear): the "rope" channels are used unrotated
        return [
            f"Multi-head latent attention with {mla.num_heads} heads, no position embedding (NoPE): {q}; keys and "
            f"values expanded per head from a {mla.kv_lora_rank}-channel latent (kv_a, RMSNorm, kv_b), which is all "
            f"the KV cache stores with the shared key part.",
            f"Query/key heads of {qk} channels ({mla.qk_nope_head_dim} per head, {mla.qk_rope_head_dim} of a key part "
            f"shared by all heads, none rotated), value heads of {mla.v_head_dim}; scores scaled by {mla.scale:g}.",
        ]
    return [
        f"Multi-head latent attention with {mla.num_heads} heads: {q}; keys and values expanded per head from a "
        f"{mla.kv_lora_rank}-channel latent (kv_a, RMSNorm, kv_b), which is all the KV cache stores with the RoPE key.",
        f"Query/key heads of {qk} channels ({mla.qk_nope_head_dim} without RoPE, {mla.qk_rope_head_dim} with RoPE, "
        f"the RoPE key shared by all heads), value heads of {mla.v_head_dim}; scores scaled by {mla.scale:g}"
        + (" (1/sqrt(head width) x the YaRN mscale squared)." if abs(mla.scale - qk**-0.5) > 1e-12 else "."),
        *(["RoPE channels stored as adjacent pairs, regrouped as [evens; odds] before rotating."]
          if mla.rope_deinterleave else []),
        *(indexer_words(mla.indexer) if mla.indexer is not None else []),
    ]


def indexer_words(ix) -> list[str]:
    """Sentences on DeepSeek Sparse Attention's lightning indexer."""
    return [
        f"DeepSeek Sparse Attention: each query attends only to the top {ix.topk} causal keys chosen by a lightning "
        f"indexer ({ix.num_heads} heads of {ix.head_dim} channels; score = sum over heads of weight x ReLU(q . k)), "
        f"whose {ix.head_dim}-channel keys the cache stores beside the latent.",
        "Indexer RoPE on the first qk_rope_head_dim channels of its queries and keys"
        + (", stored as adjacent pairs." if ix.rope_interleave else ", rotating halves."),
    ]
