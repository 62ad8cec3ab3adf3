"""DeepSeek-V4 (``deepseek_v4``): compressed sparse attention (CSA, with its indexer), heavily compressed
attention (HCA), the sliding window over one shared key=value head, sinks, the grouped low-rank output,
hash-routed and sqrt(softplus)-routed clamped experts, and hyper-connections (Sinkhorn-normalised mixing
of the residual streams).

Tiny replicas of V4-Flash's published config and of transformers' config-class defaults (every kind of
layer, index_topk 3 of 10 compressed entries, 40 tokens: five sliding windows, ten CSA and five HCA
windows), every parameter and stored buffer random, saved with save_pretrained and loaded through the
generated loader: logits against transformers at batch 2, fp32. Planted bugs (indexer top-k over the
query axis, compression ignoring causality, a Sinkhorn step dropped) must show. Cached decoding, token by
token and in chunks, equals the full forward. Full size on the meta device: V4-Flash's parameter count
and every on-disk key with its shape against transformers'.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, import_path, write_py

from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.pipeline import compile_config
from llmgen.compiler.passes.weight_map import parameter_count

transformers = pytest.importorskip("transformers")

FLASH = REPO / "tests" / "fixtures" / "deepseek_v4" / "DeepSeek-V4-Flash.json"


def _defaults() -> dict:
    raw = transformers.DeepseekV4Config().to_diff_dict()
    raw.pop("transformers_version", None)
    return {**raw, "model_type": "deepseek_v4"}


CASES = {"DeepSeek-V4-Flash": lambda: json.loads(FLASH.read_text()), "deepseek_v4 defaults": _defaults}


def _compile(raw: dict, directory: Path, slug: str) -> dict[str, bytes]:
    loaded = LoadedConfig(raw=raw, text=json.dumps(raw, indent=2), source_id=f"{slug}/config.json", revision="local",
                          origin="file", checkpoint_dir=None, note=None)
    files = compile_config(loaded, slug=slug).files
    directory.mkdir(parents=True, exist_ok=True)
    write_py(directory, files)
    return files


class Replica:
    """The compiled replica, transformers' model (randomised, saved) and ours loaded from its checkpoint."""

    def __init__(self, name: str, raw: dict, directory: Path) -> None:
        tag = "dsv4_" + "".join(c if c.isalnum() else "_" for c in name)
        self.files = _compile(raw, directory, tag)
        self.module = import_path(directory / "model.py", f"{tag}_model")
        self.parity = import_path(directory / "test_parity.py", f"{tag}_parity")
        config = transformers.AutoConfig.for_model(**self.parity.HF_CONFIG)
        self.reference = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", dtype=torch.float32, experts_implementation="eager").eval()
        self.parity.randomise(self.reference, torch.Generator().manual_seed(7))
        self.reference.save_pretrained(directory / "checkpoint")
        self.config = self.module.Config(**self.parity.MODEL_CONFIG)
        self.ours = self.module.load_checkpoint(directory / "checkpoint", self.config, dtype=torch.float32).eval()
        self.ids = torch.randint(0, self.config.vocab_size, (2, self.parity.SEQ_LEN),
                                 generator=torch.Generator().manual_seed(8))
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
            cache[name] = Replica(name, CASES[name](), tmp_path_factory.mktemp("dsv4"))
        return cache[name]

    return get


def test_compiles_the_published_config_and_the_defaults():
    flash, defaults = lower(CASES["DeepSeek-V4-Flash"]()), lower(_defaults())
    assert "".join(layer.mixer.letter for layer in flash.layers) == "SS" + "KH" * 20 + "K"
    assert [layer.ffn.hashed for layer in flash.layers] == [True] * 3 + [False] * 40
    assert flash.rope_table("compress").type == "yarn" and defaults.rope_table("compress").type == "default"
    assert "".join(layer.mixer.letter for layer in defaults.layers) == "HH" + "HK" * 20 + "H"
    assert flash.fp8 is not None and flash.extra_checkpoint_layers == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_parity_with_transformers(replicas, name):
    r = replicas(name)
    pattern = r.config.layer_pattern
    assert "K" in pattern and "H" in pattern and set(r.config.ffn_pattern) == {"T", "R"}
    entries = r.parity.SEQ_LEN // r.config.csa_rate
    assert r.config.index_topk < entries and r.parity.SEQ_LEN > 4 * r.config.hca_rate > 4 * r.config.sliding_window // 2
    assert r.expected.abs().max().item() > 0.1
    gap = (r.expected - r.actual).abs().max().item()
    assert gap <= r.tolerance(), (name, gap)


