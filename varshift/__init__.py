"""varshift: measure, explain and fix the variance shift between Dropout and
BatchNorm (Li, Chen, Hu & Yang, CVPR 2019), on a small NumPy/Numba engine.

Modules
-------
nn          layers, containers, losses, mode switches
optim       SGD and Adam
datasets    MNIST from local IDX files
kernels     Numba hot loops with NumPy reference implementations
theory      Li et al.'s closed forms and a Monte Carlo check
plots       paper-style plots (each takes ax=None and returns the Axes)
reproduce   ``varshift reproduce``: the paper's figures and claims at small scale
cases       posted questions answered with measurements (``varshift case NAME``)
distributed ``all_merge``: one report from torch.distributed ranks' shards (imports torch)

(import these five explicitly, e.g. ``from varshift import cases``: they are not
loaded by ``import varshift``. ``measure``, ``diagnose`` and ``recalibrate`` also
take any ``torch.nn.Module`` or Keras 3 model; torch or keras is imported only then.)
"""

from . import datasets, nn, optim
from ._process import ModelInUseError
from ._safe_read import ModelFileError
from ._validate import NonFiniteError
from .diagnosis import diagnose
from .findings import Finding
from .gradient_check import gradcheck
from .inspection import Inspection, inspect
from .io import load, save
from .measurement import Report, measure
from .recalibration import Recalibration, recalibrate
from .training import History, evaluate, fit

__version__ = "0.1.0"

__all__ = ["nn", "optim", "datasets", "fit", "evaluate", "History", "gradcheck", "save",
           "load", "measure", "Report", "recalibrate", "Recalibration", "diagnose", "Finding",
           "NonFiniteError", "ModelInUseError", "ModelFileError", "inspect", "Inspection",
           "__version__"]
