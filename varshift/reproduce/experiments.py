"""One training run of the reproduction per task: train a network, then measure
everything the figures need, and return it as plain JSON.

Each public function here is a task of :mod:`varshift.tasks` (module-level, keyword
arguments in, a JSON-ready dict out), so a sweep can run serially, in local processes
or on a Dask cluster and be cached per run.

Training follows one recipe for every network: Adam with a cosine learning-rate decay
to zero over the given epochs (Li et al. decay the rate in steps), batch 100,
cross-entropy; the shuffling order and initial weights depend on the seed only, so runs
with the same seed are paired.
"""

from __future__ import annotations

import copy
import functools

import numpy as np

from .. import evaluate, fit, measure, nn, optim, recalibrate
from ..backends import session_for
from ..measurement import BATCH_SIZE, measure_with
from ..nn.layer import modes, preserved
from ..theory import test_variance, train_variance, weight_cos2
from .networks import ARCHITECTURES, mlp, preresnet, seeded

__all__ = ["UNUSED", "network", "train_network", "initial_weights", "train_mlp", "train_stale", "mnist1d", "cosine_lr"]

TRACKED = 2000  # training samples evaluated after every epoch (train vs eval mode)
UNUSED = 2000
"""Training sequences after the first ``n_train`` that ``train_network(reestimate=True)``
re-estimates the statistics on."""


@functools.lru_cache(maxsize=2)
def mnist1d(num_samples):
    """MNIST-1D with ``num_samples`` sequences (80 % train), generated once per process."""
    from ..datasets import load_mnist1d

    return load_mnist1d(num_samples=num_samples)


@functools.lru_cache(maxsize=1)
def _mnist(n_train, data_dir):
    from ..datasets import load_mnist

    x_train, y_train, x_test, y_test = load_mnist(data_dir)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    return flat(x_train[:n_train]), y_train[:n_train], flat(x_test), y_test


def cosine_lr(lr, epoch, epochs):
    """Learning rate of ``epoch`` (0-based) under cosine decay from ``lr`` to 0."""
    return lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))


def _error(model, x, y, **modes_):
    return 100 * (1 - evaluate(model, (x, y), nn.CrossEntropyLoss(), **modes_)["accuracy"])


def _train(model, data, *, epochs, lr, batch_size, seed, on_epoch=None):
    opt = optim.Adam(model, lr=lr)
    for epoch in range(epochs):
        opt.lr = cosine_lr(lr, epoch, epochs)
        fit(model, data, nn.CrossEntropyLoss(), opt, epochs=1, batch_size=batch_size,
            seed=seed * 1000 + epoch, eval_train=False)
        if on_epoch is not None:
            on_epoch()


def _pairs(model):
    """``(previous, layer, next)`` for every layer inside a Sequential of ``model``."""
    for _, container in model.walk():
        if isinstance(container, nn.Sequential):
            layers = [None, *container.layers, None]
            yield from zip(layers, layers[1:], layers[2:])


def _bn_rows(model, report):
    """Per BatchNorm: the shift, mean shift and the attribution factors, and whether a
    noise layer sits right before it."""
    after_noise = {id(layer) for prev, layer, _ in _pairs(model)
                   if layer.kind == "batchnorm" and prev is not None and prev.kind == "dropout"}
    layers = dict(model.walk())
    return [{"name": b.name, "shift": b.shift, "var_ratio": b.var_ratio,
             "mean_shift": float(np.mean(b.mean_shift)), **b.attribution,
             "after_noise": id(layers[b.name]) in after_noise} for b in report.bn]


