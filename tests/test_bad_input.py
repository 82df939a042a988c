"""Bad input gets a clear error naming the layer or argument, expected and actual."""

import numpy as np
import pytest

from varshift import fit, nn, optim
from varshift.models import reference_convnet


def test_wrong_rank_or_channels_names_layer_and_shapes():
    model = reference_convnet()
    with pytest.raises(ValueError, match=r"layer '0' \(Conv2D\(1, 32.*expected input of shape "
                                         r"\(N, 1, H, W\), got \(2, 3, 28, 28\)"):
        model(np.zeros((2, 3, 28, 28)))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, H, W\), got \(28, 28\)"):
        model(np.zeros((28, 28)))
    with pytest.raises(ValueError, match=r"layer '7' \(Dense\(3136, 500\)\): expected input of "
                                         r"shape \(N, 3136\), got \(2, 4096\)"):
        model(np.zeros((2, 1, 32, 32)))
    with pytest.raises(ValueError, match=r"BatchNorm\(4\): expected input of shape \(N, 4\) or "
                                         r"\(N, 4, L\) or \(N, 4, H, W\), got \(2, 3\)"):
        nn.BatchNorm(4)(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        nn.Conv1D(1, 1, 5)(np.zeros((1, 1, 3)))
    with pytest.raises(TypeError, match="expected a numeric array, got dtype <U1"):
        nn.Dense(1, 1)(np.array([["a"]]))


def test_batchnorm_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        nn.BatchNorm(3)(np.zeros((1, 3)))
    bn = nn.BatchNorm(3).eval()
    assert bn(np.zeros((1, 3))).shape == (1, 3)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Dropout(1.0), r"Dropout: rate must be a float in \[0, 1\), got 1.0"),
    (lambda: nn.Dropout(-0.1), r"rate must be a float in \[0, 1\)"),
    (lambda: nn.GaussianDropout(1.5), r"GaussianDropout: rate must be a float in \[0, 1\)"),
    (lambda: nn.Uout(-0.2), "Uout: beta must be a float >= 0, got -0.2"),
    (lambda: nn.Dense(0, 3), "Dense: in_features must be a positive integer, got 0"),
    (lambda: nn.Conv2D(1, 2, (3, 0)), r"Conv2D: kernel_size must be an int >= 1 or 2 of them"),
    (lambda: nn.Conv2D(1, 2, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
    (lambda: nn.Conv2D(6, 8, 3, groups=4), "Conv2D: groups must divide in_channels=6, got 4"),
    (lambda: nn.Conv1D(4, 6, 3, groups=4), "Conv1D: groups must divide out_channels=6, got 4"),
    (lambda: nn.MaxPool2D(2, padding=2), "padding .* must be at most half the kernel"),
    (lambda: nn.BatchNorm(3, momentum=1.5), r"momentum must be a float in \[0, 1\]"),
    (lambda: nn.BatchNorm(3, eps=0), "eps must be a positive float"),
    (lambda: nn.Sequential(nn.Dense(1, 1), "relu"), "layer 1 must be a Layer, got str"),
    (lambda: optim.SGD(nn.Dense(1, 1), lr=0), "lr must be a positive float"),
    (lambda: optim.SGD(nn.Dense(1, 1), lr=0.1, nesterov=True), "nesterov needs momentum"),
])
def test_constructor_arguments_are_checked(make, message):
    with pytest.raises(ValueError if "Layer, got" not in message else TypeError, match=message):
        make()


def test_conv_padding_given_as_an_array_is_named():
    # the property test found it: padding == "same" compared an array elementwise
    with pytest.raises(TypeError, match="Conv1D: padding must be an int >= 0"):
        nn.Conv1D(1, 2, 3, padding=np.zeros(3))


def test_backward_errors():
    layer = nn.Dense(2, 3)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((1, 3)))
    layer(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"expected an output gradient of shape \(4, 3\), got \(4, 2\)"):
        layer.backward(np.zeros((4, 2)))


def test_losses_check_labels():
    loss = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got range \[0, 3\]"):
        loss(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="expected integer labels, got dtype float64"):
        loss(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"expected labels of shape \(2,\), got \(3,\)"):
        loss(np.zeros((2, 3)), np.array([0, 1, 2]))
    assert np.isfinite(loss(np.array([[1e4, -1e4, 0.0]]), np.array([1])))  # no overflow
    with pytest.raises(ValueError, match="prediction shape"):
        nn.MSELoss()(np.zeros(3), np.zeros(4))


def small_problem(n=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def test_fit_rejects_non_finite_input_before_training():
    x, y = small_problem()
    x[40, 2] = np.nan
    model = nn.Sequential(nn.Dense(4, 2), seed=0)
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"fit: data x has non-finite values .* in 1 samples, "
                                         r"the first at index 40"):
        fit(model, (x, y), nn.CrossEntropyLoss(), optim.SGD(model, lr=0.1), batch_size=16)
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())


def test_fit_stops_on_non_finite_loss_and_leaves_the_model_as_before_the_step():
    x, y = small_problem()
    model = nn.Sequential(nn.Dense(4, 8), nn.BatchNorm(8), nn.Dense(8, 2), seed=0)
    snapshots = []

    class Recording(optim.SGD):
        def step(self):
            super().step()
            snapshots.append(self.model.state_dict())

    with pytest.raises(FloatingPointError, match=r"in epoch \d+, step \d+ .*this step was not applied"):
        fit(model, (x, y), nn.CrossEntropyLoss(), Recording(model, lr=1e6), epochs=50, batch_size=16)
    last_good = snapshots[-1]
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in last_good.items())


def test_fit_argument_errors():
    x, y = small_problem()
    model = nn.Dense(4, 2)
    opt = optim.SGD(model, lr=0.1)
    with pytest.raises(ValueError, match="x has 64 samples but y has 3"):
        fit(model, (x, y[:3]), nn.CrossEntropyLoss(), opt)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        fit(model, (x, y), nn.CrossEntropyLoss(), opt, batch_size=0)
    with pytest.raises(ValueError, match="is empty"):
        fit(model, (x[:0], y[:0]), nn.CrossEntropyLoss(), opt)
