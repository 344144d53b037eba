"""Safe file writing: everything goes to a temporary file first and is renamed into place.

A crash or a cancel in the middle of a save must never leave a half-written file where a
good one used to be; ``os.replace`` is atomic on the same file system.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def current_umask() -> int:
    """The process's umask (it can only be read by setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_created(path: str | os.PathLike) -> None:
    """Give a file made by ``tempfile`` (owner-only, 0600) the permissions a plain ``open``
    would have given it under the user's umask (usually 0644), so that group members and
    other tools can read the results as they read any other file."""
    os.chmod(path, 0o666 & ~current_umask())


def as_created_folder(path: str | os.PathLike) -> None:
    """:func:`as_created` for a folder made by ``tempfile.mkdtemp`` (0700)."""
    os.chmod(path, 0o777 & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file keeps the target's suffix, so writers that choose a format from the
    extension (PyAV, numpy, tifffile) still do the right thing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f"{target.suffix}.tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        as_created(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
