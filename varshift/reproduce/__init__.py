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
from .results import Claim, FigureResult, write_figure, write_report

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
        Names from :data:`FIGURES`.
    seeds : int, optional
        Seeds per setting (default 2 quick, 3 full).
    data_dir : str, optional
        Folder with the MNIST IDX files.
    seed : int, default 0
    progress : bool, default False

    Returns
    -------
    results : list of FigureResult
    skipped : list of (str, str)
        Figures not made, with the reason (e.g. missing MNIST files).
    """
    names = list(FIGURES) if not only else list(only)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {list(FIGURES)}")
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
