"""Pass 3, validation: reject IR the renderer cannot print faithfully.

Lowering guarantees a well-formed IR; this pass checks what the *templates* support, so a
model that would need code llmgen cannot write fails here with one line instead of
producing a file with wrong logits.
"""

from __future__ import annotations

from ...schemas.arch import Architecture, Moe
from ..insight.describe import layer_pattern
from .render_blocks import no_attention, single_block
from .mixers import KINDS, attention_layers, first_attention, is_hybrid, recurrent_kinds
from ..basics.errors import ConfigError, UnsupportedError
from .rope_fields import rope_unsupported


def validate(arch: Architecture) -> Architecture:
    """Return ``arch`` unchanged if every feature it uses can be rendered, else raise."""
    if arch.hyper is not None:  # hyper-connected streams: templates/model/hyper/ (checks in render_dsv4)
        from .render_dsv4 import validate_hyper

        return validate_hyper(arch)
    first = arch.layers[0]
    ffns: dict[str, object] = {}  # one feed-forward of each kind (dense MLP, experts) per model
    for layer in arch.layers:
        if layer.ffn is None:
            continue
        first_ffn = ffns.setdefault(layer.ffn.kind, layer.ffn)
        width = ({"intermediate_size": first_ffn.intermediate_size, "gate_sparsity_std": first_ffn.gate_sparsity_std}
                 if layer.ffn.kind == "mlp" else {})  # may differ
        if first_ffn != layer.ffn.model_copy(update=width):
            raise UnsupportedError(f"layer {layer.index}: its {layer.ffn.kind} differs from an earlier layer's (not supported yet)")
    mixers: dict[str, object] = {}  # the first mixer of each kind: the others of the kind must match it
    for layer in arch.layers:
        for part in ("block", "parallel_norms", "parallel_sum", "norm", "residual_scale", "experts_beside", "layer_scalar",
                     "laurel", "parallel_mixer", "mixer_multipliers"):
            if getattr(layer, part) != getattr(first, part):
                raise UnsupportedError(f"layer {layer.index}: its {part} differs from layer 0 (not supported yet)")
        a = layer.mixer
        if a is None:  # a layer that is only a feed-forward block
            continue
        b = mixers.setdefault(a.kind, a)
        per_kind = ({"span": b.span, "window": b.window, "rope": b.rope, **_position_coupled(a, b), **_per_layer_kv(a, b)}
                    if a.kind in ("attention", "mla") else {})
        if a.model_copy(update=per_kind) != b:
            raise UnsupportedError(f"layer {layer.index}: its {a.kind} shape differs from layer "
                                   f"{next(lay.index for lay in arch.layers if lay.mixer is b)} (not supported yet)")
    for kind, mixer in recurrent_kinds(arch):
        kind.validate(arch, mixer)
    if single_block(arch) or (mixers and no_attention(arch)):
        _check_blocks(arch, mixers)
    elif is_hybrid(arch):
        _check_hybrid(arch, mixers)
    moe = ffns.get("moe")
    if isinstance(moe, Moe):  # what the expert templates can print
        if moe.activation == "clamped_swiglu" and moe.storage != "stacked_in_out":
            raise UnsupportedError("a clamped SwiGLU is implemented for stacked_in_out experts only")
        if moe.storage == "stacked_in_out" and moe.shared_expert_size:
            raise UnsupportedError("a shared expert beside stacked_in_out experts is not implemented")
        if moe.router_bias and (moe.names.router_inner or moe.score_correction_bias or moe.router_float32):
            raise UnsupportedError("a router bias is implemented for a plain linear router only")
        if moe.shared_expert_in_layer and (len(ffns) > 1 or any(layer.block != "pre_norm" for layer in arch.layers)):
            raise UnsupportedError("a shared expert in the layer is implemented for pre-norm layers that all have experts")
        if moe.weighted == "input" and moe.storage not in ("fused_in_out", "stacked_in_out"):
            raise UnsupportedError("routing weights on the experts' input are implemented for (in, out) stacked experts only")
    pattern = layer_pattern(arch)
    for letter in set(pattern) - {kind.letter for kind in KINDS.values()} - {"E", "D"}:
        ropes = {layer.mixer.rope for layer, kind in zip(arch.layers, pattern) if kind == letter}
        if len(ropes) > 1:
            raise UnsupportedError(f"layers of kind {letter} use different RoPE tables {sorted(map(str, ropes))}")
    _check_position_coupled(arch, pattern)
    check_layer_extras(arch, pattern)
    if len({layer.ffn.intermediate_size for layer in arch.layers if getattr(layer.ffn, "kind", None) == "mlp"}) > 1 and len(ffns) > 1:
        raise UnsupportedError("dense MLPs of different widths beside layers of experts are not implemented")
    windows = {layer.mixer.window for layer in attention_layers(arch) if layer.mixer.span == "sliding"}
    if len(windows) > 1:
        raise UnsupportedError(f"sliding layers use different windows {sorted(windows)} (not supported yet)")
    if windows and max(windows) > arch.max_position_embeddings:
        raise ConfigError(
            f"sliding window {max(windows)} exceeds the context length {arch.max_position_embeddings}"
        )
    names = {table.name for table in arch.rope}
    for layer in attention_layers(arch):
        if layer.mixer.rope is not None and layer.mixer.rope not in names:
            raise ConfigError(f"layer {layer.index}: unknown RoPE table {layer.mixer.rope!r}")
    for table in arch.rope:
        problem = rope_unsupported(table)
        if problem:
            raise UnsupportedError(problem)
    norm, attn = first.norm, first_attention(arch)
    if norm.kind == "rmsnorm" and norm.compute_dtype != "float32":
        raise UnsupportedError("an RMSNorm computed in the input dtype is not implemented")
    if norm.kind == "layernorm" and ((norm.weight_offset and norm.compute_dtype != "input") or norm.weight_in_compute_dtype):
        raise UnsupportedError("a LayerNorm with a weight offset is implemented for torch's LayerNorm (input dtype) only")
    if not norm.weight and (norm.bias or norm.weight_offset or norm.compute_dtype != "float32"):
        raise UnsupportedError("a norm without a learned scale is implemented computed in float32, without a bias")
    if any(getattr(lay.mixer, "alibi", None) is not None and (lay.mixer.rope or lay.mixer.span != "full"
                                                              or lay.mixer.alibi != attn.alibi) for lay in arch.layers):
        raise UnsupportedError("ALiBi is implemented on full-attention layers without RoPE, alike in every layer")
    if arch.embedding.norm is not None and arch.embedding.norm != norm:
        raise UnsupportedError("an embedding norm that differs from the layers' norms is not implemented")
    if arch.final_norm != norm:
        raise UnsupportedError("a final norm that differs from the layers' norms is not implemented")
    if attn is None and not mixers:
        raise UnsupportedError("a model without any token mixer is not implemented")
    if attn is None:
        pass  # state-space layers only: _check_blocks
    elif attn.kind == "mla":
        if arch.linear_layout != "out_in" or norm.kind != "rmsnorm" or attn.latent_norm.kind != "rmsnorm":
            raise UnsupportedError("latent attention is implemented with nn.Linear projections and RMSNorms only")
        if attn.rope is None and attn.rope_deinterleave:  # NoPE (Kimi Linear): nothing is rotated or regrouped
            raise UnsupportedError("latent attention without RoPE has no RoPE channels to de-interleave")
    else:
        if attn.qk_norm == "per_head_modules":
            spec = attn.qk_norm_spec
            if spec is None or spec.kind != "layernorm" or spec.compute_dtype != "input" or spec.bias or spec.eps != norm.eps:
                raise UnsupportedError("per-head QK-norm modules are implemented as torch LayerNorms without bias, "
                                       "with the layers' eps")
            if any(isinstance(layer.ffn, Moe) for layer in arch.layers):
                raise UnsupportedError("per-head QK-norm modules are not implemented with experts")
        elif attn.qk_norm != "none" and attn.qk_norm_spec != norm:
            raise UnsupportedError("a QK-norm that differs from the layers' norms is not implemented")
        if attn.qk_norm == "per_head_weights" and norm.kind == "layernorm" and norm.compute_dtype == "input":
            raise UnsupportedError("a QK-norm with a weight row per head is implemented with llmgen's own norms only")
        if (attn.qkv == "fused_qvk_blocks") != (attn.qkv_blocks is not None) or (attn.qkv_blocks and (
                attn.num_kv_heads != attn.num_heads or (attn.num_heads * attn.head_dim) % attn.qkv_blocks)):
            raise UnsupportedError("q/v/k blocks need a block count dividing the heads' width and as many key/value "
                                   "heads as query heads")
        if attn.qkv == "fused_per_head" and attn.num_kv_heads != attn.num_heads:
            raise UnsupportedError("a per-head fused qkv projection needs as many key/value heads as query heads")
        if attn.qkv != "separate" and not attn.q_bias == attn.k_bias == attn.v_bias:
            raise UnsupportedError("a fused qkv projection with bias on only some of q, k, v is impossible")
        if (attn.v_head_dim or attn.value_scale or attn.head_gate) and (
                attn.qkv != "separate" or attn.output_gate or attn.k_eq_v or attn.v_norm or attn.kv_shared_from is not None
                or attn.qk_norm not in ("none", "per_head") or is_hybrid(arch) or single_block(arch)):
            raise UnsupportedError("value heads of their own width, a value scale and per-head gates are implemented "
                                   "with separate q/k/v projections and plain attention layers only")
        if attn.output_gate and (attn.qkv != "separate" or attn.sinks or attn.softcap is not None):
            raise UnsupportedError("an attention output gate is implemented with separate q/k/v projections only")
        if arch.linear_layout == "in_out" and "moe" in ffns:
            raise UnsupportedError("experts with transposed (Conv1D) projections are not implemented")
        if arch.linear_layout == "in_out":
            biases = (attn.q_bias, attn.k_bias, attn.v_bias, attn.o_bias, first.ffn.bias)
            if not all(biases) or first.ffn.gated:
                raise UnsupportedError("transposed (Conv1D) projections are implemented with biases and a plain MLP only")
    if arch.head.bias and arch.head.tied:
        raise UnsupportedError("a biased output head tied to the embedding is not implemented")
    positions = arch.embedding.learned_positions
    offset = arch.embedding.positions_offset
    if positions is not None and positions != arch.max_position_embeddings + offset:
        raise ConfigError(f"learned position table of {positions} rows != context length {arch.max_position_embeddings}"
                          + (f" + offset {offset}" if offset else ""))
    sinusoidal = arch.embedding.sinusoidal_positions
    if offset and positions is None and not sinusoidal:
        raise ConfigError("a position offset without a position table")
    if sinusoidal and (positions is not None or arch.hidden_size % 2 or arch.hidden_size < 4):
        raise UnsupportedError("sinusoidal positions are implemented alone (no learned table) for an even hidden size")
    return arch


