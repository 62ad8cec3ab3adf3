"""Feature sentences for per-layer attention shapes, shared keys and values, keys as values, a value
norm, experts beside the MLP, per-layer inputs and layer scalars (used by describe.features)."""

from __future__ import annotations

from ...schemas.arch import Architecture


def extras_features(arch: Architecture) -> list[str]:
    attns = [layer for layer in arch.layers if getattr(layer.mixer, "kind", None) == "attention"]
    out = []
    shapes = {}
    for layer in attns:
        shapes.setdefault(layer.mixer.span, (layer.mixer.head_dim, layer.mixer.num_kv_heads))
    if len(set(shapes.values())) > 1:
        out.append("Head width and key/value heads per kind of layer: " + "; ".join(
            f"{span} layers head_dim {dim}, {kv} key/value heads" for span, (dim, kv) in sorted(shapes.items())) + ".")
    heads = {layer.mixer.span: layer.mixer.num_heads for layer in attns}
    if len(set(heads.values())) > 1:
        out.append("Query heads per kind of layer: " + "; ".join(
            f"{span} layers {count}" for span, count in sorted(heads.items())) + ".")
    first = attns[0].mixer if attns else None
    if first is not None and first.v_head_dim is not None:
        out.append(f"Value heads {first.v_head_dim} wide, queries and keys {first.head_dim}: the output projection "
                   f"reads heads x {first.v_head_dim}.")
    if first is not None and first.value_scale is not None:
        out.append(f"Values multiplied by {first.value_scale:g} after their projection.")
    if first is not None and first.head_gate:
        out.append(f"A gate per head ({arch.names.head_gate}, from the layer's input): each head's output is "
                   "multiplied by sigmoid(gate) before the output projection.")
    sinks = sorted({layer.mixer.span for layer in attns if layer.mixer.sinks})
    if sinks and len(sinks) < len({layer.mixer.span for layer in attns}):
        out.append(f"Attention sinks on the {' and '.join(sinks)} layers only: a learned logit per head joins each "
                   "query's softmax as one more column and its share is dropped.")
    k_eq_v = sorted({layer.mixer.span for layer in attns if layer.mixer.k_eq_v})
    if k_eq_v:
        out.append(f"Keys reused as values on the {' and '.join(k_eq_v)} layers: no value projection; the values are "
                   "the key projection's output (before the key norm and RoPE).")
    if any(layer.mixer.v_norm for layer in attns):
        out.append("Values RMS-normalised over each head's channels, with no weight.")
    shared = [layer for layer in attns if layer.mixer.kv_shared_from is not None]
    if shared:
        out.append(f"KV sharing: the last {len(shared)} layers compute no keys or values and keep no cache; each reads "
                   f"those of the last earlier layer of its kind (layer {shared[0].index} reads layer "
                   f"{shared[0].mixer.kv_shared_from}).")
    moe = arch.layers[0].experts_beside
    if moe is not None:
        out.append(f"Routed experts beside the dense MLP in every layer: {moe.num_experts} experts of width "
                   f"{moe.intermediate_size}, top {moe.top_k} per token (softmax, renormalised, times a learned "
                   "per-expert scale); the router reads the residual stream, RMS-normalised and scaled.")
    ple = arch.per_layer_input
    if ple is not None:
        out.append(f"Per-layer embeddings: every layer gets an input of width {ple.width} of its own (a packed "
                   "embedding table plus a projection of the token embedding), gated into the residual stream "
                   "after the MLP.")
    if arch.layers[0].layer_scalar:
        out.append("Each layer's output is multiplied by a stored scalar of its own (layer_scalar).")
    if arch.altup is not None:
        out.append(f"AltUp: {arch.altup.num_inputs} residual streams (the embeddings and projections of them); each "
                   f"layer predicts every stream from all of them, runs its block on stream {arch.altup.active_index} "
                   "only and corrects every stream by the block's innovation, router-weighted.")
    if arch.layers[0].laurel is not None:
        out.append(f"LAuReL: a rank-{arch.layers[0].laurel.rank} residual branch beside attention, the two sums "
                   "divided by sqrt(2).")
    sparse = [layer.index for layer in arch.layers if getattr(layer.ffn, "gate_sparsity_std", None) is not None]
    if sparse:
        out.append(f"Activation sparsity in the MLPs of layers {sparse[0]}-{sparse[-1]}: gate values below their mean "
                   "plus a set number of standard deviations are zeroed (a Gaussian top-k).")
    return out
