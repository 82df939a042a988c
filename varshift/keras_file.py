"""Reading a saved Keras model without Keras: the layer tree of its config, with the
BatchNormalization variables and the optimizer's step count from its weights.

Two layouts are read, with :mod:`zipfile`, :mod:`json` and ``h5py`` only (nothing in
the file is executed: no pickles, no Lambda code):

- Keras 3 ``.keras``: a zip of ``config.json`` (the serialized model), ``metadata.json``
  (``keras_version``) and ``model.weights.h5``. In the HDF5 file each layer's variables
  are the datasets ``vars/0``, ``vars/1``, ... of a group whose *path* is generated
  from class names (``layers/batch_normalization_1/vars``: the n-th layer of a class
  inside its parent, counted from 0 without suffix, Sequential's InputLayer not
  counted; nested models nest: ``layers/sequential/layers/dense/vars``) and whose
  ``vars`` group carries the layer's real name as the attribute ``name`` (recent
  Keras 3). Files from Keras 2.13 use ``_layer_checkpoint_dependencies`` instead of
  ``layers``. The optimizer's variables are ``optimizer/vars/0..``, the first being
  the integer step count ``iterations``. A BatchNormalization's variables come in the
  order ``gamma`` (if ``scale``), ``beta`` (if ``center``), ``moving_mean``,
  ``moving_variance`` (then ``moving_stddev``, ``renorm_mean``, ``renorm_stddev``
  with ``renorm``).
- Legacy HDF5 ``.h5`` (``model.save("x.h5")``, Keras 2 and 3): the attribute
  ``model_config`` holds the config JSON; the group ``model_weights`` has one group per
  top-level layer, named as the layer, whose attribute ``weight_names`` lists its
  datasets (``dense/kernel``, ``batch_normalization/moving_mean:0`` in Keras 2); a
  nested model's group lists the variables of all its layers, each named
  ``.../LAYER/VARIABLE``; lists over 64 KB are split into ``weight_names0``,
  ``weight_names1``, ... ``optimizer_weights`` lists the optimizer's, including
  ``iteration`` (``iter`` or ``iterations`` in Keras 2).

The Keras 3 ``.npz`` weights variant (``model.weights.npz``) stores pickled Python
objects, so it is refused rather than unpickled.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

__all__ = ["KerasLayer", "KerasFile", "ModelFileError", "read_keras_file"]

#: Container classes whose config lists their layers.
SEQUENTIAL = {"Sequential"}
FUNCTIONAL = {"Functional", "Model"}
#: Class names of BatchNormalization layers (Keras 3, Keras 2 and its V1/V2 aliases).
BATCHNORM = {"BatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2",
             "SyncBatchNormalization"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ITERATION_NAMES = ("iteration", "iterations", "iter")


class ModelFileError(ValueError):
    """A file that is not a readable Keras model (the message names the file)."""


@dataclass
class KerasLayer:
    """One layer of the config tree.

    Attributes
    ----------
    name : str
        The layer's name.
    path : str
        Names from the top model down, joined with '/' ('' for the top model).
    class_name : str
    config : dict
        The layer's own config (``momentum``, ``rate``, ...).
    trainable : bool
        The config's ``trainable`` flag of this layer alone.
    inbound : list of str
        Names of the sibling layers whose outputs it consumes (functional parents).
    children : list of KerasLayer
        Layers of a Sequential or functional model, in config order.
    inputs, outputs : list of str
        A functional model's input and output layer names.
    weights : dict of str to ndarray
        Variables by name, for BatchNormalization layers (``moving_mean``, shape (C,), ...).
    """

    name: str
    path: str
    class_name: str
    config: dict
    trainable: bool = True
    inbound: list = field(default_factory=list)
    children: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    weights: dict = field(default_factory=dict)

    @property
    def is_container(self) -> bool:
        return self.class_name in SEQUENTIAL or (self.class_name in FUNCTIONAL
                                                 and "layers" in self.config)

    @property
    def is_batchnorm(self) -> bool:
        return self.class_name in BATCHNORM

    def walk(self):
        """Yield this layer and every nested one, depth first in config order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def saved_children(self):
        """The children Keras saves weights for (Sequential omits its InputLayer)."""
        if self.class_name in SEQUENTIAL:
            return [c for c in self.children if c.class_name != "InputLayer"]
        return self.children

    def batchnorm_variables(self) -> list:
        """Names of a BatchNormalization's variables in the order Keras creates them."""
        cfg = self.config
        names = (["gamma"] * bool(cfg.get("scale", True)) + ["beta"] * bool(cfg.get("center", True))
                 + ["moving_mean", "moving_variance"])
        if cfg.get("renorm"):
            names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
        return names


@dataclass
class KerasFile:
    """What :func:`read_keras_file` found.

    Attributes
    ----------
    path : str
    format : {'keras', 'h5'}
        Keras 3 zip archive or legacy HDF5.
    keras_version : str or None
    model : KerasLayer
        The top model.
    optimizer_iterations : int or None
        The optimizer's step count, if the file holds the optimizer's state.
    """

    path: str
    format: str
    keras_version: str | None
    model: KerasLayer
    optimizer_iterations: int | None


