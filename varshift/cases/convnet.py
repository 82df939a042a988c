"""Case ``bn-dropout-mnist-convnet``: "BatchNorm gives no gain, and with Dropout one run
reaches 97% and another 60%" — is it Dropout's variance shift?"""

from __future__ import annotations

import time

import numpy as np

from .. import measure
from ..models import reference_convnet
from ._common import (
    CaseResult,
    Claim,
    _axes,
    accuracy,
    fmt,
    log,
    mnist_subset,
    recalibrated,
    spread,
    train,
    welch_p,
)

NAME = "bn-dropout-mnist-convnet"
TITLE = "BatchNorm and Dropout in an MNIST convnet"
QUESTION = (
    "A user adds BatchNorm to an MNIST convnet (Conv 32 5x5/2 - BN - LeakyReLU(0.2) - Conv 64 "
    "5x5/2 - BN - LeakyReLU - Dense 500 - Tanh - Dropout(keep 0.7) - Dense 10, Adam lr 2e-4, "
    "batch 200) and sees no gain; with Dropout one run reaches 97% and another 60%, where "
    "98.5-99% is usual. The accepted answer blames Dropout's variance shift, but Dropout sits "
    "after every BatchNorm, where Li et al. predict no Dropout-induced shift.")
LR, FAST_LR, BATCH = 2e-4, 2e-3, 200
FAST = "BN + Dropout, lr 2e-3"
CONFIGS = {  # name: (batchnorm, dropout rate, learning rate)
    "BN + Dropout": ("keras", 0.3, LR),
    "BN": ("keras", 0.0, LR),
    "Dropout": (None, 0.3, LR),
    "neither": (None, 0.0, LR),
    FAST: ("keras", 0.3, FAST_LR),  # is a larger learning rate what makes runs erratic?
}


class ConvnetResult(CaseResult):
    def plot(self, ax=None, kind="accuracy"):
        """Draw the runs; returns the Axes.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        kind : {'accuracy', 'curves'}, default 'accuracy'
            ``'accuracy'``: final test accuracy of every seed per configuration, in eval
            mode and (with BatchNorm) after recalibration; ``'curves'``: eval-mode test
            accuracy after every epoch, one line per seed.
        """
        if kind not in ("accuracy", "curves"):
            raise ValueError(f"ConvnetResult.plot: kind must be 'accuracy' or 'curves', got {kind!r}")
        ax = _axes(ax)
        runs = self.numbers["runs"]
        if kind == "curves":
            for i, (name, records) in enumerate(runs.items()):
                for j, record in enumerate(records):
                    epochs = np.arange(1, len(record["curve"]) + 1)
                    ax.plot(epochs, 100 * np.asarray(record["curve"]), "o-", color=f"C{i}",
                            alpha=0.6, label=name if j == 0 else None)
            ax.set(xlabel="epoch", ylabel="test accuracy, eval mode (%)",
                   title="Every seed's test accuracy during training")
            ax.legend()
            return ax
        for i, records in enumerate(runs.values()):
            for key, offset, marker, label in (("eval", -0.12, "o", "eval mode"),
                                               ("recalibrated", 0.12, "^", "recalibrated")):
                if key not in records[0]:
                    continue
                values = 100 * np.array([r[key] for r in records])
                ax.plot(np.full(len(values), i + offset), values, marker, color=f"C{i}",
                        alpha=0.7, label=label if i == 0 else None)
                ax.errorbar(i + offset, values.mean(), values.std(ddof=1) if len(values) > 1 else 0,
                            fmt="_", color="k", capsize=4, ms=14)
        ax.set_xticks(range(len(runs)), list(runs))
        ax.set(ylabel="test accuracy (%)", title="Final test accuracy of every seed (bars: mean ± sd)")
        ax.legend(fontsize="small")
        return ax


RESULT = ConvnetResult


