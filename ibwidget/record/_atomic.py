"""Atomic file writes: a temporary file beside the target, flushed to disk, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None, permissions: int | None = None) -> Iterator:
    """Yield a file to write; on success it replaces ``path``, on any failure ``path`` is untouched.

    A failure mid-write never leaves a half-written file in place of a good one, and no temporary file behind; a
    hard crash (power loss, ``kill -9``) can leave only the hidden temporary file ``.NAME.*.tmp`` beside ``path``.
    The file gets ``permissions``, else those of the file it replaces, else the usual 0666 less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if permissions is None:
        try:
            permissions = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            permissions = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding, **({"newline": "\n"} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    with _UMASK_LOCK:  # reading the umask means setting it: never from two threads at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
