"""Case ``layer-orderings``: ten orderings of conv, activation, Dropout, BatchNorm and
pooling, one posted test loss each - which differences are real?"""

from __future__ import annotations

import time
from itertools import combinations

import numpy as np

from .. import evaluate, measure, nn
from ._common import (
    CaseResult,
    Claim,
    _axes,
    fmt,
    holm,
    log,
    mnist_subset,
    recalibrated,
    spread,
    train,
    verdict,
    welch_p,
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
LR, BATCH = 1e-3, 32  # Adam and batch size: Keras defaults


def ordering_network(order, seed=None):
    """The posted network with both conv modules in ``order`` (e.g. ``'C-A-D-B-P'``).

    Conv2D 3x3 (valid) with 32 then 64 filters, ELU, Dropout 0.2 then 0.3, Keras-style
    BatchNorm, MaxPool 2x2; then Flatten - Dense 512 - ELU - Dense 10. Input
    (N, 1, 28, 28).
    """
    letters = order.split("-")
    if sorted(letters) != sorted("CADBP"):
        raise ValueError(f"ordering_network: order must use each of C, A, D, B, P once, "
                         f"separated by '-', got {order!r}")
    layers, size = [], 28
    for c_in, c_out, rate in ((1, 32, 0.2), (32, 64, 0.3)):
        layers += [_module_layer(letter, c_in, c_out, rate) for letter in letters]
        size = (size - 2) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Dense(64 * size * size, 512), nn.ELU(),
                         nn.Dense(512, 10), seed=seed)


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
        """Test loss per ordering: every seed, mean ± sd, the mean after recalibration,
        and the posted value; returns the Axes."""
        ax = _axes(ax)
        runs = self.numbers["runs"]
        orders = list(runs)
        for i, order in enumerate(orders):
            losses = np.array([r["loss"] for r in runs[order]])
            color = "C3" if dropout_before_batchnorm(order) else "C0"
            ax.plot(np.full(len(losses), i), losses, ".", color=color, alpha=0.6)
            ax.errorbar(i, losses.mean(), losses.std(ddof=1), fmt="s", color=color, capsize=3)
            recal = np.array([r["recalibrated_loss"] for r in runs[order]])
            ax.plot(i + 0.25, recal.mean(), "o", mfc="none", color=color)
        ax.plot(range(len(orders)), [POSTED[o] for o in orders], "k*", ms=9, label="posted")
        ax.plot([], [], "s", color="C3", label="ours, Dropout before BN")
        ax.plot([], [], "s", color="C0", label="ours, Dropout after BN")
        ax.plot([], [], "o", mfc="none", color="0.3", label="ours, recalibrated (mean)")
        ax.set_xticks(range(len(orders)), orders, rotation=45, ha="right")
        ax.set(ylabel="test loss (eval mode)", title="Test loss per ordering (mean ± sd over seeds)")
        ax.legend(fontsize="small")
        return ax


RESULT = OrderingsResult


def run(quick=True, *, seeds=None, epochs=None, n_train=None, orders=None, n_test=None,
        data_dir=None, seed=0, progress=False) -> OrderingsResult:
    """Train every ordering over several seeds; test loss and accuracy, measured shift.

    Parameters
    ----------
    quick : bool, default True
        6,000 training images, 1 epoch, 1,000 test images (about 5 minutes on 2 cores);
        otherwise the posted 60,000 images and 20 epochs (about 10 hours on 2 cores).
    seeds : int, optional
        Seeds per ordering (default 3).
    epochs, n_train : int, optional
        Override the mode's values.
    orders : list of str, optional
        A subset of the ten orderings.
    n_test : int, optional
        Test images to evaluate on (default: the mode's).
    data_dir : str, optional
        Folder with the MNIST IDX files.
    seed : int, default 0
    progress : bool, default False

    Returns
    -------
    OrderingsResult
        A :class:`~varshift.cases.CaseResult`.
    """
    start = time.perf_counter()
    seeds = seeds or 3
    epochs = epochs or (1 if quick else 20)
    n_train = n_train or (6000 if quick else 60000)
    orders = list(orders or POSTED)
    unknown = [o for o in orders if o not in POSTED]
    if unknown:
        raise ValueError(f"unknown ordering(s) {unknown}; choose from {list(POSTED)}")
    x, y, x_test, y_test = mnist_subset(data_dir, n_train, n_test or (1000 if quick else 10000))
    x_stats = x[:1000 if quick else 10000]
    loss = nn.CrossEntropyLoss()
    runs = {}
    for order in orders:
        runs[order] = []
        for s in range(seed, seed + seeds):
            log(progress, f"{NAME}: {order}, seed {s}")
            model = ordering_network(order, seed=s)
            train(model, (x, y), epochs=epochs, batch_size=BATCH, lr=LR, seed=s)
            test = evaluate(model, (x_test, y_test), loss)
            report = measure(model, x_stats, batch_size=BATCH, seed=s)
            fixed = recalibrated(model, x_stats, batch_size=BATCH, seed=s)
            runs[order].append({
                "loss": test["loss"], "accuracy": test["accuracy"],
                "recalibrated_loss": evaluate(fixed, (x_test, y_test), loss)["loss"],
                "shift": [b.shift for b in report.bn],
                "dropout_factor": [b.attribution["dropout"] for b in report.bn],
                "running_factor": [b.attribution["running_stats"] for b in report.bn]})
    settings = dict(seeds=seeds, epochs=epochs, train_images=len(x), test_images=len(x_test),
                    batch=BATCH, lr=LR, batchnorm="Keras-style (momentum 0.99, eps 1e-3)")
    return _result(runs, settings, time.perf_counter() - start)


