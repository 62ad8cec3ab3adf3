"""Pass 1, "load config": read a ``config.json`` from a local file or dir, the hub, or the catalog.

The one entry point is :func:`load_config`. Hub access goes through the real
``huggingface_hub.hf_hub_download``, so ``HF_TOKEN``, ``HF_HOME``, ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE`` and the Hugging Face cache behave as they do everywhere else. When the hub
cannot be reached, an id that is in the bundled catalog is read from there instead.

Before going online, one quick HEAD of the hub's config.json, without hf_hub_download's retries
and under a deadline (``LLMGEN_HUB_PROBE_TIMEOUT`` seconds, default 3; 0 turns it off), decides
whether the hub is usable: if not, only the cache and then the catalog are tried, instead of
spending ~23 s in retries.

A few short names that are not repositories stand for a release (``catalog.RELEASES``:
``google/gemma-3-1b`` is ``google/gemma-3-1b-pt``); offline without that release's config, the
bundled config of a release with the same architecture is used, and the ``note`` says so.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..basics.catalog import Release, canonical_id, catalog_path, is_trimmed, release_for, suggest
from ..basics.errors import ConfigError, SourceError

MAX_CONFIG_BYTES = 16 * 1024 * 1024
DEFAULT_PROBE_TIMEOUT_S = 3.0
MAX_PROBE_TIMEOUT_S = 600.0
_SHA_RE = re.compile(r"[0-9a-f]{40}")
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_HUB_ID_RE = re.compile(rf"(?:{_PART}/)?{_PART}")


@dataclass(frozen=True)
class LoadedConfig:
    """A parsed ``config.json`` and where it came from."""

    raw: dict[str, Any]  # the parsed config.json, a JSON object
    text: str  # the exact file text (written verbatim as the snapshot)
    source_id: str  # hub id, or the path given by the user
    revision: str  # hub commit sha; "bundled" for the catalog; "local" for paths
    origin: str  # "hub" | "catalog" | "file" | "dir"
    checkpoint_dir: Path | None  # local dir or hub snapshot dir (weights), else None
    note: str | None  # one human line on how the config was obtained, if noteworthy
    requested: str | None = None  # the id the user gave, when it resolved to another (source_id)


def load_config(
    source: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    prefer: Literal["auto", "hub", "path"] = "auto",
) -> LoadedConfig:
    """Load the config named by ``source``: a hub id (``prefer="hub"``), a file or a dir holding
    ``config.json`` (``prefer="path"``), or whichever it is (``"auto"``: a path if it exists).

    Raises SourceError when the source cannot be read, ConfigError when its content is not a
    JSON object.
    """
    if prefer not in ("auto", "hub", "path"):
        raise ValueError(f"prefer must be 'auto', 'hub' or 'path', not {prefer!r}")
    if not source.strip():
        raise SourceError("no config source given: expected a hub id, a file or a dir")
    local = path_exists(Path(source).expanduser(), source) or source.endswith(".json")
    if prefer == "hub" or (prefer == "auto" and not local and is_hub_id(source)):
        try:
            return _from_hub(source, revision, token)
        except _NotBundled as miss:  # an internal signal for release ids; callers see a SourceError
            raise SourceError(str(miss)) from None
    if revision is not None:
        raise SourceError(f"a revision ({revision}) applies to hub ids only, not to {source}")
    return _from_path(source)


def is_hub_id(text: str) -> bool:
    """Whether ``text`` is a well-formed hub model id: ``org/name`` or ``name``."""
    ok = _HUB_ID_RE.fullmatch(text) and ".." not in text and "--" not in text
    return bool(ok) and len(text) <= 96


def path_exists(path: Path, shown: str) -> bool:
    """``path.exists()``, with a path the system cannot even look up (too long, say) reported
    as one SourceError line instead of an OSError."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise SourceError(f"{shorten(shown)}: {err.strerror or type(err).__name__}") from None
    return True


def shorten(text: str) -> str:
    """A path or id as shown in a message: a very long one by its ends and its length."""
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


def _from_path(source: str) -> LoadedConfig:
    path = Path(source).expanduser()
    if path_exists(path, source) and path.is_dir():
        config = path / "config.json"
        if not config.exists():
            raise SourceError(f"{source}: the directory has no config.json")
        raw, text = _read_json(config, str(config))
        return LoadedConfig(raw, text, source, "local", "dir", path.absolute(), None)
    if not path.exists():
        raise SourceError(f"{source}: no such file or directory")
    raw, text = _read_json(path, source)
    return LoadedConfig(raw, text, source, "local", "file", None, None)


