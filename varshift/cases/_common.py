"""What a case study returns, and the statistics, seeding, task-label and training
helpers the cases share (the cases' own base is :class:`varshift.cases.Case`).

Every statement a case checks is a :class:`varshift.verdicts.Claim`, declared in code
before the runs: the quantity, a paired comparison (the same seed gives every arm the
same initial weights, data order and test set; :func:`seeded`), the posted direction
and a margin where the post implies one. A statement measured away from the regime it
was posted in (a :class:`Regime` whose rule is not met) is *not tested at the posted
regime*, whatever its interval. Checks that are true by construction are
:meth:`~varshift.verdicts.Claim.sanity` rows, listed apart and never counted.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import textwrap
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import evaluate, fit, nn, optim, recalibrate
from .._json import json_ready
from ..verdicts import NOT_TESTED, Claim, count, judge, tally

__all__ = ["CaseResult", "Regime", "claim", "sd_claim", "said", "verdict", "off_regime", "seeded",
           "slug", "digest", "spread", "fmt", "mnist_subset", "train", "accuracy", "recalibrated"]


@dataclass
class Regime:
    """Whether a case ran in the regime a statement was posted in, by a rule declared
    in code before the runs.

    Attributes
    ----------
    name : str
        Which statements it governs, e.g. ``'trained as posted'``.
    rule : str
        The posted regime and the rule, e.g. ``'posted 97-99 %; here >= 97 %'``.
    measured : str
        The number the rule was applied to.
    ok : bool
        Whether the rule is met; if not, the statements it governs are *not tested at
        the posted regime*.
    """

    name: str
    rule: str
    measured: str
    ok: bool

    def __post_init__(self):
        self.ok = bool(self.ok)

    def __str__(self):
        return (f"{self.name}: {self.rule}; here {self.measured} -> "
                + ("met" if self.ok else "not met, so its statements are not tested at the "
                                         "posted regime"))


@dataclass(repr=False)
class CaseResult:
    """The outcome of a case study: the question, what was measured, and the answer.

    Attributes
    ----------
    name : str
        The case's name, e.g. ``'layer-orderings'``.
    title : str
    question : str
        The question as it was posted, in brief.
    settings : dict
        What was run (seeds, epochs, samples, ...).
    columns : list of (str, str)
        ``(key, header)`` of the summary table's columns; values in :attr:`rows` are
        already formatted strings.
    rows : list of dict
        One row per setting compared.
    claims : list of varshift.verdicts.Claim
        The statements checked (``kind='claim'``) and the sanity checks
        (``kind='sanity'``), each with its verdict.
    conclusion : str
        The answer in plain words, written from the numbers and the verdicts.
    numbers : dict
        Every measured number (per seed), JSON-ready; :meth:`plot` draws from these.
    regimes : list of Regime
        The posted regimes and whether these runs are in them.
    seconds : float
        Wall time of the run.
    """

    name: str
    title: str
    question: str
    settings: dict
    columns: list
    rows: list
    claims: list
    conclusion: str
    numbers: dict = field(default_factory=dict)
    regimes: list = field(default_factory=list)
    seconds: float = float("nan")

    @property
    def statements(self) -> list:
        """The claims, without the sanity checks."""
        return [c for c in self.claims if c.kind == "claim"]

    @property
    def checks(self) -> list:
        """The sanity checks (true by construction; not evidence)."""
        return [c for c in self.claims if c.kind == "sanity"]

    def table(self, markdown=False) -> str:
        """The summary table as aligned text (or a Markdown table)."""
        headers = [h for _, h in self.columns]
        cells = [[str(row.get(k, "")) for k, _ in self.columns] for row in self.rows]
        return _table(headers, cells, markdown)

    def summary(self, markdown=False) -> str:
        """The question, the settings, the posted regimes, the table, every statement
        with its estimate, interval, n and verdict, the sanity checks apart, and the
        conclusion."""
        settings = ", ".join(f"{k} {v}" for k, v in self.settings.items())
        counts = f"Statements: {tally(self.claims)}."
        if markdown:
            statements = _table(
                ["statement", "posted", "measured here", "estimate [95 % CI]", "n", "verdict"],
                [[c.text, c.paper, c.ours, _estimate(c), "-" if c.n is None else str(c.n),
                  c.verdict] for c in self.statements], True)
            checks = _table(["sanity check", "expected", "measured here", "result"],
                            [[c.text, c.paper, c.ours, c.verdict] for c in self.checks], True)
            return "\n\n".join(
                [f"### {self.title}", f"*Question.* {self.question}", f"*Settings:* {settings}.",
                 "*Posted regime.*\n" + "\n".join(f"- {r}" for r in self.regimes),
                 self.table(markdown=True), counts, statements,
                 "*Sanity checks* (true by construction; not evidence):", checks,
                 f"**Conclusion.** {self.conclusion}"])
        wrap = lambda text: textwrap.fill(text, 92, subsequent_indent="  ")  # noqa: E731
        statements = [wrap(f"- [{c.verdict}] {c.text}. Posted: {c.paper}. Here: {c.ours}. "
                           f"Rule: {c.rule}.") for c in self.statements]
        checks = [wrap(f"- [{c.verdict}] {c.text}: expected {c.paper}, here {c.ours}.")
                  for c in self.checks] or ["(none)"]
        return "\n\n".join(
            [f"{self.title} ({self.name})", wrap("Question: " + self.question),
             wrap("Settings: " + settings),
             "Posted regime:\n" + "\n".join(wrap(f"- {r}") for r in self.regimes),
             self.table(), "\n".join([counts, *statements]),
             "\n".join(["Sanity checks (true by construction; not evidence):", *checks]),
             wrap("Conclusion: " + self.conclusion)])

    def __str__(self):
        return self.summary()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}: {tally(self.claims)}; {self.settings}>"

    def _repr_markdown_(self):
        return self.summary(markdown=True)

    def plot(self, ax=None):
        """Draw the case's main evidence; returns the Axes."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """Everything but the plot, as plain JSON types."""
        return json_ready({"name": self.name, "title": self.title, "question": self.question,
                           "settings": self.settings, "columns": self.columns, "rows": self.rows,
                           "claims": [c.__dict__ for c in self.claims],
                           "conclusion": self.conclusion, "numbers": self.numbers,
                           "regimes": [asdict(r) for r in self.regimes], "seconds": self.seconds})

    @classmethod
    def from_dict(cls, data: dict) -> "CaseResult":
        """Inverse of :meth:`to_dict` (numbers keep their JSON types)."""
        fields = dict(data)
        fields["claims"] = [Claim(**c) for c in data["claims"]]
        fields["columns"] = [tuple(c) for c in data["columns"]]
        fields["regimes"] = [Regime(**r) for r in data.get("regimes", [])]
        return cls(**fields)

    def to_json(self, path=None):
        """JSON text of :meth:`to_dict`; written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text


def _table(headers, cells, markdown):
    if markdown:
        esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(map(esc, c)) + " |" for c in cells])
    if not cells:
        return "(none)"
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    fmt_row = lambda c: "  ".join(v.rjust(w) for v, w in zip(c, widths))  # noqa: E731
    return "\n".join([fmt_row(headers), fmt_row(["-" * w for w in widths])]
                     + [fmt_row(c) for c in cells])


def _estimate(c) -> str:
    if c.estimate is None:
        return "see parts"
    return f"{c.estimate:+.3g} [{c.low:+.3g}, {c.high:+.3g}]"


def _axes(ax, size=(7, 4)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=size, constrained_layout=True)
    return ax


def _legend_above(ax, ncol, **options):
    """The legend above the axes (and its title), where it covers no data."""
    return ax.legend(fontsize="small", ncol=ncol, loc="lower center", bbox_to_anchor=(0.5, 1.08),
                     **options)


# ------------------------------------------------------------------ claims and verdicts
def claim(text, paper, arm, reference, *, direction, regime=None, **options) -> Claim:
    """A paired claim (:meth:`Claim.paired <varshift.verdicts.Claim.paired>`) that is *not
    tested at the posted regime* unless ``regime`` is met.

    Parameters
    ----------
    text, paper : str
    arm, reference : array_like of float, shape (n_seeds,)
        Per-seed values, paired by seed; ``reference`` may be a scalar.
    direction : {1, -1, 0}
        The posted direction of ``arm - reference`` (0: equal within ``min_effect``).
    regime : Regime, optional
        The posted regime the statement depends on; None for one that does not (Li et
        al.'s mechanism, our own explanations).
    **options
        ``min_effect``, ``unit``, ``digits``, ``names`` of ``Claim.paired``.

    Returns
    -------
    varshift.verdicts.Claim
        Its ``rule`` names the regime.
    """
    result = Claim.paired(text, paper, arm, reference, direction=direction,
                          posted_regime=regime is None or regime.ok, **options)
    if regime is not None:
        result.rule += f"; regime: {regime.name}"
    return result


def sd_claim(text, paper, values, *, at_least, unit="", digits=1, regime=None,
             confidence=0.95) -> Claim:
    """The statement that runs vary from seed to seed: the seed-to-seed sd of
    ``values`` exceeds ``at_least``.

    The interval is the chi-square confidence interval of a normal sample's sd,
    ``sd * sqrt((n - 1) / chi2_{1-a/2, n-1})`` to ``sd * sqrt((n - 1) / chi2_{a/2, n-1})``;
    the verdict is :func:`~varshift.verdicts.judge` of that interval minus
    ``at_least``: holds if the whole interval is above it, contradicted if below.

    Parameters
    ----------
    text, paper : str
    values : array_like of float, shape (n_seeds,)
    at_least : float
        Smallest sd the post implies.
    unit : str
    digits : int, default 1
    regime : Regime, optional
    confidence : float, default 0.95

    Returns
    -------
    varshift.verdicts.Claim
        ``estimate`` is the sd, ``low, high`` its interval.
    """
    from scipy import stats

    v = np.asarray(values, float).ravel()
    n = v.size
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        tail = (1 - confidence) / 2
        low, high = (sd * np.sqrt((n - 1) / stats.chi2.ppf(q, n - 1)) for q in (1 - tail, tail))
    else:
        low, high = 0.0, np.inf
    ok = regime is None or regime.ok
    verdict = judge(low - at_least, high - at_least, 1) if ok else NOT_TESTED
    ours = (f"seed sd {sd:.{digits}f}{unit} [{low:.{digits}f}, {high:.{digits}f}], runs "
            f"{v.min():.{digits}f}-{v.max():.{digits}f}{unit}, n={n}")
    rule = f"chi-square {confidence:.0%} interval of the seed sd: sd > {at_least:g}{unit}"
    if regime is not None:
        rule += f"; regime: {regime.name}"
    # one-sided chi-square tests of sd <= at_least and sd >= at_least: below 0.025 exactly
    # when the interval's lower (upper) bound clears at_least
    statistic = (n - 1) * sd**2 / at_least**2 if n > 1 else None
    p_holds, p_against = ((1.0, 1.0) if statistic is None else
                          (float(stats.chi2.sf(statistic, n - 1)), float(stats.chi2.cdf(statistic, n - 1))))
    return Claim(text, paper, ours, verdict, sd, float(low), float(high), n, "claim", rule,
                 p_holds, p_against)


def said(c, unit="") -> str:
    """``'Text: VERDICT (ESTIMATE [LOW, HIGH] UNIT, n=N)'``, the way a conclusion cites a
    claim (as a sentence: capitalised)."""
    text = c.text[:1].upper() + c.text[1:]
    if c.estimate is None:
        return f"{text}: {c.verdict}"
    return f"{text}: {c.verdict} ({c.estimate:+.3g} [{c.low:+.3g}, {c.high:+.3g}]{unit}, n={c.n})"


def off_regime(regimes) -> str:
    """Two sentences naming the regimes these runs are not in, with their rules (empty
    if none); ends with a space."""
    off = [f"{r.name} - {r.rule}; here {r.measured}" for r in regimes if not r.ok]
    if not off:
        return ""
    return (f"Not in the posted regime, so its statements are not tested: {' | '.join(off)}. "
            f"Their intervals show what these settings give. ")


def verdict(claims) -> str:
    """One sentence counting the verdicts of the statements checked (sanity checks
    apart; undecided and not tested never count as holding), naming those
    contradicted and any failed sanity check."""
    n = count(claims)
    sentence = f"Of {sum(n.values())} statements checked: {tally(claims)}."
    contradicted = [c.text for c in claims if c.kind == "claim" and c.verdict == "contradicted"]
    if contradicted:
        sentence += f" Contradicted: {'; '.join(contradicted)}."
    failed = [c.text for c in claims if c.kind == "sanity" and c.verdict == "fails"]
    if failed:
        sentence += f" Failed sanity checks: {'; '.join(failed)}."
    return sentence


# ------------------------------------------------------------------ statistics
def spread(values) -> dict:
    """Mean, sample sd, min and max of per-seed values."""
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def fmt(values, digits=3, scale=1.0) -> str:
    """``'mean ± sd'`` of per-seed values (times ``scale``)."""
    s = spread(np.asarray(values, float) * scale)
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


# ------------------------------------------------------------------ seeding and tasks
def seeded(model, seed):
    """Draw ``model``'s weights independently of its BatchNorm and Dropout layers and
    its noise streams apart (:func:`varshift.nn.seeded`), so that adding, removing or
    moving a BatchNorm or Dropout layer leaves every weight layer's initial values, and
    each Dropout layer's masks, unchanged: the arms of a comparison are paired."""
    return nn.seeded(model, seed, groups=(("conv", "dense"), ("dropout",), None))


def slug(text) -> str:
    """``text`` as a file-name-safe part of a task label, e.g. ``'BN + Dropout'`` ->
    ``'BN-Dropout'``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-")


def digest(model) -> str:
    """A short hash of every parameter of ``model`` (equal weights, equal digest)."""
    import hashlib

    h = hashlib.sha256()
    for name, value in sorted(model.state_dict(buffers=False).items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ data and training
def mnist_subset(data_dir, n_train, n_test):
    """The first ``n_train`` MNIST training and ``n_test`` test images (all if None), as
    read-only views of MNIST loaded once per process (a worker runs many tasks)."""
    if isinstance(data_dir, list):  # several folders to search (hashable for the cache)
        data_dir = tuple(data_dir)
    x_train, y_train, x_test, y_test = _mnist(data_dir)
    return x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test]


@functools.lru_cache(maxsize=1)
def _mnist(data_dir):
    from ..datasets import load_mnist

    arrays = load_mnist(data_dir)
    for a in arrays:
        a.flags.writeable = False
    return arrays


def train(model, data, *, epochs, batch_size, lr, seed, validation_data=None):
    """Adam + cross-entropy training (the cases' questions all use Adam); the History."""
    return fit(model, data, nn.CrossEntropyLoss(), optim.Adam(model, lr=lr), epochs=epochs,
               batch_size=batch_size, seed=seed, eval_train=False,
               validation_data=validation_data)


def recalibrated(model, data, *, batch_size, seed, dropout="off"):
    """A copy of ``model`` with exact population statistics in every BatchNorm,
    estimated with Dropout off (Li et al.'s fix) or on (what running averages converge
    to in long training)."""
    fixed = copy.deepcopy(model)
    recalibrate(fixed, data, batch_size=batch_size, seed=seed, dropout=dropout, reports=False)
    return fixed


def accuracy(model, x, y, *, batchnorm="eval", batch_size=256) -> float:
    """Test accuracy with BatchNorm in ``batchnorm`` mode and Dropout off."""
    return evaluate(model, (x, y), nn.CrossEntropyLoss(), batch_size=batch_size,
                    batchnorm=batchnorm)["accuracy"]
