"""Bounded reading of untrusted files: regular files only, zip members in chunks, and
``.npy``/``.npz`` arrays whose declared sizes are checked against what the file holds
before anything is allocated.

Every problem is a :class:`ModelFileError` (a ValueError) naming the file and the entry;
only the operating system's errors on opening (no such file, no permission) stay
OSErrors.

The caps (module constants) bound what a small file can make varshift allocate:

- ``MAX_TEXT_BYTES`` (64 MiB): a JSON text (a Keras ``config.json`` or
  ``metadata.json``, a varshift model's metadata, a report), after decompression.
  Configs of the largest Keras applications are a few MB.
- ``MAX_ARRAY_VALUES`` (2**31): values in one array. The largest single weight
  matrices of common models hold well under 2**28 values.
- ``MAX_INFLATED_BYTES`` (1 GiB): bytes a compressed (deflated) zip member may inflate
  to. Stored members, as ``numpy.savez``, ``varshift.save`` and Keras write them, are
  bounded by the file's own size instead: the bytes an array declares must be in the
  file.
- ``MAX_HEADER_BYTES`` (64 KiB): a ``.npy`` header (NumPy refuses headers over 10,000
  characters by default).

Only the zip methods that NumPy and Keras write are read: stored and deflated.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["ModelFileError", "MAX_TEXT_BYTES", "MAX_ARRAY_VALUES", "MAX_INFLATED_BYTES",
           "MAX_HEADER_BYTES", "open_regular", "zip_archive", "member_info", "read_member",
           "member_window", "read_text", "read_arrays"]

MAX_TEXT_BYTES = 64 * 2**20
MAX_ARRAY_VALUES = 2**31
MAX_INFLATED_BYTES = 2**30
MAX_HEADER_BYTES = 2**16
#: Bytes read at a time from a zip member or a file.
CHUNK = 2**20

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
#: What the zipfile module raises on damaged archives and members.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
              ValueError, struct.error, NotImplementedError, RuntimeError, IndexError,
              KeyError, OverflowError)


class ModelFileError(ValueError):
    """A model or data file that cannot be read: damaged, truncated, foreign, or beyond
    the reading limits. The message names the file and the entry."""


def open_regular(path):
    """Open ``path`` for binary reading if, after following links, it is a regular file.

    FIFOs, devices, sockets and directories are refused without reading from them (a
    FIFO is opened non-blocking, so that a missing writer cannot hang the call).

    Returns
    -------
    file object
        Open in binary mode; the caller closes it.

    Raises
    ------
    FileNotFoundError, PermissionError, OSError
        If the file cannot be opened.
    ModelFileError
        If it is not a regular file.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a file")
            raise ModelFileError(f"{path!r} is {kind}, not a regular file; varshift reads "
                                 f"regular files only")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _size(f) -> int:
    return os.fstat(f.fileno()).st_size


def zip_archive(f, path) -> zipfile.ZipFile:
    """The zip archive in the open file ``f`` (of ``path``), or ModelFileError."""
    try:
        return zipfile.ZipFile(f)
    except ZIP_ERRORS as err:
        raise ModelFileError(f"{path!r}: damaged zip archive ({_reason(err)})") from err


def member_info(zf, name, path, archive_size) -> zipfile.ZipInfo:
    """The entry ``name`` of ``zf``, checked: not encrypted, stored or deflated, and its
    compressed bytes inside the archive (a stored member's declared size is its size in
    the archive)."""
    info = zf.getinfo(name)
    where = f"{path!r}: entry {name!r}"
    if info.flag_bits & 0x1:
        raise ModelFileError(f"{where} is encrypted")
    if info.compress_type not in _ZIP_METHODS:
        raise ModelFileError(f"{where} uses zip compression method {info.compress_type}; "
                             f"varshift reads stored and deflated entries only")
    if info.header_offset + info.compress_size > archive_size:
        raise ModelFileError(f"{where} declares {info.compress_size} bytes at offset "
                             f"{info.header_offset}, beyond the archive's {archive_size} "
                             f"bytes (truncated or damaged)")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ModelFileError(f"{where} is stored but declares {info.file_size} bytes "
                             f"uncompressed and {info.compress_size} in the archive")
    return info