def _h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError("reading Keras model files needs h5py: "
                          "pip install 'varshift[keras]'") from err
    return h5py


def read_keras_file(path) -> KerasFile:
    """Read a Keras 3 ``.keras`` archive or a legacy HDF5 ``.h5`` model.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    KerasFile

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ModelFileError
        (a ValueError) If the file is not a Keras model, or its config and weights
        do not fit together; the message names the file and what is wrong.
    ImportError
        If h5py is not installed.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path!r} is a directory, not a .keras or .h5 model file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise ModelFileError(f"{path!r}: cannot be read ({err.strerror})") from err
    if zipfile.is_zipfile(path):
        return _read_archive(path)
    if head == _HDF5_SIGNATURE:
        return _read_legacy_h5(path)
    if head.startswith(b"PK"):
        raise ModelFileError(f"{path!r}: damaged or truncated zip archive (no central "
                             f"directory)")
    raise ModelFileError(f"{path!r} is neither a Keras .keras archive (zip) nor an HDF5 "
                         f".h5 model (it starts with {head!r})")


def _read_archive(path) -> KerasFile:
    try:
        with zipfile.ZipFile(path) as zf:
            members = set(zf.namelist())
            if "config.json" not in members:
                if "__varshift__.npy" in members:
                    raise ModelFileError(
                        f"{path!r} is a varshift model (varshift.save), not a Keras file: "
                        f"use 'varshift measure/diagnose' on it")
                raise ModelFileError(f"{path!r} is a zip archive without config.json, not a "
                                     f"Keras .keras file (members: {sorted(members)[:10]})")
            config = _json(zf.read("config.json"), path, "config.json")
            metadata = (_json(zf.read("metadata.json"), path, "metadata.json")
                        if "metadata.json" in members else {})
            model = _parse_tree(config, path)
            if "model.weights.h5" in members:
                with zf.open("model.weights.h5") as raw:
                    iterations = _attach_archive_weights(model, raw, path)
            elif "model.weights.npz" in members:
                raise ModelFileError(
                    f"{path!r} stores its weights as model.weights.npz, which holds pickled "
                    f"Python objects; varshift does not unpickle files. Save the model again "
                    f"with model.save('model.keras') (HDF5 weights)")
            else:
                raise ModelFileError(f"{path!r} has no model.weights.h5 (members: "
                                     f"{sorted(members)})")
    except zipfile.BadZipFile as err:
        raise ModelFileError(f"{path!r}: damaged zip archive ({err})") from err
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    return KerasFile(path, "keras", version, model, iterations)


def _json(raw, path, what):
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path!r}: {what} is not valid JSON ({err})") from err


def _history_names(obj) -> list:
    """Layer names referenced by a piece of functional config: ``keras_history``
    entries (Keras 3) and ``[name, node_index, tensor_index, ...]`` lists (Keras 2)."""
    if isinstance(obj, dict):
        if "keras_history" in obj:
            return [obj["keras_history"][0]]
        return [n for v in obj.values() for n in _history_names(v)]
    if isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
            return [obj[0]]
        return [n for v in obj for n in _history_names(v)]
    return []


def _parse_tree(entry, path) -> KerasLayer:
    try:
        return _parse(entry, None)
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        raise ModelFileError(f"{path!r}: unexpected model config structure "
                             f"({type(err).__name__}: {err})") from err


def _parse(entry, parent) -> KerasLayer:
    """The layer tree of a config entry; ``parent`` is the parent's path, None for the
    top model (whose path is '')."""
    cfg = entry.get("config") or {}
    name = cfg.get("name") or entry.get("name") or entry["class_name"]
    path = "" if parent is None else f"{parent}/{name}" if parent else name
    layer = KerasLayer(name=name, path=path, class_name=entry["class_name"], config=cfg,
                       trainable=bool(cfg.get("trainable", True)),
                       inbound=list(dict.fromkeys(_history_names(entry.get("inbound_nodes", [])))))
    if layer.is_container:
        layer.children = [_parse(child, path) for child in cfg["layers"]]
        layer.inputs = _history_names(cfg.get("input_layers", []))
        layer.outputs = _history_names(cfg.get("output_layers", []))
    return layer


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _snake_case(name) -> str:
    """Keras' ``naming.to_snake_case``, which names the weight groups."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _has_batchnorm(layer) -> bool:
    return any(sub.is_batchnorm for sub in layer.walk())


def _attach_archive_weights(model, raw, path):
    """Fill the BatchNormalization weights of ``model`` from a ``model.weights.h5``
    file object; returns the optimizer's step count (or None)."""
    h5py = _h5py()
    try:
        h5 = h5py.File(raw, "r")
    except OSError as err:
        raise ModelFileError(f"{path!r}: model.weights.h5 is not a readable HDF5 file "
                             f"({err})") from err
    with h5:
        _attach_group(model, h5, path, h5py)
        step = h5.get("optimizer/vars/0")
        return _step_count(step, h5py)


