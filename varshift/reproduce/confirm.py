"""The confirmatory run of issue 24: the locked protocol's claims on fresh seeds.

Run it from the repository root with ``python -m varshift.reproduce.confirm`` (``--jobs``;
``--protocol reestimation`` runs the other protocol of the same format, :data:`PROTOCOLS`):
it locks :mod:`varshift.reproduce.protocol`'s file on its first run, then trains every
declared run into :data:`CACHE` (resumable: finished runs are skipped). ``--report``
computes nothing: until every declared run of a Holm family exists it only says how many
are done (no verdict is looked at before the declared number of seeds); then it judges
each confirmatory claim of every complete family, adjusts each family with Holm's
procedure, and writes :data:`REPORT` (JSON) and its Markdown beside it, the claims of
incomplete families listed with their runs done; REPORT.md's summary and its section
"Confirmatory run" are rendered from that JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import tasks as _tasks
from .._files import atomic_write
from .._json import json_ready
from ..verdicts import Claim, holm
from . import power, protocol
from .plan import network_task
from .results import (
    CONFIRMATORY,
    CONFIRMATORY_TITLE,
    REESTIMATION,
    REESTIMATION_TITLE,
    confirmatory_markdown,
)

__all__ = ["CACHE", "REPORT", "PROTOCOLS", "progress", "family_progress", "judge", "document",
           "main"]

CACHE = Path("figures/confirmatory/tasks")
"""Where the confirmatory runs are cached (relative to the repository root)."""
REPORT = Path("figures") / CONFIRMATORY
SIZING = Path("figures/power/power.json")
"""The pilot's power table, whose ``'pilot'`` rows sized the confirmatory claims."""


def progress(proto, cache=CACHE, ids=None):
    """``(done, declared)``: how many of the protocol's runs (those of the claims ``ids``,
    default all) are in ``cache``."""
    runs = proto.tasks(ids)
    return len(_tasks.cached(runs, cache)), len(runs)


def family_progress(proto, cache=CACHE):
    """``[(family, done, declared)]``: each Holm family's runs in ``cache``."""
    return [(family, *progress(proto, cache, family)) for family in proto.families]


def _runs(proto, cache):
    stored = _tasks.cached(proto.tasks(), cache)
    runs = {}
    for task in proto.tasks():
        if task.key in stored:
            p = task.params
            arm = (p["placement"], float(p["rate"]), p["noise"])
            runs.setdefault((p["arch"], arm), {})[p["seed"]] = stored[task.key]["result"]
    return runs


def judge(proto, cache=CACHE, sizing=SIZING, twins=CACHE):
    """Every claim of ``proto`` with its verdict, from the finished runs.

    Parameters
    ----------
    proto : protocol.Protocol
    cache : path
        The protocol's runs.
    sizing : path
        The pilot's power table (``sized_for``).
    twins : path
        The confirmatory run's cache, whose runs must equal those of a protocol with
        ``task_options`` where they train the same network (:func:`_check_twins`).

    Returns
    -------
    list of dict
        Per claim: ``id``, ``status``, ``text`` and ``why``. A confirmatory claim also has
        ``family`` (its Holm family's number, from 1) and, where every run of its family
        exists, the :class:`~varshift.verdicts.Claim` fields (``verdict`` unadjusted),
        ``holm`` (the verdict adjusted within its family), ``sd`` (of the per-seed
        differences), ``direction`` (the declared sign; 0: an equivalence claim within
        ``margin``), ``paper_effect`` (the paper's difference, points, as declared) and
        ``sized_for`` (the effect the pilot table ``sizing`` sized the claim for; None
        where it gives none); else ``runs``, ``[done, declared]`` of its family.

    Raises
    ------
    FileNotFoundError
        If no family has all its declared runs (verdicts wait for every declared seed of
        a family).
    ProtocolChanged
        If the file changed after its runs were locked.
    RuntimeError
        If a run differs from its twin in ``twins``.
    """
    protocol.check(proto, cache)
    families = family_progress(proto, cache)
    complete = [ids for ids, done, declared in families if done == declared]
    if not complete:
        counts = "; ".join(f"{done} of {declared}" for _, done, declared in families)
        raise FileNotFoundError(f"{counts} declared runs (per Holm family) are in {cache}: "
                                "verdicts wait for all of a family's runs")
    _check_twins(proto, cache, twins)
    runs = _runs(proto, cache)
    judged, sds = [], {}
    for c in proto.confirmatory:
        if not any(c.id in ids for ids in complete):
            continue
        wanted = range(proto.first_seed, proto.first_seed + c.seeds)
        mine = {arm: {s: r for s, r in runs[arm].items() if s in wanted} for arm in c.claim.arms}
        seeds, d = power.differences(c.claim, mine)
        if len(seeds) != c.seeds:
            raise FileNotFoundError(f"claim {c.id} needs seeds {wanted.start}-{wanted.stop - 1} "
                                    f"in every arm; {cache} has {seeds}")
        sds[c.id] = float(np.std(d, ddof=1))
        judged.append(Claim.paired(c.claim.text, c.paper_source, d, 0.0, direction=c.claim.direction,
                                   min_effect=c.claim.margin or 0.0, unit=" points",
                                   names=("difference", "0")))
    by_id = dict(zip(sds, judged))
    adjusted = {}
    for family in complete:  # each family adjusted on its own
        adjusted.update(zip(family, holm([by_id[i] for i in family])))
    number = {i: n for n, (ids, _, _) in enumerate(families, 1) for i in ids}
    progress_of = {i: [done, declared] for ids, done, declared in families for i in ids}
    sized_for = _sized_for(sizing)
    rows = []
    for c in proto.claims:
        row = {"id": c.id, "status": c.status, "text": c.claim.text, "why": c.why}
        if c.id in by_id:
            row.update(by_id[c.id].__dict__, family=number[c.id], holm=adjusted[c.id],
                       sd=sds[c.id], direction=c.claim.direction, margin=c.claim.margin,
                       sized_for=sized_for.get(c.claim.text), paper_effect=c.paper_effect)
        elif c.status == "confirmatory":
            row.update(family=number[c.id], runs=progress_of[c.id])
        rows.append(row)
    return rows


