"""Real weights: reference logits from transformers (``llmgen verify --weights``).

For a fixed set of prompts, transformers runs the real checkpoint in float32 and the results
go into ``reference_logits.safetensors`` beside the generated model: the logits over each
prompt and its greedy continuation, and as metadata the prompts, token ids and continuations.
The generated ``test_reference.py`` (templates/tests/test_reference.py.j2) compares model.py
against that file with torch alone; ``verify_weights`` writes the file and runs that test's
``measure`` in a fresh interpreter in which transformers cannot be imported.

Which checkpoint: the one given; else the one recorded in ``checkpoint.json`` when the model
was compiled from a local checkpoint directory or a Hugging Face cache snapshot holding
weights; else, for a model compiled by hub id, the hub snapshot (through
``huggingface_hub.snapshot_download``, so the cache and ``HF_HUB_OFFLINE`` apply).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..basics.atomic import write_file
from ..runtime.chat import render_template
from ..basics.errors import LlmgenError, SourceError
from ..passes.render import Provenance, literal, safe_comment

REFERENCE_FILE = "reference_logits.safetensors"
CHECKPOINT_FILE = "checkpoint.json"
FORMAT = "llmgen-reference-1"
TOLERANCE = 1e-4
MAX_NEW_TOKENS = 32
# (kind, text): "chat" prompts go through the checkpoint's chat template when it has one.
PROMPTS: tuple[tuple[str, str], ...] = (
    ("text", "The capital of France is"),
    ("text", "def fibonacci(n):\n"),
    ("text", "Once upon a time, in a village by the sea,"),
    ("chat", "What is the boiling point of water?"),
)
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*"]


def reference_context(prov: Provenance) -> dict[str, Any]:
    """Context for templates/tests/test_reference.py.j2."""
    return {
        "version": __version__,
        "source": prov.label,
        "command": safe_comment(prov.command),
        "format": literal(FORMAT),
        "tolerance": literal(TOLERANCE),
    }


def has_weights(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in WEIGHT_FILES)


def checkpoint_record(checkpoint_dir: Path | None) -> dict[str, bytes]:
    """``{checkpoint.json: ...}`` naming a local checkpoint that holds weights, else ``{}``."""
    if checkpoint_dir is None or not has_weights(checkpoint_dir):
        return {}
    text = json.dumps({"path": str(Path(checkpoint_dir).absolute())}, indent=2) + "\n"
    return {CHECKPOINT_FILE: text.encode()}


def _check_checkpoint(path: Path, shown: str) -> Path:
    if not path.is_dir():
        raise SourceError(f"{shown}: not a checkpoint directory")
    if not (path / "config.json").is_file():
        raise SourceError(f"{shown}: the checkpoint has no config.json")
    if not has_weights(path):
        raise SourceError(f"{shown}: the checkpoint has no model.safetensors or model.safetensors.index.json")
    return path


def resolve_checkpoint(directory: Path, given: str | Path | None) -> tuple[Path, str | None]:
    """The checkpoint to use for a generated ``directory``, and a note on where it came from."""
    if given:
        return _check_checkpoint(Path(given).expanduser(), str(given)), None
    record = directory / CHECKPOINT_FILE
    gone = None  # the recorded checkpoint, when it no longer holds weights
    if record.is_file():
        try:
            path = Path(json.loads(record.read_text(encoding="utf-8"))["path"])
        except (ValueError, KeyError, TypeError, OSError):
            raise SourceError(f"{record}: not a checkpoint record (expected {{\"path\": ...}})") from None
        if has_weights(path):
            return _check_checkpoint(path, str(path)), None
        gone = f"the checkpoint recorded at compile time, {path}, is gone (moved or deleted: {CHECKPOINT_FILE})"
    try:
        manifest = json.loads((directory / "llmgen.json").read_text(encoding="utf-8"))
        origin, source, revision = manifest["origin"], manifest["source"], manifest["revision"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SourceError(f"{directory}: not a generated model directory (no readable llmgen.json)") from None
    if origin not in ("hub", "catalog"):
        if gone:
            raise SourceError(f"{directory}: {gone}; pass a checkpoint directory")
        raise SourceError(f"{directory}: no checkpoint recorded (compiled from {source}); pass a checkpoint directory")
    try:
        snapshot = _hub_snapshot(source, revision if origin == "hub" else None)
    except SourceError as err:
        if gone:
            raise SourceError(f"{directory}: {gone}, and {err}") from None
        raise
    return _check_checkpoint(snapshot, f"hub snapshot of {source} ({snapshot})"), f"weights of {source}: {snapshot}"


def _hub_snapshot(hub_id: str, revision: str | None) -> Path:
    import huggingface_hub

    try:
        return Path(huggingface_hub.snapshot_download(hub_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as err:  # noqa: BLE001 - any failure means: no weights from the hub
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SourceError(
            f"no checkpoint for {hub_id}: not in the Hugging Face cache and not fetched from the hub"
            f" ({type(err).__name__}: {first:.150}); pass a checkpoint directory"
        ) from None


def apply_chat_template(tokenizer: Any, text: str, where: Any) -> str:
    """One user turn through transformers' apply_chat_template, after a trial rendering within
    compiler/runtime/chat.py's time and size limits (transformers' own sandbox has none); any failure is
    one SourceError line naming ``where``."""
    messages = [{"role": "user", "content": text}]
    if isinstance(tokenizer.chat_template, str):
        render_template(tokenizer.chat_template, where, messages=messages, add_generation_prompt=True,
                        bos_token=str(getattr(tokenizer, "bos_token", None) or ""),
                        eos_token=str(getattr(tokenizer, "eos_token", None) or ""))
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # noqa: BLE001 - a template transformers cannot render, in one line
        first = (str(err).strip().splitlines() or [""])[0]
        raise SourceError(f"{where}: the chat template failed: {type(err).__name__}: {first:.200}") from None


def encode_prompts(
    tokenizer: Any, prompts: tuple[tuple[str, str], ...] = PROMPTS, where: Any = "the checkpoint"
) -> list[tuple[str, list[int]]]:
    """(shown text, token ids) per prompt, with the checkpoint's tokenizer (transformers')."""
    encoded = []
    for kind, text in prompts:
        if kind == "chat" and getattr(tokenizer, "chat_template", None):
            shown = apply_chat_template(tokenizer, text, where)
            ids = tokenizer(shown, add_special_tokens=False)["input_ids"]
        else:
            shown, ids = text, tokenizer(text)["input_ids"]
        encoded.append((shown, list(ids)))
    return encoded


def build_reference(
    directory: Path, checkpoint: Path, prompts: tuple[tuple[str, str], ...] = PROMPTS, max_new_tokens: int = MAX_NEW_TOKENS
) -> dict[str, Any]:
    """Run transformers on ``checkpoint``; write REFERENCE_FILE into ``directory``; return its metadata."""
    import torch
    import transformers
    from safetensors.torch import save

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
        model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="eager")
    except Exception as err:  # noqa: BLE001 - one line for any checkpoint transformers rejects
        first = (str(err).strip().splitlines() or [""])[0]
        raise SourceError(f"{checkpoint}: transformers cannot load it ({type(err).__name__}: {first:.200})") from None
    model.eval()
    gen = model.generation_config
    gen.eos_token_id = None  # always max_new_tokens tokens, past any end-of-turn token
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k = False, None, None, None
    if gen.pad_token_id is None:
        gen.pad_token_id = 0
    tensors, token_ids, continuations, texts = {}, [], [], []
    for i, (_, ids) in enumerate(encode_prompts(tokenizer, prompts, checkpoint)):
        prompt = torch.tensor([ids])
        with torch.inference_mode():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens, do_sample=False)
            continuation = out[0, len(ids):].tolist()
            logits = model(torch.tensor([ids + continuation[:-1]])).logits[0]
        tensors[f"logits.{i}"] = logits.float().contiguous()
        token_ids.append(ids)
        continuations.append(continuation)
        texts.append(tokenizer.decode(continuation))
    metadata = {
        "format": FORMAT,
        "generator": f"llmgen {__version__}",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "checkpoint": str(checkpoint.absolute()),
        "max_new_tokens": max_new_tokens,
        "prompts": [text for _, text in prompts],
        "prompt_kinds": [kind if kind == "text" or tokenizer.chat_template else "text" for kind, _ in prompts],
        "token_ids": token_ids,
        "continuations": continuations,
        "continuation_text": texts,
    }
    write_file(directory / REFERENCE_FILE, save(tensors, metadata={k: json.dumps(v) for k, v in metadata.items()}))
    return metadata


# Runs test_reference.measure in a fresh interpreter in which transformers cannot be imported.
_ISOLATED = """
import importlib.util, json, sys
sys.modules["transformers"] = None  # model.py and its test must do without it
spec = importlib.util.spec_from_file_location("llmgen_reference_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print("LLMGEN-RESULT " + json.dumps(module.measure(sys.argv[2])))
"""


def measure_without_transformers(test_file: Path, checkpoint: Path) -> dict[str, Any]:
    """test_reference.measure(checkpoint), run where transformers cannot be imported: the
    reference is what transformers computed; the measurement is model.py on its own."""
    done = subprocess.run([sys.executable, "-c", _ISOLATED, str(test_file), str(checkpoint)],
                          capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("LLMGEN-RESULT "):
            return json.loads(line[len("LLMGEN-RESULT "):])
    last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    kind, _, message = last.partition(": ")
    if kind.endswith(".WeightLoadError"):  # model.py refused the checkpoint (e.g. NaN weights): its own words
        raise LlmgenError(f"{test_file.parent}: model.py cannot load the checkpoint: {message:.300}")
    raise LlmgenError(f"{test_file.parent}: verification crashed: {last:.300}")


def verify_weights(directory: Path, checkpoint: str | Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """Write the reference for ``directory`` and run its test_reference.measure; returns the
    measured numbers (with ``passed``) and the lines to print."""
    test_file = directory / "test_reference.py"
    if not (directory / "llmgen.json").is_file():
        raise SourceError(f"{directory}: not a generated model directory (no llmgen.json)")
    if not test_file.is_file():
        raise SourceError(f"{directory}: no test_reference.py (compiled by an older llmgen: regenerate it)")
    if importlib.util.find_spec("transformers") is None:
        raise LlmgenError("verify --weights needs transformers: pip install 'llmgen[verify]'")
    path, note = resolve_checkpoint(directory, checkpoint)
    lines = [f"note: {note}"] if note else []
    build_reference(directory, path)
    result = measure_without_transformers(test_file, path)
    passed = True
    lines.append(f"{directory.name}: real weights {path} (float32, transformers {result['transformers']})")
    for n, p in enumerate(result["prompts"], 1):
        ok = p["max_abs_diff"] <= result["tolerance"] and p["identical_tokens"] == p["new_tokens"]
        passed &= ok
        lines.append(
            f"  prompt {n} {p['prompt'][:40]!r}: max|dlogit| = {p['max_abs_diff']:.3g} over {p['positions']} positions"
            f" (logits up to {p['max_abs_logit']:.3g}), greedy {p['identical_tokens']}/{p['new_tokens']} tokens identical"
            f" {'ok' if ok else 'FAILED'}"
        )
    lines.append(f"{directory.name}: real weights {'ok' if passed else 'FAILED'} (tolerance {result['tolerance']:g})")
    result["passed"] = passed
    return result, lines
