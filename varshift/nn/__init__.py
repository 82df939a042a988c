"""varshift's engine: layers with hand-written forward and backward passes.

Shapes follow PyTorch: (N, C) for dense data, (N, C, L) for 1-D and (N, C, H, W)
for 2-D data. ``layer(x)`` computes the output, ``layer.backward(dout)`` returns the
input gradient and fills ``layer.grads``.
"""

from .activations import ELU, Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from .containers import Concat, Residual, Sequential
from .conv import Conv1D, Conv2D
from .dense import Dense
from .layer import Layer, modes, preserved, seeded
from .losses import CrossEntropyLoss, MSELoss
from .noise import Dropout, GaussianDropout, Uout
from .normalization import BatchNorm
from .pooling import AvgPool1D, AvgPool2D, Flatten, GlobalAvgPool, MaxPool1D, MaxPool2D

__all__ = [
    "Layer", "modes", "preserved", "seeded",
    "Dense", "Conv1D", "Conv2D", "BatchNorm",
    "Dropout", "Uout", "GaussianDropout",
    "ReLU", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Identity",
    "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool", "Flatten",
    "Sequential", "Residual", "Concat",
    "CrossEntropyLoss", "MSELoss",
]
