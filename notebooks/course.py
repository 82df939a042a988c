"""Helpers of the course notebooks: set-up, data, bands over seeds, and the exercise checks.

How the exercises work
----------------------
An exercise cell defines a function decorated with ``@course.exercise``; the student
version of the function raises ``NotImplementedError("Exercise N: ...")``. The next
cell calls ``course.check_...(function)``, which runs the function on inputs of its own
and raises ``AssertionError`` with a hint when the answer is wrong (or lets the
``NotImplementedError`` of an unsolved stub through). Nothing outside the exercise
cells uses the answers, so an unsolved notebook still runs everywhere else.

With ``VARSHIFT_SOLUTIONS=1`` in the environment, ``course.exercise`` replaces each
function by the reference solution of the same name in ``solutions.py`` (next to this
file). That is how the stored notebooks are executed (``python execute.py``) and how CI
checks that every solution passes; CI also runs the notebooks without it and checks
that only the exercise checks fail, with the stubs' ``NotImplementedError``.

Predict, lock, measure
----------------------
Some exercise cells end with ``course.lock(N, prediction)``: the student's prediction is
recorded before the cell that measures the real value runs. That cell ends with
``course.grade(N, measured, what, rtol)``, which prints the comparison, and from then on
``lock(N, ...)`` refuses a new guess in this kernel: a guess made after the measurement
is never graded.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path

import numpy as np

import varshift
from varshift import nn

__all__ = ["setup", "mnist_dir", "mnist", "band", "exercise", "solutions_enabled", "EXERCISES",
           "lock", "grade",
           "check_batchnorm_backward", "check_catching_input", "check_train_variance",
           "check_delta_case_b", "check_dropout_factor_prediction", "check_shift_prediction",
           "check_equal_variance_beta", "check_updates_and_initial_weight",
           "check_first_batchnorm_bound", "compare_initial_weight_left", "check_decisions",
           "check_recomputed_statistics", "compare_keras_updates", "check_torch_twin",
           "check_population_statistics", "check_dropout", "check_layernorm_backward"]

HERE = Path(__file__).resolve().parent
ENV = "VARSHIFT_SOLUTIONS"

EXERCISES = {
    1: ("01", "batchnorm_backward", "check_batchnorm_backward"),
    2: ("01", "input_that_catches_the_bug", "check_catching_input"),
    3: ("02", "train_variance_dropout", "check_train_variance"),
    4: ("02", "delta_case_b", "check_delta_case_b"),
    5: ("03", "predict_dropout_factor", "check_dropout_factor_prediction"),
    6: ("03", "predict_shift", "check_shift_prediction"),
    7: ("04", "uout_beta_for", "check_equal_variance_beta"),
    8: ("04", "updates_and_initial_weight", "check_updates_and_initial_weight"),
    9: ("05", "first_batchnorm_factor_bound", "check_first_batchnorm_bound"),
    10: ("05", "decide", "check_decisions"),
    11: ("05", "torch_twin", "check_torch_twin"),
    12: ("05", "population_statistics", "check_population_statistics"),
    13: ("06", "recompute_batchnorm_statistics", "check_recomputed_statistics"),
    14: ("07", "dropout_forward", "check_dropout"),
    15: ("07", "layernorm_backward", "check_layernorm_backward"),
}
"""Exercise number -> (notebook, function name, check name)."""


# --------------------------------------------------------------------------- set-up
def setup(threads=1):
    """Common settings of the notebooks; returns a seeded random generator.

    One BLAS and one Numba thread: the matrices here are small, so a second thread
    gains little (and on a busy 2-core machine, threads that wait for each other make
    small products many times slower). With one thread a run repeats the stored numbers
    where the BLAS kernel is the same (each notebook's header names it); another kernel
    changes trained networks' numbers in their later digits, an unstable run's entirely
    (see notebooks/README.md).
    """
    import matplotlib.pyplot as plt
    import numba

    from varshift.kernels import threads as thread_policy

    thread_policy.limit(min(threads, numba.config.NUMBA_NUM_THREADS))
    np.set_printoptions(precision=4, suppress=True)
    plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3,
                         "legend.fontsize": "small", "figure.constrained_layout.use": True})
    mode = ("reference solutions (VARSHIFT_SOLUTIONS=1)" if solutions_enabled()
            else "your own code")
    print(f"varshift {varshift.__version__}; exercises run with {mode}")
    return np.random.default_rng(0)


def mnist_dir():
    """The MNIST folder: ``$MNIST_DIR`` or ``../../shared/data/mnist`` (the development
    machines' layout, from this folder) if it exists, else None (``load_mnist`` then
    looks in ``$VARSHIFT_DATA/mnist`` and ``~/.cache/varshift/mnist``)."""
    folder = next((Path(p) for p in (os.environ.get("MNIST_DIR"), HERE / "../../shared/data/mnist")
                   if p and Path(p).is_dir()), None)
    return None if folder is None else str(folder.resolve())


def mnist(flat=False):
    """MNIST ``(x_train, y_train, x_test, y_test)`` as float32 in [0, 1], from
    :func:`mnist_dir`."""
    x_train, y_train, x_test, y_test = varshift.datasets.load_mnist(mnist_dir())
    if flat:
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    return x_train, y_train, x_test, y_test


def band(ax, x, runs, label=None, color=None, ls="-", marker=None):
    """Mean over seeds (rows of ``runs``) with a band of +-1 standard deviation."""
    runs = np.asarray(runs, float)
    mean, sd = runs.mean(axis=0), runs.std(axis=0, ddof=1)
    line, = ax.plot(x, mean, ls=ls, marker=marker, color=color, label=label)
    ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, lw=0)
    return line


# --------------------------------------------------------------------------- exercises
def solutions_enabled() -> bool:
    """True when ``VARSHIFT_SOLUTIONS=1``: exercises use the reference solutions."""
    return os.environ.get(ENV, "") == "1"


@functools.lru_cache(maxsize=1)
def _solutions():
    spec = importlib.util.spec_from_file_location("course_solutions", HERE / "solutions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exercise(function):
    """Decorator of an exercise function: the function itself, or, with
    ``VARSHIFT_SOLUTIONS=1``, the reference solution of the same name."""
    if not solutions_enabled():
        return function
    solution = getattr(_solutions(), function.__name__)
    solution.reference = True
    return solution


def _anticipated(got, wrong, generic):
    """The hint of the anticipated wrong answer ``got`` equals (``wrong``: value -> hint),
    else the ``generic`` hint, which points to the idea."""
    return next((h for w, h in wrong.items() if math.isclose(got, w, rel_tol=1e-9)), generic)


def _passed(number, text):
    source = " (reference solution)" if solutions_enabled() else ""
    print(f"Exercise {number} passed{source}: {text}")


def _close(a, b, rtol=1e-6, atol=1e-9):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))


def _hint(number, message):
    return f"Exercise {number} - not yet. Hint: {message}"


# --------------------------------------------------------------- predict, lock, measure
_locked = {}
"""Exercise number -> the guess locked before its measurement ran (this kernel)."""
_measured = set()
"""Exercises whose measuring cell has run in this kernel."""
graded = {}
"""Exercise number -> True (hit), False (miss) or None (nothing locked), from :func:`grade`."""


def lock(number, guess):
    """Lock the guess of exercise ``number`` before the cell that measures it runs.

    The exercise cell calls it with the student's prediction; :func:`grade`, called by
    the measuring cell, compares the two. A guess may be replaced until the measurement
    runs, not after: once exercise ``number`` has been measured in this kernel, ``lock``
    raises ``AssertionError`` (a guess made after seeing the result is not graded;
    restarting the kernel starts over). Returns None (a notebook cell ending in it shows
    nothing more than the message).
    """
    if number in _measured:
        raise AssertionError(_hint(number, "the measurement already ran in this kernel, so a guess "
                                           "locked now is not graded. Restart the kernel (Kernel > "
                                           "Restart) and lock your guess before the measuring cell."))
    try:
        value = float(guess)
    except (TypeError, ValueError):
        raise AssertionError(_hint(number, f"lock one number; got {guess!r}.")) from None
    if not math.isfinite(value):
        raise AssertionError(_hint(number, f"lock a finite number; got {value}."))
    _locked[number] = value
    print(f"Exercise {number}: your guess {value:.4g} is locked; now run the measurement.")


def grade(number, measured, what, rtol):
    """Compare the guess locked for exercise ``number`` with the ``measured`` value.

    Called by the measuring cell after it measured; from then on :func:`lock` refuses new
    guesses for ``number``. ``what`` says what was measured; ``rtol`` is the relative
    difference under which the guess counts as a hit. Prints the comparison (or that no
    guess was locked, and nothing is graded) and records it in ``graded[number]``: True
    (hit), False (miss) or None. A miss raises nothing: finding out why is the exercise's
    second half. Returns None.
    """
    _measured.add(number)
    measured = float(measured)
    if number not in _locked:
        print(f"Exercise {number}: no guess was locked before this measurement, so nothing is "
              f"graded ({what}: {measured:.4g}). A guess locked from now on is refused; restart "
              "the kernel to try again.")
        graded[number] = None
        return
    guess = _locked[number]
    off = abs(guess - measured) / abs(measured)
    hit = off <= rtol
    print(f"Exercise {number}: you locked {guess:.4g}; {what}: {measured:.4g}, {off:.1%} off - "
          + (f"a hit (within {rtol:.0%})." if hit else
             f"a miss (more than {rtol:.0%}): find out why before you read on."))
    graded[number] = hit


# Exercise 1 ------------------------------------------------------------------------
class _HandWritten(nn.Layer):
    """A BatchNorm made of a forward and a backward function (for gradcheck)."""

    def __init__(self, forward, backward, num_features, seed=0):
        super().__init__()
        self._fw, self._bw = forward, backward
        rng = np.random.default_rng(seed)
        self.params["weight"] = rng.uniform(0.5, 1.5, num_features).astype(self.dtype)
        self.params["bias"] = rng.normal(size=num_features).astype(self.dtype)

    def _forward(self, x):
        return self._fw(x, self.params["weight"], self.params["bias"])

    def _backward(self, dout, cache):
        return self._bw(dout, cache)


def handwritten_layer(forward, backward, num_features):
    """A varshift layer computing with ``forward(x, gamma, beta) -> (out, cache)`` and
    ``backward(g, cache) -> (dx, {'weight': dgamma, 'bias': dbeta})``."""
    return _HandWritten(forward, backward, num_features)


def _reference_bn(x, gamma, beta, g):
    bn = nn.BatchNorm(x.shape[1]).astype(np.float64)
    bn.params["weight"][...] = gamma
    bn.params["bias"][...] = beta
    out = bn(x)
    return out, bn.backward(g), bn.grads


def check_batchnorm_backward(backward, forward):
    """Exercise 1: ``backward(g, cache)`` of the notebook's ``forward`` against the
    engine and against float64 central differences (``varshift.gradcheck``)."""
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(16, 5))
    gamma, beta = rng.uniform(0.5, 1.5, 5), rng.normal(size=5)
    g = rng.normal(size=x.shape)
    out, cache = forward(x, gamma, beta)
    result = backward(g, cache)
    assert isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict), _hint(
        1, "return a pair (dx, {'weight': dgamma, 'bias': dbeta}).")
    dx, grads = result
    assert np.shape(dx) == x.shape, _hint(1, f"dx must have the shape of x, {x.shape}; got {np.shape(dx)}.")
    assert set(grads) == {"weight", "bias"}, _hint(1, f"the dict needs the keys 'weight' and 'bias', got {sorted(grads)}.")
    _, dx_ref, grads_ref = _reference_bn(x, gamma, beta, g)
    assert _close(grads["bias"], grads_ref["bias"]), _hint(
        1, "dbeta = sum over the batch of g (beta is added to every sample).")
    assert _close(grads["weight"], grads_ref["weight"]), _hint(
        1, "dgamma = sum over the batch of g * xhat (a sum, not a mean).")
    if not _close(dx, dx_ref):
        mu, var = x.mean(0), x.var(0)
        inv = gamma / np.sqrt(var + 1e-5)
        xhat = (x - mu) / np.sqrt(var + 1e-5)
        variants = {
            "constants": inv * g,
            "no_var": inv * (g - g.mean(0)),
            "no_mean": inv * (g - xhat * (g * xhat).mean(0)),
        }
        hints = {
            "constants": "you treated mu and sigma^2 as constants - that is the gradient of "
                         "inference mode. In train mode both depend on every x of the channel: "
                         "add the paths through mu and through sigma^2.",
            "no_var": "the path through sigma^2 is missing: dL/dsigma^2 = sum g*gamma*(x-mu) * "
                      "(-1/2)(sigma^2+eps)^(-3/2), and dsigma^2/dx_n = 2(x_n-mu)/N.",
            "no_mean": "the path through mu is missing: every x_n moves mu by 1/N.",
        }
        found = next((k for k, v in variants.items() if _close(dx, v)), None)
        raise AssertionError(_hint(1, hints.get(found, (
            "dx differs from the engine's. Every x_n reaches the loss three ways: directly "
            "through xhat, through mu and through sigma^2; a node that feeds several others "
            "receives the sum of their gradients. Work node by node through the table, and "
            "test each local rule on its own by central differences on a batch of 2 or 3."))))
    errors = [varshift.gradcheck(handwritten_layer(forward, backward, c), rng.normal(size=(n, c)))
              for n, c in ((8, 3), (32, 4))]
    assert max(errors) < 1e-6, _hint(1, f"gradcheck error {max(errors):.1e} (should be < 1e-6).")
    _passed(1, f"matches the engine, gradcheck error {max(errors):.1e}")


# Exercise 2 ------------------------------------------------------------------------
def check_catching_input(make_input, forward, planted_backward):
    """Exercise 2: ``make_input()`` returns an input on which gradcheck catches the
    planted backward, while the correct BatchNorm still passes."""
    x = make_input()
    assert x is not None, _hint(2, "return the input array.")
    x = np.asarray(x, dtype=np.float64)
    assert x.ndim == 2 and x.shape[0] >= 2, _hint(
        2, f"return an (N, C) array with N >= 2 (BatchNorm needs a batch); got shape {x.shape}.")
    assert x.size <= 4096, _hint(2, "keep it small (gradcheck perturbs every entry twice).")
    good = varshift.gradcheck(nn.BatchNorm(x.shape[1]), x)
    assert good < 1e-6, _hint(2, f"the correct BatchNorm fails on this input too ({good:.1e}); "
                                 "use ordinary finite values.")
    bad = varshift.gradcheck(handwritten_layer(forward, planted_backward, x.shape[1]), x)
    assert bad > 1e-3, _hint(
        2, f"on this input the planted backward passes (error {bad:.1e}). Over which axis does it "
           "take its means, and when does that give the same numbers as the right axis?")
    _passed(2, f"gradcheck error of the planted backward {bad:.2f}, of the correct one {good:.0e}")


# Exercise 3 ------------------------------------------------------------------------
def check_train_variance(train_variance):
    """Exercise 3: Eq. 7, Var_train of ``a x / p`` for x with mean c, variance v."""
    grid = [(0.0, 1.0, 0.5), (1.0, 1.0, 0.5), (0.5, 2.0, 0.9), (-1.5, 0.3, 0.2), (2.0, 0.5, 1.0)]
    for c, v, p in grid:
        got, want = float(train_variance(c, v, p)), (c * c + v) / p - c * c
        if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            continue
        wrong = {
            (c * c + v) / p: "that is E[X^2]; the variance subtracts E[X]^2 = c^2 (inverted "
                             "Dropout keeps the mean c).",
            v / p: "E[x^2] = c^2 + v, not v: the mean enters the second moment (this is why "
                   "ReLU outputs, with c > 0, shift more).",
            (c * c + v) * p - c * c: "inverted Dropout divides by p: E[(a x / p)^2] = E[a^2] "
                                     "E[x^2] / p^2 with E[a^2] = p.",
            v: "that is the variance without Dropout (inference mode).",
        }
        hint = _anticipated(got, wrong,
                            "write X = a x / p, compute E[X] and E[X^2] using that a and x are "
                            "independent and a^2 = a.")
        raise AssertionError(_hint(3, f"at c={c}, v={v}, p={p} you return {got:.6g}, "
                                      f"Eq. 7 gives {want:.6g}; {hint}"))
    rng = np.random.default_rng(3)
    c, v, p, n = 0.7, 1.3, 0.6, 400_000
    x = rng.normal(c, np.sqrt(v), n)
    masked = (rng.random(n) < p) * x / p
    chunks = masked.reshape(100, -1).var(axis=1, ddof=1)
    mc, se = chunks.mean(), chunks.std(ddof=1) / 10
    assert abs(mc - train_variance(c, v, p)) < 5 * se
    _passed(3, f"Eq. 7 at c={c}, v={v}, p={p}: {train_variance(c, v, p):.4f}, "
               f"Monte Carlo with explicit masks {mc:.4f} +- {se:.4f}")


# Exercise 4 ------------------------------------------------------------------------
def check_delta_case_b(delta_case_b):
    """Exercise 4: Eq. 12, Delta behind a weight layer."""
    from varshift import theory

    grid = [(0.5, 0.0, 1.0, 0.3, 16.0), (0.5, 1.0, 1.0, 0.3, 16.0), (0.9, 0.5, 2.0, 0.1, 2.5),
            (0.3, 0.2, 0.5, 0.6, 100.0), (0.7, 1.0, 1.0, 0.0, 8.0), (0.5, 0.0, 1.0, 0.3, 1.0)]
    for p, c, v, rho, dc in grid:
        got = float(delta_case_b(p, c, v, rho, dc))
        want = float(theory.shift_dropout_weight_bn(p, c=c, v=v, rho=rho, d_cos2=dc))
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        own = (c * c + v) / p - c * c
        wrong = {
            1 / want: "you returned Var_train / Var_test; Delta is Var_test / Var_train (<= 1).",
            float(theory.shift_dropout_bn(p, c, v)): "that is case (a); behind a weight layer "
                "the correlated part rho v (d cos^2 - 1) is added to both variances.",
            (v + rho * v * dc) / (own + rho * v * dc): "the cross term is rho v (d cos^2 - 1): "
                "sum_{i != j} w_i w_j = (sum w)^2 - sum w^2 = |w|^2 (d cos^2 - 1).",
        }
        hint = _anticipated(got, wrong,
                            "start from Eq. 9 and 10: Dropout inflates each unit's own variance "
                            "(Eq. 7) and leaves the covariances between units alone (Eq. 11); write "
                            "the sum over i != j with d cos^2 theta, and |w|^2 cancels.")
        raise AssertionError(_hint(4, f"at p={p}, c={c}, v={v}, rho={rho}, d cos^2={dc} you "
                                      f"return {got:.6g}, Eq. 12 gives {want:.6g}; {hint}"))
    _passed(4, "Eq. 12 agrees with varshift.theory on every test point")


# Exercise 5 ------------------------------------------------------------------------
def statistics_for_eq12(x, w):
    """The reference c, v, rho, d cos^2 of inputs ``x`` (N, d) and weights ``w`` (out, d)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    d = x.shape[1]
    corr = np.corrcoef(x, rowvar=False)
    return {"c": float(x.mean()), "v": float(x.var(axis=0, ddof=1).mean()),
            "rho": float((np.nansum(corr) - np.nansum(np.diag(corr))) / (d * (d - 1))),
            "d_cos2": float(np.mean(w.sum(axis=1) ** 2 / np.sum(w * w, axis=1)))}


def check_dropout_factor_prediction(predict):
    """Exercise 5: ``predict(x, w, p)`` returns a dict with c, v, rho, d_cos2 measured on
    ``x`` and ``w`` and ``delta``, Eq. 12 at those values."""
    from varshift import theory

    rng = np.random.default_rng(5)
    n, d, rho = 3000, 12, 0.4
    shared = rng.normal(size=(n, 1))
    x = 0.8 + 1.3 * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.normal(size=(n, d)))
    x *= rng.uniform(0.7, 1.3, d)  # units of unequal variance, as in a network
    w = rng.normal(0.3, 1.0, size=(6, d))
    got = predict(x, w, 0.6)
    assert isinstance(got, dict) and {"c", "v", "rho", "d_cos2", "delta"} <= set(got), _hint(
        5, "return a dict with the keys 'c', 'v', 'rho', 'd_cos2' and 'delta'.")
    want = statistics_for_eq12(x, w)
    hints = {
        "c": "c is the mean of every unit (x.mean()).",
        "v": "v is the variance of each unit, averaged over units (x.var(axis=0).mean()) - "
             "not the variance of all entries together, which adds the spread of the means.",
        "rho": "rho is the mean correlation between two *different* units: average the "
               "off-diagonal entries of np.corrcoef(x, rowvar=False).",
        "d_cos2": "d cos^2 = (sum_i w_i)^2 / sum_i w_i^2 for each output unit (row of w), "
                  "then averaged over rows; cos^2 alone is d times smaller.",
    }
    for key, hint in hints.items():
        assert math.isclose(float(got[key]), want[key], rel_tol=2e-3, abs_tol=1e-6), _hint(
            5, f"{key} = {float(got[key]):.5g}, expected {want[key]:.5g}: {hint}")
    delta = float(theory.shift_dropout_weight_bn(0.6, c=got["c"], v=got["v"], rho=got["rho"],
                                                  d_cos2=got["d_cos2"]))
    assert math.isclose(float(got["delta"]), delta, rel_tol=1e-6), _hint(
        5, f"delta = {float(got['delta']):.5g}, Eq. 12 at your statistics gives {delta:.5g} "
           "(use your delta_case_b from notebook 2, or varshift.theory.shift_dropout_weight_bn).")
    _passed(5, f"c={want['c']:.3f}, v={want['v']:.3f}, rho={want['rho']:.3f}, "
               f"d cos^2={want['d_cos2']:.2f} -> Delta={delta:.4f}")