def read_member(zf, info, path, limit, what="entry") -> bytes:
    """The bytes of the zip member ``info``, read in chunks; ModelFileError if there are
    more than ``limit`` of them or the member is damaged."""
    chunks, total = [], 0
    try:
        with zf.open(info) as member:
            while chunk := member.read(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise ModelFileError(f"{path!r}: {what} {info.filename!r} holds more than "
                                         f"{limit} bytes (the limit); refusing to read it")
                chunks.append(chunk)
    except ModelFileError:
        raise
    except (*ZIP_ERRORS, MemoryError) as err:
        raise ModelFileError(f"{path!r}: {what} {info.filename!r} is damaged "
                             f"({_reason(err)})") from err
    return b"".join(chunks)


def member_window(f, info, path):
    """(offset, length) of the stored member ``info``'s bytes in the archive file ``f``,
    read from its local header."""
    f.seek(info.header_offset)
    header = f.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise ModelFileError(f"{path!r}: entry {info.filename!r} has no valid local header "
                             f"at offset {info.header_offset}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    if start + info.compress_size > _size(f):
        raise ModelFileError(f"{path!r}: entry {info.filename!r} runs past the end of the "
                             f"archive (truncated)")
    return start, info.compress_size


def read_text(path, owner) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``MAX_TEXT_BYTES``."""
    with open_regular(path) as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise ModelFileError(f"{owner}: {os.fspath(path)!r} is larger than {MAX_TEXT_BYTES} "
                             f"bytes (the limit for a JSON text)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelFileError(f"{owner}: {os.fspath(path)!r} is not UTF-8 text ({err})") from err


def read_arrays(path, keys=None):
    """Read an ``.npy`` file (an ndarray) or an ``.npz`` archive (a dict of name ->
    ndarray) without pickles, checking every declared size first.

    Parameters
    ----------
    path : str or os.PathLike
    keys : collection of str, optional
        For an archive, read only the entries of these names (those present); the
        others are not read. Default: every entry.

    Raises
    ------
    FileNotFoundError, PermissionError, OSError
        If the file cannot be opened.
    ModelFileError
        If it is not a regular file, not an .npy/.npz file, damaged, truncated, or an
        array is beyond the caps; the message names the file and the entry.
    """
    path = os.fspath(path)
    with open_regular(path) as f:
        head = f.read(len(_NPY_MAGIC))
        f.seek(0)
        if head == _NPY_MAGIC:
            return _read_npy(f, _size(f), f"{path!r}")
        if not head.startswith(b"PK"):
            raise ModelFileError(f"{path!r} is neither an .npz archive nor an .npy file "
                                 f"(it starts with {head!r})")
        with zip_archive(f, path) as zf:
            arrays = {}
            size = _size(f)
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if keys is not None and key not in keys:
                    continue
                info = member_info(zf, info.filename, path, size)
                where = f"{path!r}: entry {key!r}"
                bound = (info.file_size if info.compress_type == zipfile.ZIP_STORED
                         else min(info.file_size, MAX_INFLATED_BYTES))
                try:
                    with zf.open(info) as member:
                        arrays[key] = _read_npy(member, bound, where)
                except ModelFileError:
                    raise
                except ZIP_ERRORS as err:
                    raise ModelFileError(f"{where} is damaged ({_reason(err)})") from err
            return arrays


def _read_npy(f, available, where) -> np.ndarray:
    """The array of the ``.npy`` stream ``f`` holding at most ``available`` bytes: the
    header's shape and dtype are checked against that and the caps before any
    allocation, the data read in chunks; trailing bytes are refused."""
    shape, fortran, dtype, offset = _npy_header(f, where)
    if dtype.hasobject:
        raise ModelFileError(f"{where} holds Python objects (dtype {dtype}); varshift does "
                             f"not unpickle files")
    count = math.prod(shape)
    if count > MAX_ARRAY_VALUES:
        raise ModelFileError(f"{where} declares an array of shape {shape}: {count} values, "
                             f"over the limit of {MAX_ARRAY_VALUES}")
    nbytes = count * dtype.itemsize
    if offset + nbytes > available:
        raise ModelFileError(f"{where} declares an array of shape {shape} and dtype {dtype} "
                             f"({nbytes} bytes) but holds at most {max(0, available - offset)} "
                             f"(truncated or damaged)")
    try:
        flat = np.empty(count, dtype)
    except (MemoryError, ValueError) as err:
        raise ModelFileError(f"{where}: no memory for its array of shape {shape} "
                             f"({nbytes} bytes)") from err
    view, done = memoryview(flat.view(np.uint8) if nbytes else b"").cast("B"), 0
    while done < nbytes:
        got = f.readinto(view[done:done + CHUNK])
        if not got:
            raise ModelFileError(f"{where} is truncated: its array needs {nbytes} bytes, the "
                                 f"entry ends after {done}")
        done += got
    if f.read(1):
        raise ModelFileError(f"{where} has bytes after its array (damaged)")
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _npy_header(f, where):
    """(shape, fortran_order, dtype, bytes before the data) of a ``.npy`` stream."""
    start = f.read(len(_NPY_MAGIC) + 2)
    if start[:len(_NPY_MAGIC)] != _NPY_MAGIC or len(start) < len(_NPY_MAGIC) + 2:
        raise ModelFileError(f"{where} is not a .npy array (it starts with {start!r})")
    version = tuple(start[len(_NPY_MAGIC):])
    if version not in ((1, 0), (2, 0)):
        raise ModelFileError(f"{where} has .npy format version {version}; varshift reads "
                             f"1.0 and 2.0")
    size_format = "<H" if version == (1, 0) else "<I"
    raw = f.read(struct.calcsize(size_format))
    length = struct.unpack(size_format, raw)[0] if len(raw) == struct.calcsize(size_format) else None
    if length is None or length > MAX_HEADER_BYTES:
        raise ModelFileError(f"{where} has a damaged .npy header (length "
                             f"{'missing' if length is None else length})")
    header = f.read(length)
    if len(header) < length:
        raise ModelFileError(f"{where} is truncated inside its .npy header")
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    try:
        shape, fortran, dtype = reader(io.BytesIO(raw + header), max_header_size=MAX_HEADER_BYTES)
    except (ValueError, TypeError, SyntaxError, OverflowError, MemoryError,
            RecursionError) as err:
        raise ModelFileError(f"{where} has a damaged .npy header ({_reason(err)})") from err
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ModelFileError(f"{where} has a damaged .npy header (shape {shape})")
    return shape, fortran, dtype, len(start) + len(raw) + length


def _reason(err) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
