"""FlexOlmo: OLMoE's experts and whole-projection QK-norm inside OLMo 2's post-norm block (norms after
attention and after the experts, none before), with OLMo 2's RMSNorm (weight applied in float32).

Reads exactly the keys transformers 5.24's FlexOlmoConfig and model read, with the same defaults.
"""

from __future__ import annotations

from ....schemas.arch import Architecture
from .fam_moe import lower_olmoe, replica_moe
from .reader import ConfigReader
from .registry import family

# FlexOlmoConfig's defaults where OLMoE's differ.
FLEX_OLMO_DEFAULTS = {"rms_norm_eps": 1e-6, "num_experts": 7, "num_experts_per_tok": 5}


@family("flex_olmo", title="FlexOlmo", replica=replica_moe, pad_token_id=100277)
def lower_flex_olmo(r: ConfigReader, model_type: str) -> Architecture:
    r.raw = {**FLEX_OLMO_DEFAULTS, **r.raw}
    arch = lower_olmoe(r, model_type)
    norm = arch.final_norm.model_copy(update={"weight_in_compute_dtype": True})
    layers = tuple(
        layer.model_copy(update={"block": "post_norm", "norm": norm,
                                 "mixer": layer.mixer.model_copy(update={"qk_norm_spec": norm})})
        for layer in arch.layers
    )
    return arch.model_copy(update={"layers": layers, "final_norm": norm})
