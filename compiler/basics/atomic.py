"""The one way llmgen puts bytes on disk: atomic, symlink-refusing, serialised by a lock.

``write_file(path, data)`` writes one file: a temporary sibling is written, flushed to disk
(fsync) and renamed over ``path``, so a reader sees the old file or the new one, never half
of one. A ``path`` that is a symlink (or not a regular file) is refused, and the rename works
on the directory's descriptor, so it never follows a link swapped in meanwhile.

``replace_tree(parent, name, files)`` writes a whole directory as one set: every file goes
into a temporary sibling directory, which then takes the place of ``parent/name`` in one
step (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, with the old set kept
aside until the new one is in place, and put back by the next writer if a run died between
them). A reader, or a run killed at any moment, sees the old complete set or the new one.

Writers into one directory hold an exclusive ``flock`` on it (its descriptor: no lock file
is left behind), so concurrent runs serialise; a writer clears the temporaries that killed
runs left there (``.<name>.llmgen-tmp-*``) before it starts.

A directory llmgen names itself (``<out>/<slug>``, a file name inside it) is never written
through a symlink; the directory a user names (``--out``, ``verify DIR``) may be one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import SourceError

TMP_TAG = ".llmgen-tmp-"
OLD_TAG = ".llmgen-old-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class OutputError(SourceError):
    """An output path that llmgen will not or cannot write."""


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _why(err: OSError) -> str:
    return err.strerror or type(err).__name__


def ensure_dir(directory: Path, shown: str | None = None) -> Path:
    """``directory``, created if missing (with its parents), checked to be a writable directory."""
    shown = shown or str(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{shown}: exists and is not a directory") from None
    except OSError as err:
        raise OutputError(f"{shown}: cannot create the directory ({_why(err)})") from None
    if not directory.is_dir():
        raise OutputError(f"{shown}: exists and is not a directory")
    check_writable(directory, shown)
    return directory


def check_writable(directory: Path, shown: str | None = None) -> None:
    """Refuse a directory that its permissions mark read-only (also for root, who could write it)."""
    mode = directory.stat().st_mode
    if not os.access(directory, os.W_OK | os.X_OK) or not mode & 0o222:
        raise OutputError(f"{shown or directory}: the directory is read-only; not writing there")


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[int]:
    """Hold an exclusive lock on ``directory`` (an open descriptor of it, yielded)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:  # a file system without flock on directories: a lock file instead
            if err.errno not in (errno.EBADF, errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            with _lock_file(fd):
                yield fd
            return
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _lock_file(dir_fd: int) -> Iterator[None]:
    fd = os.open(".llmgen.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666, dir_fd=dir_fd)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_at(dir_fd: int, name: str, data: bytes) -> None:
    """Write ``name`` (absent or a regular file) in the open directory ``dir_fd`` atomically."""
    try:
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode) or not stat.S_ISREG(os.stat(name, dir_fd=dir_fd).st_mode):
            raise OutputError(f"{name}: exists and is not a plain file; not writing over it")
    except FileNotFoundError:
        pass
    tmp = f".{name}{TMP_TAG}{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _file_mode(), dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _clear_temporaries(dir_fd: int, prefix: str) -> None:
    """Remove what killed runs left: ``<prefix>.llmgen-tmp-*`` files and directories."""
    for entry in os.listdir(dir_fd):
        if entry.startswith(prefix + TMP_TAG):
            _remove(dir_fd, entry)


def _remove(dir_fd: int, entry: str) -> None:
    st = os.lstat(entry, dir_fd=dir_fd)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(entry, dir_fd=dir_fd, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry, dir_fd=dir_fd)


def write_file(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; its directory must exist. Errors name ``path``."""
    try:
        check_writable(path.parent)
        with locked(path.parent) as dir_fd:
            _clear_temporaries(dir_fd, f".{path.name}")
            try:
                _write_at(dir_fd, path.name, data)
            except OutputError:
                raise OutputError(f"{path}: exists and is not a plain file; not writing over it") from None
            os.fsync(dir_fd)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {_why(err)}") from None
    return path


def recover(dir_fd: int, name: str) -> None:
    """Under the lock: put back a set a killed run left aside, drop its temporaries."""
    entries = os.listdir(dir_fd)
    old = sorted(e for e in entries if e.startswith(f".{name}{OLD_TAG}"))
    if old and name not in entries:
        os.rename(old[-1], name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        old = old[:-1]
    for entry in old:
        _remove(dir_fd, entry)
    _clear_temporaries(dir_fd, f".{name}")


def _exchange(dir_fd: int, a: str, b: str) -> bool:
    """Swap the names ``a`` and ``b`` in one step; False where the system cannot."""
    func = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if func is None:
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if func(dir_fd, os.fsencode(a), dir_fd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), b)


def replace_tree(parent: Path, dir_fd: int, name: str, files: dict[str, bytes],
                 carry: Callable[[Path, Path], None] | None = None) -> None:
    """Under the lock on ``parent`` (open as ``dir_fd``): make ``parent/name`` hold exactly
    ``files``, in one step. ``carry(old, new)`` may copy entries of the old set into the new."""
    tmp = f".{name}{TMP_TAG}{secrets.token_hex(6)}"
    os.mkdir(tmp, 0o777, dir_fd=dir_fd)
    try:
        tmp_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            for file_name, data in sorted(files.items()):
                _write_at(tmp_fd, file_name, data)
            if carry is not None:
                carry(parent / name, parent / tmp)
            os.fsync(tmp_fd)
        finally:
            os.close(tmp_fd)
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            st = None
        if st is None:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        elif not _exchange(dir_fd, tmp, name):  # two renames; recover() undoes a half-done swap
            aside = f".{name}{OLD_TAG}{secrets.token_hex(6)}"
            os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            try:
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                os.rename(aside, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                raise
            tmp = aside
        os.fsync(dir_fd)
    finally:
        with contextlib.suppress(OSError):
            _remove(dir_fd, tmp)  # the new set's temporary after a failure, else the old set


def link_or_copy(src: str, dst: str) -> None:
    """A hard link where possible (no bytes copied), else a copy."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
