"""`llmgen from-hub google/gemma-3-1b`, the mission's own command: not a hub repository, it stands
for the pretrained release google/gemma-3-1b-pt. Online (a fake hub), from the HF cache, and with
the hub unreachable (no -pt config bundled: the bundled -it snapshot, same architecture, said so)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CATALOG, GENERATED
from test_load import fake_hub, hf_cache, hub_error, lay_out_snapshot, one_line, serve_config  # noqa: F401

from llmgen.compiler.basics.catalog import RELEASES, catalog_path
from llmgen.compiler.basics.errors import SourceError
from llmgen.compiler.passes.load import load_config
from llmgen.compiler.passes.pipeline import MANIFEST, compile_config, reload_generated

SHORT, PRETRAINED, BUNDLED = "google/gemma-3-1b", "google/gemma-3-1b-pt", "google/gemma-3-1b-it"
SHA = "fedcba9876543210fedcba9876543210fedcba98"
# A stand-in served as the -pt config by the fake hub and the cache below (no copy of the published
# -pt file is bundled): the -it config, whose architecture is the same.
STAND_IN = (CATALOG / "google__gemma-3-1b-it.json").read_text()


def test_the_short_name_is_not_bundled_and_its_stand_in_is() -> None:
    release = RELEASES[SHORT]
    assert (release.id, release.stand_in) == (PRETRAINED, BUNDLED)
    assert catalog_path(SHORT) is None and catalog_path(PRETRAINED) is None and catalog_path(BUNDLED)


def test_online_it_reads_the_pretrained_release(fake_hub, hf_cache: Path) -> None:
    seen = fake_hub(serve_config(STAND_IN, SHA))
    loaded = load_config(SHORT, prefer="hub")
    assert {r.url.path for r in seen if r.url.path.endswith("config.json")} == {f"/{PRETRAINED}/resolve/main/config.json"}
    assert (loaded.source_id, loaded.revision, loaded.origin, loaded.requested) == (PRETRAINED, SHA, "hub", SHORT)
    assert loaded.note == f"{SHORT} is not a hub repository: used {PRETRAINED}, the pretrained release ({BUNDLED} is" \
                          " the instruction-tuned release)"
    compiled = compile_config(loaded)
    manifest = json.loads(compiled.files[MANIFEST])
    assert compiled.slug == "gemma-3-1b"
    assert (manifest["source"], manifest["revision"], manifest["requested"]) == (PRETRAINED, SHA, SHORT)
    assert manifest["command"] == f"llmgen from-hub {SHORT} --revision {SHA}"


def test_online_a_pinned_revision_applies_to_the_pretrained_release(fake_hub, hf_cache: Path) -> None:
    seen = fake_hub(serve_config(STAND_IN, SHA))
    assert load_config(SHORT, prefer="hub", revision="v1").revision == SHA
    assert {r.url.path for r in seen if r.url.path.endswith("config.json")} == {f"/{PRETRAINED}/resolve/v1/config.json"}


def test_online_a_hub_error_names_both_ids(fake_hub) -> None:
    fake_hub(hub_error(403, "GatedRepo"))
    with pytest.raises(SourceError) as err:
        load_config(SHORT, prefer="hub")
    assert one_line(err).startswith(f"{SHORT} is not a hub repository: it stands for {PRETRAINED}, and hub repository"
                                    f" {PRETRAINED} is gated")


def test_offline_a_cached_pretrained_snapshot_is_used(hf_cache: Path) -> None:
    lay_out_snapshot(hf_cache, PRETRAINED, SHA, STAND_IN)
    loaded = load_config(SHORT, prefer="hub")
    assert (loaded.source_id, loaded.revision, loaded.origin, loaded.requested) == (PRETRAINED, SHA, "hub", SHORT)
    assert loaded.note.startswith(f"{SHORT} is not a hub repository: used {PRETRAINED}, the pretrained release")
    assert f"used the cached snapshot {SHA[:12]} of {PRETRAINED}" in loaded.note and "\n" not in loaded.note


def test_offline_without_it_the_bundled_stand_in_is_used_and_said(hf_cache: Path) -> None:
    loaded = load_config(SHORT, prefer="hub")
    assert (loaded.source_id, loaded.revision, loaded.origin, loaded.requested) == (BUNDLED, "bundled", "catalog", SHORT)
    assert loaded.text == STAND_IN
    assert loaded.note == (f"{SHORT} is not a hub repository; its pretrained release {PRETRAINED} cannot be read (hub"
                           " unreachable: HF_HUB_OFFLINE is set) and llmgen bundles no copy of its config: used the"
                           f" bundled snapshot of {BUNDLED}, the instruction-tuned release, which has the same"
                           " architecture")
    with pytest.raises(SourceError, match="not pinned to a revision"):
        load_config(SHORT, prefer="hub", revision="v1")


def test_other_ids_that_are_not_repositories_keep_the_error(hf_cache: Path) -> None:
    with pytest.raises(SourceError) as err:
        load_config("google/gemma-3", prefer="hub")
    assert "not in the bundled catalog; did you mean: google/gemma-3-1b-it (bundled)" in one_line(err)
    with pytest.raises(SourceError, match="not in the bundled catalog"):
        load_config(PRETRAINED, prefer="hub")  # named explicitly, the -pt id is not swapped for -it


def test_committed_directory_regenerates_from_its_manifest() -> None:
    directory = GENERATED / "gemma-3-1b"
    loaded = reload_generated(directory)
    assert loaded.requested == SHORT
    compiled = compile_config(loaded, slug=directory.name)
    for name, data in compiled.files.items():
        assert (directory / name).read_bytes() == data, name


def test_cli_with_the_hub_unreachable_writes_and_verifies_gemma_3_1b(tmp_path: Path) -> None:
    """The README's main command, with the hub unreachable (a closed port, not HF_HUB_OFFLINE)."""
    home = tmp_path / "hf-home"
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(home),
           "HF_HUB_CACHE": str(home / "hub"), "LLMGEN_HUB_PROBE_TIMEOUT": "5", "PYTHONHASHSEED": "0"}
    env.pop("HF_TOKEN", None)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "llmgen.compiler.basics.cli", "from-hub", SHORT, "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"note: {SHORT} is not a hub repository; its pretrained release {PRETRAINED} cannot"
                               " be read (hub unreachable: ")
    assert f"used the bundled snapshot of {BUNDLED}" in lines[0]
    assert lines[1].startswith(f"wrote {out / 'gemma-3-1b'}/ ")
    assert lines[2].startswith("gemma-3-1b: max|dlogit| = ") and lines[2].endswith(" ok")
    parity = json.loads((out / "gemma-3-1b" / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-5
    for name in ("model.py", "arch.json", "config.json", "llmgen.json", "test_parity.py", "test_reference.py"):
        assert (out / "gemma-3-1b" / name).read_bytes() == (GENERATED / "gemma-3-1b" / name).read_bytes(), name
    # The same architecture as the instruction-tuned release's directory.
    assert (GENERATED / "gemma-3-1b" / "arch.json").read_bytes() == (GENERATED / "gemma-3-1b-it" / "arch.json").read_bytes()
