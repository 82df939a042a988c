"""Arguments of convolution and pooling layers that involve several of them: the
sliding window, from its checked arguments, and a convolution's groups, checked against
its channels (the single-value checks are in :mod:`varshift._validate`)."""

from __future__ import annotations

from .._validate import integer
from ..kernels import Window

__all__ = ["spatial_window", "conv_groups"]


def conv_groups(groups, in_channels: int, out_channels: int, owner: str) -> int:
    """``groups`` as a positive int that divides both channel counts.

    Parameters
    ----------
    groups : int
    in_channels, out_channels : int
        Already checked positive ints.
    owner : str
        The layer's name, for the error message.

    Raises
    ------
    TypeError
        If ``groups`` is not an int.
    ValueError
        If ``groups`` is below 1 or does not divide ``in_channels`` or
        ``out_channels``; the message names the channel count it does not divide.
    """
    groups = integer(groups, "groups", owner)
    for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if channels % groups:
            raise ValueError(f"{owner}: groups must divide {name}={channels}, got {groups}")
    return groups


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
