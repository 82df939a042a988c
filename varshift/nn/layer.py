"""The :class:`Layer` base class shared by every layer and container.

A layer owns three dicts of arrays, keyed like PyTorch: ``params`` (trained),
``grads`` (filled by :meth:`Layer.backward`) and ``buffers`` (state that is not trained,
such as BatchNorm's running statistics). Subclasses implement the cs231n contract

* ``_forward(x) -> (out, cache)``: the output and whatever backward needs;
* ``_backward(dout, cache) -> (dx, grads)``: pure, given the cache (``dx`` may be
  None when ``self._input_grad`` is False, see :meth:`Layer.backward`);

and the base class adds input checks, dtype handling, modes, state dicts, configs for
saving, and the random streams of stochastic layers. Containers override
``forward``/``backward`` and expose their sub-layers through :meth:`Layer.children`.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from .._validate import seed as check_seed
from ..backends.modes import Kind
from ..kernels import threads

__all__ = ["Layer", "HookHandle", "modes", "preserved", "layer_to_config", "layer_from_config"]

_REGISTRY: dict[str, type] = {}
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Layer:
    """Base class of every layer and container.

    Attributes
    ----------
    training : bool
        Train mode (True, the default) or inference mode.
    params, grads, buffers : dict of str to ndarray
        Parameters, their gradients after :meth:`backward`, and non-trained state.
    name : str
        Path of the layer inside the outermost container ('' for a model root),
        used in error messages and reports.
    """

    #: What the layer is, for mode switches and reports
    #: (a :class:`~varshift.backends.modes.Kind`).
    kind = Kind.LAYER

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        try:
            cls.kind = Kind(cls.kind)
        except ValueError:
            raise ValueError(f"{cls.__name__}.kind must be one of "
                             f"{', '.join(repr(k.value) for k in Kind)}, got {cls.kind!r}"
                             ) from None
        if not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    def __init__(self):
        self.training = True
        self.params: dict[str, np.ndarray] = _Arrays()
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = _Arrays()
        self.name = ""
        self._dtype = np.dtype(np.float32)
        self._cache = None
        self._out_shape = None
        self._hooks: list = []
        self._input_grad = True  # whether the running backward needs dx (see backward)

    # ------------------------------------------------------------------ compute
    def forward(self, x):
        """Output of the layer for ``x`` (cast to the layer's dtype).

        Parameters
        ----------
        x : array_like of shape (N, ...)

        Returns
        -------
        out : ndarray of shape (N, ...)
        """
        x = self._prepare_input(x)
        out, self._cache = self._forward(x)
        self._out_shape = out.shape
        return out

    @threads.batched
    def __call__(self, x):
        out = self.forward(x)
        self._notify(x, out)
        return out

    def _notify(self, x, out):
        """Call the hooks with an input and its output."""
        for hook in self._hooks:
            hook(self, x, out)

    def add_hook(self, hook) -> "HookHandle":
        """Call ``hook(layer, x, out)`` after every call of this layer.

        Hooks observe; they must not modify ``x`` or ``out``. Containers call their
        children, so hooks on sub-layers fire during a model's forward pass.

        Returns
        -------
        HookHandle
            ``handle.remove()`` takes the hook off again.
        """
        self._hooks.append(hook)
        return HookHandle(self._hooks, hook)

    @threads.batched
    def backward(self, dout, input_grad=True):
        """Input gradient for the output gradient ``dout`` of the last forward.

        Fills (overwrites) ``self.grads``; each forward is followed by at most one
        backward.

        Parameters
        ----------
        dout : array_like, shape of the last output
        input_grad : bool, default True
            Compute the input gradient. Training needs only the parameter gradients:
            with False, layers skip the input gradient's work where it has its own
            (convolution, dense) and None is returned.

        Returns
        -------
        dx : ndarray, shape of the last input, or None
        """
        dout = self._prepare_dout(dout)
        self._input_grad = input_grad
        dx, grads = self._backward(dout, self._cache)
        for key, grad in grads.items():
            self.grads[key] = np.asarray(grad, dtype=self.params[key].dtype).reshape(
                self.params[key].shape
            )
        return dx if input_grad else None

    def _forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _backward(self, dout, cache):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ checks
    def describe(self) -> str:
        """The layer's path and repr, as used in error messages."""
        return f"layer {self.name!r} ({self!r})" if self.name else repr(self)

    def _prepare_input(self, x):
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(
                f"{self.describe()}: expected a numeric array, got dtype {x.dtype}"
            )
        if x.ndim and x.size == 0:
            expected, got = (("at least one sample", "an empty batch") if x.shape[0] == 0
                             else ("at least one value per sample", "an input with no values"))
            raise ValueError(f"{self.describe()}: expected {expected}, got {got} of shape "
                             f"{tuple(x.shape)}")
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        self._check_input(x)
        return x

    def _prepare_dout(self, dout):
        if self._out_shape is None:
            raise RuntimeError(f"{self.describe()}: backward called before forward")
        dout = np.asarray(dout, dtype=self.dtype)
        if dout.shape != self._out_shape:
            raise ValueError(
                f"{self.describe()}: expected an output gradient of shape "
                f"{self._out_shape}, got {dout.shape}"
            )
        return dout

    def _check_input(self, x):
        """Raise ValueError when ``x`` has the wrong shape (default: accept all)."""

    def _expect(self, x, ranks, channels=None):
        """Check that ``x.ndim`` is in ``ranks`` and ``x.shape[1] == channels``."""
        names = {2: "", 3: ", L", 4: ", H, W"}
        if x.ndim not in ranks or (channels is not None and x.shape[1] != channels):
            c = "C" if channels is None else str(channels)
            expected = " or ".join(f"(N, {c}{names[r]})" for r in ranks)
            raise ValueError(
                f"{self.describe()}: expected input of shape {expected}, "
                f"got {tuple(x.shape)}"
            )

    # ------------------------------------------------------------------ structure
    def children(self) -> dict[str, "Layer"]:
        """Direct sub-layers by name (empty for a leaf layer)."""
        return {}

    def walk(self, prefix: str = "") -> Iterator[tuple[str, "Layer"]]:
        """Yield ``(path, layer)`` for this layer and every sub-layer, depth first."""
        stack = [(prefix, self)]  # not recursive: nested generators cost per level
        while stack:
            path, layer = stack.pop()
            yield path, layer
            children = layer.children()
            if children:
                stack.extend((_join(path, name), child)
                             for name, child in reversed(children.items()))

    def leaves(self) -> Iterator[tuple[str, "Layer"]]:
        """Yield ``(path, layer)`` for every layer that is not a container."""
        return ((n, layer) for n, layer in self.walk() if not layer.children())

    def _assign_names(self, prefix: str = "") -> None:
        self.name = prefix
        for name, child in self.children().items():
            child._assign_names(_join(prefix, name))

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        """Yield ``(key, param, grad)`` with PyTorch keys; ``grad`` is None before
        the first backward."""
        for path, layer in self.walk():
            for key, value in layer.params.items():
                yield _join(path, key), value, layer.grads.get(key)

    def zero_grad(self) -> None:
        """Set every gradient to zero."""
        for _, layer in self.walk():
            for key, value in layer.params.items():
                grad = layer.grads.get(key)
                if grad is not None and grad.shape == value.shape and grad.dtype == value.dtype:
                    grad.fill(0)
                else:
                    layer.grads[key] = np.zeros_like(value)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "Layer":
        """Put this layer and every sub-layer in train (or inference) mode.

        Returns
        -------
        self
        """
        for _, layer in self.walk():
            layer.training = bool(mode)
        return self

    def eval(self) -> "Layer":
        """Put this layer and every sub-layer in inference mode; returns self."""
        return self.train(False)

    # ------------------------------------------------------------------ dtype
    @property
    def dtype(self) -> np.dtype:
        """Floating dtype the layer computes in (its parameters' dtype)."""
        return self._dtype

    def astype(self, dtype) -> "Layer":
        """Convert parameters, gradients and float buffers in place.

        Parameters
        ----------
        dtype : {np.float32, np.float64}

        Returns
        -------
        self
        """
        try:
            dtype = np.dtype(dtype)
        except TypeError as err:
            raise TypeError(f"astype: dtype must be float32 or float64, got {dtype!r} "
                            f"({err})") from None
        if dtype not in _FLOAT_DTYPES:
            raise ValueError(f"astype: expected float32 or float64, got {dtype}")
        for _, layer in self.walk():
            layer._dtype = dtype
            layer._cache, layer._out_shape = None, None
            for store in (layer.params, layer.grads, layer.buffers):
                for key, value in store.items():
                    if value.dtype.kind == "f":
                        store[key] = np.ascontiguousarray(value, dtype=dtype)
        return self

    # ------------------------------------------------------------------ state
    def _state_slots(self, params=True, buffers=True):
        """Map every state key to ``(store dict, key in it)``."""
        slots = {}
        stores = (("params", params), ("buffers", buffers))
        for path, layer in self.walk():
            for store in (getattr(layer, name) for name, wanted in stores if wanted):
                for key in store:
                    slots[_join(path, key)] = (store, key)
        return slots

    def state_dict(self, *, params=True, buffers=True) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed like PyTorch's ``state_dict``.

        Parameters
        ----------
        params, buffers : bool, default True
            Include the parameters, the buffers.

        Returns
        -------
        dict of str to ndarray
            E.g. ``'0.weight'``, ``'1.running_var'``, ``'2.body.0.bias'``.
        """
        return {k: np.array(store[key])
                for k, (store, key) in self._state_slots(params, buffers).items()}

    def load_state_dict(self, state, strict: bool = True) -> "Layer":
        """Copy parameters and buffers from ``state`` (arrays or PyTorch tensors).

        Everything is checked before anything is written, so a failed load leaves the
        model unchanged.

        Parameters
        ----------
        state : mapping of str to array_like
        strict : bool
            Require exactly the model's keys.

        Returns
        -------
        self

        Raises
        ------
        KeyError
            With ``strict``, for missing or unexpected keys.
        TypeError
            For a value that is not numeric.
        ValueError
            For a value of the wrong shape, or one the model's dtype cannot hold
            unchanged: a finite float that would become infinite (1e300 in a float32
            model), or a value for an integer buffer (``num_batches_tracked``) that is
            not a whole number in its range (NaN, inf, 2.5, 2**64); the message names
            the key and the value.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict: state must be a mapping of keys to arrays (a "
                            f"state_dict), got {type(state).__name__}")
        slots = self._state_slots()
        missing = sorted(set(slots) - set(state))
        unexpected = sorted(set(state) - set(slots))
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        staged = {}
        for key in slots.keys() & state.keys():
            store, name = slots[key]
            value = np.asarray(_to_numpy(state[key]))
            if value.shape != store[name].shape:
                raise ValueError(
                    f"load_state_dict: {key!r} expected shape {store[name].shape}, "
                    f"got {value.shape}"
                )
            if value.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {key!r} has non-numeric dtype {value.dtype}")
            staged[key] = _cast(value, store[name].dtype, key)
        for key, value in staged.items():
            store, name = slots[key]
            store[name][...] = value
        return self

    # ------------------------------------------------------------------ randomness
    def initialize(self, seed=None) -> "Layer":
        """Redraw every parameter and reseed every random stream from ``seed``.

        Each leaf gets its own stream spawned from ``np.random.SeedSequence(seed)``,
        so a model is reproducible from one integer.

        Returns
        -------
        self
        """
        seed = check_seed(seed, "seed", "initialize")
        leaves = [layer for _, layer in self.leaves()]
        streams = np.random.SeedSequence(seed).spawn(len(leaves))
        for layer, stream in zip(leaves, streams):
            layer._initialize(np.random.default_rng(stream))
        return self

    def _initialize(self, rng: np.random.Generator) -> None:
        """Draw parameters (or adopt ``rng`` as the noise stream) from ``rng``."""

    def rng_state(self) -> dict[str, dict]:
        """Bit-generator states of every stochastic layer, keyed by path."""
        return {
            path: layer.rng.bit_generator.state
            for path, layer in self.walk()
            if getattr(layer, "rng", None) is not None
        }

    def set_rng_state(self, states: dict[str, dict]) -> None:
        """Restore states returned by :meth:`rng_state`."""
        layers = dict(self.walk())
        for path, state in states.items():
            if getattr(layers.get(path), "rng", None) is None:
                raise ValueError(f"set_rng_state: the model has no stochastic layer {path!r}")
            layers[path].rng.bit_generator.state = state

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        """Constructor arguments, read back from same-named attributes."""
        config = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name != "self":
                config[name] = getattr(self, name)
        return config

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__).parameters
        args = []
        for name, value in self.get_config().items():
            param = sig[name]
            if param.default is inspect.Parameter.empty:
                args.append(repr(value))
            elif not _is_default(value, param.default):
                args.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"


