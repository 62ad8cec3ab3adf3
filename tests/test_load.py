"""Tests for pass 1, "load config": the bundled catalog and llmgen.compiler.passes.load.

Everything runs offline. Hub behaviour is exercised with the real ``hf_hub_download``, either
against a Hugging Face cache laid out in tmp_path or against an in-process fake hub (an httpx2
MockTransport installed with ``huggingface_hub.set_client_factory``) that answers the way the
hub does; the remaining failure modes raise the real huggingface_hub exception classes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.utils import _http as hf_http
from llmgen.compiler.passes import load as load_mod
from llmgen.compiler.basics.catalog import (
    catalog_entries,
    catalog_ids,
    catalog_path,
    is_trimmed,
    suggest,
)
from llmgen.compiler.basics.errors import ConfigError, LlmgenError, SourceError
from llmgen.compiler.passes.load import is_hub_id, load_config

SHA = "0123456789abcdef0123456789abcdef01234567"
CONFIG_TEXT = '{\n  "model_type": "llama",\n  "hidden_size": 64\n}\n'
CATALOG_DIR = Path(str(catalog_path("google/gemma-3-1b-it"))).parent
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "hf-configs"


def one_line(err: pytest.ExceptionInfo[LlmgenError]) -> str:
    """The message of a raised llmgen error, checked to be a single line."""
    message = str(err.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache in tmp_path, in offline mode, with no token.

    huggingface_hub reads HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE when it is imported, so the
    constants are patched along with the environment.
    """
    home = tmp_path / "hf-home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for var, value in (
        ("HF_HOME", home),
        ("HF_HUB_CACHE", cache),
        ("HF_HUB_OFFLINE", "1"),
    ):
        monkeypatch.setenv(var, str(value))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return cache


def lay_out_snapshot(cache: Path, repo_id: str, sha: str, text: str) -> Path:
    """Write ``config.json`` of ``repo_id`` at commit ``sha`` the way hf_hub_download caches it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "blobs").mkdir()
    (repo / "blobs" / "c0ffee").write_text(text, encoding="utf-8")
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to(Path("..", "..", "blobs", "c0ffee"))
    return snapshot


Handler = Callable[[httpx2.Request], httpx2.Response]
FakeHub = Callable[[Handler], list[httpx2.Request]]


@pytest.fixture
def fake_hub(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Go online against an in-process fake hub; returns ``install(handler) -> seen requests``.

    load.py's reachability probe and hf_hub_download both talk to the fake hub.
    """
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    previous = hf_http._GLOBAL_CLIENT_FACTORY
    seen: list[httpx2.Request] = []

    def install(handler: Handler) -> list[httpx2.Request]:
        def record(request: httpx2.Request) -> httpx2.Response:
            seen.append(request)
            return handler(request)

        huggingface_hub.set_client_factory(
            lambda: httpx2.Client(
                transport=httpx2.MockTransport(record),
                event_hooks={"request": [hf_http.hf_request_event_hook]},
                follow_redirects=True,
            )
        )
        return seen

    yield install
    huggingface_hub.set_client_factory(previous)


def hub_error(status: int, code: str | None = None) -> Handler:
    """A fake hub that answers every request with ``status`` and X-Error-Code ``code``."""
    headers = {"X-Error-Code": code} if code else {}
    return lambda request: httpx2.Response(status, headers=headers, request=request)


def serve_config(text: str, sha: str) -> Handler:
    """A fake hub serving ``text`` as config.json at commit ``sha`` (HEAD and GET)."""
    body = text.encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {
            "X-Repo-Commit": sha,
            "ETag": '"c0ffee"',
            "Content-Length": str(len(body)),
        }
        content = b"" if request.method == "HEAD" else body
        return httpx2.Response(200, headers=headers, content=content, request=request)

    return handler


def raising(err: BaseException) -> Callable[..., str]:
    def fake_download(*args: object, **kwargs: object) -> str:
        raise err

    return fake_download


# --------------------------------------------------------------------------- catalog


def test_catalog_ids_cover_every_bundled_file() -> None:
    ids = catalog_ids()
    files = sorted(CATALOG_DIR.glob("*.json"))
    assert len(ids) == len(files) == 31
    assert ids == sorted(ids, key=str.lower)
    assert "google/gemma-3-1b-it" in ids and "openai-community/gpt2" in ids
    assert "allenai/OLMo-2-1124-7B" in ids
    assert all("__" not in i and "TRIMMED" not in i for i in ids)
    assert all(catalog_path(i) is not None and catalog_path(i).is_file() for i in ids)


