"""Case ``layer-orderings``: ten orderings of conv, activation, Dropout, BatchNorm and
pooling, one posted test loss each - which differences are real?"""

from __future__ import annotations

import numpy as np

from .. import evaluate, measure, nn
from ..verdicts import Claim
from ._case import Arm, Case, Seeds
from ._common import (
    CaseResult,
    Regime,
    _axes,
    _legend_above,
    claim,
    fmt,
    mnist_subset,
    off_regime,
    recalibrated,
    said,
    seeded,
    train,
    verdict,
)

NAME = "layer-orderings"
TITLE = "Ten orderings of Conv, ELU, Dropout, BatchNorm and max-pooling"
QUESTION = (
    "Someone trained two conv modules (3x3 conv with 32 then 64 filters, valid padding, ELU, "
    "2x2 max-pool, Dropout 0.2 then 0.3, BatchNorm) in ten orderings, then Flatten - Dense 512 "
    "ELU - Dense 10, Adam, 20 epochs on MNIST, and posted one test loss per ordering. The best "
    "(C-D-B-A-P, 0.0324) has Dropout before BatchNorm, against Li et al.'s advice.")
#: The posted test loss of each ordering (C conv, A ELU, D Dropout, B BatchNorm, P pool).
POSTED = {"C-A-D-B-P": 0.0426, "C-A-D-P-B": 0.0501, "C-A-B-P-D": 0.0491, "C-A-B-D-P": 0.0681,
          "C-B-A-D-P": 0.0389, "C-B-A-P-D": 0.0413, "C-B-D-A-P": 0.0514, "C-D-A-B-P": 0.0483,
          "C-D-A-P-B": 0.0472, "C-D-B-A-P": 0.0324}
BEST = min(POSTED, key=POSTED.get)
LR, BATCH = 1e-3, 32  # Adam and batch size: Keras defaults
#: The posted losses (0.03-0.07 after 20 epochs) mean about 99% test accuracy; these runs
#: are in that regime when their mean eval-mode test accuracy reaches this.
POSTED_ACCURACY = 0.97


def ordering_network(order, seed=None):
    """The posted network with both conv modules in ``order`` (e.g. ``'C-A-D-B-P'``).

    Conv2D 3x3 (valid) with 32 then 64 filters, ELU, Dropout 0.2 then 0.3, Keras-style
    BatchNorm, MaxPool 2x2; then Flatten - Dense 512 - ELU - Dense 10. Input
    (N, 1, 28, 28). With ``seed``, the weights and masks are drawn with
    :func:`~varshift.cases._common.seeded`: the same for every ordering.
    """
    letters = order.split("-")
    if sorted(letters) != sorted("CADBP"):
        raise ValueError(f"ordering_network: order must use each of C, A, D, B, P once, "
                         f"separated by '-', got {order!r}")
    layers, size = [], 28
    for c_in, c_out, rate in ((1, 32, 0.2), (32, 64, 0.3)):
        layers += [_module_layer(letter, c_in, c_out, rate) for letter in letters]
        size = (size - 2) // 2
    model = nn.Sequential(*layers, nn.Flatten(), nn.Dense(64 * size * size, 512), nn.ELU(),
                          nn.Dense(512, 10))
    return model if seed is None else seeded(model, seed)


def _module_layer(letter, c_in, c_out, rate):
    if letter == "C":
        return nn.Conv2D(c_in, c_out, 3)
    if letter == "A":
        return nn.ELU()
    if letter == "D":
        return nn.Dropout(rate)
    if letter == "B":
        return nn.BatchNorm.keras(c_out)
    return nn.MaxPool2D(2)


def dropout_before_batchnorm(order) -> bool:
    """Whether the module's Dropout comes before its BatchNorm."""
    return order.index("D") < order.index("B")


