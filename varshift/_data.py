"""Turning what users pass as ``data`` into checked batches of inputs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import _validate
from ._process import iterate_keeping_random_states, random_states_kept

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
    an iterable of batches (arrays, ``(x, y)`` pairs or dicts, e.g. a list or a
    generator); labels are dropped.

    This class reads NumPy data; a framework's subclass (e.g. for PyTorch tensors)
    overrides the methods under "per framework".

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
    input_key : hashable, optional
        For batches that are dicts: the key of the model's input.

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

    def __init__(self, data, batch_size, owner, name="data", input_key=None):
        self.owner, self.name = owner, name
        self.batch_size = _validate.integer(batch_size, "batch_size", owner)
        self.input_key = input_key
        self._array = None
        self._iterable = None
        self.first = None
        if isinstance(data, tuple) and len(data) == 2 and self._is_array(data[0]):
            data = data[0]  # (x, y): keep the inputs
        if self._is_array(data):
            self._array = self._check(data, name)
        elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, Mapping)):
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
        if self._array is not None:
            return True
        with random_states_kept():  # a DataLoader's iterator draws a seed
            return iter(self._iterable) is not self._iterable

    def __iter__(self):
        for batch in self._batches():
            if self.first is None:
                self.first = batch
            yield batch

    def _batches(self):
        if self._array is not None:
            for start, stop in batch_bounds(len(self._array), self.batch_size):
                yield self._to_model(self._array[start:stop])
            return
        seen = 0
        for i, item in enumerate(iterate_keeping_random_states(self._iterable)):
            what = f"{self.name} batch {i}"
            with _validate.reraise_with_context(f"{self.owner}: {what}"):
                batch = self._as_batch(self._input_of(item))
            batch = self._check(batch, what)
            seen += len(batch)
            yield self._to_model(batch)
        if seen == 0:
            hint = "" if self.reiterable else (", e.g. a generator or iterator that was "
                                               "already consumed")
            raise ValueError(f"{self.owner}: {self.name} is empty (the iterable gave no "
                             f"samples{hint})")

    # ------------------------------------------------------------------ per framework
    # A subclass for another framework's tensors overrides these five.
    def _is_array(self, value) -> bool:
        """Whether ``value`` holds all the data at once (to be cut into batches)."""
        return isinstance(value, np.ndarray)

    def _input_of(self, item):
        """The input of one item of an iterable: ``x`` of an ``(x, y)`` pair, the
        ``input_key`` entry of a dict, else the item itself."""
        if isinstance(item, Mapping):
            if self.input_key is None or self.input_key not in item:
                given = ("no input_key was given" if self.input_key is None
                         else f"input_key={self.input_key!r} is not one of them")
                raise ValueError(f"a dict with keys {sorted(map(str, item))} and {given}; "
                                 f"pass input_key= naming the model's input")
            return item[self.input_key]
        if isinstance(item, tuple) and len(item) == 2:
            return item[0]
        return item

    def _as_batch(self, batch):
        return np.asarray(batch)

    def _to_model(self, batch):
        """A checked batch as the model takes it."""
        return batch

    @staticmethod
    def _dtype_kind(x) -> str:
        return x.dtype.kind

    @staticmethod
    def _count_nonfinite(x) -> int:
        return int(np.size(x) - np.count_nonzero(np.isfinite(x)))

    def _check(self, x, what):
        kind = self._dtype_kind(x)
        if kind not in "biuf":
            raise TypeError(f"{self.owner}: {what} must be numeric, got dtype {x.dtype}")
        if x.ndim == 0:
            raise ValueError(f"{self.owner}: {what} must be an array of samples, got a single "
                             f"value {x.item()!r}")
        if len(x) == 0:
            raise ValueError(f"{self.owner}: {what} is empty (shape {tuple(x.shape)})")
        if x.ndim == 1 and kind in "iu":
            raise ValueError(f"{self.owner}: {what} is a 1-D integer array of shape "
                             f"{tuple(x.shape)}, which looks like labels; pass the inputs x or "
                             f"an (x, y) pair")
        if kind == "f":
            bad = self._count_nonfinite(x)
            if bad:
                raise ValueError(f"{self.owner}: {what} has {bad} non-finite values (NaN or inf)")
        return x
