"""Scratch memory that the kernels reuse from call to call.

A large array that NumPy allocates is new memory from the operating system, and the
first write to each of its pages faults. On a 2-core KVM guest (an Intel Xeon, issue
25) those faults cost more than the kernels' work when two Numba threads take them at
once: the 1-D DenseNet's training step was 30.8 ms at two threads with fresh buffers and
23.8 ms with memory the allocator kept. Temporaries that never leave a layer's call, such
as a convolution's patches, are therefore written into a buffer kept per thread and
reused, whose pages stay mapped. Each use has a slot of its own (a name), so that a
kernel's scratch never overwrites its caller's.
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["MAX_BYTES", "scratch"]

MAX_BYTES = 1 << 24
"""The largest scratch buffer kept per thread and slot (16 MiB, four times a convolution's
``chunk_bytes``); a larger request gets a new array that is not kept."""

_KEPT = threading.local()


def scratch(slot, shape, dtype):
    """An uninitialised array of ``shape`` in this thread's scratch buffer ``slot``.

    The array is valid until the next call of :func:`scratch` with the same slot on the
    same thread: the caller must not keep it, or return it to its own caller.

    Parameters
    ----------
    slot : str
        Whose scratch: ``"patches"`` (a convolution's), ``"padded"`` (a padded copy
        inside a window kernel).
    shape : tuple of int
    dtype : numpy dtype

    Returns
    -------
    ndarray of ``shape`` and ``dtype``, C-contiguous
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_BYTES:
        return np.empty(shape, dtype)
    buffers = _KEPT.__dict__.setdefault("buffers", {})
    kept = buffers.get(slot)
    if kept is None or kept.size < nbytes:
        kept = buffers[slot] = np.empty(max(nbytes, 1 << 20), np.uint8)
    return kept[:nbytes].view(dtype).reshape(shape)
