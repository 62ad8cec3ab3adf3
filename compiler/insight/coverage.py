"""Coverage of transformers' decoder-only text models: which model_types llmgen compiles (and the test
that proves parity), and for the others the mechanism llmgen lacks, in a few words.

The model_types come from the installed transformers' auto mappings (``keys_data.decoder_model_types``),
or from the committed snapshot in ``lowering/transformers_keys.json`` when transformers is absent.
``llmgen list --all``, the README's coverage table and the gallery's "not yet compiled" list all come
from :func:`coverage`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from ..passes.lowering.registry import REGISTRY
from ..passes.lowering import FAMILIES, FOREIGN_WRAPPERS, WRAPPERS
from ..passes.lowering.keys_data import keys_data

REPO = Path(__file__).resolve().parent.parent.parent
# The tests proving parity for families without a committed generated/ model (those have their own), and
# for families whose own test proves more than the generated parity test (DeepSeek Sparse Attention).
PROOF = {
    "cohere": "tests/test_family_phi3_cohere.py", "cohere2": "tests/test_family_phi3_cohere.py",
    "granite": "tests/test_family_phi3_cohere.py", "stablelm": "tests/test_family_phi3_cohere.py",
    "deepseek_v2": "tests/test_deepseek_v2.py", "kimi_k2": "tests/test_deepseek_v2.py",
    "glm4_moe": "tests/test_glm_minimax.py", "minimax_m2": "tests/test_glm_minimax.py",
    "olmoe": "tests/test_moe.py", "granitemoe": "tests/test_moe.py", "llama4_text": "tests/test_llama4.py",
    "gemma3": "tests/test_parity_variants.py", "llama4": "tests/test_wrappers.py", "kimi_k25": "tests/test_wrappers.py",
    "qwen2_vl": "tests/test_wrappers.py", "qwen2_5_vl": "tests/test_wrappers.py", "qwen3_vl": "tests/test_wrappers.py",
    "lfm2": "tests/test_lfm2.py",
    "qwen3_next": "tests/test_hybrid.py", "qwen3_5_text": "tests/test_hybrid.py", "qwen3_5": "tests/test_hybrid.py",
    "qwen3_5_moe_text": "tests/test_hybrid.py", "lfm2_moe": "tests/test_lfm2.py",
    "gemma4_text": "tests/test_gemma4.py",
    "gemma3n_text": "tests/test_gemma3n.py", "gemma3n": "tests/test_gemma3n.py",
    "kimi_linear": "tests/test_kimi_linear.py",
    "deepseek_v32": "tests/test_dsa.py", "glm_moe_dsa": "tests/test_dsa.py", "deepseek_v4": "tests/test_deepseek_v4.py",
    "mamba2": "tests/test_mamba2.py", "bamba": "tests/test_mamba2.py", "nemotron_h": "tests/test_mamba2.py",
    "granitemoehybrid": "tests/test_mamba2.py", "falcon_h1": "tests/test_falcon_h1.py",
    # step3p5: Step3p7TextConfig's model_type, compiled inside the step3p7 wrapper (no causal LM of its own)
    "mimo_v2_flash": "tests/test_mimo_step.py", "step3p7": "tests/test_mimo_step.py", "step3p5": "tests/test_mimo_step.py",
}
# Self-registered families proven by tests/test_longtail_pos.py (position schemes and small new mechanisms).
POSITION_PROOF = "tests/test_longtail_pos.py"
PROOF.update({model_type: POSITION_PROOF for model_type in (
    "internlm3", "olmo", "ministral3", "nanochat", "bitnet", "apertus", "gpt_neo", "exaone", "opt", "bloom", "mpt",
    "iquestcoder", "biogpt", "xglm", "falcon", "codegen")})
# Registered mixture-of-experts families (and multimodal wrappers) with their own test file.
LONGTAIL_MOE = ("dots1", "ernie4_5_moe", "hunyuan_v1_moe", "glm4_moe_lite", "exaone_moe", "granitemoe_swa",
                "qwen3_vl_moe_text", "qwen3_vl_moe", "glm4v_text", "glm4v", "glm4v_moe_text", "glm4v_moe", "hy_v3", "granitemoeshared",
                "cohere2_moe", "phimoe")
PROOF.update({model_type: "tests/test_longtail_moe.py" for model_type in LONGTAIL_MOE})
REGISTERED_PROOF = "tests/test_longtail.py"  # families that register themselves (lowering/registry.py)
# Config keys whose presence names the mechanism a family needs (checked in this order).
MECHANISMS = (
    (("ssm_state_size", "mamba_d_state", "state_size", "time_step_rank", "mamba_n_heads"), "state-space (Mamba) layers"),
    (("linear_num_key_heads", "linear_key_head_dim", "linear_conv_kernel_dim", "linear_attn_config"),
     "linear-attention layers"),
    (("attention_hidden_size", "rescale_every", "lru_width", "block_types", "slstm_block"), "recurrent layers"),
    (("index_topk", "index_n_heads", "index_head_dim"), "sparse attention with an indexer"),
    (("kv_lora_rank",), "a latent-attention variant"),
    (("alibi", "alibi_bias_max", "position_embedding_type"), "another position encoding"),
    (("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok"),
     "its mixture-of-experts variant"),
)


class Coverage(NamedTuple):
    model_type: str
    causal_lm: str  # transformers' class
    compiles: bool
    detail: str  # the proving test, or the missing mechanism


@lru_cache(maxsize=1)
def _generated_proofs() -> dict[str, str]:
    """model_type -> the committed generated model's parity test (first by name)."""
    found: dict[str, str] = {}
    for manifest in sorted((REPO / "generated").glob("*/llmgen.json")):
        raw = json.loads((manifest.parent / "config.json").read_text())
        found.setdefault(str(raw.get("model_type")), f"generated/{manifest.parent.name}/test_parity.py")
    return found


