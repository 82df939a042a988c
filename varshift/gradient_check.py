"""Central-difference gradient check of any layer or model."""

from __future__ import annotations

import copy

import numpy as np

from ._process import public

__all__ = ["gradcheck"]


@public("layer")
def gradcheck(layer, x, *, eps=1e-6, seed=0, atol=1e-3, details=False):
    """Compare backward with float64 central differences.

    The layer is deep-copied and converted to float64; the original is untouched.
    Before every evaluation the copy's buffers and random streams are restored, so
    BatchNorm running statistics and dropout masks are the same in every one.

    Parameters
    ----------
    layer : varshift.nn.Layer
        In the mode to check (train or eval).
    x : array_like
        Input; cast to float64.
    eps : float, default 1e-6
        Finite-difference step.
    seed : int, default 0
        Seed of the random output weights ``R``: the scalar checked is
        ``sum(layer(x) * R)``.
    atol : float, default 1e-3
        Floor of the error's denominator, relative to ``|f| = max(1,
        |sum(layer(x) * R)|)``. Central differences resolve a derivative only to
        about ``1e-16 |f| / eps = 1e-10 |f|``, so gradients much smaller than ``|f|``
        (a bias followed by BatchNorm has an exactly zero one) are compared on the
        scale ``atol |f|``: an error below 1e-6 then still means agreement to
        ``1e-9 |f|``.
    details : bool, default False
        Also return the error of every tensor.

    Returns
    -------
    error : float
        Worst relative error over the input and every parameter, each measured as
        ``max|analytic - numeric| / max(max|analytic|, max|numeric|, atol |f|)``.
    errors : dict of str to float
        Only with ``details=True``: ``'input'`` and every parameter key.
    """
    model = copy.deepcopy(layer).astype(np.float64)
    x = np.array(x, dtype=np.float64)
    buffers = model.state_dict(params=False)
    rng_state = model.rng_state()

    def restore():
        model.load_state_dict(buffers, strict=False)
        model.set_rng_state(rng_state)

    restore()
    out = model.forward(x)
    # salted, so that R is never the user's own seed-0 data (a stationary point for BN)
    weights = np.random.default_rng([seed, 0x5EED]).standard_normal(np.shape(out))
    dx = model.backward(weights)
    analytic = {"input": (x, dx)}
    analytic.update({key: (p, g) for key, p, g in model.named_parameters()})

    def objective():
        restore()
        return float(np.sum(model.forward(x) * weights))

    floor = atol * max(1.0, abs(float(np.sum(out * weights))))
    errors = {}
    for key, (value, grad) in analytic.items():
        numeric = np.zeros_like(value)
        flat, num = value.reshape(-1), numeric.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + eps
            up = objective()
            flat[i] = saved - eps
            down = objective()
            flat[i] = saved
            num[i] = (up - down) / (2 * eps)
        scale = max(np.abs(grad).max(initial=0), np.abs(numeric).max(initial=0), floor)
        errors[key] = float(np.abs(grad - numeric).max(initial=0) / scale)
    worst = max(errors.values())
    return (worst, errors) if details else worst

