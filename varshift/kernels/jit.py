"""``njit`` for varshift's kernels: Numba's, with the on-disk cache in a user folder.

Numba's own ``cache=True`` writes its cache files next to the sources, that is into
the installed package in site-packages (uninstalling does not remove them, and the
leftover folder then shadows an editable install). Setting ``NUMBA_CACHE_DIR`` would
move them, but it is a process-wide setting that the user's own Numba code would then
follow too. Instead, each of varshift's compiled kernels gets a cache of its own that
writes to ``$XDG_CACHE_HOME/varshift/numba`` (default ``~/.cache/varshift/numba``).
Nothing outside varshift's kernels changes: no environment variable, no Numba setting.

If the user set ``NUMBA_CACHE_DIR`` (or Numba's ``NUMBA_CACHE_LOCATOR_CLASSES``), the
kernels follow it like any other Numba function.
"""

from __future__ import annotations

import os

import numba
from numba.core import caching, config

__all__ = ["njit", "cache_folder"]


def cache_folder() -> str:
    """The folder of varshift's compiled-kernel cache when ``NUMBA_CACHE_DIR`` is unset:
    ``$XDG_CACHE_HOME/varshift/numba``, default ``~/.cache/varshift/numba``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "varshift", "numba")


class _UserFolderLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba cache locator for one kernel: a subfolder of :func:`cache_folder` per
    source folder, named as Numba names those under ``NUMBA_CACHE_DIR``."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(cache_folder(), self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path


class _UserFolderCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [_UserFolderLocator]


class _UserFolderCache(caching.FunctionCache):
    _impl_class = _UserFolderCacheImpl


def njit(*, cache: bool = False, **options):
    """``numba.njit(**options)``; with ``cache=True`` the compiled code is cached in
    :func:`cache_folder` (or where the user's Numba settings say).

    Parameters
    ----------
    cache : bool, default False
    **options
        Numba's ``njit`` options (``parallel``, ``fastmath``, ...).

    Returns
    -------
    callable
        A decorator giving a Numba dispatcher.
    """

    def decorate(func):
        user_choice = bool(config.CACHE_DIR or config.CACHE_LOCATOR_CLASSES)
        dispatcher = numba.njit(cache=cache and user_choice, **options)(func)
        if cache and not user_choice:
            try:
                dispatcher._cache = _UserFolderCache(func)
            except RuntimeError:  # no writable folder: compile every time, as uncached
                pass
        return dispatcher

    return decorate