class OrderingsResult(CaseResult):
    def plot(self, ax=None):
        """Test loss per ordering: every seed and mean ± sd in eval mode, the means with
        statistics re-estimated with and without Dropout (left axis), and the posted
        value on its own scale (right axis); returns the Axes."""
        ax = _axes(ax, (8, 4.6))
        runs = self.numbers["runs"]
        orders = list(runs)
        for i, order in enumerate(orders):
            losses = np.array([r["loss"] for r in runs[order]])
            color = "C3" if dropout_before_batchnorm(order) else "C0"
            ax.plot(np.full(len(losses), i - 0.15), losses, ".", color=color, alpha=0.6)
            ax.errorbar(i - 0.15, losses.mean(), losses.std(ddof=1) if len(losses) > 1 else 0,
                        fmt="s", color=color, capsize=3)
            for key, marker in (("converged_loss", "^"), ("recalibrated_loss", "o")):
                ax.plot(i + 0.15, np.mean([r[key] for r in runs[order]]), marker, mfc="none",
                        color=color)
        ax.set_xticks(range(len(orders)), orders, rotation=45, ha="right")
        ax.set(ylabel="our test loss", ylim=(0, None),
               title="Test loss per ordering: ours (left axis) and posted (right axis)")
        posted = ax.twinx()
        posted.plot(range(len(orders)), [POSTED[o] for o in orders], "k*", ms=10)
        posted.set(ylabel="posted test loss (one run, 20 epochs)",
                   ylim=(0, 1.25 * max(POSTED[o] for o in orders)))
        handles = [
            ax.plot([], [], "s", color="C3", label="ours, eval mode, Dropout before BN (mean ± sd)")[0],
            ax.plot([], [], "s", color="C0", label="ours, eval mode, Dropout after BN (mean ± sd)")[0],
            ax.plot([], [], "^", mfc="none", color="0.3", label="ours, statistics with Dropout (mean)")[0],
            ax.plot([], [], "o", mfc="none", color="0.3", label="ours, statistics without Dropout (mean)")[0],
            posted.plot([], [], "k*", ms=10, label="posted (right axis)")[0]]
        _legend_above(ax, 2, handles=handles)
        return ax


def train_run(order, seed, epochs, n_train, n_test, n_stats, data_dir=None) -> dict:
    """One training run (a :class:`~varshift.tasks.Task`).

    Parameters
    ----------
    order : str
        A key of :data:`POSTED`.
    seed : int
        Initial weights (the same in every ordering) and batch order.
    epochs, n_train, n_test : int
        Training length, training and test images.
    n_stats : int
        Training images the shift is measured and the statistics re-estimated on.
    data_dir : str, optional
        Folder with the MNIST files (not part of the task's key).

    Returns
    -------
    dict
        Test loss and accuracy in eval mode; test loss with every BatchNorm's statistics
        re-estimated with Dropout on (``converged_loss``: what the running averages
        converge to in long training) and off (``recalibrated_loss``: Li et al.'s fix);
        the shift at each BatchNorm with its Dropout and running-statistics factors.
    """
    x, y, x_test, y_test = mnist_subset(data_dir, n_train, n_test)
    loss = nn.CrossEntropyLoss()
    model = ordering_network(order, seed=seed)
    train(model, (x, y), epochs=epochs, batch_size=BATCH, lr=LR, seed=seed)
    test = evaluate(model, (x_test, y_test), loss)
    report = measure(model, x[:n_stats], batch_size=BATCH, seed=seed)
    test_loss = {dropout: evaluate(recalibrated(model, x[:n_stats], batch_size=BATCH, seed=seed,
                                                dropout=dropout), (x_test, y_test), loss)["loss"]
                 for dropout in ("on", "off")}
    return {"loss": test["loss"], "accuracy": test["accuracy"],
            "converged_loss": test_loss["on"], "recalibrated_loss": test_loss["off"],
            "shift": [b.shift for b in report.bn],
            "dropout_factor": [b.attribution["dropout"] for b in report.bn],
            "running_factor": [b.attribution["running_stats"] for b in report.bn]}


def _orders(orders):
    orders = list(orders or POSTED)
    unknown = [o for o in orders if o not in POSTED]
    if unknown:
        raise ValueError(f"unknown ordering(s) {unknown}; choose from {list(POSTED)}")
    return orders


def _per_seed(runs, orders, key):
    """Per seed, the mean of ``key`` over ``orders``."""
    return np.mean([[r[key] for r in runs[o]] for o in orders], axis=0)


