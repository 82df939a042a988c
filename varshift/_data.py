"""Turning what users pass as ``data`` into checked batches of inputs."""

from __future__ import annotations

import numpy as np

__all__ = ["Batches"]


class Batches:
    """Re-iterable batches of inputs from an array, an ``(x, y)`` pair of arrays or
    an iterable of batches (arrays or ``(x, y)`` pairs, e.g. a list or a generator);
    labels are dropped.

    Parameters
    ----------
    data : array_like, tuple or iterable
    batch_size : int
        Used for arrays only; a last batch of one sample is folded into the one
        before, since BatchNorm cannot take a batch statistic of one value.
    owner : str
        Function name for error messages.

    Raises
    ------
    ValueError, TypeError
        Empty data, non-numeric or non-finite values, label-like input, bad
        ``batch_size``.
    """

    def __init__(self, data, batch_size, owner):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"{owner}: batch_size must be a positive integer, got {batch_size!r}")
        self.owner = owner
        self.batch_size = int(batch_size)
        self._array = None
        self._iterable = None
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
            data = data[0]  # (x, y): keep the inputs
        if isinstance(data, np.ndarray):
            self._array = self._check(data, "data")
        elif hasattr(data, "__iter__"):
            self._iterable = data
        else:
            raise TypeError(f"{owner}: data must be an array, an (x, y) pair or an iterable "
                            f"of batches, got {type(data).__name__}")

    @property
    def num_samples(self):
        """Number of samples for array data, else None (unknown until iterated)."""
        return None if self._array is None else len(self._array)

    @property
    def num_batches(self):
        """Number of batches for array data, else None."""
        return None if self._array is None else len(self._starts())

    def _starts(self):
        starts = list(range(0, len(self._array), self.batch_size))
        if len(starts) > 1 and len(self._array) - starts[-1] == 1:
            starts.pop()  # fold a final single sample into the previous batch
        return starts

    @property
    def reiterable(self) -> bool:
        return self._array is not None or iter(self._iterable) is not self._iterable

    def __iter__(self):
        if self._array is not None:
            starts = self._starts()
            for i, start in enumerate(starts):
                stop = starts[i + 1] if i + 1 < len(starts) else len(self._array)
                yield self._array[start:stop]
            return
        seen = 0
        for i, batch in enumerate(self._iterable):
            if isinstance(batch, tuple) and len(batch) == 2:
                batch = batch[0]
            batch = self._check(np.asarray(batch), f"batch {i}")
            seen += len(batch)
            yield batch
        if seen == 0:
            raise ValueError(f"{self.owner}: data is empty (the iterable gave no samples)")

    def _check(self, x, what):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{self.owner}: {what} must be numeric, got dtype {x.dtype}")
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(f"{self.owner}: {what} is empty (shape {x.shape})")
        if x.ndim == 1 and x.dtype.kind in "iu":
            raise ValueError(f"{self.owner}: {what} is a 1-D integer array of shape {x.shape}, "
                             f"which looks like labels; pass the inputs x or an (x, y) pair")
        if x.dtype.kind == "f":
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            if bad:
                raise ValueError(f"{self.owner}: {what} has {bad} non-finite values (NaN or inf)")
        return x

