"""DeepSeek Sparse Attention (DeepSeek-V3.2 ``deepseek_v32``, GLM-5 ``glm_moe_dsa``): MLA plus the lightning
indexer, which keeps only the top ``index_topk`` causal keys of each query.

Tiny replicas (index_topk 8, sequences of 24 and 32 tokens, so the selection drops keys) from the published
configs and from transformers' config-class defaults, every parameter random, saved with save_pretrained and
loaded through the generated loader: logits against transformers at batch 2. Planted bugs in the selection
(top-k over the query axis, non-causal keys competing) and no selection at all must show. Cached decoding,
indexer keys included, equals one full forward. Full size on the meta device: parameter counts and every
on-disk key against transformers. The card's KV bytes per token include the indexer key; the diff from
DeepSeek-V3 names the indexer alone; models without an indexer get no indexer code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import GENERATED, REPO, catalog_config, import_path, write_py

from llmgen.compiler.insight.card import kv_cache
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.insight.irdiff import differences
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.weight_map import parameter_count

transformers = pytest.importorskip("transformers")

SEQ = 24  # three times the replica's index_topk: most queries lose keys to the selection
V32, GLM5 = "deepseek-ai/DeepSeek-V3.2", "zai-org/GLM-5"


def _defaults(config_class, model_type: str) -> dict:
    raw = config_class().to_diff_dict()
    raw.pop("transformers_version", None)
    return {**raw, "model_type": model_type}


CASES = {
    "DeepSeek-V3.2": lambda: catalog_config(V32),
    "GLM-5": lambda: catalog_config(GLM5),
    "deepseek_v32 defaults": lambda: _defaults(transformers.DeepseekV32Config, "deepseek_v32"),
    "glm_moe_dsa defaults": lambda: _defaults(transformers.GlmMoeDsaConfig, "glm_moe_dsa"),
}


def _compile(raw: dict, directory: Path, slug: str) -> dict[str, bytes]:
    text = json.dumps(raw, indent=2)
    loaded = LoadedConfig(raw=raw, text=text, source_id=f"{slug}/config.json", revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    files = compile_config(loaded, slug=slug).files
    directory.mkdir(parents=True, exist_ok=True)
    write_py(directory, files)
    return files


class Replica:
    """A compiled replica: the generated module, its parity module, transformers' model and ours (loaded
    from transformers' save_pretrained checkpoint), and both logits on one batch."""

    def __init__(self, name: str, raw: dict, directory: Path) -> None:
        tag = "dsa_" + "".join(c if c.isalnum() else "_" for c in name)
        _compile(raw, directory, tag)
        self.module = import_path(directory / "model.py", f"{tag}_model")
        self.parity = import_path(directory / "test_parity.py", f"{tag}_parity")
        config = transformers.AutoConfig.for_model(**self.parity.HF_CONFIG)
        self.reference = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", dtype=torch.float32, experts_implementation="eager").eval()
        self.parity.randomise(self.reference, torch.Generator().manual_seed(7))
        self.reference.save_pretrained(directory / "checkpoint")
        self.config = self.module.Config(**self.parity.MODEL_CONFIG)
        self.ours = self.module.load_checkpoint(directory / "checkpoint", self.config, dtype=torch.float32).eval()
        self.ids = torch.randint(0, self.config.vocab_size - 8, (2, SEQ), generator=torch.Generator().manual_seed(8))
        with torch.no_grad():
            self.expected = self.reference(input_ids=self.ids).logits
            self.actual = self.ours(self.ids)

    def tolerance(self) -> float:
        return 1e-5 * max(1.0, self.expected.abs().max().item())


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    cache: dict[str, Replica] = {}

    def get(name: str) -> Replica:
        if name not in cache:
            cache[name] = Replica(name, CASES[name](), tmp_path_factory.mktemp("dsa"))
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(CASES))
def test_parity_with_transformers(replicas, name):
    r = replicas(name)
    assert r.config.index_topk == 8 and SEQ > r.config.index_topk  # the selection drops keys
    gap = (r.expected - r.actual).abs().max().item()
    assert r.expected.abs().max().item() > 0.1
    assert gap <= r.tolerance(), (name, gap)


