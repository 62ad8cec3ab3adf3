"""The weight map of mixture-of-experts feed-forwards (used by weight_map.py).

Per layer kind (E routed experts, D dense MLP), the expert tensors of the hub checkpoint
layout, and the map from transformers 5's fused in-memory layout to it.
"""

from __future__ import annotations

from ...schemas.arch import Architecture, Mlp, Moe

FFN_LETTERS = {"moe": "E", "mlp": "D", None: "-"}  # E: routed experts, D: a dense MLP, -: none (a mixer-only layer)


def ffn_kinds(arch: Architecture) -> dict[str, Mlp | Moe]:
    """The feed-forward of each kind the layers use, in order of first appearance (validate: one per kind)."""
    kinds: dict[str, Mlp | Moe] = {}
    for layer in arch.layers:
        if layer.ffn is not None:
            kinds.setdefault(layer.ffn.kind, layer.ffn)
    return kinds


def ffn_pattern(arch: Architecture) -> str:
    """One letter per layer: E = routed experts, D = dense MLP, - = none."""
    return "".join(FFN_LETTERS[layer.ffn.kind if layer.ffn is not None else None] for layer in arch.layers)


def shared_names(moe: Moe) -> tuple[str, str, str]:
    """The shared expert's gate, up and down projection names."""
    mn = moe.names
    return (mn.shared_gate, mn.shared_up, mn.shared_down) if mn.shared_gate else (mn.gate, mn.up, mn.down)


def moe_rows(moe: Moe, m: str, hidden: int, rows: list, layer: str = "") -> dict[str, dict]:
    """A mixture-of-experts block's tensors (hub layout); returns the extra WeightEntry fields by key."""
    mn, width, count = moe.names, moe.intermediate_size, moe.num_experts
    extra: dict[str, dict] = {}
    inner = f".{mn.router_inner}" if mn.router_inner else ""
    rows.append((f"{m}{mn.router}{inner}.weight", (count, hidden), "linear"))
    if moe.router_bias:
        rows.append((f"{m}{mn.router}{inner}.bias", (count,), "bias"))
    if moe.score_bias_in_block:
        rows.append((f"{m}{mn.score_bias_on_disk or mn.score_bias}", (count,), "buffer"))
    elif moe.score_correction_bias and mn.score_bias_owner:  # a (1, experts) parameter of a router submodule
        rows.append((f"{m}{mn.score_bias_owner}.e_score_correction_bias", (1, count), "bias"))
    elif moe.score_correction_bias:
        rows.append((f"{m}{mn.router}{inner}.e_score_correction_bias", (count,), "buffer"))
    if moe.storage == "per_expert":
        e, inner = f"{m}{mn.experts}.{{e}}.", moe.latent_size or hidden  # the experts' input and output width
        if moe.latent_size:
            rows += [(f"{m}{mn.latent_in}.weight", (inner, hidden), "linear"), (f"{m}{mn.latent_out}.weight", (hidden, inner), "linear")]
        projections = ([(f"{e}{mn.gate}.weight", (width, inner))] if moe.gated else []) + [
            (f"{e}{mn.up}.weight", (width, inner)), (f"{e}{mn.down}.weight", (inner, width))]
        for key, shape in projections:
            rows.append((key, shape, "linear"))
            extra[key] = {"experts": count, "routed": True}
    elif moe.storage in ("fused_in_out", "stacked_in_out", "fused_out_in"):  # tensors without a ".weight" suffix
        x = f"{m}{mn.experts}."
        out_in = moe.storage == "fused_out_in"  # (experts, out, in), as transformers 5 holds them
        for name, shape in ((mn.fused_gate_up, (count, 2 * width, hidden) if out_in else (count, hidden, 2 * width)),
                            (mn.fused_down, (count, hidden, width) if out_in else (count, width, hidden))):
            rows.append((f"{x}{name}", shape, "linear"))
            extra[f"{x}{name}"] = {"routed": True}
            if moe.expert_bias:
                rows.append((f"{x}{name}_bias", (count, shape[-1]), "bias"))
                extra[f"{x}{name}_bias"] = {"routed": True}
    else:
        for key, shape in ((f"{m}{mn.stacked_gate_up}.weight", (count, 2 * width, hidden)),
                           (f"{m}{mn.stacked_down}.weight", (count, hidden, width))):
            rows.append((key, shape, "linear"))
            extra[key] = {"routed": True}
    if moe.shared_expert_size and mn.shared_gate_up:  # [gate; up] in one matrix; the layer's own module, or the block's
        s, size = f"{layer if moe.shared_expert_in_layer else m}{mn.shared_expert}.", moe.shared_expert_size
        rows += [(f"{s}{mn.shared_gate_up}.weight", (2 * size, hidden), "linear"),
                 (f"{s}{mn.shared_down}.weight", (hidden, size), "linear")]
    elif moe.shared_expert_size:
        s, size = f"{layer if moe.shared_expert_in_layer else m}{mn.shared_expert}.", moe.shared_expert_size
        gate, up, down = shared_names(moe)
        rows += ([(f"{s}{gate}.weight", (size, hidden), "linear")] if moe.gated else []) + [
            (f"{s}{up}.weight", (size, hidden), "linear"), (f"{s}{down}.weight", (hidden, size), "linear")]
    if moe.shared_expert_gate:
        rows.append((f"{m}{mn.shared_expert_gate}.weight", (1, hidden), "linear"))
    return extra


