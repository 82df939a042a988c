"""Saving and loading whole models (architecture, parameters, buffers, random
streams) as one ``.npz`` file."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from .nn.layer import Layer, layer_from_config, layer_to_config

__all__ = ["save", "load"]

_FORMAT = "varshift-model"
_VERSION = 1
_META = "__varshift__"


def save(model: Layer, path) -> None:
    """Write ``model`` to ``path`` (an ``.npz`` file; the suffix is not added).

    Parameters
    ----------
    model : varshift.nn.Layer
    path : str or os.PathLike

    Notes
    -----
    The file holds one array per state-dict key plus a JSON entry ``__varshift__``
    with the format version, the architecture (every layer's class and constructor
    arguments), the dtype, the modes and the random streams' states, so
    :func:`load` returns an identical model.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"save: expected a varshift Layer, got {type(model).__name__}")
    meta = {
        "format": _FORMAT,
        "version": _VERSION,
        "architecture": layer_to_config(model),
        "dtype": model.dtype.name,
        "training": {path: layer.training for path, layer in model.walk()},
        "rng": model.rng_state(),
    }
    arrays = model.state_dict()
    if _META in arrays:  # pragma: no cover - impossible with varshift's key names
        raise ValueError(f"save: state key {_META!r} is reserved")
    with open(os.fspath(path), "wb") as f:
        np.savez(f, **arrays, **{_META: np.array(json.dumps(meta))})


def load(path) -> Layer:
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    varshift.nn.Layer

    Raises
    ------
    ValueError
        If the file is not a varshift model (a foreign or truncated file, or one
        from a newer format version).
    """
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array (.npy), not an .npz archive")
        with data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise ValueError(f"load: cannot read {path!r} as a varshift model ({err}); "
                         f"the file is truncated or not a varshift .npz file") from err
    if _META not in arrays:
        raise ValueError(f"load: {path!r} is not a varshift model (no {_META!r} entry)")
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except json.JSONDecodeError as err:
        raise ValueError(f"load: {path!r} has a corrupt {_META!r} entry ({err})") from err
    if meta.get("format") != _FORMAT or not isinstance(meta.get("version"), int):
        raise ValueError(f"load: {path!r} is not a varshift model file")
    if meta["version"] > _VERSION:
        raise ValueError(f"load: {path!r} has format version {meta['version']}; this "
                         f"varshift reads up to {_VERSION}, upgrade varshift")
    model = layer_from_config(meta["architecture"]).astype(meta["dtype"])
    model.load_state_dict(arrays)
    model.set_rng_state(meta["rng"])
    layers = dict(model.walk())
    for name, training in meta["training"].items():
        layers[name].training = training
    return model
