"""Independent computations as cached, resumable tasks: serial, in local processes, or
on a Dask cluster, with identical results.

A :class:`Task` names a module-level function and its JSON parameters; its key is
readable and deterministic (a label plus a hash of function and parameters). :func:`run`
looks every task up in a cache folder (one small JSON file per task), computes only the
missing ones and writes each result as soon as it is done, so an interrupted run
resumes where it stopped. Every task runs single-threaded (one BLAS and one Numba
thread), whichever way it is run, so serial, ``jobs=N`` and Dask runs give the same
numbers.
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._files import atomic_write
from ._json import json_ready

__all__ = ["Task", "run", "cached", "execute", "cache_summary"]


@dataclass(frozen=True)
class Task:
    """One independent computation.

    Parameters
    ----------
    label : str
        Readable part of the key, e.g. ``'sweep/PreResNet/a-0.5/seed3'`` (``/`` makes
        sub-folders in the cache).
    function : str
        ``'package.module:function'``; called as ``function(**params)`` and returning a
        JSON-ready dict.
    params : dict
        JSON-ready keyword arguments; they define the result (and the key).
    options : dict
        Keyword arguments that do not change the result, e.g. where a data set is
        read from; not part of the key.
    """

    label: str
    function: str
    params: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``label-HASH``: the same function and parameters always give the same key."""
        text = json.dumps([self.function, json_ready(self.params)], sort_keys=True)
        return f"{self.label}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def execute(function: str, params: dict, options=None) -> dict:
    """Run one task's function single-threaded; its result after a JSON round trip (so
    every way of running gives the same Python types)."""
    from .kernels import threads

    module, name = function.split(":")
    # one BLAS and one Numba thread (a BLAS product split over two threads can round
    # differently)
    restore = threads.limit(1)
    try:
        result = getattr(importlib.import_module(module), name)(**params, **(options or {}))
    finally:
        restore()
    return json.loads(json.dumps(json_ready(result)))


def _timed(function, params, options):
    start = time.perf_counter()
    result = execute(function, params, options)
    return result, time.perf_counter() - start


def _path(cache: Path, task: Task) -> Path:
    return cache / f"{task.key}.json"


def _load(cache, task):
    if cache is None or not _path(cache, task).exists():
        return None
    try:
        data = json.loads(_path(cache, task).read_text())
    except (OSError, ValueError):
        return None  # a damaged file is recomputed
    same = data.get("function") == task.function and data.get("params") == json_ready(task.params)
    return data if same and "result" in data else None


