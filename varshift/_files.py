"""Writing user files atomically: a failed write never leaves a half-written or empty
file, and an existing file is replaced only once the new one is complete."""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(path, mode: str = "wb", owner: str = "write"):
    """Open a temporary file next to ``path`` for writing; on success replace ``path``
    by it (:func:`os.replace`), on any error delete it and leave ``path`` untouched.

    Parameters
    ----------
    path : str or os.PathLike
    mode : {'wb', 'w'}
    owner : str
        Function name for error messages.

    Yields
    ------
    file object

    Raises
    ------
    OSError
        If the folder does not exist or is not writable, or ``path`` is a folder;
        the message names ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{owner}: cannot write {path!r}: it is a folder")
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                    suffix=".tmp")
    except OSError as err:
        raise type(err)(err.errno, f"{owner}: cannot write {path!r}: {err.strerror}") from err
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, _mode_for(path))
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def _mode_for(path) -> int:
    """Permissions of the existing file, else the default for a new file (0o666 less
    the umask), since the temporary file is created private (0o600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
