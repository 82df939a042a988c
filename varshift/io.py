"""Saving and loading whole models (architecture, parameters, buffers, random
streams) as one ``.npz`` file."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

import numpy as np

from . import _validate
from ._files import atomic_write
from ._json import loads
from ._process import public
from ._safe_read import MAX_TEXT_BYTES, ModelFileError, read_arrays
from .nn.layer import Layer, _encode, layer_from_config, layer_to_config

__all__ = ["save", "load"]

_FORMAT = "varshift-model"
_VERSION = 1
_META = "__varshift__"


@public()
def save(model: Layer, path) -> None:
    """Write ``model`` to ``path`` (an ``.npz`` file; the suffix is not added).

    Parameters
    ----------
    model : varshift.nn.Layer
    path : str or os.PathLike

    Raises
    ------
    TypeError
        If ``model`` is not a varshift Layer, or holds a setting that cannot be saved
        (e.g. an attribute set to an object after construction); the message names
        the layer and the setting.
    OSError
        If the file cannot be written; the message names it.

    Notes
    -----
    The file holds one array per state-dict key plus a JSON entry ``__varshift__``
    with the format version, the architecture (every layer's class and constructor
    arguments), the dtype, the modes and the random streams' states, so
    :func:`load` returns an identical model.

    The file is written atomically: to a temporary file in the same folder, which then
    replaces ``path``. If anything fails, an existing file at ``path`` is unchanged.
    """
    _validate.model(model, "save")
    _validate.path(path, "path", "save")
    meta = {
        "format": _FORMAT,
        "version": _VERSION,
        "architecture": layer_to_config(model),
        "dtype": model.dtype.name,
        "training": {path: layer.training for path, layer in model.walk()},
        "rng": model.rng_state(),
    }
    text = _metadata_json(model, meta, path)
    arrays = model.state_dict()
    if _META in arrays:  # pragma: no cover - impossible with varshift's key names
        raise ValueError(f"save: state key {_META!r} is reserved")
    with atomic_write(path, "wb", "save") as f:
        np.savez(f, **arrays, **{_META: np.array(text)})


def _metadata_json(model, meta, path) -> str:
    """``meta`` as JSON, or a TypeError naming the layer and setting that is not
    JSON-serialisable."""
    try:
        return json.dumps(meta)
    except (TypeError, ValueError) as err:
        for name, layer in model.walk():
            settings = {k: v for k, v in layer.get_config().items() if not _holds_layers(v)}
            if getattr(layer, "rng", None) is not None:
                settings["rng (its random stream's state)"] = layer.rng.bit_generator.state
            for key, value in settings.items():
                try:
                    json.dumps(_encode(value))
                except (TypeError, ValueError):
                    raise TypeError(
                        f"save: cannot save {layer.describe() if name else repr(layer)}: its "
                        f"{key} is {_validate.shown(value)}, which a model file cannot hold; "
                        f"nothing was written to {os.fspath(path)!r}") from err
        raise TypeError(f"save: cannot save the model ({err}); nothing was written to "
                        f"{os.fspath(path)!r}") from err


def _holds_layers(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_holds_layers(v) for v in value)
    return isinstance(value, Layer)


@public(None)
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
    FileNotFoundError, PermissionError
        If the file cannot be opened.
    ModelFileError
        (a ValueError) If the file is not a regular file or not a varshift model (a
        foreign or truncated file, or one from a newer format version), an entry of it
        is corrupt, or it is beyond the reading limits; the message names the file and
        the entry.

    Notes
    -----
    Nothing is unpickled, and declared sizes are checked before anything is allocated
    (:func:`varshift._safe_read.read_arrays`: at most ``MAX_ARRAY_VALUES`` values per
    array, all of them in the file); the metadata is a JSON text of at most
    ``MAX_TEXT_BYTES`` nested at most ``MAX_JSON_DEPTH`` deep.
    """
    path = os.fspath(_validate.path(path, "path", "load"))
    try:
        arrays = read_arrays(path)
    except ModelFileError as err:
        raise ModelFileError(f"load: cannot read a varshift model: {err}; the file is "
                             f"truncated or not a varshift .npz file") from err
    if not isinstance(arrays, dict):
        raise ModelFileError(f"load: cannot read {path!r} as a varshift model: it holds a "
                             f"single array (.npy), not an .npz archive")
    if _META not in arrays:
        raise ModelFileError(f"load: {path!r} is not a varshift model (no {_META!r} entry)")
    text = arrays.pop(_META)
    if text.shape != () or text.dtype.kind != "U" or text.dtype.itemsize > 4 * MAX_TEXT_BYTES:
        raise ModelFileError(f"load: {path!r} has a corrupt {_META!r} entry (expected a JSON "
                             f"text, got an array of shape {text.shape} and dtype {text.dtype})")
    try:
        meta = loads(str(text), f"load: {path!r}: its {_META!r} entry")
    except ValueError as err:
        raise ModelFileError(str(err)) from err
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT \
            or not isinstance(meta.get("version"), int):
        raise ModelFileError(f"load: {path!r} is not a varshift model file")
    if meta["version"] > _VERSION:
        raise ModelFileError(f"load: {path!r} has format version {meta['version']}; this "
                             f"varshift reads up to {_VERSION}, upgrade varshift")
    with _entry(path, "architecture"):
        model = layer_from_config(meta["architecture"], max_values=_build_limit(arrays))
    with _entry(path, "dtype"):
        model.astype(meta["dtype"])
    with _entry(path, "arrays", "an array does not fit the model"):
        model.load_state_dict(arrays)
    with _entry(path, "rng"):
        model.set_rng_state(meta["rng"])
    with _entry(path, "training"):
        layers = dict(model.walk())
        for name, training in meta["training"].items():
            if not isinstance(training, bool):
                raise TypeError(f"layer {name!r}: expected true or false, got {training!r}")
            layers[name].training = training
    return model


def _build_limit(arrays) -> int:
    """Values the architecture may declare, for arrays of these sizes: twice theirs plus
    2**20, so that a missing or misshapen array is named by ``load_state_dict`` while a
    small file cannot make varshift draw gigabytes of initial weights."""
    return 2 * sum(int(a.size) for a in arrays.values()) + 2**20


@contextmanager
def _entry(path, entry, problem=None):
    """Turn any error while applying metadata ``entry`` into a ModelFileError naming the
    file and the entry."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            MemoryError) as err:
        detail = str(err) or type(err).__name__
        if isinstance(err, KeyError) and err.args:  # a missing key, or load_state_dict's message
            key = err.args[0]
            detail = key if isinstance(key, str) and " " in key else f"missing {key!r}"
        what = problem or f"its {entry!r} entry is corrupt"
        raise ModelFileError(f"load: {path!r} cannot be loaded: {what} ({detail})") from err
