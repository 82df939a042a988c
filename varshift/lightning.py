"""``varshift.lightning.ShiftMonitor``: the variance shift in a PyTorch Lightning run.

Works with the ``lightning`` package (``lightning.pytorch``) or the older
``pytorch_lightning``, whichever is installed (``lightning`` first). Importing this
module imports it and torch (``import varshift`` does not); without either:
``pip install lightning``.
"""

from __future__ import annotations

import importlib

from . import _validate
from .monitoring import PREFIX, Monitor

__all__ = ["ShiftMonitor"]


def _lightning():
    """``lightning.pytorch``, else ``pytorch_lightning``; ModuleNotFoundError naming the
    extra to install when neither is there."""
    missing = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name not in (name, name.split(".")[0]):
                raise  # installed, but something it needs is not: Python's message names it
            missing.append(name)
    raise ModuleNotFoundError(
        "varshift.lightning needs PyTorch Lightning, which is not installed (neither "
        f"{' nor '.join(missing)} imports): pip install lightning",
        name="lightning")


pl = _lightning()

#: When the monitor measures: Lightning hook names by the ``on`` argument.
HOOKS = {"train": "on_train_epoch_end", "validation": "on_validation_epoch_end"}


class ShiftMonitor(pl.Callback):
    """Measure the variance shift on held-out data at the end of every N-th epoch and
    log it through the LightningModule's ``log``.

    ::

        trainer = Trainer(max_epochs=10, callbacks=[
            varshift.lightning.ShiftMonitor(val_loader, every=2, stop_above=1.5)])

    Parameters
    ----------
    data : tensor, (x, y) pair, or re-iterable batches (e.g. a DataLoader)
        Held-out inputs (labels are ignored).
    every : int, default 1
        Measure at the end of every ``every``-th epoch.
    warn_above : float >= 1, optional
        Warn (:class:`~varshift.monitoring.ShiftWarning`) when the largest shift
        exceeds it.
    stop_above : float >= 1, optional
        Stop training (``trainer.should_stop = True``) when the largest shift exceeds
        it; it warns too, saying why.
    on : {'train', 'validation'}, default 'train'
        Measure at the end of each training epoch (``on_train_epoch_end``), or of each
        validation run (``on_validation_epoch_end``; the sanity check before training
        is skipped). With ``'validation'``, ``every`` counts validation runs.
    module : callable, optional
        ``module(pl_module)`` gives the ``torch.nn.Module`` to measure (e.g.
        ``lambda m: m.net``); default: the LightningModule itself, called as
        ``pl_module(x)``.
    warn_severity, findings, writer, batch_size, seed, input_key, prefix
        As for :class:`varshift.monitoring.Monitor`; ``writer`` receives the
        scalars at the trainer's global step.

    Attributes
    ----------
    monitor : varshift.monitoring.Monitor
        The measurements: ``monitor.last``, ``monitor.history`` (global step, summary).

    Notes
    -----
    The names logged are those of :meth:`~varshift.monitoring.ShiftSummary.scalars`
    (``varshift/shift/<layer>``, ``varshift/worst_shift``, ``varshift/worst_severity``,
    ``varshift/findings``), logged once per measuring epoch (``on_epoch=True``) without
    syncing across processes: in distributed training each process measures its own
    model copy on the data it is given. The module's parameters, buffers, modes and
    torch's random state are the same after each measurement, so the training is the
    same as without the callback.
    """

    def __init__(self, data, every=1, warn_above=None, stop_above=None, *, on="train",
                 module=None, warn_severity=None, findings=True, writer=None, batch_size=256,
                 seed=0, input_key=None, prefix=PREFIX):
        super().__init__()
        owner = "varshift.lightning.ShiftMonitor"
        self.on = _validate.choice(on, "on", owner, tuple(HOOKS))
        if module is not None and not callable(module):
            _validate._fail(TypeError, owner, "module", "None or a function of the "
                            "LightningModule giving the torch module to measure", module)
        self.module = module
        self.monitor = Monitor(data, every=every, warn_above=warn_above, stop_above=stop_above,
                               warn_severity=warn_severity, findings=findings, writer=writer,
                               batch_size=batch_size, seed=seed, input_key=input_key,
                               prefix=prefix, owner=owner)

    def on_train_epoch_end(self, trainer, pl_module):
        """Measure here when ``on='train'``."""
        if self.on == "train":
            self._measure(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        """Measure here when ``on='validation'`` (not in the sanity check)."""
        if self.on == "validation" and not trainer.sanity_checking:
            self._measure(trainer, pl_module)

    def _measure(self, trainer, pl_module):
        model = pl_module if self.module is None else self.module(pl_module)
        summary = self.monitor(model, trainer.global_step)
        if summary is None:
            return
        for name, value in summary.scalars(self.monitor.prefix).items():
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=False)
        if self.monitor.should_stop:
            trainer.should_stop = True
