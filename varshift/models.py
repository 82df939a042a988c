"""Ready-made small networks used by the demo, the benchmarks and the tests."""

from __future__ import annotations

from . import nn

__all__ = ["reference_convnet"]


def reference_convnet(dropout=0.3, seed=None, *, batchnorm="pytorch"):
    """The MNIST convnet of the engine's benchmark and of the first case study.

    Conv2D(1, 32, 5, stride 2, pad 2) - BatchNorm - LeakyReLU(0.2) -
    Conv2D(32, 64, 5, stride 2, pad 2) - BatchNorm - LeakyReLU(0.2) - Flatten -
    Dense(3136, 500) - Tanh - Dropout(dropout) - Dense(500, 10).

    Parameters
    ----------
    dropout : float, default 0.3
        Drop rate of the Dropout layer (0 keeps the layer, as an identity).
    seed : int, optional
        Seed of the weights and of the dropout stream.
    batchnorm : {'pytorch', 'keras', None}, default 'pytorch'
        BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5), with Keras' and
        TensorFlow's (``BatchNorm.keras``: momentum 0.99, i.e. 0.01 here, eps 1e-3),
        or no BatchNorm at all.

    Returns
    -------
    varshift.nn.Sequential
        Input (N, 1, 28, 28), output (N, 10) logits.
    """
    makers = {"pytorch": nn.BatchNorm, "keras": nn.BatchNorm.keras, None: None}
    if batchnorm not in makers:
        raise ValueError(f"reference_convnet: batchnorm must be 'pytorch', 'keras' or None, "
                         f"got {batchnorm!r}")

    def block(conv):
        norm = [makers[batchnorm](conv.out_channels)] if batchnorm else []
        return [conv, *norm, nn.LeakyReLU(0.2)]

    return nn.Sequential(
        *block(nn.Conv2D(1, 32, 5, stride=2, padding=2)),
        *block(nn.Conv2D(32, 64, 5, stride=2, padding=2)),
        nn.Flatten(), nn.Dense(3136, 500), nn.Tanh(), nn.Dropout(dropout), nn.Dense(500, 10),
        seed=seed,
    )
