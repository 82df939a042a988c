"""The native thread runtimes loaded in this process, and their thread counts.

A small ctypes controller for what varshift needs of threadpoolctl: find the OpenMP and
BLAS (OpenBLAS, MKL, BLIS) libraries loaded now and get or set their thread counts.
It exists because importing threadpoolctl sets ``KMP_DUPLICATE_LIB_OK`` in the
process environment, and varshift writes no environment variable,
not even for a moment: ``setenv`` is not safe while another thread reads the
environment. This module imports nothing that writes it and loads no library: a
library is opened with ``RTLD_NOLOAD`` only once the process has loaded it.

The libraries are listed from ``/proc/self/maps`` on Linux (no loader lock is taken,
unlike ``dl_iterate_phdr``, which can deadlock against a concurrent ``dlopen``),
``_dyld_image_count`` on macOS, ``ctypes.util.dllist`` on Python 3.14+ elsewhere, and
``dl_iterate_phdr`` on other POSIX systems. Windows before Python 3.14 is not covered:
no runtime is found there, so no thread count is changed or put back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import re
import sys
import threading

__all__ = ["Runtime", "loaded"]

_NOLOAD = getattr(os, "RTLD_NOLOAD", ctypes.DEFAULT_MODE)


class Runtime:
    """One loaded OpenMP or BLAS library.

    Attributes
    ----------
    user_api : {'openmp', 'blas'}
    internal_api : {'openmp', 'openblas', 'mkl', 'blis'}
    filepath : str
        The library's real path.
    threading_layer : str or None
        OpenBLAS's and BLIS's: 'openmp', 'pthreads' or 'disabled'; None otherwise.
    architecture : str or None
        OpenBLAS's kernel family (e.g. 'SkylakeX', 'Haswell'), BLIS's configuration;
        None otherwise.
    version : str or None
    """

    threading_layer = architecture = version = None

    def __init__(self, user_api, internal_api, filepath, dynlib, get, set_):
        self.user_api, self.internal_api, self.filepath = user_api, internal_api, filepath
        self._dynlib, self._get, self._set = dynlib, get, set_

    @property
    def num_threads(self) -> int:
        """The thread count the library would use now."""
        return self.get_num_threads()

    def get_num_threads(self) -> int:
        """The thread count the library would use now."""
        return int(self._get())

    def set_num_threads(self, threads: int) -> None:
        """Set the thread count (OpenMP's and OpenMP-threaded BLAS's: for the calling
        thread)."""
        self._set(int(threads))

    def info(self) -> dict:
        """A JSON-ready description, with the keys threadpoolctl's ``info`` uses."""
        return {"user_api": self.user_api, "internal_api": self.internal_api,
                "filepath": self.filepath, "num_threads": self.num_threads,
                "version": self.version, "threading_layer": self.threading_layer,
                "architecture": self.architecture}

    def __repr__(self):
        return f"Runtime({self.internal_api!r}, {self.filepath!r})"


def _text(function):
    function.restype = ctypes.c_char_p
    value = function()
    return value.decode("utf-8", "replace") if value else None


def _openblas(path, lib):
    for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
        def symbol(name, prefix=prefix, suffix=suffix):
            return getattr(lib, f"{prefix}{name}{suffix}", None)

        if symbol("openblas_get_num_threads") is not None:
            break
    else:
        return None
    parallel = symbol("openblas_get_parallel")
    layer = {0: "disabled", 1: "pthreads", 2: "openmp"}.get(parallel() if parallel else None)
    if layer == "openmp":  # OpenBLAS's own setter is process-wide or broken under OpenMP
        get, set_ = lib.omp_get_max_threads, lib.omp_set_num_threads
    else:
        get, set_ = symbol("openblas_get_num_threads"), symbol("openblas_set_num_threads")
    runtime = Runtime("blas", "openblas", path, lib, get, set_)
    runtime.threading_layer = layer
    corename = symbol("openblas_get_corename")
    runtime.architecture = _text(corename) if corename else None
    config = symbol("openblas_get_config")
    words = (_text(config) or "").split() if config else []
    runtime.version = words[1] if words[:1] == ["OpenBLAS"] and len(words) > 1 else None
    return runtime


