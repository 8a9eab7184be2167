"""Atomic outputs: write under a temporary name beside the target, then rename; the user's umask applies.

``tempfile.mkstemp`` creates files with mode 0600 and ``mkdtemp`` folders with 0700, whatever the umask: an output
left that way is unreadable to the user's group. Every output of lowbit therefore goes through these helpers,
which give files ``0o666 & ~umask`` and folders ``0o777 & ~umask`` (what ``open`` and ``mkdir`` give), remove the
temporary on any error, and never leave a partial file under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "current_umask", "temporary_dir"]


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call).

    >>> 0 <= current_umask() <= 0o777
    True
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it is given the umask's mode and renamed to
    ``path`` (replacing it), on error it is removed and ``path`` is untouched.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(d / "a.txt", "w") as f:
    ...     _ = f.write("hi")
    >>> (d / "a.txt").read_text(), oct((d / "a.txt").stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    ('hi', True)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path, "w") as f:
        f.write(text)


def temporary_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder in ``parent`` with the umask's mode (``mkdtemp`` would give 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def write_with(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(f)`` on a binary temporary file and rename it to ``path`` (:func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        writer(f)
