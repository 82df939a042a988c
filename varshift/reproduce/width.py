"""The second locked protocol of issue 24: width at fixed depth, Fig. 3's d cos^2, and
ResNeXt, declared in ``protocols/width.json`` before any of its runs.

Its claims are more than accuracy differences, so each names a *statistic* per seed:

* ``"difference"``: the signed sum of its terms, each one quantity of one run
  (architecture, PreResNet ``widen``, placement, rate, noise): an accuracy quantity of
  :func:`varshift.reproduce.power.accuracy`, the ``shift`` of the given BatchNorm
  layers (mean of their ``max(real/moving, moving/real)``), or the ``d_cos2`` of the
  given weight layers;
* ``"slope"``: the least-squares slope of one quantity (optionally its log) against
  ``log2 widen`` or ``log d`` over the declared widths, minus a declared constant or
  minus the same slope of the networks at initialisation (paired by seed).

Layers are given by their index in the run's ``bn`` or ``weights`` rows (walk order),
which is the same for every width and placement of a network.

Run it from the repository root with ``python -m varshift.reproduce.width``
(``--jobs``): it locks the file (:func:`varshift.reproduce.protocol.lock`) on its first
run, then trains the ResNeXt pilot and every confirmatory run into :data:`CACHE`,
resumably. ``--report`` computes nothing and refuses a file changed after its runs were
locked; it judges a Holm family only once every declared run of it exists, and prints
the ResNeXt pilot's power table once the pilot is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import tasks as _tasks
from .._files import atomic_write
from .._json import json_ready
from ..tasks import Task
from ..verdicts import Claim, holm, tally
from . import power, protocol
from .plan import network_task

__all__ = ["PATH", "CACHE", "REPORT", "QUANTITIES", "XS", "Term", "Slope", "WidthClaim",
           "WidthProtocol", "load", "run_task", "statistic", "progress", "judge", "pilot_table",
           "markdown", "main"]

PATH = protocol.FOLDER / "width.json"
"""The declared protocol (package data)."""
CACHE = Path("figures/width/tasks")
"""Where its runs are cached (relative to the repository root)."""
REPORT = Path("figures/width/verdicts.json")
QUANTITIES = ("test", "adjusted", "train_mode", "eval_mode", "shift", "d_cos2")
"""What a term measures of one run (``shift`` and ``d_cos2`` need ``layers``)."""
XS = ("log2 widen", "log d")
"""What a slope is taken against."""
_ARCHS = ("PreResNet", "ResNeXt")
_LAYERED = {"shift": "bn", "d_cos2": "weights"}


@dataclass(frozen=True)
class Term:
    """``sign * quantity`` of the run (``arch``, ``widen``, ``arm``) of one seed;
    ``arm`` is ``(placement, rate, noise)``, ``layers`` the indices of the rows the
    quantity is averaged over (``shift``, ``d_cos2``), else empty."""

    sign: int
    arch: str
    widen: int
    arm: tuple
    quantity: str
    layers: tuple = ()


@dataclass(frozen=True)
class Slope:
    """The per-seed slope of ``quantity`` (its log if ``log_y``) against ``x`` over
    ``widens`` of one PreResNet arm, minus ``minus``: a number, or ``"initialisation"``
    (the same slope of the weights each seed starts from; ``d_cos2`` only)."""

    arch: str
    arm: tuple
    widens: tuple
    quantity: str
    layers: tuple
    x: str
    log_y: bool
    minus: object


@dataclass(frozen=True)
class WidthClaim:
    """One declared claim: a ``"difference"`` of ``terms`` or a ``slope``, judged
    against 0 in ``direction`` (or inside ``margin``, direction 0)."""

    id: str
    figure: str
    text: str
    terms: tuple
    slope: Slope | None
    direction: int
    margin: float | None
    paper_effect: float | None
    paper_source: str
    paper_quote: str
    status: str
    seeds: int | None
    why: str

    @property
    def runs(self):
        """``(arch, widen, arm)`` of every run the claim needs (per seed)."""
        if self.slope is not None:
            return sorted((self.slope.arch, w, self.slope.arm) for w in self.slope.widens)
        return sorted({(t.arch, t.widen, t.arm) for t in self.terms})

    def accuracy_claim(self):
        """The claim as a :class:`~varshift.reproduce.power.AccuracyClaim` (accuracy
        differences of widen-1 runs only, as the pilot's power table takes them)."""
        return power.AccuracyClaim(self.figure, self.text,
                                   tuple(power.Term(t.sign, t.arch, t.arm, t.quantity)
                                         for t in self.terms), self.direction, self.margin)


@dataclass(frozen=True)
class WidthProtocol:
    """The loaded ``width.json``."""

    version: int
    settings: object
    first_seed: int
    pilot_arch: str
    pilot_seeds: tuple
    pilot_arms: tuple
    claims: tuple
    families: tuple
    sha256: str
    path: Path

    @property
    def confirmatory(self):
        """The claims the runs judge (each in one Holm family)."""
        return [c for c in self.claims if c.status == "confirmatory"]

    def claim_seeds(self, claim):
        """The seeds a confirmatory claim is judged on: its own first ones."""
        return range(self.first_seed, self.first_seed + claim.seeds)

    def tasks(self, ids=None):
        """The confirmatory runs (of the claims ``ids``; default all), seed-major, so a
        stopped run has whole seeds."""
        wanted = {}
        for c in self.confirmatory:
            if ids is None or c.id in ids:
                for run in c.runs:
                    wanted[run] = max(wanted.get(run, 0), c.seeds)
        most = max(wanted.values(), default=0)
        return [run_task(self.settings, *run, self.first_seed + i)
                for i in range(most) for run, n in sorted(wanted.items()) if i < n]

    def pilot_tasks(self):
        """The ResNeXt pilot's runs, seed-major."""
        return [run_task(self.settings, self.pilot_arch, 1, arm, s)
                for s in self.pilot_seeds for arm in self.pilot_arms]


def run_task(settings, arch, widen, arm, seed):
    """The task of one run: :func:`varshift.reproduce.plan.network_task`, with ``widen``
    added to its parameters and label only when it is not 1 (so a widen-1 run is the
    PreResNet run of every other cache, with the same key)."""
    task = network_task(settings, arch, arm[0], arm[1], seed, arm[2])
    if widen == 1:
        return task
    label = task.label.replace(f"network/{arch}/", f"network/{arch}-w{widen}/", 1)
    return Task(label, task.function, {**task.params, "widen": widen}, task.options)


def _arm(entry):
    return (entry["placement"], float(entry["rate"]), entry["noise"])


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _layers(entry, where, path):
    layers = tuple(entry.get("layers") or ())
    layered = entry["quantity"] in _LAYERED
    protocol.require(all(_int(i) and i >= 0 for i in layers) and bool(layers) == layered, path,
                     f"{where}: 'layers' (row indices) go with quantities {tuple(_LAYERED)} and "
                     f"only with them, got {entry['quantity']!r} with {layers!r}")
    return layers


def _term(entry, where, path):
    protocol.require(entry.get("arch") in _ARCHS and entry.get("quantity") in QUANTITIES
                     and entry.get("sign") in (1, -1), path, f"{where}: bad term {entry!r}")
    widen = entry.get("widen", 1)
    protocol.require(_int(widen) and widen >= 1 and (widen == 1 or entry["arch"] == "PreResNet"),
                     path, f"{where}: widen must be a positive integer (PreResNet only), got {widen!r}")
    return Term(entry["sign"], entry["arch"], widen, _arm(entry), entry["quantity"],
                _layers(entry, where, path))


def _slope(entry, where, path):
    widens = tuple(entry.get("widens", ()))
    protocol.require(entry.get("arch") == "PreResNet" and len(widens) >= 3
                     and all(_int(w) and w >= 1 for w in widens) and len(set(widens)) == len(widens),
                     path, f"{where}: a slope needs PreResNet and at least 3 distinct widens, "
                     f"got {entry.get('arch')!r} with {widens!r}")
    protocol.require(entry.get("x") in XS and entry.get("quantity") in QUANTITIES, path,
                     f"{where}: x must be one of {XS} and quantity one of {QUANTITIES}")
    minus = entry["minus"]
    protocol.require(minus == "initialisation" and entry["quantity"] == "d_cos2"
                     or isinstance(minus, (int, float)) and not isinstance(minus, bool), path,
                     f"{where}: minus must be a number or 'initialisation' (d_cos2 only), got {minus!r}")
    return Slope(entry["arch"], _arm(entry), widens, entry["quantity"], _layers(entry, where, path),
                 entry["x"], bool(entry["log_y"]), minus)


def _claim(entry, path):
    where = f"claim {entry.get('id', '?')!r}"
    keys = {"id", "figure", "text", "statistic", "direction", "margin", "paper", "status", "seeds",
            "why"}
    protocol.require(isinstance(entry, dict) and keys <= set(entry) <= keys | {"terms", "slope"},
                     path, f"{where} must have the keys {sorted(keys)} and 'terms' or 'slope'")
    kind = entry["statistic"]
    protocol.require(kind in ("difference", "slope") and (kind == "slope") == ("slope" in entry)
                     and (kind == "difference") == ("terms" in entry), path,
                     f"{where}: statistic 'difference' has 'terms', 'slope' has 'slope', got {kind!r}")
    protocol.require(entry["status"] in protocol.STATUSES, path,
                     f"{where}: status must be one of {protocol.STATUSES}, got {entry['status']!r}")
    protocol.require(entry["direction"] in (1, -1, 0), path, f"{where}: direction must be 1, -1 or 0")
    protocol.require((entry["margin"] is None) == (entry["direction"] != 0), path,
                     f"{where}: a margin goes with direction 0 and only with it")
    seeds = entry["seeds"]
    if entry["status"] == "confirmatory":
        protocol.require(_int(seeds) and 3 <= seeds <= power.BUDGET, path,
                         f"{where}: a confirmatory claim needs 3 to {power.BUDGET} seeds, got {seeds!r}")
    else:
        protocol.require(seeds is None, path, f"{where}: only confirmatory claims have seeds, got {seeds!r}")
    terms = tuple(_term(t, where, path) for t in entry.get("terms", ()))
    protocol.require(kind == "slope" or terms, path, f"{where}: no terms")
    slope = _slope(entry["slope"], where, path) if kind == "slope" else None
    paper = entry["paper"]
    return WidthClaim(entry["id"], entry["figure"], entry["text"], terms, slope, entry["direction"],
                      entry["margin"], paper["effect"], paper["source"], paper["quote"],
                      entry["status"], seeds, entry["why"])


def load(path=PATH) -> WidthProtocol:
    """Read and validate the width protocol file.

    Raises
    ------
    ValueError
        Naming the file and the offending field.
    """
    path = Path(path)
    doc, settings = protocol.read(path)
    claims = tuple(_claim(c, path) for c in doc["claims"])
    ids = [c.id for c in claims]
    protocol.require(len(set(ids)) == len(ids), path, "claim ids must be unique")
    families = tuple(tuple(f) for f in doc["holm_families"])
    in_families = sorted(i for f in families for i in f)
    confirmatory = sorted(c.id for c in claims if c.status == "confirmatory")
    protocol.require(in_families == confirmatory, path,
                     f"holm_families must hold every confirmatory claim exactly once: families "
                     f"{in_families}, confirmatory {confirmatory}")
    pilot = doc["pilot"]
    protocol.require(pilot["arch"] in _ARCHS and pilot["seeds"] and pilot["arms"], path,
                     f"pilot must name an architecture of {_ARCHS}, seeds and arms, got {pilot!r}")
    return WidthProtocol(doc["version"], settings, int(doc["first_seed"]), pilot["arch"],
                         tuple(range(*pilot["seeds"])), tuple(_arm(a) for a in pilot["arms"]),
                         claims, families, protocol.digest(path), path)


# ------------------------------------------------------------------ per-seed statistics
def _quantity(result, quantity, layers):
    if quantity not in _LAYERED:
        return power.accuracy(result, quantity)
    rows = result[_LAYERED[quantity]]
    return float(np.mean([rows[i][quantity] for i in layers]))


def _d(rows, layers):
    return float(np.mean([rows[i]["d"] for i in layers]))


def _fit(xs, ys):
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def _slope_of(rows_by_widen, slope):
    """Slope of ``slope.quantity`` over widths, given each width's rows (the result)."""
    xs, ys = [], []
    for w in slope.widens:
        result = rows_by_widen[w]
        y = _quantity(result, slope.quantity, slope.layers)
        ys.append(np.log(y) if slope.log_y else y)
        xs.append(np.log2(w) if slope.x == "log2 widen" else np.log(_d(result["weights"], slope.layers)))
    return _fit(xs, ys)


def statistic(claim, runs, seed):
    """The claim's statistic for one seed.

    Parameters
    ----------
    claim : WidthClaim
    runs : dict
        ``(arch, widen, arm) -> {seed: result}`` (results of
        :func:`varshift.reproduce.experiments.train_network`).
    seed : int

    Returns
    -------
    float
    """
    if claim.slope is None:
        return float(sum(t.sign * _quantity(runs[(t.arch, t.widen, t.arm)][seed], t.quantity, t.layers)
                         for t in claim.terms))
    s = claim.slope
    trained = _slope_of({w: runs[(s.arch, w, s.arm)][seed] for w in s.widens}, s)
    if s.minus != "initialisation":
        return trained - float(s.minus)
    from .experiments import initial_weights

    start = {w: {"weights": initial_weights(s.arch, seed, None if w == 1 else w)} for w in s.widens}
    return trained - _slope_of(start, s)


# ------------------------------------------------------------------ progress and verdicts
def _stored(tasks, cache):
    """``(arch, widen, arm) -> {seed: result}`` of the ``tasks`` stored in ``cache``."""
    stored = _tasks.cached(tasks, cache)
    runs = {}
    for task in tasks:
        if task.key in stored:
            p = task.params
            arm = (p["placement"], float(p["rate"]), p["noise"])
            runs.setdefault((p["arch"], p.get("widen", 1), arm), {})[p["seed"]] = stored[task.key]["result"]
    return runs


def progress(proto, cache=CACHE):
    """``{"pilot": (done, declared), family index: (done, declared), ...}``."""
    out = {"pilot": (len(_tasks.cached(proto.pilot_tasks(), cache)), len(proto.pilot_tasks()))}
    for i, family in enumerate(proto.families):
        runs = proto.tasks(set(family))
        out[i] = (len(_tasks.cached(runs, cache)), len(runs))
    return out


def judge(proto, cache=CACHE):
    """The verdicts of every Holm family whose declared runs all exist.

    Returns
    -------
    list of dict
        Per confirmatory claim of a complete family: ``id``, ``family``, ``text``,
        ``paper``, the :class:`~varshift.verdicts.Claim` fields (``verdict``
        unadjusted) and ``holm`` (adjusted within its family). Claims of incomplete
        families are left out: no verdict before every declared seed.

    Raises
    ------
    ProtocolChanged
        If the file changed after its runs were locked.
    """
    protocol.check(proto, cache)
    by_id = {c.id: c for c in proto.claims}
    rows = []
    for index, family in enumerate(proto.families):
        runs_of = proto.tasks(set(family))
        if len(_tasks.cached(runs_of, cache)) < len(runs_of):
            continue
        runs = _stored(runs_of, cache)
        judged = []
        for i in family:
            c = by_id[i]
            d = [statistic(c, runs, s) for s in proto.claim_seeds(c)]
            judged.append(Claim.paired(c.text, c.paper_source, d, 0.0, direction=c.direction,
                                       min_effect=c.margin or 0.0, digits=3,
                                       names=("statistic", "0")))
        for c_id, claim, adjusted in zip(family, judged, holm(judged)):
            rows.append({"id": c_id, "family": index, "quote": by_id[c_id].paper_quote,
                         **claim.__dict__, "holm": adjusted})
    return rows


def pilot_table(proto, cache=CACHE):
    """The ResNeXt pilot's power table (:func:`varshift.reproduce.power.analyse` over the
    declared ResNeXt accuracy claims, Holm's ``m`` their number), or None until every
    pilot run exists."""
    done, declared = progress(proto, cache)["pilot"]
    if done < declared:
        return None
    claims = [c for c in proto.claims if c.slope is None and all(t.arch == proto.pilot_arch
                                                                 and t.quantity not in _LAYERED
                                                                 for t in c.terms)]
    runs = {(arch, arm): v for (arch, _, arm), v in _stored(proto.pilot_tasks(), cache).items()}
    return power.analyse([c.accuracy_claim() for c in claims], runs)


def markdown(proto, record, rows, progress_):
    """The verdicts (and the progress of the families not judged yet) as Markdown."""
    lines = [f"# Width at fixed depth and ResNeXt: protocol version {proto.version}", "",
             f"Protocol `{proto.path.name}`, sha256 `{proto.sha256}`, locked in commit "
             f"{record['commit']}; seeds from {proto.first_seed}.", ""]
    for index, family in enumerate(proto.families):
        mine = [r for r in rows if r["family"] == index]
        if not mine:
            done, declared = progress_[index]
            lines.append(f"- Family {index + 1} ({', '.join(family)}): {done} of {declared} "
                         "declared runs done; no verdict yet.")
            continue
        adjusted = [Claim(**{k: r[k] for k in Claim.__dataclass_fields__} | {"verdict": r["holm"]})
                    for r in mine]
        lines.append(f"- Family {index + 1} ({', '.join(family)}), Holm-adjusted: {tally(adjusted)}")
    lines += ["", "| id | claim | ours: statistic [95 % CI], n | verdict | Holm |", "|---|---|---|---|---|"]
    lines += [f"| {r['id']} | {r['text']} | {r['ours']} | {r['verdict']} | {r['holm']} |" for r in rows]
    lines += ["", "| id | paper |", "|---|---|"]
    lines += [f"| {r['id']} | {r['paper']}: \"{r['quote']}\" |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Command line: lock the protocol, then run (or report on) its declared runs."""
    args = protocol.runner_arguments(
        "width", __doc__.splitlines()[0], CACHE,
        f"write {REPORT} for the complete families, else say how many runs are done").parse_args(argv)
    proto = load(PATH)
    if args.report:
        record = protocol.check(proto, args.cache)
        if record is None:
            print(f"{proto.path.name} version {proto.version} has not run yet")
            return
        done = progress(proto, args.cache)
        table = pilot_table(proto, args.cache)
        if table is not None:
            from .pilot import markdown as power_markdown

            print(f"## ResNeXt pilot\n\n{power_markdown(table)}\n")
        rows = judge(proto, args.cache)
        text = markdown(proto, record, rows, done)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(REPORT, "w", owner="width.report") as f:
            f.write(json.dumps(json_ready({"version": proto.version, "sha256": proto.sha256,
                                           "commit": record["commit"], "pilot": table,
                                           "claims": rows}), indent=1) + "\n")
        with atomic_write(REPORT.with_suffix(".md"), "w", owner="width.report") as f:
            f.write(text)
        print(text)
        return
    record = protocol.lock(proto, args.cache)
    runs = proto.pilot_tasks() + proto.tasks()
    print(f"{proto.path.name} version {proto.version} (sha256 {proto.sha256[:12]}, commit "
          f"{record['commit']}): {len(runs)} runs", flush=True)
    _tasks.run(runs, args.cache, jobs=args.jobs, progress=True)


if __name__ == "__main__":
    main()
