"""The power pilot of ``docs/power-analysis.md``: the harder regime's training-set size,
picked by a rule declared before any run, and the pilot's training runs.

Run it from the repository root with ``python -m varshift.reproduce.pilot`` (``--jobs``,
``--blocks``): every finished run is stored in :data:`CACHE` at once, so a second call
resumes where the first stopped, and the rule gives the same size again (its runs are
cached too). ``--report`` computes nothing: it reads the finished runs of the full run
and of the pilot, writes :data:`REPORT` (the power table of both, as JSON) and prints
it as Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .. import tasks as _tasks
from .._files import atomic_write
from .._json import json_ready
from . import power
from .plan import OTHER_PILOT_ARMS, PILOT_ARMS, Settings, network_task, pilot_tasks

__all__ = ["CACHE", "REPORT", "FIRST_SIZE", "BAND", "regime_size", "calibration_tasks", "choose",
           "load_runs", "report", "markdown", "main"]

CACHE = Path("figures/power/tasks")
"""Where the pilot's runs are cached (relative to the repository root)."""
FULL_CACHE = Path("figures/tasks")
"""The committed full run's cache (the first pilot)."""
REPORT = Path("figures/power/power.json")
"""The power table of the full run and of the pilot."""
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


def choose(cache=CACHE, jobs=1, progress=False, compute=True):
    """Run (or read back) :func:`calibration_tasks` and apply :func:`regime_size`.

    Parameters
    ----------
    cache : str or Path
    jobs : int, default 1
    progress : bool, default False
    compute : bool, default True
        False: only read the cached runs (FileNotFoundError if one is missing).

    Returns
    -------
    settings : plan.Settings
        The full run's settings with the chosen ``train_sequences``.
    baseline_error : float
        The mean test error (%) the rule looked at.
    """
    runs = calibration_tasks()
    if compute:
        results, _ = _tasks.run(runs, cache, jobs=jobs, progress=progress)
    else:
        results = {k: v["result"] for k, v in _tasks.cached(runs, cache).items()}
        if len(results) < len(runs):
            raise FileNotFoundError(f"the size rule's runs are not all in {cache}: run the pilot first")
    error = float(np.mean([results[t.key]["test_error"] for t in runs]))
    return Settings(quick=False, train_sequences=regime_size(error)), error


def load_runs(settings, cache, claims=power.CLAIMS, seeds=range(1000)):
    """The finished runs of every arm of ``claims`` under ``settings`` (nothing is
    computed).

    Returns
    -------
    runs : dict
        ``(arch, arm) -> {seed: result}``, as :func:`power.analyse` takes it.
    seconds : dict
        ``(arch, arm) -> list of the runs' wall seconds``, as stored with them.
    """
    wanted = {(arch, arm, s): network_task(settings, arch, arm[0], arm[1], s, arm[2])
              for c in claims for arch, arm in c.arms for s in seeds}
    stored = _tasks.cached(wanted.values(), cache)
    runs, seconds = {}, {}
    for (arch, arm, s), task in wanted.items():
        if task.key in stored:
            runs.setdefault((arch, arm), {})[s] = stored[task.key]["result"]
            seconds.setdefault((arch, arm), []).append(stored[task.key]["seconds"])
    return runs, seconds