class HookHandle:
    """Removes a hook added with :meth:`Layer.add_hook`."""

    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _is_default(value, default) -> bool:
    """True for ``default`` itself or a tuple repeating it, e.g. (1, 1) for 1."""
    if isinstance(value, tuple) and not isinstance(default, tuple):
        return all(v == default for v in value)
    return value == default


def _cast(value, dtype, key):
    """``value`` (a numeric array) as ``dtype``, or ValueError naming ``key`` and the
    first value that the cast would change beyond rounding: a finite number that
    overflows to inf, or for an integer dtype a value that is not a whole number in its
    range (which a cast would wrap or turn into the smallest integer)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if value.dtype.kind == "f":
            # info.max + 1 is a power of two, exact in any float, unlike info.max
            fits = (np.isfinite(value) & (value == np.trunc(value)) & (value >= info.min)
                    & (value < float(int(info.max) + 1)))
        else:
            fits = (value >= info.min) & (value <= info.max)
        cast = None
        expected = f"whole numbers in [{info.min}, {info.max}] ({dtype})"
    else:
        with np.errstate(over="ignore"):
            cast = value.astype(dtype)
        fits = np.isfinite(cast) | ~np.isfinite(value)
        expected = f"numbers within the {dtype} range (+-{np.finfo(dtype).max:.4g})"
    if not fits.all():
        index = np.unravel_index(np.argmin(fits), value.shape)
        where = f" at index {tuple(int(i) for i in index)}" if value.ndim else ""
        raise ValueError(f"load_state_dict: {key!r} must hold {expected}, got "
                         f"{value[index].item()!r}{where}")
    return value.astype(dtype) if cast is None else cast


def _to_numpy(value):
    """Accept NumPy arrays, scalars and (CPU) PyTorch tensors alike."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