def _shift(factor):
    return max(factor, 1 / factor)


def _result(runs, settings, seconds):
    orders = list(runs)
    loss = {o: [r["loss"] for r in runs[o]] for o in orders}
    mean = {o: float(np.mean(v)) for o, v in loss.items()}
    rows = []
    for o in orders:
        rs = runs[o]
        rows.append({
            "order": o, "posted": f"{POSTED[o]:.4f}", "loss": fmt(loss[o], 4),
            "acc": fmt([r["accuracy"] for r in rs], 2, 100),
            "recal": fmt([r["recalibrated_loss"] for r in rs], 4),
            "dropout": " / ".join(f"{np.mean([_shift(r['dropout_factor'][i]) for r in rs]):.3f}"
                                  for i in range(2)),
            "shift": " / ".join(f"{np.mean([r['shift'][i] for r in rs]):.2f}" for i in range(2)),
            "rank": ""})
    ranking = sorted(orders, key=mean.get)
    for row in rows:
        row["rank"] = f"{ranking.index(row['order']) + 1} ({sorted(POSTED, key=POSTED.get).index(row['order']) + 1})"
    pairs = list(combinations(orders, 2))
    adjusted = holm([welch_p(loss[a], loss[b]) for a, b in pairs]) if pairs else []
    significant = [(a, b, p) for (a, b), p in zip(pairs, adjusted) if p < 0.05]
    recal = {o: [r["recalibrated_loss"] for r in runs[o]] for o in orders}
    recal_significant = sum(p < 0.05 for p in holm([welch_p(recal[a], recal[b]) for a, b in pairs])) \
        if pairs else 0
    before = [o for o in orders if dropout_before_batchnorm(o)]
    after = [o for o in orders if not dropout_before_batchnorm(o)]
    group_p = welch_p([v for o in before for v in loss[o]], [v for o in after for v in loss[o]]) \
        if before and after else float("nan")
    loss_before = np.mean([mean[o] for o in before]) if before else float("nan")
    loss_after = np.mean([mean[o] for o in after]) if after else float("nan")
    seed_sd = float(np.sqrt(np.mean([np.var(v, ddof=1) for v in loss.values()])))
    posted_values = np.array([POSTED[o] for o in orders])
    from scipy import stats

    rho = float(stats.spearmanr(posted_values, [mean[o] for o in orders]).statistic) \
        if len(orders) > 2 else float("nan")
    # Dropout-attributed shift at the first BatchNorm: the only one whose upstream
    # Dropout depends on the ordering (module 1's Dropout reaches BN2 in every ordering)
    dropout_shift = {o: float(np.mean([_shift(r["dropout_factor"][0]) for r in runs[o]]))
                     for o in orders}
    claims = [
        Claim("the best ordering has Dropout before BatchNorm", "C-D-B-A-P (0.0324)",
              f"{ranking[0]} ({mean[ranking[0]]:.4f} ± {spread(loss[ranking[0]])['sd']:.4f}; differs "
              f"beyond seed noise from {sum(ranking[0] in pair[:2] for pair in significant)} of "
              f"the {len(orders) - 1} others)",
              bool(dropout_before_batchnorm(ranking[0]))),
        Claim("the orderings differ by more than seed noise",
              f"{posted_values.min():.4f}-{posted_values.max():.4f}, one run each",
              f"{len(significant)} of {len(pairs)} pairs differ (Welch, Holm-adjusted p < 0.05); "
              f"seed sd {seed_sd:.4f}", bool(significant)),
        Claim("our ranking follows the posted one", "posted ranking",
              f"Spearman rho = {rho:.2f}", bool(rho > 0.5)),
        Claim("Dropout before BatchNorm shifts the variance (first module)", "Li et al.",
              f"Dropout-attributed shift at BN1 {min(dropout_shift[o] for o in before):.3f}-"
              f"{max(dropout_shift[o] for o in before):.3f} with Dropout before it, "
              f"{max(dropout_shift[o] for o in after):.4f} at most after",
              bool(min(dropout_shift[o] for o in before) > max(dropout_shift[o] for o in after))),
        Claim("Dropout before BatchNorm costs test loss", "Li et al.",
              f"{loss_before:.4f} (before) vs {loss_after:.4f} (after), Welch p = {group_p:.2g}",
              bool(loss_before > loss_after and group_p < 0.05)),
    ]
    steps = settings["epochs"] * -(-settings["train_images"] // settings["batch"])
    recal_change = np.mean([r["recalibrated_loss"] - r["loss"] for rs in runs.values() for r in rs])
    listed = "; ".join(f"{a} vs {b} (p = {p:.2g})" for a, b, p in significant[:5])
    conclusion = (
        f"{verdict(claims)} Over {settings['seeds']} seeds the test loss of one ordering varies "
        f"with an sd of {seed_sd:.4f}; the posted losses span {posted_values.min():.4f}-"
        f"{posted_values.max():.4f} from one run each. "
        + (f"{len(significant)} of {len(pairs)} pairwise differences survive a Holm-corrected "
           f"Welch test ({listed}{'; ...' if len(significant) > 5 else ''}), "
           if significant else
           f"None of the {len(pairs)} pairwise differences survives a Holm-corrected Welch test, ")
        + f"and the orderings with Dropout before BatchNorm average {loss_before:.4f} against "
        f"{loss_after:.4f} "
        f"(p = {group_p:.2g}). The Dropout-attributed variance shift at the first BatchNorm "
        f"is {min(dropout_shift[o] for o in before):.3f}-{max(dropout_shift[o] for o in before):.3f}"
        f" when Dropout comes first and {max(dropout_shift[o] for o in after):.4f} at most after "
        f"it{', as Li et al. predict' if claims[3].holds else ', not what Li et al. predict'} "
        f"(the second BatchNorm receives the first module's Dropout through a convolution in "
        f"every ordering). "
        + (f"In the test loss, Dropout before BatchNorm is "
           f"{'worse' if loss_before > loss_after else 'better'} on average beyond seed noise. "
           if group_p < 0.05 else
           "In the test loss that shift does not show beyond seed noise, so a ranking from one "
           "run per ordering is not evidence for putting Dropout before BatchNorm, or against it. ")
        + f"After "
        f"{steps} steps Keras' momentum 0.99 leaves 0.99^{steps} = {0.99 ** steps:.2g} of the "
        f"initial running statistics; recalibrating them changes the test loss by "
        f"{recal_change:+.4f} on average, to {min(map(np.mean, recal.values())):.4f}-"
        f"{max(map(np.mean, recal.values())):.4f} across orderings, where {recal_significant} of "
        f"{len(pairs)} pairs differ beyond seed noise.")
    columns = [("order", "ordering"), ("posted", "posted loss"), ("loss", "test loss"),
               ("acc", "test acc %"), ("recal", "loss, recalibrated"),
               ("dropout", "Dropout shift BN1 / BN2"), ("shift", "total shift BN1 / BN2"),
               ("rank", "rank (posted)")]
    return OrderingsResult(NAME, TITLE, QUESTION, settings, columns, rows, claims, conclusion,
                           {"runs": runs, "significant_pairs": significant, "spearman": rho,
                            "seed_sd": seed_sd}, seconds)
