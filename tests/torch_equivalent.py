"""Build the PyTorch module equivalent to a varshift layer (test oracle only)."""

import torch
from torch import nn as T


class _AnyRankBatchNorm(T.modules.batchnorm._BatchNorm):
    """torch BatchNorm that, like varshift's, takes (N, C), (N, C, L) or (N, C, H, W)."""

    def _check_input_dim(self, x):
        pass


class TorchResidual(T.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class TorchConcat(T.ModuleList):
    def forward(self, x):
        return torch.cat([branch(x) for branch in self], dim=1)


class TorchGlobalAvgPool(T.Module):
    def forward(self, x):
        return x.mean(dim=tuple(range(2, x.dim())))


def to_torch(layer):
    """The torch module with the same architecture (weights not copied)."""
    name, c = type(layer).__name__, layer.get_config()
    if name == "Dense":
        return T.Linear(c["in_features"], c["out_features"], bias=c["bias"])
    if name in ("Conv1D", "Conv2D"):
        cls = T.Conv1d if name == "Conv1D" else T.Conv2d
        return cls(c["in_channels"], c["out_channels"], c["kernel_size"], stride=c["stride"],
                   padding=c["padding"], dilation=c["dilation"], groups=c["groups"],
                   bias=c["bias"])
    if name == "BatchNorm":
        assert c["unbiased"], "torch has no biased running-variance convention"
        return _AnyRankBatchNorm(c["num_features"], eps=c["eps"], momentum=c["momentum"],
                                 affine=c["affine"], track_running_stats=c["track_running_stats"])
    pools = {"MaxPool1D": T.MaxPool1d, "MaxPool2D": T.MaxPool2d, "AvgPool1D": T.AvgPool1d,
             "AvgPool2D": T.AvgPool2d}
    if name in pools:
        return pools[name](c["kernel_size"], c["stride"], c["padding"])
    simple = {"ReLU": T.ReLU, "Tanh": T.Tanh, "Sigmoid": T.Sigmoid, "Identity": T.Identity,
              "Flatten": T.Flatten, "GlobalAvgPool": TorchGlobalAvgPool}
    if name in simple:
        return simple[name]()
    if name == "LeakyReLU":
        return T.LeakyReLU(c["negative_slope"])
    if name == "ELU":
        return T.ELU(c["alpha"])
    if name == "Dropout":
        return T.Dropout(c["rate"])
    if name == "Sequential":
        return T.Sequential(*[to_torch(child) for child in layer.layers])
    if name == "Residual":
        return TorchResidual(to_torch(layer.body),
                             None if layer.shortcut is None else to_torch(layer.shortcut))
    if name == "Concat":
        return TorchConcat([to_torch(b) for b in layer.branches])
    raise NotImplementedError(name)


def torch_copy(layer):
    """Float64 torch twin of ``layer`` holding the same weights and buffers."""
    module = to_torch(layer).double()
    state = {k: torch.from_numpy(v.copy()) for k, v in layer.state_dict().items()}
    module.load_state_dict(state, strict=True)
    module.train(layer.training)
    return module
