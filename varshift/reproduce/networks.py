"""Small PreResNet, Wide ResNet, ResNeXt and DenseNet-style 1-D networks with Li et
al.'s Dropout placements, for MNIST-1D (input (N, 1, 40)).

Placements (Li et al., section 4):

* ``'a'``: Dropout right before the *last BatchNorm* of every block;
* ``'b'``: Dropout right before the *last convolution* of every block (as in WRN);
* ``'head'``: one Dropout after all BatchNorm layers, before the classifier (Table 4).

``noise='uout'`` puts Uout(beta) instead of Dropout(rate) at the same positions (Table 6),
``noise='gaussian'`` GaussianDropout(rate): any name of :data:`varshift.nn.noise.NOISES`.

Width at fixed depth: :func:`preresnet`'s ``widen`` multiplies every channel count and
keeps the blocks, so widen factors 1, 2, 4 and 8 differ in width only (Li et al.'s
width claims without WRN's confound of fewer blocks).

Networks with rate 0 have no noise layers, and :func:`seeded` draws the weights
independently of the noise layers, so for one seed every placement, rate and noise
starts from the same weights: the arms of a comparison are paired.
"""

from __future__ import annotations

from .. import nn
from .._validate import integer
from ..nn.noise import NOISES

__all__ = ["preresnet", "wide_resnet", "resnext", "densenet", "mlp", "seeded", "ARCHITECTURES"]


def _noise(noise, amount):
    """The noise layer named ``noise`` (:data:`~varshift.nn.noise.NOISES`) with its
    one argument ``amount``, as a list: empty for amount 0 (no layer at all)."""
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {tuple(NOISES)}, got {noise!r}")
    if amount == 0:
        return []
    return [NOISES[noise](amount)]


def seeded(model, seed):
    """``model`` with weights drawn from ``seed`` independently of its noise layers
    (:func:`varshift.nn.seeded`); None leaves it as it is."""
    return model if seed is None else nn.seeded(model, seed)


def _check(placement):
    if placement not in ("a", "b", "head"):
        raise ValueError(f"placement must be 'a', 'b' or 'head', got {placement!r}")


def _block(width, placement, noise, amount):
    """Pre-activation block BN-ReLU-Conv-BN-ReLU-Conv with the noise placed."""
    first = [nn.BatchNorm(width), nn.ReLU(), nn.Conv1D(width, width, 3, padding="same")]
    noise_a = _noise(noise, amount) if placement == "a" else []
    noise_b = _noise(noise, amount) if placement == "b" else []
    second = [*noise_a, nn.BatchNorm(width), nn.ReLU(), *noise_b,
              nn.Conv1D(width, width, 3, padding="same")]
    return nn.Residual(nn.Sequential(*first, *second))


def _bottleneck(width, inner, cardinality, placement, noise, amount):
    """Pre-activation ResNeXt block BN-ReLU-Conv1x1-BN-ReLU-GroupedConv3-BN-ReLU-Conv1x1
    (``width`` -> ``inner`` channels in ``cardinality`` groups -> ``width``) with the
    noise placed: (a) between the grouped convolution and the last BatchNorm, (b) before
    the last (1x1) convolution."""
    reduce = [nn.BatchNorm(width), nn.ReLU(), nn.Conv1D(width, inner, 1)]
    grouped = [nn.BatchNorm(inner), nn.ReLU(),
               nn.Conv1D(inner, inner, 3, padding="same", groups=cardinality)]
    noise_a = _noise(noise, amount) if placement == "a" else []
    noise_b = _noise(noise, amount) if placement == "b" else []
    expand = [*noise_a, nn.BatchNorm(inner), nn.ReLU(), *noise_b, nn.Conv1D(inner, width, 1)]
    return nn.Residual(nn.Sequential(*reduce, *grouped, *expand))


def _head(width, placement, noise, amount, classes):
    tail = _noise(noise, amount) if placement == "head" else []
    return [nn.BatchNorm(width), nn.ReLU(), nn.GlobalAvgPool(), *tail, nn.Dense(width, classes)]


def _residual_network(make_block, width, blocks, placement, noise, rate, classes, seed):
    """Stem Conv(1 -> ``width``, 5), ``blocks`` blocks from ``make_block()`` with a
    stride-2 max pooling after the middle one, then :func:`_head`."""
    layers = [nn.Conv1D(1, width, 5, padding="same")]
    for i in range(blocks):
        layers.append(make_block())
        if i == blocks // 2 - 1 or (blocks == 1 and i == 0):
            layers.append(nn.MaxPool1D(2))
    return seeded(nn.Sequential(*layers, *_head(width, placement, noise, rate, classes)), seed)


def preresnet(placement="a", rate=0.0, *, width=16, blocks=3, widen=1, noise="dropout", classes=10,
              seed=None):
    """PreResNet-style 1-D network: stem, ``blocks`` pre-activation residual blocks
    (a stride-2 downsampling in the middle), BN-ReLU, global pooling, Dense.

    Parameters
    ----------
    placement : {'a', 'b', 'head'}
    rate : float
        Drop rate (or Uout's beta with ``noise='uout'``); 0 adds no noise layer.
    width, blocks : int
    widen : int, default 1
        Width factor: every layer has ``width * widen`` channels; the number of
        blocks, BatchNorm and convolution layers does not depend on it (width at
        fixed depth). The default is the PreResNet of the committed runs.
    noise : {'dropout', 'uout', 'gaussian'}
    classes : int
    seed : int, optional

    Raises
    ------
    TypeError, ValueError
        If ``widen`` is not a positive integer, or ``placement`` or ``noise`` is unknown.
    """
    _check(placement)
    channels = width * integer(widen, "widen", "preresnet")
    return _residual_network(lambda: _block(channels, placement, noise, rate), channels, blocks,
                             placement, noise, rate, classes, seed)