def _read_json(path: Path, shown: str) -> tuple[dict[str, Any], str]:
    """Read ``path`` as a UTF-8 JSON object; errors name the file as ``shown``."""
    try:
        if not path.is_file():
            raise SourceError(f"{shown}: not a regular file")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise SourceError(f"{shown}: {size} bytes is too large for a config.json")
        data = path.read_bytes()
    except OSError as err:
        raise SourceError(f"cannot read {shown}: {err.strerror or err}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{shown}: not UTF-8 text (byte {err.start}: {err.reason})") from err
    try:
        raw = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as err:
        raise ConfigError(f"{shown}: key {err.args[0]!r:.60} appears twice in one object") from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{shown}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"{shown}: invalid JSON: {_short(err)}") from err
    if not isinstance(raw, dict):
        kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
        got = kinds.get(type(raw), "a number")
        raise ConfigError(f"{shown}: the top level is {got}, not a JSON object")
    bad = _non_finite(raw)
    if bad is not None:
        raise ConfigError(f"{shown}: key '{bad}' holds a non-finite number (NaN or Infinity is not JSON)")
    return raw, text


class _DuplicateKey(ValueError):
    """Two entries of one JSON object with the same key: which one counts would be a guess."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _written_by_transformers(path: str, value: float) -> bool:
    """Infinity where transformers itself writes it: the upper end of Mamba's ``time_step_limit``
    (its default is (0.0, float("inf")), which json.dumps writes as Infinity)."""
    return value == math.inf and re.fullmatch(r"(.+\.)?time_step_limit\.1", path) is not None


def _non_finite(raw: dict[str, Any]) -> str | None:
    """The dotted path of the first NaN / Infinity in ``raw`` (Python's json accepts them)."""
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value) and not _written_by_transformers(path, value):
            return path
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend((f"{path}.{key}" if path else str(key), item) for key, item in items)
    return None


def _from_hub(hub_id: str, revision: str | None, token: str | None) -> LoadedConfig:
    if not is_hub_id(hub_id):
        local = Path(hub_id).expanduser().exists() if hub_id else False
        hint = "; it is a local path: use from-config" if local else ""
        raise SourceError(
            f"'{hub_id}' is not a hub model id (org/name: letters, digits, . _ -){hint}"
        )
    release = release_for(hub_id)
    if release is not None:
        return _from_release(hub_id, release, revision, token)
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    offline = getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)()
    why = "HF_HUB_OFFLINE is set" if offline else _hub_unreachable(hub_id, revision, token)
    cache = why is not None and not offline  # (offline mode: hf_hub_download knows already)
    try:
        path = huggingface_hub.hf_hub_download(
            hub_id, "config.json", revision=revision, token=token or None, local_files_only=cache
        )
    except Exception as err:
        # hf_hub_download wraps some HTTP answers (403, 5xx) in LocalEntryNotFoundError.
        cause = err.__cause__
        answer = cause if isinstance(cause, hf.HfHubHTTPError) else err
        reason = _unreachable_reason(answer)
        if reason is None:
            raise SourceError(_hub_error_message(answer, hub_id, revision)) from err
        return _from_catalog(hub_id, revision, why or reason, err)
    snapshot = Path(path).parent
    sha = snapshot.name if _SHA_RE.fullmatch(snapshot.name) else (revision or "main")
    note = f"hub unreachable ({why}): used the cached snapshot {sha[:12]} of {hub_id}"
    raw, text = _read_json(Path(path), f"config.json of {hub_id} ({path})")
    return LoadedConfig(raw, text, hub_id, sha, "hub", snapshot, note if why else None)


def _from_release(hub_id: str, release: Release, revision: str | None, token: str | None) -> LoadedConfig:
    """A short name that is not a repository (``google/gemma-3-1b``): read its pretrained release
    (hub, cache, or catalog); offline with none of those, the bundled release of the same architecture."""
    said = f"{hub_id} is not a hub repository"
    try:
        loaded = _from_hub(release.id, revision, token)
    except _NotBundled as miss:
        fallback = _from_catalog(release.stand_in, revision, miss.why, miss)
        note = (f"{said}; its pretrained release {release.id} cannot be read (hub unreachable: {miss.why}) and"
                f" llmgen bundles no copy of its config: used the bundled snapshot of {fallback.source_id},"
                f" {release.relation}, which has the same architecture")
        return replace(fallback, note=note, requested=hub_id)
    except SourceError as err:
        raise SourceError(f"{said}: it stands for {release.id}, and {err}") from err
    note = f"{said}: used {release.id}, the pretrained release ({release.stand_in} is {release.relation})"
    if loaded.note:
        note += f"; {loaded.note}"
    return replace(loaded, note=note, requested=hub_id)


def _hub_unreachable(hub_id: str, revision: str | None, token: str | None) -> str | None:
    """Why the hub cannot be used now, or None when a quick HEAD of config.json gets an answer.

    This is hf_hub_download's own first request (same session, proxies, certificates, endpoint)
    made once, without its retries, under a deadline that also covers DNS.
    """
    timeout = probe_timeout()
    if timeout == 0:
        return None
    import huggingface_hub

    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            url = huggingface_hub.hf_hub_url(hub_id, "config.json", revision=revision)
            huggingface_hub.get_hf_file_metadata(url, token=token or None, timeout=timeout)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - reported to the caller
            outcome.append(err)

    thread = threading.Thread(target=attempt, name="llmgen-hub-probe", daemon=True)
    thread.start()
    thread.join(2 * timeout)
    if not outcome:
        return f"no answer from the hub within {2 * timeout:g} s"
    return None if outcome[0] is None else _unreachable_reason(outcome[0])