def _attach_group(layer, group, path, h5py):
    if layer.is_batchnorm:
        variables = group.get("vars")
        keys = sorted(variables.keys(), key=int) if variables is not None else []
        names = layer.batchnorm_variables()
        if len(keys) != len(names):
            raise ModelFileError(
                f"{path!r}: BatchNormalization {layer.path!r} has {len(keys)} variables in "
                f"model.weights.h5 ({group.name}), its config implies {len(names)} ({names})")
        layer.weights = {n: np.asarray(variables[k][()]) for n, k in zip(names, keys)}
    if not layer.is_container or not _has_batchnorm(layer):
        return
    key = next((k for k in ("layers", "_layer_checkpoint_dependencies") if k in group), None)
    if key is None:
        raise ModelFileError(f"{path!r}: model.weights.h5 has no layer groups under "
                             f"{group.name!r} for the model {layer.name!r}")
    nested = group[key]
    by_name = {_text(g["vars"].attrs["name"]): g for g in nested.values()
               if isinstance(g, h5py.Group) and "vars" in g and "name" in g["vars"].attrs}
    counts = {}
    for child in layer.saved_children():
        generated = _snake_case(child.class_name)
        if generated in counts:
            counts[generated] += 1
            generated = f"{generated}_{counts[generated]}"
        else:
            counts[generated] = 0
        sub = by_name.get(child.name, nested.get(generated))
        if sub is None:
            if _has_batchnorm(child):
                raise ModelFileError(f"{path!r}: no weights for layer {child.path!r} in "
                                     f"model.weights.h5 (looked for {nested.name}/{generated})")
            continue
        _attach_group(child, sub, path, h5py)


def _step_count(dataset, h5py):
    """The integer scalar in ``dataset`` (an optimizer's iterations), else None."""
    if (isinstance(dataset, h5py.Dataset) and dataset.shape == ()
            and np.issubdtype(dataset.dtype, np.integer)):
        return int(dataset[()])
    return None


def _attr_names(group, name) -> list:
    """A list-of-strings attribute, also when Keras split it into ``name0``, ``name1``, ...
    (attributes larger than HDF5's 64 KB object header)."""
    if name in group.attrs:
        return [_text(v) for v in group.attrs[name]]
    chunks = []
    while f"{name}{len(chunks)}" in group.attrs:
        chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return [_text(v) for chunk in chunks for v in chunk]


def _read_legacy_h5(path) -> KerasFile:
    h5py = _h5py()
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise ModelFileError(f"{path!r}: not a readable HDF5 file ({err})") from err
    with h5:
        if "model_config" not in h5.attrs:
            raise ModelFileError(
                f"{path!r}: HDF5 file without a model config (attribute 'model_config'); "
                f"weights alone (save_weights) do not say which layer is which: save the "
                f"whole model (model.save)")
        model = _parse_tree(_json(_text(h5.attrs["model_config"]), path,
                                  "the model_config attribute"), path)
        weights = h5.get("model_weights")
        if not isinstance(weights, h5py.Group):
            raise ModelFileError(f"{path!r}: HDF5 model without a 'model_weights' group")
        for child in model.saved_children() if model.is_container else [model]:
            if _has_batchnorm(child):
                _attach_legacy(child, weights, path)
        iterations = None
        optimizer = h5.get("optimizer_weights")
        if isinstance(optimizer, h5py.Group):
            for name in _attr_names(optimizer, "weight_names"):
                if name.split("/")[-1].split(":")[0] in _ITERATION_NAMES:
                    iterations = _step_count(optimizer.get(name), h5py)
        version = h5.attrs.get("keras_version")
    return KerasFile(path, "h5", None if version is None else _text(version), model, iterations)


def _attach_legacy(top_layer, weights, path):
    """Fill the BatchNormalization weights under one top-level layer's group, whose
    ``weight_names`` end in ``LAYER/VARIABLE`` (``:0`` suffixes in Keras 2)."""
    group = weights.get(top_layer.name)
    if group is None:
        raise ModelFileError(f"{path!r}: no group 'model_weights/{top_layer.name}' for the "
                             f"layer {top_layer.path!r}")
    found = {}
    for name in _attr_names(group, "weight_names"):
        parts = name.split("/")
        owner = parts[-2] if len(parts) > 1 else top_layer.name
        found.setdefault(owner, {})[parts[-1].split(":")[0]] = name
    for bn in (sub for sub in top_layer.walk() if sub.is_batchnorm):
        names = bn.batchnorm_variables()
        stored = found.get(bn.name, {})
        missing = [n for n in names if n not in stored]
        if missing:
            raise ModelFileError(f"{path!r}: BatchNormalization {bn.path!r} lacks {missing} "
                                 f"in model_weights/{top_layer.name} (found {sorted(stored)})")
        bn.weights = {n: np.asarray(group[stored[n]][()]) for n in names}