def _mkl(path, lib):
    if not hasattr(lib, "MKL_Get_Max_Threads"):
        return None
    set_ = getattr(lib, "MKL_Set_Num_Threads_Local", None) or lib.MKL_Set_Num_Threads
    return Runtime("blas", "mkl", path, lib, lib.MKL_Get_Max_Threads, set_)


def _blis(path, lib):
    if not hasattr(lib, "bli_thread_get_num_threads"):
        return None
    runtime = Runtime("blas", "blis", path, lib, lib.bli_thread_get_num_threads,
                      lib.bli_thread_set_num_threads)
    if hasattr(lib, "bli_info_get_version_str"):
        runtime.version = _text(lib.bli_info_get_version_str)
    if hasattr(lib, "bli_arch_query_id") and hasattr(lib, "bli_arch_string"):
        lib.bli_arch_string.restype = ctypes.c_char_p
        runtime.architecture = lib.bli_arch_string(lib.bli_arch_query_id()).decode()
    return runtime


def _openmp(path, lib):
    if not hasattr(lib, "omp_get_max_threads"):
        return None
    return Runtime("openmp", "openmp", path, lib, lib.omp_get_max_threads,
                   lib.omp_set_num_threads)


_KINDS = (  # file name prefix (lower case) -> how to control it
    (("libopenblas", "libscipy_openblas", "openblas"), _openblas),
    (("libmkl_rt", "mkl_rt"), _mkl),
    (("libblis", "libflame"), _blis),
    (("libiomp", "libgomp", "libomp", "vcomp"), _openmp),
)

_CACHE = {}  # path as listed -> Runtime or None (not a runtime)
_CACHE_LOCK = threading.Lock()


def _runtime(path):
    """The :class:`Runtime` for the loaded library at ``path``, or None."""
    runtime = _CACHE.get(path, False)
    if runtime is not False:
        return runtime
    with _CACHE_LOCK:
        real = os.path.realpath(path)
        name = os.path.basename(real).lower()
        for prefixes, make in _KINDS:
            if name.startswith(prefixes):
                try:
                    runtime = make(real, ctypes.CDLL(real, mode=_NOLOAD))
                except OSError:  # not loadable as a library (or no longer loaded)
                    runtime = None
                break
        else:
            runtime = None
        _CACHE[path] = runtime
        return runtime


_MAPS_PATH = re.compile(rb" (/[^\n]+\.so[^\n/]*)$", re.MULTILINE)


def _loaded_paths():
    """Paths of the shared libraries loaded in this process."""
    if sys.platform.startswith("linux") and os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps", "rb") as f:
            return list(dict.fromkeys(p.decode() for p in _MAPS_PATH.findall(f.read())))
    if sys.platform == "darwin":
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc._dyld_get_image_name.restype = ctypes.c_char_p
        return [libc._dyld_get_image_name(i).decode() for i in range(libc._dyld_image_count())]
    if hasattr(ctypes.util, "dllist"):  # Python 3.14+
        return [p for p in ctypes.util.dllist() if p]
    return _paths_from_dl_iterate_phdr()


def _paths_from_dl_iterate_phdr():
    class Info(ctypes.Structure):
        _fields_ = [("addr", ctypes.c_void_p), ("name", ctypes.c_char_p)]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "dl_iterate_phdr"):
        return []
    names = []

    def each(info, size, data):  # appends only: no reentry into the loader
        if info.contents.name:
            names.append(info.contents.name)
        return 0

    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(Info), ctypes.c_size_t,
                                ctypes.c_void_p)(each)
    libc.dl_iterate_phdr(callback, None)
    return [n.decode() for n in names]


def loaded() -> list[Runtime]:
    """The OpenMP and BLAS runtimes loaded in this process now, one per library file.

    Returns
    -------
    list of Runtime
        In load order; empty where the platform's libraries cannot be listed.
    """
    runtimes = {}
    for path in _loaded_paths():
        runtime = _runtime(path)
        if runtime is not None:
            runtimes.setdefault(runtime.filepath, runtime)
    return list(runtimes.values())
