"""``llmgen generate``: run a generated model.py on a real checkpoint and stream what it writes.

Greedy decoding. Tokenisation uses the checkpoint's ``tokenizer.json`` through the
``tokenizers`` package (transformers' AutoTokenizer when there is no tokenizer.json);
``--chat`` renders the checkpoint's chat template (tokenizer_config.json's ``chat_template``,
or chat_template.jinja) with jinja2 in a sandbox, as transformers does, within time and size
limits (compiler/runtime/chat.py).

The weights are read into memory, not memory-mapped (``load_checkpoint(mmap=False)``): a
checkpoint truncated or rewritten while generate runs cannot then kill it with SIGBUS. A file
already truncated is refused before loading (its header names data past its end), one
truncated while it is being read gives a "file ends inside a tensor" error. What remains
uncaught: a model.py that maps files itself, or a fault in native code; for those,
faulthandler prints "Fatal Python error: Bus error" and the stack instead of dying silently.

A model with a KV cache (``enable_cache(batch, max_len)``: from then on each call continues
the text of the previous ones) gets the prompt once and then one token per step; ``--no-kv``,
or a model without one, reruns the whole sequence for every new token.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import inspect
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import native
from .chat import read_json, render_chat, token_text
from .generated_files import import_generated
from ..basics.errors import LlmgenError, SourceError
from .fast_decode import KERNELS, choose, greedy_next, label, use_fast_decode
from .int8_weights import WEIGHTS
from ..verification.reference import resolve_checkpoint

DTYPES = ("float32", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="a generated model directory (holding model.py)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the checkpoint's chat template")
    parser.add_argument("--max-new-tokens", type=int, default=128, metavar="N")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--kv", choices=("float", "int8"), default="float",
                        help="KV cache storage: the model's dtype (default) or int8 with one scale per token and head")
    parser.add_argument("--weights-dtype", choices=WEIGHTS, default="model",
                        help="the matrix products' weights: the model's dtype (default) or int8 with one scale per "
                             "output row (float32 only, native kernel; compiler/runtime/int8_weights.py)")
    parser.add_argument("--kernel", choices=KERNELS, default="auto",
                        help="decoding steps' matrix products: auto (native if it builds here, else row blocks "
                             "for float32), native (compiler/runtime/kernels/gemv.cpp), row_blocks, off (torch's own)")
    parser.add_argument("--compile", action="store_true",
                        help="decoding steps on a fixed-shape KV cache (enable_static_cache) through torch.compile:"
                             " compiled once, at the first step (tens of seconds to minutes)")
    parser.add_argument("--no-kv", dest="use_kv", action="store_false",
                        help="no KV cache: rerun the whole sequence for every new token")
    parser.add_argument("--tp", type=int, default=1, metavar="N",
                        help="tensor parallel on N processes (the directory's parallel.py; gloo on CPU, NCCL on GPUs)")
    parser.add_argument("--checkpoint", "--weights", type=Path, metavar="PATH",
                        help="checkpoint directory (default: the one recorded at compile time, or the hub cache); --weights is an alias")


def import_model(directory: Path) -> Any:
    """The generated files of a directory (model.py, runtime.py, weights.py), imported by path as one module."""
    path = directory / "model.py"
    if not path.is_file():
        raise SourceError(f"{directory}: no model.py (not a generated model directory)")
    try:
        module = import_generated(directory)
    except SyntaxError as err:
        where = getattr(err, "llmgen_file", path)
        raise SourceError(f"{where}: line {err.lineno}: {err.msg} (a syntax error: regenerate it or fix the edit)") from None
    except Exception as err:  # noqa: BLE001 - whatever an edited file raises on import, in one line
        where = getattr(err, "llmgen_file", path)
        first = (str(err).strip().splitlines() or [""])[0]
        raise SourceError(f"{where}: importing it failed: {type(err).__name__}: {first:.200}") from None
    for name in ("load_checkpoint", "WeightLoadError", "Config"):
        if not hasattr(module, name):
            raise SourceError(f"{directory}: defines no {name} (not a model written by llmgen)")
    return module


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def _tokenizer_error(checkpoint: Path, err: BaseException) -> SourceError:
    first = (str(err).strip().splitlines() or [""])[0]
    return SourceError(f"{checkpoint}: cannot read its tokenizer ({type(err).__name__}: {first:.200})")


class Tokenizer:
    """encode / decode / token_to_id over tokenizers.Tokenizer or a transformers tokenizer."""

    def __init__(self, checkpoint: Path) -> None:
        self.fast = None
        self.hf = None
        if not any((checkpoint / name).is_file() for name in TOKENIZER_FILES):
            raise SourceError(f"{checkpoint}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
        if (checkpoint / "tokenizer.json").is_file() and importlib.util.find_spec("tokenizers"):
            from tokenizers import Tokenizer as FastTokenizer

            try:
                self.fast = FastTokenizer.from_file(str(checkpoint / "tokenizer.json"))
            except Exception as err:  # noqa: BLE001 - a corrupt tokenizer.json, in one line
                raise _tokenizer_error(checkpoint / "tokenizer.json", err) from None
        elif importlib.util.find_spec("transformers"):
            import transformers

            transformers.utils.logging.set_verbosity_error()
            try:
                self.hf = transformers.AutoTokenizer.from_pretrained(checkpoint)
            except Exception as err:  # noqa: BLE001 - any tokenizer transformers cannot read, in one line
                raise _tokenizer_error(checkpoint, err) from None
        else:
            raise SourceError(f"{checkpoint}: reading its tokenizer needs the tokenizers package (pip install tokenizers)")

    def encode(self, text: str, special: bool) -> list[int]:
        if self.fast is not None:
            return self.fast.encode(text, add_special_tokens=special).ids
        return list(self.hf(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        if self.fast is not None:
            return self.fast.decode(ids, skip_special_tokens=True)
        return self.hf.decode(ids, skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        if self.fast is not None:
            return self.fast.token_to_id(token)
        found = self.hf.convert_tokens_to_ids(token)
        return found if isinstance(found, int) and found != self.hf.unk_token_id else None


def stop_ids(checkpoint: Path, tokenizer: Tokenizer, chat: bool) -> set[int]:
    """End-of-sequence ids: generation_config.json's, else config.json's; for --chat also the
    tokenizer's eos token (the end of the assistant's turn)."""
    eos = read_json(checkpoint / "generation_config.json").get("eos_token_id")
    if eos is None:
        eos = read_json(checkpoint / "config.json").get("eos_token_id")
    ids = {eos} if isinstance(eos, int) else {i for i in eos or [] if isinstance(i, int)}
    if chat:
        token = token_text(read_json(checkpoint / "tokenizer_config.json").get("eos_token"))
        found = tokenizer.token_to_id(token) if token else None
        ids |= {found} if found is not None else set()
    return ids


def greedy_tokens(model: Any, ids: list[int], max_new_tokens: int, stop: set[int], kv: bool = True,
                  int8: bool = False, static: bool = False) -> Iterator[int]:
    """New token ids, greedily, until a stop id (not yielded) or max_new_tokens. With ``kv``
    and a model that has ``enable_cache``, the prompt is run once and then one token per step;
    ``static``: on the fixed-shape cache (``enable_static_cache``, float only)."""
    import torch

    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 1 << 62
    steps = max(0, min(max_new_tokens, limit - len(ids)))
    cached = kv and hasattr(model, "enable_cache")
    if cached and static:
        model.enable_static_cache(batch=1, max_len=len(ids) + steps)
    elif cached:
        model.enable_cache(batch=1, max_len=len(ids) + steps, int8=int8)
    seq = torch.tensor([ids])
    fresh = seq
    try:
        with torch.inference_mode():
            for _ in range(steps):
                logits = model(fresh if cached else seq)  # no cache: the whole sequence again
                token = int(greedy_next(logits)[0, 0])
                if token in stop:
                    return
                yield token
                fresh = torch.tensor([[token]])
                seq = torch.cat([seq, fresh], dim=1)
    finally:
        if cached:
            model.disable_cache()


def load_model(module: Any, checkpoint: Path, dtype: str, err: Any = sys.stderr, kernel: str = "auto",
               compile: bool = False, weights: str = "model") -> Any:
    """load_checkpoint with a progress line on ``err``, then the decoding kernel (fast_decode);
    ``compile``: decoding steps on the static cache through torch.compile; ``weights``: "int8"
    quantizes the products' weights (int8_weights.py)."""
    import torch

    print(f"loading weights from {checkpoint} ({dtype}) ...", end="", file=err, flush=True)
    start = time.perf_counter()
    in_memory = {"mmap": False} if "mmap" in inspect.signature(module.load_checkpoint).parameters else {}
    try:
        model = module.load_checkpoint(checkpoint, dtype=getattr(torch, dtype), **in_memory)  # see the docstring
    except module.WeightLoadError as exc:
        print(file=err)
        raise LlmgenError(str(exc)) from None
    except OSError as exc:
        print(file=err)
        raise LlmgenError(f"{exc.filename or checkpoint}: cannot read it ({exc.strerror or exc})") from None
    if hasattr(model, "fast_attention"):
        model.fast_attention()  # torch's fused attention kernel: tested against the written-out one
    count = sum(p.numel() for p in model.parameters())
    print(f" {count / 1e6:.1f}M parameters in {time.perf_counter() - start:.1f} s", file=err, flush=True)
    used, layers, why = use_fast_decode(model, kernel, compile=compile, weights=weights)
    note = f" ({why})" if why else ""
    on = " on int8 weights" if weights == "int8" else ""
    print(f"decoding kernel: {label(used, dtype)}{note}" + (f", {layers} matrix products{on}" if layers else ""),
          file=err, flush=True)
    return model