def _per_layer_kv(a, b) -> dict:
    """Attention fields allowed to differ between layers (checked by check_layer_extras): head width and
    key/value head count, keys reused as values, keys and values read from an earlier layer."""
    if a.kind != "attention" or b.kind != "attention":
        return {}
    return {"head_dim": b.head_dim, "num_kv_heads": b.num_kv_heads, "k_eq_v": b.k_eq_v, "kv_shared_from": b.kv_shared_from,
            "num_heads": b.num_heads, "sinks": b.sinks}


def check_layer_extras(arch: Architecture, pattern: str) -> None:
    """What the templates print for per-layer attention shapes, shared keys and values, keys as values, a
    value norm, experts beside the MLP and per-layer inputs (compiler/passes/render_layer_extras.py)."""
    attns = [(layer, kind) for layer, kind in zip(arch.layers, pattern) if getattr(layer.mixer, "kind", None) == "attention"]
    for letter in set(pattern):
        shapes = {(lay.mixer.head_dim, lay.mixer.num_kv_heads, lay.mixer.k_eq_v, lay.mixer.num_heads, lay.mixer.sinks)
                  for lay, k in attns if k == letter}
        if len(shapes) > 1:
            raise UnsupportedError(f"layers of kind {letter} differ in head width, head counts, keys as values or sinks")
    special = [lay.mixer for lay, _ in attns if lay.mixer.k_eq_v or lay.mixer.v_norm or lay.mixer.kv_shared_from is not None]
    first = arch.layers[0]
    sparse = any(getattr(lay.ffn, "gate_sparsity_std", None) is not None for lay in arch.layers)
    extras = (special or first.experts_beside is not None or arch.per_layer_input is not None or first.layer_scalar
              or arch.altup is not None or first.laurel is not None or sparse)
    if not extras:
        return
    if len({lay.mixer.v_norm for lay, _ in attns}) > 1:
        raise UnsupportedError("a value norm on some attention layers only is not implemented")
    attn = attns[0][0].mixer if attns else None
    if (is_hybrid(arch) or attn is None or attn.qkv != "separate" or attn.qk_norm != "per_head" or attn.qk_norm_after_rope
            or attn.output_gate or attn.sinks or attn.softcap is not None or attn.temperature is not None
            or any(lay.mixer.rope is None for lay, _ in attns) or arch.linear_layout != "out_in"
            or first.norm.kind != "rmsnorm" or first.residual_scale is not None):
        raise UnsupportedError("per-layer attention shapes, shared keys and values, keys as values, experts beside "
                               "the MLP and per-layer inputs are implemented for Gemma 4's attention and block only")
    if first.experts_beside is not None and (first.block != "sandwich" or any(lay.ffn.kind != "mlp" for lay in arch.layers)
                                             or first.experts_beside.storage != "fused_out_in"):
        raise UnsupportedError("experts beside the MLP are implemented in sandwich blocks with a dense MLP only")
    if arch.per_layer_input is not None and arch.per_layer_input.norm != first.norm:
        raise UnsupportedError("a per-layer input norm that differs from the layers' norms is not implemented")
    _check_altup(arch, first, sparse)