def _check_twins(proto, cache, twins):
    """A protocol whose runs take ``task_options`` trains the same networks as the runs
    without them (same seed, same arm): where such a twin is in ``twins``, its test error
    and its error after Adjust must equal this run's exactly.

    Raises
    ------
    RuntimeError
        Naming the run and both values, if any differs.
    """
    if not proto.task_options:
        return
    for task in proto.tasks():
        p = {k: v for k, v in task.params.items() if k not in proto.task_options}
        twin = network_task(proto.settings, p["arch"], p["placement"], p["rate"], p["seed"],
                            p["noise"])
        mine, theirs = (_tasks.cached([t], c).get(t.key) for t, c in ((task, cache), (twin, twins)))
        if mine is None or theirs is None:
            continue
        for quantity in ("test", "adjusted"):
            a, b = (power.accuracy(r["result"], quantity) for r in (mine, theirs))
            if a != b:
                raise RuntimeError(f"{task.key}: {quantity} error {a} differs from {b} of the same "
                                   f"network in {twins} ({twin.key}); the runs are not the same")


def _sized_for(sizing):
    """Claim text -> the effect the pilot table ``sizing`` sized it for (the paper's,
    scaled to the pilot's error level; points), from its ``'pilot'`` rows; empty where
    the file does not exist."""
    if not Path(sizing).exists():
        return {}
    rows = json.loads(Path(sizing).read_text())["pilot"]["rows"]
    return {r["text"]: r["scaled"] for r in rows if r.get("scaled") is not None}


def document(proto, record, rows, earlier=None) -> dict:
    """:data:`REPORT`'s JSON document: the protocol's version, hash and locking commit,
    the earlier versions' locks (``earlier``: version -> lock record, from the cache's
    lock file), its regime and first seed, and :func:`judge`'s ``rows``."""
    locks = {v: r["commit"] for v, r in sorted((earlier or {}).items(), key=lambda i: int(i[0]))
             if int(v) < proto.version}
    return json_ready({"file": proto.path.name, "version": proto.version, "sha256": proto.sha256,
                       "commit": record["commit"], **({"earlier": locks} if locks else {}),
                       "regime": proto.settings.describe().split("; ", 2)[-1],
                       "train_sequences": proto.settings.train_sequences,
                       "first_seed": proto.first_seed, "claims": rows})


PROTOCOLS = {
    "confirmatory": (protocol.PATH, CACHE, CONFIRMATORY_TITLE),
    "reestimation": (protocol.REESTIMATION, Path("figures") / REESTIMATION.parent / "tasks",
                     REESTIMATION_TITLE),
}
"""``--protocol`` name -> (protocol file, default cache, title of its verdicts)."""


def main(argv=None):
    """Command line: lock the protocol, then run (or report on) its declared runs."""
    parser = protocol.runner_arguments(
        "confirm", __doc__.splitlines()[0], None,
        "write verdicts.json (and .md) beside the cache once every declared run exists, else "
        "say how many do")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="confirmatory",
                        help="which protocol file (default: confirmatory)")
    args = parser.parse_args(argv)
    path, cache, title = PROTOCOLS[args.protocol]
    cache = args.cache or cache
    proto = protocol.load(path)
    if args.report:
        record = protocol.check(proto, cache)
        families = family_progress(proto, cache)
        if record is None or all(done < declared for _, done, declared in families):
            counts = "; ".join(f"{done} of {declared}" for _, done, declared in families)
            print(f"{counts} declared runs (per Holm family) done; verdicts wait for all of a "
                  "family's runs")
            return
        rows = judge(proto, cache)
        report = cache.parent / REPORT.name
        verdicts = document(proto, record, rows, protocol.locks(cache))
        with atomic_write(report, "w", owner="confirm.report") as f:
            f.write(json.dumps(verdicts, indent=1) + "\n")
        text = "\n".join(confirmatory_markdown(verdicts, "#", title)) + "\n"
        with atomic_write(report.with_suffix(".md"), "w", owner="confirm.report") as f:
            f.write(text)
        print(text)
        return
    record = protocol.lock(proto, cache)
    print(f"protocol version {proto.version} (sha256 {proto.sha256[:12]}, commit "
          f"{record['commit']}): {len(proto.tasks())} runs", flush=True)
    _tasks.run(proto.tasks(), cache, jobs=args.jobs, progress=True)


if __name__ == "__main__":
    main()