@contextmanager
def modes(model: Layer, *, batchnorm=None, dropout=None, default=None):
    """Temporarily set train/eval modes by layer kind; restore them on exit.

    Parameters
    ----------
    model : Layer
    batchnorm, dropout, default : {'train', 'eval', True, False, None}
        Mode of BatchNorm layers, of Dropout-like layers (Dropout, Uout,
        GaussianDropout), and of every other layer. None leaves a mode unchanged.

    Yields
    ------
    model : Layer

    Examples
    --------
    BatchNorm collecting batch statistics while Dropout is off:

    >>> with modes(model, batchnorm="train", dropout="eval"):  # doctest: +SKIP
    ...     model(x)
    """
    wanted = {
        "batchnorm": _as_training("batchnorm", batchnorm),
        "dropout": _as_training("dropout", dropout),
    }
    fallback = _as_training("default", default)
    saved = [(layer, layer.training) for _, layer in model.walk()]
    try:
        for _, layer in model.walk():
            mode = wanted.get(layer.kind)
            mode = fallback if mode is None else mode
            if mode is not None:
                layer.training = mode
        yield model
    finally:
        for layer, training in saved:
            layer.training = training


def seeded(model: Layer, seed, groups=(None, ("dropout",))) -> Layer:
    """Draw ``model``'s parameters and noise streams from ``seed`` in independent groups
    of layer kinds, so that adding, removing or moving a layer of one group leaves the
    others' initial values unchanged (the arms of a paired comparison).

    Parameters
    ----------
    model : Layer
    seed : int
    groups : sequence of (sequence of str or None)
        Layer kinds per group (``layer.kind``: 'conv', 'dense', 'batchnorm',
        'dropout', ...); ``None`` is every kind no other group names. Group ``i``
        draws, in network order, from streams spawned from child ``i`` of
        ``SeedSequence(seed)``. The default keeps weights independent of noise layers;
        ``(("conv", "dense"), ("dropout",), None)`` also of BatchNorm layers.

    Returns
    -------
    model
    """
    named = {kind: i for i, kinds in enumerate(groups) if kinds is not None for kind in kinds}
    rest = [i for i, kinds in enumerate(groups) if kinds is None]
    leaves = [layer for _, layer in model.leaves()]
    for i, parent in enumerate(np.random.SeedSequence(seed).spawn(len(groups))):
        members = [layer for layer in leaves if named.get(layer.kind, rest[0] if rest else -1) == i]
        for layer, stream in zip(members, parent.spawn(len(members))):
            layer._initialize(np.random.default_rng(stream))
    return model