def _check_altup(arch: Architecture, first, sparse: bool) -> None:
    """AltUp streams, the LAuReL branch (in AltUp sandwich blocks) and activation sparsity (plain gated MLPs)."""
    if (arch.altup is not None or first.laurel is not None) and (
            arch.altup is None or first.laurel is None or first.block != "sandwich" or first.experts_beside is not None
            or first.layer_scalar or arch.altup.router_norm != first.norm or first.laurel.norm != first.norm):
        raise UnsupportedError("AltUp and LAuReL are implemented together, in sandwich blocks without experts beside "
                               "the MLP or a layer scalar, their norms the layers'")
    if sparse and any(lay.ffn is None or lay.ffn.kind != "mlp" or not lay.ffn.gated or lay.ffn.fused_gate_up
                      or lay.ffn.inner_norm or lay.ffn.activation == "xielu" for lay in arch.layers):
        raise UnsupportedError("activation sparsity is implemented for gated MLPs with separate gate and up "
                               "projections in every layer")


def _position_coupled(a, b) -> dict:
    """Attention fields allowed to differ between layers (checked by _check_position_coupled): the chunk
    size, and a weightless L2 QK-norm or temperature tuning (Llama 4's RoPE / NoPE layers)."""
    fields = {"chunk_size": b.chunk_size} if a.kind == b.kind == "attention" else {}
    if fields and ("l2" in (a.qk_norm, b.qk_norm) or a.temperature or b.temperature):
        fields.update(qk_norm=b.qk_norm, qk_norm_spec=b.qk_norm_spec, temperature=b.temperature)
    return fields