def fused_expert_map(arch: Architecture) -> dict[str, tuple[str, ...]]:
    """transformers 5's in-memory expert layout -> this checkpoint layout, per layer ("{i}").

    Value: the hub keys the fused tensor becomes. With "{e}", the tensor is indexed by expert
    first; two keys split it in halves along the output rows ([gate; up])."""
    moe = ffn_kinds(arch).get("moe")
    if not isinstance(moe, Moe) or moe.storage in ("fused_in_out", "stacked_in_out", "fused_out_in"):  # the hub layout is the fused one
        return {}
    n, mn, pre = arch.names, moe.names, arch.checkpoint_prefix
    p = f"{pre}{n.backbone}.{n.layers}.{{i}}."
    m, f = f"{p}{n.mlp}.", f"{p}{mn.fused_block}."
    if moe.storage == "per_expert" and not moe.gated:  # transformers 5 stacks up and down alone, in the block itself
        e = f"{m}{mn.experts}.{{e}}."
        return {f"{m}{mn.experts}.{mn.up}": (f"{e}{mn.up}.weight",), f"{m}{mn.experts}.{mn.down}": (f"{e}{mn.down}.weight",)}
    if moe.storage == "per_expert":
        e = f"{m}{mn.experts}.{{e}}."
        gate_up: tuple[str, ...] = (f"{e}{mn.gate}.weight", f"{e}{mn.up}.weight")
        down: tuple[str, ...] = (f"{e}{mn.down}.weight",)
    else:
        gate_up, down = (f"{m}{mn.stacked_gate_up}.weight",), (f"{m}{mn.stacked_down}.weight",)
    mapping = {f"{f}{mn.experts}.{mn.fused_gate_up}": gate_up, f"{f}{mn.experts}.{mn.fused_down}": down}
    inner = f".{mn.router_inner}" if mn.router_inner else ""
    router, fused_router = f"{m}{mn.router}{inner}.weight", f"{f}{mn.fused_router}.weight"
    if router != fused_router:
        mapping[fused_router] = (router,)
    if mn.score_bias_owner:  # in memory, a submodule of the router
        mapping[f"{f}{mn.fused_router}.{mn.score_bias_owner}.e_score_correction_bias"] = (
            f"{m}{mn.score_bias_owner}.e_score_correction_bias",)
    if moe.score_bias_in_block and (m != f or mn.score_bias_on_disk):  # in memory under score_bias, on disk maybe renamed
        mapping[f"{f}{mn.score_bias}"] = (f"{m}{mn.score_bias_on_disk or mn.score_bias}",)
    if mn.hub_block:  # the hub's stacked projections, router and bias under hub_block; the shared expert in the layer
        e, h = f"{m}{mn.experts}.{{e}}.", f"{p}{mn.hub_block}."
        mapping.update({f"{h}{name}.weight": (f"{e}{name}.weight",) for name in (mn.gate, mn.up, mn.down)})
        mapping[f"{h}{mn.router}.weight"] = (router,)
        mapping[f"{h}{mn.hub_bias}"] = (f"{m}{mn.router}{inner}.e_score_correction_bias",)
        for name in shared_names(moe) if mn.hub_shared and moe.shared_expert_size else ():
            mapping[f"{p}{mn.hub_shared}.{name}.weight"] = (f"{m}{mn.shared_expert}.{name}.weight",)
    if moe.shared_expert_size and m != f:
        for name in shared_names(moe):
            mapping[f"{f}{mn.shared_expert}.{name}.weight"] = (f"{m}{mn.shared_expert}.{name}.weight",)
        if moe.shared_expert_gate:
            mapping[f"{f}{mn.shared_expert_gate}.weight"] = (f"{m}{mn.shared_expert_gate}.weight",)
    return mapping
