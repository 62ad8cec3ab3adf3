"""Compile-time check of a local checkpoint against the weight map.

``llmgen from-config DIR`` compiles DIR/config.json; when DIR also holds weights, their
names and shapes are checked against the compiled architecture before anything is written,
so a checkpoint that the generated loader would reject fails here, with one line naming the
file or tensor, and exit status 2.

Only headers are read: a safetensors file's JSON header (never its data), a sharded
checkpoint's index. Weights are data: safetensors is the format; a pickled ``.bin`` is opened
only by ``torch.load(weights_only=True)`` on the meta device (shapes, no tensor data, and no
code: anything but tensors and plain containers is refused). ``trust_remote_code`` is never
involved.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from ...schemas.arch import Architecture
from ..basics.dtypes import DTYPES, FP8_WEIGHT, MAX_HEADER_BYTES, MAX_HEADER_MIB, MXFP4_PARTS, PARAMETER_DTYPES, name_of_torch_dtype
from ..basics.errors import CheckpointError
from .mxfp4 import accept_quantized
from .quantized import dequantized_shapes
from ..passes.weight_map import weight_map

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"

Shapes = dict[str, tuple[int, ...]]
Dtypes = dict[str, str]  # tensor name -> safetensors dtype name


def weight_files(directory: Path) -> str | None:
    """Which checkpoint layout ``directory`` holds (safetensors first), or None."""
    for name in (SAFETENSORS_INDEX, SAFETENSORS, BIN_INDEX, BIN):
        if (directory / name).is_file():
            return name
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**48


def safetensors_entries(path: Path) -> Entries:
    """Tensor names -> (dtype, shape) from a .safetensors header, every entry checked against the
    file as the generated loader checks it (compiler/basics/dtypes.py)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if length is None:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header length)")
            if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
                raise CheckpointError(f"{path}: corrupt safetensors header (length {length} in a file of {size} bytes,"
                                      f" at most {MAX_HEADER_MIB} MiB)")
            blob = handle.read(length)
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    data_bytes = size - 8 - length
    entries: Entries = {}
    spans = []
    for key, info in header.items():
        dtype = info.get("dtype") if isinstance(info, dict) else None
        ok = isinstance(dtype, str) and dtype in DTYPES
        shape, offsets = (info.get("shape"), info.get("data_offsets")) if ok else (None, None)
        ok = ok and isinstance(shape, list) and all(map(_count, shape))
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(map(_count, offsets))
        if not ok:
            raise CheckpointError(f"{path}: corrupt safetensors entry for tensor {key!r:.80}")
        start, end = offsets
        if not start <= end <= data_bytes or end - start != math.prod(shape) * DTYPES[dtype][0]:
            raise CheckpointError(f"{path}: tensor {key!r:.80} lies outside the file or has the wrong size")
        entries[key] = (dtype, tuple(shape))
        if end > start:
            spans.append((start, end, key))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{path}: tensors {first!r:.80} and {second!r:.80} overlap")
    return entries


def bin_entries(path: Path) -> Entries:
    """Tensor names -> (dtype, shape) of a pickled checkpoint, read with torch.load(weights_only=True)."""
    import torch

    try:
        state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any refusal or corruption is reported in one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True), which loads tensors only: {first:.160}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {key: (name_of_torch_dtype(str(value.dtype).removeprefix("torch.")), tuple(value.shape))
            for key, value in state.items()}


Entries = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype name, shape)


def _sharded(index: Path, read: Any) -> Entries:
    try:
        shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{index}: not a checkpoint index (no 'weight_map' object)") from None
    if not isinstance(shards, dict) or not all(
        isinstance(s, str) and Path(s).name == s and s not in ("", ".", "..") for s in shards.values()
    ):
        raise CheckpointError(f"{index}: 'weight_map' must map tensor names to shard file names beside it")
    entries: Entries = {}
    for shard in sorted(set(shards.values())):
        if not (index.parent / shard).is_file():
            raise CheckpointError(f"{index}: names shard {shard!r:.80}, which is missing")
        entries.update(read(index.parent / shard))
    listed = sorted(k for k, s in shards.items() if k not in entries)
    if listed:
        raise CheckpointError(f"{index}: tensor {listed[0]!r:.80} is listed but not in its shard {shards[listed[0]]!r}")
    return entries


