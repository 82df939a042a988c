"""Case studies: questions people posted about BatchNorm and Dropout, answered with
measurements over several seeds.

Each case module has ``run(quick=True, ...)`` returning a :class:`CaseResult` with
``summary()`` and ``plot(ax=None)``; :func:`run` runs one by name and :data:`CASES`
lists them. The command line runs them as ``varshift case NAME``.
"""

from __future__ import annotations

from . import autoencoder, convnet, orderings, stale_stats
from ._common import CaseResult

__all__ = ["CASES", "run", "CaseResult"]

CASES = {m.NAME: m for m in (convnet, orderings, stale_stats, autoencoder)}


def run(name, quick=True, **options) -> CaseResult:
    """Run the case study ``name`` (see :data:`CASES`); ``options`` go to its ``run``."""
    if name not in CASES:
        raise ValueError(f"unknown case {name!r}; choose from {sorted(CASES)}")
    return CASES[name].run(quick=quick, **options)