def test_parity_around_the_window_and_the_compression(replicas):
    """Sequences of window - 1, window and window + 1 tokens, and one token short of a second HCA entry."""
    r = replicas("DeepSeek-V4-Flash")
    window, hca = r.config.sliding_window, r.config.hca_rate
    with torch.no_grad():
        for seq in sorted({window - 1, window, window + 1, 2 * hca - 1}):
            expected = r.reference(input_ids=r.ids[:, :seq]).logits
            gap = (r.ours(r.ids[:, :seq]) - expected).abs().max().item()
            assert gap <= 1e-5 * max(1.0, expected.abs().max().item()), (seq, gap)


# The lines as written in the generated file, and the planted bugs that must show.
TOPK = 'chosen = scores.masked_fill(future, float("-inf")).topk(k, dim=-1).indices'
INVALID = "return torch.where(chosen >= ready.unsqueeze(-1), torch.full_like(chosen, -1), chosen)"
PICKED = "picked = picked.scatter(-1, slots.unsqueeze(1), 0.0)[..., :n]  # 0 where chosen"
PLANTED = {
    "indexer top-k over the query axis": [
        (TOPK, 'chosen = scores.masked_fill(future, float("-inf")).topk(min(k, seq), dim=-2).indices'),
        (INVALID, "return chosen"),
        ("slots = torch.where(chosen >= 0, chosen, torch.full_like(chosen, n))", "slots = chosen"),
        (PICKED, "picked = picked[..., :n].scatter(-2, slots.unsqueeze(1), 0.0)")],
    "compression ignores causality": [
        ('causal = entries.new_zeros((batch, 1, seq, n)).masked_fill(late, float("-inf"))',
         "causal = entries.new_zeros((batch, 1, seq, n))"),
        (TOPK, "chosen = scores.topk(k, dim=-1).indices"), (INVALID, "return chosen")],
    "a Sinkhorn step dropped": [("        comb = comb / (comb.sum(dim=-1, keepdim=True) + eps)\n", "")],
}


def test_planted_bugs_show(replicas):
    r = replicas("DeepSeek-V4-Flash")
    for bug, edits in PLANTED.items():
        source = Path(r.module.__file__).read_text()
        for old, new in edits:
            assert source.count(old) == 1, old
            source = source.replace(old, new)
        path = Path(r.module.__file__).with_name("planted.py")
        path.write_text(source)
        module = import_path(path, "dsv4_planted_" + "".join(c if c.isalnum() else "_" for c in bug))
        model = module.CausalLM(module.Config(**r.parity.MODEL_CONFIG)).eval()
        model.load_state_dict(r.ours.state_dict())
        with torch.no_grad():
            gap = (model(r.ids) - r.expected).abs().nan_to_num(nan=float("inf")).max().item()
        assert gap > 1e-3, (bug, gap)


@pytest.mark.parametrize("chunks", [[1] * 12, [13, 1, 1, 9, 16]])
def test_cached_decoding_matches_full_forward(replicas, chunks):
    """Token by token and in chunks: the sliding keys, the compressors' leftover tokens, overlap parts and
    entries, and the indexer's entries give the logits of one uncached forward."""
    r = replicas("DeepSeek-V4-Flash")
    with torch.no_grad():
        r.ours.enable_cache(batch=2)
        pieces, start = [], 0
        for size in chunks:
            pieces.append(r.ours(r.ids[:, start:start + size]))
            start += size
        r.ours.disable_cache()
    pieces = torch.cat(pieces, dim=1)  # a prefix of the sequence: the full forward's first logits
    gap = (pieces - r.actual[:, : pieces.shape[1]]).abs().max().item()
    assert gap <= 1e-5 * max(1.0, r.actual.abs().max().item()), (chunks, gap)


