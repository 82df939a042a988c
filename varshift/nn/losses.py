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

    @staticmethod
    def _float_array(pred, name):
        pred = np.asarray(pred)
        if pred.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected numeric predictions, got dtype {pred.dtype}")
        return pred if pred.dtype.kind == "f" else pred.astype(np.float32)


class CrossEntropyLoss(_Loss):
    """Mean softmax cross-entropy of logits against integer labels.

    Parameters of the call
    ----------------------
    logits : ndarray of shape (N, K)
    labels : ndarray of int, shape (N,)
        Values in [0, K).

    Notes
    -----
    ``loss = -mean_n log softmax(logits_n)[y_n]``; the gradient is
    ``(softmax(logits) - onehot(y)) / N``. Computed with the max subtracted, so large
    logits do not overflow.
    """

    classification = True

    def forward(self, logits, labels) -> float:
        logits = self._float_array(logits, "CrossEntropyLoss")
        labels = np.asarray(labels)
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss: expected logits of shape (N, K), got {logits.shape}")
        if labels.dtype.kind not in "iu":
            raise TypeError(f"CrossEntropyLoss: expected integer labels, got dtype {labels.dtype}")
        n, k = logits.shape
        if labels.shape != (n,):
            raise ValueError(f"CrossEntropyLoss: expected labels of shape ({n},), got {labels.shape}")
        if n and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(
                f"CrossEntropyLoss: labels must be in [0, {k}), got range "
                f"[{labels.min()}, {labels.max()}]"
            )
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

    def forward(self, pred, target) -> float:
        pred = self._float_array(pred, "MSELoss")
        target = np.asarray(target, dtype=pred.dtype)
        if pred.shape != target.shape:
            raise ValueError(f"MSELoss: prediction shape {pred.shape} != target shape {target.shape}")
        diff = pred - target
        self._cache = diff
        return float(np.mean(diff * diff))

    def _backward(self, diff):
        return diff * (2.0 / diff.size)
