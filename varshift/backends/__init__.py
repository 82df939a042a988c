"""Backends: a model of any framework, seen as varshift needs it.

:func:`~varshift.measure`, :func:`~varshift.diagnose` and
:func:`~varshift.recalibrate` are written once, against a
:class:`~varshift.backends.session.Session`; what differs between frameworks is a
small :class:`~varshift.backends.adapter.Adapter`:

* :mod:`varshift.backends.numpy_engine`: models built from :mod:`varshift.nn`;
* :mod:`varshift.backends.torch`: any ``torch.nn.Module``;
* :mod:`varshift.backends.keras`: any Keras 3 model or layer, on any Keras backend;
* :mod:`varshift.backends.flax`: any Flax NNX module.

A framework's adapter is imported only when one of its models is passed (``import
varshift`` never imports torch, keras, jax or flax). The kinds of layer and the mode
each kind has in each pass are in :mod:`varshift.backends.modes`.
"""

from __future__ import annotations

import importlib
import sys

from .. import _validate
from .adapter import Adapter, BatchNormInfo, LayerInfo
from .modes import EVAL, NODROP, PASSES, TRAIN, Kind, Modes
from .session import Session, Statistics

__all__ = ["session_for", "Session", "Statistics", "Adapter", "LayerInfo", "BatchNormInfo",
           "Kind", "Modes", "PASSES", "EVAL", "TRAIN", "NODROP"]


def session_for(model, owner) -> Session:
    """A :class:`Session` over ``model``, or TypeError naming ``owner`` and the argument.

    A framework's model is recognised without importing the framework: if it is not
    imported, no model of it can exist. Keras is checked before torch, since on Keras'
    torch backend a Keras layer is also a ``torch.nn.Module``.
    """
    for recognises, module, adapter in _ADAPTERS:
        if recognises(model):
            return Session(getattr(importlib.import_module(module, __name__), adapter)(
                model, owner))
    raise TypeError(f"{owner}: model must be a varshift model (a varshift.nn Layer, e.g. "
                    f"nn.Sequential), a torch.nn.Module, a Keras 3 model or a Flax NNX "
                    f"module, got {_validate.shown(model)}")


def _is_engine(model) -> bool:
    from ..nn.layer import Layer

    return isinstance(model, Layer)


def _is_keras(model) -> bool:
    """Whether ``model`` is a Keras layer (a model is one), by the modules of its
    classes; TypeError for Keras 2 (``tf.keras`` before Keras 3)."""
    keras = sys.modules.get("keras")
    if keras is None or not _from_package(model, "keras"):
        return False
    if not hasattr(keras, "Layer") or not isinstance(model, keras.Layer):
        raise TypeError(f"a Keras model needs Keras 3 (found Keras "
                        f"{getattr(keras, '__version__', '?')}); got {_validate.shown(model)}")
    return True


def _is_torch(model) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _is_flax(model) -> bool:
    """Whether ``model`` is a Flax module: an NNX one, or a Linen one (which the Flax
    adapter refuses with a TypeError that says what to do)."""
    return "flax" in sys.modules and _from_package(model, "flax")


def _from_package(model, package) -> bool:
    return any(cls.__module__.split(".")[0] == package for cls in type(model).__mro__)


#: (recognises the model, adapter module, adapter class), tried in order.
_ADAPTERS = [(_is_engine, ".numpy_engine", "NumpyAdapter"),
             (_is_keras, ".keras", "KerasAdapter"),
             (_is_torch, ".torch", "TorchAdapter"),
             (_is_flax, ".flax", "FlaxAdapter")]
