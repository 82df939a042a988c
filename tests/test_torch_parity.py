"""Parity with PyTorch in float64 (skipped where torch is not installed)."""

import numpy as np
import pytest

from varshift import nn, optim
from varshift.models import reference_convnet

torch = pytest.importorskip("torch")
from torch_equivalent import torch_copy  # noqa: E402

RTOL = 1e-9


def close(ours, theirs, what):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    # floor 1e-5: a structurally zero gradient (a bias before BatchNorm) is ~1e-15
    # round-off in both engines; it must agree to 1e-14 absolute
    scale = max(np.abs(theirs).max(initial=0), 1e-5)
    err = np.abs(np.asarray(ours) - theirs).max(initial=0) / scale
    assert err < RTOL, f"{what}: relative error {err:.3g}"


def compare_step(model, x, mode):
    """Forward, input gradient and every parameter gradient against torch."""
    model.astype(np.float64).train(mode == "train")
    twin = torch_copy(model)
    xt = torch.tensor(x, requires_grad=True)
    out_t = twin(xt)
    out = model(x)
    close(out, out_t, "forward")
    dout = np.random.default_rng(1).standard_normal(out.shape)
    out_t.backward(torch.from_numpy(dout))
    close(model.backward(dout), xt.grad, "input gradient")
    torch_params = dict(twin.named_parameters())
    ours = list(model.named_parameters())
    assert {k for k, _, _ in ours} == set(torch_params)
    for key, _, grad in ours:
        close(grad, torch_params[key].grad, f"gradient of {key}")
    torch_state = twin.state_dict()
    for key, value in model.state_dict(params=False).items():
        close(value, torch_state[key], key)