def _result(runs, settings, seconds):
    orders = list(runs)
    before = [o for o in orders if dropout_before_batchnorm(o)]
    after = [o for o in orders if not dropout_before_batchnorm(o)]
    loss = {o: np.array([r["loss"] for r in runs[o]]) for o in orders}
    cost = {o: np.array([r["converged_loss"] - r["recalibrated_loss"] for r in runs[o]])
            for o in orders}
    mean_accuracy = np.mean([r["accuracy"] for rs in runs.values() for r in rs])
    regime = Regime("trained as posted",
                    f"posted test losses 0.03-0.07 after 20 epochs on 60,000 images (about 99% "
                    f"accuracy); rule: mean eval-mode test accuracy >= {100 * POSTED_ACCURACY:g}%",
                    f"{100 * mean_accuracy:.2f}%", mean_accuracy >= POSTED_ACCURACY)
    claims = []
    versus = {o: claim(f"vs {o}", f"{POSTED[BEST]} vs {POSTED[o]}", loss[BEST], loss[o],
                       direction=-1, digits=4, names=(BEST, "the other"), regime=regime)
              for o in orders if o != BEST} if BEST in runs else {}
    if versus:
        claims.append(Claim.all_of(
            f"{BEST}, the posted best (Dropout before BatchNorm), has a lower test loss than "
            f"each other ordering", f"{BEST} lowest ({POSTED[BEST]})", list(versus.values())))
    if len(orders) >= 3:
        from scipy import stats

        rho = [float(stats.spearmanr([POSTED[o] for o in orders], [loss[o][s] for o in orders]).statistic)
               for s in range(len(loss[orders[0]]))]
        claims.append(claim("our ranking follows the posted one", "posted ranking", rho, 0.0,
                            direction=1, names=("Spearman rho per seed", "0"), regime=regime))
    factor = {o: np.array([r["dropout_factor"][0] for r in runs[o]]) for o in orders}
    if before:
        claims.append(Claim.all_of(
            "Dropout before the first BatchNorm shrinks its real/moving variance (Li et al.'s "
            "shift)", "Li et al.: variance shift", [
                claim(o, "Li et al.: variance shift", factor[o], 1.0, direction=-1, digits=3,
                      names=("Dropout-attributed factor at BN1", "1")) for o in before]))
        claims.append(claim(
            "Dropout's variance shift costs test loss where Dropout comes before BatchNorm",
            "Li et al.: the shift costs accuracy", _per_seed(runs, before, "converged_loss"),
            _per_seed(runs, before, "recalibrated_loss"), direction=1, digits=4,
            names=("statistics with Dropout", "without")))
    if before and after:
        claims.append(claim(
            "Dropout's variance shift costs more test loss where Dropout comes before BatchNorm "
            "than after", "Li et al.: put Dropout after BatchNorm",
            np.mean([cost[o] for o in before], axis=0), np.mean([cost[o] for o in after], axis=0),
            direction=1, digits=4, names=("cost, Dropout before BN", "after")))
        off = max(abs(f - 1) for o in after for f in factor[o])
        claims.append(Claim.sanity(
            "Dropout-attributed factor at the first BatchNorm is 1 where Dropout comes after it",
            "exactly 1", f"within {off:.1e} of 1", off <= 1e-9))
    rows = [_row(o, runs[o], versus.get(o)) for o in orders]
    stale = [max(f, 1 / f) for rs in runs.values() for r in rs for f in r["running_factor"]]
    dropout = [max(f, 1 / f) for rs in runs.values() for r in rs for f in r["dropout_factor"]]
    steps = settings["epochs"] * -(-settings["train_images"] // settings["batch"])
    beaten = [o for o, c in versus.items() if c.high < 0]
    beats_best = [o for o, c in versus.items() if c.low > 0]
    conclusion = (
        f"{verdict(claims)} {off_regime([regime])}"
        + (f"Seed by seed, {BEST} has a lower test loss than {len(beaten)} of the "
           f"{len(versus)} other orderings beyond seed noise (paired 95% intervals below 0) "
           f"and a higher one than {len(beats_best)}. " if versus else "")
        + f"After {steps} steps Keras' momentum 0.99 leaves 0.99^{steps} = {0.99 ** steps:.2g} of "
        f"the initial running statistics; the running averages' own error shifts the variance "
        f"by a factor up to {max(stale):.2f} and Dropout by up to {max(dropout):.2f}"
        + (", so at inference the stale running averages, not Dropout, dominate the shift. "
           if max(stale) > max(dropout)
           else ". ")
        + ("Li et al.'s statements are tested on statistics re-estimated over the training "
           "images with Dropout on (as long training leaves them) and off (their fix), which "
           "removes any staleness: " + "; ".join(said(c) for c in claims
                                                 if c.paper.startswith("Li et al.")) + "."
           if before else "")
        + " Test losses with statistics re-estimated without Dropout: "
        + ", ".join(f"{o} {np.mean([r['recalibrated_loss'] for r in runs[o]]):.4f}" for o in orders)
        + ".")
    columns = [("order", "ordering"), ("posted", "posted loss"), ("loss", "test loss (eval)"),
               ("acc", "test acc %"), ("converged", "loss, stats with Dropout"),
               ("recal", "loss, stats without"), ("cost", "shift cost"),
               ("dropout", "Dropout shift BN1 / BN2"), ("shift", "total shift BN1 / BN2"),
               ("versus", f"{BEST} - this, eval loss [95% CI]")]
    return OrderingsResult(NAME, TITLE, QUESTION, settings, columns, rows, claims, conclusion,
                           {"runs": runs}, [regime], seconds)


def _row(order, records, versus):
    shift = lambda f: max(f, 1 / f)  # noqa: E731
    row = {"order": order, "posted": f"{POSTED[order]:.4f}",
           "loss": fmt([r["loss"] for r in records], 4),
           "acc": fmt([r["accuracy"] for r in records], 2, 100),
           "converged": fmt([r["converged_loss"] for r in records], 4),
           "recal": fmt([r["recalibrated_loss"] for r in records], 4),
           "cost": fmt([r["converged_loss"] - r["recalibrated_loss"] for r in records], 4),
           "dropout": " / ".join(f"{np.mean([shift(r['dropout_factor'][i]) for r in records]):.3f}"
                                 for i in range(2)),
           "shift": " / ".join(f"{np.mean([r['shift'][i] for r in records]):.2f}" for i in range(2))}
    row["versus"] = "-" if versus is None else \
        f"{versus.estimate:+.4f} [{versus.low:+.4f}, {versus.high:+.4f}]"
    return row


class OrderingsCase(Case):
    """Train every ordering over several seeds; test loss and accuracy, measured shift.

    For one seed every ordering starts from the same weights and sees the same batches,
    so orderings are compared seed by seed. Quick: 6,000 training images, 1 epoch, 1,000
    test images, the shift measured and the statistics re-estimated on 1,000 training
    images (about 5 minutes on 2 cores; far from the posted regime); full: the posted
    60,000 images and 20 epochs, statistics on 10,000 (about 10 hours on 2 cores); 3
    seeds either way.

    Other Parameters
    ----------------
    orders : list of str, optional
        Option of ``run`` and ``tasks`` (besides the sizes ``epochs``, ``n_train``,
        ``n_test`` and ``n_stats``): a subset of the ten orderings (default: all, in the order of
        :data:`POSTED`).
    """

    name = NAME
    result = OrderingsResult
    train = staticmethod(train_run)
    default_seeds = Seeds(quick=3, full=3)
    sizes = {"epochs": (1, 20), "n_train": (6000, 60000), "n_test": (1000, 10000),
             "n_stats": (1000, 10000)}
    options = ("epochs", "n_train", "n_test", "n_stats", "orders")
    summarise = staticmethod(_result)

    def arms(self, options):
        return [Arm(order, order, {"order": order}) for order in _orders(options["orders"])]

    def settings(self, seeds, sizes, options):
        return dict(seeds=seeds, epochs=sizes["epochs"], train_images=sizes["n_train"],
                    test_images=sizes["n_test"], stats_images=sizes["n_stats"], batch=BATCH, lr=LR,
                    batchnorm="Keras-style (momentum 0.99, eps 1e-3)")