def _report_faults() -> None:
    """faulthandler on the real stderr: a fault this process cannot turn into an error (see the
    module docstring) at least says "Fatal Python error: Bus error" and where."""
    try:
        faulthandler.enable(file=sys.__stderr__)
    except (AttributeError, ValueError, OSError):  # no real stderr (embedded, closed)
        pass


def check_kernel(kernel: str, dtype: str, err: Any) -> None:
    """Build the native kernel now if it will be used (saying so), and fail early when the
    kernel asked for by name cannot run here."""
    import torch

    if kernel in ("auto", "native") and native.missing(dtype) is None and not native.is_built():
        print("building the native decoding kernel (once; cached by torch) ...", file=err, flush=True)
    used, why = choose(kernel, getattr(torch, dtype), torch.get_num_threads())
    if kernel not in ("auto", used):
        raise LlmgenError(f"--kernel {kernel}: {why}")


def check_prompt(prompt: str) -> None:
    """Refuse a prompt that is not text: command-line bytes that were not UTF-8 arrive as surrogates."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(prompt[exc.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"character U+{code:04X}"
        raise LlmgenError(f"--prompt is not valid UTF-8 ({what} at position {exc.start})") from None


def model_context(module: Any) -> int | None:
    """max_position_embeddings of the model's default Config, if it has one."""
    try:
        context = getattr(module.Config(), "max_position_embeddings", None)
    except Exception as exc:  # noqa: BLE001 - an edited Config that refuses its own defaults
        raise SourceError(f"model.py: its Config() fails: {type(exc).__name__}: {str(exc):.200}") from None
    return context if isinstance(context, int) and context > 0 else None


