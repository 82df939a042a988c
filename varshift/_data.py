"""Turning what users pass as ``data`` into checked batches of inputs."""

from __future__ import annotations

import numpy as np

from . import _validate

__all__ = ["Batches", "batch_bounds"]


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches of ``n`` samples; a last batch of one
    sample is folded into the one before, since BatchNorm cannot take a batch
    statistic of one value in train mode."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


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
    name : str, default 'data'
        Argument name for error messages.

    Attributes
    ----------
    first : ndarray or None
        The first batch yielded so far (kept so that one-shot iterables need to be
        read only once).

    Raises
    ------
    ValueError, TypeError
        Empty data, non-numeric or non-finite values, label-like input, bad
        ``batch_size``.
    """

    def __init__(self, data, batch_size, owner, name="data"):
        self.owner, self.name = owner, name
        self.batch_size = _validate.integer(batch_size, "batch_size", owner)
        self._array = None
        self._iterable = None
        self.first = None
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
            data = data[0]  # (x, y): keep the inputs
        if isinstance(data, np.ndarray):
            self._array = self._check(data, name)
        elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
            self._iterable = data
        else:
            raise TypeError(f"{owner}: {name} must be an array, an (x, y) pair or an iterable "
                            f"of batches, got {_validate.shown(data)}")

    @property
    def num_samples(self):
        """Number of samples for array data, else None (unknown until iterated)."""
        return None if self._array is None else len(self._array)

    @property
    def num_batches(self):
        """Number of batches for array data, else None."""
        return None if self._array is None else len(batch_bounds(len(self._array), self.batch_size))

    @property
    def reiterable(self) -> bool:
        return self._array is not None or iter(self._iterable) is not self._iterable

    def __iter__(self):
        for batch in self._batches():
            if self.first is None:
                self.first = batch
            yield batch

    def _batches(self):
        if self._array is not None:
            for start, stop in batch_bounds(len(self._array), self.batch_size):
                yield self._array[start:stop]
            return
        seen = 0
        for i, batch in enumerate(self._iterable):
            if isinstance(batch, tuple) and len(batch) == 2:
                batch = batch[0]
            with _validate.reraise_with_context(f"{self.owner}: {self.name} batch {i}"):
                batch = np.asarray(batch)
            batch = self._check(batch, f"{self.name} batch {i}")
            seen += len(batch)
            yield batch
        if seen == 0:
            hint = "" if self.reiterable else (", e.g. a generator or iterator that was "
                                               "already consumed")
            raise ValueError(f"{self.owner}: {self.name} is empty (the iterable gave no "
                             f"samples{hint})")

    def _check(self, x, what):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{self.owner}: {what} must be numeric, got dtype {x.dtype}")
        if x.ndim == 0:
            raise ValueError(f"{self.owner}: {what} must be an array of samples, got a single "
                             f"value {x.item()!r}")
        if len(x) == 0:
            raise ValueError(f"{self.owner}: {what} is empty (shape {x.shape})")
        if x.ndim == 1 and x.dtype.kind in "iu":
            raise ValueError(f"{self.owner}: {what} is a 1-D integer array of shape {x.shape}, "
                             f"which looks like labels; pass the inputs x or an (x, y) pair")
        if x.dtype.kind == "f":
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            if bad:
                raise ValueError(f"{self.owner}: {what} has {bad} non-finite values (NaN or inf)")
        return x

