"""``varshift reproduce``: Li et al.'s figures at small scale, analytic and empirical.

:func:`run` computes every figure (or those named), writes a PNG, an SVG, the numbers
as JSON and a caption per figure, and ``REPORT.md``: every claim of the paper with our
estimate, its 95 % interval over seeds, n and a verdict from the protocol of
:mod:`varshift.verdicts`, and the sanity checks apart. Training runs are cached tasks
(:mod:`varshift.tasks`): an interrupted run resumes, ``jobs=`` runs them in local
processes and ``client=`` on a Dask cluster, with identical results.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from . import analytic, empirical
from .empirical import Context, DataMissing
from .plan import Settings
from .results import FigureResult, write_case, write_figure, write_report, write_timings

__all__ = ["run", "FIGURES", "FigureResult", "Context", "Settings", "default_out"]

FIGURES = {**analytic.FIGURES, **empirical.FIGURES}


def default_out(quick):
    """``figures/quick`` for a quick run, ``figures`` for the full one: a quick run never
    overwrites the committed full results unless asked to."""
    return Path("figures/quick" if quick else "figures")


def run(out=None, *, quick=False, only=None, seeds=None, data_dir=None, seed=0, jobs=1,
        client=None, cache=None, progress=False):
    """Reproduce the figures (and the case studies).

    Parameters
    ----------
    out : str or Path, optional
        Output folder; default :func:`default_out` (``figures/quick`` when ``quick``).
    quick : bool, default False
        PreResNet only, 3 seeds, 10 epochs (minutes) instead of three architectures,
        5 seeds and 30 epochs (hours of CPU; use ``jobs`` or ``client``).
    only : list of str, optional
        Names from :data:`FIGURES` and :data:`varshift.cases.CASES` (default: all).
    seeds : int, optional
        Seeds per setting (default 3 quick, 5 full; at least 2).
    data_dir : str, optional
        Folder with the MNIST IDX files.
    seed : int, default 0
        First seed.
    jobs : int, default 1
        Local worker processes for the training runs (each single-threaded). Scripts
        that use ``jobs > 1`` need the ``if __name__ == "__main__":`` guard.
    client : dask.distributed.Client, optional
        Run the training runs on this Dask cluster instead.
    cache : str or Path, optional
        Folder of cached per-run results; default ``OUT/tasks``.
    progress : bool, default False

    Returns
    -------
    results : list of FigureResult and CaseResult
    skipped : list of (str, str)
        Figures and cases not made, with the reason (e.g. missing MNIST files).

    Notes
    -----
    The case studies always run in their quick mode (their full modes take hours; run
    them with ``varshift case NAME --full``).
    """
    from ..cases import CASES

    names = list(FIGURES) + list(CASES) if not only else list(only)
    unknown = [n for n in names if n not in FIGURES and n not in CASES]
    if unknown:
        raise ValueError(f"unknown figure(s) or case(s) {unknown}; choose from "
                         f"{list(FIGURES) + list(CASES)}")
    out = default_out(quick) if out is None else Path(out)
    settings = Settings(quick=quick, seeds=seeds, seed=seed)
    ctx = Context(settings, cache=Path(cache) if cache is not None else out / "tasks", jobs=jobs,
                  client=client, data_dir=data_dir, progress=progress)
    results, skipped, seconds = [], [], {}
    # one batch of every training run (full parallelism to the end), without those
    # that read MNIST if it is missing: their figure or case reports it
    mnist = ctx.mnist_missing is None
    ctx.prefetch([n for n in names if n in FIGURES and (n != "width" or mnist)],
                 [task for name in names if name in CASES
                  for task in CASES[name].tasks(True, data_dir=data_dir, seed=seed)
                  if mnist or "data_dir" not in task.options])
    for i, name in enumerate(names, 1):
        if progress:
            print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        if name in CASES:
            try:
                case = CASES[name].run(quick=True, data_dir=data_dir, seed=seed, progress=progress,
                                       jobs=jobs, client=client, cache=ctx.cache)
            except FileNotFoundError as err:
                skipped.append((name, str(err).splitlines()[0] + " Provide them with "
                                "--data-dir or VARSHIFT_DATA (see the README)."))
                continue
            write_case(case, out)
            results.append(case)
            seconds[f"case-{name}"] = time.perf_counter() - start
            continue
        try:
            made = FIGURES[name](ctx)
        except DataMissing as err:
            skipped.append((name, str(err)))
            continue
        made = made if isinstance(made, list) else [made]
        for result in made:
            write_figure(result, out)
            seconds[result.name] = (time.perf_counter() - start) / len(made)
        results += made
    out.mkdir(parents=True, exist_ok=True)
    seconds.update({f"task:{k}": v for k, v in ctx.seconds.items()})
    write_timings(out, seconds)
    write_report(out, skipped, settings.describe() + "; case studies in their quick mode")
    return results, skipped

