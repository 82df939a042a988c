"""Small models of every framework varshift measures, and the training-like passes that
give them their BatchNorm statistics, for the scenario suite (tests/test_scenarios.py).

Every kit builds the same network, Dense(12 -> 32) -> ReLU -> [noise] -> Dense(32 -> 32)
-> BatchNorm -> ReLU -> Dense(32 -> 3) (or, for channel-wise noise, its Conv1D twin on
inputs of length 12 with 4 channels), and moves its running statistics as training does:
forward passes in train mode (torch ``model.train(); model(x)`` under ``no_grad``, Keras
``model(x, training=True)``, Flax ``model.train(); model(x)`` in an ``nnx.jit`` step,
the engine's ``model.train(); model(x)``), never by writing numbers.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from conftest import import_keras

_RNG = np.random.default_rng(2023)
#: Standardised inputs, (N, 12), and their sequence twin, (N, L=12, C=4) channels-last.
X = _RNG.standard_normal((512, 12)).astype(np.float32)
XC = _RNG.standard_normal((512, 12, 4)).astype(np.float32)
#: Pixel-like inputs in [0, 1] (8-bit values divided by 255), as a model is trained on.
PIXELS = (_RNG.integers(0, 256, (512, 12)) / 255).astype(np.float32)


def steps_to_converge(new_weight, left=1e-3):
    """Updates after which the initial value weighs less than ``left`` in an exponential
    average whose new batch weighs ``new_weight``."""
    return math.ceil(math.log(left) / math.log(1 - new_weight))


def batches(x, size, steps):
    """``steps`` consecutive batches of ``size`` rows, cycling through ``x`` (epochs)."""
    n = len(x) // size
    for i in range(steps):
        j = i % n
        yield x[j * size:(j + 1) * size]


class Kit:
    """One framework: build the network, feed it data, move its statistics.

    ``noises`` maps a noise kind to ``conv`` (whether it needs the Conv1D twin, i.e. it
    drops whole channels). Momenta are written as the framework writes them:
    ``momentum`` is the one the models get unless told (a new batch weighs 0.1, so that
    :func:`steps_to_converge` is 66 passes), ``default_momentum`` the framework's own
    default, and ``new_weight(momentum)`` the weight of the new batch.
    """

    name = ""
    noises: dict = {}
    momentum = 0.1
    default_momentum = 0.1

    def new_weight(self, momentum):
        return momentum

    def model(self, noise=None, *, momentum=None, norm="bn", seed=0):
        """The network, with the noise kind ``noise`` (None: an identity) before the
        layer feeding the BatchNorm, and as its normalisation ``norm``: 'bn' (the
        framework's BatchNorm with running statistics), 'batch_stats' (the framework's
        BatchNorm normalising with batch statistics at inference too; ValueError where
        the framework has none) or 'own' (a user's own layer normalising with the batch's
        moments, no running statistics)."""
        raise NotImplementedError

    def predict(self, model, x):
        """Inference-mode outputs for ``x`` (NumPy), as a user predicts."""
        raise NotImplementedError

    def data(self, x):
        """``x`` (NumPy, channels-last for sequences) as the model takes it."""
        return x

    def inputs(self, noise=None):
        """The standardised inputs of the network ``model(noise)`` builds."""
        return XC if noise is not None and self.noises[noise] else X

    def train_passes(self, model, x, steps, batch=64, *, noise=True, mode="train"):
        """``steps`` training forward passes of ``batch`` rows of ``x`` (NumPy), as a
        training loop makes them; ``noise=False`` keeps the noise layers in inference
        mode (pretraining without them); ``mode='inference'`` runs the loop with the whole
        model in inference mode (the bug that leaves the statistics at their initial
        values). Leaves the model in inference mode."""
        raise NotImplementedError

    def converge(self, model, x, batch=64, **kwargs):
        """Train-mode passes until the exponential average of the BatchNorm (at its
        momentum) has forgotten its start; returns ``model``."""
        momentum = self.bn(model).momentum
        self.train_passes(model, x, steps_to_converge(self.new_weight(momentum)), batch,
                          **kwargs)
        return model

    def bn(self, model):
        """The BatchNorm layer."""
        return model[4]

    def freeze_batchnorm(self, model):
        """Frozen-BatchNorm fine-tuning: the model in train mode, its BatchNorm not."""
        raise NotImplementedError

    def scale_before_batchnorm(self, model, factor):
        """Multiply the weights of the layer feeding the BatchNorm by ``factor`` (as
        further training or weight averaging changes them), statistics untouched."""
        raise NotImplementedError

    def bn_name(self, model):
        return "4"


# ---------------------------------------------------------------------------- engine
class EngineKit(Kit):
    name = "engine"
    noises = {"dropout": False, "gaussian_dropout": False, "uout": False}

    def model(self, noise=None, *, momentum=None, norm="bn", seed=0):
        from varshift import nn

        if norm == "own":
            raise ValueError("varshift.nn models are built from varshift.nn layers only")
        momentum = self.momentum if momentum is None else momentum
        layer = {"dropout": lambda: nn.Dropout(0.5), "gaussian_dropout": lambda: nn.GaussianDropout(0.5),
                 "uout": lambda: nn.Uout(1.0), None: nn.Identity}[noise]()
        bn = nn.BatchNorm(32, momentum=momentum, track_running_stats=norm == "bn")
        return nn.Sequential(nn.Dense(12, 32), nn.ReLU(), layer, nn.Dense(32, 32), bn,
                             nn.ReLU(), nn.Dense(32, 3), seed=seed)

    def predict(self, model, x):
        return np.asarray(model.eval()(x))

    def train_passes(self, model, x, steps, batch=64, *, noise=True, mode="train"):
        model.train(mode == "train")
        if not noise:
            model.layers[2].eval()
        for xb in batches(x, batch, steps):
            model(xb)
        model.eval()

    def freeze_batchnorm(self, model):
        model.train()
        model.layers[4].eval()

    def scale_before_batchnorm(self, model, factor):
        model.layers[3].params["weight"] *= factor

    def bn(self, model):
        return model.layers[4]


# ---------------------------------------------------------------------------- torch
class TorchKit(Kit):
    name = "torch"
    noises = {"dropout": False, "alpha_dropout": False, "dropout1d": True,
              "gaussian_noise": False, "stochastic_depth": False}

    def model(self, noise=None, *, momentum=None, norm="bn", seed=0):
        torch = pytest.importorskip("torch")

        class GaussianNoise(torch.nn.Module):  # a user's own noise module
            def forward(self, x):
                return x + torch.randn_like(x) if self.training else x

        class StochasticDepth(torch.nn.Module):  # torchvision.ops.StochasticDepth, 'row'
            def forward(self, x):
                if not self.training:
                    return x
                keep = torch.empty([len(x)] + [1] * (x.ndim - 1)).bernoulli_(0.5)
                return x * keep / 0.5

        class BatchStatNorm(torch.nn.Module):  # a user's own normalisation: batch moments
            def forward(self, x):
                return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)

        momentum = self.momentum if momentum is None else momentum
        layer = {"dropout": lambda: torch.nn.Dropout(0.5),
                 "alpha_dropout": lambda: torch.nn.AlphaDropout(0.5),
                 "dropout1d": lambda: torch.nn.Dropout1d(0.5), "gaussian_noise": GaussianNoise,
                 "stochastic_depth": StochasticDepth, None: torch.nn.Identity}[noise]()
        conv = noise is not None and self.noises[noise]
        torch.manual_seed(seed)
        width = 16 if conv else 32
        bn = BatchStatNorm() if norm == "own" else torch.nn.BatchNorm1d(
            width, momentum=momentum, track_running_stats=norm == "bn")
        if conv:
            return torch.nn.Sequential(
                torch.nn.Conv1d(4, 16, 3, padding=1), torch.nn.ReLU(), layer,
                torch.nn.Conv1d(16, 16, 3, padding=1), bn, torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(16, 3))
        return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), layer,
                                   torch.nn.Linear(32, 32), bn, torch.nn.ReLU(),
                                   torch.nn.Linear(32, 3))

    def data(self, x):
        import torch

        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1) if x.ndim == 3 else x))

    def predict(self, model, x):
        import torch

        with torch.no_grad():
            return model.eval()(self.data(x)).numpy()

    def train_passes(self, model, x, steps, batch=64, *, noise=True, mode="train"):
        import torch

        model.train(mode == "train")
        if not noise:
            model[2].eval()
        with torch.no_grad():
            for xb in batches(x, batch, steps):
                model(self.data(xb))
        model.eval()

    def freeze_batchnorm(self, model):
        model.train()
        model[4].eval()
        model[4].requires_grad_(False)

    def scale_before_batchnorm(self, model, factor):
        import torch

        with torch.no_grad():
            model[3].weight.mul_(factor)


# ---------------------------------------------------------------------------- Keras
class KerasKit(Kit):
    name = "keras"
    noises = {"dropout": False, "gaussian_dropout": False, "gaussian_noise": False,
              "alpha_dropout": False, "spatial_dropout1d": True, "user_noise": False}
    momentum = 0.9
    default_momentum = 0.99

    def new_weight(self, momentum):
        return 1 - momentum

    def _keras(self):
        pytest.importorskip("torch")
        os.environ.setdefault("KERAS_BACKEND", "torch")
        return import_keras()

    def model(self, noise=None, *, momentum=None, norm="bn", seed=0):
        keras = self._keras()
        if norm == "batch_stats":
            raise ValueError(
                "Keras' BatchNormalization has no setting that normalises with batch "
                "statistics at inference: predict(), evaluate() and model(x, training=False) "
                "use the moving statistics, even over a training=True written at the "
                "layer's call (only a bare model(x) honours that)")

        class UserNoise(keras.layers.Layer):  # a user's own noise layer, not Keras'
            def call(self, x, training=None):
                return x + keras.random.normal(keras.ops.shape(x)) if training else x

        class BatchStatNorm(keras.layers.Layer):  # a user's own normalisation: batch moments
            def call(self, x):
                mean, var = keras.ops.moments(x, axes=[0])
                return (x - mean) / keras.ops.sqrt(var + 1e-5)

        momentum = self.momentum if momentum is None else momentum
        layers = keras.layers
        layer = {"dropout": lambda: layers.Dropout(0.5),
                 "gaussian_dropout": lambda: layers.GaussianDropout(0.5),
                 "gaussian_noise": lambda: layers.GaussianNoise(1.0),
                 "alpha_dropout": lambda: layers.AlphaDropout(0.5),
                 "spatial_dropout1d": lambda: layers.SpatialDropout1D(0.5),
                 "user_noise": UserNoise, None: layers.Identity}[noise]()
        keras.utils.set_random_seed(seed)
        bn = BatchStatNorm() if norm == "own" else layers.BatchNormalization(momentum=momentum)
        if noise is not None and self.noises[noise]:
            return keras.Sequential([
                keras.Input((12, 4)), layers.Conv1D(16, 3, padding="same", activation="relu"),
                layer, layers.Conv1D(16, 3, padding="same"), bn, layers.ReLU(),
                layers.GlobalAveragePooling1D(), layers.Dense(3)])
        return keras.Sequential([keras.Input((12,)), layers.Dense(32, activation="relu"), layer,
                                 layers.Dense(32), bn, layers.ReLU(), layers.Dense(3)])

    def predict(self, model, x):
        keras = self._keras()  # not predict(), which splits x into batches of 32
        return keras.ops.convert_to_numpy(model(x, training=False))

    def train_passes(self, model, x, steps, batch=64, *, noise=True, mode="train"):
        import torch

        keras = self._keras()
        if not noise:  # the same layers without the noise, as a pretrained backbone
            model = keras.Sequential([keras.Input(model.input_shape[1:])]
                                     + model.layers[:1] + model.layers[2:])
        with torch.no_grad():
            for xb in batches(x, batch, steps):
                model(xb, training=mode == "train")

    def freeze_batchnorm(self, model):
        model.layers[3].trainable = False

    def scale_before_batchnorm(self, model, factor):
        kernel = model.layers[2].kernel
        kernel.assign(kernel * factor)

    def bn(self, model):
        return model.layers[3]

    def bn_name(self, model):
        return model.layers[3].name  # Keras numbers its names per process


# ---------------------------------------------------------------------------- Flax NNX
class FlaxKit(Kit):
    name = "flax"
    noises = {"dropout": False, "spatial_dropout": True, "gaussian_noise": False}
    momentum = 0.9
    default_momentum = 0.99

    def new_weight(self, momentum):
        return 1 - momentum

    def model(self, noise=None, *, momentum=None, norm="bn", seed=0):
        pytest.importorskip("flax", reason="flax is not installed (pip install \".[flax]\")")
        import jax
        import jax.numpy as jnp
        from flax import nnx

        class GaussianNoise(nnx.Module):  # a user's own noise module, nnx's mode attribute
            def __init__(self, rngs):
                self.rngs, self.deterministic = rngs, False

            def __call__(self, x):
                return x if self.deterministic else x + jax.random.normal(self.rngs.noise(), x.shape)

        class BatchStatNorm(nnx.Module):  # a user's own normalisation: batch moments
            def __call__(self, x):
                return (x - x.mean(0)) / jnp.sqrt(x.var(0) + 1e-5)

        conv = noise is not None and self.noises[noise]
        momentum = self.momentum if momentum is None else momentum
        width = 16 if conv else 32

        class Net(nnx.Module):
            def __init__(self, rngs):
                if conv:
                    self.fc1 = nnx.Conv(4, 16, kernel_size=(3,), padding="SAME", rngs=rngs)
                    self.fc2 = nnx.Conv(16, 16, kernel_size=(3,), padding="SAME", rngs=rngs)
                else:
                    self.fc1 = nnx.Linear(12, 32, rngs=rngs)
                    self.fc2 = nnx.Linear(32, 32, rngs=rngs)
                self.noise = {"dropout": lambda: nnx.Dropout(0.5, rngs=rngs),
                              "spatial_dropout": lambda: nnx.Dropout(0.5, broadcast_dims=(1,),
                                                                     rngs=rngs),
                              "gaussian_noise": lambda: GaussianNoise(rngs),
                              None: lambda: None}[noise]()
                self.bn = BatchStatNorm() if norm == "own" else nnx.BatchNorm(
                    width, momentum=momentum, rngs=rngs)
                self.fc3 = nnx.Linear(width, 3, rngs=rngs)

            def __call__(self, x):
                x = nnx.relu(self.fc1(x))
                x = x if self.noise is None else self.noise(x)
                x = self.fc2(x)
                # 'batch_stats': batch statistics always, written where the layer is called
                x = self.bn(x, use_running_average=False) if norm == "batch_stats" else self.bn(x)
                x = nnx.relu(x)
                return self.fc3(x.mean(axis=1) if conv else x)

        model = Net(nnx.Rngs(seed, noise=seed + 1))
        model.eval()
        return model

    def predict(self, model, x):
        model.eval()
        return np.asarray(model(x))

    def train_passes(self, model, x, steps, batch=64, *, noise=True, mode="train"):
        if mode == "train":
            model.train()
        if not noise and model.noise is not None:
            model.noise.eval()
        for xb in batches(x, batch, steps):
            _flax_step()(model, xb)
        model.eval()

    def freeze_batchnorm(self, model):
        model.train()
        model.bn.use_running_average = True

    def scale_before_batchnorm(self, model, factor):
        model.fc2.kernel[...] = model.fc2.kernel[...] * factor

    def bn(self, model):
        return model.bn

    def bn_name(self, model):
        return "bn"


_STEP = []


def _flax_step():
    """A training step's forward pass, compiled once (``nnx.jit``)."""
    if not _STEP:
        from flax import nnx

        _STEP.append(nnx.jit(lambda model, x: model(x)))
    return _STEP[0]


KITS = {kit.name: kit for kit in (EngineKit(), TorchKit(), KerasKit(), FlaxKit())}