def wide_resnet(placement="b", rate=0.0, *, width=16, widen=3, blocks=2, noise="dropout",
                classes=10, seed=None):
    """A Wide ResNet: :func:`preresnet` with ``widen`` times the channels, fewer blocks.

    Its width is confounded with depth (3 times PreResNet's width, 2 blocks instead of
    3); for width at fixed depth use :func:`preresnet`'s ``widen``.
    """
    return preresnet(placement, rate, width=width, blocks=blocks, widen=widen, noise=noise,
                     classes=classes, seed=seed)


def resnext(placement="a", rate=0.0, *, width=16, blocks=3, cardinality=8, group_width=4,
            noise="dropout", classes=10, seed=None):
    """ResNeXt-style 1-D network: :func:`preresnet`'s stem, number of blocks, stride-2
    downsampling and head, with pre-activation bottleneck blocks whose middle 3-wide
    convolution is grouped.

    Each block is BN-ReLU-Conv1x1 (``width`` -> ``cardinality * group_width``),
    BN-ReLU-Conv3 in ``cardinality`` groups of ``group_width`` channels, BN-ReLU-Conv1x1
    (back to ``width``), added to its input. As in ResNeXt-29 (8x64d) on CIFAR, the
    grouped layer is twice as wide as the block's output. The blocks are pre-activation
    (the original ResNeXt is post-activation) so that the placements mean what they mean
    in :func:`preresnet`: (a) the noise right before the block's last BatchNorm (after
    the grouped convolution), (b) right before its last convolution (the 1x1 expansion).

    With the defaults (width 16, 3 blocks, 8 x 4 channels) it has 5,242 parameters,
    against PreResNet's 5,194, and 10 BatchNorm and 10 convolution layers (PreResNet: 7
    and 7).

    Parameters
    ----------
    placement : {'a', 'b', 'head'}
    rate : float
        Drop rate (or Uout's beta with ``noise='uout'``); 0 adds no noise layer.
    width, blocks : int
    cardinality : int, default 8
        Groups of the middle convolution.
    group_width : int, default 4
        Channels per group.
    noise : {'dropout', 'uout', 'gaussian'}
    classes : int
    seed : int, optional

    Raises
    ------
    TypeError, ValueError
        If ``cardinality`` or ``group_width`` is not a positive integer, or
        ``placement`` or ``noise`` is unknown.
    """
    _check(placement)
    inner = integer(cardinality, "cardinality", "resnext") * integer(group_width, "group_width",
                                                                     "resnext")
    return _residual_network(lambda: _bottleneck(width, inner, cardinality, placement, noise, rate),
                             width, blocks, placement, noise, rate, classes, seed)


def densenet(placement="a", rate=0.0, *, growth=8, layers=4, noise="dropout", classes=10, seed=None):
    """DenseNet-style 1-D network: each layer concatenates its input with
    BN-ReLU-Conv1x1-BN-ReLU-Conv3 (a bottleneck) of ``growth`` new channels.

    Placement 'a' puts the noise before the bottleneck's second BatchNorm, 'b' before
    its last convolution.
    """
    _check(placement)
    channels = 2 * growth
    body = [nn.Conv1D(1, channels, 5, padding="same")]
    for _ in range(layers):
        noise_a = _noise(noise, rate) if placement == "a" else []
        noise_b = _noise(noise, rate) if placement == "b" else []
        branch = nn.Sequential(nn.BatchNorm(channels), nn.ReLU(), nn.Conv1D(channels, 4 * growth, 1),
                               *noise_a, nn.BatchNorm(4 * growth), nn.ReLU(), *noise_b,
                               nn.Conv1D(4 * growth, growth, 3, padding="same"))
        body.append(nn.Concat(nn.Identity(), branch))
        channels += growth
    return seeded(nn.Sequential(*body, *_head(channels, placement, noise, rate, classes)), seed)


def mlp(width, rate=0.0, *, placement="b", depth=2, inputs=784, classes=10, seed=None):
    """MLP with BatchNorm: ``depth`` hidden layers [noise-]Dense-BN-ReLU of ``width``.

    Placement 'b' puts the noise before every Dense after the first (Dropout -> Dense
    -> BN, case (b)); 'a' right before every BatchNorm (case (a)).
    """
    _check(placement)
    layers, fan_in = [], inputs
    for i in range(depth):
        pre = _noise("dropout", rate) if (placement == "b" and i > 0) else []
        mid = _noise("dropout", rate) if placement == "a" else []
        layers += [*pre, nn.Dense(fan_in, width), *mid, nn.BatchNorm(width), nn.ReLU()]
        fan_in = width
    return seeded(nn.Sequential(*layers, nn.Dense(fan_in, classes)), seed)


ARCHITECTURES = {"PreResNet": preresnet, "WRN": wide_resnet, "DenseNet": densenet,
                 "ResNeXt": resnext}