def probe_timeout() -> float:
    """LLMGEN_HUB_PROBE_TIMEOUT in seconds: a finite number from 0 (no probe) to MAX_PROBE_TIMEOUT_S."""
    text = os.environ.get("LLMGEN_HUB_PROBE_TIMEOUT")
    if text is None:
        return DEFAULT_PROBE_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_PROBE_TIMEOUT_S:  # also NaN and infinities
        raise SourceError(f"LLMGEN_HUB_PROBE_TIMEOUT={text[:40]!r}: expected seconds, a number from 0 (no probe)"
                          f" to {MAX_PROBE_TIMEOUT_S:g}")
    return value


def _from_catalog(hub_id: str, revision: str | None, why: str, err: Exception) -> LoadedConfig:
    """Fall back to the bundled snapshot after the hub could not be reached for ``why``."""
    path = catalog_path(hub_id)
    if path is None:
        raise _NotBundled(
            f"cannot reach the hub for {hub_id} ({why}) and it is not in the bundled catalog"
            + _did_you_mean(hub_id, "; `llmgen list` shows the bundled ids"), why
        ) from err
    if revision not in (None, "main"):
        raise SourceError(
            f"cannot reach the hub for {hub_id} at revision {revision} ({why}); the bundled"
            " snapshot is not pinned to a revision (drop --revision to use it)"
        ) from err
    name = canonical_id(hub_id) or hub_id
    raw, text = _read_json(path, str(path))
    note = f"hub unreachable ({why}): used the bundled snapshot of {name}"
    if is_trimmed(name):
        note += " (trimmed by a third party: some hub keys are missing)"
    return LoadedConfig(raw, text, name, "bundled", "catalog", None, note)


class _NotBundled(SourceError):
    """The hub cannot be reached and the id is not in the catalog (``why``: the hub's side)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


def _unreachable_reason(err: BaseException) -> str | None:
    """Why the hub could not be reached, if ``err`` means that; None if the hub answered."""
    from huggingface_hub import errors as hf

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, hf.LocalEntryNotFoundError):
        cause = err.__cause__
        return f"{type(cause).__name__}: {_short(cause)}" if cause else "no connection"
    if isinstance(err, hf.HfHubHTTPError):
        busy = isinstance(status, int) and (status >= 500 or status in (408, 429))
        return f"the hub answered HTTP {status}" if busy else None
    return f"{type(err).__name__}: {_short(err)}" if isinstance(err, _network_errors()) else None


def _hub_error_message(err: Exception, hub_id: str, revision: str | None) -> str:
    """One line for a hub failure that a catalog fallback cannot fix."""
    from huggingface_hub import errors as hf

    status = getattr(getattr(err, "response", None), "status_code", None)
    at = revision or "main"
    if isinstance(err, hf.DisabledRepoError):
        return f"hub repository {hub_id} has been disabled by its owner"
    if isinstance(err, hf.GatedRepoError) or (
        status in (401, 403) and not isinstance(err, hf.RepositoryNotFoundError)
    ):
        bundled = canonical_id(hub_id)
        offline = f" (or use the bundled snapshot of {bundled} with HF_HUB_OFFLINE=1)"
        return (
            f"hub repository {hub_id} is gated or needs a token"
            + (f" (HTTP {status})" if status else "")
            + ": accept the licence on the hub and set HF_TOKEN"
            + (offline if bundled else "")
        )
    if isinstance(err, hf.RepositoryNotFoundError):
        private = " (or it is private or gated: set HF_TOKEN)" if status == 401 else ""
        return f"no hub repository '{hub_id}'{private}" + _did_you_mean(hub_id)
    if isinstance(err, hf.RevisionNotFoundError):
        return f"hub repository {hub_id} has no revision '{at}'"
    if isinstance(err, hf.EntryNotFoundError):
        return f"hub repository {hub_id} has no config.json at revision '{at}'"
    kind = "HTTP " + str(status) if status else type(err).__name__
    return f"cannot fetch config.json of {hub_id} from the hub ({kind}: {_short(err)})"


def _did_you_mean(hub_id: str, otherwise: str = "") -> str:
    names = ", ".join(f"{n} (bundled)" for n in suggest(hub_id))
    return f"; did you mean: {names}" if names else otherwise


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception classes meaning "no connection", from the HTTP stacks already imported."""
    classes: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    for module, names in (
        ("httpx2", ("TransportError", "TimeoutException")),
        ("httpx", ("TransportError", "TimeoutException")),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        mod = sys.modules.get(module)
        classes += [getattr(mod, n) for n in names if hasattr(mod, n)] if mod else []
    return tuple(classes)


def _short(err: BaseException | None) -> str:
    """The first line of an exception's message (its class name if empty), at most 200 chars."""
    lines = str(err).strip().splitlines() if err is not None else []
    return (lines[0] if lines else type(err).__name__)[:200]
