"""The backend of any ``torch.nn.Module`` (imported only when one is passed).

Names and order
    Layers are named by their ``named_modules()`` paths (``''`` for the model,
    ``'layer1.0.conv1'``) and listed in the order of their first call, a module before
    the modules it calls. A module called several times in one forward pass (the
    ``relu`` of torchvision's ResNet blocks) gets one entry per call: ``'relu'``,
    ``'relu#2'``, ...; a BatchNorm's input statistics pool all its calls, as its
    running statistics do. Plain ``nn.Sequential`` containers and modules whose output
    is not a tensor are not reported; modules the data never reach are left out.

Modes
    Each pass sets every module's own ``training`` flag: every ``_BatchNorm``
    (BatchNorm1d/2d/3d, SyncBatchNorm, the lazy variants once initialised), every
    dropout module (Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout), and
    every other module, so that ``F.dropout(x, p, self.training)`` in a forward method
    follows the pass like a Dropout module. A BatchNorm in inference mode whose
    affine parameters are frozen (``requires_grad=False``) while others train, or one
    in inference mode inside a model in train mode, is *frozen* (frozen-BatchNorm
    fine-tuning): the train-mode passes keep it in inference mode, as training did.
    Train-mode passes run under ``torch.no_grad()``; every buffer they change (running
    statistics, ``num_batches_tracked``, a spectral norm's vectors) is put back after
    each pass.

What cannot be controlled
    Noise that does not read a ``training`` flag: ``F.dropout(x, p, training=True)``
    hard-coded, ``torch.rand``/``torch.bernoulli`` in a forward method, Monte Carlo
    dropout on purpose. It stays active in every pass, so the inference statistics
    include it; it is detected by running one batch twice in inference mode
    (``measure`` warns, ``diagnose`` reports ``EVAL_NOT_DETERMINISTIC``). Hooks the user
    registered run during the passes (they may be part of the model's computation).
    In an initialised process group SyncBatchNorm synchronises batch statistics across
    ranks in the train-mode passes, as in training, so every rank must measure the same
    number of batches. Pass the eager module, not a ``torch.compile``'d or scripted
    one (their graphs skip Python hooks), and ``model.module`` of a DataParallel or
    DistributedDataParallel wrapper.

State
    :meth:`TorchAdapter.save` keeps a copy of every parameter (on the CPU) while
    it runs, runs the passes on clones of the buffers, and puts back parameters, the
    user's own buffer tensors (never written to, so that an autograd graph built
    before stays valid), every module's ``training`` flag and the torch random state
    (CPU, and CUDA where initialised); varshift's own hooks are removed.
    :func:`~varshift.recalibrate` leaves the new running statistics in new tensors,
    for the same reason. Batches go to the module's device, floating inputs in its
    parameters' dtype. Modules on the ``meta`` device (no data) are refused.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.parameter import is_lazy

from .. import _validate
from .._data import Batches
from ..stats import RunningMoments
from .adapter import Adapter, BatchNormInfo, LayerInfo
from .modes import Kind

__all__ = ["TorchAdapter", "TorchBatches"]

#: ``forward`` methods of modules that are not reported (chains, lists, dicts).
_UNREPORTED = {nn.Sequential.forward, nn.Module.forward}


def _kind(module) -> Kind:
    """varshift's kind of a torch module."""
    if isinstance(module, _BatchNorm):
        return Kind.BATCHNORM
    if isinstance(module, _DropoutNd):
        return Kind.DROPOUT
    if isinstance(module, _ConvNd):
        return Kind.CONV
    if isinstance(module, nn.Linear):
        return Kind.DENSE
    if next(module.children(), None) is not None:
        return Kind.CONTAINER
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return Kind.RESHAPE
    if isinstance(module, nn.Identity):
        return Kind.ACTIVATION
    return {"torch.nn.modules.activation": Kind.ACTIVATION,
            "torch.nn.modules.pooling": Kind.POOL}.get(type(module).__module__, Kind.LAYER)


def _info(name, module) -> LayerInfo:
    kind = _kind(module)
    return LayerInfo(name, kind, type(module).__name__ if kind is Kind.CONTAINER else repr(module),
                     noise=f"{type(module).__name__} {module.p}" if kind is Kind.DROPOUT else None)