@contextmanager
def preserved(model, seed=0, buffers=True):
    """Run code on ``model`` and restore its modes, random streams, forward caches and
    (if ``buffers``) buffers afterwards.

    Inside, every stochastic layer draws from a fresh stream spawned from ``seed``,
    so results are reproducible and the model's own streams are not advanced.
    """
    saved = Snapshot(model, buffers)
    seed_noise(model, np.random.SeedSequence(seed))
    try:
        yield saved.buffers
    finally:
        saved.restore()


class Snapshot:
    """A model's modes, random streams, forward caches and (if ``buffers``) buffers;
    :meth:`restore` puts them back.

    Attributes
    ----------
    buffers : dict of str to ndarray or None
        Copies of the buffers (``state_dict(params=False)``), or None.
    """

    def __init__(self, model, buffers=True):
        self.model = model
        self.buffers = model.state_dict(params=False) if buffers else None
        self.layers = [(layer, layer.training, layer._cache, layer._out_shape,
                        getattr(layer, "rng", None)) for _, layer in model.walk()]

    def restore(self):
        for layer, training, cache, out_shape, rng in self.layers:
            layer.training, layer._cache, layer._out_shape = training, cache, out_shape
            if rng is not None:
                layer.rng = rng
        if self.buffers is not None:
            self.model.load_state_dict(self.buffers, strict=False)


