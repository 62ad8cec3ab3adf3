"""Full-size shape check: every catalog config the compiler supports, built at its real size
on the meta device (no memory, so 8B-32B configs are fine) next to transformers' own model.

Same parameter count, and every tensor of transformers' checkpoint layout maps to a
parameter of the generated model with the same shape (and nothing else is needed).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CATALOG, import_path, write_py

from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower, supported_model_types
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.weight_map import parameter_count

transformers = pytest.importorskip("transformers")

CONFIGS = sorted(p for p in CATALOG.glob("*.json"))


def supported(path) -> bool:
    return json.loads(path.read_text()).get("model_type") in supported_model_types()


def on_disk_layout(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The keys save_pretrained writes for a dense model: its state dict minus tied copies, renamed
    as save_pretrained renames them (GPT-NeoX's lm_head is saved as embed_out)."""
    from transformers.core_model_loading import revert_weight_conversion

    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    state = {k: v for k, v in model.state_dict().items() if k not in tied}
    return {k: tuple(v.shape) for k, v in revert_weight_conversion(model, state).items()}


@pytest.mark.parametrize("path", [p for p in CONFIGS if supported(p)], ids=lambda p: p.stem)
def test_full_size_model_matches_transformers_on_meta(path, tmp_path):
    text = path.read_text()
    raw = json.loads(text)
    try:
        compiled = compile_config(LoadedConfig(raw=raw, text=text, source_id=path.stem, revision="bundled",
                                               origin="file", checkpoint_dir=None, note=None), slug="m")
    except LlmgenError as exc:  # e.g. a RoPE type not implemented yet: the compiler refuses cleanly
        pytest.skip(f"not compiled yet: {exc}")
    write_py(tmp_path, compiled.files)
    module = import_path(tmp_path / "model.py", f"full_size_{path.stem.replace('-', '_').replace('.', '_')}")
    with torch.device("meta"):
        ours = module.CausalLM(module.Config())
        config = transformers.AutoConfig.for_model(**raw)
        reference = transformers.AutoModelForCausalLM.from_config(config)
    skipped = lower(raw).skipped_prefixes  # a multimodal wrapper's other parts (Gemma 4's vision tower)
    ours_count = sum(p.numel() for p in ours.parameters())
    ref_count = sum(p.numel() for name, p in reference.named_parameters() if not name.startswith(skipped))
    assert ours_count == ref_count == parameter_count(lower(raw)), (ours_count, ref_count)
    layout = {k: v for k, v in on_disk_layout(reference).items() if not k.startswith(skipped)}
    params = {name: tuple(p.shape) for name, p in ours.state_dict().items()}  # parameters and stored buffers
    keys = module.checkpoint_keys(module.Config())
    assert set(keys) == set(layout), sorted(set(keys) ^ set(layout))[:10]
    wrong = [k for k in layout if params[keys[k]] != layout[k]]
    assert not wrong, [(k, params[keys[k]], layout[k]) for k in wrong[:5]]
    # the same padding row (no lookup gradient) as transformers' embedding, or none
    assert ours.get_submodule(next(n for n, m in ours.named_modules() if isinstance(m, torch.nn.Embedding))).padding_idx \
        == reference.get_input_embeddings().padding_idx
    assert set(keys.values()) == set(params)  # every parameter is filled from the checkpoint