def _store(cache, task, result, seconds):
    path = _path(cache, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", owner="tasks.run") as f:
        f.write(json.dumps({"key": task.key, "function": task.function,
                            "params": json_ready(task.params), "seconds": seconds,
                            "result": result}, sort_keys=True) + "\n")


def cached(tasks, cache) -> dict:
    """The stored records of those ``tasks`` already in ``cache``; computes nothing.

    Parameters
    ----------
    tasks : iterable of Task
    cache : str or Path
        Folder of per-task result files, as given to :func:`run`.

    Returns
    -------
    dict
        ``key -> {"result": ..., "seconds": ..., ...}`` (the stored file) for every
        task whose file exists and matches its function and parameters.
    """
    cache = Path(cache)
    return {task.key: stored for task in tasks if (stored := _load(cache, task)) is not None}


#: Within :func:`cache_summary`: how many runs found all their tasks in the cache, and
#: how many tasks those were; None outside.
_ALL_CACHED = contextvars.ContextVar("varshift_tasks_all_cached", default=None)


@contextmanager
def cache_summary(progress=True):
    """Collapse the progress lines of runs that compute nothing.

    Within the block, a :func:`run` whose tasks are all in the cache prints no line of
    its own (a reproduction looks up the same cached runs once per figure, which made
    dozens of identical "0 to compute" lines); when the block ends normally, one line
    sums them up. Runs that compute something print as before.

    Parameters
    ----------
    progress : bool, default True
        Print the summary line (on stderr); False counts silently.

    Yields
    ------
    dict
        ``{"runs": ..., "tasks": ...}``: the runs answered from the cache alone, and
        their tasks, so far.
    """
    tally = {"runs": 0, "tasks": 0}
    token = _ALL_CACHED.set(tally)
    try:
        yield tally
    finally:
        _ALL_CACHED.reset(token)
    if progress and tally["runs"]:
        print(f"tasks: {tally['runs']} look-up(s) answered from the cache alone "
              f"({tally['tasks']} task results read)", file=sys.stderr, flush=True)


def run(tasks, cache=None, *, jobs=1, client=None, progress=False):
    """Compute ``tasks`` (cached ones are read back) and return their results.

    Parameters
    ----------
    tasks : iterable of Task
        Duplicate keys are computed once.
    cache : str or Path, optional
        Folder of per-task result files (created if needed); without it nothing is
        cached.
    jobs : int, default 1
        Local worker processes (``spawn``ed, each single-threaded); 1 computes in this
        process.
    client : dask.distributed.Client, optional
        Run the missing tasks on this Dask cluster instead (``jobs`` is then ignored).
    progress : bool, default False
        One line per task on stderr (with one line for a run that computes nothing,
        or none within :func:`cache_summary`).

    Returns
    -------
    results : dict
        ``key -> result`` for every task.
    seconds : dict
        ``key -> wall seconds`` the task took when it was computed (also for cached
        ones: the time stored with them).

    Raises
    ------
    ValueError
        If ``jobs`` is not a positive integer.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    unique = {}
    for task in tasks:
        if not isinstance(task, Task):
            raise TypeError(f"tasks must be Task objects, got {type(task).__name__}")
        unique.setdefault(task.key, task)
    cache = Path(cache) if cache is not None else None
    results, seconds, todo = {}, {}, []
    for key, task in unique.items():
        stored = _load(cache, task)
        if stored is None:
            todo.append(task)
        else:
            results[key], seconds[key] = stored["result"], stored.get("seconds")
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    tally = _ALL_CACHED.get()
    if tally is not None and not todo:
        tally["runs"] += 1
        tally["tasks"] += len(unique)
    else:
        say(f"tasks: {len(unique)} in all, {len(results)} cached, {len(todo)} to compute")

    def done(task, result, took, i):
        results[task.key], seconds[task.key] = result, took
        if cache is not None:
            _store(cache, task, result, took)
        say(f"  [{i}/{len(todo)}] {task.key} ({took:.1f} s)")

    if not todo:
        return results, seconds
    if client is not None:
        _run_dask(client, todo, done)
    elif jobs == 1:
        for i, task in enumerate(todo, 1):
            done(task, *_timed(task.function, task.params, task.options), i)
    else:
        _run_processes(jobs, todo, done)
    return results, seconds


def _run_processes(jobs, todo, done):
    """Compute ``todo`` in ``jobs`` spawned worker processes, started by
    :func:`_start_worker`."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_timed, t.function, t.params, t.options): t for t in todo}
        try:
            for i, future in enumerate(as_completed(futures), 1):
                done(futures[future], *future.result(), i)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _start_worker(parent: int) -> None:
    """Initializer of :func:`_run_processes`'s workers.

    It makes the worker single-threaded with
    :func:`varshift.kernels.threads.single_threaded_worker` (through the libraries' calls:
    the parent's environment, which the worker inherits, is not touched), and starts a
    daemon thread that ends the worker once ``parent`` is gone. A runner stopped by a
    signal its Python code never sees (``kill``, ``pkill``, the end of a session) thus
    takes its workers with it within about a second, instead of leaving them to finish
    their tasks as orphans.
    """
    from .kernels.threads import single_threaded_worker

    single_threaded_worker()
    threading.Thread(target=_exit_without, args=(parent,), daemon=True,
                     name="varshift-parent-watch").start()


def _exit_without(parent: int, interval: float = 0.5) -> None:
    """Return never; end this process at once when its parent is no longer ``parent``
    (an orphan is adopted by another process)."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _run_dask(client, todo, done):
    from dask.distributed import as_completed

    futures = {client.submit(_timed, t.function, t.params, t.options, key=f"varshift-{t.key}", pure=False): t
               for t in todo}
    try:
        for i, future in enumerate(as_completed(list(futures)), 1):
            done(futures[future], *future.result(), i)
    except BaseException:
        client.cancel(list(futures))
        raise
