"""The generated KV cache: cached decoding equals the uncached forward pass, token by token
and in chunks, across sliding-window boundaries; sliding layers keep only `window` slots;
the int8 cache is close to the float one at about half the memory of a bf16 cache."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GENERATED, catalog_config, generated_source, import_path, write_py

from llmgen.compiler.passes.load import LoadedConfig
from llmgen.compiler.passes.pipeline import compile_config

TOLERANCE = 1e-5


def compiled_module(raw: dict, tmp_path, name: str):
    """Compile `raw`, write model.py and test_parity.py, import both."""
    text = json.dumps(raw)
    loaded = LoadedConfig(raw=raw, text=text, source_id=f"{name}/config.json", revision="local", origin="file",
                          checkpoint_dir=None, note=None)
    files = compile_config(loaded, slug=name).files
    write_py(tmp_path, files)
    return import_path(tmp_path / "model.py", f"kv_{name}"), import_path(tmp_path / "test_parity.py", f"kvp_{name}")


def tiny_model(module, parity, seed: int = 0):
    """The replica-sized model with every parameter random (norms around their neutral value)."""
    torch.manual_seed(seed)
    model = module.CausalLM(module.Config(**parity.MODEL_CONFIG))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(parity.NORM_NEUTRAL + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.05 * torch.randn_like(param))
    return model.eval()


MODELS = {
    "gemma3": lambda: catalog_config("google/gemma-3-1b-it"),  # 5 sliding : 1 full, two RoPE tables
    "mistral-sliding": lambda: {**catalog_config("mistralai/Mistral-7B-Instruct-v0.3"), "sliding_window": 4096},
    "llama": lambda: catalog_config("meta-llama/Llama-3.2-1B"),  # full attention only
}
CHUNKINGS = {
    "token by token": [1] * 24,
    "prefill 5, then tokens": [5] + [1] * 19,
    "chunks longer than the window": [11, 3, 3, 7],
    "prefill window, then window+1": [8, 9, 7],
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def tiny(request, tmp_path_factory):
    module, parity = compiled_module(MODELS[request.param](), tmp_path_factory.mktemp(request.param),
                                     request.param.replace("-", "_"))
    return module, parity, tiny_model(module, parity)


def cached_and_full(model, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of random ids fed through the KV cache in pieces of `sizes`, and in one uncached call."""
    ids = torch.randint(0, 200, (2, sum(sizes)), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)
        model.enable_cache(batch=2, max_len=ids.shape[1])
        pieces, start = [], 0
        for size in sizes:
            pieces.append(model(ids[:, start:start + size]))
            start += size
        model.disable_cache()
    return torch.cat(pieces, dim=1), full


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
def test_cached_decoding_equals_the_full_forward(tiny, chunking):
    _, _, model = tiny
    cached, full = cached_and_full(model, CHUNKINGS[chunking])
    assert full.abs().max() > 0.1
    assert (cached - full).abs().max().item() <= TOLERANCE


def test_sliding_layers_keep_only_the_window(tmp_path):
    module, parity = compiled_module(MODELS["gemma3"](), tmp_path, "gemma_window")
    model = tiny_model(module, parity)
    window = model.config.sliding_window
    short, long = model.enable_cache(1, 64), None
    long = model.enable_cache(1, 4096)
    for small, big, kind in zip(short, long, model.config.layer_pattern):
        if kind == "S":
            assert small.k.shape[2] == big.k.shape[2] == window and small.k.nbytes == big.k.nbytes
        else:
            assert (small.k.shape[2], big.k.shape[2]) == (64, 4096)


def test_int8_cache_is_close_and_about_half_of_bf16(tmp_path):
    module, parity = compiled_module(MODELS["gemma3"](), tmp_path, "gemma_int8")
    model = tiny_model(module, parity)
    ids = torch.randint(0, 200, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        model.enable_cache(2, 20, int8=True)
        cached = torch.cat([model(ids[:, i:i + 1]) for i in range(20)], dim=1)
    assert 0 < (cached - full).abs().max().item() < 0.05  # quantised, so not exact, but close
    assert (cached.argmax(-1) == full.argmax(-1)).float().mean() > 0.9
    head_dim = model.config.head_dim
    bf16 = model.to(torch.bfloat16).enable_cache(2, 20).nbytes()
    int8 = model.enable_cache(2, 20, int8=True).nbytes()
    assert int8 / bf16 == pytest.approx((head_dim + 2) / (2 * head_dim))  # int8 values + one bf16 scale


def test_committed_models_carry_the_cache():
    for path in sorted(GENERATED.glob("*/model.py")):
        source = generated_source(path.parent)  # the caches live in runtime.py, beside model.py
        if '"hyper"' in (path.parent / "arch.json").read_text():  # DeepSeek-V4: sliding keys and compressor states
            assert "def enable_cache(" in source and "class CompressorCache" in source, path
            continue
        assert "def enable_cache(" in source and "class LayerCache" in source, path
        assert ("ring_positions" in source) == ("sliding_window" in source), path