def checkpoint_entries(directory: Path) -> tuple[Path, Entries] | None:
    """(the file read, every tensor's dtype and shape) of the checkpoint in ``directory``, or None if none."""
    layout = weight_files(directory)
    if layout is None:
        return None
    path = directory / layout
    if layout == SAFETENSORS_INDEX:
        return path, _sharded(path, safetensors_entries)
    if layout == BIN_INDEX:
        return path, _sharded(path, bin_entries)
    return path, (safetensors_entries(path) if layout == SAFETENSORS else bin_entries(path))


def expected_shapes(arch: Architecture) -> Shapes:
    """Every checkpoint key the generated loader needs, with its shape."""
    shapes: Shapes = {}
    for entry in weight_map(arch):
        for key in entry.keys(arch):
            shapes[key] = tuple(entry.shape)
    return shapes


def published_layout(shapes: dict[str, Any], arch: Architecture) -> dict[str, Any]:
    """As the generated loader reads them: a bare decoder's keys prefixed, stale layer buffers dropped."""
    backbone = f"{arch.checkpoint_prefix}{arch.names.backbone}."
    if arch.bare_decoder_checkpoints and not any(key.startswith(backbone) for key in shapes):
        shapes = {backbone + key: shape for key, shape in shapes.items()}
    stale = {f"{backbone}{arch.names.layers}.{i}.{name}" for i in range(arch.num_layers) for name in arch.stale_layer_buffers}
    return {key: shape for key, shape in shapes.items() if key not in stale}


def check_checkpoint(directory: Path, arch: Architecture) -> Path | None:
    """Raise CheckpointError unless the weights in ``directory`` (if any) fit ``arch`` exactly,
    as the generated loader requires. Returns the file that was checked."""
    found = checkpoint_entries(directory)
    if found is None:
        return None
    path, entries = found[0], published_layout(found[1], arch)
    dtypes = {k: dtype for k, (dtype, _) in entries.items()}
    shapes = dequantized_shapes(arch, {k: shape for k, (_, shape) in entries.items()})
    expected = expected_shapes(arch)
    wanted = accept_quantized(arch, expected, shapes)  # MXFP4 experts: either form
    ignored = {arch.checkpoint_prefix + arch.names.head + ".weight"} if arch.head.tied else set()
    if arch.fp8:  # block scales of float8 matrices, read by the loader's dequantizer
        ignored |= {f"{key}_scale_inv" for key in expected if f"{key}_scale_inv" in shapes}
    missing = sorted(k for k in wanted if k not in shapes)
    unexpected = sorted(k for k in set(shapes) - set(wanted) - ignored
                        if k.startswith(arch.checkpoint_prefix) and not k.startswith(tuple(arch.skipped_prefixes)))
    misshaped = [f"{k} {shapes[k]} != {wanted[k]}" for k in sorted(wanted) if k in shapes and shapes[k] != wanted[k]]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped),
                            ("not floating point", dtype_problems(arch, wanted, expected, dtypes)))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match the model: " + "; ".join(problems))
    return path


def dtype_problems(arch: Architecture, wanted: Shapes, expected: Shapes, dtypes: Dtypes) -> list[str]:
    """``key dtype`` for each tensor the model uses stored in a dtype the loader refuses (compiler/basics/dtypes.py):
    floats only, but for an fp8 model's matrices with block scales and an MXFP4 model's blocks and scales."""
    problems = []
    for key in sorted(k for k in wanted if k in dtypes):
        if key not in expected:  # an MXFP4 "_blocks" or "_scales" part (accept_quantized)
            allowed: tuple[str, ...] = (MXFP4_PARTS,)
        elif arch.fp8 and f"{key}_scale_inv" in dtypes:
            allowed = (FP8_WEIGHT, *PARAMETER_DTYPES)
        elif arch.modelopt and f"{key}_scale" in dtypes:  # NVFP4 (packed in bytes) or per-tensor FP8
            allowed = (FP8_WEIGHT, MXFP4_PARTS, *PARAMETER_DTYPES)
        else:
            allowed = PARAMETER_DTYPES
        if dtypes[key] not in allowed:
            problems.append(f"{key} {DTYPES[dtypes[key]][1] if dtypes[key] in DTYPES else dtypes[key]}")
    return problems