def _check_position_coupled(arch: Architecture, pattern: str) -> None:
    """The code applies an L2 QK-norm on exactly the RoPE layers, temperature tuning per kind of layer
    (one setting), chunked attention with one chunk size."""
    attns = [layer.mixer for layer in arch.layers if getattr(layer.mixer, "kind", None) == "attention"]
    if {"chunked", "sliding"} <= {a.span for a in attns}:
        raise UnsupportedError("chunked and sliding-window layers in one model are not supported")
    if len({a.chunk_size for a in attns if a.span == "chunked"}) > 1:
        raise UnsupportedError("chunked layers use different chunk sizes (not supported yet)")
    l2 = [a for a in attns if a.qk_norm == "l2"]
    if l2 and (any(a.rope is None for a in l2) or len(l2) != sum(a.rope is not None for a in attns)):
        raise UnsupportedError("an L2 QK-norm is implemented on exactly the RoPE layers only")
    if l2 and l2[0].qk_norm_spec != arch.layers[0].norm:
        raise UnsupportedError("an L2 QK-norm whose eps differs from the layers' norms is not implemented")
    if len({a.temperature for a in attns if a.temperature}) > 1:
        raise UnsupportedError("layers with different attention temperature tuning are not supported")
    for letter in set(pattern) - {"L"}:
        if len({getattr(layer.mixer, "temperature", None) for layer, kind in zip(arch.layers, pattern) if kind == letter}) > 1:
            raise UnsupportedError(f"layers of kind {letter} differ in attention temperature tuning")


