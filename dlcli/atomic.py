"""Atomic file writes: write to a temporary name in the same folder, fsync, rename.

A reader (or a crash) never sees a half-written file: either the old content or
the new one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide and not thread-safe


def _umask() -> int:
    return _UMASK


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem allows it
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    ``suffix`` lets writers that insist on an extension (Keras wants ``.keras``)
    see one. On error the temporary file is removed and ``target`` is untouched.
    """
    from dlcli.errors import OutputError

    target = Path(target)
    if target.is_dir() and not target.is_symlink():
        raise OutputError(f"{target}: is a folder; give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write here: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; files should be as readable as any other
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        if exc.errno in _NO_ROOM:
            raise OutputError(f"{target}: cannot write it: {exc.strerror or exc} (free some space)") from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def copy_file(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    return write_bytes(target, Path(source).read_bytes())


def write_text(target: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def hash_chunks(h, fh, chunk: int = 1 << 20) -> int:
    """Feed the binary stream ``fh`` to the hash ``h`` a chunk at a time (bounded memory);
    returns the bytes read. The one chunked-hash loop of dlcli (files, zip members, data)."""
    n = 0
    for block in iter(lambda: fh.read(chunk), b""):
        h.update(block)
        n += len(block)
    return n


def sha256_stream(fh) -> tuple[str, int]:
    """sha256 hex digest and size of a binary stream."""
    import hashlib

    h = hashlib.sha256()
    n = hash_chunks(h, fh)
    return h.hexdigest(), n

