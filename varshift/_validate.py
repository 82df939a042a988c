"""Argument checks shared by the whole package.

Every check raises where the value enters, before anything changes, with a message
``"{owner}: {name} must be {expected}, got {actual}"``: a :class:`TypeError` for a
value of the wrong type (a string for a number, a Generator for a seed), a
:class:`ValueError` for a value of the right type but out of range.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from contextlib import contextmanager

import numpy as np

__all__ = ["NonFiniteError", "shown", "integer", "real", "fraction", "int_tuple", "seed",
           "flag", "choice", "path", "model", "running_stats", "damaged_stats",
           "reraise_with_context", "user_stacklevel"]


class NonFiniteError(FloatingPointError, ValueError):
    """Numbers became NaN or infinite: a diverged training step, outputs or running
    statistics out of the floating-point range.

    A subclass of both :class:`FloatingPointError` (what varshift raised before) and
    :class:`ValueError`, so either ``except`` clause catches it.
    """


def shown(value) -> str:
    """``value`` for an error message: a short repr and its type."""
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _fail(error, owner, name, expected, value):
    raise error(f"{owner}: {name} must be {expected}, got {shown(value)}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def integer(value, name: str, owner: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (1: "a positive integer")."""
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if not _is_int(value):
        _fail(TypeError, owner, name, expected, value)
    if value < minimum:
        _fail(ValueError, owner, name, expected, value)
    return int(value)


def real(value, name: str, owner: str, low=None, high=None, *, low_open=False,
         high_open=False) -> float:
    """``value`` as a finite float, optionally within bounds.

    Parameters
    ----------
    low, high : float, optional
        Bounds, closed unless ``low_open`` / ``high_open``.
    """
    if low is not None and high is not None:
        expected = (f"a float in {'(' if low_open else '['}{low:g}, "
                    f"{high:g}{')' if high_open else ']'}")
    elif low == 0 and low_open:
        expected = "a positive float"
    elif low is not None:
        expected = f"a float {'>' if low_open else '>='} {low:g}"
    else:
        expected = "a finite float"
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        _fail(TypeError, owner, name, expected, value)
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        _fail(ValueError, owner, name, expected, value)
    return float(value)


def fraction(value, name: str, owner: str, upper_open: bool = True) -> float:
    """A float in [0, 1) (or [0, 1] with ``upper_open=False``)."""
    return real(value, name, owner, 0, 1, high_open=upper_open)


def int_tuple(value, n: int, name: str, owner: str, minimum: int = 1) -> tuple[int, ...]:
    """An int or a length-``n`` sequence of ints >= ``minimum``, as an n-tuple."""
    expected = f"an int >= {minimum} or {n} of them"
    if _is_int(value):
        items = (value,) * n
    elif isinstance(value, (tuple, list)):
        items = tuple(value)
    else:
        _fail(TypeError, owner, name, expected, value)
    if len(items) != n or not all(_is_int(v) for v in items):
        _fail(TypeError if len(items) == n else ValueError, owner, name, expected, value)
    if not all(v >= minimum for v in items):
        _fail(ValueError, owner, name, expected, value)
    return tuple(int(v) for v in items)


def seed(value, name: str, owner: str):
    """None or a non-negative int (as int): what :func:`numpy.random.default_rng`
    takes and what a saved model can store."""
    if value is None:
        return None
    expected = "None or an integer >= 0"
    if not _is_int(value):
        _fail(TypeError, owner, name, expected, value)
    if value < 0:
        _fail(ValueError, owner, name, expected, value)
    return int(value)


def flag(value, name: str, owner: str) -> bool:
    """A bool (also NumPy's, and the ints 0 and 1)."""
    if isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1)):
        return bool(value)
    _fail(TypeError, owner, name, "True or False", value)


def choice(value, name: str, owner: str, options):
    """``value`` if it is one of ``options``, else ValueError listing them."""
    if not any(value is option or (isinstance(value, str) and value == option)
               for option in options):
        names = [repr(o) for o in options]
        expected = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        _fail(ValueError, owner, name, expected, value)
    return value


def path(value, name: str, owner: str):
    """``value`` if it is a file path (str or os.PathLike), else TypeError."""
    if not isinstance(value, (str, os.PathLike)):
        _fail(TypeError, owner, name, "a file path (str or os.PathLike)", value)
    return value


def model(value, owner: str, name: str = "model"):
    """``value`` if it is a varshift Layer (a model), else TypeError."""
    from .nn.layer import Layer

    if not isinstance(value, Layer):
        _fail(TypeError, owner, name, "a varshift model (a varshift.nn Layer, e.g. "
              "nn.Sequential)", value)
    return value


def running_stats(stats: dict, dtype, where, limit=None, exempt=None) -> dict:
    """``stats`` (name -> array of shape (C,)) as float64 arrays, if every value is a
    number that fits ``dtype``, i.e. lies within +-``limit`` (default: the largest
    value of the NumPy dtype ``dtype``); else :class:`NonFiniteError` naming
    ``where`` (a str, or a callable returning it, called only then), the statistic
    and the channel. Channels where the boolean mask ``exempt`` is True are not
    checked."""
    limit = float(np.finfo(dtype).max) if limit is None else limit
    stats = {key: np.asarray(value, np.float64) for key, value in stats.items()}
    for key, value in stats.items():
        bad = ~(np.abs(value) <= limit)  # also NaN
        if exempt is not None:
            bad &= ~exempt
        if bad.any():
            c = int(np.argmax(bad))
            raise NonFiniteError(
                f"{where() if callable(where) else where}: {key} would become {value[c]:.4g} in channel {c}, beyond the "
                f"{dtype} range (inputs near the float limit, or weights that diverged); the "
                f"running statistics were left unchanged")
    return stats


def damaged_stats(mean, var) -> dict:
    """What is wrong with running statistics that no BatchNorm update can produce: a
    NaN or infinite mean or variance, a negative variance (a damaged or hand-edited
    file, a buffer written by hand).

    Parameters
    ----------
    mean, var : array_like of shape (C,)

    Returns
    -------
    dict of (str, str) to ndarray
        ``('running_mean', 'NaN')``, ``('running_var', 'negative')``, ... (statistic,
        problem; the problems are 'NaN', 'infinite' and 'negative') -> the indices of the
        channels concerned; only the problems found, so empty for sound statistics.
    """
    problems = {}
    for name, value in (("running_mean", mean), ("running_var", var)):
        value = np.asarray(value, np.float64)
        masks = {"NaN": np.isnan(value), "infinite": np.isinf(value)}
        if name == "running_var":
            masks["negative"] = value < 0
        problems.update({(name, what): np.flatnonzero(mask)
                         for what, mask in masks.items() if mask.any()})
    return problems


@contextmanager
def reraise_with_context(prefix: str):
    """Prefix the message of a plain ValueError, TypeError or RuntimeError raised
    inside with ``prefix`` (e.g. ``'measure: data batch 3 of shape (64, 5)'``); other
    errors (subclasses too) pass unchanged."""
    try:
        yield
    except (ValueError, TypeError, RuntimeError) as err:
        if type(err) not in (ValueError, TypeError, RuntimeError):
            raise
        raise type(err)(f"{prefix}: {err}") from err


def user_stacklevel() -> int:
    """The ``stacklevel`` for :func:`warnings.warn`, called in the function that calls
    this, that attributes the warning to the first caller outside varshift (the
    user's line), however deep inside varshift the warning is raised."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == \
            __name__.partition(".")[0]:
        frame, level = frame.f_back, level + 1
    return level
