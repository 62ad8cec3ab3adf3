"""Rendering a hyper-connected model (Architecture.hyper: DeepSeek-V4's compressed attention, clamped
experts and hyper-connections): the context of templates/model/hyper/."""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture
from ..basics.dtypes import loader_context
from .literals import field, literal, safe_comment
from .lowering import family_titles

LETTERS = {"S": "S = sliding window only", "K": "K = compressed sparse", "H": "H = heavily compressed"}


def letter(mixer) -> str:
    return mixer.letter


def hyper_features(arch: Architecture) -> list[str]:
    first, moe = arch.layers[0].mixer, arch.layers[0].ffn
    used = {letter(layer.mixer) for layer in arch.layers}
    out = [f"{arch.num_layers} layers; hyper-connections: {arch.hyper.streams} residual streams mixed around every "
           f"block (Sinkhorn-normalised, {arch.hyper.sinkhorn_iters} iterations)",
           f"multi-query attention: {first.num_heads} query heads of {first.head_dim} over one shared key=value head, "
           f"low-rank queries (rank {first.q_lora_rank}), RoPE on the last {first.rope_dim} channels (adjacent pairs)",
           f"{first.window}-token sliding window, learned attention sinks, grouped low-rank output "
           f"({first.o_groups} groups of rank {first.o_lora_rank})"]
    for layer in arch.layers:
        m = layer.mixer
        if "K" in used and m.selection is not None:
            out.append(f"compressed sparse attention: entries pooled from overlapping {m.compressor.rate}-token windows, "
                       f"a lightning indexer ({m.selection.num_heads} heads of {m.selection.head_dim}) keeps the top "
                       f"{m.selection.topk} per query")
            used.discard("K")
        if "H" in used and m.compressor is not None and m.selection is None:
            out.append(f"heavily compressed attention: one entry per {m.compressor.rate} tokens")
            used.discard("H")
    hashed = sum(layer.ffn.hashed for layer in arch.layers)
    out.append(f"{moe.num_experts} routed experts (top {moe.top_k}, {moe.scoring} scores) plus a shared expert, "
               f"SwiGLU clamped at {moe.swiglu_limit:g}" + (f"; the first {hashed} layers route by token id (hash)"
                                                             if hashed else ""))
    compress = arch.rope_table("compress")
    if compress.type == "yarn":
        out.append(f"compressed layers: YaRN RoPE (factor {compress.factor:g}, theta {compress.theta:g})")
    return out


def hyper_config_fields(arch: Architecture) -> list[dict[str, Any]]:
    first, moe = arch.layers[0].mixer, arch.layers[0].ffn
    pattern = "".join(letter(layer.mixer) for layer in arch.layers)
    csa = next((layer.mixer for layer in arch.layers if layer.mixer.selection is not None), None)
    hca = next((layer.mixer for layer in arch.layers if letter(layer.mixer) == "H"), None)
    main, compress = arch.rope_table("main"), arch.rope_table("compress")
    hc = arch.hyper
    fields = [
        field("vocab_size", "int", arch.embedding.vocab_size),
        *([field("pad_token_id", "int", arch.embedding.padding_idx, "its embedding row gets no gradient")]
          if arch.embedding.padding_idx is not None else []),
        field("hidden_size", "int", arch.hidden_size),
        field("num_hidden_layers", "int", arch.num_layers),
        field("layer_pattern", "str", pattern, ", ".join(LETTERS[c] for c in "SKH" if c in pattern)),
        field("ffn_pattern", "str", "".join("T" if layer.ffn.hashed else "R" for layer in arch.layers),
              "T = experts by token id, R = by score"),
        field("num_attention_heads", "int", first.num_heads),
        field("head_dim", "int", first.head_dim),
        field("rope_head_dim", "int", first.rope_dim, "trailing channels of each head that RoPE rotates"),
        field("q_lora_rank", "int", first.q_lora_rank),
        field("o_groups", "int", first.o_groups),
        field("o_lora_rank", "int", first.o_lora_rank),
        field("sliding_window", "int", first.window, "keys visible to a query, itself included"),
        *([field("csa_rate", "int", csa.compressor.rate, "tokens per compressed entry (K layers)"),
           field("index_n_heads", "int", csa.selection.num_heads),
           field("index_head_dim", "int", csa.selection.head_dim),
           field("index_topk", "int", csa.selection.topk, "compressed entries a query keeps")] if csa else []),
        *([field("hca_rate", "int", hca.compressor.rate, "tokens per compressed entry (H layers)")] if hca else []),
        field("num_experts", "int", moe.num_experts),
        field("num_experts_per_tok", "int", moe.top_k),
        field("moe_intermediate_size", "int", moe.intermediate_size),
        field("routed_scaling_factor", "float", moe.routed_scaling_factor),
        field("swiglu_limit", "float", moe.swiglu_limit),
        field("hc_mult", "int", hc.streams, "residual streams"),
        field("hc_sinkhorn_iters", "int", hc.sinkhorn_iters),
        field("hc_eps", "float", hc.eps),
        field("norm_eps", "float", arch.layers[0].norm.eps),
        field("attention_scale", "float", first.scale, "multiplies q.k"),
        field("rope_theta", "float", main.theta, "sliding-window layers"),
        field("compress_rope_theta", "float", compress.theta, "compressed layers and their entries"),
    ]
    if compress.type == "yarn":
        fields += [field("yarn_factor", "float", compress.factor),
                   field("yarn_original_context", "int", compress.original_max_position_embeddings),
                   field("yarn_beta_fast", "float", compress.beta_fast),
                   field("yarn_beta_slow", "float", compress.beta_slow)]
    fields.append(field("max_position_embeddings", "int", arch.max_position_embeddings, "trained context length"))
    return fields