def test_catalog_trimmed_and_case_insensitive_lookup() -> None:
    path = catalog_path("ALLENAI/olmo-2-1124-7b")
    assert path is not None and path.name == "allenai__OLMo-2-1124-7B__TRIMMED.json"
    assert is_trimmed("allenai/OLMo-2-1124-7B") and not is_trimmed("google/gemma-3-1b-it")
    assert catalog_path("google/gemma-3-1b") is None


def test_suggest() -> None:
    assert suggest("google/gemma-3-1b")[0] == "google/gemma-3-1b-it"
    assert suggest("Google/Gemma-3-1B")[0] == "google/gemma-3-1b-it"
    assert suggest("gpt2") == ["openai-community/gpt2"]
    assert "google/gemma-3-1b-it" not in suggest("google/gemma-3-1b-it")
    assert len(suggest("google/gemma")) <= 5
    assert suggest("nobody/nothing-like-it") == []


def test_catalog_entries() -> None:
    entries = catalog_entries()
    assert [e.id for e in entries] == catalog_ids()
    by_id = {hub_id: (model_type, arch, path) for hub_id, model_type, arch, path in entries}
    model_type, arch, path = by_id["google/gemma-3-1b-it"]
    assert (model_type, arch) == ("gemma3_text", "Gemma3ForCausalLM")
    assert path == catalog_path("google/gemma-3-1b-it")
    assert by_id["openai-community/gpt2"][:2] == ("gpt2", "GPT2LMHeadModel")


def test_sources_md_lists_every_file() -> None:
    sources = (CATALOG_DIR / "SOURCES.md").read_text(encoding="utf-8")
    for path in CATALOG_DIR.glob("*.json"):
        assert f"`{path.name}`" in sources


@pytest.mark.skipif(not SHARED.is_dir(), reason="the team's shared/hf-configs folder is absent")
def test_catalog_is_a_verbatim_copy_of_shared_configs() -> None:
    # Every bundled config is a byte-for-byte copy of its published file in shared/; shared/ may hold
    # more (configs of families that do not compile yet are vendored when they are used).
    shared = {p.name: p.read_bytes() for p in SHARED.glob("*.json")}
    bundled = {p.name: p.read_bytes() for p in CATALOG_DIR.glob("*.json")}
    assert bundled and set(bundled) <= set(shared), sorted(set(bundled) - set(shared))
    assert all(bundled[name] == shared[name] for name in bundled)


# --------------------------------------------------------------------------- local paths


def test_local_file_keeps_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "my-config.json"
    path.write_bytes(CONFIG_TEXT.encode())
    cfg = load_config(str(path), prefer="path")
    assert cfg.raw == {"model_type": "llama", "hidden_size": 64}
    assert cfg.text == CONFIG_TEXT
    assert (cfg.origin, cfg.revision, cfg.source_id) == ("file", "local", str(path))
    assert cfg.checkpoint_dir is None and cfg.note is None
    assert load_config(str(path)).origin == "file"  # auto: an existing path wins


