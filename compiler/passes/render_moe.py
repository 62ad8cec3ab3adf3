"""Rendering decisions for mixture-of-experts feed-forwards (templates/model/moe.py.j2).

Kept apart from render.py: which MoE code a model needs (router kind, renormalisation,
float32 routing weights, per-expert or stacked storage, a shared expert and its gate, layers
mixing experts with dense MLPs), the MoE Config fields and the fused-layout key map.
"""

from __future__ import annotations

from typing import Any

from ...schemas.arch import Architecture, Moe
from .weight_map import ffn_kinds, ffn_pattern, fused_expert_map
from .literals import activation, field, identifier, literal

FFN_LEGEND = "E = routed experts, D = dense MLP"


def moe_of(arch: Architecture) -> Moe | None:
    moe = ffn_kinds(arch).get("moe")
    return moe if isinstance(moe, Moe) else None


def mixed_ffn(arch: Architecture) -> bool:
    """Dense and expert feed-forwards after the mixers (Config.ffn_pattern); single-block layers: the layer pattern."""
    return len(ffn_kinds(arch)) > 1 and all(layer.ffn is not None for layer in arch.layers)


def moe_config_fields(arch: Architecture) -> list[dict[str, Any]]:
    """The Config fields the MoE code reads (none for a dense model)."""
    moe = moe_of(arch)
    if moe is None:
        return []
    fields = [
        field("num_experts", "int", moe.num_experts),
        field("num_experts_per_tok", "int", moe.top_k, "experts each token is routed to"),
        field("moe_intermediate_size", "int", moe.intermediate_size, "width of each expert"),
    ]
    if moe.shared_expert_size:
        fields.append(field("shared_expert_intermediate_size", "int", moe.shared_expert_size))
    if moe.num_groups is not None:
        fields.append(field("n_group", "int", moe.num_groups, "experts form this many equal groups"))
        fields.append(field("topk_group", "int", moe.topk_groups, "tokens choose experts of this many groups"))
    if moe.activation == "clamped_swiglu":
        fields.append(field("swiglu_alpha", "float", moe.swiglu_alpha, "gain of the experts' sigmoid"))
        fields.append(field("swiglu_limit", "float", moe.swiglu_limit, "the experts' gate and up are clamped to this"))
    if moe.latent_size is not None:
        fields.append(field("moe_latent_size", "int", moe.latent_size, "width of the experts' latent space"))
    if moe.sparsemixer_eps is not None:
        fields.append(field("sparsemixer_eps", "float", moe.sparsemixer_eps, "router: relative logit window / 2"))
    if moe.routed_scaling_factor is not None:
        fields.append(field("routed_scaling_factor", "float", moe.routed_scaling_factor,
                            "multiplies the routed experts' sum" if moe.scale_routed_sum else "multiplies the routing weights"))
    if mixed_ffn(arch) and all(layer.ffn is not None for layer in arch.layers):  # else the layer pattern says it
        fields.append(field("ffn_pattern", "str", ffn_pattern(arch), FFN_LEGEND))
    return fields


def moe_context(arch: Architecture) -> dict[str, Any] | None:
    """What moe.py.j2 prints; None for a dense model. Structural: sizes live in Config."""
    moe = moe_of(arch)
    if moe is None:
        return None
    names = {key: identifier(value) for key, value in moe.names if value is not None}  # every field (dumps leave some out)
    return {
        "mn": names,
        "router_inner_literal": literal(names["router_inner"]) if moe.names.router_inner else "",
        "router": moe.router,
        "norm_topk": moe.norm_topk_prob,
        "norm_topk_eps_literal": literal(moe.norm_topk_eps if moe.norm_topk_eps is not None else 1e-20),
        "score_bias_literal": literal(moe.names.score_bias),
        "score_bias_name": identifier(moe.names.score_bias),  # model_dump leaves the default name out
        "router_float32": moe.router_float32,
        "score_bias": moe.score_correction_bias and not moe.score_bias_in_block and not moe.names.score_bias_owner,
        "score_bias_owner": names.get("score_bias_owner", ""),
        "block_bias": moe.score_bias_in_block,
        # the block's bias buffer: its checkpoint name (HY-V3 renames it on disk), else its name in memory
        "block_bias_name": names.get("score_bias_on_disk") or identifier(moe.names.score_bias),
        "block_bias_literal": literal(names.get("score_bias_on_disk") or moe.names.score_bias),
        "combine_float32": moe.combine_float32,
        "shared_in_layer": moe.shared_expert_in_layer,
        "shared_fused": moe.names.shared_gate_up is not None,
        "shared_class": "SharedExpert" if moe.names.shared_gate_up or moe.names.shared_gate else "Expert",
        "sigmoid_float32": moe.sigmoid_float32,
        "groups": moe.group_limit != "none",
        "group_max": moe.group_limit == "max",
        "scaling": moe.routed_scaling_factor is not None,
        "scale_sum": moe.scale_routed_sum,
        "float32_weights": moe.routing_dtype == "float32",
        "stacked": moe.storage == "stacked",
        "fused_in_out": moe.storage == "fused_in_out",
        "fused_out_in": moe.storage == "fused_out_in",
        "transposed_on_disk": moe.transposed_on_disk,
        "transposed_suffixes": "(" + literal(f".{names['experts']}.{names['fused_gate_up']}") + ", "
        + literal(f".{names['experts']}.{names['fused_down']}") + ")",
        "input_weighted": moe.weighted == "input",
        "weighting_words": "each fed the token times its routing weight" if moe.weighted == "input"
        else "weighted by the routing weights",  # the MoE docstring's
        "stacked_in_out": moe.storage == "stacked_in_out",
        "expert_bias": moe.expert_bias,
        "clamped": moe.activation == "clamped_swiglu",
        "router_bias": moe.router_bias,
        "shared": moe.shared_expert_size is not None and not moe.shared_expert_in_layer,  # the block's own
        "shared_gate": moe.shared_expert_gate,
        "shared_named": moe.names.shared_gate is not None,
        "ungated": not moe.gated,
        "latent": moe.latent_size is not None,
        "mixed": mixed_ffn(arch),
        **(activation(moe.activation) if moe.activation != "clamped_swiglu"  # clamped_swiglu: written out
           else {"activation": "", "approximate": ""}),
        "fused": [{"key_literal": literal(key), "parts_literal": "(" + "".join(f"{literal(p)}, " for p in parts) + ")"}
                  for key, parts in fused_expert_map(arch).items()],
    }
