"""Case studies: questions people posted about BatchNorm and Dropout, answered with
measurements over several seeds.

Each case module has ``run(quick=True, ...)`` returning a :class:`CaseResult` with
``summary()`` and ``plot(ax=None)``, and ``tasks(quick=True, ...)``, the training runs
that ``run`` with the same arguments computes (``varshift reproduce`` computes them in
one batch with the figures'); :func:`run` runs one by name, :data:`CASES` lists them
and :func:`load` reads a saved result back. Every statement is judged with the
protocol of :mod:`varshift.verdicts` (paired 95 % intervals over seeds; *not tested at
the posted regime* where the runs are not in the regime the statement was posted in;
sanity checks apart). Every training run is a :class:`varshift.tasks.Task`, so a case
runs serially, in local processes (``jobs``) or on a Dask cluster (``client``), with
identical results. The command line runs them as ``varshift case NAME``.
"""

from __future__ import annotations

from . import autoencoder, convnet, orderings, stale_stats
from ._common import CaseResult, Regime

__all__ = ["CASES", "run", "load", "CaseResult", "Regime"]

CASES = {m.NAME: m for m in (convnet, orderings, stale_stats, autoencoder)}


def run(name, quick=True, *, jobs=1, client=None, cache=None, **options) -> CaseResult:
    """Run the case study ``name`` (see :data:`CASES`).

    Parameters
    ----------
    name : str
    quick : bool, default True
        The case's quick settings (minutes) rather than the posted ones (up to hours).
    jobs : int, default 1
        Training runs in this many local processes, each single-threaded; scripts that
        use ``jobs > 1`` need the ``if __name__ == "__main__":`` guard.
    client : dask.distributed.Client, optional
        Run the training runs on this Dask cluster instead.
    cache : str or Path, optional
        Folder of cached per-run results (a stopped run resumes from it).
    **options
        Passed to the case's ``run`` (``seeds``, ``data_dir``, ``seed``, ``progress``,
        ...).

    Returns
    -------
    CaseResult
        The same numbers whichever way the runs were computed.
    """
    if name not in CASES:
        raise ValueError(f"unknown case {name!r}; choose from {sorted(CASES)}")
    return CASES[name].run(quick=quick, jobs=jobs, client=client, cache=cache, **options)


def load(path) -> CaseResult:
    """A case result saved with ``to_json`` (e.g. ``figures/case-NAME.json`` written by
    ``varshift reproduce``), as the case's own result class, so it can be plotted."""
    import json

    with open(path) as f:
        data = json.load(f)
    if data.get("name") not in CASES:
        raise ValueError(f"{path}: not a saved case result (name {data.get('name')!r})")
    try:
        return CASES[data["name"]].RESULT.from_dict(data)
    except TypeError as err:
        raise ValueError(f"{path}: written by another version of varshift ({err}); run the case "
                         f"again (varshift case {data['name']})") from err
