"""Argument checks shared by the layer constructors: clear errors at construction."""

from __future__ import annotations

import numbers

from ..kernels import Window

__all__ = ["positive_int", "int_tuple", "fraction", "spatial_window"]


def positive_int(value, name: str, owner: str) -> int:
    """``value`` as an int >= 1, else ValueError naming ``owner`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def int_tuple(value, n: int, name: str, owner: str, minimum: int = 1) -> tuple[int, ...]:
    """An int or a length-``n`` sequence of ints >= ``minimum``, as an n-tuple."""
    items = (value,) * n if isinstance(value, numbers.Integral) else tuple(value)
    ok = len(items) == n and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum
        for v in items
    )
    if not ok:
        raise ValueError(
            f"{owner}: {name} must be an int >= {minimum} or {n} of them, got {value!r}"
        )
    return tuple(int(v) for v in items)


def fraction(value, name: str, owner: str, upper_open: bool = True) -> float:
    """A float in [0, 1) (or [0, 1] with ``upper_open=False``)."""
    top_ok = value < 1 if upper_open else value <= 1
    if not isinstance(value, numbers.Real) or not (0 <= value and top_ok):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{owner}: {name} must be in {interval}, got {value!r}")
    return float(value)


def spatial_window(dims: int, kernel, stride, padding, dilation) -> Window:
    """The 2-D :class:`Window` of a 1-D (H = 1) or 2-D layer.

    ``padding`` is an n-tuple of symmetric pads or ``'same'`` (stride 1), which pads
    ``dilation * (kernel - 1)`` in total, the odd one after, as PyTorch does.
    """
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        pads = tuple((t // 2, t - t // 2) for t in totals)
    else:
        pads = tuple((p, p) for p in padding)
    if dims == 1:
        return Window((1, *kernel), (1, *stride), ((0, 0), *pads), (1, *dilation))
    return Window(tuple(kernel), tuple(stride), pads, tuple(dilation))