# The selection as written in the generated file, and the planted bugs that must show.
CHOOSE = "chosen = index.topk(min(self.topk, index.shape[-1]), dim=-1).indices  # (batch, seq, topk)"
SCATTER = "return torch.zeros_like(index, dtype=torch.bool).scatter(-1, chosen, True)"
CAUSAL = 'index = index.masked_fill(~mask, float("-inf"))  # only causal keys compete'
PLANTED = {
    "top-k over the query axis": [
        (CHOOSE, "chosen = index.topk(min(self.topk, index.shape[-2]), dim=-2).indices"),
        (SCATTER, "return torch.zeros_like(index, dtype=torch.bool).scatter(-2, chosen, True)")],
    "selection ignores causality": [(CAUSAL, "pass")],
    "no selection (dense MLA)": [(SCATTER, "return torch.ones_like(index, dtype=torch.bool)")],
}


@pytest.mark.parametrize("name", ["DeepSeek-V3.2", "GLM-5"])
def test_planted_selection_bugs_show(replicas, name):
    r = replicas(name)
    for bug, edits in PLANTED.items():
        source = Path(r.module.__file__).read_text()
        for old, new in edits:
            assert source.count(old) == 1, old
            source = source.replace(old, new)
        path = Path(r.module.__file__).with_name("planted.py")
        path.write_text(source)
        module = import_path(path, f"dsa_planted_{name}_{bug}".replace(" ", "_").replace("-", "_").replace(".", "_")
                             .replace("(", "").replace(")", ""))
        model = module.CausalLM(module.Config(**r.parity.MODEL_CONFIG)).eval()
        model.load_state_dict(r.ours.state_dict())
        with torch.no_grad():
            gap = (model(r.ids) - r.expected).abs().nan_to_num(nan=float("inf")).max().item()
        assert gap > 1e-3, (name, bug, gap)  # inf: a query left with no key at all (NaN logits)


@pytest.mark.parametrize("name, chunks", [("DeepSeek-V3.2", [1] * SEQ), ("GLM-5", [7, 1, 9, 3, 4])])
def test_cached_decoding_matches_full_forward(replicas, name, chunks):
    """Token by token and in chunks, the cache (latent, RoPE key and indexer key per position) gives the
    logits of one uncached forward."""
    r = replicas(name)
    with torch.no_grad():
        cache = r.ours.enable_cache(batch=2, max_len=SEQ)
        pieces, start = [], 0
        for size in chunks:
            pieces.append(r.ours(r.ids[:, start:start + size]))
            start += size
        r.ours.disable_cache()
    gap = (torch.cat(pieces, dim=1) - r.actual).abs().max().item()
    assert gap <= 1e-5 * max(1.0, r.actual.abs().max().item()), (name, chunks, gap)
    c = r.config
    assert cache.nbytes() == c.num_hidden_layers * 2 * SEQ * (c.kv_lora_rank + c.qk_rope_head_dim + c.index_head_dim) * 4


def _meta_counts(raw: dict, tmp_path: Path, slug: str) -> tuple[int, int]:
    """(ours, transformers') parameter counts of ``raw`` built on the meta device; every key of transformers'
    on-disk layout maps to one of our parameters with the same shape, and every parameter is filled."""
    from transformers.core_model_loading import revert_weight_conversion

    files = _compile(raw, tmp_path / slug, slug)
    module = import_path(tmp_path / slug / "model.py", f"dsa_meta_{slug}")
    with torch.device("meta"):
        ours = module.CausalLM(module.Config())
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**raw))
    layout = {k: tuple(v.shape) for k, v in revert_weight_conversion(reference, reference.state_dict()).items()}
    params = {name: tuple(p.shape) for name, p in ours.state_dict().items()}
    keys = module.checkpoint_keys(module.Config())
    assert set(keys) == set(layout), sorted(set(keys) ^ set(layout))[:10]
    assert [k for k in layout if params[keys[k]] != layout[k]] == []
    assert set(keys.values()) == set(params)
    assert any(k.endswith("self_attn.indexer.weights_proj.weight") for k in layout) and b"indexer" in files["model.py"]
    return sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("hub_id, total", [(V32, 671_877_929_216), (GLM5, 743_911_199_232)])
