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
    :meth:`TorchBackend.preserved` keeps a copy of every parameter (on the CPU) while
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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode

from .. import _validate
from .._data import Batches
from ..stats import RunningMoments
from . import BatchNormInfo, LayerInfo
from ._calls import TRAIN, CallTracking, Stop

__all__ = ["TorchBackend", "TorchBatches"]

#: Functions whose calls are noise (also when a dropout module calls them).
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                      F.feature_alpha_dropout}
#: ``forward`` methods of modules that are not reported (chains, lists, dicts).
_UNREPORTED = {nn.Sequential.forward, nn.Module.forward}


def _kind(module) -> str:
    """varshift's kind of a torch module."""
    if isinstance(module, _BatchNorm):
        return "batchnorm"
    if isinstance(module, _DropoutNd):
        return "dropout"
    if isinstance(module, _ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "dense"
    if next(module.children(), None) is not None:
        return "container"
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return "reshape"
    if isinstance(module, nn.Identity):
        return "activation"
    return {"torch.nn.modules.activation": "activation",
            "torch.nn.modules.pooling": "pool"}.get(type(module).__module__, "layer")


def _info(name, module) -> LayerInfo:
    kind = _kind(module)
    return LayerInfo(name, kind, type(module).__name__ if kind == "container" else repr(module))


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


class _NoiseSpy(TorchFunctionMode):
    """Notes the autograd node of every dropout function's output (observes only)."""

    def __init__(self, found):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _DROPOUT_FUNCTIONS:
            return func(*args, **kwargs)
        before = (args[0] if args else kwargs["input"]).grad_fn
        out = func(*args, **kwargs)
        if out.grad_fn is not None and out.grad_fn is not before:  # active noise
            self.found(out.grad_fn, func, kwargs.get("p", args[1] if len(args) > 1 else 0.5))
        return out


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

    def restore(self, buffers=True):
        """Put everything back. With ``buffers`` False, a buffer whose value changed
        keeps its new value, in a new tensor (the user's tensor is left as it was)."""
        for m, training in self.training:
            m.training = training
        for store, keys in self.stores:
            for key in set(store) - keys:
                del store[key]
        _put_back(self.params)
        for store, key, tensor in self.buffers:
            if buffers or _same(store.get(key), tensor):
                store[key] = tensor
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def _same(a, b) -> bool:
    """Whether tensors ``a`` and ``b`` hold the same bits (False if ``a`` is None)."""
    return (a is not None and a.shape == b.shape and a.dtype == b.dtype
            and torch.equal(_bits(a.detach()), _bits(b.detach())))


class TorchBackend(CallTracking):
    """:class:`~varshift.backends.Backend` of a ``torch.nn.Module`` (see the module
    docstring for names, modes, what cannot be controlled, and state).

    Parameters
    ----------
    model : torch.nn.Module
    owner : str
        The calling function, for error messages.

    Raises
    ------
    ValueError
        If a lazy module is not initialised yet (its first forward pass would draw
        its parameters, changing the model), or a module is on the ``meta`` device.
    """

    hidden_noise_possible = True

    def __init__(self, model, owner):
        super().__init__(model)
        self._modules = dict(model.named_modules())
        for name, m in self._modules.items():
            if any(is_lazy(t) for t in itertools.chain(m.parameters(recurse=False),
                                                       m.buffers(recurse=False))):
                raise ValueError(f"{owner}: module {name or '(model)'!r} ({type(m).__name__}) "
                                 f"is lazy and not initialised yet; run one forward pass "
                                 f"(model(x)) first, which sets its shapes")
            if any(t.is_meta for t in itertools.chain(m.parameters(recurse=False),
                                                      m.buffers(recurse=False))):
                raise ValueError(f"{owner}: module {name or '(model)'!r} ({type(m).__name__}) "
                                 f"is on the 'meta' device, which holds shapes but no values; "
                                 f"load its weights first (e.g. model.to_empty(device='cpu') "
                                 f"then model.load_state_dict(...))")
        self._names = {m: name for name, m in self._modules.items()}
        self._info = {name: _info(name, m) for name, m in self._modules.items()}
        self._bn = {name: m for name, m in self._modules.items() if isinstance(m, _BatchNorm)}
        self._channels = {name: m.num_features for name, m in self._bn.items()}
        self._noise = {name: f"{type(m).__name__} {m.p}" for name, m in self._modules.items()
                       if isinstance(m, _DropoutNd)}
        self._frozen = self._find_frozen()
        first = next(itertools.chain(model.parameters(), model.buffers()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                          torch.get_default_dtype())
        self._on_bn = None      # (input, output) callbacks of the data-flow trace
        self._handles = []

    def _find_frozen(self):
        """BatchNorm name -> frozen: in inference mode inside a model in train mode, or
        in inference mode with ``requires_grad=False`` affine parameters while other
        parameters train."""
        others_train = any(p.requires_grad for p in self.model.parameters())
        frozen = {}
        for name, m in self._bn.items():
            own = list(m.parameters(recurse=False))
            fixed = bool(own) and not any(p.requires_grad for p in own)
            frozen[name] = (not m.training and m is not self.model
                            and (self.model.training or (fixed and others_train)))
        return frozen

    # ------------------------------------------------------------------ structure
    def batchnorms(self):
        return [BatchNormInfo(name, m.num_features, m.momentum, m.eps, m.affine,
                              m.running_mean is not None and m.running_var is not None,
                              self._frozen[name], largest=torch.finfo(self.dtype).max)
                for name, m in ((name, self._bn[name]) for name in self._bn_order)]

    def noise_upstream(self, x):
        noise, blocked, inputs = {}, set(), {}

        def found(node, func, p):
            owner = self._stack[-1] if self._stack else ""
            name = owner.partition("#")[0]
            if not isinstance(self._modules.get(name), _DropoutNd):
                name = f"{owner}:{func.__name__}"
                self._noise[name] = f"F.{func.__name__} {p}"
            noise[node] = name

        def on_bn(name, value, output):
            if output:
                blocked.add(value.grad_fn)
            else:
                inputs.setdefault(name, []).append(value.grad_fn)

        x = x[:64].detach()
        if x.is_floating_point():
            x = x.clone().requires_grad_(True)
        self._on_bn = on_bn
        try:
            with _NoiseSpy(found):
                self._forward(x, TRAIN, grad=True)
        finally:
            self._on_bn = None
        upstream = {}
        for name, nodes in inputs.items():
            reached, seen = set(), set()
            stack = [n for n in nodes if n is not None]
            while stack:
                node = stack.pop()
                if node in seen or node in blocked:
                    continue
                seen.add(node)
                if node in noise:
                    reached.add(noise[node])
                stack.extend(n for n, _ in node.next_functions if n is not None)
            if reached:
                upstream[name] = sorted(reached)
        return upstream

    def noise_description(self, name):
        return self._noise[name]

    # ------------------------------------------------------------------ data
    def batches(self, data, batch_size, owner, name="data", input_key=None):
        return TorchBatches(data, batch_size, owner, name, input_key, device=self.device,
                            dtype=self.dtype)

    # ------------------------------------------------------------------ state
    def _save(self):
        saved = _Saved(self._modules.values())
        return saved, _copies((store, key, store[key]) for store, key, _ in saved.buffers)

    def _reseed(self):
        """Seed torch's random state from the next of the session's seeds (not from
        random numbers the data loading draws in between: a DataLoader draws one per
        iterator)."""
        seed = int(self._seeds.spawn(1)[0].generate_state(1, np.uint64)[0] >> np.uint64(1))
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(seed)

    def running_stats(self, name):
        m = self._bn[name]
        if m.running_mean is None or m.running_var is None:
            return None
        tracked = None if m.num_batches_tracked is None else int(m.num_batches_tracked)
        return (m.running_mean.detach().to("cpu", torch.float64).numpy(),
                m.running_var.detach().to("cpu", torch.float64).numpy(), tracked)

    def set_running_stats(self, name, mean, var, num_batches_tracked):
        m = self._bn[name]
        stats = _validate.running_stats({"running_mean": mean, "running_var": var},
                                        m.running_var.dtype, f"BatchNorm {name!r}",
                                        limit=torch.finfo(m.running_var.dtype).max)
        with torch.no_grad():
            for key, value in stats.items():
                getattr(m, key).copy_(torch.from_numpy(value))
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.fill_(num_batches_tracked)
        for store, _, tensor, copy in self._reference:  # what passes must leave now
            if store is m._buffers:
                copy.copy_(tensor.detach())

    # ------------------------------------------------------------------ hooks
    def _intercept(self):
        for m in self._modules.values():
            if type(m).forward not in _UNREPORTED:
                self._handles += [m.register_forward_pre_hook(self._before),
                                  m.register_forward_hook(self._after)]

    def _release(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _before(self, module, args):
        name = self._names[module]
        self._enter(name)
        if name not in self._bn or not args or not isinstance(args[0], torch.Tensor):
            return
        if self._on_bn is not None:
            self._on_bn(name, args[0], False)
        self._batchnorm_input(name, lambda: _moments(args[0]))

    def _after(self, module, args, output):
        key = self._stack.pop()
        if not isinstance(output, torch.Tensor) or output.dim() == 0 or output.is_complex():
            return
        self._order[key] = True
        if self._on_bn is not None and isinstance(module, _BatchNorm):
            self._on_bn(key, output, True)
        if self._sink is not None and self._sink.wants_output(self._passes):
            out2 = output if output.dim() > 1 else output[:, None]
            self._sink.output(self._passes, key, _moments(out2), tuple(output.shape[1:]))

    # ------------------------------------------------------------------ computing
    def _set_modes(self, modes):
        for name, m in self._modules.items():
            if isinstance(m, _BatchNorm):
                m.training = modes.batchnorm and not self._frozen[name]
            elif isinstance(m, _DropoutNd):
                m.training = modes.dropout
            else:
                m.training = modes.other

    def _forward(self, x, modes, grad=False):
        """The model's output for ``x`` in ``modes`` (None if a hook stopped it);
        buffers a train-mode pass changed are put back."""
        self._set_modes(modes)
        self._start_forward()
        try:
            with torch.set_grad_enabled(grad):
                return self.model(x)
        except Stop:
            return None
        except (ValueError, TypeError, RuntimeError) as err:
            if type(err) not in (ValueError, TypeError, RuntimeError) or not self._stack:
                raise
            where = self._layer_info(self._stack[-1])
            raise type(err)(f"module {where.name or '(model)'!r} ({where.description}): "
                            f"{err}") from err
        finally:
            self._end_forward(modes)

    def _undo_buffers(self):
        _put_back(self._reference)

    def _arrays(self, output, n):
        return [t.detach().to("cpu", torch.float64).numpy() for t in _tensors(output)
                if t.dim() and len(t) == n]

