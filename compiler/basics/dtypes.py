"""What a safetensors checkpoint may hold: the one rule for both of its readers.

The compile-time check (checkpoint.py) and the generated loader (templates/model/safetensors.py.j2,
rendered from :func:`loader_context`) read the same table, so a file one of them accepts the
other accepts too:

- a header is at most MAX_HEADER_BYTES long (refused from its 8-byte length field, before any of it
  is read), a JSON object whose entries each have a known dtype, a shape of counts and two data
  offsets inside the file spanning exactly shape x dtype bytes, no two entries overlapping;
- a tensor the model uses must be stored as floating point (PARAMETER_DTYPES); the quantized forms
  a model's dequantizer reads are the only exception: float8 (FP8_WEIGHT) matrices that have a
  ``<name>_scale_inv`` beside them in an fp8 model, MXFP4 ``_blocks``/``_scales`` (MXFP4_PARTS) in
  an MXFP4 model. An integer, bool or float8 norm weight is refused by both.
"""

from __future__ import annotations

from typing import Any

# safetensors' own cap is 100 MB, which lets a header of ~1.4 M empty entries cost tens of seconds
# and gigabytes to parse before it is refused. 16 MiB still holds ~100 k entries of ~150 bytes: more
# than all shards of the largest published checkpoints together (DeepSeek-V3: ~92 k tensors), in one file.
MAX_HEADER_MIB = 16
MAX_HEADER_BYTES = MAX_HEADER_MIB * 1024 * 1024

# safetensors dtype name -> (bytes per element, torch dtype attribute)
DTYPES: dict[str, tuple[int, str]] = {
    "F64": (8, "float64"), "F32": (4, "float32"), "F16": (2, "float16"), "BF16": (2, "bfloat16"),
    "F8_E4M3": (1, "float8_e4m3fn"), "F8_E5M2": (1, "float8_e5m2"),
    "I64": (8, "int64"), "I32": (4, "int32"), "I16": (2, "int16"), "I8": (1, "int8"),
    "U64": (8, "uint64"), "U32": (4, "uint32"), "U16": (2, "uint16"), "U8": (1, "uint8"), "BOOL": (1, "bool"),
}
PARAMETER_DTYPES = ("F64", "F32", "F16", "BF16")  # how a tensor the model uses may be stored
FP8_WEIGHT = "F8_E4M3"  # an fp8 model's matrices, each with a float "<name>_scale_inv" beside it
MXFP4_PARTS = "U8"  # an MXFP4 model's "<name>_blocks" and "<name>_scales"


def name_of_torch_dtype(torch_name: str) -> str:
    """The safetensors name of a torch dtype ("float32" -> "F32"), or the torch name if it has none."""
    return next((name for name, (_, attr) in DTYPES.items() if attr == torch_name), torch_name)


def loader_context() -> dict[str, Any]:
    """Context for templates/model/safetensors.py.j2: the table above as literals."""
    return {
        "dtypes": [{"entry": f'"{name}": torch.{attr}'} for name, (_, attr) in DTYPES.items()],
        "parameter_dtypes": [DTYPES[name][1] for name in PARAMETER_DTYPES],
        "fp8_weight": DTYPES[FP8_WEIGHT][1],
        "max_header_literal": f"{MAX_HEADER_MIB} * 1024 * 1024",
        "max_header_words": f"{MAX_HEADER_MIB} MiB",
    }