def test_full_size_counts_and_keys(tmp_path):
    """V4-Flash at full width on the meta device, first layers of each kind (the 43 layers take a while):
    the same keys, shapes and parameter count as transformers' on-disk layout; then the whole model's count."""
    from transformers.core_model_loading import revert_weight_conversion

    raw = json.loads(FLASH.read_text())
    short = {**raw, "num_hidden_layers": 5, "compress_ratios": raw["compress_ratios"][:5]}
    _compile(short, tmp_path, "dsv4_meta")
    module = import_path(tmp_path / "model.py", "dsv4_meta_model")
    hf_raw = {k: v for k, v in short.items() if k != "quantization_config"}
    with torch.device("meta"):
        ours = module.CausalLM(module.Config())
        reference = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**hf_raw))
    layout = {k: tuple(v.shape) for k, v in revert_weight_conversion(reference, reference.state_dict()).items()}
    params = {name: tuple(p.shape) for name, p in ours.state_dict().items()}
    mapped = {module.parameter_name(k): shape for k, shape in layout.items()}
    assert mapped == params
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) == parameter_count(lower(short))
    assert parameter_count(lower(raw)) == 284_332_230_231


@pytest.mark.parametrize("change, word", [
    ({"num_key_value_heads": 2}, "num_key_value_heads"),
    ({"compress_ratios": [0, 4, 64]}, "compress_ratios"),
    ({"scoring_func": "softmax"}, "scoring_func"),
    ({"n_shared_experts": 2}, "n_shared_experts"),
    ({"mlp_layer_types": ["dense"] * 43}, "mlp_layer_types"),
    ({"index_head_dim": 32}, "index_head_dim"),
    ({"o_groups": 7}, "o_groups"),
    ({"hc_sinkhorn_iters": 0}, "hc_sinkhorn_iters"),
    ({"rope_scaling": {"type": "llama3", "factor": 8.0}}, "rope_scaling"),
])
def test_bad_config_values_name_the_key(change, word):
    raw = {**json.loads(FLASH.read_text()), **change}
    with pytest.raises(LlmgenError) as info:
        lower(raw)
    assert word in str(info.value)


def _fp8_module(tmp_path: Path):
    """The generated module of V4-Flash's published (FP8 / FP4) config."""
    return import_path(REPO / "generated" / "DeepSeek-V4-Flash" / "model.py", "dsv4_flash_model")


def test_dequantize_matches_transformers():
    """FP8 (e4m3, 128 x 128 blocks) and FP4 (two e2m1 codes per int8 byte, 1 x 32 blocks) with ue8m0 scales:
    the generated dequantizer gives transformers' values."""
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize

    module = _fp8_module(None)
    g = torch.Generator().manual_seed(3)
    exponents = lambda shape: (torch.randint(120, 134, shape, generator=g).float() - 127).exp2().to(torch.float8_e8m0fnu)
    fp8 = (torch.randn(256, 384, generator=g) * 3).to(torch.float8_e4m3fn)
    fp4 = torch.randint(-128, 128, (64, 48), generator=g, dtype=torch.int8)  # 96 values per row
    reference = Fp8Dequantize(None)
    for weight, scale in ((fp8, exponents((2, 3))), (fp4, exponents((64, 3)))):
        ours = module.dequantize(weight, scale, torch.float32)
        assert torch.equal(ours, reference._dequantize_one(weight, scale, output_dtype=torch.float32))
        assert ours.abs().max() > 0 and ours.shape == (weight.shape[0], 2 * weight.shape[1] if weight.dtype == torch.int8
                                                      else weight.shape[1])


def test_fp8_layout_keys_and_shapes():
    """V4-Flash's on-disk layout as transformers' FP8 quantizer builds it (meta, 4 layers: S S K H): every
    key maps to one of our parameters with its shape (FP4 experts: half the columns), the FP8 matrices with
    a scale grid each; the bf16 ones (compressors, indexer weights, routers, embeddings) without."""
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.quantizers.auto import AutoHfQuantizer

    raw = json.loads(FLASH.read_text())
    raw = {**raw, "num_hidden_layers": 4, "compress_ratios": raw["compress_ratios"][:4]}
    config = transformers.AutoConfig.for_model(**raw)
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(config)
    quantizer = AutoHfQuantizer.from_config(config.quantization_config, pre_quantized=True)
    quantizer.preprocess_model(reference, config=config, dtype=torch.bfloat16, checkpoint_files=None, use_kernels=False)
    layout = revert_weight_conversion(reference, reference.state_dict())
    module = _fp8_module(None)
    with torch.device("meta"):
        ours = module.CausalLM(module.Config(num_hidden_layers=4, layer_pattern="SSKH", ffn_pattern="TTTR"))
    params = {name: tuple(p.shape) for name, p in ours.state_dict().items()}
    scaled = set()
    for key, tensor in layout.items():
        if key.endswith("_proj_scale_inv"):  # transformers keeps the experts' scales stacked in memory
            continue
        name = module.parameter_name(key)
        if name.endswith(".weight_scale_inv"):
            scaled.add(name.removesuffix("_scale_inv"))
            continue
        shape = tuple(tensor.shape)
        if tensor.dtype == torch.int8:  # FP4: two values per byte
            shape = (shape[0], 2 * shape[1])
        assert params[name] == shape, (key, params[name], shape)
    assert {k for k in params if k.endswith(".weight") and ".experts." not in k} >= scaled
    assert "layers.2.attn.wq_a.weight" in scaled and "layers.2.attn.compressor.wkv.weight" not in scaled
    assert {module.parameter_name(k) for k in layout if "_proj_scale_inv" not in k and "scale_inv" not in k} == set(params)


