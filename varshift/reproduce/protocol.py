"""The locked protocols of issue 24: declared before their runs, locked by git.

A protocol is a versioned JSON file in ``protocols/`` beside this module. This module
reads the parts every protocol shares (:func:`read`: the version and the training
regime) and locks any loaded protocol (:func:`lock`, :func:`check`: anything with
``version``, ``sha256`` and ``path``). It also loads the first one, the confirmatory
run's ``protocols/confirmatory.json`` (:func:`load`); the second, width at fixed depth
and ResNeXt, is :mod:`varshift.reproduce.width`'s.

Every accuracy claim of the confirmatory run is declared in one versioned file,
``protocols/confirmatory.json`` beside this module, before any of its runs exists: its
quantity (signed terms: architecture, arm, test error or training accuracy), direction,
margin, the paper's effect with its table and row, its status (confirmatory, not
testable at this regime, or awaiting its pilot) and its number of seeds.

The file is *locked* by its first run: :func:`lock` refuses to start unless the file is
committed unchanged in git, and records the file's SHA-256 and the commit in the run's
cache (``protocol-lock.json``). From then on :func:`check` refuses to run or judge with a
file whose version was locked under another hash: a claim changed after its tasks were
computed needs a new ``version`` and a line in REPORT's "Changes after results"
(:mod:`varshift.reproduce.disclosures`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .._files import atomic_write
from .plan import Settings, network_task
from .power import AccuracyClaim, Term

__all__ = ["FOLDER", "PATH", "REESTIMATION", "STATUSES", "Protocol", "ProtocolChanged", "require", "read", "load", "digest",
           "lock", "locks", "check"]

FOLDER = Path(__file__).with_name("protocols")
"""Where the declared protocols are (package data)."""
PATH = FOLDER / "confirmatory.json"
"""The confirmatory run's protocol."""
REESTIMATION = FOLDER / "reestimation.json"
"""The protocol comparing three re-estimations of the statistics (same format)."""
STATUSES = ("confirmatory", "not testable at this regime", "awaiting its pilot")
LOCK = "protocol-lock.json"
"""Name of the lock record in a run's cache folder."""
_ARCHS = ("PreResNet", "WRN", "DenseNet")
_QUANTITIES = ("test", "adjusted", "train_mode", "eval_mode", "adjusted_dropout_on",
               "adjusted_unused")
_TASK_OPTIONS = ("reestimate",)
"""Keyword arguments of ``train_network`` a protocol's ``task_options`` may set."""


class ProtocolChanged(RuntimeError):
    """The protocol file differs from the one its runs were computed under."""


@dataclass(frozen=True)
class DeclaredClaim:
    """One claim of the protocol: an :class:`~varshift.reproduce.power.AccuracyClaim`
    with its id, status, seeds (confirmatory claims only) and the paper's effect."""

    id: str
    claim: AccuracyClaim
    status: str
    seeds: int | None
    paper_effect: float | None
    paper_source: str
    why: str


@dataclass(frozen=True)
class Protocol:
    """A loaded protocol file."""

    version: int
    settings: Settings
    first_seed: int
    claims: tuple
    families: tuple
    """Holm families: tuples of confirmatory claim ids, each adjusted on its own."""
    sha256: str
    path: Path
    task_options: dict = field(default_factory=dict)
    """More keyword arguments of every run's ``train_network`` (the file's optional
    ``task_options``)."""

    @property
    def confirmatory(self):
        """The claims the confirmatory run judges."""
        return [c for c in self.claims if c.status == "confirmatory"]

    def seeds(self, ids=None):
        """``(arch, arm) -> number of seeds``: the most any confirmatory claim needs (of
        the claims ``ids``, default all)."""
        out = {}
        for c in self.confirmatory:
            if ids is None or c.id in ids:
                for arm in c.claim.arms:
                    out[arm] = max(out.get(arm, 0), c.seeds)
        return out

    def tasks(self, ids=None):
        """Every run of the confirmatory claims (of the claims ``ids``, default all),
        seed-major (seed ``first_seed + i`` of every arm before seed
        ``first_seed + i + 1``), so a stopped run has whole seeds."""
        seeds = self.seeds(ids)
        most = max(seeds.values(), default=0)
        return [network_task(self.settings, arch, arm[0], arm[1], self.first_seed + i, arm[2],
                             self.task_options or None)
                for i in range(most) for (arch, arm), n in sorted(seeds.items()) if i < n]


