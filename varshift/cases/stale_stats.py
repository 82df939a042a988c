"""Case ``stale-running-stats``: 20% accuracy in inference mode, 99% with batch
statistics at test batch 100, less at batch 1."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from .. import diagnose, measure, nn
from ..models import reference_convnet
from ..nn import BatchNorm
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
    verdict,
)

NAME = "stale-running-stats"
TITLE = "Running statistics that were never updated, or updated too slowly"
QUESTION = (
    "With is_training=False at test time a user gets 20% accuracy on MNIST; with batch "
    "statistics at test time (batch 100) 99%, which drops for batch 1. The answers give two "
    "causes: the running averages were never updated (TensorFlow's update ops not run), or a "
    "momentum of 0.99 (Keras' convention) is too slow for the training length - 0.9 fixed it.")
#: Keras-convention momentum (weight of the old value) per variant; 1.0 never updates.
VARIANTS = {"never updated": 1.0, "momentum 0.99": 0.99, "momentum 0.9": 0.9}
LR, BATCH = 1e-3, 100
MODES = ("eval", "batch100", "batch1", "recalibrated")
LABELS = {"eval": "eval mode", "batch100": "batch stats, batch 100",
          "batch1": "batch stats, batch 1", "recalibrated": "after recalibrate"}


def sigmoid_mlp(seed=None):
    """The MLP of TensorFlow-era BatchNorm tutorials: 3 x (Dense 100 - BatchNorm -
    Sigmoid) - Dense 10, Keras-style BatchNorm; input (N, 1, 28, 28)."""
    layers = []
    for n_in in (784, 100, 100):
        layers += [nn.Dense(n_in, 100), nn.BatchNorm.keras(100), nn.Sigmoid()]
    return nn.Sequential(nn.Flatten(), *layers, nn.Dense(100, 10), seed=seed)


NETWORKS = {"convnet": lambda seed: reference_convnet(0.0, seed=seed, batchnorm="keras"),
            "sigmoid MLP": sigmoid_mlp}


class StaleStatsResult(CaseResult):
    def plot(self, ax=None):
        """Test accuracy per network, variant and evaluation mode (bars: mean over seeds;
        dots: each seed); returns the Axes."""
        ax = _axes(ax)
        runs = self.numbers["runs"]
        width = 0.8 / len(MODES)
        for j, mode in enumerate(MODES):
            for i, rs in enumerate(runs.values()):
                values = 100 * np.array([np.nan if r[mode] is None else r[mode] for r in rs])
                xpos = i + (j - (len(MODES) - 1) / 2) * width
                ax.bar(xpos, np.mean(values), width, color=f"C{j}",
                       label=LABELS[mode] if i == 0 else None)
                ax.plot(np.full(len(values), xpos), values, "k.", ms=4)
                if np.isnan(values).all():
                    ax.text(xpos, 2, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(runs)), [k.replace(", ", "\n") for k in runs], fontsize="small")
        ax.set(ylabel="test accuracy (%)", ylim=(0, 100),
               title=f"Keras-style BatchNorm after {self.settings['steps']} training steps")
        ax.legend(loc="lower right", fontsize="small")
        return ax


def _set_momentum(model, keras_momentum):
    for _, layer in model.walk():
        if isinstance(layer, BatchNorm):
            layer.momentum = 1.0 - keras_momentum
    return model


def _batch_stats_accuracy(model, test, batch_size):
    """Accuracy with batch statistics at test time; None where BatchNorm cannot
    normalise (batch 1 after a Dense layer: one value per channel)."""
    try:
        return accuracy(model, *test, batchnorm="train", batch_size=batch_size)
    except ValueError:
        return None


RESULT = StaleStatsResult


def run(quick=True, *, seeds=None, steps=None, n_test=None, data_dir=None, seed=0,
        progress=False) -> StaleStatsResult:
    """Train two networks with Keras-style BatchNorm and each momentum; evaluate them
    four ways, diagnose them, recalibrate them.

    Parameters
    ----------
    quick : bool, default True
        3 seeds and 1,000 test images (batch-1 evaluation is slow); otherwise 5 seeds and
        all 10,000.
    seeds : int, optional
    steps : int, optional
        Training steps of batch 100 (default 100: "short training", after which Keras'
        0.99 leaves 0.99^100 = 0.37 of the initial values in the running averages).
    n_test : int, optional
        Test images to evaluate on (default: the mode's).
    data_dir : str, optional
        Folder with the MNIST IDX files.
    seed : int, default 0
    progress : bool, default False

    Returns
    -------
    StaleStatsResult
        A :class:`~varshift.cases.CaseResult`.

    Notes
    -----
    The networks are the reference convnet without Dropout (LeakyReLU, Tanh) and the
    sigmoid MLP of :func:`sigmoid_mlp`. The momentum never enters training (train mode
    normalises with batch statistics), so for one seed the three variants have identical
    weights and differ only in their running averages.
    """
    start = time.perf_counter()
    seeds = seeds or (3 if quick else 5)
    steps = steps or 100
    x, y, x_test, y_test = mnist_subset(data_dir, steps * BATCH, n_test or (1000 if quick else 10000))
    x_stats = x[:2000 if quick else 10000]
    runs = {}
    for network, build in NETWORKS.items():
        for variant, momentum in VARIANTS.items():
            key = f"{network}, {variant}"
            runs[key] = []
            for s in range(seed, seed + seeds):
                log(progress, f"{NAME}: {key}, seed {s}")
                model = _set_momentum(build(s), momentum)
                train(model, (x, y), epochs=1, batch_size=BATCH, lr=LR, seed=s)
                report = measure(model, x_stats, batch_size=BATCH, seed=s)
                findings = diagnose(model, x_stats, batch_size=BATCH, train_batch_size=BATCH,
                                    seed=s, report=report)
                fixed = recalibrated(model, x_stats, batch_size=BATCH, seed=s)
                runs[key].append({
                    "eval": accuracy(model, x_test, y_test),
                    "batch100": _batch_stats_accuracy(model, (x_test, y_test), 100),
                    "batch1": _batch_stats_accuracy(model, (x_test, y_test), 1),
                    "recalibrated": accuracy(fixed, x_test, y_test),
                    "real_sd": [float(np.sqrt(b.real_var).mean()) for b in report.bn],
                    "real_mean": [float(np.abs(b.real_mean).mean()) for b in report.bn],
                    "findings": _worst(findings)})
    settings = dict(seeds=seeds, steps=steps, batch=BATCH, lr=LR, test_images=len(x_test),
                    batchnorm="Keras-style (eps 1e-3, biased moving variance)")
    return _result(runs, settings, time.perf_counter() - start)


def _worst(findings):
    """Each finding code once, with its most severe grade."""
    worst = {}
    for f in findings:  # diagnose sorts the most severe first
        worst.setdefault(f.code, f.severity)
    return sorted(f"{code} ({severity})" for code, severity in worst.items())


def _mean(rs, mode):
    values = [r[mode] for r in rs]
    return None if None in values else spread(values)["mean"]


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _result(runs, settings, seconds):
    rows = []
    for key, rs in runs.items():
        row = {"variant": key}
        row.update({m: "n/a" if None in (vals := [r[m] for r in rs]) else fmt(vals, 1, 100)
                    for m in MODES})
        counts = Counter(f for r in rs for f in r["findings"])
        row["diagnose"] = ", ".join(f"{f} x{n}" if n < len(rs) else f
                                    for f, n in sorted(counts.items())) or "no findings"
        rows.append(row)
    mean = {k: {m: _mean(rs, m) for m in MODES} for k, rs in runs.items()}
    steps = settings["steps"]
    flagged = {k: all(any(f.startswith(("STATS_AT_INIT", "STALE_RUNNING_STATS"))
                          for f in r["findings"]) for r in rs) for k, rs in runs.items()}
    gap = {k: [r["batch100"] - r["eval"] for r in rs] for k, rs in runs.items()}
    claims = []
    for net in NETWORKS:
        never, slow, fast = (mean[f"{net}, {v}"] for v in VARIANTS)
        claims += [
            Claim(f"{net}: never-updated running statistics ruin inference mode", "20%",
                  _pct(never["eval"]), bool(never["eval"] < 0.5)),
            Claim(f"{net}: batch statistics at test batch 100 recover the accuracy", "99%",
                  f"{_pct(never['batch100'])} (recalibrated {_pct(never['recalibrated'])})",
                  bool(never["batch100"] >= never["recalibrated"] - 0.01)),
            Claim(f"{net}: batch statistics at test batch 1 are worse", "drops",
                  f"{_pct(never['batch1'])} vs {_pct(never['batch100'])} at batch 100",
                  None if never["batch1"] is None
                  else bool(never["batch1"] < never["batch100"] - 0.005)),
            Claim(f"{net}: Keras momentum 0.99 is too slow for {steps} steps", "too slow",
                  f"eval {_pct(slow['eval'])} vs batch stats {_pct(slow['batch100'])}",
                  bool(min(gap[f"{net}, momentum 0.99"]) > 0.01)),
            Claim(f"{net}: momentum 0.9 fixes it", "fixed",
                  f"eval {_pct(fast['eval'])} vs batch stats {_pct(fast['batch100'])}",
                  bool(fast["eval"] >= fast["batch100"] - 0.01)),
        ]
    recal = [m["recalibrated"] for m in mean.values()]
    claims += [
        Claim("diagnose names the cause", "-",
              "flagged: " + (", ".join(k for k in runs if flagged[k]) or "none"),
              bool(all(flagged[k] for k in runs if "never" in k)
                   and not any(flagged[k] for k in runs if "0.9" in k and "0.99" not in k))),
        Claim("recalibrate repairs inference mode", "-",
              f"{100 * min(recal):.1f}-{100 * max(recal):.1f}% for every variant",
              bool(all(m["recalibrated"] >= m["batch100"] - 0.01 for m in mean.values()
                       if m["batch100"] is not None))),
    ]
    sd = {k: spread([r["real_sd"][0] for r in rs])["mean"] for k, rs in runs.items()}
    mu = {k: spread([r["real_mean"][0] for r in rs])["mean"] for k, rs in runs.items()}
    conv, mlp = ({v: mean[f"{net}, {v}"] for v in VARIANTS} for net in NETWORKS)
    conclusion = (
        f"{verdict(claims)} Never-updated running statistics cost "
        f"{100 * (conv['never updated']['batch100'] - conv['never updated']['eval']):.1f} "
        f"points in the convnet ({_pct(conv['never updated']['eval'])} in inference mode) but "
        f"{100 * (mlp['never updated']['batch100'] - mlp['never updated']['eval']):.1f} points "
        f"in the sigmoid MLP ({_pct(mlp['never updated']['eval'])}): the damage depends on how "
        f"far the real statistics are from the initial mean 0 and variance 1 (first BatchNorm "
        f"input sd {sd['convnet, never updated']:.2g}, |mean| {mu['convnet, never updated']:.2g} "
        f"in the convnet; sd {sd['sigmoid MLP, never updated']:.2g}, |mean| "
        f"{mu['sigmoid MLP, never updated']:.2g} in the MLP) and on whether the layers after it "
        f"care about scale: LeakyReLU does not, a sigmoid does. Batch statistics at test batch 100 "
        f"give {_pct(conv['never updated']['batch100'])} / {_pct(mlp['never updated']['batch100'])}"
        f" (convnet / MLP); at batch 1 the convnet still normalises over its 14x14 and 7x7 "
        f"positions ({_pct(conv['never updated']['batch1'])}), while a BatchNorm after a Dense "
        f"layer has one value per channel and cannot (varshift raises, as PyTorch does; "
        f"TensorFlow outputs beta for every image). Keras' 0.99 over {steps} steps keeps "
        f"0.99^{steps} = {0.99 ** steps:.2g} of the initial values: inference mode gives "
        f"{_pct(conv['momentum 0.99']['eval'])} / {_pct(mlp['momentum 0.99']['eval'])}, "
        f"momentum 0.9 (0.9^{steps} = {0.9 ** steps:.0e} left) "
        f"{_pct(conv['momentum 0.9']['eval'])} / {_pct(mlp['momentum 0.9']['eval'])}. "
        f"diagnose flags a running-statistics problem (STATS_AT_INIT or STALE_RUNNING_STATS) "
        f"in every seed for: {', '.join(k for k in runs if flagged[k]) or 'none'}. recalibrate "
        f"gives {100 * min(recal):.1f}-{100 * max(recal):.1f}% for every variant without "
        f"retraining: the weights were fine, only the statistics were wrong.")
    columns = [("variant", "network, running averages"), *((m, LABELS[m] + " %") for m in MODES),
               ("diagnose", "diagnose")]
    return StaleStatsResult(NAME, TITLE, QUESTION, settings, columns, rows, claims, conclusion,
                            {"runs": runs}, seconds)
