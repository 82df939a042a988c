"""The power pilot of ``docs/power-analysis.md``: the harder regime's training-set size,
picked by a rule declared before any run, and the pilot's training runs.

Run it from the repository root with ``python -m varshift.reproduce.pilot`` (``--jobs``,
``--blocks``): every finished run is stored in :data:`CACHE` at once, so a second call
resumes where the first stopped, and the rule gives the same size again (its runs are
cached too).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import tasks as _tasks
from .plan import Settings, network_task, pilot_tasks

__all__ = ["CACHE", "FIRST_SIZE", "BAND", "regime_size", "calibration_tasks", "choose", "main"]

CACHE = Path("figures/power/tasks")
"""Where the pilot's runs are cached (relative to the repository root)."""
FIRST_SIZE = 2000
"""Training sequences tried first."""
BAND = (4.0, 8.0)
"""Wanted test error (%) of the network without Dropout."""
OTHER_SIZES = (1000, 4000)
"""The size taken instead if the first size's baseline is below or above :data:`BAND`."""
CALIBRATION_SEEDS = (0, 1, 2)


def regime_size(baseline_error):
    """The training-set size the declared rule picks.

    Parameters
    ----------
    baseline_error : float
        Mean test error (%) of PreResNet without Dropout at :data:`FIRST_SIZE`
        training sequences, seeds :data:`CALIBRATION_SEEDS`.

    Returns
    -------
    int
        :data:`FIRST_SIZE` if the error is inside :data:`BAND` (ends included), else
        the smaller (error too low) or larger (too high) of :data:`OTHER_SIZES`; the
        rule is applied once, whatever the second size then gives.
    """
    low, high = BAND
    if low <= baseline_error <= high:
        return FIRST_SIZE
    return OTHER_SIZES[0] if baseline_error < low else OTHER_SIZES[1]


def calibration_tasks():
    """The runs the rule looks at: PreResNet without Dropout at :data:`FIRST_SIZE`."""
    settings = Settings(quick=False, train_sequences=FIRST_SIZE)
    return [network_task(settings, "PreResNet", "a", 0.0, s) for s in CALIBRATION_SEEDS]


def choose(cache=CACHE, jobs=1, progress=False):
    """Run (or read back) :func:`calibration_tasks` and apply :func:`regime_size`.

    Returns
    -------
    settings : plan.Settings
        The full run's settings with the chosen ``train_sequences``.
    baseline_error : float
        The mean test error (%) the rule looked at.
    """
    runs = calibration_tasks()
    results, _ = _tasks.run(runs, cache, jobs=jobs, progress=progress)
    error = float(np.mean([results[t.key]["test_error"] for t in runs]))
    return Settings(quick=False, train_sequences=regime_size(error)), error


def main(argv=None):
    """Command line: choose the regime, then run the pilot's blocks of seeds."""
    parser = argparse.ArgumentParser(prog="python -m varshift.reproduce.pilot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes")
    parser.add_argument("--blocks", type=int, default=3,
                        help="blocks of seeds (plan.PILOT_BLOCKS per block)")
    args = parser.parse_args(argv)
    settings, error = choose(args.cache, args.jobs, progress=True)
    print(f"PreResNet without Dropout at {FIRST_SIZE} training sequences, seeds "
          f"{CALIBRATION_SEEDS}: {error:.2f} % test error; regime: {settings.describe()}",
          flush=True)
    _tasks.run(pilot_tasks(settings, args.blocks), args.cache, jobs=args.jobs, progress=True)


if __name__ == "__main__":
    main()
