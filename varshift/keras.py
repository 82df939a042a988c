"""``varshift.keras.ShiftMonitor``: the variance shift in a Keras 3 training run.

Importing this module imports Keras (``import varshift`` does not). Keras must be
installed (``pip install keras``) with a backend whose package is
installed, chosen before Keras is first imported (e.g. ``KERAS_BACKEND=torch``;
Keras' default is TensorFlow).
"""

from __future__ import annotations

from .monitoring import PREFIX, Monitor

try:
    import keras
except ModuleNotFoundError as err:
    if err.name == "keras":
        raise ModuleNotFoundError(
            "varshift.keras needs Keras 3, which is not installed: pip install "
            "keras torch (and set KERAS_BACKEND=torch)", name="keras") from err
    raise ModuleNotFoundError(
        f"varshift.keras: Keras is installed but its backend's package {err.name!r} is not "
        f"(the default backend is TensorFlow): choose an installed backend with the "
        f"environment variable KERAS_BACKEND before Keras is imported, e.g. "
        f"KERAS_BACKEND=torch with torch installed (pip install torch)",
        name=err.name) from err

__all__ = ["ShiftMonitor"]


class ShiftMonitor(keras.callbacks.Callback):
    """Measure the variance shift on held-out data at the end of every N-th epoch.

    The per-BatchNorm shift and the worst finding go into the epoch's ``logs``
    (numbers only), so they reach ``History`` and Keras' own ``TensorBoard``
    callback (list this callback before it)::

        history = model.fit(x, y, epochs=10, callbacks=[
            varshift.keras.ShiftMonitor(x_val, every=2, warn_above=1.2)])
        history.history["varshift/worst_shift"]

    Parameters
    ----------
    data : array, (x, y) pair, or re-iterable batches
        Held-out inputs (labels are ignored).
    every : int, default 1
        Measure at the end of every ``every``-th epoch.
    warn_above : float >= 1, optional
        Warn (:class:`~varshift.monitoring.ShiftWarning`) when the largest shift
        exceeds it.
    stop_above : float >= 1, optional
        Stop training (``model.stop_training = True``) when the largest shift exceeds
        it; it warns too, saying why.
    warn_severity : {'error', 'warning', 'info'}, optional
        Also warn, with the finding's explanation and fix, when the worst finding is at
        least this severe.
    findings : bool, default True
        Also run :func:`~varshift.diagnose` for the worst finding (a few passes over
        the first batch more than the measurement's three per batch).
    writer : object with ``add_scalar(tag, value, step)``, optional
        A TensorBoard ``SummaryWriter`` receiving the scalars too, at step = epoch
        (for the torch backend without TensorFlow, where Keras' ``TensorBoard``
        callback cannot run).
    batch_size : int, default 256
    seed : int, default 0
        Seed of the Dropout masks of the measurement's train-mode pass (the training's
        own random state is not touched).
    input_key : hashable, optional
        For dict batches: the key of the model's input.
    prefix : str, default 'varshift'
        First part of the log keys.

    Attributes
    ----------
    monitor : varshift.monitoring.Monitor
        The measurements: ``monitor.last``, ``monitor.history`` (epoch, summary).

    Notes
    -----
    Keys added to ``logs`` (see :meth:`~varshift.monitoring.ShiftSummary.scalars`):
    ``varshift/shift/<layer>`` per BatchNorm layer, ``varshift/worst_shift``, and with
    findings ``varshift/worst_severity`` (0 none, 1 info, 2 warning, 3 error) and
    ``varshift/findings`` (how many). Epochs without a measurement have none of them.
    The model's weights, running statistics and seed generators are the same after
    each measurement, so the training is the same as without the callback.
    """

    def __init__(self, data, every=1, warn_above=None, stop_above=None, *, warn_severity=None,
                 findings=True, writer=None, batch_size=256, seed=0, input_key=None,
                 prefix=PREFIX):
        super().__init__()
        self.monitor = Monitor(data, every=every, warn_above=warn_above, stop_above=stop_above,
                               warn_severity=warn_severity, findings=findings, writer=writer,
                               batch_size=batch_size, seed=seed, input_key=input_key,
                               prefix=prefix, owner="varshift.keras.ShiftMonitor")

    def on_epoch_end(self, epoch, logs=None):
        """Measure (every N-th epoch), add the scalars to ``logs``, warn or stop."""
        summary = self.monitor(self.model, epoch)
        if summary is None:
            return
        if logs is not None:
            logs.update(summary.scalars(self.monitor.prefix))
        if self.monitor.should_stop:
            self.model.stop_training = True
