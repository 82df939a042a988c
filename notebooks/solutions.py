"""Reference solutions of the course exercises (notebooks 01-08).

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


# Exercise 8 (notebook 04): the updates of a run and what is left of the initial statistics
def updates_and_initial_weight(n_samples, batch_size, epochs, momentum, convention,
                               validation_split=0.0):
    import math

    n_train = math.floor(n_samples * (1.0 - validation_split))  # fit keeps the last part apart
    updates = epochs * math.ceil(n_train / batch_size)  # the last, smaller batch counts
    keep = 1 - momentum if convention == "pytorch" else momentum  # Keras: weight of the old value
    return updates, keep ** updates


# Exercise 9 (notebook 05): the largest Dropout factor at a conv module's BatchNorm
def first_batchnorm_factor_bound(order, rate):
    letters = order.split("-")
    if letters.index("D") > letters.index("B"):
        return 1.0  # Dropout after the BatchNorm: its input is the same in both modes
    # Dropout feeds it directly: Eq. 7, Delta = v / (v/p + c^2 (1/p - 1)) <= p, equal at c = 0
    return 1 - rate


# Exercise 10 (notebook 05): the verdict from per-seed paired differences
def decide(differences, direction, min_effect=0.0, posted_regime=True):
    from scipy import stats

    d = np.asarray(differences, float)
    if not posted_regime:
        return "not tested at the posted regime"
    if d.size < 3:
        return "undecided"
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    low, high = d.mean() - half, d.mean() + half
    if direction == 0:  # equivalence: inside (-margin, margin)
        if -min_effect < low and high < min_effect:
            return "holds"
        return "contradicted" if low > min_effect or high < -min_effect else "undecided"
    if direction == -1:  # mirror: the arm should be smaller
        low, high = -high, -low
    if low > min_effect:
        return "holds"
    return "contradicted" if high < 0 else "undecided"


# Exercise 13 (notebook 06): recompute a PyTorch model's BatchNorm statistics
def recompute_batchnorm_statistics(model, x):
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()  # Dropout off; every BatchNorm normalises with its running statistics
    for bn in norms:  # forward order: each sees the earlier ones already recomputed
        seen = []
        hook = bn.register_forward_pre_hook(lambda module, args, seen=seen: seen.append(args[0]))
        with torch.no_grad():
            model(x)
        hook.remove()
        inputs = torch.cat(seen)
        dims = [0, *range(2, inputs.dim())]  # per channel: over N (and H, W for conv)
        bn.running_mean.copy_(inputs.mean(dims))
        bn.running_var.copy_(inputs.var(dims, unbiased=True))
    return model


# Exercise 11 (notebook 05): a PyTorch BatchNorm1d computing what a Keras one computes
def torch_twin(layer):
    import keras
    import torch

    def tensor(variable):
        return torch.tensor(keras.ops.convert_to_numpy(variable))  # a copy, not shared

    bn = torch.nn.BatchNorm1d(layer.moving_mean.shape[0], eps=layer.epsilon,
                              momentum=1 - layer.momentum)  # torch: the weight of the new batch
    with torch.no_grad():
        bn.weight.copy_(tensor(layer.gamma))
        bn.bias.copy_(tensor(layer.beta))
        bn.running_mean.copy_(tensor(layer.moving_mean))
        bn.running_var.copy_(tensor(layer.moving_variance))
    return bn.eval()


# Exercise 12 (notebook 05): a Keras BatchNormalization's population statistics
def population_statistics(model, name, x):
    import keras

    inputs = keras.Model(model.inputs[0], model.get_layer(name).input)  # the layer's input
    h = np.asarray(keras.ops.convert_to_numpy(inputs(x, training=False)), np.float64)
    h = h.reshape(-1, h.shape[-1])  # channels last: every axis but the last is a sample
    return h.mean(axis=0), h.var(axis=0)  # ddof=0: Keras' biased variance


# Exercise 14 (notebook 07): inverted Dropout, forward and backward
def dropout_forward(x, rate, rng):
    keep = 1.0 - rate
    mask = (rng.random(x.shape) < keep) / keep  # 0 or 1/keep: E[mask] = 1
    return x * mask, mask


def dropout_backward(dout, cache):
    return dout * cache  # the same mask, the same factor


# Exercise 15 (notebook 07): LayerNorm's backward pass
def layernorm_backward(g, cache):
    x, mu, var, xhat, gamma, eps = cache
    dgamma = (g * xhat).sum(axis=0)
    dbeta = g.sum(axis=0)
    h = g * gamma  # gamma varies along the normalised axis: inside the means
    dx = (h - h.mean(axis=1, keepdims=True)
          - xhat * (h * xhat).mean(axis=1, keepdims=True)) / np.sqrt(var + eps)
    return dx, {"weight": dgamma, "bias": dbeta}


# Exercise 16 (notebook 08): BatchNorm of convolutional feature maps, train mode
def spatial_batchnorm_forward(x, gamma, beta, eps=1e-5):
    axes = (0, 2, 3)  # one mean and one variance per channel, over N, H and W
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)  # biased, as in the dense layer
    xhat = (x - mu) / np.sqrt(var + eps)
    g, b = gamma.reshape(1, -1, 1, 1), beta.reshape(1, -1, 1, 1)
    return g * xhat + b, (x, mu, var, xhat, g, eps)


def spatial_batchnorm_backward(g, cache):
    x, mu, var, xhat, gamma, eps = cache
    axes = (0, 2, 3)
    dgamma = (g * xhat).sum(axis=axes)
    dbeta = g.sum(axis=axes)
    # Exercise 1's compact form, every mean over the N * H * W values of a channel
    dx = gamma / np.sqrt(var + eps) * (g - g.mean(axis=axes, keepdims=True)
                                       - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    return dx, {"weight": dgamma, "bias": dbeta}


# Exercise 17 (notebook 08): how the scale of the pre-activations changes with depth
def std_ratio(gain, layers):
    # E[h'^2] = fan_in * (gain / fan_in) * E[relu(h)^2] and E[relu(h)^2] = E[h^2] / 2
    # for h symmetric about 0: the variance is multiplied by gain / 2 per layer
    return (gain / 2) ** (layers / 2)