def decoder_types() -> tuple[dict[str, str], str]:
    """(model_type -> ForCausalLM class, where the list came from)."""
    try:
        import transformers
    except ImportError:
        snapshot = keys_data()
        return dict(snapshot["decoder_model_types"]), f"the transformers {snapshot['transformers_version']} snapshot"
    from ..passes.lowering.keys_data import decoder_model_types

    return decoder_model_types(), f"the installed transformers {transformers.__version__}"


def _missing(model_type: str) -> str:
    family = keys_data()["families"].get(model_type)
    if family is None:
        return "family lowering not written"
    keys = set(family["defines"])
    if "text_config" in keys:
        return "wrapper: its text model does not compile yet"
    for names, words in MECHANISMS:
        if keys.intersection(names):
            return words
    return "family lowering not written"


def coverage() -> tuple[list[Coverage], str]:
    """Every decoder-only text model_type with its status, sorted; and the list's origin."""
    types, origin = decoder_types()
    for wrapper in set(WRAPPERS) - FOREIGN_WRAPPERS:  # (not transformers models: unlisted)  # wrappers outside the causal-LM mapping (kimi_k25) count too
        types.setdefault(wrapper, keys_data()["families"].get(wrapper, {}).get("class", ""))
    rows = []
    for model_type, causal_lm in sorted(types.items()):
        compiles = model_type in FAMILIES or model_type in WRAPPERS
        proof = (PROOF.get(model_type) or _generated_proofs().get(model_type)
                 or (REGISTERED_PROOF if model_type in REGISTRY else "tests/test_lowering.py"))
        rows.append(Coverage(model_type, causal_lm, compiles, proof if compiles else _missing(model_type)))
    return rows, origin


def coverage_markdown() -> str:
    """The README's coverage table."""
    rows, origin = coverage()
    done = sum(r.compiles for r in rows)
    lines = [f"{done} of {len(rows)} decoder-only text model_types of transformers compile "
             f"(`llmgen list --all`; from {origin}).", "",
             "| model_type | transformers class | status |", "|---|---|---|"]
    for r in rows:
        status = f"compiles: parity in `{r.detail}`" if r.compiles else f"not yet: {r.detail}"
        lines.append(f"| `{r.model_type}` | {r.causal_lm} | {status} |")
    return "\n".join(lines) + "\n"
