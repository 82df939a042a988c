"""Case ``bn-dropout-mnist-convnet``: "BatchNorm gives no gain, and with Dropout one run
reaches 97% and another 60%" — is it Dropout's variance shift?"""

from __future__ import annotations

import numpy as np

from .. import measure
from ..models import reference_convnet
from ..verdicts import Claim
from ._case import Arm, Case, Seeds
from ._common import (
    CaseResult,
    Regime,
    _axes,
    _legend_above,
    accuracy,
    claim,
    fmt,
    mnist_subset,
    off_regime,
    recalibrated,
    said,
    sd_claim,
    seeded,
    slug,
    train,
    verdict,
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
#: The posted regime: "98.5-99% is usual" and the good run reached 97%; these runs are in
#: it when the plain convnet (no BatchNorm, no Dropout) reaches this mean test accuracy.
POSTED_ACCURACY = 0.97
#: "No gain": BatchNorm's effect within half a point, the width of the usual 98.5-99%.
NO_GAIN_MARGIN = 0.5
#: Runs of 97% and 60% are plausible (a range that wide in 1 of 100 pairs of runs or
#: more) only if the seed-to-seed sd is at least about 10 points.
ERRATIC_SD = 10.0


class ConvnetResult(CaseResult):
    def plot(self, ax=None, kind="accuracy"):
        """Draw the runs; returns the Axes.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        kind : {'accuracy', 'curves'}, default 'accuracy'
            ``'accuracy'``: final test accuracy of every seed per configuration, in eval
            mode and (with BatchNorm) after recalibration, with the posted range;
            ``'curves'``: eval-mode test accuracy after every epoch, one line per seed.
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
            ax.legend(fontsize="small")
            return ax
        posted = ax.axhspan(98.5, 99, color="0.85", label="posted: 98.5-99% usual")
        for i, records in enumerate(runs.values()):
            for key, offset, marker in (("eval", -0.12, "o"), ("recalibrated", 0.12, "^")):
                if key not in records[0]:
                    continue
                values = 100 * np.array([r[key] for r in records])
                ax.plot(np.full(len(values), i + offset), values, marker, color=f"C{i}", alpha=0.7)
                ax.errorbar(i + offset, values.mean(), values.std(ddof=1) if len(values) > 1 else 0,
                            fmt="_", color="k", capsize=4, ms=14)
        ax.set_xticks(range(len(runs)), [n.replace(", ", "\n") for n in runs])
        ax.set(ylabel="test accuracy (%)", title="Final test accuracy of every seed (bars: mean ± sd)")
        # the colour is the configuration (its tick label): the legend keys are grey and
        # tell the marker and the bar apart
        handles = [posted,
                   ax.plot([], [], "o", color="0.45", alpha=0.7, label="eval mode, one seed")[0],
                   ax.plot([], [], "^", color="0.45", alpha=0.7,
                           label="recalibrated, one seed")[0],
                   ax.errorbar([], [], [], fmt="_", color="k", capsize=4, ms=14,
                               label="mean ± sd")]
        _legend_above(ax, 4, handles=handles)
        return ax


def train_run(config, seed, epochs, n_train, n_test, n_stats, data_dir=None) -> dict:
    """One training run (a :class:`~varshift.tasks.Task`).

    Parameters
    ----------
    config : str
        A key of :data:`CONFIGS`.
    seed : int
        Initial weights (the same in every configuration) and batch order.
    epochs, n_train, n_test : int
        Training length, training and test images.
    n_stats : int
        Training images the shift is measured and the statistics recalibrated on.
    data_dir : str, optional
        Folder with the MNIST files (not part of the task's key).

    Returns
    -------
    dict
        Test accuracy after every epoch (``curve``) and at the end (``eval``); with
        BatchNorm also with batch statistics, after recalibration, and the shift at each
        BatchNorm with its Dropout and running-statistics factors.
    """
    batchnorm, rate, lr = CONFIGS[config]
    x, y, x_test, y_test = mnist_subset(data_dir, n_train, n_test)
    model = seeded(reference_convnet(rate, batchnorm=batchnorm), seed)
    history = train(model, (x, y), epochs=epochs, batch_size=BATCH, lr=lr, seed=seed,
                    validation_data=(x_test, y_test))
    record = {"curve": history["val_accuracy"], "eval": accuracy(model, x_test, y_test)}
    if batchnorm:
        report = measure(model, x[:n_stats], batch_size=BATCH, seed=seed)
        fixed = recalibrated(model, x[:n_stats], batch_size=BATCH, seed=seed)
        record.update(
            batch_stats=accuracy(model, x_test, y_test, batchnorm="train", batch_size=BATCH),
            recalibrated=accuracy(fixed, x_test, y_test),
            shift=[b.shift for b in report.bn],
            dropout_factor=[b.attribution["dropout"] for b in report.bn],
            running_factor=[b.attribution["running_stats"] for b in report.bn])
    return record


def _result(runs, settings, seconds):
    acc = {name: 100 * np.array([r["eval"] for r in rs]) for name, rs in runs.items()}
    regime = Regime("trained as posted",
                    f"posted 97-99% (98.5-99% usual); rule: the plain convnet (no BatchNorm, "
                    f"no Dropout) reaches a mean test accuracy >= {100 * POSTED_ACCURACY:g}%",
                    f"{acc['neither'].mean():.2f}%", acc["neither"].mean() >= 100 * POSTED_ACCURACY)
    bn_runs = [r for rs in runs.values() for r in rs if "shift" in r]
    user = runs["BN + Dropout"]
    steps = _steps(settings)
    gain = claim("adding BatchNorm gives no gain", "no gain (with Dropout)", acc["BN + Dropout"],
                 acc["Dropout"], direction=0, min_effect=NO_GAIN_MARGIN, unit=" %",
                 names=("BN + Dropout", "Dropout"), regime=regime)
    erratic = sd_claim("with Dropout, runs vary from 60% to 97%", "97% and 60% in two runs",
                       acc["BN + Dropout"], at_least=ERRATIC_SD, unit=" %", regime=regime)
    shift_cause = claim(
        "Dropout's variance shift at BatchNorm causes it (Dropout costs more with BatchNorm)",
        "accepted answer", acc["BN + Dropout"] - acc["BN"], acc["Dropout"] - acc["neither"],
        direction=-1, unit=" points", names=("Dropout's effect with BN", "without BN"),
        regime=regime)
    stale = claim(
        "stale running averages cost accuracy at this training length",
        f"none: our explanation (Keras' 0.99 over {steps} updates keeps "
        f"{0.99 ** steps:.2g} of the initial values)",
        100 * np.array([r["recalibrated"] for r in user]), acc["BN + Dropout"], direction=1,
        unit=" %", names=("BN + Dropout recalibrated", "eval mode"))
    fast = sd_claim("a ten times larger learning rate makes runs erratic",
                    "alternative explanation", acc[FAST], at_least=ERRATIC_SD, unit=" %",
                    regime=regime)
    max_dropout = max(abs(f - 1) for r in bn_runs for f in r["dropout_factor"])
    sanity = Claim.sanity("Dropout-attributed factor at every BatchNorm is 1 (Dropout comes "
                          "after both)", "exactly 1", f"within {max_dropout:.1e} of 1",
                          max_dropout <= 1e-9)
    claims = [gain, erratic, shift_cause, stale, fast, sanity]
    rows = [{"config": name, "eval": fmt(rs_acc, 2), "range": f"{rs_acc.min():.2f}-{rs_acc.max():.2f}",
             **_bn_columns(runs[name])} for name, rs_acc in acc.items()]
    shifts = [s for r in bn_runs for s in r["shift"]]
    running = [f for r in bn_runs for f in r["running_factor"]]
    conclusion = (
        f"{verdict(claims)} {off_regime([regime])}"
        + "Dropout sits after both BatchNorm layers, so Li et al. predict no Dropout-induced "
        "shift there, and the measured Dropout-attributed factor "
        + ("is 1 (a sanity check, not evidence). " if sanity.verdict == "passes" else
           f"differs from 1 by {max_dropout:.1e} (a failed sanity check). ")
        + f"The shift between the running and the real statistics is "
        f"{min(shifts):.2f}-{max(shifts):.2f}, and the running averages' own lag (Keras' "
        f"0.99 over {steps} updates keeps 0.99^{steps} = {0.99 ** steps:.2g} of their initial "
        f"values) accounts for a factor up to {max(max(running), 1 / min(running)):.2f} of it. "
        f"{said(gain)}. {said(shift_cause)}. {said(erratic)}; the lowest of all "
        f"{sum(len(v) for v in acc.values())} runs (every configuration) reached {min(v.min() for v in acc.values()):.2f}%. "
        f"{said(stale)}. {said(fast)}: {fmt(acc[FAST], 2)}% in eval mode at lr {FAST_LR:g}."
        + (" No run came near 60%: a collapse like the posted one needs something these "
           "settings do not produce (running statistics never updated can: see the case "
           "'stale-running-stats')." if min(v.min() for v in acc.values()) >= 70 else ""))
    columns = [("config", "configuration"), ("eval", "test acc % (eval)"),
               ("range", "min-max %"), ("batch", "batch stats %"),
               ("recal", "recalibrated %"), ("shift", "shift BN1 / BN2"),
               ("dropout", "|Dropout factor - 1|")]
    return ConvnetResult(NAME, TITLE, QUESTION, settings, columns, rows, claims, conclusion,
                         {"runs": runs}, [regime], seconds)


def _bn_columns(records):
    if "shift" not in records[0]:
        return {"batch": "-", "recal": "-", "shift": "-", "dropout": "-"}
    return {"batch": fmt([r["batch_stats"] for r in records], 2, 100),
            "recal": fmt([r["recalibrated"] for r in records], 2, 100),
            "shift": " / ".join(fmt([r["shift"][i] for r in records], 3) for i in range(2)),
            "dropout": f"{max(abs(f - 1) for r in records for f in r['dropout_factor']):.1e}"}


def _steps(settings):
    per_epoch = -(-settings["train_images"] // settings["batch"])
    return per_epoch * settings["epochs"]


class ConvnetCase(Case):
    """Train the five configurations over several seeds and measure them.

    Five configurations: {BN, no BN} x {Dropout, no Dropout} at the posted learning rate
    2e-4, and BN + Dropout at 2e-3 (to test the learning-rate explanation). For one seed
    every configuration starts from the same weights and sees the same batches. Quick:
    6,000 training images, 2 epochs, 1,000 test images, the shift measured and the
    statistics re-estimated on 2,000 training images (about 2 minutes on 2 cores; far
    from the posted regime); full: all 60,000 / 10,000, 3 epochs, statistics on 10,000;
    5 seeds either way.
    Its options are sizes (see :meth:`Case.run <varshift.cases.Case.run>`).
    """

    name = NAME
    result = ConvnetResult
    train = staticmethod(train_run)
    default_seeds = Seeds(quick=5, full=5)
    sizes = {"epochs": (2, 3), "n_train": (6000, 60000), "n_test": (1000, 10000),
             "n_stats": (2000, 10000)}
    options = ("epochs", "n_train", "n_test", "n_stats")
    summarise = staticmethod(_result)

    def arms(self, options):
        return [Arm(name, slug(name), {"config": name}) for name in CONFIGS]

    def settings(self, seeds, sizes, options):
        return dict(seeds=seeds, epochs=sizes["epochs"], train_images=sizes["n_train"],
                    test_images=sizes["n_test"], stats_images=sizes["n_stats"],
                    lr=f"{LR:g} ({FAST_LR:g} in the last row)",
                    batch=BATCH, batchnorm="Keras/TF defaults (momentum 0.99, eps 1e-3)")
