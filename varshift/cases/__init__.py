"""Case studies: questions people posted about BatchNorm and Dropout, answered with
measurements over several seeds.

Each case module has ``run(quick=True, ...)`` returning a :class:`CaseResult` with
``summary()`` and ``plot(ax=None)``; :func:`run` runs one by name, :data:`CASES` lists
them and :func:`load` reads a saved result back. The command line runs them as ``varshift case NAME``.
"""

from __future__ import annotations

from . import autoencoder, convnet, orderings, stale_stats
from ._common import CaseResult

__all__ = ["CASES", "run", "load", "CaseResult"]

CASES = {m.NAME: m for m in (convnet, orderings, stale_stats, autoencoder)}


def run(name, quick=True, **options) -> CaseResult:
    """Run the case study ``name`` (see :data:`CASES`); ``options`` go to its ``run``."""
    if name not in CASES:
        raise ValueError(f"unknown case {name!r}; choose from {sorted(CASES)}")
    return CASES[name].run(quick=quick, **options)


def load(path) -> CaseResult:
    """A case result saved with ``to_json`` (e.g. ``figures/case-NAME.json`` written by
    ``varshift reproduce``), as the case's own result class, so it can be plotted."""
    import json

    with open(path) as f:
        data = json.load(f)
    if data.get("name") not in CASES:
        raise ValueError(f"{path}: not a saved case result (name {data.get('name')!r})")
    return CASES[data["name"]].RESULT.from_dict(data)