def _rounded(value):
    """``value`` with floats to 6 significant digits (the same table on another SciPy)."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return float(f"{value:.6g}") if isinstance(value, float) else value


def report(out=REPORT, regimes=None):
    """Write the power table of each regime to ``out`` (sorted keys, atomic).

    Parameters
    ----------
    out : str or Path
    regimes : dict, optional
        ``name -> (settings, cache)``; default the full run (:data:`FULL_CACHE`) and
        the regime :func:`choose` picks from the cached calibration runs.

    Returns
    -------
    dict
        ``name -> {"settings", "baseline", "minutes_per_task", "rows"}``: the
        settings described, the mean no-Dropout test error per architecture, the
        median minutes per run per architecture and arm, and :func:`power.analyse`'s
        rows.
    """
    if regimes is None:
        regimes = {"full run": (Settings(quick=False), FULL_CACHE),
                   "pilot": (choose(CACHE, compute=False)[0], CACHE)}
    tables = {}
    for name, (settings, cache) in regimes.items():
        runs, seconds = load_runs(settings, cache)
        tables[name] = {
            "settings": settings.describe().split("; ", 2)[-1],
            "baseline": {arch: float(np.mean([r["test_error"] for r in v.values()]))
                         for (arch, arm), v in runs.items() if arm == power.BASE},
            "minutes_per_task": {f"{arch} {'/'.join(map(str, arm))}": float(np.median(v)) / 60
                                 for (arch, arm), v in seconds.items()},
            "runs": {f"{arch} {'/'.join(map(str, arm))}": len(v) for (arch, arm), v in runs.items()},
            "rows": power.analyse(power.CLAIMS, runs)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w", owner="pilot.report") as f:
        f.write(json.dumps(_rounded(json_ready(tables)), sort_keys=True, indent=1) + "\n")
    return tables


def _num(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def markdown(rows, budget=power.BUDGET):
    """A power table in Markdown: one line per claim with a pilot, its verdict in
    advance last (reasons: ``> budget`` seeds needed at Holm's alpha, ``no effect``:
    the paper gives no number, ``effect 0 or reversed``: the paper's own effect)."""
    lines = ["| claim | n | paired sd | MDE at n: 0.05 / Holm; at 30: Holm | paper, scaled | "
             "seeds: 0.05 / Holm / Holm at the sd's 80 % bound | in advance |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["testable"] is None:
            continue
        if r["margin"] is not None:
            mde, effect = (f"power at n: {_num(r['power']['alpha'])} / {_num(r['power']['holm'])}"
                           if r["power"] else "-"), f"0 (margin {r['margin']:g})"
        else:  # no MDE where the pilot's differences do not vary (sd 0)
            mde = (f"{_num(r['mde']['alpha'])} / {_num(r['mde']['holm'])}; {_num(r['mde_grid']['30'])}"
                   if r["mde"] else "-")
            effect = f"{_num(r['paper'])}, {_num(r['scaled'])}" if r["paper"] is not None else "none"
        need = " / ".join(str(n or ">10,000") for n in (r["seeds"]["alpha"], r["seeds"]["holm"],
                                                        r["seeds_upper"])) if r["seeds"] else "-"
        verdict = ("testable" if r["testable"] else "**not testable**: " + (
            f"> {budget}" if r["seeds"] else "no effect" if r["paper"] is None else
            "sd 0" if r["sd"] == 0 else "effect 0 or reversed"))
        lines.append(f"| {r['text']} | {r['n']} | {_num(r['sd'])} | {mde} | {effect} | {need} | {verdict} |")
    return "\n".join(lines)


def main(argv=None):
    """Command line: choose the regime, then run the pilot's blocks of seeds."""
    parser = argparse.ArgumentParser(prog="python -m varshift.reproduce.pilot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes")
    parser.add_argument("--blocks", type=int, default=3,
                        help="blocks of seeds (plan.PILOT_BLOCKS per block)")
    parser.add_argument("--other-arms", action="store_true",
                        help="pilot the arms the first pilot left out (plan.OTHER_PILOT_ARMS)")
    parser.add_argument("--report", action="store_true",
                        help=f"write {REPORT} from the finished runs and print it")
    args = parser.parse_args(argv)
    if args.report:
        for name, table in report().items():
            print(f"## {name}: {table['settings']}\n\nbaseline test error: {table['baseline']}\n\n"
                  f"{markdown(table['rows'])}\n")
        return
    settings, error = choose(args.cache, args.jobs, progress=True)
    print(f"PreResNet without Dropout at {FIRST_SIZE} training sequences, seeds "
          f"{CALIBRATION_SEEDS}: {error:.2f} % test error; regime: {settings.describe()}",
          flush=True)
    arms = OTHER_PILOT_ARMS if args.other_arms else PILOT_ARMS
    _tasks.run(pilot_tasks(settings, args.blocks, arms), args.cache, jobs=args.jobs, progress=True)


if __name__ == "__main__":
    main()
