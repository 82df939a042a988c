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

from .. import tasks as _tasks
from . import analytic, empirical
from .empirical import Context, DataMissing
from .plan import Settings
from .results import FigureResult, write_case, write_figure, write_report, write_timings

__all__ = ["run", "FIGURES", "FigureResult", "Context", "Settings", "default_out",
           "data_skips", "skip_notice"]

FIGURES = {**analytic.FIGURES, **empirical.FIGURES}
#: The figures that train on MNIST (the others use generated data or MNIST-1D).
MNIST_FIGURES = ("width",)


def default_out(quick):
    """``figures/quick`` for a quick run, ``figures`` for the full one: a quick run never
    overwrites the committed full results unless asked to."""
    return Path("figures/quick" if quick else "figures")


def _names(only):
    """The figures and cases to make: ``only``, checked, else all of them."""
    from ..cases import CASES

    names = list(FIGURES) + list(CASES) if not only else list(only)
    unknown = [n for n in names if n not in FIGURES and n not in CASES]
    if unknown:
        raise ValueError(f"unknown figure(s) or case(s) {unknown}; choose from "
                         f"{list(FIGURES) + list(CASES)}")
    return names


def _needs_mnist(name, data_dir, seed) -> bool:
    from ..cases import CASES

    if name in CASES:
        return any("data_dir" in task.options
                   for task in CASES[name].tasks(True, data_dir=data_dir, seed=seed))
    return name in MNIST_FIGURES


def data_skips(only=None, data_dir=None, seed=0, *, mnist_missing=None):
    """The figures and case studies that :func:`run` will skip for missing data, with
    why; computes nothing (only looks for the MNIST files).

    Parameters
    ----------
    only, data_dir, seed
        As for :func:`run`.
    mnist_missing : str, optional
        Why MNIST is missing, if already looked up (else it is looked up here).

    Returns
    -------
    list of (str, str)
        ``(name, reason)`` in the order :func:`run` makes them; empty if every one can
        be made.
    """
    names = _names(only)
    if mnist_missing is None:
        mnist_missing = Context(data_dir=data_dir).mnist_missing
    return _skips(names, data_dir, seed, mnist_missing)


def _skips(names, data_dir, seed, mnist_missing):
    if mnist_missing is None:
        return []
    return [(name, mnist_missing) for name in names if _needs_mnist(name, data_dir, seed)]


def skip_notice(skips) -> str:
    """What :func:`run` says at the start about the ``skips`` of :func:`data_skips`."""
    reasons = {}
    for name, why in skips:
        reasons.setdefault(why, []).append(name)
    return "\n".join(f"will skip {len(names)}: {', '.join(names)}. {why}"
                     for why, names in reasons.items())


def run(out=None, *, quick=False, only=None, seeds=None, data_dir=None, seed=0, jobs=1,
        client=None, cache=None, progress=False):
    """Reproduce the figures (and the case studies).

    Parameters
    ----------
    out : str or Path, optional
        Output folder; default :func:`default_out` (``figures/quick`` when ``quick``).
    quick : bool, default False
        PreResNet only, 3 seeds, 4 epochs, and three case studies trimmed further
        (minutes; :data:`plan.QUICK_CASES <varshift.reproduce.plan.QUICK_CASES>`)
        instead of three architectures, 5 seeds and 30 epochs (hours of CPU; use
        ``jobs`` or ``client``).
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
        Progress on stderr, starting with the figures and cases that will be skipped
        for missing data (see :func:`data_skips`).

    Returns
    -------
    results : list of FigureResult and CaseResult
    skipped : list of (str, str)
        Figures and cases not made, with the reason (e.g. missing MNIST files).

    Notes
    -----
    The case studies always run in their quick mode (their full modes take hours; run
    them with ``varshift case NAME --full``); the quick reproduction also trims two of
    them (fewer seeds, fewer training images), as its report says.
    """
    names = _names(only)
    out = default_out(quick) if out is None else Path(out)
    settings = Settings(quick=quick, seeds=seeds, seed=seed)
    ctx = Context(settings, cache=Path(cache) if cache is not None else out / "tasks", jobs=jobs,
                  client=client, data_dir=data_dir, progress=progress)
    skips = dict(_skips(names, data_dir, seed, ctx.mnist_missing))
    if progress and skips:
        print(skip_notice(skips.items()), file=sys.stderr, flush=True)
    with _tasks.cache_summary(progress):
        results, skipped, seconds = _make(names, skips, ctx, out)
    out.mkdir(parents=True, exist_ok=True)
    seconds.update({f"task:{k}": v for k, v in ctx.seconds.items()})
    write_timings(out, seconds)
    write_report(out, skipped, f"{settings.describe()}; {settings.describe_cases()}")
    return results, skipped


def _make(names, skips, ctx, out):
    """Make the figures and cases ``names`` into ``out`` (those in ``skips`` only
    reported); their results, the skipped ``(name, why)`` and the seconds each took."""
    from ..cases import CASES

    results, skipped, seconds = [], [], {}

    seed, data_dir, progress = ctx.seed, ctx.data_dir, ctx.progress
    options = ctx.settings.case_options  # the quick reproduction trims some cases
    # one batch of every training run (full parallelism to the end), without those
    # of the figures and cases skipped for missing data
    ctx.prefetch([n for n in names if n in FIGURES and n not in skips],
                 [task for name in names if name in CASES and name not in skips
                  for task in CASES[name].tasks(True, data_dir=data_dir, seed=seed,
                                                **options(name))])
    for i, name in enumerate(names, 1):
        if progress:
            print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        if name in skips:
            skipped.append((name, skips[name]))
            continue
        start = time.perf_counter()
        if name in CASES:
            try:
                case = CASES[name].run(quick=True, data_dir=data_dir, seed=seed, progress=progress,
                                       jobs=ctx.jobs, client=ctx.client, cache=ctx.cache,
                                       **options(name))
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
    return results, skipped, seconds