def _moments(t) -> RunningMoments:
    """Per-channel float64 moments of a tensor of shape (N, C, ...)."""
    t = t.detach()
    if t.device.type == "cpu":
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float64)
        return RunningMoments(t.shape[1]).update(t.numpy())
    t3 = t.reshape(t.shape[0], t.shape[1], -1).to(torch.float64)
    mean = t3.mean(dim=(0, 2))
    m2 = ((t3 - mean[:, None]) ** 2).sum(dim=(0, 2))
    return RunningMoments.from_dict({"count": t3.shape[0] * t3.shape[2],
                                     "mean": mean.cpu().numpy(), "m2": m2.cpu().numpy()})


def _returning(replay, name):
    """A forward method that returns ``replay[name]`` whatever it is called with (read
    when called: a :class:`~varshift.backends.replay.Replay` makes it then)."""
    def forward(*args, **kwargs):
        return replay[name]
    return forward


def _tensors(value):
    """The tensors in a (nested) output: a tensor, tuple, list or dict."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


class TorchBatches(Batches):
    """:class:`~varshift._data.Batches` of torch tensors on a device.

    Accepts what :class:`~varshift._data.Batches` does, plus tensors, a
    ``DataLoader`` (or any iterable) of tensors, ``[x, y, ...]`` lists or tuples and
    dicts. Batches are moved to ``device``; floating ones are cast to ``dtype``.
    """

    def __init__(self, data, batch_size, owner, name="data", input_key=None, *,
                 device, dtype):
        self._device, self._dtype = device, dtype
        super().__init__(data, batch_size, owner, name, input_key)

    @property
    def num_batches(self):
        if self._array is not None:
            return super().num_batches
        try:
            return len(self._iterable)
        except TypeError:
            return None

    def _input_of(self, item):
        if isinstance(item, (tuple, list)) and item and self._is_array(item[0]):
            return item[0]
        return super()._input_of(item)

    def _is_array(self, value):
        if isinstance(value, torch.Tensor) and value.is_meta:
            raise ValueError(f"{self.owner}: {self.name} is on the 'meta' device, which holds "
                             f"shapes but no values; pass tensors with data")
        return isinstance(value, (np.ndarray, torch.Tensor))

    def _as_batch(self, batch):
        if isinstance(batch, torch.Tensor):
            if batch.is_meta:
                raise ValueError("it is on the 'meta' device, which holds shapes but no "
                                 "values; pass tensors with data")
            return batch
        return np.asarray(batch)

    def _to_model(self, batch):
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch if batch.flags.writeable else batch.copy())
        floating = batch.is_floating_point()
        return batch.to(device=self._device, dtype=self._dtype if floating else None)

    @staticmethod
    def _dtype_kind(x):
        if isinstance(x, np.ndarray):
            return x.dtype.kind
        if x.dtype.is_floating_point:
            return "f"
        if x.dtype.is_complex:
            return "c"
        if x.dtype == torch.bool:
            return "b"
        return "u" if x.dtype == torch.uint8 else "i"

    @staticmethod
    def _count_nonfinite(x):
        if isinstance(x, np.ndarray):
            return Batches._count_nonfinite(x)
        return int((~torch.isfinite(x)).sum())


def _copies(slots):
    """``[store, key, tensor, copy]`` for ``(store, key, tensor)`` triples; the copies of
    parameters are kept on the CPU."""
    return [[store, key, t, t.detach().to("cpu", copy=True) if isinstance(t, nn.Parameter)
             else t.detach().clone()] for store, key, t in slots]


def _bits(t):
    """``t`` as integers of its width (floating tensors), for a bitwise comparison
    that sees NaN equal to itself and -0.0 unequal to 0.0."""
    if t.is_floating_point():
        return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def _put_back(copies):
    """Put back every tensor of ``copies`` that differs from (or was replaced since)
    its copy. Unchanged tensors are not written, so their version counters stay (a
    graph the user built before keeps its saved tensors valid)."""
    with torch.no_grad():
        for store, key, tensor, copy in copies:
            if store.get(key) is not tensor:
                store[key] = tensor
            now = tensor.detach()
            if now.device != copy.device:
                now = now.to(copy.device)
            if not torch.equal(_bits(now), _bits(copy)):
                tensor.copy_(copy)


class _Saved:
    """What a forward pass can change in a module tree: modes, parameters, buffers,
    and the torch random state.

    The passes work on clones of the buffers, put in the modules' places: the user's
    own buffer tensors are never written, so an autograd graph built before, which
    saved them (a BatchNorm in inference mode saves its running statistics), stays
    valid.

    Attributes
    ----------
    params : list
        ``[store, key, tensor, copy]`` per parameter.
    buffers : list
        ``(store, key, tensor)`` per buffer, the user's tensors.
    """

    def __init__(self, modules):
        self.training = [(m, m.training) for m in modules]
        self.stores = [(store, set(store)) for m in modules for store in (m._parameters,
                                                                           m._buffers)]
        self.params = _copies((m._parameters, key, t) for m in modules
                              for key, t in m._parameters.items() if t is not None)
        self.buffers = [(m._buffers, key, t) for m in modules
                        for key, t in m._buffers.items() if t is not None]
        with torch.no_grad():
            for store, key, t in self.buffers:
                store[key] = t.clone()
        self.rng = torch.get_rng_state()
        self.cuda_rng = (torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                         and torch.cuda.is_initialized() else None)

    def restore(self):
        """Put everything back (the user's own buffer tensors in their places)."""
        for m, training in self.training:
            m.training = training
        for store, keys in self.stores:
            for key in set(store) - keys:
                del store[key]
        _put_back(self.params)
        for store, key, tensor in self.buffers:
            store[key] = tensor
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


class _Buffers:
    """Copies of the buffers as they are now; :meth:`restore` writes back those a
    train-mode pass changed (in the clones the passes run on)."""

    def __init__(self, modules):
        self.copies = _copies((m._buffers, key, t) for m in modules
                              for key, t in m._buffers.items() if t is not None)

    def restore(self):
        _put_back(self.copies)


class TorchAdapter(Adapter):
    """:class:`~varshift.backends.adapter.Adapter` of a ``torch.nn.Module`` (see the
    module docstring for names, modes, what cannot be controlled, and state).

    Raises
    ------
    ValueError
        If a lazy module is not initialised yet (its first forward pass would draw
        its parameters, changing the model), or a module is on the ``meta`` device.
    """

    hidden_noise_possible = True
    noun = "module"

    def __init__(self, model, owner):
        super().__init__(model, owner)
        self._modules = dict(model.named_modules())
        for name, m in self._modules.items():
            tensors = list(itertools.chain(m.parameters(recurse=False), m.buffers(recurse=False)))
            where = f"{owner}: module {name or '(model)'!r} ({type(m).__name__})"
            if any(is_lazy(t) for t in tensors):
                raise ValueError(f"{where} is lazy and not initialised yet; run one forward "
                                 f"pass (model(x)) first, which sets its shapes")
            if any(t.is_meta for t in tensors):
                raise ValueError(f"{where} is on the 'meta' device, which holds shapes but no "
                                 f"values; load its weights first (e.g. model.to_empty("
                                 f"device='cpu') then model.load_state_dict(...))")
        self._names = {m: name for name, m in self._modules.items()}
        self._bn = {name: m for name, m in self._modules.items() if isinstance(m, _BatchNorm)}
        first = next(itertools.chain(model.parameters(), model.buffers()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                          torch.get_default_dtype())
        self._interceptor, self._handles, self._pending = None, [], []
        self._replay = {}

    # ------------------------------------------------------------------ structure
    def layers(self):
        return {name: _info(name, m) for name, m in self._modules.items()}

    def batchnorm(self, name):
        m = self._bn[name]
        return BatchNormInfo(name, m.num_features, m.momentum, m.eps, m.affine,
                             m.running_mean is not None and m.running_var is not None,
                             self._frozen(m), framework="torch",
                             largest=torch.finfo(self.dtype).max)

    def _frozen(self, m):
        """In inference mode inside a model in train mode, or in inference mode with
        ``requires_grad=False`` affine parameters while other parameters train."""
        own = list(m.parameters(recurse=False))
        fixed = bool(own) and not any(p.requires_grad for p in own)
        others_train = any(p.requires_grad for p in self.model.parameters())
        return (not m.training and m is not self.model
                and (self.model.training or (fixed and others_train)))

    # ------------------------------------------------------------------ data
    def batches(self, data, batch_size, owner, name="data", input_key=None):
        return TorchBatches(data, batch_size, owner, name, input_key, device=self.device,
                            dtype=self.dtype)

    # ------------------------------------------------------------------ calling
    @contextmanager
    def intercepting(self, interceptor):
        self._interceptor = interceptor
        try:
            for m in self._modules.values():
                if type(m).forward not in _UNREPORTED:
                    self._handles += [m.register_forward_pre_hook(self._before),
                                      m.register_forward_hook(self._after)]
            yield
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles, self._interceptor = [], None

    def _before(self, module, args):
        key = self._interceptor.on_enter(self._names[module])
        replacement = None
        if (isinstance(module, _BatchNorm) and args and isinstance(args[0], torch.Tensor)
                and self._names[module] not in self._replay):
            replacement = self._interceptor.on_batchnorm(key, args[0])
        self._pending.append((key, replacement))

    def _after(self, module, args, output):
        key, replacement = self._pending.pop()
        output = output if replacement is None else replacement
        self._interceptor.on_exit(key, output)
        return output

    def call(self, x, training, replay=None):
        for name, m in self._modules.items():
            if m.training is not training[name]:  # Module.__setattr__ is slow: only changes
                m.training = training[name]
        self._pending = []  # (key, replacement output) of the modules running
        # a replayed module's forward is an instance attribute returning its output
        # (a pre-hook cannot skip the forward); its hooks still run
        self._replay = replay or {}
        own = [(self._modules[name], vars(self._modules[name]).get("forward"))
               for name in self._replay]
        for name in self._replay:
            self._modules[name].forward = _returning(self._replay, name)
        try:
            with torch.no_grad():
                return self.model(x)
        finally:
            for m, forward in own:
                if forward is None:
                    del m.forward
                else:
                    m.forward = forward
            self._replay = {}

    def reseed(self, sequence):
        """Seed torch's random state (CPU, and CUDA where initialised)."""
        seed = int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(seed)

    # ------------------------------------------------------------------ state
    def save(self):
        return _Saved(self._modules.values())

    def save_buffers(self):
        return _Buffers(self._modules.values())

    def running_stats(self, name):
        m = self._bn[name]
        if m.running_mean is None or m.running_var is None:
            return None
        tracked = None if m.num_batches_tracked is None else int(m.num_batches_tracked)
        return (m.running_mean.detach().to("cpu", torch.float64).numpy(),
                m.running_var.detach().to("cpu", torch.float64).numpy(), tracked)

    def write_running_stats(self, name, mean, var, num_batches_tracked):
        """Writes new tensors (the user's buffer tensors, which a graph built before
        may have saved, are left as they were)."""
        m = self._bn[name]
        stats = _validate.running_stats({"running_mean": mean, "running_var": var},
                                        m.running_var.dtype, f"BatchNorm {name!r}",
                                        limit=torch.finfo(m.running_var.dtype).max)
        for key, value in stats.items():
            old = m._buffers[key]
            m._buffers[key] = torch.from_numpy(value).to(device=old.device, dtype=old.dtype)
        if m.num_batches_tracked is not None:
            m._buffers["num_batches_tracked"] = torch.full_like(m.num_batches_tracked,
                                                                num_batches_tracked)

    # ------------------------------------------------------------------ numbers
    def to_numpy(self, tensor):
        return tensor.detach().cpu().numpy()

    def tensors(self, output):
        return list(_tensors(output))

    def copy(self, tensor):
        return tensor.detach().clone()

    def take(self, tensor, index):
        return tensor.index_select(0, torch.from_numpy(index).to(tensor.device))

    def reportable(self, output):
        return (isinstance(output, torch.Tensor) and output.dim() > 0
                and not output.is_complex())

    def moments(self, tensor, axis=1):
        return _moments(tensor if tensor.dim() > 1 else tensor[:, None])