def test_loads_a_quantized_published_checkpoint(replicas, tmp_path):
    """The replica's matrices stored as transformers quantizes them (FP8 with a scale grid; experts FP4 with one
    scale per 32 values), under the published names (no "model." prefix, embed, hc_head_fn): the loader
    dequantizes them to exactly the values it would compute from the codes."""
    from safetensors.torch import save_file

    r = replicas("DeepSeek-V4-Flash")
    state = {k: v.clone() for k, v in r.ours.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    tensors = {}
    for name, value in state.items():
        if name.endswith(".weight") and ".experts." in name:  # FP4 codes, scales per 32 values (one here)
            codes = torch.randint(-128, 128, (value.shape[0], value.shape[1] // 2), generator=g, dtype=torch.int8)
            scale = torch.full((value.shape[0], 1), 2.0**-4).to(torch.float8_e8m0fnu)  # the replica's rows: < 32
            tensors[name], tensors[name.removesuffix("weight") + "scale"] = codes, scale
            state[name] = r.module.dequantize(codes, scale, torch.float32)
        elif name.endswith(("wq_a.weight", "wq_b.weight", "wo_b.weight")):
            codes = value.to(torch.float8_e4m3fn)
            scale = torch.ones(value.shape[0] // 8, value.shape[1] // 8).to(torch.float8_e8m0fnu)
            tensors[name], tensors[name.removesuffix("weight") + "scale"] = codes, scale
            state[name] = codes.float()
        else:
            tensors[name] = value
    save_file(tensors, str(tmp_path / "model.safetensors"))
    loaded = r.module.load_checkpoint(tmp_path, r.config, dtype=torch.float32)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_card_kv_bytes_count_the_window_and_the_pooled_entries():
    """Per token (bf16): a sliding layer's key=value row (512 values); a CSA layer's 512 / 4 pooled values and
    its indexer's 128 / 4; an HCA layer's 512 / 128. The windows of the compressed layers are constant."""
    from llmgen.compiler.insight.card import cache_bytes, kv_cache

    arch = lower(CASES["DeepSeek-V4-Flash"]())
    per_token = (2 * 512 + 21 * (128 + 32) + 20 * 4) * 2
    assert kv_cache(arch)["bytes_per_token_bf16"] == per_token == 8928
    windows = 41 * 128 * 512 * 2  # the compressed layers' 128-token windows
    assert cache_bytes(arch, 4096) == 2 * 128 * 1024 + (21 * 160 + 20 * 4) * 2 * 4096 + windows


def test_generate_decodes_with_the_cache_as_without():
    """llmgen generate's decoding loop (enable_cache(batch, max_len, int8)) on the committed DeepSeek-V4-Flash:
    greedy tokens with the compressors' caches equal those of re-running the whole text; int8 is refused."""
    from llmgen.compiler.runtime.generate import greedy_tokens

    directory = REPO / "generated" / "DeepSeek-V4-Flash"
    parity = import_path(directory / "test_parity.py", "llmgen_dsv4_generate_parity")
    gen = parity.load_generated_model()
    torch.manual_seed(0)
    model = gen.CausalLM(gen.Config(**parity.MODEL_CONFIG)).eval()
    for p in model.parameters():
        if p.dtype.is_floating_point:
            p.data.normal_(0, 0.05)
    ids = [1, 5, 7, 9, 11]
    cached = list(greedy_tokens(model, ids, 12, set(), kv=True))
    assert len(cached) == 12 and cached == list(greedy_tokens(model, ids, 12, set(), kv=False))
    with pytest.raises(ValueError, match="int8"):
        model.enable_cache(1, 32, int8=True)