def digest(path=PATH) -> str:
    """SHA-256 (hex) of the protocol file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def require(condition, path, what):
    """Raise ``ValueError("{path}: {what}")`` unless ``condition`` (protocol validation)."""
    if not condition:
        raise ValueError(f"{path}: {what}")


def _claim(entry, path):
    where = f"claim {entry.get('id', '?')!r}"
    keys = {"id", "figure", "text", "terms", "direction", "margin", "paper", "status", "seeds", "why"}
    require(isinstance(entry, dict) and set(entry) == keys, path,
             f"{where} must have exactly the keys {sorted(keys)}, got "
             f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__}")
    require(entry["status"] in STATUSES, path,
             f"{where}: status must be one of {STATUSES}, got {entry['status']!r}")
    require(entry["direction"] in (1, -1, 0), path, f"{where}: direction must be 1, -1 or 0")
    require((entry["margin"] is None) == (entry["direction"] != 0), path,
             f"{where}: a margin goes with direction 0 and only with it")
    seeds = entry["seeds"]
    if entry["status"] == "confirmatory":
        require(isinstance(seeds, int) and not isinstance(seeds, bool) and 3 <= seeds <= 30, path,
                 f"{where}: a confirmatory claim needs 3 to 30 seeds, got {seeds!r}")
    else:
        require(seeds is None, path, f"{where}: only confirmatory claims have seeds, got {seeds!r}")
    terms = []
    for t in entry["terms"]:
        require(t.get("arch") in _ARCHS and t.get("quantity") in _QUANTITIES
                 and t.get("sign") in (1, -1), path, f"{where}: bad term {t!r}")
        terms.append(Term(t["sign"], t["arch"], (t["placement"], float(t["rate"]), t["noise"]),
                          t["quantity"]))
    require(terms, path, f"{where}: no terms")
    claim = AccuracyClaim(entry["figure"], entry["text"], tuple(terms), entry["direction"],
                          entry["margin"])
    return DeclaredClaim(entry["id"], claim, entry["status"], seeds, entry["paper"]["effect"],
                         entry["paper"]["source"], entry["why"])


def read(path):
    """A protocol file's JSON document and the training settings of its regime (the parts
    every protocol shares).

    Returns
    -------
    doc : dict
    settings : plan.Settings

    Raises
    ------
    ValueError
        Naming the file and the offending field: ``version`` not an integer >= 1, or a
        ``regime`` whose epochs or number of sequences are not those of its settings.
    """
    path = Path(path)
    doc = json.loads(path.read_text())
    require(isinstance(doc.get("version"), int) and doc["version"] >= 1, path,
             f"version must be an integer >= 1, got {doc.get('version')!r}")
    regime = doc["regime"]
    settings = Settings(quick=False, train_sequences=regime["train_sequences"])
    require(settings.epochs == regime["epochs"] and settings.num_samples == regime["num_samples"],
             path, f"regime {regime} does not match the settings it names ({settings.describe()})")
    return doc, settings


def load(path=PATH) -> Protocol:
    """Read and validate a protocol file of the confirmatory format (:data:`PATH`,
    :data:`REESTIMATION`).

    Raises
    ------
    ValueError
        Naming the file and the offending field.
    """
    path = Path(path)
    doc, settings = read(path)
    claims = tuple(_claim(c, path) for c in doc["claims"])
    ids = [c.id for c in claims]
    require(len(set(ids)) == len(ids), path, "claim ids must be unique")
    families = tuple(tuple(f) for f in doc["holm_families"])
    in_families = [i for f in families for i in f]
    confirmatory = [c.id for c in claims if c.status == "confirmatory"]
    require(sorted(in_families) == sorted(confirmatory), path,
             f"holm_families must hold every confirmatory claim exactly once: families "
             f"{sorted(in_families)}, confirmatory {sorted(confirmatory)}")
    options = doc.get("task_options", {})
    require(isinstance(options, dict) and set(options) <= set(_TASK_OPTIONS), path,
             f"task_options may set only {_TASK_OPTIONS}, got {options!r}")
    return Protocol(doc["version"], settings, int(doc["first_seed"]), claims, families,
                    digest(path), path, dict(options))


def _git(*args, cwd):
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    return out.stdout.strip() if out.returncode == 0 else None


def locks(cache):
    """The lock records in ``cache``: version (a string) -> ``{"sha256", "commit"}``."""
    path = Path(cache) / LOCK
    return json.loads(path.read_text()) if path.exists() else {}


def check(protocol, cache):
    """Refuse a protocol whose version was locked in ``cache`` under another hash.

    ``protocol`` is any loaded protocol: an object with ``version``, ``sha256`` and
    ``path`` (:class:`Protocol`, :class:`varshift.reproduce.width.WidthProtocol`).

    Returns
    -------
    dict or None
        The lock record of ``protocol.version`` (``sha256``, ``commit``), None if this
        version has not run yet.

    Raises
    ------
    ProtocolChanged
    """
    record = locks(cache).get(str(protocol.version))
    if record is not None and record["sha256"] != protocol.sha256:
        raise ProtocolChanged(
            f"{protocol.path} changed after its runs were computed: version {protocol.version} "
            f"was locked as sha256 {record['sha256'][:12]} (commit {record['commit']}), the file "
            f"is now {protocol.sha256[:12]}. Bump 'version' and disclose the change in "
            "varshift/reproduce/disclosures.py.")
    return record


def lock(protocol, cache):
    """Lock ``protocol`` (any loaded protocol, as in :func:`check`) before its first run:
    it must be committed, unchanged, in git.

    Returns
    -------
    dict
        The lock record (``sha256``, ``commit``).

    Raises
    ------
    ProtocolChanged
        If the version was locked under another hash (:func:`check`).
    RuntimeError
        If the file is not committed as it is (its runs could not be traced to it).
    """
    record = check(protocol, cache)
    if record is not None:
        return record
    where = protocol.path.parent
    status = _git("status", "--porcelain", "--", protocol.path.name, cwd=where)
    commit = _git("log", "-1", "--format=%h", "--", protocol.path.name, cwd=where)
    if status is None or status != "" or not commit:
        raise RuntimeError(f"{protocol.path} must be committed unchanged before its first run "
                           f"(git status: {status!r}); commit it, then run again")
    records = locks(cache)
    records[str(protocol.version)] = {"sha256": protocol.sha256, "commit": commit}
    Path(cache).mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(cache) / LOCK, "w", owner="protocol.lock") as f:
        f.write(json.dumps(records, indent=1, sort_keys=True) + "\n")
    return records[str(protocol.version)]


def runner_arguments(module, description, cache, report_help):
    """The command line of a protocol's runner (``python -m varshift.reproduce.<module>``):
    ``--cache`` (default ``cache``), ``--jobs`` and ``--report`` (help ``report_help``)."""
    parser = argparse.ArgumentParser(prog=f"python -m varshift.reproduce.{module}",
                                     description=description)
    parser.add_argument("--cache", type=Path, default=cache)
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes")
    parser.add_argument("--report", action="store_true", help=report_help)
    return parser
