"""Leaving the user's process as varshift found it.

Every public function that runs a model or reads a file is decorated with
:func:`public`. Around the call it

- saves and puts back the thread counts: every OpenMP and BLAS runtime loaded
  (:mod:`varshift._runtimes`), Numba's (where its threading layer has started) and
  torch's;
- refuses a second call on a model that a call in another thread is using
  (:class:`ModelInUseError`): varshift switches modes and running statistics of the
  model while it measures, so two calls at once would see each other's changes.

Nested public calls (``diagnose`` calling ``measure``) do the work once, in the
outermost call.

The user's data are iterated through :func:`iterate_keeping_random_states`, which puts
back the global random states (Python's :mod:`random`, NumPy's legacy global generator,
torch's) after creating the iterator and after every item: a ``DataLoader`` draws its
base seed from torch's generator, and a user's dataset may draw augmentations from any
of them. Only those moments are undone, so draws that other threads make meanwhile
are not repeated. (The torch and Keras backends seed torch's generator for the model's
own noise while they run it, and put it back afterwards.)
"""

from __future__ import annotations

import functools
import inspect
import random
import sys
import threading
from contextlib import ExitStack, contextmanager

import numpy as np

from . import _runtimes, _validate

__all__ = ["public", "ModelInUseError", "iterate_keeping_random_states", "random_states_kept"]


class ModelInUseError(RuntimeError):
    """A model is already being used by a varshift call in another thread."""


_USERS = {}  # id of a model or of one of its layers -> (function, thread id)
_USERS_LOCK = threading.Lock()
_DEPTH = threading.local()


def public(model_argument: str | None = "model"):
    """Decorate a public function so that it leaves the process as it found it.

    Parameters
    ----------
    model_argument : str or None, default 'model'
        The name of the argument that holds the model the call uses exclusively;
        None for functions without one.

    Returns
    -------
    callable
        A decorator; the decorated function has the same signature and result.
    """

    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run(*args, **kwargs):
            depth = getattr(_DEPTH, "value", 0)
            with ExitStack() as stack:
                if model_argument is not None:
                    bound = signature.bind_partial(*args, **kwargs)
                    if model_argument in bound.arguments:
                        stack.enter_context(_exclusive(bound.arguments[model_argument],
                                                       func.__name__))
                if depth == 0:
                    stack.enter_context(_thread_counts_kept())
                _DEPTH.value = depth + 1
                try:
                    return func(*args, **kwargs)
                finally:
                    _DEPTH.value = depth

        return run

    return decorate


# ---------------------------------------------------------------------- one call per model
def _parts(model) -> list:
    """The model and its layers (modules), by which two calls may share state."""
    walk = getattr(model, "walk", None)
    if callable(walk) and type(model).__module__.startswith("varshift."):
        return [layer for _, layer in walk()]
    modules = getattr(model, "modules", None)
    if callable(modules) and "torch" in sys.modules \
            and isinstance(model, sys.modules["torch"].nn.Module):
        return list(modules())
    flatten = getattr(model, "_flatten_layers", None)
    if callable(flatten):
        try:
            return list(flatten(include_self=True, recursive=True))
        except TypeError:
            pass
    return [model]


@contextmanager
def _exclusive(model, owner):
    """Mark ``model`` (and its layers) as used by ``owner`` in this thread while inside;
    :class:`ModelInUseError` if a call in another thread uses any of them."""
    me = threading.get_ident()
    keys = []
    with _USERS_LOCK:
        parts = {id(p): p for p in _parts(model)}
        for key in parts:
            user = _USERS.get(key)
            if user is not None and user[1] != me:
                raise ModelInUseError(
                    f"{owner}: the model {_validate.shown(model)} is in use by "
                    f"varshift.{user[0]} in another thread; varshift switches a model's modes "
                    f"and statistics while it runs, so it takes one call per model at a time: "
                    f"wait for that call to return, or give each thread its own copy of the "
                    f"model")
        for key in parts:
            if key not in _USERS:
                _USERS[key] = (owner, me)
                keys.append(key)
    try:
        yield
    finally:
        with _USERS_LOCK:
            for key in keys:
                del _USERS[key]


# ---------------------------------------------------------------------- random states
def iterate_keeping_random_states(iterable):
    """Yield the items of the user's ``iterable``, putting back the global random states
    after ``iter()`` and after each ``next()`` (see the module docstring)."""
    with random_states_kept():
        iterator = iter(iterable)
    while True:
        with random_states_kept():
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


@contextmanager
def random_states_kept():
    """Put back the global random states of Python, NumPy and torch on exit."""
    python, legacy = random.getstate(), np.random.get_state()  # noqa: NPY002
    torch = sys.modules.get("torch")
    cpu = cuda = None
    if torch is not None:
        cpu = torch.random.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = torch.cuda.get_rng_state_all()
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(legacy)  # noqa: NPY002
        if cpu is not None:
            torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------- thread counts
def _numba_threads():
    """Numba's thread count in this thread, or None before its threading layer started
    (asking would start it)."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    from numba.np.ufunc import parallel

    return numba.get_num_threads() if parallel._is_initialized else None


@contextmanager
def _thread_counts_kept():
    """Put back, on exit, every OpenMP and BLAS runtime's thread count, Numba's and
    torch's, where the call changed them."""
    runtimes = [(lib, lib.num_threads) for lib in _runtimes.loaded()]
    numba_threads = _numba_threads()
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        for lib, threads in runtimes:
            if lib.num_threads != threads:
                lib.set_num_threads(threads)
        if numba_threads is not None and _numba_threads() != numba_threads:
            sys.modules["numba"].set_num_threads(numba_threads)
        if torch_threads is not None and torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
