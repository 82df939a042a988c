"""Figures (5)-(11): small networks trained on real data (MNIST-1D generated offline,
MNIST from its IDX files), measured with :func:`varshift.measure`.

One sweep of training runs (architecture x placement x drop rate x seed) is shared by
the figures that need it; every number is measured in this run, with error bars over
seeds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .. import evaluate, fit, measure, nn, optim, recalibrate
from ..measure import preserved
from ..nn.layer import modes
from ..theory import weight_cos2
from .networks import ARCHITECTURES, mlp, preresnet
from .results import Claim, FigureResult, mean_sd, new_figure

__all__ = ["FIGURES", "Context", "DataMissing"]

RATES = (0.0, 0.1, 0.3, 0.5, 0.7)


class DataMissing(Exception):
    """A figure needs a data set that is not available."""


@dataclass
class Context:
    """Settings and shared state of one reproduction run."""

    quick: bool = True
    seeds: int = 2
    seed: int = 0
    data_dir: object = None
    progress: bool = False
    cache: dict = field(default_factory=dict)

    @property
    def epochs(self):
        return 6 if self.quick else 15

    @property
    def architectures(self):
        return ["PreResNet"] if self.quick else list(ARCHITECTURES)

    def log(self, message):
        if self.progress:
            import sys

            print(f"  {message}", file=sys.stderr, flush=True)

    def mnist1d(self):
        if "mnist1d" not in self.cache:
            try:
                from ..datasets import load_mnist1d

                self.cache["mnist1d"] = load_mnist1d()
            except ImportError as err:
                raise DataMissing(f"{err}") from err
        return self.cache["mnist1d"]

    def mnist(self):
        if "mnist" not in self.cache:
            from ..datasets import load_mnist

            try:
                x_train, y_train, x_test, y_test = load_mnist(self.data_dir)
            except FileNotFoundError as err:
                raise DataMissing(str(err).splitlines()[0] + " Provide them with --data-dir "
                                  "or VARSHIFT_DATA (see the README).") from err
            n = 10_000 if self.quick else 60_000
            flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
            self.cache["mnist"] = (flat(x_train[:n]), y_train[:n], flat(x_test), y_test)
        return self.cache["mnist"]


# ------------------------------------------------------------------ training
def _accuracy(model, x, y, mode, seed=0):
    """Accuracy on (x, y) with every layer in 'train' or 'eval' mode, model unchanged."""
    return evaluate(model, (x, y), nn.CrossEntropyLoss(), batchnorm=mode, dropout=mode,
                    seed=seed)["accuracy"]


def train(model, data, epochs, *, lr=3e-3, batch_size=100, seed=0, track_modes=False):
    """Adam training; with ``track_modes`` the training-set accuracy in train and in
    eval mode after every epoch (Li et al.'s Fig. 5)."""
    x, y = data
    opt = optim.Adam(model, lr=lr)
    history = {"train_mode": [], "eval_mode": []}
    for epoch in range(epochs):
        fit(model, (x, y), nn.CrossEntropyLoss(), opt, epochs=1, batch_size=batch_size,
            seed=seed * 1000 + epoch, eval_train=False)
        if track_modes:
            history["train_mode"].append(_accuracy(model, x, y, "train", seed))
            history["eval_mode"].append(_accuracy(model, x, y, "eval", seed))
    return history


def _error(model, x, y):
    return 100 * (1 - evaluate(model, (x, y), nn.CrossEntropyLoss())["accuracy"])


def sweep(ctx):
    """Train every (architecture, placement, rate, seed) of the drop-rate sweep once."""
    if "sweep" in ctx.cache:
        return ctx.cache["sweep"]
    x_train, y_train, x_test, y_test = ctx.mnist1d()
    runs = {}
    for arch in ctx.architectures:
        for placement in ("a", "b"):
            for rate in RATES:
                if placement == "b" and rate == 0.0:
                    runs[(arch, "b", 0.0)] = runs[(arch, "a", 0.0)]  # the same network
                    continue
                runs[(arch, placement, rate)] = []
                for s in range(ctx.seeds):
                    ctx.log(f"sweep: {arch} ({placement}) rate {rate} seed {s}")
                    model = ARCHITECTURES[arch](placement, rate, seed=ctx.seed + s)
                    track = placement == "a" and rate in (0.0, 0.5)
                    history = train(model, (x_train, y_train), ctx.epochs, seed=ctx.seed + s,
                                    track_modes=track)
                    runs[(arch, placement, rate)].append({
                        "model": model, "history": history,
                        "error": _error(model, x_test, y_test),
                        "shifts": [b.shift for b in measure(model, x_train, seed=ctx.seed + s).bn]})
    ctx.cache["sweep"] = runs
    return runs


def _fmt(values, digits=2):
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


# ------------------------------------------------------------------ figure (5)
def shift_per_layer(ctx):
    runs = sweep(ctx)
    results = []
    for arch in ctx.architectures:
        fig, axes = new_figure(2, 2)
        numbers, claims = {}, []
        for row, placement in enumerate(("a", "b")):
            ax, bar = axes[row]
            errors = []
            for rate in RATES:
                shifts = np.array([r["shifts"] for r in runs[(arch, placement, rate)]])
                ax.plot(shifts.mean(0), marker="o", ms=3, label=f"drop {rate:g}")
                errors.append([r["error"] for r in runs[(arch, placement, rate)]])
                numbers[f"{placement}/{rate}"] = {"shift_per_layer": shifts.mean(0),
                                                  "mean_shift": [float(s.mean()) for s in shifts],
                                                  "test_error": errors[-1]}
            ax.axhline(1, color="0.5", lw=0.8, ls="--")
            ax.set(xlabel="BatchNorm layer index", ylabel="max(real/moving, moving/real)",
                   title=f"{arch}, Dropout-({placement})")
            ax.legend(fontsize="x-small", ncol=2)
            means = [mean_sd(e) for e in errors]
            bar.bar([str(r) for r in RATES], [m for m, _ in means], yerr=[s for _, s in means],
                    color="C1" if placement == "a" else "C2", capsize=3)
            bar.set(xlabel="drop rate", ylabel="test error (%)",
                    title=f"{arch}, Dropout-({placement}): test error ({ctx.seeds} seeds)")
        mean_shift = {(pl, r): np.mean(numbers[f"{pl}/{r}"]["mean_shift"]) for pl in "ab" for r in RATES}
        a_curve = [mean_shift[("a", r)] for r in RATES]
        claims += [
            Claim(f"{arch}: the shift grows with the drop ratio, placement (a)",
                  "Fig. 4: curves rise with drop 0.1 -> 0.7",
                  " < ".join(f"{v:.3f}" for v in a_curve), bool(np.all(np.diff(a_curve) > 0))),
            Claim(f"{arch}: (a) shifts more than (b) at drop 0.5",
                  "Fig. 4: (a) y-range 1-3, (b) 1-1.2",
                  f"mean shift (a) {mean_shift[('a', 0.5)]:.3f} vs (b) {mean_shift[('b', 0.5)]:.3f}",
                  bool(mean_shift[("a", 0.5)] > mean_shift[("b", 0.5)])),
        ]
        base = numbers["a/0.0"]["test_error"]
        low = numbers["a/0.1"]["test_error"]
        high = numbers["a/0.5"]["test_error"]
        spread = max(mean_sd(base)[1], mean_sd(low)[1], 0.5)
        claims += [
            Claim(f"{arch}: drop 0.1 at (a) stays close to the baseline error",
                  "Fig. 4: drop 0.1 errors close to baseline",
                  f"{_fmt(low)} vs {_fmt(base)} %",
                  bool(abs(np.mean(low) - np.mean(base)) <= 2 * spread)),
            Claim(f"{arch}: drop 0.5 at (a) hurts the test error", "Table 3/4: 8.42 vs 5.02 % (C10 PreResNet)",
                  f"{_fmt(high)} vs {_fmt(base)} %", bool(np.mean(high) > np.mean(base))),
        ]
        results.append(FigureResult(
            f"fig5_shift_per_layer_{arch.lower()}",
            f"{arch} on MNIST-1D: shift per BatchNorm layer and test error by drop rate",
            fig, f"Li et al.'s Fig. 1/Fig. 4 analog: {arch} trained on MNIST-1D for "
            f"{ctx.epochs} epochs with Dropout before the last BatchNorm of each block (a) or "
            f"before its last convolution (b), drop rates {RATES}; shift measured on the "
            f"training data in inference mode against the running statistics (Li et al.'s "
            f"protocol), averaged over {ctx.seeds} seeds; bars: test error, mean ± sd.",
            numbers, claims))
    return results


# ------------------------------------------------------------------ figure (7)
def train_eval_accuracy(ctx):
    runs = sweep(ctx)
    arch = ctx.architectures[0]
    fig, axes = new_figure(1, 1, width=6.5)
    ax = axes[0, 0]
    numbers, gaps = {}, {}
    for rate, color in ((0.0, "C0"), (0.5, "C3")):
        histories = [r["history"] for r in runs[(arch, "a", rate)]]
        for mode, style in (("train_mode", "-"), ("eval_mode", "--")):
            curve = 100 * np.mean([h[mode] for h in histories], axis=0)
            ax.plot(np.arange(1, len(curve) + 1), curve, style, color=color,
                    label=f"drop {rate:g}, {mode.replace('_', ' ')}")
            numbers[f"{rate}/{mode}"] = curve
        gaps[rate] = [100 * (h["train_mode"][-1] - h["eval_mode"][-1]) for h in histories]
    ax.set(xlabel="epoch", ylabel="training-set accuracy (%)",
           title=f"{arch} Dropout-(a) on MNIST-1D: train vs eval mode")
    ax.legend(fontsize="small")
    claims = [
        Claim("With Dropout 0.5 (a), eval-mode training accuracy falls below train mode",
              "Fig. 5: PreResNet C100 95 % vs 83 %, DenseNet C100 95 % vs 77 %",
              f"gap (train - eval mode) {_fmt(gaps[0.5])} points", bool(np.mean(gaps[0.5]) > 0)),
        Claim("Without Dropout, train and eval mode agree", "Fig. 5: both ≈ 100 %",
              f"gap {_fmt(gaps[0.0])} points", bool(abs(np.mean(gaps[0.0])) < max(1.0, abs(np.mean(gaps[0.5]))))),
    ]
    return FigureResult("fig7_train_eval_accuracy", "Training accuracy in train and eval mode",
                        fig, f"Li et al.'s Fig. 5 analog: training-set accuracy after each epoch, "
                        f"evaluated in train mode (Dropout on, batch statistics; solid) and in "
                        f"inference mode (dashed), for no Dropout and Dropout 0.5 at placement "
                        f"(a); mean over {ctx.seeds} seeds.", {**numbers, "final_gap": gaps}, claims)


# ------------------------------------------------------------------ figure (8)
def flipped_logits(ctx):
    runs = sweep(ctx)
    arch = ctx.architectures[0]
    x_train, y_train, _, _ = ctx.mnist1d()
    model = runs[(arch, "a", 0.5)][0]["model"]
    with preserved(model, ctx.seed), np.errstate(all="ignore"):
        with modes(model, default="train"):
            train_logits = np.concatenate([model(x_train[i:i + 256]) for i in range(0, len(x_train), 256)])
        with modes(model, default="eval"):
            eval_logits = np.concatenate([model(x_train[i:i + 256]) for i in range(0, len(x_train), 256)])
    flips = np.flatnonzero((train_logits.argmax(1) == y_train) & (eval_logits.argmax(1) != y_train))
    shown = flips[:4]
    fig, axes = new_figure(1, max(1, len(shown)), width=3.4)
    for ax, i in zip(axes[0], shown):
        k = np.arange(10)
        ax.bar(k - 0.2, train_logits[i], 0.4, label="train mode")
        ax.bar(k + 0.2, eval_logits[i], 0.4, label="eval mode")
        ax.set(xticks=k, xlabel="class", title=f"sample {i}, label {y_train[i]}")
        ax.legend(fontsize="x-small")
    axes[0, 0].set_ylabel("pre-softmax output")
    if not len(shown):
        axes[0, 0].text(0.5, 0.5, "no flipped sample", ha="center", transform=axes[0, 0].transAxes)
    claims = [Claim("Some training samples are right in train mode and wrong in eval mode",
                    "Fig. 6: 8 CIFAR-10 examples shown", f"{len(flips)} of {len(y_train)} flip",
                    bool(len(flips) > 0))]
    return FigureResult("fig8_flipped_logits", "Logits of training samples that flip at inference",
                        fig, f"Li et al.'s Fig. 6 analog: pre-softmax outputs of MNIST-1D training "
                        f"samples that {arch} with Dropout 0.5 at (a) classifies correctly in train "
                        f"mode and wrongly in inference mode.",
                        {"flips": int(len(flips)), "shown": shown.tolist(),
                         "train_logits": train_logits[shown], "eval_logits": eval_logits[shown]}, claims)


# ------------------------------------------------------------------ figure (9)
def recalibration(ctx):
    runs = sweep(ctx)
    arch = ctx.architectures[0]
    x_train, _, x_test, y_test = ctx.mnist1d()
    numbers, claims = {}, []
    fig, axes = new_figure(1, 1, width=6)
    ax = axes[0, 0]
    for i, placement in enumerate(("a", "b")):
        before, after, shift_after = [], [], []
        for r in runs[(arch, placement, 0.5)]:
            model = copy.deepcopy(r["model"])
            result = recalibrate(model, x_train, seed=ctx.seed)
            before.append(r["error"])
            after.append(_error(model, x_test, y_test))
            shift_after.append(max(b.shift for b in result.after.bn))
        numbers[placement] = {"before": before, "after": after, "max_shift_after": shift_after}
        for j, values in enumerate((before, after)):
            m, s = mean_sd(values)
            ax.bar(2 * i + j, m, yerr=s, capsize=3, color=f"C{j}")
        claims.append(Claim(f"Re-estimating BN statistics lowers the test error, ({placement}) 0.5",
                            "Table 3 C10 PreResNet: " + ("8.42 -> 6.42" if placement == "a" else "5.85 -> 5.77"),
                            f"{_fmt(before)} -> {_fmt(after)} %", bool(np.mean(after) < np.mean(before))))
    ax.set_xticks(range(4), ["(a) 0.5", "(a) Adjust", "(b) 0.5", "(b) Adjust"])
    ax.set(ylabel="test error (%)", title=f"{arch} on MNIST-1D: before and after recalibration")
    gain = {p: np.mean(numbers[p]["before"]) - np.mean(numbers[p]["after"]) for p in "ab"}
    claims += [
        Claim("Re-estimation helps (a) more than (b)", "Table 3: gains 2.00 vs 0.08 points (C10 PreResNet)",
              f"gains {gain['a']:.2f} vs {gain['b']:.2f} points", bool(gain["a"] > gain["b"])),
        Claim("After recalibration the shift is ~1 on the recalibration data", "by construction",
              f"largest shift after: {max(numbers['a']['max_shift_after'] + numbers['b']['max_shift_after']):.5f}",
              bool(max(numbers["a"]["max_shift_after"] + numbers["b"]["max_shift_after"]) < 1.001)),
    ]
    return FigureResult("fig9_recalibration", "Test error before and after recalibration (Table 3)",
                        fig, f"Li et al.'s Table 3 analog: {arch} with Dropout 0.5 at (a) or (b), "
                        f"test error with the trained running statistics and after "
                        f"varshift.recalibrate on the training data (Dropout off, exact "
                        f"statistics, layer by layer); mean ± sd over {ctx.seeds} seeds.", numbers, claims)


# ------------------------------------------------------------------ figure (10)
def after_bn_and_uout(ctx):
    x_train, y_train, x_test, y_test = ctx.mnist1d()
    amounts = (0.0, 0.1, 0.2, 0.3, 0.5)
    numbers = {}
    fig, axes = new_figure(1, 2)
    for ax, (key, placement, noise, title) in zip(axes[0], (
            ("head", "head", "dropout", "one Dropout after all BN (Table 4)"),
            ("uout", "b", "uout", "Uout at the (b) positions (Table 6)"))):
        errors, shifts, dropout_shifts = [], [], []
        for amount in amounts:
            e, s, ds = [], [], []
            for seed in range(ctx.seeds):
                ctx.log(f"{key}: {amount} seed {seed}")
                model = preresnet(placement, amount, noise=noise, seed=ctx.seed + seed)
                train(model, (x_train, y_train), ctx.epochs, seed=ctx.seed + seed)
                e.append(_error(model, x_test, y_test))
                bn = measure(model, x_train).bn
                s.append(np.mean([b.shift for b in bn]))
                ds.append(max(max(f, 1 / f) for f in (b.attribution["dropout"] for b in bn)))
            errors.append(e)
            shifts.append(s)
            dropout_shifts.append(ds)
        numbers[key] = {"amounts": amounts, "test_error": errors, "mean_shift": shifts,
                        "max_dropout_attributed_shift": dropout_shifts}
        means = [mean_sd(e) for e in errors]
        ax.bar([str(a) for a in amounts], [m for m, _ in means], yerr=[s for _, s in means], capsize=3)
        ax.set(xlabel="drop rate" if key == "head" else "beta", ylabel="test error (%)",
               title=f"PreResNet on MNIST-1D: {title}")
    head_dropout = max(max(d) for d in numbers["head"]["max_dropout_attributed_shift"])
    head_total = max(np.mean(s) for s in numbers["head"]["mean_shift"])
    base = numbers["head"]["test_error"][0]
    best_head = min(np.mean(e) for e in numbers["head"]["test_error"][1:])
    best_uout = min(np.mean(e) for e in numbers["uout"]["test_error"][1:])
    sd = max(mean_sd(base)[1], 0.5)
    claims = [
        Claim("Dropout after all BN causes no variance shift", "Table 4 setting (no shift by design)",
              f"Dropout-attributed shift at most {head_dropout:.6f} (total shift, stale "
              f"running statistics included: up to {head_total:.3f})", head_dropout < 1.001),
        Claim("One Dropout after all BN does not hurt (small gains)",
              "Table 4: best rate beats 0.0 in 8 of 8 nets (e.g. 5.02 -> 4.94)",
              f"best {best_head:.2f} vs {_fmt(base)} %", bool(best_head <= np.mean(base) + 2 * sd)),
        Claim("Uout at (b) does not hurt (small gains)", "Table 6: ~0.2-0.3 point gains (e.g. 5.02 -> 4.85)",
              f"best {best_uout:.2f} vs {_fmt(base)} %", bool(best_uout <= np.mean(base) + 2 * sd)),
    ]
    return FigureResult("fig10_after_bn_and_uout", "Dropout after all BatchNorm, and Uout (Tables 4 and 6)",
                        fig, f"Li et al.'s Table 4 and Table 6 analogs on MNIST-1D: PreResNet with one "
                        f"Dropout before the classifier (left) and with Uout(beta) at the (b) "
                        f"positions (right); test error, mean ± sd over {ctx.seeds} seeds.", numbers, claims)


# ------------------------------------------------------------------ figure (11)
def batch_size_and_momentum(ctx):
    x_train, y_train, x_test, y_test = ctx.mnist1d()
    batch_sizes = (16, 128) if ctx.quick else (8, 32, 128)
    momenta = (0.01, 0.1) if ctx.quick else (0.01, 0.1, 0.5)
    epochs = max(3, ctx.epochs // 2)
    numbers = {}
    for bs in batch_sizes:
        for m in momenta:
            ctx.log(f"batch {bs}, momentum {m}")
            model = preresnet("a", 0.0, seed=ctx.seed)
            for _, layer in model.walk():
                if isinstance(layer, nn.BatchNorm):
                    layer.momentum = m
            train(model, (x_train, y_train), epochs, batch_size=bs, seed=ctx.seed)
            report = measure(model, x_train, batch_size=bs)
            ema_error = _error(model, x_test, y_test)
            recalibrate(model, x_train)
            numbers[f"{bs}/{m}"] = {"batch_size": bs, "momentum": m, "steps": epochs * len(x_train) // bs,
                                    "shift": float(np.mean([b.shift for b in report.bn])),
                                    "error_ema": ema_error, "error_recalibrated": _error(model, x_test, y_test)}
    fig, axes = new_figure(1, 2)
    for m in momenta:
        rows = [numbers[f"{bs}/{m}"] for bs in batch_sizes]
        axes[0, 0].plot(batch_sizes, [r["shift"] for r in rows], marker="o", label=f"momentum {m:g}")
        axes[0, 1].plot(batch_sizes, [r["error_ema"] for r in rows], marker="o", label=f"EMA, momentum {m:g}")
        axes[0, 1].plot(batch_sizes, [r["error_recalibrated"] for r in rows], marker="s", ls="--",
                        label=f"recalibrated, momentum {m:g}")
    axes[0, 0].set(xscale="log", xlabel="batch size", ylabel="mean shift (no Dropout)",
                   title="Shift of EMA running statistics")
    axes[0, 1].set(xscale="log", xlabel="batch size", ylabel="test error (%)", title="Test error")
    for ax in axes[0]:
        ax.legend(fontsize="x-small")
    slow = numbers[f"{batch_sizes[-1]}/{momenta[0]}"]
    fast = numbers[f"{batch_sizes[-1]}/{momenta[-1]}"]
    claims = [
        Claim("A momentum too slow for the number of updates leaves stale statistics",
              "Wu & Johnson 2021; Keras 0.99 threads (peers digest)",
              f"batch {batch_sizes[-1]}: shift {slow['shift']:.3f} (momentum {momenta[0]}) vs "
              f"{fast['shift']:.3f} ({momenta[-1]})", slow["shift"] > fast["shift"]),
        Claim("Recalibration removes the error due to stale statistics", "precise BN",
              f"momentum {momenta[0]}: {slow['error_ema']:.2f} -> {slow['error_recalibrated']:.2f} %",
              slow["error_recalibrated"] <= slow["error_ema"]),
    ]
    return FigureResult("fig11_batch_size_momentum", "Batch size and BatchNorm momentum (stale statistics)",
                        fig, f"PreResNet without Dropout on MNIST-1D, trained {epochs} epochs with "
                        f"several batch sizes and BatchNorm momenta (PyTorch convention); left: "
                        f"mean shift of the running statistics, right: test error with the EMA "
                        f"statistics and after recalibration (one seed).", numbers, claims)


# ------------------------------------------------------------------ figure (6)
def width(ctx):
    x_train, y_train, x_test, y_test = ctx.mnist()
    widths = (32, 128, 512) if ctx.quick else (32, 128, 512, 2048)
    epochs = 2 if ctx.quick else 5
    numbers = {}
    for w in widths:
        angles, shifts, errors = [], [], []
        for s in range(ctx.seeds):
            ctx.log(f"width {w} seed {s}")
            plain = mlp(w, 0.0, seed=ctx.seed + s)
            train(plain, (x_train, y_train), epochs, lr=1e-3, batch_size=128, seed=ctx.seed + s)
            angles.append([(a.d, a.cos2, a.d_cos2) for a in weight_cos2(plain)])
            dropped = mlp(w, 0.5, placement="b", seed=ctx.seed + s)
            train(dropped, (x_train, y_train), epochs, lr=1e-3, batch_size=128, seed=ctx.seed + s)
            shifts.append(measure(dropped, x_train).bn[1].shift)  # the BN after Dropout -> Dense
            errors.append(_error(dropped, x_test, y_test))
        numbers[w] = {"angles": angles, "shift": shifts, "test_error": errors}
    fig, axes = new_figure(1, 2)
    hidden = [np.mean([a[1][2] for a in numbers[w]["angles"]]) for w in widths]  # the w -> w layer
    cos2 = [np.mean([a[1][1] for a in numbers[w]["angles"]]) for w in widths]
    axes[0, 0].plot(widths, hidden, marker="o", label="trained, no Dropout")
    axes[0, 0].plot(widths, [1.0] * len(widths), "k--", lw=1, label="zero-mean random weights")
    axes[0, 0].set(xscale="log", yscale="log", xlabel="fan-in d (hidden width)", ylabel="mean d cos^2(theta)",
                   title="d cos^2 of the hidden layer's weights")
    axes[0, 0].legend(fontsize="small")
    means = [mean_sd(numbers[w]["shift"]) for w in widths]
    axes[0, 1].errorbar(widths, [m for m, _ in means], yerr=[s for _, s in means], marker="o", capsize=3)
    axes[0, 1].set(xscale="log", xlabel="hidden width", ylabel="shift at the BN after Dropout -> Dense",
                   title="Measured shift against width, Dropout 0.5 (b)")
    for ax in axes[0]:  # label the widths themselves, not log-scale minor ticks
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
    shift_means = [m for m, _ in means]
    claims = [
        Claim("cos^2(theta) of trained filters is small", "Table 1: 0.014-0.035 on average",
              ", ".join(f"{c:.4f}" for c in cos2), bool(max(cos2) < 0.2)),
        Claim("d cos^2 grows with the width for trained weights", "Table 1: WRN 52.7 vs PreResNet 2.9",
              ", ".join(f"{h:.1f}" for h in hidden), bool(hidden[-1] > hidden[0])),
        Claim("At fixed p the shift shrinks with width (b)", "WRN (b) drop 0.1-0.5 stays near baseline",
              ", ".join(f"{m:.3f}" for m in shift_means), bool(shift_means[-1] < shift_means[0])),
    ]
    return FigureResult("fig6_width", "Weight angles and the shift against width (Fig. 3, Table 1)",
                        fig, f"Li et al.'s Fig. 3/Table 1 analog on MNIST ({len(x_train)} training "
                        f"images): MLPs of growing width trained without Dropout (left: mean d cos^2 "
                        f"of the hidden layer, trained weights only), and with Dropout 0.5 before "
                        f"the hidden Dense (placement (b); right: measured shift at the BatchNorm "
                        f"after it); {ctx.seeds} seeds.", numbers, claims)


FIGURES = {
    "shift-per-layer": shift_per_layer,
    "width": width,
    "train-eval-accuracy": train_eval_accuracy,
    "flipped-logits": flipped_logits,
    "recalibration": recalibration,
    "after-bn-and-uout": after_bn_and_uout,
    "batch-size-momentum": batch_size_and_momentum,
}
