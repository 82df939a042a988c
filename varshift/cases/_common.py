"""What a case study returns, and the statistics and training helpers the cases share."""

from __future__ import annotations

import copy
import json
import textwrap
from dataclasses import dataclass, field

import numpy as np

from .. import evaluate, fit, nn, optim, recalibrate
from .._json import json_ready
from ..verdicts import Claim

__all__ = ["CaseResult", "Claim", "spread", "welch_p", "paired_p", "holm", "mnist_subset", "train",
           "accuracy", "recalibrated", "fmt", "verdict"]


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
    claims : list of Claim
        Each statement made in the question or its answers, the posted number, ours
        and whether the statement holds here.
    conclusion : str
        The answer in plain words, with the numbers behind it.
    numbers : dict
        Every measured number (per seed), JSON-ready; :meth:`plot` draws from these.
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
    seconds: float = float("nan")

    def table(self, markdown=False) -> str:
        """The summary table as aligned text (or a Markdown table)."""
        headers = [h for _, h in self.columns]
        cells = [[str(row.get(k, "")) for k, _ in self.columns] for row in self.rows]
        if markdown:
            lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        fmt_row = lambda c: "  ".join(v.rjust(w) for v, w in zip(c, widths))  # noqa: E731
        return "\n".join([fmt_row(headers), fmt_row(["-" * w for w in widths])]
                         + [fmt_row(c) for c in cells])

    def summary(self, markdown=False) -> str:
        """The question, the settings, the table, the claims checked and the conclusion."""
        mark = {True: "holds", False: "does not hold", None: "undecided"}
        settings = ", ".join(f"{k} {v}" for k, v in self.settings.items())
        if markdown:
            claims = ["| statement | posted | measured here | verdict |", "|---|---|---|---|"]
            claims += [f"| {c.text} | {c.paper} | {c.ours} | {mark[c.holds]} |" for c in self.claims]
            return "\n\n".join([f"### {self.title}", f"*Question.* {self.question}",
                                f"*Settings:* {settings}.", self.table(markdown=True),
                                "\n".join(claims), f"**Conclusion.** {self.conclusion}"])
        wrap = lambda text: textwrap.fill(text, 92)  # noqa: E731
        claims = [f"- {c.text}: posted {c.paper}; here {c.ours} -> {mark[c.holds]}"
                  for c in self.claims]
        return "\n\n".join([f"{self.title} ({self.name})", wrap("Question: " + self.question),
                            wrap("Settings: " + settings), self.table(),
                            "\n".join(wrap(c) for c in claims),
                            wrap("Conclusion: " + self.conclusion)])

    def __str__(self):
        return self.summary()

    def __repr__(self):
        held = sum(c.holds is True for c in self.claims)
        return (f"<{type(self).__name__} {self.name!r}: {held} of {len(self.claims)} statements "
                f"hold; {self.settings}>")

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
                       "seconds": self.seconds})

    @classmethod
    def from_dict(cls, data: dict) -> "CaseResult":
        """Inverse of :meth:`to_dict` (numbers keep their JSON types)."""
        fields = dict(data)
        fields["claims"] = [Claim(**c) for c in data["claims"]]
        fields["columns"] = [tuple(c) for c in data["columns"]]
        return cls(**fields)

    def to_json(self, path=None):
        """JSON text of :meth:`to_dict`; written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text


def log(progress, message):
    """Progress message on stderr, when asked for."""
    if progress:
        import sys

        print(f"  {message}", file=sys.stderr, flush=True)


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    return ax


def verdict(claims) -> str:
    """One sentence on how many of the checked statements hold, naming those that do not."""
    failed = [c.text for c in claims if c.holds is False]
    if not failed:
        return f"All {len(claims)} statements checked hold here."
    return (f"{len(claims) - len(failed)} of {len(claims)} statements checked hold here; these "
            f"do not: {'; '.join(failed)}.")


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


def welch_p(a, b) -> float:
    """Two-sided p-value of Welch's t-test that ``a`` and ``b`` have the same mean
    (1.0 when both are constant and equal, 0.0 when constant and different)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def paired_p(a, b) -> float:
    """Two-sided p-value of the paired t-test that ``a - b`` has mean 0 (runs paired by
    seed: same data, same initial weights)."""
    from scipy import stats

    d = np.subtract(a, b, dtype=float)
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control)."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


# ------------------------------------------------------------------ data and training
def mnist_subset(data_dir, n_train, n_test):
    """The first ``n_train`` MNIST training and ``n_test`` test images (all if None)."""
    from ..datasets import load_mnist

    x_train, y_train, x_test, y_test = load_mnist(data_dir)
    return x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test]


def train(model, data, *, epochs, batch_size, lr, seed, validation_data=None):
    """Adam + cross-entropy training (the cases' questions all use Adam); the History."""
    return fit(model, data, nn.CrossEntropyLoss(), optim.Adam(model, lr=lr), epochs=epochs,
               batch_size=batch_size, seed=seed, eval_train=False,
               validation_data=validation_data)


def recalibrated(model, data, *, batch_size, seed):
    """A copy of ``model`` with exact population statistics in every BatchNorm."""
    fixed = copy.deepcopy(model)
    recalibrate(fixed, data, batch_size=batch_size, seed=seed, reports=False)
    return fixed


def accuracy(model, x, y, *, batchnorm="eval", batch_size=256) -> float:
    """Test accuracy with BatchNorm in ``batchnorm`` mode and Dropout off."""
    return evaluate(model, (x, y), nn.CrossEntropyLoss(), batch_size=batch_size,
                    batchnorm=batchnorm)["accuracy"]
