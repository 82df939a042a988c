"""The child process that reads an untrusted HDF5 file for :mod:`varshift.keras_file`.

libhdf5 can crash or loop forever on a damaged file (one flipped bit in a global heap,
or in a string type's flags), which no check made before a read can rule out. So it
runs here, in a separate interpreter under a memory limit that the parent kills when its
time is up, and answers requests for single objects. This script imports nothing from
varshift (it is run by path, with the parent's ``sys.path``) and follows only what the
requests name:

- paths are resolved one link at a time, and only hard links are followed (soft and
  external links, which could point at other files, are refused);
- datasets are read only when they are not virtual, have no external storage, and their
  dtype and shape are what the request expects (a 1-D float vector of at most ``max``
  values, or an integer scalar);
- string attributes are read only when their HDF5 type is a string and their declared
  count and size are within the limits.

Protocol: the first line on stdin is JSON ``{"file": PATH, "start": S, "length": N,
"memory": BYTES}`` (the HDF5 file is those bytes of PATH) or ``{"bytes": N, "memory":
BYTES}`` followed by the N bytes of the file; then one JSON request per line. Each reply
is a JSON line ``{"nbytes": K, ...}`` followed by K bytes of payload (JSON, or an array's
raw bytes), or ``{"error": TEXT, "nbytes": 0}``.
"""

import io
import json
import os
import stat
import sys

MAX_NAMES = 2**20
MAX_STRING_BYTES = 64 * 2**20


class Refused(Exception):
    """A request that the file cannot answer safely or correctly."""


class Window(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of the file ``f`` from ``start``."""

    def __init__(self, f, start, length):
        super().__init__()
        self._f, self._start, self._length, self._pos = f, start, length, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._length - self._pos))
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(view[:n])
        self._pos += got
        return got


def limit_memory(extra):
    """Let this process allocate at most ``extra`` bytes more (Linux; elsewhere a no-op)."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = used + extra
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass


def open_file(request, stdin):
    """The file object of the HDF5 file the first request describes."""
    if "bytes" in request:
        data = stdin.read(request["bytes"])
        if len(data) != request["bytes"]:
            raise Refused("the parent sent fewer bytes than announced")
        return io.BytesIO(data)
    f = open(request["file"], "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        raise Refused("not a regular file")
    return io.BufferedReader(Window(f, request["start"], request["length"]))


def resolve(h5py, root, parts):
    """The object at ``parts`` below ``root`` through hard links only, or None."""
    node = root
    for i, part in enumerate(parts):
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            kind = ("an external link to a file" if isinstance(link, h5py.ExternalLink)
                    else "a soft link" if isinstance(link, h5py.SoftLink) else "a user-defined link")
            raise Refused(f"{'/'.join(parts[:i + 1])} is {kind}; only hard links are followed")
        node = node[part]
    return node


def names(items, what):
    out = []
    for name in items:
        out.append(name)
        if len(out) > MAX_NAMES:
            raise Refused(f"more than {MAX_NAMES} {what}")
    return out


def node(h5py, obj):
    if obj is None:
        return {"kind": None}
    info = {"attrs": names(obj.attrs, "attributes")}
    if isinstance(obj, h5py.Group):
        return {**info, "kind": "group", "members": names(obj, "group members")}
    if isinstance(obj, h5py.Dataset):
        return {**info, "kind": "dataset", "shape": list(obj.shape), "dtype": obj.dtype.str}
    return {**info, "kind": "other"}


def strings(h5py, obj, name):
    """A string attribute, scalar or 1-D, as a list of str."""
    from h5py import h5t

    if name not in obj.attrs:
        raise Refused(f"no attribute {name!r}")
    aid = obj.attrs.get_id(name)
    shape = aid.shape
    count = 1
    for n in shape:
        count *= n
    if len(shape) > 1 or count > MAX_NAMES:
        raise Refused(f"attribute {name!r} has shape {shape}; expected a string or a list "
                      f"of at most {MAX_NAMES} strings")
    if count == 0:
        return []
    tid = aid.get_type()
    if tid.get_class() != h5t.STRING:
        raise Refused(f"attribute {name!r} is not a string (HDF5 type class "
                      f"{tid.get_class()}, dtype {aid.dtype})")
    if not tid.is_variable_str() and count * tid.get_size() > MAX_STRING_BYTES:
        raise Refused(f"attribute {name!r} declares {count} strings of {tid.get_size()} bytes, "
                      f"over the limit of {MAX_STRING_BYTES} bytes")
    value = obj.attrs[name]
    values = [value] if not shape else list(value)
    out, total = [], 0
    for v in values:
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError as err:
                raise Refused(f"attribute {name!r} is not UTF-8 text ({err})") from None
        if not isinstance(v, str):
            raise Refused(f"attribute {name!r} holds a {type(v).__name__}, not a string")
        total += len(v)
        if total > MAX_STRING_BYTES:
            raise Refused(f"attribute {name!r} holds more than {MAX_STRING_BYTES} characters")
        out.append(v)
    return out


def array(h5py, np, obj, kind, most):
    """A dataset's values: ``kind`` 'vector' (1-D float, 1 to ``most`` values) or 'count'
    (an integer scalar)."""
    if not isinstance(obj, h5py.Dataset):
        raise Refused("not a dataset" if obj is not None else "missing")
    if obj.is_virtual:
        raise Refused("is a virtual dataset (its values live in other files); refused")
    if obj.id.get_create_plist().get_external_count() or obj.external:
        raise Refused("stores its values in an external file; refused")
    dtype, shape = obj.dtype, obj.shape
    if kind == "vector":
        ok = dtype.kind == "f" and dtype.itemsize in (2, 4, 8) and len(shape) == 1 \
            and 1 <= shape[0] <= most
        expected = f"a 1-D float array of 1 to {most} values"
    else:
        ok = dtype.kind in "iu" and dtype.itemsize <= 8 and shape == ()
        expected = "an integer scalar"
    if not ok:
        raise Refused(f"is {'an array' if shape else 'a scalar'} of shape {shape} and dtype "
                      f"{dtype}; expected {expected}")
    out = np.empty(shape, dtype)
    obj.read_direct(out)
    return out


def reply(stdout, header, payload=b""):
    stdout.write(json.dumps({**header, "nbytes": len(payload)}).encode() + b"\n")
    stdout.write(payload)
    stdout.flush()


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    request = json.loads(stdin.readline())
    try:
        import h5py
        import numpy as np
    except ImportError as err:
        reply(stdout, {"error": f"h5py cannot be imported ({err})", "import": True})
        return
    limit_memory(request["memory"])
    try:
        root = h5py.File(open_file(request, stdin), "r")
    except (Refused, OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
        reply(stdout, {"error": f"not a readable HDF5 file ({err})"})
        return
    reply(stdout, {})
    while line := stdin.readline():
        request = json.loads(line)
        try:
            obj = resolve(h5py, root, request["path"])
            if request["op"] == "node":
                reply(stdout, {}, json.dumps(node(h5py, obj)).encode())
            elif request["op"] == "strings":
                reply(stdout, {}, json.dumps(strings(h5py, obj, request["name"])).encode())
            else:
                values = array(h5py, np, obj, request["kind"], request["most"])
                reply(stdout, {"dtype": values.dtype.str, "shape": list(values.shape)},
                      values.tobytes())
        except (Refused, OSError, ValueError, KeyError, RuntimeError, TypeError,
                MemoryError) as err:
            reply(stdout, {"error": str(err) or type(err).__name__})


if __name__ == "__main__":
    main()