def hyper_context(arch: Architecture, prov) -> dict[str, Any]:
    """The templates' context (render.model_context's, for a model with hyper-connections)."""
    from .. import __version__

    head = {"version": __version__, "source": prov.label, "command": safe_comment(prov.command),
            "title": family_titles()[arch.model_type]}
    pattern = {letter(layer.mixer) for layer in arch.layers}
    moe = arch.layers[0].ffn
    safetensors = loader_context()
    if arch.fp8 is not None:  # the scales' power-of-two bytes (ue8m0)
        safetensors = {**safetensors, "dtypes": [*safetensors["dtypes"], {"entry": '"F8_E8M0": torch.float8_e8m0fnu'}]}
    hashed = {layer.ffn.hashed for layer in arch.layers}
    return {
        **head,
        "hyper": True,
        "features": hyper_features(arch),
        "config_fields": hyper_config_fields(arch),
        "layer_kinds": [{"letter_literal": literal(c)} for c in "SKH" if c in pattern],
        "moe": None, "attn": None, "mla": None,
        "hy": {"sliding": "S" in pattern, "csa": "K" in pattern, "hca": "H" in pattern,
               "compressed": bool(pattern - {"S"}), "quantized": arch.fp8 is not None, "yarn": arch.rope_table("compress").type == "yarn",
               "hashed": True in hashed, "scored": False in hashed, "scoring": moe.scoring,
               "scoring_words": "sqrt(softplus)" if moe.scoring == "sqrtsoftplus" else "sigmoid",
               "legend": ", ".join(LETTERS[c] for c in "SKH" if c in pattern)},
        "embedding": {"padding": arch.embedding.padding_idx is not None},
        "safetensors": safetensors,
        "fp8": {"scales": "ue8m0"} if arch.fp8 else None, "mxfp4": None, "modelopt": None,
    }


def validate_hyper(arch: Architecture) -> Architecture:
    """Hyper-connected models render only with compressed attention and clamped experts in every layer,
    sharing everything but the compression (the templates read one Config)."""
    from ..basics.errors import UnsupportedError

    first = arch.layers[0]
    for layer in arch.layers:
        if layer.mixer is None or layer.mixer.kind != "compressed_attention" or layer.ffn is None \
                or layer.ffn.kind != "clamped_moe":
            raise UnsupportedError(f"layer {layer.index}: hyper-connections are rendered with compressed attention "
                                   "and clamped experts only")
        same = {"compressor": None, "selection": None, "rope": None}
        if layer.mixer.model_copy(update=same) != first.mixer.model_copy(update=same) \
                or layer.ffn.model_copy(update={"hashed": False}) != first.ffn.model_copy(update={"hashed": False}) \
                or layer.norm != first.norm:
            raise UnsupportedError(f"layer {layer.index}: its attention or experts differ from layer 0's "
                                   "beyond the compression (not supported)")
        if layer.mixer.rope != ("main" if layer.mixer.compressor is None else "compress"):
            raise UnsupportedError(f"layer {layer.index}: sliding layers use the 'main' RoPE, compressed ones 'compress'")
    kinds = {(layer.mixer.compressor, layer.mixer.selection) for layer in arch.layers if layer.mixer.compressor}
    if len({k[1] is not None for k in kinds}) != len(kinds):
        raise UnsupportedError("one compression per kind (indexed, not indexed) is supported")
    return arch


HYPER_SEQ = 40  # 5 sliding windows of the replica (8), 10 CSA windows (4), 5 HCA windows (8); the indexer keeps 3


def unquantized(context: dict[str, Any]) -> dict[str, Any]:
    """A structure without its checkpoint's quantization (the replica is saved in float32; the dequantizer
    is checked against transformers' by tests/test_deepseek_v4.py)."""
    rest = {k: v for k, v in context.items() if k not in ("fp8", "safetensors")}
    return {**rest, "hy": {**rest["hy"], "quantized": False}}


def hyper_parity_context(raw: dict, arch: Architecture, weights: list, prov) -> dict[str, Any]:
    """Context for templates/tests/hyper_parity.py.j2: the replica must render the same code."""
    from .. import __version__
    from ..basics.errors import UnsupportedError
    from .lowering import lower
    from .lowering.replica import tiny_replica
    from ..verification.parity import BATCH, NORM_SPREAD, TOLERANCE, WEIGHT_STD, py_literal
    from .render import model_context, structure
    from .weight_map import weight_map

    tiny_raw = tiny_replica(raw, arch)
    tiny = validate_hyper(lower(tiny_raw))
    full, small = (unquantized(structure(model_context(a, weight_map(a), prov))) for a in (arch, tiny))
    if full != small:
        raise UnsupportedError("cannot build a tiny replica with the same structure (differs in: "
                               + ", ".join(sorted(k for k in full if full[k] != small.get(k))) + ")")
    norms = [e for e in weight_map(tiny) if e.role == "norm"]
    return {
        "hyper": True,
        "version": __version__, "source": prov.label, "command": safe_comment(prov.command),
        "hf_config": py_literal(tiny_raw), "model_config": py_literal({f["name"]: f["value"] for f in hyper_config_fields(tiny)}),
        "norm_count": literal(sum(e.count(tiny) for e in norms)), "weight_std": literal(WEIGHT_STD),
        "norm_spread": literal(NORM_SPREAD), "batch": literal(BATCH), "seq_len": literal(HYPER_SEQ),
        "tolerance": literal(TOLERANCE),
    }
