"""varshift: measure, explain and fix the variance shift between Dropout and
BatchNorm (Li, Chen, Hu & Yang, CVPR 2019), on a small NumPy/Numba engine.

Modules
-------
nn          layers, containers, losses, mode switches
optim       SGD and Adam
datasets    MNIST from local IDX files
kernels     Numba hot loops with NumPy reference implementations
"""

import os

# OpenBLAS workers spin for ~0.1 s after each GEMM and take the core that the next
# Numba kernel needs; a short spin made a training step ~15% faster on 2 cores.
# OpenBLAS reads this once, when NumPy is first imported: it takes effect only when
# varshift is imported before NumPy (or when the user exports it). A user's own
# setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import datasets, nn, optim  # noqa: E402
from .gradcheck import gradcheck  # noqa: E402
from .io import load, save  # noqa: E402
from .training import History, evaluate, fit  # noqa: E402

__version__ = "0.1.0"

__all__ = ["nn", "optim", "datasets", "fit", "evaluate", "History", "gradcheck", "save",
           "load", "__version__"]