# Exercise 6 ------------------------------------------------------------------------
def check_shift_prediction(predict_shift):
    """Exercise 6: ``predict_shift(c, v, p)``, the measured metric max(r, 1/r) that
    Eq. 8 predicts for Dropout right before BatchNorm."""
    for c, v, p in [(0.0, 1.0, 0.9), (0.3, 0.5, 0.9), (1.0, 1.0, 0.5), (-0.2, 2.0, 0.7)]:
        got = float(predict_shift(c, v, p))
        want = ((c * c + v) / p - c * c) / v
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        hint = ("you returned Delta (<= 1); the measured shift is max(r, 1/r) >= 1 with "
                "r = real/moving ~ Delta, so it is 1/Delta."
                if math.isclose(got, 1 / want, rel_tol=1e-9) else
                "the measured shift is max(r, 1/r) with r = real / moving variance: which "
                "of the two does Dropout make the larger, and how is r related to Eq. 8's "
                "Delta?")
        raise AssertionError(_hint(6, f"at c={c}, v={v}, p={p} you return {got:.6g}, "
                                      f"expected {want:.6g}; {hint}"))
    _passed(6, "shift = 1/Delta of Eq. 8 on every test point")


# Exercise 7 ------------------------------------------------------------------------
def check_equal_variance_beta(uout_beta_for):
    """Exercise 7: Uout's beta with the noise variance of Dropout(rate)."""
    for rate in (0.25, 0.5, 0.1):
        got, want = float(uout_beta_for(rate)), math.sqrt(3 * rate / (1 - rate))
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        wrong = {
            math.sqrt(3 * (1 - rate) / rate): "rate is the drop probability; Li et al.'s p = 1 - rate "
                                              "is the retain ratio, and Dropout's multiplier "
                                              "variance is (1 - p) / p.",
            math.sqrt(rate / (1 - rate)): "U(-beta, beta) has variance beta^2 / 3, not beta^2.",
            3 * rate / (1 - rate): "that is beta^2; return beta.",
        }
        hint = _anticipated(got, wrong,
                            "write the variance of each noise's multiplier (Dropout's a / p, "
                            "Uout's 1 + r with r ~ U(-beta, beta)) as a function of rate or beta, "
                            "and set them equal.")
        raise AssertionError(_hint(7, f"rate {rate}: you return {got:.6g}, expected {want:.6g}; {hint}"))
    _passed(7, f"Dropout(0.25) and Uout(beta={uout_beta_for(0.25):.3g}) add the same noise variance")


