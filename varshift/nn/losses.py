"""Loss functions: ``value = loss(pred, target)`` then ``dpred = loss.backward()``."""

from __future__ import annotations

import numpy as np

__all__ = ["CrossEntropyLoss", "MSELoss"]


class _Loss:
    """A loss caches what its gradient needs on the call, like a layer."""

    #: Whether predictions are class scores (enables accuracy in :func:`varshift.fit`).
    classification = False

    def __init__(self):
        self._cache = None

    def __call__(self, pred, target) -> float:
        return self.forward(pred, target)

    def backward(self):
        """Gradient of the last value with respect to ``pred``, shaped like it."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}: backward called before the loss")
        return self._backward(self._cache)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def check_target(self, target, pred_shape, what="targets"):
        """Check the whole ``target`` array against predictions of shape ``pred_shape``
        (only ``pred_shape[1:]`` matters), before any computation.

        Parameters
        ----------
        target : array_like
        pred_shape : tuple of int
        what : str
            How to name ``target`` in error messages (e.g. ``'fit: data y'``).

        Returns
        -------
        ndarray
            ``target`` as an array.

        Raises
        ------
        TypeError, ValueError
            Naming ``what``, the expected and the actual dtype, shape or values.
        """
        target = np.asarray(target)
        if target.dtype.kind not in "biuf":
            raise TypeError(f"{what} must be numeric, got dtype {target.dtype}")
        self._check_target(target, tuple(pred_shape), what)
        return target

    def _check_target(self, target, pred_shape, what):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _float_array(pred, name):
        pred = np.asarray(pred)
        if pred.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected numeric predictions, got dtype {pred.dtype}")
        return pred if pred.dtype.kind == "f" else pred.astype(np.float32)


class CrossEntropyLoss(_Loss):
    """Mean softmax cross-entropy of logits against integer labels.

    The call ``loss(logits, labels)`` takes ``logits``, an ndarray of shape (N, K), and
    ``labels``, an ndarray of int of shape (N,) with values in [0, K).

    Notes
    -----
    ``loss = -mean_n log softmax(logits_n)[y_n]``; the gradient is
    ``(softmax(logits) - onehot(y)) / N``. Computed with the max subtracted, so large
    logits do not overflow.
    """

    classification = True

    def _check_target(self, labels, pred_shape, what):
        if len(pred_shape) != 2:
            raise ValueError(f"CrossEntropyLoss: expected logits of shape (N, K), got {pred_shape}")
        one_hot = (" (one-hot labels? pass labels.argmax(axis=1))"
                   if labels.ndim == 2 and labels.shape[1] == pred_shape[1] else "")
        if labels.dtype.kind not in "iu":
            raise TypeError(f"{what}: expected integer labels, got dtype {labels.dtype}{one_hot}")
        if labels.ndim != 1:
            raise ValueError(f"{what}: expected labels of shape (N,), got {labels.shape}{one_hot}")
        k = pred_shape[1]
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"{what}: labels must be in [0, {k}), got range "
                             f"[{labels.min()}, {labels.max()}] (the model has {k} outputs)")

    def forward(self, logits, labels) -> float:
        logits = self._float_array(logits, "CrossEntropyLoss")
        labels = self.check_target(labels, logits.shape, "CrossEntropyLoss")
        n = len(logits)
        if labels.shape != (n,):
            raise ValueError(f"CrossEntropyLoss: expected labels of shape ({n},), got {labels.shape}")
        z = logits - logits.max(axis=1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        rows = np.arange(n)
        self._cache = (log_probs, labels)
        return float(-log_probs[rows, labels].mean())

    def _backward(self, cache):
        log_probs, labels = cache
        grad = np.exp(log_probs)
        grad[np.arange(len(labels)), labels] -= 1
        return grad / len(labels)


class MSELoss(_Loss):
    """Mean squared error over every element.

    Notes
    -----
    ``loss = mean((pred - target)^2)``; gradient ``2 (pred - target) / pred.size``.
    """

    def _check_target(self, target, pred_shape, what):
        if target.shape[1:] != pred_shape[1:]:
            expected = ", ".join(["N", *map(str, pred_shape[1:])])
            raise ValueError(f"{what}: expected targets shaped like the model's outputs, "
                             f"({expected}), got {target.shape}")

    def forward(self, pred, target) -> float:
        pred = self._float_array(pred, "MSELoss")
        target = self.check_target(target, pred.shape, "MSELoss").astype(pred.dtype, copy=False)
        if pred.shape != target.shape:
            raise ValueError(f"MSELoss: prediction shape {pred.shape} != target shape {target.shape}")
        diff = pred - target
        self._cache = diff
        return float(np.mean(diff * diff))

    def _backward(self, diff):
        return diff * (2.0 / diff.size)
