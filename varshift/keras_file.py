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

A wrapper's layers (TimeDistributed, Bidirectional: the config's ``layer`` and
``backward_layer``) are its children in the layer tree; Keras 3 saves them in the
wrapper's group under its attributes (``layer``, ``forward_layer``, ``backward_layer``),
a legacy file under the wrapper's group (``td/batch_normalization/moving_mean``).

Weights that no layer of the config accounts for (a subclassed model or layer, whose
sub-layers are Python attributes and not config entries, or a damaged config) are
listed as :class:`UnplacedWeights`: in ``model.weights.h5`` every group with a ``vars``
group outside the groups placed on the config's layers, those below a Keras layer (an
RNN's ``cell``, MultiHeadAttention's projections) counting as that layer's, the user's
own layers' not (at most ``MAX_WEIGHT_GROUPS`` groups visited); in a legacy file the
groups of ``model_weights`` named after no top-level layer, and BatchNorm variables
(``moving_mean``, ``moving_variance``) that no BatchNormalization of the config took.

The Keras 3 ``.npz`` weights variant (``model.weights.npz``) stores pickled Python
objects, so it is refused rather than unpickled.

Files are treated as hostile: only regular files are read, zip members and JSON within
the caps of :mod:`varshift._safe_read` and :mod:`varshift._json`, every config setting
that is used is type-checked, and libhdf5 runs in a child process (:class:`_Hdf5`) that
follows hard links only, refuses external storage and virtual datasets, checks each
dataset's dtype and shape and each attribute's type and declared size before reading it,
and is killed after ``HDF5_TIME_LIMIT`` seconds. Every problem is a
:class:`ModelFileError` naming the file and the entry.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ._json import loads
from ._safe_read import (
    MAX_INFLATED_BYTES,
    MAX_TEXT_BYTES,
    ModelFileError,
    member_info,
    member_window,
    open_regular,
    read_member,
    zip_archive,
)
from ._validate import shown

__all__ = ["KerasLayer", "KerasFile", "UnplacedWeights", "ModelFileError", "read_keras_file"]

#: Container classes whose config lists their layers.
SEQUENTIAL = {"Sequential"}
FUNCTIONAL = {"Functional", "Model"}
#: Class names of BatchNormalization layers (Keras 3, Keras 2 and its V1/V2 aliases).
BATCHNORM = {"BatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2",
             "SyncBatchNormalization"}
