"""IR of a mixture-of-experts feed-forward (``Layer.ffn`` kind ``moe``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import Identifier, PositiveInt, Width, _Frozen, _unset

MAX_EXPERTS = 4096


class MoeNames(_Frozen):
    """Checkpoint names inside a mixture-of-experts block (the block itself is ``Names.mlp``)."""

    router: Identifier = "gate"
    router_inner: Identifier | None = Field(None, description="The router's linear map sits one module deeper "
                                            "under this name (Granite: router.layer.weight).")
    experts: Identifier = "experts"
    gate: Identifier = Field("gate_proj", description="Per-expert and shared-expert projections (Mixtral: w1, w3, w2).")
    up: Identifier = "up_proj"
    down: Identifier = "down_proj"
    stacked_gate_up: Identifier = Field("input_linear", description="Stacked storage: every expert's [gate; up].")
    stacked_down: Identifier = "output_linear"
    shared_expert: Identifier = "shared_expert"
    shared_gate: Identifier | None = Field(None, exclude_if=_unset, description="The shared expert's projections "
                                           "when they are named apart from the routed experts' (Kimi Linear: routed "
                                           "w1, w3, w2; shared gate_proj, up_proj, down_proj); None: the same names.")
    shared_up: Identifier | None = Field(None, exclude_if=_unset)
    shared_down: Identifier | None = Field(None, exclude_if=_unset)
    shared_expert_gate: Identifier = "shared_expert_gate"
    latent_in: Identifier = Field("fc1_latent_proj", exclude_if=lambda v: v == "fc1_latent_proj",
                                  description="latent_size: the map from the hidden size down to the experts' width.")
    latent_out: Identifier = Field("fc2_latent_proj", exclude_if=lambda v: v == "fc2_latent_proj")
    score_bias_owner: Identifier | None = Field(
        None, exclude_if=_unset, description="The correction bias is a (1, experts) parameter of this submodule "
        "of the block (ERNIE 4.5: mlp.moe_statics.e_score_correction_bias), not a buffer of the router.")
    shared_gate_up: Identifier | None = Field(
        None, exclude_if=_unset, description="The shared expert keeps [gate; up] in one matrix of this name (Granite-MoE-"
        "Shared: input_linear) and its down projection in `shared_down`; shared_gate / shared_up are None then.")
    fused_block: Identifier = Field("mlp", description="transformers 5's in-memory (fused) layout: the block, its "
                                    "router and the stacked expert tensors under `experts`.")
    fused_router: Identifier = "gate"
    fused_gate_up: Identifier = "gate_up_proj"
    fused_down: Identifier = "down_proj"
    hub_block: Identifier | None = Field(
        None, exclude_if=_unset, description="per_expert storage whose hub checkpoint stacks each projection of every "
        "expert in one tensor, `layers.{i}.<hub_block>.<gate|up|down>.weight` (experts, out, in), beside the router "
        "`<hub_block>.<router>.weight` and the correction bias `<hub_block>.<hub_bias>` (Step-3.5: moe, router_bias): "
        "the loader splits them into the per-expert layout.")
    hub_bias: Identifier | None = Field(None, exclude_if=_unset, description="hub_block: the correction bias's name.")
    hub_shared: Identifier | None = Field(None, exclude_if=_unset, description="hub_block: the shared expert sits "
                                          "in the layer under this name in the hub checkpoint (Step-3.5: share_expert).")
    score_bias: Identifier = Field("e_score_correction_bias", exclude_if=lambda v: v == "e_score_correction_bias",
                                   description="The block's selection-bias buffer as transformers names it in "
                                   "memory (score_bias_in_block; LFM2-MoE: expert_bias).")
    score_bias_on_disk: Identifier | None = Field(
        None, exclude_if=_unset, description="score_bias_in_block: the same buffer's name in the checkpoint where it "
        "differs from `score_bias` (HY-V3: expert_bias on disk, e_score_correction_bias in memory).")


class Moe(_Frozen):
    """A routed mixture of gated experts: each token goes through the `top_k` experts its router
    scores highest, their outputs weighted by the routing weights and summed; optionally plus a
    shared expert that every token uses."""

    kind: Literal["moe"] = "moe"
    num_experts: Annotated[int, Field(gt=0, le=MAX_EXPERTS)]
    top_k: PositiveInt
    intermediate_size: Width = Field(description="Width of each expert's gated MLP.")
    gated: bool = Field(True, exclude_if=lambda v: v, description="False: each expert (and the shared expert) is "
                        "down(act(up(x))), with no gate projection (Nemotron-H).")
    latent_size: Width | None = Field(None, exclude_if=_unset, description="The routed experts work in a latent "
                                      "space of this width: the tokens pass latent_in (hidden -> latent) before "
                                      "them and the sum of their outputs latent_out (latent -> hidden) after; the "
                                      "router and the shared expert read the hidden states (Nemotron-3 Ultra).")
    activation: Literal["silu", "gelu", "gelu_tanh", "relu", "relu2", "clamped_swiglu"] = Field(
        description="clamped_swiglu (gpt-oss): gate = min(gate, limit), up = clamp(up, -limit, limit), "
        "out = (up + 1) * gate * sigmoid(alpha * gate), with `swiglu_alpha` and `swiglu_limit`.")
    swiglu_alpha: float | None = Field(None, exclude_if=_unset, description="clamped_swiglu: the sigmoid's gain.")
    swiglu_limit: Annotated[float, Field(gt=0)] | None = Field(
        None, exclude_if=_unset, description="clamped_swiglu: the clamp bound.")
    router: Literal["softmax_topk", "topk_softmax", "sigmoid_topk", "topk_sigmoid", "sparsemixer"] = Field(
        description="softmax_topk: softmax over all experts, then keep the top k (Mixtral, Qwen, OLMoE). "
        "topk_softmax: keep the top k logits, then softmax over those k (Granite). sigmoid_topk: an independent "
        "sigmoid score per expert, the top k kept (DeepSeek-V3). topk_sigmoid: keep the top k logits, then a "
        "sigmoid of each kept logit (Llama 4). sparsemixer (PhiMoE, inference form, top 2): the best "
        "expert, weighted by a softmax over the experts whose logit is within 2 x `sparsemixer_eps` (relative) of "
        "its own; then the same for the best of the others.")
    sparsemixer_eps: Annotated[float, Field(ge=0)] | None = Field(
        None, exclude_if=_unset, description="sparsemixer: the relative logit distance that keeps an expert in "
        "a choice's softmax is 2 x this (PhiMoE's router_jitter_noise).")
    router_bias: bool = Field(False, exclude_if=_unset, description="The router's linear map has a bias (gpt-oss).")
    norm_topk_prob: bool = Field(False, description="softmax_topk / sigmoid_topk: divide the k kept weights by their sum.")
    norm_topk_eps: Annotated[float, Field(gt=0)] | None = Field(
        None, exclude_if=_unset, description="sigmoid_topk with norm_topk_prob: added to the sum of the kept weights "
        "before dividing (unset: 1e-20, DeepSeek-V3; LFM2-MoE: 1e-6).")
    router_float32: bool = Field(False, description="The router's matrix and its input are cast to float32 before the "
                                 "product (DeepSeek keeps the router in float32).")
    score_correction_bias: bool = Field(False, description="A learned per-expert bias is added to the scores for "
                                        "choosing experts only; the weights are the unbiased scores (DeepSeek-V3; "
                                        "ERNIE 4.5 adds it to the softmax probabilities).")
    score_bias_in_block: bool = Field(False, exclude_if=_unset, description="The correction bias is a buffer of the MoE block itself, "
                                      "not of its router (MiniMax-M2: block.e_score_correction_bias).")
    sigmoid_float32: bool = Field(False, exclude_if=_unset, description="sigmoid_topk: the router's logits are cast to float32 before "
                                  "the sigmoid (MiniMax-M2; router_float32 already computes them in float32).")
    group_limit: Literal["none", "max", "top2_sum"] = Field(
        "none", description="Group-limited routing: experts form `num_groups` equal groups, each group is scored "
        "(max: its best expert's score, DeepSeek-V2; top2_sum: the sum of its two best, DeepSeek-V3), and only experts "
        "of the best `topk_groups` groups can be chosen.")
    num_groups: PositiveInt | None = None
    topk_groups: PositiveInt | None = None
    routed_scaling_factor: Annotated[float, Field(gt=0)] | None = Field(
        None, description="The routing weights are multiplied by this (DeepSeek).")
    scale_routed_sum: bool = Field(False, exclude_if=_unset, description="routed_scaling_factor multiplies the sum "
                                   "of the routed experts' outputs (before a shared expert joins) rather than the "
                                   "routing weights: equal up to rounding (Step-3.5).")
    routing_dtype: Literal["float32", "input"] = Field(
        "input", description="The dtype in which the routing weights multiply the expert outputs: float32 (Mixtral "
        "keeps them in float32) or the hidden states' dtype.")
    router_input_scale: bool = Field(False, exclude_if=_unset, description="The router's input is RMS-normalised "
                                     "with no weight, then multiplied by a learned vector `scale` and hidden^-0.5 "
                                     "(Gemma 4: router.scale, router.proj).")
    per_expert_scale: bool = Field(False, exclude_if=_unset, description="The kept routing weights are multiplied "
                                   "by a learned scale of their expert (router.per_expert_scale).")
    storage: Literal["per_expert", "stacked", "fused_in_out", "stacked_in_out", "fused_out_in"] = Field(
        description="The hub checkpoint layout: one set of projection matrices per expert, or every expert's matrices "
        "stacked in one (experts, out, in) tensor per projection (Granite), or fused_in_out: `experts.gate_up_proj` "
        "(experts, hidden, 2 x width, [gate | up] along the last axis) and `experts.down_proj` (experts, width, "
        "hidden), stored (in, out) without a .weight suffix (Llama 4), or stacked_in_out: the same tensors with gate "
        "and up columns interleaved along the last axis of gate_up (gpt-oss), or fused_out_in: `experts.gate_up_proj` "
        "(experts, 2 x width, hidden, [gate; up] rows) and `experts.down_proj` (experts, hidden, width), no .weight "
        "suffix, as transformers 5 holds and saves them (Gemma 4, Granite-MoE-SWA, Qwen3-VL-MoE).")
    transposed_on_disk: bool = Field(
        False, exclude_if=_unset, description="fused_out_in: checkpoints may also hold the two fused expert tensors "
        "with their last two axes swapped, (experts, in, out) (the Qwen3-VL-MoE hub releases; transformers saves "
        "(experts, out, in)); a tensor whose shape says so is transposed on load, as transformers does (a square one is read as stored).")
    weighted: Literal["output", "input"] = Field(
        "output", description="What the routing weight multiplies: the expert's output, or its input (Llama 4: "
        "expert(weight x token), which differs since the expert is not linear).")
    expert_bias: bool = Field(False, exclude_if=_unset, description="stacked_in_out: each stacked projection has "
                              "a (experts, out) bias (<name>_bias).")
    shared_expert_size: Width | None = Field(None, description="Width of a shared expert every token uses (Qwen2-MoE).")
    shared_expert_gate: bool = Field(False, description="The shared expert's output is scaled by sigmoid(gate(x)).")
    shared_expert_in_layer: bool = Field(
        False, exclude_if=_unset, description="The shared expert is a module of the decoder layer beside the experts "
        "block (`layers.{i}.<shared_expert>`), fed the block's input; its output joins the block's (Granite-MoE-Shared).")
    combine_float32: bool = Field(False, exclude_if=_unset, description="The routed and shared experts' outputs "
                                  "are added in float32, then cast back (HY-V3's enable_moe_fp32_combine).")
    names: MoeNames = MoeNames()

    @model_validator(mode="after")
    def _routing(self) -> "Moe":
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) exceeds num_experts ({self.num_experts})")
        if (self.router == "sparsemixer") != (self.sparsemixer_eps is not None):
            raise ValueError("sparsemixer_eps is given exactly for a sparsemixer router")
        if self.router == "sparsemixer" and (self.top_k != 2 or self.norm_topk_prob or self.score_correction_bias):
            raise ValueError("a sparsemixer router picks exactly 2 experts, unnormalised and unbiased")
        if self.norm_topk_prob and self.router == "topk_softmax":
            raise ValueError("norm_topk_prob does not apply to a topk_softmax router")
        if (self.group_limit == "none") != (self.num_groups is None) or (self.num_groups is None) != (self.topk_groups is None):
            raise ValueError("group-limited routing needs num_groups and topk_groups, and only it takes them")
        if self.num_groups is not None:
            if self.num_experts % self.num_groups:
                raise ValueError(f"num_experts ({self.num_experts}) is not a multiple of num_groups ({self.num_groups})")
            if self.topk_groups > self.num_groups:
                raise ValueError(f"topk_groups ({self.topk_groups}) exceeds num_groups ({self.num_groups})")
            if self.top_k > self.topk_groups * self.num_experts // self.num_groups:
                raise ValueError(f"top_k ({self.top_k}) exceeds the experts of the topk_groups kept groups")
            if self.group_limit == "top2_sum" and self.num_experts // self.num_groups < 2:
                raise ValueError("top2_sum group scores need at least 2 experts per group")
        if self.score_bias_in_block and not self.score_correction_bias:
            raise ValueError("score_bias_in_block needs score_correction_bias")
        if self.norm_topk_eps is not None and not (self.norm_topk_prob and self.router == "sigmoid_topk"):
            raise ValueError("norm_topk_eps applies to a sigmoid_topk router with norm_topk_prob only")
        if self.score_correction_bias and self.router not in ("sigmoid_topk", "softmax_topk"):
            raise ValueError("a score correction bias applies to a sigmoid_topk or softmax_topk router only")
        if self.names.score_bias_owner is not None and (not self.score_correction_bias or self.score_bias_in_block):
            raise ValueError("names.score_bias_owner places the router's score correction bias")
        if self.score_correction_bias and self.router == "softmax_topk" and self.group_limit != "none":
            raise ValueError("a score correction bias with group-limited softmax routing is not implemented")
        if self.sigmoid_float32 and self.router != "sigmoid_topk":
            raise ValueError("sigmoid_float32 applies to a sigmoid_topk router only")
        if (self.activation == "clamped_swiglu") != (self.swiglu_alpha is not None) or (
                self.swiglu_alpha is None) != (self.swiglu_limit is None):
            raise ValueError("swiglu_alpha and swiglu_limit are given exactly for a clamped_swiglu activation")
        if self.transposed_on_disk and self.storage != "fused_out_in":
            raise ValueError("transposed_on_disk applies to fused_out_in storage only")
        if self.expert_bias and self.storage != "stacked_in_out":
            raise ValueError("expert biases are implemented for stacked_in_out storage only")
        shared_names = (self.names.shared_gate, self.names.shared_up)
        if self.names.shared_gate_up is not None and any(name is not None for name in shared_names):
            raise ValueError("names.shared_gate_up replaces shared_gate and shared_up")
        if self.names.shared_gate_up is None and len({name is None for name in (*shared_names, self.names.shared_down)}) > 1:
            raise ValueError("the shared expert's projection names are given all three or none")
        if (self.shared_expert_in_layer or self.names.shared_gate_up) and self.shared_expert_size is None:
            raise ValueError("shared_expert_in_layer and names.shared_gate_up need a shared expert")
        if self.names.shared_gate_up is not None and self.names.shared_down is None:
            raise ValueError("names.shared_gate_up needs names.shared_down")
        if self.shared_expert_in_layer and (self.shared_expert_gate or self.combine_float32):
            raise ValueError("a shared expert in the layer takes no gate and no float32 sum")
        if self.combine_float32 and self.shared_expert_size is None:
            raise ValueError("combine_float32 needs a shared expert")
        if self.names.score_bias_on_disk is not None and not self.score_bias_in_block:
            raise ValueError("names.score_bias_on_disk names the block's correction bias (score_bias_in_block)")
        if self.shared_expert_gate and self.shared_expert_size is None:
            raise ValueError("a shared-expert gate needs a shared expert")
        if (not self.gated or self.latent_size) and (self.storage != "per_expert" or self.weighted != "output"):
            raise ValueError("ungated or latent experts are implemented for per_expert storage, output-weighted")
        if not self.gated and self.activation == "clamped_swiglu":
            raise ValueError("clamped_swiglu experts are gated")
        if self.scale_routed_sum and (self.routed_scaling_factor is None or self.weighted != "output" or self.latent_size):
            raise ValueError("scale_routed_sum needs a routed_scaling_factor and output-weighted experts")
        hub = self.names.hub_block
        if (hub is None) != (self.names.hub_bias is None) or (self.names.hub_shared is not None and hub is None):
            raise ValueError("names.hub_bias and names.hub_shared come with names.hub_block")
        if hub is not None and (self.storage != "per_expert" or not self.gated or self.latent_size or not self.score_correction_bias
                                or self.score_bias_in_block or self.names.score_bias_owner or self.names.router_inner
                                or self.shared_expert_in_layer or self.names.shared_gate_up):
            raise ValueError("names.hub_block is implemented for gated per_expert experts with a router's correction bias")
        return self