def test_full_size_counts_and_keys(hub_id, total, tmp_path):
    """At full width on the meta device, the first dense layers and two routed ones (all 61 / 78 layers take
    a minute to build; tests/test_full_size.py builds them for every catalog config and finds the full
    counts equal: `total`, transformers' count): the same keys, shapes and count as transformers'."""
    raw = catalog_config(hub_id)
    short = {**raw, "num_hidden_layers": raw["first_k_dense_replace"] + 2}
    ours, theirs = _meta_counts(short, tmp_path, hub_id.split("/")[1].replace("-", "_").replace(".", "_"))
    assert ours == theirs == parameter_count(lower(short))
    assert parameter_count(lower(raw)) == total


def test_glm_5_1_is_glm_5():
    raw = json.loads((REPO / "tests" / "fixtures" / "dsa" / "zai-org__GLM-5.1.json").read_text())
    assert lower(raw) == lower(catalog_config(GLM5))


def test_kv_bytes_per_token_include_the_indexer_key():
    arch = lower(catalog_config(V32))
    per_layer = 512 + 64 + 128  # latent, RoPE key, indexer key: bf16 values
    assert kv_cache(arch)["bytes_per_token_bf16"] == 61 * per_layer * 2 == 85_888
    assert kv_cache(lower(catalog_config("deepseek-ai/DeepSeek-V3")))["bytes_per_token_bf16"] == 61 * 576 * 2


def test_diff_from_deepseek_v3_names_the_indexer_alone():
    lines = differences(lower(catalog_config("deepseek-ai/DeepSeek-V3")), lower(catalog_config(V32)))
    assert [line for line in lines if "model_type" not in line] == ["B adds attention indexer"], lines


def test_no_indexer_code_without_an_indexer():
    assert "indexer" not in (GENERATED / "DeepSeek-V3" / "model.py").read_text().lower()
    for name in ("DeepSeek-V3.2", "GLM-5"):
        text = (GENERATED / name / "model.py").read_text()
        assert "class Indexer(nn.Module)" in text and "index_topk: int = 2048" in text
    glm, v32 = ((GENERATED / n / "model.py").read_text() for n in ("GLM-5", "DeepSeek-V3.2"))
    regroup = "(x_rot[..., 0::2], x_rot[..., 1::2])"
    assert regroup in glm and regroup not in v32  # GLM-5's indexer rotates adjacent pairs, V3.2's halves


@pytest.mark.parametrize("hub_id, change, word", [
    (GLM5, {"index_topk_freq": 2}, "index_topk_freq"),
    (GLM5, {"index_topk_pattern": "FFSF"}, "index_topk_pattern"),
    (GLM5, {"indexer_rope_interleave": False}, "indexer_rope_interleave"),
    (V32, {"indexer_rope_interleave": True}, "indexer_rope_interleave"),
    (V32, {"q_lora_rank": None}, "q_lora_rank"),
    (V32, {"index_head_dim": 32}, "index_head_dim"),
    (V32, {"index_topk": 0}, "index_topk"),
    (V32, {"mlp_layer_types": ["dense"] * 3}, "mlp_layer_types"),
    (V32, {"layer_types": ["full_attention"] * 61}, "layer_types"),
])
def test_bad_config_values_name_the_key(hub_id, change, word):
    raw = {**catalog_config(hub_id), **change}
    with pytest.raises(LlmgenError) as info:
        lower(raw)
    assert word in str(info.value) and "\n" not in str(info.value), str(info.value)
