"""Loading in another precision than the checkpoint's: model.py's read_safetensors reads the
tensors it is asked to cast straight into the target dtype, through one 16 MiB buffer, instead
of casting a memory-mapped copy (whose pages would all stay resident until the load ends).

Checked: the values equal a plain ``.to(dtype)`` (also across buffer boundaries), only the
named floating-point tensors are cast, and the peak RSS of such a read stays near the size of
the result rather than the size of the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import GENERATED, import_path
from safetensors.torch import save_file

MODEL = GENERATED / "SmolLM2-135M-Instruct" / "model.py"
BUFFER_ELEMENTS = 2**24 // 4  # float32 elements per 16 MiB read


@pytest.fixture(scope="module")
def gen():
    return import_path(MODEL, "llmgen_weights_cast_model")


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/self/status has no {field}")


def test_cast_values_and_which_tensors(gen, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "big": torch.randn(BUFFER_ELEMENTS * 2 + 4 * 12345, generator=generator).view(-1, 4),  # three reads
        "half": torch.randn(7, 5, generator=generator).half(),
        "ints": torch.arange(10),
        "kept": torch.randn(4, 4, generator=generator),  # not asked to cast
        "empty": torch.zeros(0, 3),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    read = gen.read_safetensors(tmp_path / "model.safetensors", torch.bfloat16, frozenset({"big", "half", "ints", "empty"}))
    assert read["big"].dtype == torch.bfloat16 and torch.equal(read["big"], tensors["big"].bfloat16())
    assert read["half"].dtype == torch.bfloat16 and torch.equal(read["half"], tensors["half"].bfloat16())
    assert read["ints"].dtype == torch.int64 and torch.equal(read["ints"], tensors["ints"])  # floats only
    assert read["kept"].dtype == torch.float32 and torch.equal(read["kept"], tensors["kept"])
    assert read["empty"].shape == (0, 3) and read["empty"].dtype == torch.bfloat16
    plain = gen.read_safetensors(tmp_path / "model.safetensors")  # no dtype: every tensor as stored
    assert {key: t.dtype for key, t in plain.items()} == {key: t.dtype for key, t in tensors.items()}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_cast_read_peak_rss_is_about_the_result(gen, tmp_path: Path) -> None:
    stored = torch.randn(24 * 2**20, generator=torch.Generator().manual_seed(1)).view(-1, 64)  # 96 MiB
    save_file({"w": stored}, tmp_path / "model.safetensors")
    del stored
    path, cast = tmp_path / "model.safetensors", frozenset({"w"})
    del gen.read_safetensors(path, torch.bfloat16, cast)["w"]  # warm-up: library code paged in
    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the current RSS
    before = status_kib("VmRSS")
    result = gen.read_safetensors(path, torch.bfloat16, cast)["w"]
    added_mib = (status_kib("VmHWM") - before) / 1024
    result_mib = result.nbytes / 2**20  # 48 MiB; casting a mapped copy would add 96 more
    assert added_mib <= result_mib + 16 + 8, f"peak +{added_mib:.0f} MiB for a {result_mib:.0f} MiB result"


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_mapped_read_counts_non_finite_values_without_paging_the_file_in(gen, tmp_path: Path) -> None:
    """load_checkpoint refuses NaN and infinite weights; for a memory-mapped tensor the reader
    counts them through its 16 MiB buffer (`counted`), so loading does not page in the whole
    file (it did: a peak RSS of 1.03x the weight bytes on the real SmolLM2 checkpoint)."""
    generator = torch.Generator().manual_seed(2)
    save_file({"w": torch.randn(24 * 2**20, generator=generator).view(-1, 64)}, tmp_path / "big.safetensors")  # 96 MiB
    path, wanted = tmp_path / "big.safetensors", frozenset({"w"})
    gen.read_safetensors(path, torch.float32, wanted, counted={})  # warm-up: library code paged in
    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the current RSS
    before, counted = status_kib("VmRSS"), {}
    result = gen.read_safetensors(path, torch.float32, wanted, counted=counted)
    added_mib = (status_kib("VmHWM") - before) / 1024
    assert added_mib <= 16 + 8, f"peak +{added_mib:.0f} MiB for a 96 MiB mapped file"
    assert counted["w"][0] is result["w"] and counted["w"][1] == 0
    stored = torch.randn(BUFFER_ELEMENTS + 5, 2, generator=generator)  # two reads
    stored[7, 1], stored[-1, 0] = float("nan"), float("-inf")
    save_file({"w": stored, "ints": torch.arange(4), "other": stored.clone()}, tmp_path / "model.safetensors")
    counted, wanted = {}, frozenset({"w", "ints"})
    result = gen.read_safetensors(tmp_path / "model.safetensors", torch.float32, wanted, counted=counted)
    assert set(counted) == {"w"} and counted["w"][0] is result["w"] and counted["w"][1] == 2  # wanted floats only
    assert gen.count_non_finite(result["w"]) == 2  # the mapping holds the same values