#: Config keys under which a wrapper (TimeDistributed, Bidirectional) holds its layers.
WRAPPED_KEYS = ("layer", "backward_layer")
#: Weight groups visited at most when looking for weights the config does not place.
MAX_WEIGHT_GROUPS = 10_000
#: Variables of one unplaced weight group that are described at most.
_MAX_VARIABLES_SHOWN = 16
#: Layer names of normalisations whose two 1-D variables are not BatchNorm statistics.
_OTHER_NORM = re.compile(r"(layer|group|instance|rms|unit|spectral)_?norm", re.I)
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ITERATION_NAMES = ("iteration", "iterations", "iter")
#: Seconds the HDF5 part of one file may take, the child process's start included.
HDF5_TIME_LIMIT = 60.0
#: Bytes the HDF5 child may allocate beyond what it holds after starting (plus the
#: HDF5 file itself when it comes from a deflated archive member).
HDF5_MEMORY_LIMIT = 2**30
#: Values in one BatchNormalization variable (its channels) read at most.
MAX_CHANNELS = 2**24
#: Bytes of one reply line from the HDF5 child.
_MAX_REPLY_LINE = 2**16
_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_hdf5_server.py")


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
        The layer's own config (``momentum``, ``rate``, ...); a BatchNormalization's
        settings that varshift reads (``_BATCHNORM_SETTINGS``) are checked and filled in
        with Keras' defaults.
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
    where : str
        The file, config entry and layer, to start error messages about its settings.
    builtin : bool
        A Keras layer (its config's ``module`` is Keras', or absent), not the user's own
        class (a subclassed layer or model).
    calls : int
        Calls in training mode per forward pass of the top model: its calls in its
        parent (1 unless a functional parent's config shows several inbound nodes: a
        shared layer; see ``_training_calls``) times its parent's calls.
    wrapper_keys : list of str
        For a wrapper (TimeDistributed, Bidirectional, ...): the config key each child
        came from (``layer``, ``backward_layer``).
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
    where: str = ""
    builtin: bool = True
    calls: int = 1
    wrapper_keys: list = field(default_factory=list)

    @property
    def is_container(self) -> bool:
        return self.class_name in SEQUENTIAL or (self.class_name in FUNCTIONAL
                                                 and "layers" in self.config)

    @property
    def is_wrapper(self) -> bool:
        """A layer wrapping others (TimeDistributed, Bidirectional): its config holds
        them under ``WRAPPED_KEYS``."""
        return bool(self.wrapper_keys)

    @property
    def owns_groups_below(self) -> bool:
        """Whether every weight group below its own belongs to it (a Keras layer's
        sub-layers: an RNN's cell, MultiHeadAttention's projections); not for models
        (their layers are placed one by one) nor the user's classes (their sub-layers
        are not in the config)."""
        return self.builtin and not self.is_container and self.class_name not in (
            SEQUENTIAL | FUNCTIONAL)

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
    unplaced : list of UnplacedWeights
        Weight groups of the file that no layer of the config accounts for (a
        subclassed model or layer, a damaged config).
    unplaced_complete : bool
        False if the search for them stopped at ``MAX_WEIGHT_GROUPS`` groups.
    """

    path: str
    format: str
    keras_version: str | None
    model: KerasLayer
    optimizer_iterations: int | None
    unplaced: list = field(default_factory=list)
    unplaced_complete: bool = True


@dataclass
class UnplacedWeights:
    """One layer's variables in the weights file that the config does not place.

    Attributes
    ----------
    group : str
        Where they are: the HDF5 group (``/bn/vars`` in ``model.weights.h5``,
        ``/model_weights/dense`` in a legacy file).
    name : str or None
        The layer's name as the file states it (the ``name`` attribute of a ``vars``
        group, the layer part of a legacy variable name), if it does.
    variables : list of str
        Each variable: its shape (``.keras``) or its name (legacy ``.h5``).
    batchnorm_like : bool
        Whether they could be a BatchNormalization's: in a legacy file, variables named
        ``moving_mean`` and ``moving_variance``; in a ``.keras`` file (indices only),
        2, 3, 4 or 7 1-D float variables of one length, of a layer not named as
        another normalisation (LayerNormalization, GroupNormalization, ...).
    """

    group: str
    name: str | None
    variables: list
    batchnorm_like: bool

    def describe(self) -> str:
        """``'/bn/vars (batch_normalization: (4,), (4,), (4,), (4,))'``."""
        name = f"{self.name}: " if self.name else ""
        return f"{self.group} ({name}{', '.join(self.variables)})"


def _h5py():
    try:
        import h5py  # noqa: F401  (the child process reads the file; this checks it can)
    except ImportError as err:
        raise ImportError("reading Keras model files needs h5py: "
                          "pip install h5py") from err


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
    FileNotFoundError, PermissionError
        If the file cannot be opened.
    ModelFileError
        (a ValueError) If the file is not a regular file or not a Keras model, is
        damaged, is beyond the reading limits, or its config and weights do not fit
        together; the message names the file and the entry or setting.
    ImportError
        If h5py is not installed.

    Notes
    -----
    The file is read within bounds: JSON members of at most ``MAX_TEXT_BYTES``
    after decompression and ``MAX_JSON_DEPTH`` levels of nesting
    (:mod:`varshift._safe_read`, :mod:`varshift._json`), BatchNormalization variables
    of at most ``MAX_CHANNELS`` values, and the HDF5 part in a child process with
    ``HDF5_TIME_LIMIT`` seconds and ``HDF5_MEMORY_LIMIT`` bytes (see
    :class:`_Hdf5`).
    """
    path = os.fspath(path)
    with open_regular(path) as f:
        head = f.read(8)
        f.seek(0)
        if zipfile.is_zipfile(f):
            return _read_archive(f, path)
        size = os.fstat(f.fileno()).st_size
    if head == _HDF5_SIGNATURE:
        return _read_legacy_h5(path, size)
    if head.startswith(b"PK"):
        raise ModelFileError(f"{path!r}: damaged or truncated zip archive (no central "
                             f"directory)")
    raise ModelFileError(f"{path!r} is neither a Keras .keras archive (zip) nor an HDF5 "
                         f".h5 model (it starts with {head!r})")