LAYERS = {
    "dense": (lambda: nn.Dense(7, 5), (4, 7)),
    "dense-nobias": (lambda: nn.Dense(7, 5, bias=False), (4, 7)),
    "conv1d": (lambda: nn.Conv1D(3, 4, 3, stride=2, padding=1, dilation=2), (2, 3, 11)),
    "conv1d-same-even": (lambda: nn.Conv1D(2, 3, 4, padding="same"), (2, 2, 9)),  # torch warns: copy
    "conv2d": (lambda: nn.Conv2D(3, 4, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
               (2, 3, 8, 7)),
    "conv2d-same": (lambda: nn.Conv2D(2, 3, 4, padding="same", dilation=2), (2, 2, 9, 8)),
    # width stride 2: the channels-last im2row path
    "conv2d-channels-last": (lambda: nn.Conv2D(3, 4, (2, 3), stride=(1, 2), padding=(0, 1),
                                               dilation=(2, 1)), (2, 3, 7, 9)),
    # grouped: out per group != in per group, both patch layouts, depthwise
    "conv1d-groups": (lambda: nn.Conv1D(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
                      (2, 4, 11)),
    "conv1d-depthwise": (lambda: nn.Conv1D(3, 6, 4, padding="same", groups=3), (2, 3, 9)),
    "conv2d-groups": (lambda: nn.Conv2D(8, 4, (3, 2), stride=(2, 1), padding=(1, 2),
                                        dilation=(1, 2), groups=4), (2, 8, 8, 7)),
    "conv2d-groups-channels-last": (lambda: nn.Conv2D(4, 6, (2, 3), stride=(1, 2), padding=(0, 1),
                                                      dilation=(2, 1), groups=2), (2, 4, 7, 9)),
    "conv2d-depthwise": (lambda: nn.Conv2D(4, 4, 3, stride=2, padding=1, groups=4, bias=False),
                         (2, 4, 7, 6)),
    "resnext-block": (lambda: nn.Residual(nn.Sequential(
        nn.Conv2D(4, 8, 1, bias=False), nn.BatchNorm(8), nn.ReLU(),
        nn.Conv2D(8, 8, 3, padding=1, groups=4, bias=False), nn.BatchNorm(8), nn.ReLU(),
        nn.Conv2D(8, 4, 1, bias=False), nn.BatchNorm(4))), (2, 4, 6, 6)),
    "batchnorm-2d": (lambda: nn.BatchNorm(5), (6, 5)),
    "batchnorm-3d": (lambda: nn.BatchNorm(3, momentum=None), (4, 3, 5)),
    "batchnorm-4d": (lambda: nn.BatchNorm(3, eps=1e-3, momentum=0.3), (2, 3, 4, 5)),
    "batchnorm-no-affine": (lambda: nn.BatchNorm(3, affine=False), (2, 3, 4, 5)),
    "batchnorm-no-tracking": (lambda: nn.BatchNorm(3, track_running_stats=False), (2, 3, 4)),
    "maxpool1d": (lambda: nn.MaxPool1D(3, 2, 1), (2, 3, 10)),
    "maxpool2d": (lambda: nn.MaxPool2D((3, 2), (2, 1), (1, 0)), (2, 3, 7, 6)),
    "avgpool1d": (lambda: nn.AvgPool1D(2), (2, 3, 9)),
    "avgpool2d": (lambda: nn.AvgPool2D(3, 2, 1), (2, 3, 7, 6)),
    "globalavgpool": (lambda: nn.GlobalAvgPool(), (2, 3, 4, 5)),
    "activations": (lambda: nn.Sequential(nn.Dense(4, 6), nn.ReLU(), nn.Dense(6, 6), nn.LeakyReLU(0.2),
                                          nn.Dense(6, 6), nn.ELU(0.7), nn.Dense(6, 6), nn.Tanh(),
                                          nn.Dense(6, 6), nn.Sigmoid(), nn.Identity()), (5, 4)),
    "residual": (lambda: nn.Residual(
        nn.Sequential(nn.BatchNorm(3), nn.ReLU(), nn.Conv2D(3, 4, 3, stride=2, padding=1)),
        nn.Conv2D(3, 4, 1, stride=2)), (2, 3, 6, 6)),
    "concat": (lambda: nn.Sequential(
        nn.Concat(nn.Identity(), nn.Sequential(nn.BatchNorm(2), nn.ReLU(), nn.Conv2D(2, 3, 3, padding=1))),
        nn.AvgPool2D(2), nn.Flatten(), nn.Dense(20, 3)), (3, 2, 4, 4)),
    "reference-convnet": (lambda: reference_convnet(dropout=0.3), (4, 1, 28, 28)),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_parity(name, mode):
    make, shape = LAYERS[name]
    model = make().initialize(0)
    if name == "reference-convnet" and mode == "train":
        model[9].rate = 0.0  # dropout masks differ between engines
    for _, layer in model.walk():
        if isinstance(layer, nn.BatchNorm) and layer.track_running_stats:
            layer.buffers["running_mean"][:] = np.linspace(-1, 1, layer.num_features)
            layer.buffers["running_var"][:] = np.linspace(0.5, 2, layer.num_features)
    compare_step(model, np.random.default_rng(0).standard_normal(shape), mode)


def test_torch_state_dict_loads_directly():
    model = reference_convnet(seed=0)
    twin = torch_copy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    model.load_state_dict(twin.state_dict())  # torch tensors, torch key names
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-7)


def _train_both(make_optimizers, steps, dropout_free_model):
    model = dropout_free_model.astype(np.float64).train()
    twin = torch_copy(model)
    ours_opt, torch_opt = make_optimizers(model, twin)
    loss, torch_loss = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(3)
    curves = []
    for _ in range(steps):
        x = rng.standard_normal((16, 1, 28, 28))
        y = rng.integers(0, 10, 16)
        value = loss(model(x), y)
        ours_opt.zero_grad()
        model.backward(loss.backward())
        ours_opt.step()
        torch_opt.zero_grad()
        t_value = torch_loss(twin(torch.from_numpy(x)), torch.from_numpy(y))
        t_value.backward()
        torch_opt.step()
        curves.append((value, t_value.item()))
    return model, twin, np.array(curves)


@pytest.mark.parametrize("which", ["sgd", "sgd-nesterov", "adam"])
def test_training_tracks_torch(which):
    def make(model, twin):
        if which == "adam":
            return (optim.Adam(model, lr=1e-3, weight_decay=1e-4),
                    torch.optim.Adam(twin.parameters(), lr=1e-3, weight_decay=1e-4))
        kw = dict(momentum=0.9, nesterov=which == "sgd-nesterov", weight_decay=5e-4)
        return optim.SGD(model, lr=0.05, **kw), torch.optim.SGD(twin.parameters(), lr=0.05, **kw)

    model, twin, curves = _train_both(make, 8, reference_convnet(dropout=0.0, seed=1))
    np.testing.assert_allclose(curves[:, 0], curves[:, 1], rtol=RTOL)
    assert curves[-1, 0] != curves[0, 0]
    # parameters and running statistics after the steps
    torch_state = twin.state_dict()
    for key, value in model.state_dict().items():
        close(value, torch_state[key], key)
    assert int(model.state_dict()["1.num_batches_tracked"]) == 8


def test_running_stats_after_five_steps_with_cumulative_momentum():
    model = nn.Sequential(nn.Conv1D(2, 3, 3), nn.BatchNorm(3, momentum=None), nn.ReLU(),
                          nn.Flatten(), nn.Dense(15, 2), seed=4).astype(np.float64)
    twin = torch_copy(model)
    opt, t_opt = optim.SGD(model, lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((6, 2, 7)) * 3 + 1
        dout = rng.standard_normal((6, 2))
        model(x)
        opt.zero_grad()
        model.backward(dout)
        opt.step()
        t_opt.zero_grad()
        twin(torch.from_numpy(x)).backward(torch.from_numpy(dout))
        t_opt.step()
    for key, value in twin.state_dict().items():
        close(model.state_dict()[key], value, key)


# ------------------------------------------------------------------ measure, diagnose, recalibrate
def _parity_models():
    from helpers import dropout_before_bn

    conv = nn.Sequential(
        nn.Conv2D(1, 4, 3, padding=1), nn.BatchNorm(4), nn.ReLU(), nn.Dropout(0.3),
        nn.Residual(nn.Sequential(nn.Conv2D(4, 4, 3, padding=1), nn.BatchNorm(4), nn.ReLU())),
        nn.Concat(nn.Identity(), nn.Sequential(nn.Dropout(0.2), nn.Conv2D(4, 4, 1),
                                               nn.BatchNorm(4, momentum=None))),
        nn.BatchNorm(8), nn.GlobalAvgPool(), nn.Dense(8, 2), seed=0)
    rng = np.random.default_rng(0)
    return {"mlp": (dropout_before_bn(), rng.standard_normal((1500, 20))),
            "convnet": (conv, rng.standard_normal((600, 1, 8, 8)) + 0.5)}


def _moments_close(ours, theirs, what):
    assert ours.count == theirs.count, what
    close(ours.mean, theirs.mean, f"{what} mean")
    close(ours.m2, theirs.m2, f"{what} m2")


@pytest.mark.parametrize("name", ["mlp", "convnet"])
def test_reports_agree_with_the_torch_twin(name):
    """Every deterministic quantity of the report to 1e-9; train-mode variances (other
    Dropout masks) statistically."""
    from helpers import trained

    from varshift import diagnose, measure, recalibrate

    model, x = _parity_models()[name]
    trained(model, (x.astype(np.float32), (x.reshape(len(x), -1)[:, 0] > 0).astype(int)),
            epochs=1)
    model.astype(np.float64)
    twin = torch_copy(model)
    ours, theirs = measure(model, x, batch_size=100), measure(twin, x, batch_size=100)
    assert [r.name for r in ours.layers] == [r.name for r in theirs.layers]
    assert (ours.num_samples, ours.batch_size) == (theirs.num_samples, theirs.batch_size)
    for a, b in zip(ours.layers, theirs.layers):
        assert a.shape == b.shape and (a.kind == b.kind or a.kind == "pool"), a.name
        _moments_close(a.eval, b.eval, f"layer {a.name} eval")
        assert b.train_var == pytest.approx(a.train_var, rel=0.1)
    for a, b in zip(ours.bn, theirs.bn):
        assert (a.name, a.index, a.momentum, a.eps, a.num_batches_tracked) == (
            b.name, b.index, b.momentum, b.eps, b.num_batches_tracked)
        close(a.moving_mean, b.moving_mean, "moving_mean")
        close(a.moving_var, b.moving_var, "moving_var")
        _moments_close(a.real, b.real, f"BatchNorm {a.name} real")
        _moments_close(a.nodrop, b.nodrop, f"BatchNorm {a.name} nodrop")
        close(a.shift, b.shift, "shift")
        close(a.mean_shift, b.mean_shift, "mean_shift")
        close(a.attribution["upstream"], b.attribution["upstream"], "upstream")
        assert b.attribution["dropout"] == pytest.approx(a.attribution["dropout"], rel=0.1)
    dropout = {f.layer: f.evidence["dropout_layers"] for f in diagnose(model, x)
               if f.code == "DROPOUT_BEFORE_BN"}
    assert dropout and dropout == {f.layer: f.evidence["dropout_layers"]
                                   for f in diagnose(twin, x) if f.code == "DROPOUT_BEFORE_BN"}
    after, twin_after = (recalibrate(m, x, batch_size=100).after for m in (model, twin))
    torch_state = twin.state_dict()
    for key, value in model.state_dict().items():
        close(value, torch_state[key], key)
    for a, b in zip(after.bn, twin_after.bn):
        _moments_close(a.real, b.real, f"BatchNorm {a.name} real after recalibration")


# ------------------------------------------------------------------ grouped convolutions
def test_grouped_conv_model_file_round_trips_and_still_matches_torch(tmp_path):
    import varshift

    model = nn.Sequential(nn.Conv1D(4, 6, 3, groups=2), nn.ReLU(),
                          nn.Conv1D(6, 6, 3, stride=2, groups=6), seed=0)
    varshift.save(model, tmp_path / "grouped.npz")
    loaded = varshift.load(tmp_path / "grouped.npz")
    assert [layer.groups for layer in (loaded[0], loaded[2])] == [2, 6]
    assert loaded[0].params["weight"].shape == (6, 2, 3)
    assert repr(loaded) == repr(model)
    assert repr(loaded[2]) == "Conv1D(6, 6, (3,), stride=(2,), groups=6)"
    x = np.random.default_rng(0).standard_normal((3, 4, 12))
    np.testing.assert_array_equal(loaded(x.astype(np.float32)), model(x.astype(np.float32)))
    compare_step(loaded, x, "train")


def test_a_model_file_without_groups_loads_as_groups_1(tmp_path):
    """Files written before ``groups`` existed have no such argument."""
    import json

    import varshift

    model = nn.Sequential(nn.Conv2D(2, 4, 3), nn.ReLU(), nn.Conv1D(4, 2, 1), seed=0)
    varshift.save(model, tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as f:
        arrays = dict(f)
    meta = json.loads(str(arrays.pop("__varshift__")))
    layers = meta["architecture"]["args"]["layers"]
    assert [layer["args"].pop("groups", None) for layer in layers] == [1, None, 1]
    np.savez(tmp_path / "old.npz", __varshift__=np.array(json.dumps(meta)), **arrays)
    loaded = varshift.load(tmp_path / "old.npz")
    assert (loaded[0].groups, loaded[2].groups) == (1, 1)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(loaded[0](x), model[0](x))


@pytest.mark.parametrize("make, error, message", [
    (lambda m: m.Conv2D(6, 8, 3, groups=4) if m is nn else m.Conv2d(6, 8, 3, groups=4),
     ValueError, "Conv2D: groups must divide in_channels=6, got 4"),
    (lambda m: m.Conv1D(4, 6, 3, groups=4) if m is nn else m.Conv1d(4, 6, 3, groups=4),
     ValueError, "Conv1D: groups must divide out_channels=6, got 4"),
    (lambda m: m.Conv2D(4, 4, 3, groups=0) if m is nn else m.Conv2d(4, 4, 3, groups=0),
     ValueError, "Conv2D: groups must be a positive integer, got 0"),
    (lambda m: m.Conv1D(4, 4, 3, groups=2.0) if m is nn else m.Conv1d(4, 4, 3, groups=2.0),
     TypeError, r"Conv1D: groups must be a positive integer, got 2.0 \(float\)"),
])
def test_bad_groups_are_refused_as_torch_refuses_them(make, error, message):
    with pytest.raises(error, match=message):
        make(nn)
    with pytest.raises(error):
        make(torch.nn)
