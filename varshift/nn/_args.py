"""The sliding window of convolution and pooling layers, from their checked arguments
(the checks themselves are in :mod:`varshift._validate`)."""

from __future__ import annotations

from ..kernels import Window

__all__ = ["spatial_window"]


def spatial_window(dims: int, kernel, stride, padding, dilation) -> Window:
    """The 2-D :class:`Window` of a 1-D (H = 1) or 2-D layer.

    ``padding`` is an n-tuple of symmetric pads or ``'same'`` (stride 1), which pads
    ``dilation * (kernel - 1)`` in total, the odd one after, as PyTorch does.
    """
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        pads = tuple((t // 2, t - t // 2) for t in totals)
    else:
        pads = tuple((p, p) for p in padding)
    if dims == 1:
        return Window((1, *kernel), (1, *stride), ((0, 0), *pads), (1, *dilation))
    return Window(tuple(kernel), tuple(stride), pads, tuple(dilation))