def _check_blocks(arch: Architecture, mixers: dict[str, object]) -> None:
    """What the templates print for layers of one block each (a mixer or a feed-forward) and for models of recurrent
    layers only: pre-norm blocks of nn.Linear projections and RMSNorms; recurrent kinds beside plain full attention."""
    layer = arch.layers[0]
    if layer.block != "pre_norm" or arch.linear_layout != "out_in" or layer.norm.kind != "rmsnorm":
        raise UnsupportedError("single-block and recurrent-only layers are implemented in pre-norm blocks with RMSNorms and "
                               "nn.Linear projections only")
    if set(mixers) - {"attention", *KINDS}:
        raise UnsupportedError(f"layers mixing {' and '.join(sorted(mixers))} are not implemented")
    shapes = {(lay.mixer is None, lay.ffn is None) for lay in arch.layers}
    if single_block(arch) and (False, False) in shapes:
        raise UnsupportedError("layers of one block beside layers of two are not implemented")
    attns = attention_layers(arch)
    if any(lay.mixer.span != "full" or lay.mixer.temperature or lay.mixer.sinks or lay.mixer.output_gate
           or lay.mixer.qk_norm != "none" for lay in attns):
        raise UnsupportedError("in single-block layers, attention is implemented as plain full attention only")


def _check_hybrid(arch: Architecture, mixers: dict[str, object]) -> None:
    """What the templates print for layers of several mixer kinds: recurrent kinds beside plain attention,
    in pre-norm blocks of nn.Linear projections and RMSNorms."""
    softmax = set(mixers) - set(KINDS)
    if len(softmax) > 1 or not set(mixers) & set(KINDS):
        raise UnsupportedError(f"layers mixing {' and '.join(sorted(mixers))} are not implemented")
    layer = arch.layers[0]
    if layer.block != "pre_norm" or arch.linear_layout != "out_in" or layer.norm.kind != "rmsnorm":
        raise UnsupportedError("recurrent layers are implemented in pre-norm blocks with RMSNorms and "
                               "nn.Linear projections only")
    spans = {lay.mixer.span for lay in attention_layers(arch)}
    if spans - {"full"}:
        raise UnsupportedError(f"recurrent layers beside {'/'.join(sorted(spans - {'full'}))} attention are not implemented")