def new_token_budget(module: Any, prompt_tokens: int, max_new_tokens: int, err: Any) -> int:
    """max_new_tokens, or the room the context leaves after the prompt (with a note) if that is less."""
    context = model_context(module)
    if context is None:
        return max_new_tokens
    if prompt_tokens >= context:
        raise LlmgenError(f"the prompt is {prompt_tokens} tokens, and the model's context holds {context}"
                          " (max_position_embeddings): no room for a new token; shorten the prompt")
    if max_new_tokens > context - prompt_tokens:
        print(f"note: --max-new-tokens {max_new_tokens} cut to {context - prompt_tokens}: the prompt's"
              f" {prompt_tokens} tokens and the new ones must fit the model's context of {context}", file=err)
        return context - prompt_tokens
    return max_new_tokens


def cmd_generate(args: argparse.Namespace, out: Any = None, err: Any = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if args.max_new_tokens < 1:
        raise LlmgenError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    check_prompt(args.prompt)
    if not args.dir.is_dir():
        raise SourceError(f"{args.dir}: no such directory")
    if args.tp != 1 and args.weights_dtype != "model":
        raise LlmgenError(f"--weights-dtype {args.weights_dtype}: not implemented with --tp")
    if args.tp != 1:
        from .tp_launch import check_directory

        check_directory(args.dir, args.tp)  # before anything loads
    _report_faults()
    module = import_model(args.dir)
    if args.kv == "int8" and args.use_kv and "kv_lora_rank" in getattr(module.Config, "__dataclass_fields__", {}):
        raise LlmgenError("--kv int8: not implemented for latent attention (its cache is already compressed);"
                          " use --kv float")
    checkpoint, note = resolve_checkpoint(args.dir, args.checkpoint)
    if note:
        print(f"note: {note}", file=err)
    tokenizer = Tokenizer(checkpoint)
    text = render_chat(checkpoint, args.prompt) if args.chat else args.prompt
    try:
        ids = tokenizer.encode(text, special=not args.chat)  # a chat template writes its own specials
    except Exception as exc:  # noqa: BLE001 - the tokenizer's own refusal, in one line
        raise _tokenizer_error(checkpoint, exc) from None
    if not ids:
        raise LlmgenError("the prompt encodes to no tokens")
    max_new_tokens = new_token_budget(module, len(ids), args.max_new_tokens, err)
    stop = stop_ids(checkpoint, tokenizer, args.chat)
    if args.tp != 1:
        from .tp_launch import run_parallel

        start = time.perf_counter()
        new = run_parallel(args.dir, checkpoint, args.tp, ids, max_new_tokens, stop, args.dtype, args.kv == "int8", err)
        out.write(tokenizer.decode(new) + "\n")
        print(f"{len(new)} tokens in {time.perf_counter() - start:.2f} s on {args.tp} processes (prompt {len(ids)} tokens)",
              file=err)
        return 0
    check_kernel(args.kernel, args.dtype, err)
    if args.weights_dtype == "int8":
        why = native.unavailable("float32")
        if args.dtype != "float32" or args.kernel not in ("auto", "native") or why is not None:
            raise LlmgenError("--weights-dtype int8 needs --dtype float32 and the native kernel"
                              f" (here: --dtype {args.dtype}, --kernel {args.kernel}"
                              + (f"; native kernel unavailable: {why})" if why else ")"))
    if args.compile and not (args.use_kv and args.kv == "float" and hasattr(getattr(module, "CausalLM", None), "enable_static_cache")):
        raise LlmgenError("--compile needs the float KV cache and a model.py with enable_static_cache"
                          " (plain attention layers; regenerate an older model.py)")
    model = load_model(module, checkpoint, args.dtype, err, args.kernel, args.compile, args.weights_dtype)
    start = time.perf_counter()
    new: list[int] = []
    shown = ""
    kv = args.use_kv and hasattr(model, "enable_cache")
    if args.use_kv and not kv:
        print("note: this model.py has no KV cache: every step reruns the whole sequence", file=err)
    if args.compile:
        print("compiling the decoding step at the first step (once) ...", file=err, flush=True)
    for token in greedy_tokens(model, ids, max_new_tokens, stop, kv=kv, int8=args.kv == "int8", static=args.compile):
        new.append(token)
        decoded = tokenizer.decode(new)
        if not decoded.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            out.write(decoded[len(shown):])
            out.flush()
            shown = decoded
    out.write(tokenizer.decode(new)[len(shown):] + "\n")
    elapsed = time.perf_counter() - start
    cache = ("int8 KV cache" if args.kv == "int8" else "static KV cache, compiled steps" if args.compile else "KV cache") \
        if kv else "no KV cache: every step reruns the whole sequence"
    rate = len(new) / elapsed if elapsed > 0 else 0.0
    weights = ", int8 weights" if args.weights_dtype == "int8" else ""
    print(f"{len(new)} tokens in {elapsed:.2f} s: {rate:.1f} tokens/s (prompt {len(ids)} tokens, {args.dtype}{weights}, {cache})",
          file=err)
    return 0
