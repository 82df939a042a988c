"""Every layer and container against float64 central differences (varshift.gradcheck)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from varshift import gradcheck, nn

TOL = 1e-6
modes_ = st.sampled_from(["train", "eval"])
seeds = st.integers(0, 2**16)


def check(layer, x, mode="train"):
    layer.train(mode == "train")
    error, errors = gradcheck(layer, x, details=True)
    assert error < TOL, errors
    return errors


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


@given(seeds, st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.booleans())
def test_dense(seed, n, fin, fout, bias):
    layer = nn.Dense(fin, fout, bias=bias).initialize(seed)
    errors = check(layer, normal(seed, (n, fin)))
    assert set(errors) == {"input", "weight"} | ({"bias"} if bias else set())


@st.composite
def conv_cases(draw, dims, groups=None):
    """Constructor arguments and an input shape; ``groups`` (an int or 'depthwise')
    draws channel counts that it divides and adds it to the arguments."""
    k = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    d = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    if draw(st.booleans()):
        s, p = (1,) * dims, "same"
    else:
        s = tuple(draw(st.integers(1, 3)) for _ in range(dims))
        p = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    size = tuple(draw(st.integers(di * (ki - 1) + 1, di * (ki - 1) + 5)) for ki, di in zip(k, d))
    if groups is None:
        cin, cout, extra = draw(st.integers(1, 3)), draw(st.integers(1, 3)), {}
    else:
        cin = draw(st.integers(2, 4)) if groups == "depthwise" else groups * draw(st.integers(1, 2))
        g = cin if groups == "depthwise" else groups
        cout, extra = g * draw(st.integers(1, 2)), {"groups": g}
    return dict(in_channels=cin, out_channels=cout, kernel_size=k, stride=s, padding=p,
                dilation=d, bias=draw(st.booleans()), **extra), (draw(st.integers(1, 3)), cin, *size)


@given(seeds, conv_cases(1))
def test_conv1d(seed, case):
    args, shape = case
    check(nn.Conv1D(**args).initialize(seed), normal(seed, shape))


@given(seeds, conv_cases(2))
def test_conv2d(seed, case):
    args, shape = case
    check(nn.Conv2D(**args).initialize(seed), normal(seed, shape))


GROUPS = [2, 4, "depthwise"]
#: (in_channels, out_channels, groups): out per group differs from in per group, so a
#: transposed group layout cannot pass
GROUP_CHANNELS = {2: (4, 6, 2), 4: (8, 4, 4), "depthwise": (3, 6, 3)}
#: 2-D geometries; a 1-D layer takes the width entries. Width stride 1 builds the
#: patches with im2col, width stride 2 with im2row; 'same' with an even kernel pads
#: unevenly.
GROUPED_GEOMETRIES = {
    "im2col": dict(kernel_size=(3, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    "im2row": dict(kernel_size=(2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1)),
    "same": dict(kernel_size=(3, 2), padding="same", dilation=(1, 2)),
}


def grouped_conv(dims, groups, geometry):
    """A grouped Conv1D or Conv2D of ``GROUP_CHANNELS[groups]`` and a 2-sample input."""
    cin, cout, g = GROUP_CHANNELS[groups]
    args = {k: v if isinstance(v, str) else v[-dims:] for k, v in GROUPED_GEOMETRIES[geometry].items()}
    cls = nn.Conv1D if dims == 1 else nn.Conv2D
    return cls(cin, cout, groups=g, **args), (2, cin, 7, 8)[:dims + 2]


@pytest.mark.parametrize("geometry", list(GROUPED_GEOMETRIES))
@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("dims", [1, 2])
def test_grouped_conv(dims, groups, geometry):
    layer, shape = grouped_conv(dims, groups, geometry)
    assert layer.channels_last == (geometry == "im2row")
    errors = check(layer.initialize(0), normal(dims, shape))
    assert set(errors) == {"input", "weight", "bias"}


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("dims", [1, 2])
@settings(max_examples=8)
@given(seed=seeds, data=st.data())
def test_grouped_conv_random_geometries(dims, groups, seed, data):
    args, shape = data.draw(conv_cases(dims, groups))
    cls = nn.Conv1D if dims == 1 else nn.Conv2D
    check(cls(**args).initialize(seed), normal(seed, shape))


# M >= 3 values per channel: with M = 2 the output is +-1 whatever x, a flat function
@given(seeds, st.sampled_from([(6, 3), (3, 2, 4), (2, 3, 3, 2), (1, 2, 1, 3)]), modes_,
       st.booleans(), st.booleans(), st.sampled_from([0.1, None]))
def test_batchnorm(seed, shape, mode, affine, track, momentum):
    layer = nn.BatchNorm(shape[1], affine=affine, track_running_stats=track, momentum=momentum)
    if affine:  # non-trivial gamma and beta
        layer.params["weight"][:] = np.random.default_rng(seed).uniform(0.5, 2, shape[1])
        layer.params["bias"][:] = np.random.default_rng(seed + 1).standard_normal(shape[1])
    if track:
        layer.buffers["running_var"][:] = 2.0
    check(layer, normal(seed, shape) * 2 + 0.5, mode)


@pytest.mark.parametrize("layer", [nn.Dropout(0.4), nn.Dropout(0.0), nn.Uout(0.3),
                                   nn.GaussianDropout(0.3)], ids=repr)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_noise_layers(layer, mode):
    layer.initialize(3)
    check(layer, normal(0, (4, 3, 5)), mode)


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU(0.2), nn.ELU(0.7), nn.Tanh(),
                                   nn.Sigmoid(), nn.Identity(), nn.Flatten(),
                                   nn.GlobalAvgPool()], ids=repr)
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 3)])
def test_elementwise_and_reshape(layer, shape):
    check(layer, normal(1, shape))


@st.composite
def pool_cases(draw, dims):
    k = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    s = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    p = tuple(draw(st.integers(0, ki // 2)) for ki in k)
    size = tuple(draw(st.integers(ki, ki + 4)) for ki in k)
    return (k, s, p), (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *size)


@given(seeds, pool_cases(1), st.booleans())
def test_pool1d(seed, case, use_max):
    (k, s, p), shape = case
    cls = nn.MaxPool1D if use_max else nn.AvgPool1D
    check(cls(k, s, p), normal(seed, shape))


@given(seeds, pool_cases(2), st.booleans())
def test_pool2d(seed, case, use_max):
    (k, s, p), shape = case
    cls = nn.MaxPool2D if use_max else nn.AvgPool2D
    check(cls(k, s, p), normal(seed, shape))


def preact_block(c):
    return nn.Residual(nn.Sequential(nn.BatchNorm(c), nn.ReLU(), nn.Conv2D(c, c, 3, padding=1),
                                     nn.Dropout(0.3), nn.BatchNorm(c), nn.ELU(),
                                     nn.Conv2D(c, c, 3, padding="same")))


def containers():
    return {
        "sequential": (nn.Sequential(nn.Dense(5, 6), nn.BatchNorm(6), nn.Tanh(), nn.Dropout(0.3),
                                     nn.Dense(6, 3)), (4, 5)),
        "residual-identity": (preact_block(2), (2, 2, 5, 5)),
        "residual-projection": (nn.Residual(
            nn.Sequential(nn.Conv1D(2, 3, 3, stride=2, padding=1), nn.BatchNorm(3), nn.ReLU()),
            nn.Conv1D(2, 3, 1, stride=2)), (3, 2, 7)),
        "concat-dense-block": (nn.Sequential(
            nn.Concat(nn.Identity(), nn.Sequential(nn.BatchNorm(2), nn.ReLU(), nn.Conv2D(2, 2, 3, padding=1))),
            nn.Concat(nn.Identity(), nn.Sequential(nn.BatchNorm(4), nn.Uout(0.2), nn.Conv2D(4, 2, 1))),
            nn.MaxPool2D(2), nn.GlobalAvgPool(), nn.Dense(6, 2)), (3, 2, 4, 4)),
        "small-cnn": (nn.Sequential(nn.Conv2D(1, 3, 3, stride=2, padding=1), nn.BatchNorm(3),
                                    nn.LeakyReLU(0.2), nn.AvgPool2D(2, 1), nn.Flatten(),
                                    nn.Dense(12, 4), nn.GaussianDropout(0.2), nn.Dense(4, 2)),
                      (3, 1, 6, 6)),
    }


@pytest.mark.parametrize("name", list(containers()))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_containers(name, mode):
    model, shape = containers()[name]
    model.initialize(7)
    # eval-mode BatchNorm with non-trivial running statistics
    for _, layer in model.walk():
        if isinstance(layer, nn.BatchNorm):
            layer.buffers["running_mean"][:] = 0.3
            layer.buffers["running_var"][:] = 1.7
    errors = check(model, normal(2, shape), mode)
    assert len(errors) == 1 + sum(1 for _ in model.named_parameters())


class _WrongDense(nn.Dense):
    def _backward(self, dout, x):
        dx, grads = super()._backward(dout, x)
        grads["bias"] = grads["bias"] * 1.001
        return dx, grads


def test_gradcheck_catches_a_wrong_backward():
    error, errors = gradcheck(_WrongDense(3, 2).initialize(0), normal(0, (4, 3)), details=True)
    assert errors["bias"] == pytest.approx(0.001, rel=0.01)
    assert errors["input"] < TOL and error > 1e-4


def test_gradcheck_leaves_the_model_untouched():
    model = nn.Sequential(nn.Dense(3, 4), nn.BatchNorm(4), nn.Dropout(0.5), seed=0)
    before, rng_before = model.state_dict(), model.rng_state()
    gradcheck(model, normal(0, (5, 3)))
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert model.rng_state() == rng_before and model.dtype == np.float32


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2D(3, 4, 3, stride=2, padding=1), (7, 3, 6, 5)),
    (lambda: nn.Conv1D(2, 3, 3, padding="same", dilation=2), (5, 2, 9)),
    (lambda: nn.Conv2D(4, 6, 3, stride=(2, 1), padding=1, groups=2), (7, 4, 6, 5)),
    (lambda: nn.Conv1D(3, 3, 3, stride=2, padding=1, groups=3), (5, 3, 9)),
])
@pytest.mark.parametrize("chunk_bytes", [1, 300])
def test_conv_batch_chunks_change_nothing(make, shape, chunk_bytes):
    whole = make().initialize(0).astype(np.float64)
    chunked = make().initialize(0).astype(np.float64)
    chunked.chunk_bytes = chunk_bytes  # 1 sample per chunk, or a few
    assert len(chunked._chunks((shape[0], shape[1], 1, shape[-1]) if len(shape) == 3 else shape, 8)) > 1
    x = normal(4, shape)
    np.testing.assert_allclose(chunked(x), whole(x), rtol=1e-13)
    dout = normal(5, whole(x).shape)
    np.testing.assert_allclose(chunked.backward(dout), whole.backward(dout), rtol=1e-12)
    for key in whole.grads:
        np.testing.assert_allclose(chunked.grads[key], whole.grads[key], rtol=1e-12)
    check(chunked, x)


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_keeps_its_input_not_its_patches(channels_last):
    """Backward rebuilds the patches; between forward and backward the layer holds its
    input (a view of it), not the 25x larger patches of a 5x5 kernel."""
    conv = nn.Conv2D(2, 3, 5, stride=(1, 2) if channels_last else 1, padding=2).initialize(0)
    assert conv.channels_last == channels_last
    x = normal(6, (4, 2, 8, 8)).astype(np.float32)
    conv(x)
    kept = [a for a in conv._cache if isinstance(a, np.ndarray)]
    assert sum(a.nbytes for a in kept) == x.nbytes
    assert all(np.shares_memory(a, x) for a in kept)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Sequential(nn.Conv1D(1, 4, 3, padding="same"), nn.BatchNorm(4), nn.ReLU(),
                           nn.Residual(nn.Sequential(nn.Conv1D(4, 4, 3, padding="same"))),
                           nn.Concat(nn.Identity(), nn.Conv1D(4, 2, 1)), nn.GlobalAvgPool(),
                           nn.Dense(6, 3)), (5, 1, 8)),
    (lambda: nn.Dense(3, 2), (4, 3)),
    (lambda: nn.Conv2D(4, 6, 3, padding=1, groups=2), (3, 4, 5, 6)),
    (lambda: nn.Conv2D(4, 4, 3, stride=(1, 2), padding=1, groups=4), (3, 4, 5, 6)),
])
def test_backward_without_the_input_gradient_gives_the_same_parameter_gradients(make, shape):
    model, twin = make().initialize(0), make().initialize(0)
    x = normal(0, shape)
    dout = normal(1, model(x).shape)
    twin(x)
    assert model.backward(dout).shape == shape
    assert twin.backward(dout, input_grad=False) is None
    for (key, _, grad), (_, _, twin_grad) in zip(model.named_parameters(), twin.named_parameters()):
        np.testing.assert_array_equal(twin_grad, grad, err_msg=key)
