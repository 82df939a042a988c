"""Writing user files atomically: a failed write never leaves a half-written or empty
file, and an existing file is replaced only once the new one is complete."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import contextmanager

__all__ = ["atomic_write", "check_writable"]

#: Characters that :func:`tempfile.mkstemp` adds to the prefix and suffix of a
#: temporary name: the random part and the suffix ``.tmp``.
_TEMP_EXTRA = 8 + len(".tmp")


def check_writable(path, owner: str = "write") -> str:
    """Check, before any work, that a file can be written at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
    owner : str
        Function or option name for error messages.

    Returns
    -------
    str
        The file that will be written: ``path`` made absolute, or, where ``path`` is a
        symbolic link, the file it points to (the link stays a link).

    Raises
    ------
    OSError
        ``FileNotFoundError`` for an empty path, ``IsADirectoryError`` if ``path`` is a
        folder, ``FileExistsError`` if it is something other than a regular file (a
        device such as ``/dev/null``, a FIFO, a socket: a file written atomically
        replaces what is there, so it would be replaced by a regular file),
        ``FileNotFoundError`` or ``NotADirectoryError`` if its folder does not exist or
        is not a folder, ``PermissionError`` if the folder is not writable, and
        ``OSError`` (errno ENAMETOOLONG) for a file name longer than the folder allows;
        the message names ``owner`` and ``path``.
    """
    path = os.fspath(path)

    def fail(error, code, why):
        raise error(code, f"{owner}: cannot write {path!r}: {why}")

    if not path:
        fail(FileNotFoundError, errno.ENOENT, "no file name given")
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    shown = os.path.dirname(path) or "."
    if os.path.isdir(target):
        fail(IsADirectoryError, errno.EISDIR, "it is a folder; give a file name")
    if os.path.exists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        fail(FileExistsError, errno.EEXIST, "it exists and is not a regular file (a device, "
                                            "a FIFO or a socket), which writing would replace")
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            fail(NotADirectoryError, errno.ENOTDIR, f"{shown!r} is not a folder")
        fail(FileNotFoundError, errno.ENOENT, f"folder {shown!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(PermissionError, errno.EACCES, f"folder {shown!r} is not writable")
    size, limit = len(os.fsencode(os.path.basename(target))), _name_max(folder)
    if size > limit:
        fail(OSError, errno.ENAMETOOLONG, f"the file name is {size} bytes long, the folder "
                                          f"allows {limit}")
    return target


@contextmanager
def atomic_write(path, mode: str = "wb", owner: str = "write"):
    """Open a temporary file next to ``path`` for writing; on success replace ``path``
    by it (:func:`os.replace`), on any error delete it and leave ``path`` untouched.

    Parameters
    ----------
    path : str or os.PathLike
    mode : {'wb', 'w'}
    owner : str
        Function or option name for error messages.

    Yields
    ------
    file object

    Raises
    ------
    OSError
        As :func:`check_writable`, or if the temporary file cannot be created; the
        message names ``path``.

    Notes
    -----
    The temporary file is hidden (``.NAME.XXXXXXXX.tmp``), with ``NAME`` shortened so
    that the whole name fits the folder's limit (``PC_NAME_MAX``, else 255 bytes). It
    is deleted on any exception, ``KeyboardInterrupt`` and ``SystemExit`` included;
    the command line turns SIGTERM and SIGHUP into such an exception while it runs.
    Only SIGKILL or a crash of the interpreter leaves it behind.
    """
    path = os.fspath(path)
    target = check_writable(path, owner)
    folder = os.path.dirname(target)
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(target, folder),
                                    suffix=".tmp")
    except OSError as err:
        raise type(err)(err.errno, f"{owner}: cannot write {path!r}: {err.strerror}") from err
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, _mode_for(target))
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def _name_max(folder) -> int:
    """Longest file name in bytes that ``folder`` allows (255 where it cannot be asked)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf (Windows)
        return 255


def _temp_prefix(path, folder) -> str:
    """``'.NAME.'`` for the temporary file of ``path``, NAME cut (by whole characters)
    so that the temporary name fits the folder's limit."""
    name, room = os.path.basename(path), _name_max(folder) - _TEMP_EXTRA - len("..")
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}."


def _mode_for(path) -> int:
    """Permissions of the existing file, else the default for a new file (0o666 less
    the umask), since the temporary file is created private (0o600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
