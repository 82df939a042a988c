"""Case studies: questions people posted about BatchNorm and Dropout, answered with
measurements over several seeds.

Each case is a :class:`Case` (in :data:`CASES`, by name) with ``run(quick=True, ...)``
returning a :class:`CaseResult` with ``summary()`` and ``plot(ax=None)``, and
``tasks(quick=True, ...)``, the training runs that ``run`` with the same arguments
computes (``varshift reproduce`` computes them in one batch with the figures'); the base
class writes both once, and each case module declares only its own network, task
function, sizes, default seeds and summary. :func:`run` runs one by name and
:func:`load` reads a saved result back. Every statement is judged with the protocol of
:mod:`varshift.verdicts` (paired 95 % intervals over seeds; *not tested at the posted
regime* where the runs are not in the regime the statement was posted in; sanity checks
apart). Every training run is a :class:`varshift.tasks.Task`, so a case runs serially,
in local processes (``jobs``) or on a Dask cluster (``client``), with identical results.
The command line runs them as ``varshift case NAME``.
"""

from __future__ import annotations

from . import autoencoder, convnet, orderings, stale_stats
from ._case import Case
from ._common import CaseResult, Regime

__all__ = ["CASES", "run", "load", "Case", "CaseResult", "Regime"]

#: Every case study, by name.
CASES = {case.name: case for case in (convnet.ConvnetCase(), orderings.OrderingsCase(),
                                      stale_stats.StaleStatsCase(), autoencoder.AutoencoderCase())}


def run(name, quick=True, *, jobs=1, client=None, cache=None, **options) -> CaseResult:
    """Run the case study ``name`` (see :data:`CASES`): its :meth:`Case.run`.

    Parameters
    ----------
    name : str
    quick, jobs, client, cache, **options
        As in :meth:`Case.run` (``options`` also takes ``seeds``, ``seed``, ``data_dir``,
        ``progress``, and the case's own options, e.g. ``epochs``).

    Returns
    -------
    CaseResult
        The same numbers whichever way the runs were computed.

    Raises
    ------
    ValueError
        If there is no case ``name``.
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
        return CASES[data["name"]].result.from_dict(data)
    except TypeError as err:
        raise ValueError(f"{path}: written by another version of varshift ({err}); run the case "
                         f"again (varshift case {data['name']})") from err
