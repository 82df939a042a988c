"""Reference solutions of the course exercises (notebooks 01-04).

Try the exercises first: the notebooks' checks give hints. ``course.exercise`` uses
these functions instead of yours when ``VARSHIFT_SOLUTIONS=1`` is set.
"""

import numpy as np


# Exercise 1 (notebook 01): BatchNorm's backward pass, train mode
def batchnorm_backward(g, cache):
    x, mu, var, xhat, gamma, eps = cache
    inv_std = 1.0 / np.sqrt(var + eps)
    dgamma = (g * xhat).sum(axis=0)
    dbeta = g.sum(axis=0)
    dxhat = g * gamma
    # compact form: the three paths (direct, through mu, through var) summed
    dx = inv_std * (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0))
    return dx, {"weight": dgamma, "bias": dbeta}


# Exercise 2 (notebook 01): an input on which gradcheck catches the planted bug
def input_that_catches_the_bug():
    # The planted backward averages over *all* entries instead of per channel; with
    # one channel both are the same, so the input needs C > 1.
    return np.random.default_rng(0).normal(size=(16, 3))


# Exercise 3 (notebook 02): Eq. 7
def train_variance_dropout(c, v, p):
    # E[X] = c, E[X^2] = E[a^2] E[x^2] / p^2 = (c^2 + v) / p
    return (c * c + v) / p - c * c


# Exercise 4 (notebook 02): Eq. 12
def delta_case_b(p, c, v, rho, d_cos2):
    cross = rho * v * (d_cos2 - 1)  # sum_{i != j} w_i w_j Cov(x_i, x_j) / |w|^2
    return (v + cross) / ((c * c + v) / p - c * c + cross)


# Exercise 5 (notebook 03): Li et al.'s prediction for one layer of a network
def predict_dropout_factor(x, w, p):
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    d = x.shape[1]
    corr = np.corrcoef(x, rowvar=False)
    stats = {"c": x.mean(), "v": x.var(axis=0, ddof=1).mean(),
             "rho": (np.nansum(corr) - np.nansum(np.diag(corr))) / (d * (d - 1)),
             "d_cos2": np.mean(w.sum(axis=1) ** 2 / np.sum(w * w, axis=1))}
    cross = stats["rho"] * stats["v"] * (stats["d_cos2"] - 1)
    own = (stats["c"] ** 2 + stats["v"]) / p - stats["c"] ** 2
    return {**stats, "delta": (stats["v"] + cross) / (own + cross)}


# Exercise 6 (notebook 03): the shift at p before running it
def predict_shift(c, v, p):
    # r = real / moving ~ Var_test / Var_train = Delta <= 1, so max(r, 1/r) = 1 / Delta
    return ((c * c + v) / p - c * c) / v


# Exercise 7 (notebook 04): Uout with Dropout's noise variance
def uout_beta_for(rate):
    p = 1 - rate
    return np.sqrt(3 * (1 - p) / p)  # beta^2 / 3 = (1 - p) / p


# Exercise 8 (notebook 04): what is left of the initial running statistics
def weight_of_initial_statistics(momentum, steps, convention):
    keep = 1 - momentum if convention == "pytorch" else momentum
    return keep ** steps