def _read_archive(f, path) -> KerasFile:
    size = os.fstat(f.fileno()).st_size
    with zip_archive(f, path) as zf:
        members = set(zf.namelist())
        if "config.json" not in members:
            if "__varshift__.npy" in members:
                raise ModelFileError(
                    f"{path!r} is a varshift model (varshift.save), not a Keras file: "
                    f"use 'varshift measure/diagnose' on it")
            raise ModelFileError(f"{path!r} is a zip archive without config.json, not a "
                                 f"Keras .keras file (members: {sorted(members)[:10]})")
        config = _json_member(zf, "config.json", path, size)
        metadata = (_json_member(zf, "metadata.json", path, size)
                    if "metadata.json" in members else {})
        if not isinstance(metadata, dict):
            raise ModelFileError(f"{path!r}: metadata.json must hold a JSON object, got "
                                 f"{shown(metadata)}")
        version = checked_setting(metadata, "keras_version", "text", None,
                                  f"{path!r}: metadata.json")
        model = _parse_tree(config, path, "config.json", version)
        if "model.weights.h5" not in members:
            if "model.weights.npz" in members:
                raise ModelFileError(
                    f"{path!r} stores its weights as model.weights.npz, which holds pickled "
                    f"Python objects; varshift does not unpickle files. Save the model again "
                    f"with model.save('model.keras') (HDF5 weights)")
            raise ModelFileError(f"{path!r} has no model.weights.h5 (members: "
                                 f"{sorted(members)})")
        info = member_info(zf, "model.weights.h5", path, size)
        if info.compress_type == zipfile.ZIP_STORED:
            start, length = member_window(f, info, path)
            source = {"file": path, "start": start, "length": length}
        else:
            source = read_member(zf, info, path, MAX_INFLATED_BYTES)
    with _Hdf5(path, "model.weights.h5", source) as h5:
        placed = {}
        _attach_group(model, h5, [], placed)
        iterations = _step_count(h5, ["optimizer", "vars", "0"])
        unplaced, complete = _unplaced_groups(h5, placed)
    return KerasFile(path, "keras", version, model, iterations, unplaced, complete)


def _json_member(zf, name, path, size):
    info = member_info(zf, name, path, size)
    return _json(read_member(zf, info, path, MAX_TEXT_BYTES), path, name)


def _json(raw, path, what):
    try:
        return loads(raw, f"{path!r}: {what}")
    except ValueError as err:
        raise ModelFileError(str(err)) from err