def seed_noise(model, sequence):
    """Give every stochastic layer of ``model`` a fresh stream spawned from
    ``sequence`` (a ``numpy.random.SeedSequence``), in walk order."""
    noisy = [layer for _, layer in model.walk() if getattr(layer, "rng", None) is not None]
    for layer, stream in zip(noisy, sequence.spawn(len(noisy))):
        layer.rng = np.random.default_rng(stream)


def _as_training(argument: str, mode):
    if mode is None or isinstance(mode, bool):
        return mode
    if mode in ("train", "eval"):
        return mode == "train"
    raise ValueError(f"modes: {argument} must be 'train', 'eval', True, False or None, got {mode!r}")


def layer_to_config(layer: Layer) -> dict:
    """JSON-ready description of a layer's architecture (no arrays)."""
    return {"class": type(layer).__name__,
            "args": {k: _encode(v) for k, v in layer.get_config().items()}}


def layer_from_config(config: dict, max_values: int | None = None) -> Layer:
    """Rebuild a layer from :func:`layer_to_config` output (parameters freshly drawn).

    Parameters
    ----------
    config : dict
    max_values : int, optional
        Refuse an architecture whose parameters and buffers hold more values than this
        (:func:`varshift.load` passes what the file holds), before drawing them: a
        small damaged file must not make varshift initialise gigabytes.

    Raises
    ------
    ValueError
        If a layer class is unknown, layers are nested more than ``MAX_NESTING`` deep,
        or the layers declare more than ``max_values`` values (a damaged file, not a
        model).
    """
    token = _BUDGET.set(None if max_values is None else [max_values, max_values])
    try:
        return _from_config(config, 0)
    finally:
        _BUDGET.reset(token)


#: ``[values left, values allowed]`` while :func:`layer_from_config` builds under a limit.
_BUDGET = contextvars.ContextVar("varshift_layer_budget", default=None)


class _Arrays(dict):
    """A layer's parameters or buffers by name; counts the values added against
    :func:`layer_from_config`'s ``max_values`` (as a layer's constructor adds them,
    before it draws them)."""

    def __setitem__(self, key, value):
        budget = _BUDGET.get()
        if budget is not None and key not in self:
            budget[0] -= int(np.size(value))
            if budget[0] < 0:
                raise ValueError(f"the layers declare more than {budget[1]} parameter and "
                                 f"buffer values, more than the file can hold (at {key!r} "
                                 f"of shape {np.shape(value)})")
        super().__setitem__(key, value)


#: Layers nested in layers (containers in containers) that :func:`layer_from_config`
#: rebuilds at most.
MAX_NESTING = 50


def _from_config(config, depth):
    if depth > MAX_NESTING:
        raise ValueError(f"layers are nested more than {MAX_NESTING} deep (the limit)")
    try:
        cls = _REGISTRY[config["class"]]
    except KeyError:
        raise ValueError(f"unknown layer class {config.get('class')!r}") from None
    args, positional = {}, []
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or name not in config["args"]:
            continue
        value = _decode(config["args"][name], depth + 1)
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            positional = list(value)
        else:
            args[name] = value
    return cls(*positional, **args)


def _encode(value):
    if isinstance(value, Layer):
        return layer_to_config(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value, depth):
    if isinstance(value, dict) and "class" in value:
        return _from_config(value, depth)
    if isinstance(value, list):
        return [_decode(v, depth) for v in value]
    return value
