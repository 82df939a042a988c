"""The benchmarks' PyTorch peers: the reproduction's 1-D networks written as a PyTorch
user would write them, with PyTorch's own layers (``nn.Conv1d``, ``nn.BatchNorm1d``,
...), not translated from varshift's models. This module imports torch only, never
varshift: a peer is built and timed in a process that never imported varshift (see
:func:`assert_varshift_not_imported`), since varshift's import and its thread runtimes
can change how a PyTorch step runs.

The architectures are those of ``varshift.reproduce.networks.preresnet``, ``resnext``
and ``densenet`` with Dropout at placement 'a'; the benchmarks compare the two engines'
parameter counts and stop if they differ.
"""

import sys

import torch
from torch import nn


def assert_varshift_not_imported():
    """Stop a peer worker, at the point it times, if varshift is imported in its process."""
    assert "varshift" not in sys.modules, \
        "the PyTorch peer must run in a process that never imported varshift"


class PreActBlock(nn.Module):
    """BN-ReLU-Conv-Dropout-BN-ReLU-Conv, added to its input."""

    def __init__(self, width, rate):
        super().__init__()
        self.bn1 = nn.BatchNorm1d(width)
        self.conv1 = nn.Conv1d(width, width, 3, padding="same")
        self.drop = nn.Dropout(rate)
        self.bn2 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, width, 3, padding="same")

    def forward(self, x):
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(self.drop(out))))
        return x + out


class PreResNet1d(nn.Module):
    """Stem, three pre-activation blocks (max-pooling after the first), BN-ReLU, global
    average pooling, linear classifier."""

    def __init__(self, rate=0.3, width=16, classes=10):
        super().__init__()
        self.stem = nn.Conv1d(1, width, 5, padding="same")
        self.blocks = nn.Sequential(PreActBlock(width, rate), nn.MaxPool1d(2),
                                    PreActBlock(width, rate), PreActBlock(width, rate))
        self.bn = nn.BatchNorm1d(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(x.mean(dim=2))


class BottleneckBlock(nn.Module):
    """Pre-activation ResNeXt block: BN-ReLU-Conv1x1 (``width`` -> ``inner``),
    BN-ReLU-Conv3 in ``groups`` groups, Dropout, BN-ReLU-Conv1x1 (back to ``width``),
    added to its input."""

    def __init__(self, width, inner, groups, rate):
        super().__init__()
        self.bn1 = nn.BatchNorm1d(width)
        self.reduce = nn.Conv1d(width, inner, 1)
        self.bn2 = nn.BatchNorm1d(inner)
        self.grouped = nn.Conv1d(inner, inner, 3, padding="same", groups=groups)
        self.drop = nn.Dropout(rate)
        self.bn3 = nn.BatchNorm1d(inner)
        self.expand = nn.Conv1d(inner, width, 1)

    def forward(self, x):
        out = self.reduce(torch.relu(self.bn1(x)))
        out = self.grouped(torch.relu(self.bn2(out)))
        out = self.expand(torch.relu(self.bn3(self.drop(out))))
        return x + out


class ResNeXt1d(nn.Module):
    """PreResNet1d's stem, pooling and head around three ResNeXt bottleneck blocks of 8
    groups of 4 channels."""

    def __init__(self, rate=0.3, width=16, cardinality=8, group_width=4, classes=10):
        super().__init__()
        inner = cardinality * group_width

        def block():
            return BottleneckBlock(width, inner, cardinality, rate)

        self.stem = nn.Conv1d(1, width, 5, padding="same")
        self.blocks = nn.Sequential(block(), nn.MaxPool1d(2), block(), block())
        self.bn = nn.BatchNorm1d(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(x.mean(dim=2))


class DenseLayer(nn.Module):
    """Concatenates its input with BN-ReLU-Conv1x1-Dropout-BN-ReLU-Conv3 of ``growth``
    new channels."""

    def __init__(self, channels, growth, rate):
        super().__init__()
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv1 = nn.Conv1d(channels, 4 * growth, 1)
        self.drop = nn.Dropout(rate)
        self.bn2 = nn.BatchNorm1d(4 * growth)
        self.conv2 = nn.Conv1d(4 * growth, growth, 3, padding="same")

    def forward(self, x):
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(self.drop(out))))
        return torch.cat([x, out], dim=1)


class DenseNet1d(nn.Module):
    """Stem of ``2 * growth`` channels, four dense layers, BN-ReLU, global average
    pooling, linear classifier."""

    def __init__(self, rate=0.3, growth=8, layers=4, classes=10):
        super().__init__()
        channels = 2 * growth
        self.stem = nn.Conv1d(1, channels, 5, padding="same")
        dense = []
        for _ in range(layers):
            dense.append(DenseLayer(channels, growth, rate))
            channels += growth
        self.dense = nn.Sequential(*dense)
        self.bn = nn.BatchNorm1d(channels)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.dense(self.stem(x))))
        return self.fc(x.mean(dim=2))


NETWORKS = {"preresnet": PreResNet1d, "resnext": ResNeXt1d, "densenet": DenseNet1d}
"""Benchmark name -> the PyTorch class (the varshift model is
``varshift.reproduce.networks.<name>('a', 0.3)``)."""


def parameter_count(model) -> int:
    """Trainable values of a PyTorch model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