def _patches(x, weight_layer):
    """The inputs of each output unit of ``weight_layer`` (None: the units themselves,
    case (a)), as rows of a (M, d) matrix, and the weights as (C_out, d)."""
    if weight_layer is None:  # case (a): each channel's values are the units
        return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]), None
    w = weight_layer.params["weight"].astype(np.float64)
    if weight_layer.kind == "dense":
        return x.reshape(len(x), -1), w
    k = w.shape[-1]
    if tuple(weight_layer.stride) != (1,) or tuple(weight_layer.dilation) != (1,):
        raise ValueError("theory points need stride 1 and dilation 1 convolutions")
    if weight_layer.groups != 1:
        raise ValueError(f"theory points need groups=1 convolutions, got groups={weight_layer.groups}")
    left = (k - 1) // 2
    padded = np.pad(x, ((0, 0), (0, 0), (left, k - 1 - left)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, k, axis=2)  # (N, C, L, k)
    return np.moveaxis(windows, 2, 1).reshape(-1, x.shape[1] * k), w.reshape(len(w), -1)


def _theory_point(noise, x, weight_layer, draws=4):
    """Li et al.'s prediction of the noise's variance ratio from the measured c, v, rho
    (and d cos^2 of the weights), against the ratio measured on the same inputs. The
    prediction uses the layer's own ``E[m^2]`` (its ``second_moment``).

    ``x`` is what enters the noise layer in inference mode. Case (a) (BatchNorm right
    after the noise): X is the noise's output. Case (b): X is the weight layer's output
    (without bias). Both ratios are ``sum over channels Var_test / sum Var_train``.
    """
    x = np.asarray(x, np.float64)
    clean, w = _patches(x, weight_layer)
    noisy = np.concatenate([_patches(np.asarray(noise.forward(x.astype(noise.dtype)), np.float64),
                                     weight_layer)[0] for _ in range(draws)])
    c, v = float(clean.mean()), float(clean.var(axis=0, ddof=1).mean())
    if w is None:
        measured = clean.var(axis=0, ddof=1).sum() / noisy.var(axis=0, ddof=1).sum()
        predicted = float(test_variance(c=c, v=v) / train_variance(noise, c=c, v=v))
        return {"case": "a", "c": c, "v": v, "rho": None, "d": None, "d_cos2": None,
                "predicted": predicted, "measured": float(measured)}
    corr = np.corrcoef(clean, rowvar=False)
    d = clean.shape[1]
    rho = float((np.nansum(corr) - np.nansum(np.diag(corr))) / (d * (d - 1)))
    norm2 = np.sum(w * w, axis=1)
    d_cos2 = w.sum(axis=1) ** 2 / norm2
    kw = dict(c=c, v=v, rho=rho, d_cos2=d_cos2, w_norm2=norm2)
    predicted = test_variance(**kw).sum() / train_variance(noise, **kw).sum()
    measured = (clean @ w.T).var(axis=0, ddof=1).sum() / (noisy @ w.T).var(axis=0, ddof=1).sum()
    return {"case": "b", "c": c, "v": v, "rho": rho, "d": int(d), "d_cos2": float(d_cos2.mean()),
            "predicted": float(predicted), "measured": float(measured)}


def _theory_points(model, x, seed):
    """A :func:`_theory_point` for every noise layer followed by a BatchNorm (a) or by a
    weight layer (b), on ``x`` in inference mode."""
    targets = [(layer, nxt) for _, layer, nxt in _pairs(model)
               if layer.kind == "dropout" and nxt is not None
               and nxt.kind in ("batchnorm", "conv", "dense")]
    seen = {}
    handles = [layer.add_hook(lambda lay, inp, out: seen.setdefault(id(lay), inp))
               for layer, _ in targets]
    try:
        with preserved(model, seed), modes(model, default="eval"):
            model(x)
            points = []
            for layer, nxt in targets:
                layer.training = True
                points.append(_theory_point(layer, seen[id(layer)],
                                            None if nxt.kind == "batchnorm" else nxt))
    finally:
        for handle in handles:
            handle.remove()
    return points


def _flips(model, x, y, seed, keep=4):
    """Training samples right in train mode and wrong in inference mode, and the
    reverse; the logits of the first ``keep`` of the former."""
    logits = {}
    with preserved(model, seed), np.errstate(all="ignore"):
        for mode in ("train", "eval"):
            with modes(model, default=mode):
                logits[mode] = np.concatenate([model(x[i:i + 250]) for i in range(0, len(x), 250)])
    right = {m: logits[m].argmax(1) == y for m in logits}
    lost = np.flatnonzero(right["train"] & ~right["eval"])
    return {"right_to_wrong": int(len(lost)),
            "wrong_to_right": int(np.sum(~right["train"] & right["eval"])),
            "examples": [{"index": int(i), "label": int(y[i]), "train_logits": logits["train"][i],
                          "eval_logits": logits["eval"][i]} for i in lost[:keep]]}


def network(arch, placement, rate, *, noise="dropout", widen=None):
    """The untrained network ``arch`` of :data:`~.networks.ARCHITECTURES` with the noise
    placed, as :func:`train_network` builds it.

    Parameters
    ----------
    arch : str
        A key of :data:`~.networks.ARCHITECTURES`.
    placement, rate, noise
        As in :func:`train_network`.
    widen : int, optional
        PreResNet's width factor (:func:`~.networks.preresnet`); None builds the
        architecture's default, so a task without ``widen`` keeps its network (and key).

    Raises
    ------
    ValueError
        If ``arch`` is unknown, or ``widen`` is given for an architecture other than
        PreResNet.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {tuple(ARCHITECTURES)}, got {arch!r}")
    if widen is None:
        return ARCHITECTURES[arch](placement, rate, noise=noise)
    if arch != "PreResNet":
        raise ValueError(f"widen applies to arch 'PreResNet' only (width at fixed depth), got "
                         f"widen={widen!r} with arch {arch!r}")
    return preresnet(placement, rate, noise=noise, widen=widen)


def initial_weights(arch, seed, widen=None):
    """``train_network``'s ``weights`` rows of ``arch`` at initialisation: the network
    ``seed`` starts from, before any update (the same for every arm of that seed).

    Parameters
    ----------
    arch : str
    seed : int
    widen : int, optional
        As in :func:`network`.

    Returns
    -------
    list of dict
        Per weight layer: ``name``, ``d``, ``cos2``, ``d_cos2``.
    """
    model = seeded(network(arch, "a", 0.0, widen=widen), seed)
    return [{"name": a.name, "d": a.d, "cos2": a.cos2, "d_cos2": a.d_cos2} for a in weight_cos2(model)]


def train_network(*, arch, placement, rate, seed, epochs, num_samples, noise="dropout",
                  lr=3e-3, batch_size=100, track=False, momentum=None, n_train=None,
                  widen=None, reestimate=False):
    """Train one 1-D network on MNIST-1D and measure it (one task of the sweep).

    Parameters
    ----------
    arch : {'PreResNet', 'WRN', 'DenseNet', 'ResNeXt'}
    placement : {'a', 'b', 'head'}
    rate : float
        Drop rate, or Uout's beta with ``noise='uout'``; 0 is the no-noise network.
    seed : int
        Initial weights (independent of the noise layers), masks and data order.
    epochs : int
    num_samples : int
        MNIST-1D sequences generated (80 % train, 20 % test).
    noise : {'dropout', 'uout', 'gaussian'}
        The noise layers (:data:`varshift.nn.noise.NOISES`).
    lr : float, default 3e-3
        Initial Adam learning rate (cosine decay to 0).
    batch_size : int, default 100
    track : bool, default False
        Record the training accuracy in train and in inference mode (on the first
        2,000 training samples) and the test error after every epoch.
    momentum : float, optional
        BatchNorm momentum (PyTorch convention); default the layers' 0.1.
    n_train : int, optional
        Train (and measure, recalibrate, count flips) on the first ``n_train``
        training sequences only; the test set stays the same. Default: all of them.
    widen : int, optional
        PreResNet's width factor at fixed depth (:func:`network`). Default: the
        architecture's own width; tasks leave it out then, so that their keys are
        those of the runs computed before it existed.
    reestimate : bool, default False
        Also re-estimate the statistics two other ways than Adjust, each on a copy of
        the trained network (so every other number is that of the same run without
        it): with Dropout *on*, on the training sequences; and with Dropout off, on the
        :data:`UNUSED` training sequences that follow the first ``n_train`` (never
        trained on). Their test errors go to ``reestimated`` (``dropout_on``,
        ``unused``). Needs ``n_train``.

    Returns
    -------
    dict
        ``test_error``, ``train_error`` (inference mode, all training samples),
        ``train_error_train_mode``, ``history`` (if ``track``), ``bn`` (per BatchNorm:
        shift, mean shift, attribution, after_noise), ``recalibrated`` (test error and
        largest shift after :func:`varshift.recalibrate` on the training data),
        ``theory`` (per noise layer: measured c, v, rho, d cos^2, predicted and
        measured ratio), ``weights`` (per weight layer: d, cos^2, d cos^2), ``flips``,
        and ``reestimated`` if ``reestimate``.

    Raises
    ------
    ValueError
        If ``reestimate`` is set without ``n_train``, or fewer than :data:`UNUSED`
        training sequences follow the first ``n_train``.
    """
    x, y, x_test, y_test = mnist1d(num_samples)
    if reestimate and (n_train is None or len(x) - n_train < UNUSED):
        raise ValueError(f"train_network: reestimate needs n_train with at least {UNUSED} of the "
                         f"{len(x)} training sequences after it, got n_train={n_train!r}")
    x_unused = x[n_train:n_train + UNUSED] if reestimate else None
    x, y = x[:n_train], y[:n_train]  # n_train None: all
    model = network(arch, placement, rate, noise=noise, widen=widen)
    if momentum is not None:
        for _, layer in model.walk():
            if layer.kind == "batchnorm":
                layer.momentum = momentum
    seeded(model, seed)
    history = {"train_mode": [], "eval_mode": [], "test_error": []}

    def track_epoch():
        sub = (x[:TRACKED], y[:TRACKED])
        history["train_mode"].append(100 - _error(model, *sub, batchnorm="train", dropout="train",
                                                  seed=seed))
        history["eval_mode"].append(100 - _error(model, *sub))
        history["test_error"].append(_error(model, x_test, y_test))

    _train(model, (x, y), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
           on_epoch=track_epoch if track else None)
    report = measure(model, x, seed=seed)
    out = {"test_error": _error(model, x_test, y_test), "train_error": _error(model, x, y),
           "train_error_train_mode": _error(model, x, y, batchnorm="train", dropout="train",
                                            seed=seed),
           "bn": _bn_rows(model, report),
           "theory": _theory_points(model, x[:TRACKED], seed),
           "weights": [{"name": a.name, "d": a.d, "cos2": a.cos2, "d_cos2": a.d_cos2}
                       for a in weight_cos2(model)],
           "flips": _flips(model, x, y, seed)}
    if track:
        out["history"] = history
    if reestimate:
        out["reestimated"] = {}
        for name, data, dropout in (("dropout_on", x, "on"), ("unused", x_unused, "off")):
            copied = copy.deepcopy(model)
            recalibrate(copied, data, dropout=dropout, seed=seed, reports=False)
            out["reestimated"][name] = _error(copied, x_test, y_test)
    recalibrate(model, x, seed=seed, reports=False)  # its "before" report would be `report`
    out["recalibrated"] = {"test_error": _error(model, x_test, y_test),
                           "max_shift": _largest_shift(model, x)}
    return out


def _largest_shift(model, x):
    """The largest shift of ``model``'s BatchNorms on ``x``, as :func:`varshift.measure`
    gives it, from its inference-mode pass alone: the only one a shift reads."""
    session = session_for(model, "measure")
    report = measure_with(session, session.batches(x, BATCH_SIZE, "measure"), seed=None,
                          progress=False, passes=("eval",))
    return max(b.shift for b in report.bn)


def train_mlp(*, width, rate, seed, epochs, n_train, placement="b", lr=1e-3, batch_size=128,
              data_dir=None):
    """Train an MLP with BatchNorm on MNIST (Li et al.'s width analysis, Fig. 3 /
    Table 1 analog) and measure the weights' angles and the shift.

    Returns
    -------
    dict
        ``test_error``, ``train_error``, ``weights`` (per Dense layer: d, cos^2,
        d cos^2), ``bn`` (as :func:`train_network`), ``theory``.
    """
    x, y, x_test, y_test = _mnist(n_train, data_dir)
    model = mlp(width, rate, placement=placement, seed=seed)
    _train(model, (x, y), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    return {"test_error": _error(model, x_test, y_test), "train_error": _error(model, x, y),
            "weights": [{"name": a.name, "d": a.d, "cos2": a.cos2, "d_cos2": a.d_cos2}
                        for a in weight_cos2(model)],
            "bn": _bn_rows(model, measure(model, x, seed=seed)),
            "theory": _theory_points(model, x[:TRACKED], seed)}


def train_stale(*, batch_size, momentum, seed, epochs, num_samples, lr=3e-3):
    """PreResNet without noise trained with a given batch size and BatchNorm momentum:
    the shift of its running statistics and the test error with them and after
    recalibration (stale statistics, Wu & Johnson 2021)."""
    x, y, x_test, y_test = mnist1d(num_samples)
    model = preresnet("a", 0.0, seed=seed)
    for _, layer in model.walk():
        if layer.kind == "batchnorm":
            layer.momentum = momentum
    _train(model, (x, y), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    report = measure(model, x, batch_size=batch_size, seed=seed)
    error_ema = _error(model, x_test, y_test)
    recalibrate(model, x, seed=seed, reports=False)
    return {"steps": epochs * -(-len(x) // batch_size),
            "shift": float(np.mean([b.shift for b in report.bn])),
            "error_ema": error_ema, "error_recalibrated": _error(model, x_test, y_test)}