#: How each setting that varshift reads is checked: (test, what the message expects).
_KINDS = {
    "text": (lambda v: isinstance(v, str), "a string"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "number": (lambda v: _is_number(v), "a finite number"),
    "nonnegative": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "axis": (lambda v: _is_int(v) or (isinstance(v, list) and bool(v) and all(map(_is_int, v))),
             "an integer or a list of integers"),
    "object": (lambda v: isinstance(v, dict), "a JSON object"),
    "list": (lambda v: isinstance(v, list), "a list"),
}
#: BatchNormalization settings varshift reads, their kinds and Keras' defaults.
_BATCHNORM_SETTINGS = {"axis": ("axis", -1), "momentum": ("number", 0.99),
                       "epsilon": ("nonnegative", 1e-3), "center": ("flag", True),
                       "scale": ("flag", True), "renorm": ("flag", False)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def checked_setting(mapping, key, kind, default, where):
    """``mapping[key]``, or ``default`` where it is absent or null, checked to be of
    ``kind`` (a key of ``_KINDS``); else ModelFileError naming ``where`` (the file and
    the layer) and the setting."""
    value = mapping.get(key)
    if value is None:
        return default
    test, expected = _KINDS[kind]
    if not test(value):
        raise ModelFileError(f"{where}: setting {key!r} must be {expected}, got {shown(value)}")
    return value


def _history_names(obj, where) -> list:
    """Layer names referenced by a piece of functional config: ``keras_history``
    entries (Keras 3) and ``[name, node_index, tensor_index, ...]`` lists (Keras 2)."""
    if isinstance(obj, dict):
        if "keras_history" in obj:
            history = obj["keras_history"]
            if not (isinstance(history, list) and history and isinstance(history[0], str)):
                raise ModelFileError(f"{where}: setting 'keras_history' must be a list "
                                     f"starting with a layer name, got {shown(history)}")
            return [history[0]]
        return [n for v in obj.values() for n in _history_names(v, where)]
    if isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and _is_int(obj[1]):
            return [obj[0]]
        return [n for v in obj for n in _history_names(v, where)]
    return []


def _parse_tree(entry, path, what, version=None) -> KerasLayer:
    """The layer tree of the config ``entry``, written by Keras ``version`` (None:
    unknown; Keras 2 honours a functional call's ``training=False`` in training, Keras 3
    passes the model's mode to every call)."""
    if not isinstance(entry, dict):
        raise ModelFileError(f"{path!r}: {what}: unexpected model config structure (a model "
                             f"must be a JSON object, got {shown(entry)})")
    keras2 = isinstance(version, str) and re.match(r"[12]\.", version) is not None
    return _parse(entry, None, f"{path!r}: {what}", keras2=keras2)


def _parse(entry, parent, where, calls=1, in_functional=False, keras2=False) -> KerasLayer:
    """The layer tree of a config entry; ``parent`` is the parent's path, None for the
    top model (whose path is ''); ``calls``: the parent's calls per forward pass;
    ``in_functional``: whether the parent is a functional model (whose config lists
    each layer's calls as its inbound nodes); ``keras2``: written by Keras 2 (see
    ``_training_calls``). Every setting read is checked (``checked_setting``), a
    BatchNormalization's filled with Keras' defaults."""
    if not isinstance(entry, dict):
        raise ModelFileError(f"{where}: unexpected model config structure (a layer of "
                             f"{parent or 'the model'!r} must be a JSON object, got "
                             f"{shown(entry)})")
    class_name = checked_setting(entry, "class_name", "text", None, where)
    if class_name is None:
        raise ModelFileError(f"{where}: unexpected model config structure (a layer of "
                             f"{parent or 'the model'!r} has no 'class_name')")
    cfg = checked_setting(entry, "config", "object", {}, where)
    name = checked_setting(cfg, "name", "text", None, where) or checked_setting(
        entry, "name", "text", None, where) or class_name
    path = "" if parent is None else f"{parent}/{name}" if parent else name
    here = f"{where}: layer {path or name!r}"
    if class_name in BATCHNORM:
        cfg = {**cfg, **{key: checked_setting(cfg, key, kind, default, here)
                         for key, (kind, default) in _BATCHNORM_SETTINGS.items()}}
    nodes = entry.get("inbound_nodes", [])
    layer = KerasLayer(name=name, path=path, class_name=class_name, config=cfg,
                       trainable=checked_setting(cfg, "trainable", "flag", True, here),
                       inbound=list(dict.fromkeys(_history_names(nodes, here))), where=here,
                       builtin=_is_builtin(entry),
                       calls=calls * (_training_calls(nodes, keras2) if in_functional else 1))
    if layer.is_container:
        layers = checked_setting(cfg, "layers", "list", [], here)
        functional = class_name not in SEQUENTIAL
        layer.children = [_parse(child, path, where, layer.calls, functional, keras2)
                          for child in layers]
        layer.inputs = _history_names(cfg.get("input_layers", []), here)
        layer.outputs = _history_names(cfg.get("output_layers", []), here)
    elif class_name not in BATCHNORM:
        for key in WRAPPED_KEYS:
            wrapped = cfg.get(key)
            if isinstance(wrapped, dict) and "class_name" in wrapped:
                layer.children.append(_parse(wrapped, path, where, layer.calls, keras2=keras2))
                layer.wrapper_keys.append(key)
    return layer


def _is_builtin(entry) -> bool:
    """Whether a config entry is one of Keras' own layers: its ``module`` (Keras 3 and
    2.13+ configs) is Keras' (``keras.layers``, ``keras.src...``, ``tf_keras...``), or
    absent (older configs, which say nothing)."""
    if "module" not in entry:
        return True
    module = entry["module"]
    return isinstance(module, str) and re.match(r"(tf_)?keras(\.|$)|tensorflow\.", module) is not None


def _training_calls(nodes, keras2) -> int:
    """How many times a layer of a functional config is called in training mode per
    forward pass: its inbound nodes (one per call; 1 where the config lists none). Keras
    2 honours a ``training=False`` given when the graph was built (``[[name, node,
    tensor, {"training": false}], ...]``), so those calls are not counted; Keras 3 (3.15
    at least) overrides it with the model's mode, so every call counts."""
    if not isinstance(nodes, list) or not nodes:
        return 1
    if not keras2:
        return len(nodes)

    def inference_only(node):
        if isinstance(node, dict):
            kwargs = node.get("kwargs")
            return isinstance(kwargs, dict) and kwargs.get("training") is False
        return isinstance(node, list) and bool(node) and all(
            isinstance(t, list) and len(t) > 3 and isinstance(t[3], dict)
            and t[3].get("training") is False for t in node)

    return sum(not inference_only(node) for node in nodes)


def _snake_case(name) -> str:
    """Keras' ``naming.to_snake_case``, which names the weight groups."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _has_batchnorm(layer) -> bool:
    return any(sub.is_batchnorm for sub in layer.walk())


class _Hdf5:
    """An HDF5 file read by a child process (``varshift/_hdf5_server.py``), so that
    libhdf5 crashing or looping on a damaged file costs the child, not the caller.

    The child gets ``HDF5_TIME_LIMIT`` seconds in all (its start included) and
    ``HDF5_MEMORY_LIMIT`` bytes of memory beyond its start (Linux); it follows hard
    links only and reads a dataset only if it is not virtual, has no external storage,
    and has the expected dtype and shape, a string attribute only if its HDF5 type and
    declared size fit. Every failure is a ModelFileError naming the file, ``what``
    (the HDF5 file's role) and the object.

    Parameters
    ----------
    path : str
        The model file (for messages).
    what : str
        'model.weights.h5' or 'HDF5 file'.
    source : dict or bytes
        ``{"file", "start", "length"}``: the HDF5 file is those bytes of a regular
        file; bytes: the HDF5 file itself (a deflated archive member).
    """

    def __init__(self, path, what, source):
        _h5py()
        self.where = f"{path!r}: {what}"  # messages start with it
        self._deadline = time.monotonic() + HDF5_TIME_LIMIT
        self._replies = queue.Queue()
        boot = ("import json, runpy, sys; sys.path[:] = json.loads(sys.argv[1]); "
                "runpy.run_path(sys.argv[2], run_name='__main__')")
        self._child = subprocess.Popen(
            [sys.executable, "-I", "-c", boot, json.dumps(sys.path), _SERVER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._receive, daemon=True).start()
        data = b"" if isinstance(source, dict) else source
        opening = source if isinstance(source, dict) else {"bytes": len(data)}
        try:
            self._ask({**opening, "memory": HDF5_MEMORY_LIMIT + len(data)}, data, "/")
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """End the child (it exits when its input closes; killed after a second)."""
        try:
            self._child.stdin.close()
            self._child.wait(timeout=1)
        except (OSError, subprocess.TimeoutExpired):
            self._child.kill()
            self._child.wait()

    def _receive(self):
        """Read the child's replies (a JSON line and its payload) into the queue; None at
        its end."""
        out = self._child.stdout
        try:
            while line := out.readline(_MAX_REPLY_LINE):
                header = json.loads(line)
                payload = out.read(header["nbytes"])
                if len(payload) != header["nbytes"]:
                    break
                self._replies.put((header, payload))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self._replies.put(None)

    def _ask(self, request, payload, obj):
        """Send one request; its reply's (header, payload), or ModelFileError naming
        ``obj`` on the child's refusal, crash or time-out."""
        try:
            self._child.stdin.write(json.dumps(request).encode() + b"\n" + payload)
            self._child.stdin.flush()
        except OSError:
            pass  # the child died: its reply is None
        try:
            reply = self._replies.get(timeout=max(0.0, self._deadline - time.monotonic()))
        except queue.Empty:
            self._child.kill()
            raise ModelFileError(
                f"{self.where}: reading {obj} took longer than {HDF5_TIME_LIMIT:g} s (the "
                f"limit); the HDF5 library is stuck on a damaged file") from None
        if reply is None:
            self._child.kill()
            code = self._child.wait()
            raise ModelFileError(
                f"{self.where}: reading {obj} made the HDF5 library fail (child exit status "
                f"{code}: a crash on a damaged file, or out of memory)")
        header, payload = reply
        if "error" in header:
            if header.get("import"):
                raise ImportError(f"reading Keras model files needs h5py: {header['error']}")
            raise ModelFileError(f"{self.where}: {obj}: {header['error']}")
        return header, payload

    def node(self, parts) -> dict:
        """What is at ``parts`` (a list of names): {'kind': None} if nothing; else 'kind'
        ('group', 'dataset' or 'other'), 'attrs' (attribute names), and 'members' (a
        group's) or 'shape' and 'dtype' (a dataset's)."""
        obj = "/" + "/".join(parts)
        return _loads_reply(self._ask({"op": "node", "path": parts}, b"", obj)[1], obj)

    def strings(self, parts, name) -> list:
        """A string attribute (scalar or 1-D) as a list of str."""
        obj = f"attribute {name!r} of /{'/'.join(parts)}"
        values = _loads_reply(self._ask({"op": "strings", "path": parts, "name": name}, b"",
                                        obj)[1], obj)
        if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
            raise ModelFileError(f"{self.where}: {obj}: not a list of strings")
        return values

    def array(self, parts, kind):
        """A dataset: ``kind`` 'vector' (a 1-D float array of 1 to ``MAX_CHANNELS``
        values, as float) or 'count' (an integer scalar, as int)."""
        obj = "/" + "/".join(parts)
        header, payload = self._ask({"op": "array", "path": parts, "kind": kind,
                                     "most": MAX_CHANNELS}, b"", obj)
        try:
            dtype = np.dtype(header["dtype"])
            values = np.frombuffer(payload, dtype).reshape(header["shape"]).copy()
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(f"{self.where}: {obj}: malformed reply ({err})") from err
        if kind == "count":
            if dtype.kind not in "iu" or values.shape != ():
                raise ModelFileError(f"{self.where}: {obj}: not an integer scalar")
            return int(values)
        if dtype.kind != "f" or values.ndim != 1 or not 1 <= values.size <= MAX_CHANNELS:
            raise ModelFileError(f"{self.where}: {obj}: not a 1-D float array")
        return values


def _loads_reply(payload, obj):
    try:
        return json.loads(payload)
    except ValueError as err:
        raise ModelFileError(f"{obj}: malformed reply from the HDF5 child ({err})") from err


def _attach_group(layer, h5, parts, placed):
    """Fill the BatchNormalization weights of ``layer`` and its sub-layers from the
    ``model.weights.h5`` group at ``parts``, and note in ``placed`` (tuple of parts ->
    whether the layer owns the groups below) every group that a layer of the config
    accounts for."""
    placed[tuple(parts)] = layer.owns_groups_below
    if layer.is_batchnorm:
        variables = h5.node(parts + ["vars"])
        keys = variables.get("members", []) if variables["kind"] == "group" else []
        if not all(k.isdigit() for k in keys):
            raise ModelFileError(f"{h5.where}: /{'/'.join(parts + ['vars'])} of "
                                 f"BatchNormalization {layer.path!r} has members {keys[:10]}; "
                                 f"expected 0, 1, ...")
        keys = sorted(keys, key=int)
        names = layer.batchnorm_variables()
        if len(keys) != len(names):
            raise ModelFileError(
                f"{h5.where}: BatchNormalization {layer.path!r} has {len(keys)} variables in "
                f"/{'/'.join(parts + ['vars'])}, its config implies {len(names)} ({names})")
        layer.weights = _batchnorm_weights(h5, layer, {n: parts + ["vars", k]
                                                       for n, k in zip(names, keys)})
    if layer.is_wrapper:
        # Keras 3 saves a wrapper's layers under its attributes: TimeDistributed's
        # 'layer', Bidirectional's 'forward_layer' and 'backward_layer'
        members = h5.node(parts).get("members", [])
        for key, child in zip(layer.wrapper_keys, layer.children):
            sub = next((m for m in (key, "forward_layer" if key == "layer" else None)
                        if m in members), None)
            if sub is None:
                if _has_batchnorm(child):
                    raise ModelFileError(f"{h5.where}: no weights for layer {child.path!r} "
                                         f"(looked for /{'/'.join(parts + [key])})")
                continue
            _attach_group(child, h5, parts + [sub], placed)
        return
    if not layer.is_container:
        return
    members = h5.node(parts).get("members", [])
    key = next((k for k in ("layers", "_layer_checkpoint_dependencies") if k in members), None)
    if key is None:
        if _has_batchnorm(layer):
            raise ModelFileError(f"{h5.where}: no layer groups under /{'/'.join(parts)} for "
                                 f"the model {layer.name!r}")
        return
    nested = parts + [key]
    groups = h5.node(nested).get("members", [])
    by_name = {}
    for member in groups:
        variables = h5.node(nested + [member, "vars"])
        if variables["kind"] == "group" and "name" in variables["attrs"]:
            for name in h5.strings(nested + [member, "vars"], "name")[:1]:
                by_name[name] = member
    counts = {}
    for child in layer.saved_children():
        generated = _snake_case(child.class_name)
        if generated in counts:
            counts[generated] += 1
            generated = f"{generated}_{counts[generated]}"
        else:
            counts[generated] = 0
        sub = by_name.get(child.name, generated if generated in groups else None)
        if sub is None:
            if _has_batchnorm(child):
                raise ModelFileError(f"{h5.where}: no weights for layer {child.path!r} "
                                     f"(looked for /{'/'.join(nested)}/{generated})")
            continue
        _attach_group(child, h5, nested + [sub], placed)


def _unplaced_groups(h5, placed):
    """The weight groups of a ``model.weights.h5`` that no layer accounts for (every
    group holding a ``vars`` group of variables, outside ``placed`` and the optimizer's),
    and whether all groups were visited (at most ``MAX_WEIGHT_GROUPS``)."""
    found, stack, visited = [], [[]], 0
    while stack:
        parts = stack.pop()
        if placed.get(tuple(parts)):
            continue  # a Keras layer's own sub-layers
        visited += 1
        if visited > MAX_WEIGHT_GROUPS:
            return found, False
        node = h5.node(parts)
        if node["kind"] != "group":
            continue
        members = node["members"]
        if "vars" in members and tuple(parts) not in placed:
            found += _variable_group(h5, parts)
        stack += [parts + [m] for m in reversed(members)
                  if m != "vars" and (parts or m != "optimizer")]
    return found, True


def _variable_group(h5, parts) -> list:
    """``[UnplacedWeights]`` for the ``vars`` group below ``parts``, or ``[]`` if it
    holds no variable with an axis (none at all, or only scalars: counters)."""
    where = parts + ["vars"]
    variables = h5.node(where)
    keys = variables.get("members", []) if variables["kind"] == "group" else []
    keys = sorted(keys, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    found = [h5.node(where + [k]) for k in keys[:_MAX_VARIABLES_SHOWN]]
    shapes = [tuple(v["shape"]) if v["kind"] == "dataset" else None for v in found]
    if not any(shape for shape in shapes):
        return []
    name = None
    if "name" in variables["attrs"]:
        name = (h5.strings(where, "name")[:1] or [None])[0]
    vectors = all(v["kind"] == "dataset" and len(v["shape"]) == 1
                  and np.dtype(v["dtype"]).kind == "f" for v in found)
    like = (vectors and len(keys) in (2, 3, 4, 7) and len(set(shapes)) == 1
            and not _OTHER_NORM.search(name or parts[-1]))
    shown = [str(shape) if shape is not None else "?" for shape in shapes]
    if len(keys) > len(found):
        shown.append(f"... ({len(keys)} variables)")
    return [UnplacedWeights("/" + "/".join(where), name, shown, like)]


def _batchnorm_weights(h5, layer, locations) -> dict:
    """The variables of BatchNormalization ``layer`` (name -> list of names in the HDF5
    file), each a 1-D float array, all of one length."""
    weights = {name: h5.array(parts, "vector") for name, parts in locations.items()}
    lengths = {name: value.size for name, value in weights.items()}
    if len(set(lengths.values())) > 1:
        raise ModelFileError(f"{h5.where}: the variables of BatchNormalization "
                             f"{layer.path!r} differ in length: {lengths}")
    return weights


def _step_count(h5, parts):
    """The optimizer's step count: the integer scalar dataset at ``parts``, else None;
    ModelFileError if it is negative."""
    found = h5.node(parts)
    if found["kind"] != "dataset" or found["shape"] != [] or np.dtype(found["dtype"]).kind not in "iu":
        return None
    steps = h5.array(parts, "count")
    if steps < 0:
        raise ModelFileError(f"{h5.where}: /{'/'.join(parts)}: the optimizer's step count is "
                             f"{steps}; it cannot be negative")
    return steps


def _attr_names(h5, parts, found, name) -> list:
    """A list-of-strings attribute, also when Keras split it into ``name0``, ``name1``, ...
    (attributes larger than HDF5's 64 KB object header)."""
    if name in found["attrs"]:
        return h5.strings(parts, name)
    chunks = []
    while f"{name}{len(chunks)}" in found["attrs"]:
        chunks.append(h5.strings(parts, f"{name}{len(chunks)}"))
    return [v for chunk in chunks for v in chunk]


def _split(name) -> list:
    """The HDF5 path ``name`` as a list of link names."""
    return [part for part in name.split("/") if part]


def _read_legacy_h5(path, size) -> KerasFile:
    with _Hdf5(path, "HDF5 file", {"file": path, "start": 0, "length": size}) as h5:
        root = h5.node([])
        if "model_config" not in root["attrs"]:
            raise ModelFileError(
                f"{path!r}: HDF5 file without a model config (attribute 'model_config'); "
                f"weights alone (save_weights) do not say which layer is which: save the "
                f"whole model (model.save)")
        config = h5.strings([], "model_config")
        if len(config) != 1:
            raise ModelFileError(f"{path!r}: the model_config attribute holds {len(config)} "
                                 f"strings; expected one")
        version = (h5.strings([], "keras_version")[:1] or [None])[0] \
            if "keras_version" in root["attrs"] else None
        model = _parse_tree(_json(config[0], path, "the model_config attribute"), path,
                            "the model_config attribute", version)
        if h5.node(["model_weights"])["kind"] != "group":
            raise ModelFileError(f"{path!r}: HDF5 model without a 'model_weights' group")
        used = set()
        for child in model.saved_children() if model.is_container else [model]:
            if _has_batchnorm(child):
                used |= _attach_legacy(child, h5, path)
        unplaced, complete = _unplaced_legacy(model, h5, used)
        iterations = None
        optimizer = h5.node(["optimizer_weights"])
        if optimizer["kind"] == "group":
            for name in _attr_names(h5, ["optimizer_weights"], optimizer, "weight_names"):
                if name.split("/")[-1].split(":")[0] in _ITERATION_NAMES:
                    iterations = _step_count(h5, ["optimizer_weights", *_split(name)])
    return KerasFile(path, "h5", version, model, iterations, unplaced, complete)


def _attach_legacy(top_layer, h5, path) -> set:
    """Fill the BatchNormalization weights under one top-level layer's group, whose
    ``weight_names`` end in ``LAYER/VARIABLE`` (``:0`` suffixes in Keras 2; a wrapped
    layer's LAYER may be its wrapper's name). Returns the (group, LAYER) pairs used."""
    parts = ["model_weights", top_layer.name]
    group = h5.node(parts)
    if group["kind"] != "group":
        raise ModelFileError(f"{path!r}: no group 'model_weights/{top_layer.name}' for the "
                             f"layer {top_layer.path!r}")
    found = {}
    for name in _attr_names(h5, parts, group, "weight_names"):
        names = _split(name)
        owner = names[-2] if len(names) > 1 else top_layer.name
        found.setdefault(owner, {})[names[-1].split(":")[0] if names else ""] = names
    wrappers = {id(child): parent for parent in top_layer.walk() if parent.is_wrapper
                for child in parent.children}
    used = set()
    for bn in (sub for sub in top_layer.walk() if sub.is_batchnorm):
        names = bn.batchnorm_variables()
        owner = bn.name if bn.name in found or id(bn) not in wrappers else wrappers[id(bn)].name
        stored = found.get(owner, {})
        missing = [n for n in names if n not in stored]
        if missing:
            raise ModelFileError(f"{path!r}: BatchNormalization {bn.path!r} lacks {missing} "
                                 f"in model_weights/{top_layer.name} (found {sorted(stored)})")
        bn.weights = _batchnorm_weights(h5, bn, {n: parts + stored[n] for n in names})
        used.add((top_layer.name, owner))
    return used


def _unplaced_legacy(model, h5, used):
    """The variables of a legacy file's ``model_weights`` that no layer accounts for:
    those of groups named after no top-level layer of the config, and BatchNorm-like
    ones (``moving_mean`` and ``moving_variance``) that no BatchNormalization of the
    config took (``used``: (group, layer) pairs); and whether all groups were visited."""
    top = {child.name for child in (model.saved_children() if model.is_container else [model])}
    top.add("top_level_model_weights")  # Keras 3: the top model's own variables
    members = h5.node(["model_weights"])["members"]
    found = []
    for member in members[:MAX_WEIGHT_GROUPS]:
        parts = ["model_weights", member]
        group = h5.node(parts)
        if group["kind"] != "group":
            continue
        owners = {}
        for name in _attr_names(h5, parts, group, "weight_names"):
            names = _split(name)
            owner = names[-2] if len(names) > 1 else member
            owners.setdefault(owner, []).append(names[-1].split(":")[0] if names else "")
        for owner, variables in owners.items():
            like = {"moving_mean", "moving_variance"} <= set(variables)
            if member not in top or (like and (member, owner) not in used):
                shown = variables[:_MAX_VARIABLES_SHOWN] + (
                    [f"... ({len(variables)} variables)"]
                    if len(variables) > _MAX_VARIABLES_SHOWN else [])
                found.append(UnplacedWeights(f"/model_weights/{member}", owner, shown, like))
    return found, len(members) <= MAX_WEIGHT_GROUPS