def test_local_dir_reads_config_json_and_records_the_dir(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(CONFIG_TEXT, encoding="utf-8")
    cfg = load_config(str(tmp_path), prefer="path")
    assert (cfg.origin, cfg.revision, cfg.text) == ("dir", "local", CONFIG_TEXT)
    assert cfg.checkpoint_dir == tmp_path


def test_dir_without_config_json(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        load_config(str(tmp_path), prefer="path")
    assert str(tmp_path) in one_line(err) and "config.json" in str(err.value)


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert one_line(err).startswith(f"{path}: invalid JSON at line 4 column 1: Expecting value")


@pytest.mark.parametrize(
    "text, kind", [("[1, 2]", "an array"), ('"x"', "a string"), ("3", "a number")]
)
def test_top_level_must_be_an_object(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), prefer="path")
    assert one_line(err) == f"{path}: the top level is {kind}, not a JSON object"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(ConfigError) as err:
        load_config(str(path), prefer="path")
    assert one_line(err).startswith(f"{path}: not UTF-8 text (byte 13")


@pytest.mark.parametrize("prefer", ["path", "auto"])
def test_missing_file(tmp_path: Path, prefer: str) -> None:
    path = tmp_path / "nope" / "config.json"
    with pytest.raises(SourceError) as err:
        load_config(str(path), prefer=prefer)  # type: ignore[arg-type]
    assert one_line(err) == f"{path}: no such file or directory"


def test_revision_only_applies_to_hub_ids(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SourceError, match="hub ids only"):
        load_config(str(tmp_path), revision="main")


def test_bad_arguments() -> None:
    with pytest.raises(SourceError, match="no config source"):
        load_config("  ")
    with pytest.raises(ValueError):
        load_config("gpt2", prefer="catalog")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hub ids


@pytest.mark.parametrize(
    "good", ["gpt2", "google/gemma-3-1b-it", "Qwen/Qwen1.5-MoE-A2.7B-Chat", "a_b/c.d"]
)
def test_valid_hub_ids(good: str) -> None:
    assert is_hub_id(good)


@pytest.mark.parametrize(
    "bad",
    ["a/b/c", "../x", "org/..", "a b/c", "org/-x", "org/x.", "a--b/c", "", "x" * 97],
)
def test_invalid_hub_ids_are_rejected_before_any_network(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(AssertionError("no hub call")))
    assert not is_hub_id(bad)
    with pytest.raises(SourceError) as err:
        load_config(bad or "/", prefer="hub")
    assert "not a hub model id" in one_line(err)


def test_hub_id_resolved_from_the_hf_cache(hf_cache: Path) -> None:
    snapshot = lay_out_snapshot(hf_cache, "acme/tiny-llama", SHA, CONFIG_TEXT)
    cfg = load_config("acme/tiny-llama", prefer="hub")
    assert (cfg.origin, cfg.revision, cfg.source_id) == ("hub", SHA, "acme/tiny-llama")
    assert cfg.checkpoint_dir == snapshot
    assert cfg.text == CONFIG_TEXT and cfg.raw["hidden_size"] == 64
    assert cfg.note is not None and "HF_HUB_OFFLINE" in cfg.note and SHA[:12] in cfg.note
    assert load_config("acme/tiny-llama").origin == "hub"  # auto: not a path, so a hub id


def test_hf_environment_variables_are_honoured(tmp_path: Path) -> None:
    """A fresh process configured only through HF_HOME / HF_HUB_OFFLINE finds the cached file."""
    snapshot = lay_out_snapshot(tmp_path / "home" / "hub", "acme/tiny-llama", SHA, CONFIG_TEXT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    code = (
        "import json; from llmgen.compiler.passes.load import load_config as f;"
        "c, d = f('acme/tiny-llama'), f('openai-community/gpt2');"
        "print(json.dumps([c.origin, c.revision, str(c.checkpoint_dir), d.origin]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["hub", SHA, str(snapshot), "catalog"]


def test_offline_catalog_id_falls_back_to_the_bundled_snapshot(hf_cache: Path) -> None:
    cfg = load_config("Google/Gemma-3-1B-it", prefer="hub")
    bundled = catalog_path("google/gemma-3-1b-it")
    assert bundled is not None
    assert (cfg.origin, cfg.revision, cfg.source_id) == (
        "catalog",
        "bundled",
        "google/gemma-3-1b-it",
    )
    assert cfg.text == bundled.read_text(encoding="utf-8") and cfg.checkpoint_dir is None
    assert cfg.note == (
        "hub unreachable (HF_HUB_OFFLINE is set): used the bundled snapshot of google/gemma-3-1b-it"
    )
    trimmed = load_config("allenai/OLMo-2-1124-7B", prefer="hub")
    assert trimmed.note is not None and "some hub keys are missing" in trimmed.note


def test_offline_unknown_id_is_an_error(hf_cache: Path) -> None:
    with pytest.raises(SourceError) as err:
        load_config("acme/not-cached", prefer="hub")
    assert one_line(err) == (
        "cannot reach the hub for acme/not-cached (HF_HUB_OFFLINE is set) and it is not in the"
        " bundled catalog; `llmgen list` shows the bundled ids"
    )


def test_offline_near_miss_names_the_bundled_id(hf_cache: Path) -> None:
    with pytest.raises(SourceError) as err:
        load_config("google/gemma-3", prefer="hub")
    assert "not in the bundled catalog; did you mean: google/gemma-3-1b-it (bundled)" in one_line(
        err
    )


def test_offline_pinned_revision_does_not_use_the_catalog(hf_cache: Path) -> None:
    with pytest.raises(SourceError, match="not pinned to a revision"):
        load_config("google/gemma-3-1b-it", revision="v1.0", prefer="hub")


def test_unreachable_hub_uses_only_the_cache(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(load_mod, "_hub_unreachable", lambda *args: "cannot connect to hub:443")
    calls: list[dict[str, Any]] = []
    real = huggingface_hub.hf_hub_download

    def spy(repo_id: str, filename: str, **kwargs: Any) -> str:
        calls.append(kwargs)
        return str(real(repo_id, filename, **kwargs))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    cfg = load_config("google/gemma-3-1b-it", prefer="hub")
    assert calls[0]["local_files_only"] is True
    assert cfg.origin == "catalog" and cfg.note is not None
    assert cfg.note.startswith("hub unreachable (cannot connect to hub:443): used the bundled")
    snapshot = lay_out_snapshot(hf_cache, "acme/tiny-llama", SHA, CONFIG_TEXT)
    cached = load_config("acme/tiny-llama", prefer="hub")
    assert (cached.origin, cached.revision, cached.checkpoint_dir) == (
        "hub",
        SHA,
        snapshot,
    )


# --------------------------------------------------------------------------- fake hub (real hf_hub_download)


def test_download_from_the_hub(fake_hub: FakeHub, hf_cache: Path) -> None:
    seen = fake_hub(serve_config(CONFIG_TEXT, SHA))
    cfg = load_config("acme/tiny-llama", prefer="hub", token="hf_secret")
    assert (cfg.origin, cfg.revision, cfg.note) == ("hub", SHA, None)
    assert cfg.checkpoint_dir == hf_cache / "models--acme--tiny-llama" / "snapshots" / SHA
    assert cfg.text == CONFIG_TEXT
    assert (cfg.checkpoint_dir / "config.json").read_text() == CONFIG_TEXT
    assert seen[0].url.path == "/acme/tiny-llama/resolve/main/config.json"
    assert seen[0].headers["authorization"] == "Bearer hf_secret"


def test_hub_404_names_bundled_ids(fake_hub: FakeHub) -> None:
    fake_hub(hub_error(404, "RepoNotFound"))
    with pytest.raises(SourceError) as err:
        load_config("google/gemma-3", prefer="hub")
    assert one_line(err).startswith(
        "no hub repository 'google/gemma-3'; did you mean: google/gemma-3-1b-it (bundled)"
    )


def test_hub_401_may_be_private(fake_hub: FakeHub) -> None:
    fake_hub(hub_error(401))
    with pytest.raises(SourceError) as err:
        load_config("acme/secret-model", prefer="hub")
    assert one_line(err) == (
        "no hub repository 'acme/secret-model' (or it is private or gated: set HF_TOKEN)"
    )


def test_hub_gated(fake_hub: FakeHub) -> None:
    fake_hub(hub_error(403, "GatedRepo"))
    with pytest.raises(SourceError) as err:
        load_config("google/gemma-3-1b-it", prefer="hub")
    assert one_line(err) == (
        "hub repository google/gemma-3-1b-it is gated or needs a token (HTTP 403): accept the"
        " licence on the hub and set HF_TOKEN (or use the bundled snapshot of"
        " google/gemma-3-1b-it with HF_HUB_OFFLINE=1)"
    )


def test_hub_plain_403_needs_a_token(fake_hub: FakeHub) -> None:
    fake_hub(hub_error(403))
    with pytest.raises(SourceError, match=r"acme/x is gated or needs a token \(HTTP 403\)"):
        load_config("acme/x", prefer="hub")


def test_hub_revision_not_found(fake_hub: FakeHub) -> None:
    fake_hub(hub_error(404, "RevisionNotFound"))
    with pytest.raises(SourceError) as err:
        load_config("acme/tiny-llama", revision="v9", prefer="hub")
    assert one_line(err) == "hub repository acme/tiny-llama has no revision 'v9'"


def test_hub_entry_not_found(fake_hub: FakeHub) -> None:
    fake_hub(hub_error(404, "EntryNotFound"))
    with pytest.raises(SourceError) as err:
        load_config("acme/dataset-ish", prefer="hub")
    assert one_line(err) == "hub repository acme/dataset-ish has no config.json at revision 'main'"


# --------------------------------------------------------------------------- simulated failures


def connect_timeout() -> LocalEntryNotFoundError:
    """What hf_hub_download raises after its HEAD call timed out and nothing was cached."""
    err = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")
    err.__cause__ = httpx2.ConnectTimeout("timed out")
    return err


def test_timeout_falls_back_to_catalog(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(load_mod, "_hub_unreachable", lambda *args: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(connect_timeout()))
    cfg = load_config("Qwen/Qwen3-0.6B", prefer="hub")
    assert cfg.origin == "catalog"
    assert (
        cfg.note
        == "hub unreachable (ConnectTimeout: timed out): used the bundled snapshot of Qwen/Qwen3-0.6B"
    )
    with pytest.raises(
        SourceError,
        match=r"cannot reach the hub for acme/x \(ConnectTimeout: timed out\)",
    ):
        load_config("acme/x", prefer="hub")


@pytest.mark.parametrize(
    "err, expected",
    [
        (httpx2.ProxyError("proxy said no"), "ProxyError: proxy said no"),
        (httpx2.ReadTimeout("slow"), "ReadTimeout: slow"),
    ],
)
def test_raw_network_errors_fall_back(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch, err: Exception, expected: str
) -> None:
    monkeypatch.setattr(load_mod, "_hub_unreachable", lambda *args: None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(err))
    cfg = load_config("openai-community/gpt2", prefer="hub")
    assert cfg.origin == "catalog" and cfg.note is not None and f"({expected})" in cfg.note


def test_hub_server_error_after_retries_falls_back(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = httpx2.Response(503, request=httpx2.Request("HEAD", "https://huggingface.co/x"))
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError) as raised:
        hf_http.hf_raise_for_status(response)
    wrapped = LocalEntryNotFoundError(
        "An error happened while trying to locate the file on the Hub"
    )
    wrapped.__cause__ = raised.value  # how hf_hub_download reports a 5xx after its retries
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(load_mod, "_hub_unreachable", lambda *args: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(wrapped))
    cfg = load_config("openai-community/gpt2", prefer="hub")
    assert cfg.origin == "catalog" and "(the hub answered HTTP 503)" in (cfg.note or "")


def test_any_other_failure_is_one_line_naming_the_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(load_mod, "_hub_unreachable", lambda *args: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(RuntimeError("disk\nfull")))
    with pytest.raises(SourceError) as err:
        load_config("acme/x", prefer="hub")
    assert one_line(err) == "cannot fetch config.json of acme/x from the hub (RuntimeError: disk)"
    assert isinstance(err.value.__cause__, RuntimeError)


# --------------------------------------------------------------------------- reachability probe


def test_probe_no_connection_falls_back_without_retries(
    fake_hub: FakeHub,
) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno -2] Name or service not known", request=request)

    seen = fake_hub(refuse)
    cfg = load_config("google/gemma-3-1b-it", prefer="hub")
    assert cfg.origin == "catalog" and len(seen) == 1  # one probe, no retries, no second HEAD
    assert cfg.note == (
        "hub unreachable (ConnectError: [Errno -2] Name or service not known): used the bundled"
        " snapshot of google/gemma-3-1b-it"
    )


def test_probe_server_error_falls_back(fake_hub: FakeHub, hf_cache: Path) -> None:
    seen = fake_hub(hub_error(503))
    cfg = load_config("openai-community/gpt2", prefer="hub")
    assert cfg.origin == "catalog" and "(the hub answered HTTP 503)" in (cfg.note or "")
    snapshot = lay_out_snapshot(hf_cache, "acme/tiny-llama", SHA, CONFIG_TEXT)
    cached = load_config("acme/tiny-llama", prefer="hub")  # the cache still wins over the catalog
    assert (cached.origin, cached.checkpoint_dir) == ("hub", snapshot)
    assert (
        cached.note
        == f"hub unreachable (the hub answered HTTP 503): used the cached snapshot {SHA[:12]} of acme/tiny-llama"
    )
    assert len(seen) == 2


def test_probe_deadline(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    def stall(request: httpx2.Request) -> httpx2.Response:
        time.sleep(1.0)
        return httpx2.Response(200, request=request)

    fake_hub(stall)
    monkeypatch.setenv("LLMGEN_HUB_PROBE_TIMEOUT", "0.1")
    started = time.monotonic()
    cfg = load_config("Qwen/Qwen3-0.6B", prefer="hub")
    assert time.monotonic() - started < 0.8
    assert (
        cfg.note
        == "hub unreachable (no answer from the hub within 0.2 s): used the bundled snapshot of Qwen/Qwen3-0.6B"
    )


def test_probe_can_be_turned_off(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_hub(serve_config(CONFIG_TEXT, SHA))
    monkeypatch.setenv("LLMGEN_HUB_PROBE_TIMEOUT", "0")
    assert load_config("acme/tiny-llama", prefer="hub").revision == SHA
    assert [r.method for r in seen] == [
        "HEAD",
        "GET",
    ]  # hf_hub_download's own requests only