# Exercise 8 ------------------------------------------------------------------------
def _updates_and_weight(n_samples, batch_size, epochs, momentum, convention, validation_split=0.0):
    """The reference count of exercise 8 (the comparisons of notebook 5 use it)."""
    n_train = int(math.floor(n_samples * (1.0 - validation_split)))
    updates = epochs * math.ceil(n_train / batch_size)
    keep = 1 - momentum if convention == "pytorch" else momentum
    return updates, keep ** updates


def check_updates_and_initial_weight(predict):
    """Exercise 8: ``predict(n_samples, batch_size, epochs, momentum, convention,
    validation_split)`` returns the number of running-statistics updates of a
    ``model.fit``-style run and the weight the initial statistics still have after it, for
    momentum in PyTorch's convention (``'pytorch'``: the weight of the new batch) or Keras'
    (``'keras'``: the weight of the old value)."""
    grid = [(5000, 100, 1, 0.1, "pytorch", 0.0), (5000, 100, 1, 0.99, "keras", 0.0),
            (90, 32, 20, 0.99, "keras", 0.0), (90, 10, 20, 0.99, "keras", 0.0),
            (100, 32, 20, 0.99, "keras", 0.1), (33, 4, 2, 0.9, "keras", 0.25),
            (1000, 128, 3, 0.01, "pytorch", 0.2), (25, 8, 1, 0.5, "keras", 0.3)]
    for n, batch, epochs, m, convention, split in grid:
        result = predict(n, batch, epochs, m, convention, split)
        assert isinstance(result, tuple) and len(result) == 2, _hint(
            8, "return a pair (updates, weight).")
        updates, weight = int(result[0]), float(result[1])
        want, want_weight = _updates_and_weight(n, batch, epochs, m, convention, split)
        where = (f"{n} samples, validation_split {split}, batch {batch}, {epochs} epochs, "
                 f"momentum {m} ({convention})")
        if updates != want:
            n_train = int(math.floor(n * (1.0 - split)))
            wrong = {
                epochs * math.ceil(n / batch): "only the training part updates the statistics; "
                    "the validation part (the last samples) runs in inference mode.",
                epochs * (n_train // batch): "the last, smaller batch of an epoch is an update "
                    "too (fit does not drop it).",
                epochs * math.ceil((n - int(n * split)) / batch): "Keras rounds the training "
                    "part down, not the validation part.",
            }
            hint = wrong.get(updates, "one update per training batch: count the training "
                                      "samples first, then the batches of an epoch.")
            raise AssertionError(_hint(8, f"{where}: you count {updates} updates, expected "
                                          f"{want}; {hint}"))
        if not math.isclose(weight, want_weight, rel_tol=1e-9):
            keep = m if convention == "pytorch" else 1 - m
            hint = ("conventions swapped: PyTorch's momentum is the weight of the new batch, "
                    "Keras' the weight of the old value."
                    if math.isclose(weight, keep ** want, rel_tol=1e-9) else
                    "each update keeps a fixed fraction of the running value; what is left of "
                    "the initial value after n updates?")
            raise AssertionError(_hint(8, f"{where}, {want} updates: you return {weight:.6g}, "
                                          f"expected {want_weight:.6g}; {hint}"))
    _passed(8, f"after 50 steps Keras' 0.99 keeps {0.99 ** 50:.0%} of the initial statistics, "
               f"PyTorch's 0.1 keeps {0.9 ** 50:.1%}; with validation_split 0.1, 100 samples "
               "in batches of 32 make 3 updates an epoch")


# Exercises 9-10 ------------------------------------------------------------------
def _check_runs(number, measured, lines_for, rules, title):
    """Pass exercise ``number`` on its rules alone (``measured`` None), or after
    ``lines_for(key, runs)`` (which asserts, and returns the lines of the message) for
    every entry of a case result's ``numbers['runs']``."""
    if measured is None:
        _passed(number, rules)
        return
    lines = [line for key, runs in measured.numbers["runs"].items() for line in lines_for(key, runs)]
    _passed(number, title + ":\n  " + "\n  ".join(lines))


# Exercise 9 ------------------------------------------------------------------------
def _dropout_at_first_batchnorm(order):
    """Where a conv module's Dropout is relative to its BatchNorm (``order`` like
    ``'C-D-B-A-P'``): ``'after'`` it, ``'directly'`` before it, or None (with a layer
    in between, where Eq. 7 alone does not give the factor)."""
    letters = order.split("-")
    d, b = letters.index("D"), letters.index("B")
    return "after" if d > b else "directly" if b == d + 1 else None


def check_first_batchnorm_bound(predict, measured=None):
    """Exercise 9: ``predict(order, rate)``, the largest Dropout-attributed factor the
    first BatchNorm of the ordering can have: 1 where Dropout comes after it, p = 1 - rate
    (Eq. 7's bound) where Dropout feeds it directly. Checked on the rules, then against
    the factors measured in ``measured`` (a ``layer-orderings`` case result)."""
    grid = [("C-D-B-A-P", 0.2), ("C-A-D-B-P", 0.3), ("C-B-A-D-P", 0.2), ("C-A-B-D-P", 0.5),
            ("C-B-D-A-P", 0.1), ("C-A-B-P-D", 0.2), ("C-D-B-A-P", 0.5)]
    for order, rate in grid:
        got = float(predict(order, rate))
        after = _dropout_at_first_batchnorm(order) == "after"
        want = 1.0 if after else 1 - rate
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        if after:
            hint = ("Dropout comes after this BatchNorm, so the BatchNorm's input is the same "
                    "in train and in inference mode: no Dropout-induced shift, a factor of exactly 1.")
        elif math.isclose(got, rate, rel_tol=1e-9):
            hint = "rate is the drop probability; Eq. 7's p = 1 - rate is the retain ratio."
        elif math.isclose(got, 1.0, rel_tol=1e-9):
            hint = ("Dropout feeds this BatchNorm: in training it inflates the variance the "
                    "BatchNorm records, so its factor Var_test / Var_train is below 1.")
        else:
            hint = ("Eq. 7 gives Delta = v / ((c^2 + v)/p - c^2) = v / (v/p + c^2 (1/p - 1)); "
                    "what is its largest value over every mean c?")
        raise AssertionError(_hint(9, f"{order} with Dropout({rate}): you return {got:.6g}, "
                                      f"expected {want:.6g}; {hint}"))

    def lines_for(order, runs):
        where = _dropout_at_first_batchnorm(order)
        if where is None:
            return []
        bound = float(predict(order, 0.2))  # the first module's Dropout(0.2)
        factors = np.array([r["dropout_factor"][0] for r in runs])
        ok = (np.all(np.abs(factors - 1) < 1e-6) if where == "after"
              else np.all(factors <= bound + 0.02))
        assert ok, _hint(9, f"{order}: measured factors {np.round(factors, 3).tolist()} against "
                            f"your bound {bound:.3g}.")
        return [f"{order}: bound {bound:.2f}, measured {np.round(factors, 3).tolist()}"]

    _check_runs(9, measured, lines_for, "the bound follows the rules on every ordering",
                "every measured factor obeys its bound")


# Exercise 8, against live runs (notebook 05) ----------------------------------------
def compare_initial_weight_left(measured, n_train=90):
    """Exercise 8's count (Keras' momentum 0.99, ``n_train`` samples) against the weight of
    the initial running mean measured with a twin run in ``measured`` (a
    ``linear-autoencoder`` case result); prints one line per schedule."""
    import re

    lines = []
    for label, runs in measured.numbers["runs"].items():
        batch, epochs = map(int, re.match(r"batch (\d+), (\d+) epochs", label).groups())
        updates, weight = _updates_and_weight(n_train, batch, epochs, 0.99, "keras")
        seen = float(np.mean([r["init_weight"] for r in runs]))
        lines.append(f"{label}: {updates} updates counted ({runs[0]['steps']} made), "
                     f"weight left {weight:.4f} counted, {seen:.4f} measured")
    print("Exercise 8's count against the live runs:\n  " + "\n  ".join(lines))


# Exercise 10 -----------------------------------------------------------------------
_DECISIONS = [  # per-seed differences arm - reference, direction, min_effect, posted regime
    ([1.2, 0.8, 1.0, 1.1, 0.9], 1, 0.0, True),
    ([-1.2, -0.8, -1.0], 1, 0.0, True),
    ([0.5, -0.3, 0.9, 0.1], 1, 0.0, True),
    ([2.0, 2.1], 1, 0.0, True),
    ([0.1, 0.5, 0.9], 1, 0.0, True),
    ([-0.4, -0.6, -0.5, -0.45], -1, 0.0, True),
    ([0.4, 0.6, 0.5, 0.45], -1, 0.0, True),
    ([0.1, -0.1, 0.05, 0.0, -0.05], 0, 0.5, True),
    ([1.0, 1.1, 0.9], 0, 0.5, True),
    ([0.3, 0.4, 0.35, 0.32], 1, 0.5, True),
    ([1.2, 0.8, 1.0, 1.1, 0.9], 1, 0.0, False),
]


def _z_verdict(d, direction, min_effect):
    """The verdict with a normal (1.96) instead of a Student-t interval: a usual mistake."""
    from varshift.verdicts import judge

    d = np.asarray(d, float)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    return judge(d.mean() - half, d.mean() + half, direction, min_effect)


def _decision_hint(got, want, d, direction, min_effect, posted):
    from varshift.verdicts import HOLDS, NOT_TESTED, UNDECIDED, VERDICTS

    if got not in VERDICTS:
        return f"return one of {VERDICTS}."
    if want == NOT_TESTED:
        return ("these runs are not in the regime the statement was posted in: 'not tested at "
                "the posted regime', whatever the interval.")
    if len(d) < 3 and want == UNDECIDED:
        return ("with fewer than 3 seeds a claim is undecided, whatever the interval: two "
                "differences cannot estimate the seed-to-seed spread.")
    if got == _z_verdict(d, direction, min_effect) != want:
        return ("use Student's t with n - 1 degrees of freedom (scipy.stats.t.ppf(0.975, n - 1)), "
                "not 1.96: with 3-5 seeds the normal interval is far too narrow.")
    if got == HOLDS and want == UNDECIDED:
        return ("the mean points the posted way, but the 95 % interval does not exclude "
                + ("0" if not min_effect else "the margin") + ": undecided - never counted as holding.")
    if direction == 0:
        return ("an equivalence claim (direction 0) holds if the whole interval lies inside "
                "(-margin, margin), is contradicted if it lies entirely outside, else undecided.")
    if direction == -1:
        return "direction -1: the arm should be smaller; mirror the interval (-high, -low)."
    if min_effect:
        return ("holds needs the lower bound above min_effect, not just above 0; contradicted "
                "needs the upper bound below 0.")
    return ("mean +- t * sd / sqrt(n) (sd with ddof=1); holds if the interval excludes 0 in the "
            "posted direction, contradicted if it excludes 0 the other way, else undecided.")


def check_decisions(decide, measured=None):
    """Exercise 10: ``decide(differences, direction, min_effect=0.0, posted_regime=True)``
    returns the verdict of :mod:`varshift.verdicts` from per-seed paired differences.
    Checked on a table of its own, then against the verdicts of ``measured`` (a
    ``linear-autoencoder`` case result)."""
    from varshift.verdicts import Claim

    for d, direction, min_effect, posted in _DECISIONS:
        got = decide(np.array(d), direction, min_effect, posted)
        want = Claim.paired("", "", d, 0.0, direction=direction, min_effect=min_effect,
                            posted_regime=posted).verdict
        if got == want:
            continue
        raise AssertionError(_hint(10, f"differences {d}, direction {direction:+d}, min_effect "
                                       f"{min_effect}, posted regime {posted}: you say {got!r}, "
                                       f"the rules say {want!r}; "
                                       + _decision_hint(got, want, d, direction, min_effect, posted)))

    def lines_for(label, runs):
        claims = {c.text: c for c in measured.statements}
        regime = next(r for r in measured.regimes if r.name == f"trained ({label})")
        rows = []
        for text, arm, reference in (("BatchNorm raises the validation loss", "bn", "plain"),
                                     ("stale running statistics cost validation loss", "bn",
                                      "recalibrated")):
            d = np.array([r[arm] - r[reference] for r in runs])
            got, want = decide(d, 1, 0.0, regime.ok), claims[f"{label}: {text}"].verdict
            assert got == want, _hint(10, f"{label}, '{text}': you say {got!r}, the case says "
                                          f"{want!r}.")
            rows.append(f"{label}: {text}: {got}")
        return rows

    _check_runs(10, measured, lines_for, "every verdict of the table right",
                "the table, and the case's own verdicts")


# Exercise 13 -----------------------------------------------------------------------
def stale_torch_model(seed=12):
    """A small PyTorch classifier with Dropout before a BatchNorm and stale running
    statistics (momentum 0.01, 16 updates), and its training inputs: the check's own case."""
    import torch
    import torch.nn.functional as F
    from torch import nn as tnn

    torch.manual_seed(seed)
    x = torch.randn(1024, 8) * 3 + 5
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).long()
    model = tnn.Sequential(tnn.Linear(8, 32), tnn.BatchNorm1d(32, momentum=0.01), tnn.ReLU(),
                           tnn.Dropout(0.5), tnn.Linear(32, 32), tnn.BatchNorm1d(32, momentum=0.01),
                           tnn.ReLU(), tnn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for i in range(0, len(x), 64):
        loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, x


def check_recomputed_statistics(recompute, model=None, x=None):
    """Exercise 13: ``recompute(model, x)`` sets every BatchNorm's running statistics of a
    PyTorch ``model`` to the exact statistics of its input over ``x`` at inference (Dropout
    off, earlier BatchNorms already recomputed), changing nothing else. Run on a copy of
    ``model`` (or of :func:`stale_torch_model`); judged by ``varshift.measure``."""
    import copy

    import torch

    if model is None:
        model, x = stale_torch_model()
    work = copy.deepcopy(model)
    stats = ("running_mean", "running_var", "num_batches_tracked")
    before = {k: v.clone() for k, v in work.state_dict().items() if not k.endswith(stats)}
    shifts_before = [b.shift for b in varshift.measure(work, x).bn]
    recompute(work, x)
    changed = [k for k, v in work.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert not changed, _hint(13, f"{changed} changed: only the running statistics may change "
                                  "(no optimizer step; work under torch.no_grad()).")
    report = varshift.measure(work, x)
    bad = [b for b in report.bn if not b.shift < 1.01]
    if bad:
        first = bad[0]
        factor = first.attribution
        if factor["dropout"] < 0.99 and abs(factor["running_stats"] - 1) < 0.1:
            hint = ("Dropout was on while you collected the statistics (train mode), so the "
                    "BatchNorm behind it stores Dropout's inflated variance - what update_bn does. "
                    "Collect them in eval() mode, with the BatchNorm's input caught by a hook.")
        elif report.bn[0].shift < 1.01:
            hint = ("the first BatchNorm is right, a later one is not: its input at inference "
                    "depends on the earlier BatchNorms' statistics, so set them one at a time, "
                    "in forward order, running the model again after each.")
        else:
            hint = ("running_mean / running_var must be the mean and variance of the "
                    "BatchNorm's input over all of x, per channel (PyTorch stores the unbiased "
                    "variance), in inference mode.")
        raise AssertionError(_hint(13, f"BatchNorm '{first.name}' still has a shift of "
                                       f"{first.shift:.3f}; {hint}"))
    _passed(13, "shift per BatchNorm " + ", ".join(f"{a:.2f} -> {b.shift:.4f}"
                                                   for a, b in zip(shifts_before, report.bn)))


# Exercises 11-12 (Keras) -----------------------------------------------------------
def _keras():
    """Keras 3, on the torch backend unless another one was chosen before."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def _keras_numpy(variable):
    return np.asarray(_keras().ops.convert_to_numpy(variable), np.float64)


# Exercise 8, against Keras (notebook 05) ---------------------------------------
def _constant_fit(n, batch, epochs, momentum, validation_split):
    """Keras' own count: fit a lone BatchNormalization(momentum) on constant inputs. Every
    batch has variance 0, so the moving variance is exactly what is left of its initial 1."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=momentum)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = np.full((n, 3), 2.0, np.float32)
    model.fit(x, x, batch_size=batch, epochs=epochs, validation_split=validation_split,
              shuffle=False, verbose=0)
    return int(_keras_numpy(model.optimizer.iterations)), float(
        _keras_numpy(model.layers[0].moving_variance).mean())


def compare_keras_updates():
    """Exercise 8's count against Keras itself: a lone BatchNormalization fitted on
    constant inputs (``_constant_fit``) with two ``model.fit`` schedules; prints both."""
    lines = []
    for n, batch, epochs, m, split in [(100, 32, 20, 0.99, 0.1), (33, 4, 2, 0.9, 0.25)]:
        updates, weight = _updates_and_weight(n, batch, epochs, m, "keras", split)
        steps, left = _constant_fit(n, batch, epochs, m, split)
        lines.append(f"{n} samples, split {split}, batch {batch}, {epochs} epochs, momentum {m}: "
                     f"counted {updates} updates, {weight:.4f} left; Keras made {steps}, "
                     f"kept {left:.4f}")
    print("Exercise 8's count against model.fit:\n  " + "\n  ".join(lines))


# Exercise 11 -----------------------------------------------------------------------
def keras_batchnorm(channels=6, momentum=0.9, seed=14):
    """A built Keras ``BatchNormalization(momentum)`` with trained-looking weights and
    moving statistics (the check's own layer)."""
    keras = _keras()
    rng = np.random.default_rng(seed)
    layer = keras.layers.BatchNormalization(momentum=momentum)
    layer.build((None, channels))
    for variable, value in ((layer.gamma, rng.uniform(0.5, 1.5, channels)),
                            (layer.beta, rng.normal(size=channels)),
                            (layer.moving_mean, rng.normal(1.0, 0.5, channels)),
                            (layer.moving_variance, rng.uniform(0.002, 3.0, channels))):
        variable.assign(value.astype(np.float32))
    return layer


def check_torch_twin(twin, layer=None):
    """Exercise 11: ``twin(layer)`` returns a ``torch.nn.BatchNorm1d`` that computes what
    the Keras ``layer`` computes: the same output at inference and the same moving mean
    after a training step (so momentum converted), without changing ``layer``."""
    import torch

    layer = keras_batchnorm() if layer is None else layer
    names = ("gamma", "beta", "moving_mean", "moving_variance")
    saved = {k: _keras_numpy(getattr(layer, k)).copy() for k in names}
    m = float(layer.momentum)
    bn = twin(layer)
    assert isinstance(bn, torch.nn.modules.batchnorm._BatchNorm), _hint(
        11, f"return a torch.nn.BatchNorm1d, got {type(bn).__name__}.")
    rng = np.random.default_rng(140)
    x = rng.normal(1.0, 2.0, (40, saved["gamma"].size)).astype(np.float32)
    want = np.asarray(_keras().ops.convert_to_numpy(layer(x, training=False)), np.float64)
    bn.eval()
    with torch.no_grad():
        got = bn(torch.as_tensor(x)).double().numpy()
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
        with_torch_eps = (x - saved["moving_mean"]) / np.sqrt(saved["moving_variance"] + 1e-5) \
            * saved["gamma"] + saved["beta"]
        hint = ("epsilon: Keras' default is 1e-3, PyTorch's 1e-5; with a moving variance near "
                "0 the difference shows." if np.allclose(got, with_torch_eps, rtol=1e-4, atol=1e-4)
                else "copy gamma -> weight, beta -> bias, moving_mean -> running_mean, "
                     "moving_variance -> running_var, and epsilon -> eps.")
        raise AssertionError(_hint(11, f"the outputs at inference differ by up to "
                                       f"{np.abs(got - want).max():.3g}; {hint}"))
    bn.train()
    with torch.no_grad():
        bn(torch.as_tensor(x))
    changed = [k for k in names if not np.array_equal(_keras_numpy(getattr(layer, k)), saved[k])]
    assert not changed, _hint(11, f"the Keras layer's {changed} changed: copy the values "
                                  "(torch.tensor(numpy_array)), do not share their memory.")
    batch_mean, biased = x.mean(0), x.var(0)
    keras_mean = m * saved["moving_mean"] + (1 - m) * batch_mean
    mean = bn.running_mean.double().numpy()
    if not np.allclose(mean, keras_mean, rtol=1e-5, atol=1e-6):
        hint = ("conventions: PyTorch's momentum is the weight of the *new* batch, Keras' the "
                "weight of the old value: torch momentum = 1 - Keras momentum."
                if np.allclose(mean, (1 - m) * saved["moving_mean"] + m * batch_mean, rtol=1e-5)
                else "after one training step the running mean must be "
                     "momentum * old + (1 - momentum) * batch mean, in Keras' convention.")
        raise AssertionError(_hint(11, f"after one training step on 40 samples the running "
                                       f"mean differs from Keras' by {np.abs(mean - keras_mean).max():.3g}; {hint}"))
    keras_var = m * saved["moving_variance"] + (1 - m) * biased
    torch_var = bn.running_var.double().numpy()
    _passed(11, f"same output at inference, same moving mean after a step; the moving "
                f"variances differ by {np.mean(torch_var / keras_var - 1):.2%} on average: "
                f"PyTorch averages unbiased batch variances (40/39 times the biased ones "
                f"Keras averages)")


# Exercise 12 -----------------------------------------------------------------------
def keras_dropout_model(seed=15):
    """Dense - ReLU - Dropout(0.5) - BatchNormalization('bn') - Dense, untrained, and
    inputs with mean 1 and scale 2: the check's own case."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers
    model = keras.Sequential([keras.Input((10,)), L.Dense(16, activation="relu"), L.Dropout(0.5),
                              L.BatchNormalization(name="bn"), L.Dense(3)])
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    for variable, value in ((bn.gamma, rng.uniform(0.5, 1.5, 16)), (bn.beta, rng.normal(size=16)),
                            (bn.moving_mean, rng.uniform(0.5, 2.0, 16)),
                            (bn.moving_variance, rng.uniform(1.0, 4.0, 16))):
        variable.assign(value.astype(np.float32))  # statistics as if trained for a while
    x = (rng.standard_normal((300, 10)) * 2 + 1).astype(np.float32)
    return model, x, "bn"


def _recalibrated_statistics(model, x, name):
    """What ``varshift.recalibrate`` writes into layer ``name``, on a clone of ``model``."""
    keras = _keras()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    varshift.recalibrate(clone, x, reports=False)
    layer = clone.get_layer(name)
    return _keras_numpy(layer.moving_mean), _keras_numpy(layer.moving_variance)


def check_population_statistics(compute, model=None, x=None, name=None):
    """Exercise 12: ``compute(model, name, x)`` returns the mean and the variance per
    channel of the input of BatchNormalization ``name`` over all of ``x`` at inference
    (Dropout off), the variance biased as Keras' - what ``varshift.recalibrate`` writes
    (for the first BatchNormalization of ``model``, or one whose earlier ones are already
    recalibrated). ``model`` must not change."""
    if model is None:
        model, x, name = keras_dropout_model()
    before = [_keras_numpy(w).copy() for w in model.weights]
    result = compute(model, name, x)
    assert isinstance(result, tuple) and len(result) == 2, _hint(12, "return a pair (mean, var).")
    mean, var = (np.asarray(_keras().ops.convert_to_numpy(r), np.float64) for r in result)
    changed = [w.path for w, b in zip(model.weights, before) if not np.array_equal(_keras_numpy(w), b)]
    assert not changed, _hint(12, f"{changed} changed: call the model (or a part of it) with "
                                  "training=False, which updates nothing.")
    want_mean, want_var = _recalibrated_statistics(model, x, name)
    assert mean.shape == want_mean.shape and var.shape == want_var.shape, _hint(
        12, f"one value per channel: shape {want_mean.shape}, got {mean.shape} and {var.shape} "
            "(average over the samples, axis 0, not over the channels).")
    n = len(x)
    if not (np.allclose(mean, want_mean, rtol=1e-4, atol=1e-5)
            and np.allclose(var, want_var, rtol=1e-4, atol=1e-6)):
        ratio = float(np.median(var / want_var))
        keras = _keras()
        out = _keras_numpy(keras.Model(model.inputs[0], model.get_layer(name).output)(
            x, training=False)).reshape(-1, want_mean.size)
        if np.allclose(mean, out.mean(0), rtol=1e-3, atol=1e-4) or np.allclose(
                var, out.var(0), rtol=1e-3) or np.allclose(var, out.var(0, ddof=1), rtol=1e-3):
            hint = ("those are statistics of the BatchNormalization's *output*; take its "
                    "input, e.g. keras.Model(model.inputs[0], model.get_layer(name).input).")
        elif math.isclose(ratio, n / (n - 1), rel_tol=1e-3):
            hint = ("that is the unbiased variance (ddof=1); Keras' moving variance averages "
                    "biased batch variances, and recalibrate writes the population variance "
                    "(ddof=0).")
        elif ratio > 1.05:
            hint = ("the variance is too large: Dropout was on (training=True) while you "
                    "computed it. At inference Dropout is off, so call with training=False.")
        else:
            hint = ("take the input of the layer over all of x with training=False, then its "
                    "mean and biased variance per channel (axis 0).")
        raise AssertionError(_hint(12, f"mean off by up to {np.abs(mean - want_mean).max():.3g}, "
                                       f"variance {ratio:.4g} times recalibrate's; {hint}"))
    _passed(12, f"'{name}': mean and variance per channel agree with varshift.recalibrate "
                f"(largest difference {np.abs(var - want_var).max():.1e})")


# Exercise 14 -----------------------------------------------------------------------
class _HandWrittenDropout(nn.Layer):
    """Dropout made of ``forward(x, rate, rng) -> (out, cache)`` and ``backward(dout,
    cache) -> dx``, drawing from a generator seeded anew in every call: every forward of
    gradcheck then draws the same mask."""

    def __init__(self, forward, backward, rate, seed):
        super().__init__()
        self._fw, self._bw, self.rate, self.seed = forward, backward, rate, seed

    def _forward(self, x):
        return self._fw(x, self.rate, np.random.default_rng(self.seed))

    def _backward(self, dout, cache):
        return self._bw(dout, cache), {}


def check_dropout(forward, backward):
    """Exercise 14: inverted Dropout, ``forward(x, rate, rng) -> (out, cache)`` (train
    mode; ``rate`` is the drop probability) and ``backward(dout, cache) -> dx``: the kept
    fraction, the expectation, the values, and ``varshift.gradcheck`` of the pair."""
    x = np.random.default_rng(4).normal(1.0, 2.0, size=(400, 50))
    for rate in (0.2, 0.5, 0.8):
        result = forward(x, rate, np.random.default_rng(5))
        assert isinstance(result, tuple) and len(result) == 2, _hint(
            14, "forward returns a pair (out, cache); backward needs the cache.")
        out = np.asarray(result[0], float)
        assert out.shape == x.shape, _hint(14, f"out must have the shape of x, {x.shape}; got {out.shape}.")
        kept = out != 0
        fraction = kept.mean()
        # 20,000 Bernoulli draws: the kept fraction is within 0.02 of 1 - rate
        if abs(fraction - rate) < 0.02 and rate != 0.5:
            raise AssertionError(_hint(14, f"at rate {rate} you keep {fraction:.2f} of the units: "
                                           "rate is the probability of *dropping* a unit."))
        assert abs(fraction - (1 - rate)) < 0.02, _hint(
            14, f"at rate {rate} you keep {fraction:.2f} of the units; each unit is kept "
                f"independently with probability 1 - rate = {1 - rate:.1f}.")
        scale = out[kept] / x[kept]
        if np.allclose(scale, 1.0):
            raise AssertionError(_hint(14, "the kept units are passed unchanged, so the mean of the "
                                           "output falls with the rate. Inverted Dropout rescales "
                                           "in training so that inference needs nothing."))
        assert np.allclose(scale, 1 / (1 - rate)), _hint(
            14, f"the kept units are multiplied by {np.median(scale):.4g} at rate {rate}; "
                "choose the factor that keeps the expectation of every unit unchanged.")
        dout = np.random.default_rng(6).normal(size=x.shape)
        dx = np.asarray(backward(dout, result[1]), float)
        assert dx.shape == x.shape, _hint(14, f"dx must have the shape of x, {x.shape}; got {dx.shape}.")
        if np.allclose(dx[kept], dout[kept]) or np.allclose(dx, dout):
            raise AssertionError(_hint(14, "dx passes dout through unchanged where units were kept: "
                                           "the forward multiplied them by a factor, and the "
                                           "backward multiplies by the same one."))
        assert np.all(dx[~kept] == 0), _hint(
            14, "a dropped unit did not reach the output, so its gradient is 0: backward uses "
                "the same mask as the forward that produced the cache (keep it there).")
    errors = [varshift.gradcheck(_HandWrittenDropout(forward, backward, rate, seed), x[:8, :6])
              for rate, seed in ((0.3, 1), (0.6, 2))]
    assert max(errors) < 1e-6, _hint(14, f"gradcheck error {max(errors):.1e} (should be < 1e-6).")
    _passed(14, f"keeps 1 - rate of the units, scaled by 1 / (1 - rate); gradcheck error "
                f"{max(errors):.1e}")


# Exercise 15 -----------------------------------------------------------------------
def _normalisation_dx(g, cache, axis):
    """The compact dx of a normalisation whose statistics are means over ``axis`` of the
    cache ``(x, mu, var, xhat, gamma, eps)``: LayerNorm's with ``axis=1``; with ``axis=0``,
    the mistake of keeping BatchNorm's axis (the course ships no solutions file, so the
    check carries its own reference)."""
    x, mu, var, xhat, gamma, eps = cache
    h = g * gamma
    return (h - h.mean(axis=axis, keepdims=True)
            - xhat * (h * xhat).mean(axis=axis, keepdims=True)) / np.sqrt(var + eps)


def check_layernorm_backward(backward, forward):
    """Exercise 15: ``backward(g, cache)`` of the notebook's LayerNorm ``forward`` against a
    reference and against float64 central differences (``varshift.gradcheck``)."""
    rng = np.random.default_rng(7)
    x = rng.normal(2.0, 3.0, size=(6, 10))
    gamma, beta = rng.uniform(0.5, 1.5, 10), rng.normal(size=10)
    g = rng.normal(size=x.shape)
    _, cache = forward(x, gamma, beta)
    result = backward(g, cache)
    assert isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict), _hint(
        15, "return a pair (dx, {'weight': dgamma, 'bias': dbeta}).")
    dx, grads = result
    assert np.shape(dx) == x.shape, _hint(15, f"dx must have the shape of x, {x.shape}; got {np.shape(dx)}.")
    assert set(grads) == {"weight", "bias"}, _hint(
        15, f"the dict needs the keys 'weight' and 'bias', got {sorted(grads)}.")
    dx_ref = _normalisation_dx(g, cache, axis=1)
    grads_ref = {"weight": (g * cache[3]).sum(axis=0), "bias": g.sum(axis=0)}
    assert _close(grads["bias"], grads_ref["bias"]) and _close(grads["weight"], grads_ref["weight"]), _hint(
        15, "gamma and beta are per feature, as in BatchNorm: their gradients are sums over the "
            "samples, shape (features,).")
    if not _close(dx, dx_ref):
        xx, mu, var, xhat, gam, eps = cache
        inv = 1 / np.sqrt(var + eps)
        variants = {
            "batch_axis": _normalisation_dx(g, cache, axis=0),
            "gamma_outside": gam * inv * (g - g.mean(1, keepdims=True)
                                          - xhat * (g * xhat).mean(1, keepdims=True)),
            "constants": gam * inv * g,
        }
        hints = {
            "batch_axis": "those are BatchNorm's means, over the batch (axis 0). LayerNorm's "
                          "statistics are per sample, over the features: take every mean over "
                          "the axis the forward pass averaged over.",
            "gamma_outside": "gamma varies along the axis LayerNorm averages over, so it cannot "
                             "be taken out of the means as in BatchNorm: the upstream gradient of "
                             "xhat is g * gamma, and the means are of that.",
            "constants": "you treated mu and sigma^2 as constants; in LayerNorm both depend on "
                         "every feature of the sample: add the paths through mu and sigma^2.",
        }
        found = next((k for k, v in variants.items() if _close(dx, v)), None)
        raise AssertionError(_hint(15, hints.get(found, (
            "dx differs from the reference. The graph is BatchNorm's with the roles of the axes "
            "swapped; redo its node-by-node derivation for one sample, and test each local rule "
            "on its own by central differences."))))
    errors = [varshift.gradcheck(handwritten_layer(forward, backward, d), rng.normal(size=(n, d)))
              for n, d in ((3, 8), (5, 4))]
    assert max(errors) < 1e-6, _hint(15, f"gradcheck error {max(errors):.1e} (should be < 1e-6).")
    _passed(15, f"matches the reference, gradcheck error {max(errors):.1e}")



# Exercise 16 -----------------------------------------------------------------------
def _spatial_reference(x, gamma, beta, g):
    """The engine's BatchNorm on (N, C, H, W) maps: output, dx and parameter gradients."""
    bn = nn.BatchNorm(x.shape[1]).astype(np.float64)
    bn.params["weight"][...] = gamma
    bn.params["bias"][...] = beta
    out = bn(x)
    return out, bn.backward(g), bn.grads


def _spatial_variants(x, gamma, beta, eps=1e-5):
    """Forward passes with the statistics taken over the wrong values (typical mistakes)."""
    c = x.shape[1]
    shape = (1, c, 1, 1)

    def normalise(mu, var):
        return gamma.reshape(shape) * (x - mu) / np.sqrt(var + eps) + beta.reshape(shape)

    scrambled = x.reshape(-1, c)  # reshape without moving the channel axis last
    wrong = ((scrambled - scrambled.mean(0)) / np.sqrt(scrambled.var(0) + eps)).reshape(x.shape)
    return {
        "per_position": normalise(x.mean(0, keepdims=True), x.var(0, keepdims=True)),
        "all_channels": normalise(x.mean(), x.var()),
        "unbiased": normalise(x.mean((0, 2, 3), keepdims=True), x.var((0, 2, 3), keepdims=True, ddof=1)),
        "scrambled": gamma.reshape(shape) * wrong + beta.reshape(shape),
    }


def check_spatial_batchnorm(forward, backward):
    """Exercise 16: ``forward(x, gamma, beta) -> (out, cache)`` and ``backward(g, cache) ->
    (dx, {'weight': dgamma, 'bias': dbeta})`` of BatchNorm on (N, C, H, W) maps in train
    mode, against the engine's :class:`varshift.nn.BatchNorm` and float64 central
    differences (``varshift.gradcheck``)."""
    rng = np.random.default_rng(16)
    x = rng.normal(1.0, 2.0, size=(4, 3, 5, 6)) * np.array([1.0, 3.0, 0.5])[None, :, None, None]
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.normal(size=3)
    g = rng.normal(size=x.shape)
    result = forward(x, gamma, beta)
    assert isinstance(result, tuple) and len(result) == 2, _hint(
        16, "forward returns a pair (out, cache); backward needs the cache.")
    out = np.asarray(result[0], float)
    assert out.shape == x.shape, _hint(16, f"out must have the shape of x, {x.shape}; got {out.shape}.")
    want, dx_ref, grads_ref = _spatial_reference(x, gamma, beta, g)
    if not _close(out, want):
        hints = {
            "per_position": "those are statistics per channel *and position* (over the batch "
                            "alone): a convolution's channel is one feature seen at every "
                            "position, so it gets one mean and one variance, over N, H and W.",
            "all_channels": "one mean and variance for the whole batch; BatchNorm keeps one per "
                            "channel.",
            "unbiased": "the batch is normalised with the biased variance (dividing by the "
                        "number of values), as in the dense layer.",
            "scrambled": "x.reshape(-1, C) on an (N, C, H, W) array does not give one column "
                         "per channel: the channel axis is not last. Move it last first, or "
                         "take the statistics over the right axes of x directly.",
        }
        found = next((k for k, v in _spatial_variants(x, gamma, beta).items() if _close(out, v)), None)
        raise AssertionError(_hint(16, "the forward pass differs from the engine's BatchNorm by up "
                                       f"to {np.abs(out - want).max():.3g}; " + hints.get(found, (
                                           "normalise every channel with the mean and variance of "
                                           "all its values in the batch, then scale and shift it "
                                           "with its own gamma and beta."))))
    grad_result = backward(g, result[1])
    assert isinstance(grad_result, tuple) and len(grad_result) == 2 and isinstance(grad_result[1], dict), _hint(
        16, "backward returns a pair (dx, {'weight': dgamma, 'bias': dbeta}).")
    dx, grads = grad_result
    assert set(grads) == {"weight", "bias"}, _hint(
        16, f"the dict needs the keys 'weight' and 'bias', got {sorted(grads)}.")
    for key in ("weight", "bias"):
        got = np.asarray(grads[key], float)
        assert got.shape == (3,), _hint(
            16, f"d{'gamma' if key == 'weight' else 'beta'} has one value per channel, shape (3,); "
                f"got {got.shape}: sum over every axis but the channel's.")
        assert _close(got, grads_ref[key]), _hint(
            16, f"d{'gamma' if key == 'weight' else 'beta'} differs from the engine's: each "
                "channel's parameter touches all N * H * W outputs of the channel, so its gradient "
                "is a sum over all of them.")
    assert np.shape(dx) == x.shape, _hint(16, f"dx must have the shape of x, {x.shape}; got {np.shape(dx)}.")
    if not _close(dx, dx_ref):
        inference = gamma[None, :, None, None] / np.sqrt(x.var((0, 2, 3), keepdims=True) + 1e-5) * g
        hint = ("you treated the mean and the variance as constants - that is the gradient of "
                "inference mode. In train mode both depend on every value of the channel."
                if _close(dx, inference) else
                "dx differs from the engine's. The layer is Exercise 1's BatchNorm applied to the "
                "matrix of all positions, one row per (n, h, w) and one column per channel: every "
                "reduction of the dense backward pass runs over the rows of that matrix.")
        raise AssertionError(_hint(16, hint))
    errors = [varshift.gradcheck(handwritten_layer(forward, backward, c), rng.normal(size=(n, c, h, w)))
              for n, c, h, w in ((3, 2, 3, 4), (2, 3, 2, 2))]
    assert max(errors) < 1e-6, _hint(16, f"gradcheck error {max(errors):.1e} (should be < 1e-6).")
    _passed(16, f"matches the engine's BatchNorm on (N, C, H, W) maps, gradcheck error {max(errors):.1e}")


# Exercise 17 -----------------------------------------------------------------------
def check_std_ratio(std_ratio):
    """Exercise 17: ``std_ratio(gain, layers)``, the factor by which the standard deviation
    of the pre-activations of a plain ReLU MLP (weights of variance gain / fan-in, no bias,
    symmetric about 0) changes over ``layers`` layers."""
    for gain, layers in ((1.0, 4), (2.0, 9), (1 / 3, 3), (4.0, 3), (5 / 3, 6), (1.0, 1)):
        got, want = float(std_ratio(gain, layers)), (gain / 2) ** (layers / 2)
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        wrong = {
            gain ** (layers / 2): "ReLU zeroes part of every pre-activation: what fraction of the "
                                  "second moment of a value symmetric about 0 gets through?",
            (gain / 2) ** layers: "that is the factor of the variance; the standard deviation is "
                                  "its square root.",
            (gain / 2) ** ((layers + 1) / 2): "count the weight layers between the two "
                                              "pre-activations: `layers` of them, not one more.",
            (gain / 2) ** ((layers - 1) / 2): "count the weight layers between the two "
                                              "pre-activations: `layers` of them, not one fewer.",
        }
        hint = _anticipated(got, wrong,
                            "follow the second moment through one layer: a weight layer sums fan-in "
                            "products of independent zero-mean weights and inputs, and ReLU keeps "
                            "only part of its input; then repeat.")
        raise AssertionError(_hint(17, f"gain {gain:.4g}, {layers} layers: you return {got:.6g}, "
                                       f"expected {want:.6g}; {hint}"))
    _passed(17, "the factor of every test point agrees")


EXERCISES.update({16: ("08", "spatial_batchnorm_forward", "check_spatial_batchnorm"),
                  17: ("08", "std_ratio", "check_std_ratio")})
__all__ += ["check_spatial_batchnorm", "check_std_ratio"]
