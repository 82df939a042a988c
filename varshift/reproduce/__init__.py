"""``varshift reproduce``: Li et al.'s figures at small scale, analytic and empirical.

:func:`run` computes every figure (or those named), writes a PNG, an SVG, the numbers
as JSON and a caption per figure, and ``REPORT.md`` with one row per paper claim: the
paper's number, ours, and whether the claim holds here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from . import analytic, empirical
from .empirical import Context, DataMissing
from .results import Claim, FigureResult, write_case, write_figure, write_report

__all__ = ["run", "FIGURES", "Claim", "FigureResult", "Context"]

FIGURES = {**analytic.FIGURES, **empirical.FIGURES}


def run(out="figures", *, quick=False, only=None, seeds=None, data_dir=None, seed=0,
        progress=False):
    """Reproduce the figures.

    Parameters
    ----------
    out : str or Path, default 'figures'
    quick : bool, default False
        Fewer epochs, seeds, widths and Monte Carlo samples (minutes instead of an hour).
    only : list of str, optional
        Names from :data:`FIGURES` and :data:`varshift.cases.CASES` (default: all).
    seeds : int, optional
        Seeds per setting (default 2 quick, 3 full).
    data_dir : str, optional
        Folder with the MNIST IDX files.
    seed : int, default 0
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
    import matplotlib

    matplotlib.use("Agg")
    ctx = Context(quick=quick, seeds=seeds or (2 if quick else 3), seed=seed, data_dir=data_dir,
                  progress=progress)
    out = Path(out)
    results, skipped = [], []
    for i, name in enumerate(names, 1):
        if progress:
            print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        if name in CASES:
            try:
                case = CASES[name].run(quick=True, data_dir=data_dir, seed=seed, progress=progress)
            except FileNotFoundError as err:
                skipped.append((name, str(err).splitlines()[0] + " Provide them with "
                                "--data-dir or VARSHIFT_DATA (see the README)."))
                continue
            write_case(case, out)
            results.append(case)
            continue
        try:
            made = FIGURES[name](ctx)
        except DataMissing as err:
            skipped.append((name, str(err)))
            continue
        made = made if isinstance(made, list) else [made]
        seconds = time.perf_counter() - start
        for result in made:  # figures made together share the time
            write_figure(result, out, seconds / len(made))
        results += made
    settings = (f"{'quick' if quick else 'full'} mode, {ctx.seeds} seeds, {ctx.epochs} epochs "
                f"for the sweep, seed {seed}")
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, skipped, settings)
    return results, skipped