def run(quick=True, *, seeds=None, epochs=None, n_train=None, n_test=None, data_dir=None,
        seed=0, progress=False) -> ConvnetResult:
    """Train the four configurations over several seeds and measure them.

    Parameters
    ----------
    quick : bool, default True
        6,000 training images, 2 epochs, 1,000 test images (about 2 minutes on 2 cores);
        otherwise all 60,000 / 10,000 and 3 epochs.
    seeds : int, optional
        Seeds per configuration (default 5).
    epochs, n_train : int, optional
        Override the mode's values.
    n_test : int, optional
        Test images to evaluate on (default: the mode's).
    data_dir : str, optional
        Folder with the MNIST IDX files (see :func:`varshift.datasets.load_mnist`).
    seed : int, default 0
        First seed.
    progress : bool, default False

    Returns
    -------
    ConvnetResult
        A :class:`~varshift.cases.CaseResult`.

    Notes
    -----
    Five configurations: {BN, no BN} x {Dropout, no Dropout} at the posted learning rate
    2e-4, and BN + Dropout at 2e-3 (to test the learning-rate explanation).
    """
    start = time.perf_counter()
    seeds = seeds or 5
    epochs = epochs or (2 if quick else 3)
    n_train = n_train or (6000 if quick else 60000)
    x, y, x_test, y_test = mnist_subset(data_dir, n_train, n_test or (1000 if quick else 10000))
    x_stats = x[:2000 if quick else 10000]
    runs = {}
    for name, (batchnorm, rate, lr) in CONFIGS.items():
        runs[name] = []
        for s in range(seed, seed + seeds):
            log(progress, f"{NAME}: {name}, seed {s}")
            model = reference_convnet(rate, seed=s, batchnorm=batchnorm)
            history = train(model, (x, y), epochs=epochs, batch_size=BATCH, lr=lr, seed=s,
                            validation_data=(x_test, y_test))
            record = {"curve": history["val_accuracy"],
                      "eval": accuracy(model, x_test, y_test)}
            if batchnorm:
                report = measure(model, x_stats, batch_size=BATCH, seed=s)
                fixed = recalibrated(model, x_stats, batch_size=BATCH, seed=s)
                record.update(
                    batch_stats=accuracy(model, x_test, y_test, batchnorm="train", batch_size=BATCH),
                    recalibrated=accuracy(fixed, x_test, y_test),
                    shift=[b.shift for b in report.bn],
                    dropout_factor=[b.attribution["dropout"] for b in report.bn],
                    running_factor=[b.attribution["running_stats"] for b in report.bn])
            runs[name].append(record)
    return _result(runs, dict(seeds=seeds, epochs=epochs, train_images=len(x),
                              test_images=len(x_test), lr=f"{LR:g} ({FAST_LR:g} in the last row)", batch=BATCH,
                              batchnorm="Keras/TF defaults (momentum 0.99, eps 1e-3)"),
                   time.perf_counter() - start)


