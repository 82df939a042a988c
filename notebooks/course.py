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
           "check_batchnorm_backward", "check_catching_input", "check_train_variance",
           "check_delta_case_b", "check_dropout_factor_prediction", "check_shift_prediction",
           "check_equal_variance_beta", "check_initial_weight"]

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
    8: ("04", "weight_of_initial_statistics", "check_initial_weight"),
}
"""Exercise number -> (notebook, function name, check name)."""


# --------------------------------------------------------------------------- set-up
def setup(threads=1):
    """Common settings of the notebooks; returns a seeded random generator.

    One BLAS and one Numba thread: the matrices here are small, so a second thread
    gains little (and on a busy 2-core machine, threads that wait for each other make
    small products many times slower); one thread also makes the numbers identical to
    the stored ones on any machine.
    """
    import matplotlib.pyplot as plt
    import numba
    import scipy.linalg.blas  # noqa: F401 - load SciPy's OpenBLAS (the layers' BLAS) first
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(threads)
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


def _passed(number, text):
    source = " (reference solution)" if solutions_enabled() else ""
    print(f"Exercise {number} passed{source}: {text}")


def _close(a, b, rtol=1e-6, atol=1e-9):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))


def _hint(number, message):
    return f"Exercise {number} - not yet. Hint: {message}"


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
            "dx differs from the engine's. Work node by node through the graph "
            "x -> (mu, sigma^2) -> xhat -> y, or check the compact form "
            "dx = gamma/sqrt(sigma^2+eps) * (g - mean(g) - xhat*mean(g*xhat))."))))
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
        hint = next((h for w, h in wrong.items() if math.isclose(got, w, rel_tol=1e-9)),
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
        hint = next((h for w, h in wrong.items() if math.isclose(got, w, rel_tol=1e-9)),
                    "numerator v + rho v (d cos^2 - 1), denominator Eq. 7 + the same rho v "
                    "(d cos^2 - 1): Dropout does not change the covariances (Eq. 11).")
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
                "shift = 1/Delta = Var_train / Var_test = ((c^2+v)/p - c^2) / v.")
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
        hint = next((h for w, h in wrong.items() if math.isclose(got, w, rel_tol=1e-9)),
                    "solve beta^2 / 3 = (1 - p) / p for beta, with p = 1 - rate.")
        raise AssertionError(_hint(7, f"rate {rate}: you return {got:.6g}, expected {want:.6g}; {hint}"))
    _passed(7, f"Dropout(0.25) and Uout(beta={uout_beta_for(0.25):.3g}) add the same noise variance")


# Exercise 8 ------------------------------------------------------------------------
def check_initial_weight(weight_of_initial_statistics):
    """Exercise 8: weight of the initial running statistics after ``steps`` updates."""
    cases = [(0.1, 50, "pytorch"), (0.99, 50, "keras"), (0.01, 50, "pytorch"), (0.9, 10, "keras")]
    for m, n, convention in cases:
        got = float(weight_of_initial_statistics(m, n, convention))
        keep = 1 - m if convention == "pytorch" else m
        want = keep ** n
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        swapped = (m if convention == "pytorch" else 1 - m) ** n
        hint = ("conventions swapped: PyTorch's momentum is the weight of the new batch "
                "(keep 1 - m of the old value), Keras' the weight of the old value (keep m)."
                if math.isclose(got, swapped, rel_tol=1e-9) else
                "each update keeps a fixed fraction of the running value; after n updates "
                "the initial value weighs that fraction to the power n.")
        raise AssertionError(_hint(8, f"momentum {m} ({convention}), {n} steps: you return "
                                      f"{got:.6g}, expected {want:.6g}; {hint}"))
    _passed(8, f"after 50 steps Keras' 0.99 keeps {0.99 ** 50:.0%} of the initial statistics, "
               f"PyTorch's 0.1 keeps {0.9 ** 50:.1%}")