def _result(runs, settings, seconds):
    acc = {name: [r["eval"] for r in rs] for name, rs in runs.items()}
    bn_runs = [r for rs in runs.values() for r in rs if "shift" in r]
    rows = []
    for name, rs in runs.items():
        has_bn = "shift" in rs[0]
        rows.append({
            "config": name, "eval": fmt(acc[name], 2, 100),
            "range": f"{100 * min(acc[name]):.2f}-{100 * max(acc[name]):.2f}",
            "batch": fmt([r["batch_stats"] for r in rs], 2, 100) if has_bn else "-",
            "recal": fmt([r["recalibrated"] for r in rs], 2, 100) if has_bn else "-",
            "shift": " / ".join(fmt([r["shift"][i] for r in rs], 3) for i in range(2)) if has_bn else "-",
            "dropout": f"{max(abs(f - 1) for r in rs for f in r['dropout_factor']):.1e}" if has_bn else "-",
        })
    gain, p_gain = _diff(acc["BN + Dropout"], acc["Dropout"])
    d_cost, p_drop = _diff(acc["BN + Dropout"], acc["BN"])
    all_acc = [a for v in acc.values() for a in v]
    worst = min(all_acc)
    max_dropout_part = max(abs(f - 1) for r in bn_runs for f in r["dropout_factor"])
    shifts = [s for r in bn_runs for s in r["shift"]]
    recal_gain = [r["recalibrated"] - r["eval"] for r in bn_runs]
    batch_gain = [r["batch_stats"] - r["eval"] for r in bn_runs]
    seed_sd = max(spread(v)["sd"] for v in acc.values())
    claims = [
        Claim("adding BatchNorm gives no gain", "no gain",
              f"BN + Dropout minus Dropout: {100 * gain:+.2f} points (Welch p = {p_gain:.2g})",
              bool(p_gain >= 0.05 or gain <= 0)),
        Claim("runs vary from 60% to 97%", "60% and 97% in two runs",
              f"lowest of {len(all_acc)} runs {100 * worst:.2f}%, largest seed sd "
              f"{100 * seed_sd:.2f} points", bool(worst < 0.7)),
        Claim("Dropout's variance shift at BatchNorm causes it", "accepted answer",
              f"Dropout-attributed factor at every BatchNorm within {max_dropout_part:.1e} of 1; "
              f"total shift {min(shifts):.3f}-{max(shifts):.3f}", bool(max_dropout_part > 0.05)),
    ]
    running = [f for r in bn_runs for f in r["running_factor"]]
    running_part = max(max(running), 1 / min(running))
    conclusion = (
        f"Dropout sits after both BatchNorm layers, and the measurement agrees with Li et al.: the "
        f"part of the variance shift that Dropout causes at each BatchNorm is 1 to within "
        f"{max_dropout_part:.0e}, so Dropout's variance shift cannot explain a bad run here. "
        f"The shift between the running and the real statistics is {min(shifts):.2f}-"
        f"{max(shifts):.2f}; the running averages' own lag (Keras momentum 0.99 over "
        f"{_steps(settings)} updates keeps 0.99^{_steps(settings)} = "
        f"{0.99 ** _steps(settings):.2g} of their initial values) accounts for a factor up to "
        f"{running_part:.2f}. "
        f"BatchNorm {'helped' if gain > 0 and p_gain < 0.05 else 'did not clearly help'}: "
        f"{100 * gain:+.2f} points with Dropout (p = {p_gain:.2g}); Dropout changed the BN "
        f"network by {100 * d_cost:+.2f} points (p = {p_drop:.2g}). Across "
        f"{len(all_acc)} runs the lowest accuracy was {100 * worst:.2f}% and the largest "
        f"seed-to-seed sd {100 * seed_sd:.2f} points. Evaluating with batch statistics "
        f"changes accuracy by {fmt(batch_gain, 2, 100)} points and recalibrating the running "
        f"statistics by {fmt(recal_gain, 2, 100)}"
        + (": stale running averages, not Dropout, are what costs accuracy at this training "
           "length." if np.mean(recal_gain) > 0.005 else
           ": the running averages are not what limits accuracy either.")
        + (f" With a ten times larger learning rate ({FAST_LR:g}) the same network reaches "
           f"{fmt(acc[FAST], 2, 100)}% (lowest {100 * min(acc[FAST]):.2f}%) in eval mode and "
           f"{fmt([r['recalibrated'] for r in runs[FAST]], 2, 100)}% with recalibrated "
           f"statistics." if FAST in runs else "")
        + (" No run came near 60%: a collapse like the posted one needs something these "
           "settings do not produce here (running statistics never updated can: see the case "
           "'stale-running-stats')." if worst >= 0.7 else ""))
    columns = [("config", "configuration"), ("eval", "test acc % (eval)"),
               ("range", "min-max %"), ("batch", "batch stats %"),
               ("recal", "recalibrated %"), ("shift", "shift BN1 / BN2"),
               ("dropout", "|Dropout factor - 1|")]
    return ConvnetResult(NAME, TITLE, QUESTION, settings, columns, rows, claims, conclusion,
                         {"runs": runs}, seconds)


def _diff(a, b):
    return float(np.mean(a) - np.mean(b)), welch_p(a, b)


def _steps(settings):
    per_epoch = -(-settings["train_images"] // settings["batch"])
    return per_epoch * settings["epochs"]
