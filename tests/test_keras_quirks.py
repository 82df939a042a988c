"""What only Keras 3 models have (issue 12, part 2), on Keras' torch backend: nested
models' paths, Keras' conventions (momentum, channels last, channels_first layers,
the population variance), its noise layers, Batch Renormalization, a model trained
with fit(), Keras' error messages, and the same report as the varshift twin of a
model, train pass included.

What every framework shares (numbers against an oracle, state, failures, recalibrate's
statistics, frozen BatchNorm, Dropout upstream of BatchNorm) is in
``test_conformance.py``.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch", reason='Keras runs on torch here: pip install ".[keras,torch]"')
keras = pytest.importorskip("keras", reason='keras is not installed: pip install ".[keras]"')
if keras.backend.backend() != "torch":
    pytest.skip("keras was imported before with another backend", allow_module_level=True)

from keras import layers as L  # noqa: E402

import varshift  # noqa: E402
from varshift import diagnose, measure, nn, recalibrate  # noqa: E402
from varshift.measurement import UncontrolledNoiseWarning  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' torch backend


def numpy(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def every_layer(model):
    return list(model._flatten_layers(include_self=True, recursive=True))


def state(model):
    """Every variable (weights, moving statistics, seed-generator states) by path, every
    layer's trainable flag, and whether a layer's call is wrapped."""
    return ({v.path: numpy(v).copy() for v in model.variables},
            [(layer.name, layer.trainable) for layer in every_layer(model)],
            [layer.name for layer in every_layer(model) if "call" in vars(layer)])


def assert_same_state(model, before, except_paths=()):
    values, flags, wrapped = state(model)
    assert flags == before[1] and wrapped == before[2] == []
    assert values.keys() == before[0].keys()
    for path, value in values.items():
        if path not in except_paths:
            assert value.tobytes() == before[0][path].tobytes(), path


def data(n=512, d=6, seed=0, scale=2.0, offset=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * scale + offset).astype("float32")


def nested(frozen=False):
    """Dense -> Dropout -> nested Sequential [Dense, BatchNorm] -> ReLU -> BatchNorm(0.9)
    -> Dense, with trained-looking moving statistics."""
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((8,)), L.Dense(8, name="d"),
                              L.BatchNormalization(name="bn")], name="inner")
    inp = keras.Input((6,))
    h = inner(L.Dropout(0.4, name="drop")(L.Dense(8, name="d0")(inp)))
    top = L.BatchNormalization(momentum=0.9, name="bn2", trainable=not frozen)
    model = keras.Model(inp, L.Dense(2, name="out")(top(L.ReLU(name="relu")(h))), name="outer")
    rng = np.random.default_rng(1)
    for bn in (inner.layers[1], top):
        gamma, beta = rng.uniform(0.5, 2, 8), rng.normal(0, 0.5, 8)
        bn.set_weights([gamma, beta, rng.normal(0, 1, 8), rng.uniform(0.5, 3, 8)])
    return model


def codes(findings):
    return sorted({(f.code, f.layer) for f in findings})


# ------------------------------------------------------------------ the report
def test_report_of_a_nested_functional_model():
    """Paths through nested models, Keras' settings converted, the inputs of a
    BatchNorm inside a nested model (flat models' numbers: test_conformance.py)."""
    model, x = nested(), data()
    before = state(model)
    report = measure(model, x, batch_size=128)
    assert_same_state(model, before)
    assert [(r.name, r.kind, r.shape) for r in report.layers] == [
        ("d0", "dense", (8,)), ("drop", "dropout", (8,)), ("inner/d", "dense", (8,)),
        ("inner/bn", "batchnorm", (8,)), ("relu", "activation", (8,)),
        ("bn2", "batchnorm", (8,)), ("out", "dense", (2,))]
    assert report.layers[0].layer == "Dense(units=8, activation=linear)"
    b = report.bn[0]
    assert (b.name, b.num_features, b.eps, b.num_batches_tracked, b.frozen) == (
        "inner/bn", 8, 1e-3, None, False)
    assert b.momentum == pytest.approx(0.01) and report.bn[1].momentum == pytest.approx(0.1)
    bn = model.get_layer("inner").get_layer("bn")
    np.testing.assert_array_equal(b.moving_var, numpy(bn.moving_variance).astype(float))
    # the real statistics are those of the inputs in inference mode, computed directly
    h = numpy(model.get_layer("inner").get_layer("d")(model.get_layer("d0")(x))).astype(float)
    np.testing.assert_allclose(b.real_mean, h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.real_var, h.var(0), rtol=1e-5)  # Keras' population variance
    a = b.attribution
    assert a["dropout"] < 0.8 and a["upstream"] == pytest.approx(1.0, abs=1e-12)
    assert [b.frozen for b in measure(nested(frozen=True), x, batch_size=128).bn] == [
        False, True]


def test_torch_tensors_and_triples_as_data():
    """Tensors of Keras' backend, and (x, y, sample_weight) batches (arrays, pairs and
    dicts: test_conformance.py)."""
    import torch

    model, x = nested(), data(256)
    y = np.zeros(len(x), "int64")
    reference = measure(model, x, batch_size=64).to_json()
    forms = [torch.from_numpy(x), (torch.from_numpy(x), torch.from_numpy(y)),
             [(x[i:i + 64], y[i:i + 64], y[i:i + 64]) for i in range(0, 256, 64)],
             [torch.from_numpy(x[i:i + 64]) for i in range(0, 256, 64)]]
    for form in forms:
        assert measure(model, form, batch_size=64).to_json() == reference


# ------------------------------------------------------------------ parity with varshift
class SharedMasks:
    """Dropout masks by call number, the same in both engines: the i-th mask drawn is
    Bernoulli from seed i, drawn in the channels-first shape."""

    def __init__(self):
        self.calls = 0

    def draw(self, shape, rate):
        self.calls += 1
        keep = np.random.default_rng(self.calls).random(shape) >= rate
        return keep / (1.0 - rate)


def _keras_twin(model, shape):
    """The Keras (channels-last) model with ``model``'s weights: Dense kernels
    transposed, Conv kernels (O, I, *K) -> (*K, I, O), BatchNorm.keras settings."""
    rank = len(shape) - 1
    found = []
    for layer in model.layers:
        if isinstance(layer, nn.Dense):
            found.append((L.Dense(layer.out_features),
                          [layer.params["weight"].T, layer.params["bias"]]))
        elif isinstance(layer, (nn.Conv1D, nn.Conv2D)):
            conv = L.Conv1D if rank == 2 else L.Conv2D
            w = layer.params["weight"]
            found.append((conv(w.shape[0], w.shape[2:], padding="same"),
                          [np.transpose(w, tuple(range(2, w.ndim)) + (1, 0)),
                           layer.params["bias"]]))
        elif isinstance(layer, nn.BatchNorm):
            found.append((L.BatchNormalization(momentum=1 - layer.momentum, epsilon=layer.eps),
                          [layer.params["weight"], layer.params["bias"],
                           layer.buffers["running_mean"], layer.buffers["running_var"]]))
        elif isinstance(layer, nn.Dropout):
            found.append((L.Dropout(layer.rate), []))
        elif isinstance(layer, nn.ReLU):
            found.append((L.ReLU(), []))
        elif isinstance(layer, nn.GlobalAvgPool):
            found.append(((L.GlobalAveragePooling1D if rank == 2
                           else L.GlobalAveragePooling2D)(), []))
    channels_last = (*shape[2:], shape[1]) if rank > 1 else shape[1:]
    twin = keras.Sequential([keras.Input(channels_last)] + [k for k, _ in found])
    for k, weights in found:
        if weights:
            k.set_weights(weights)
    return twin


def _varshift_model(kind):
    """Dropout before a Keras-convention BatchNorm, twice, with trained-looking
    statistics."""
    if kind == "dense":
        layers = [nn.Dense(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Dense(16, 16),
                  nn.BatchNorm.keras(16), nn.ReLU(), nn.Dropout(0.2),
                  nn.BatchNorm.keras(16, momentum=0.9), nn.Dense(16, 3)]
        shape = (400, 6)
    else:
        conv = nn.Conv1D if kind == "conv1d" else nn.Conv2D
        layers = [conv(3, 8, 3, padding="same"), nn.Dropout(0.3), nn.BatchNorm.keras(8),
                  nn.ReLU(), conv(8, 8, 3, padding="same"), nn.BatchNorm.keras(8),
                  nn.GlobalAvgPool(), nn.Dense(8, 2)]
        shape = (120, 3, 10) if kind == "conv1d" else (60, 3, 6, 5)
    model = nn.Sequential(*layers, seed=0)
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 1.5 + 0.5).astype("float32")
    recalibrate(model, x, dropout="on", reports=False)
    for layer in model.layers:
        if isinstance(layer, nn.BatchNorm):
            c = layer.num_features
            layer.params["weight"][...] = rng.uniform(0.5, 2, c)
            layer.params["bias"][...] = rng.normal(0, 0.5, c)
            mean, var = layer.buffers["running_mean"], layer.buffers["running_var"]
            layer.set_running_stats(mean + rng.normal(0, 0.2, c) * np.sqrt(var),
                                    var * rng.uniform(0.7, 1.4, c), 7)
    return model, x


def _close(ours, theirs, what, rtol=1e-6):
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    same = ours == theirs  # also inf (a channel whose real variance is 0)
    scale = max(np.abs(ours[~same]).max(initial=0), 1e-6)
    err = np.abs(ours - theirs)[~same].max(initial=0) / scale
    assert err < rtol, f"{what}: relative error {err:.3g}"


def _moments_close(ours, theirs, what):
    assert ours.count == theirs.count, what
    _close(ours.mean, theirs.mean, f"{what} mean")
    _close(ours.m2, theirs.m2, f"{what} m2")


@pytest.mark.parametrize("kind", ["dense", "conv1d", "conv2d"])
def test_same_report_as_the_varshift_twin(kind, monkeypatch):
    """Every column to 1e-6 in float32, the train-mode ones too: both engines draw
    their Dropout masks from the same :class:`SharedMasks`."""
    model, x = _varshift_model(kind)
    twin = _keras_twin(model, x.shape)
    masks = SharedMasks()
    monkeypatch.setattr(nn.Dropout, "_noise",
                        lambda self, shape, dtype: masks.draw(shape, self.rate).astype(dtype))

    def keras_dropout(inputs, rate, noise_shape=None, seed=None):
        shape = tuple(inputs.shape)
        mask = masks.draw((shape[0], shape[-1], *shape[1:-1]), rate)
        return inputs * keras.ops.convert_to_tensor(np.moveaxis(mask, 1, -1).astype("float32"))

    monkeypatch.setattr(keras.src.backend.random, "dropout", keras_dropout)
    ours = measure(model, x, batch_size=40)
    masks.calls = 0
    theirs = measure(twin, np.moveaxis(x, 1, -1), batch_size=40)
    dropouts = sum(isinstance(layer, nn.Dropout) for layer in model.layers)
    assert masks.calls == -(-len(x) // 40) * dropouts  # one mask per Dropout layer and batch
    assert [r.kind for r in theirs.layers] == [r.kind for r in ours.layers]
    for a, b in zip(ours.layers, theirs.layers):
        assert b.shape == a.shape[1:] + a.shape[:1], a.name  # channels last
        _moments_close(a.train, b.train, f"layer {a.name} train")
        _moments_close(a.eval, b.eval, f"layer {a.name} eval")
        _close(a.var_ratio, b.var_ratio, f"layer {a.name} eval/train")
    assert len(ours.bn) == len(theirs.bn) == 2
    for a, b in zip(ours.bn, theirs.bn):
        assert (a.index, a.num_features, a.momentum, a.eps, a.frozen) == (
            b.index, b.num_features, b.momentum, b.eps, b.frozen)
        _close(a.moving_mean, b.moving_mean, "moving_mean", 1e-7)
        _close(a.moving_var, b.moving_var, "moving_var", 1e-7)
        for moments in ("real", "train", "nodrop"):
            _moments_close(getattr(a, moments), getattr(b, moments), f"{a.name} {moments}")
        _close(a.shift, b.shift, "shift")
        _close(a.channel_shift, b.channel_shift, "channel_shift")
        _close(a.mean_shift, b.mean_shift, "mean_shift")
        for factor, value in a.attribution.items():
            _close(value, b.attribution[factor], factor)
    assert ours.bn[0].attribution["dropout"] < 0.9  # the masks mattered


# ------------------------------------------------------------------ recalibrate
def test_recalibrate_refuses_batch_renormalization_untouched():
    model = keras.Sequential([keras.Input((4,)), L.Dense(4), L.BatchNormalization(renorm=True)])
    before = state(model)
    with pytest.raises(ValueError, match=r"recalibrate: BatchNormalization 'batch_normalization"
                                         r".*' uses renorm=True"):
        recalibrate(model, data(64, 4))
    assert_same_state(model, before)


# ------------------------------------------------------------------ every noise kind
@pytest.mark.parametrize("noise", ["Dropout", "SpatialDropout1D", "GaussianDropout",
                                   "GaussianNoise", "AlphaDropout"])
def test_every_dropout_kind_before_a_batchnorm(noise):
    keras.utils.set_random_seed(4)
    arg = 0.4 if noise != "GaussianNoise" else 1.0
    model = keras.Sequential([keras.Input((10, 4)), L.Conv1D(6, 3, padding="same"), L.ReLU(),
                              getattr(L, noise)(arg, name="noise"), L.BatchNormalization(name="bn"),
                              L.GlobalAveragePooling1D(), L.Dense(2)])
    x = np.moveaxis(data(256 * 4, 10).reshape(256, 4, 10), 1, -1)
    report = measure(model, x, batch_size=64)
    assert [r.kind for r in report.layers][2:4] == ["dropout", "batchnorm"]
    assert report.bn[0].attribution["dropout"] < 0.9
    found = [f for f in diagnose(model, x, batch_size=64) if f.code == "DROPOUT_BEFORE_BN"]
    assert [(f.layer, f.evidence["dropout_layers"]) for f in found] == [
        ("bn", f"noise ({noise} {arg})")]
    after = recalibrate(model, x, batch_size=64).after
    assert after.bn[0].shift == pytest.approx(1, rel=1e-5)


def test_channels_first_batchnorm_reports_along_its_axis():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((3, 9)), L.Conv1D(5, 3, data_format="channels_first"),
                              L.BatchNormalization(axis=1, name="bn"), L.Dense(4)])
    x = data(128 * 27, 1).reshape(128, 3, 9)
    report = measure(model, x, batch_size=64)
    assert report.bn[0].num_features == 5
    conv, bn, dense = report.layers
    assert conv.shape == (5, 7) and conv.eval.channels == 5 and bn.eval.channels == 5
    assert dense.shape == (5, 4) and dense.eval.channels == 4
    h = numpy(model.layers[0](x)).astype(float)
    np.testing.assert_allclose(report.bn[0].real_var, h.transpose(1, 0, 2).reshape(5, -1).var(
        1), rtol=1e-5)
    assert recalibrate(model, x, batch_size=64).after.bn[0].shift == pytest.approx(1, rel=1e-5)


# ------------------------------------------------------------------ the linear autoencoder
def test_linear_autoencoder_stale_statistics_found_and_fixed(tmp_path):
    """The posted question rebuilt in Keras: 12 - Dense 8 - BatchNorm(0.99) - Dense 12,
    batch 32, 60 updates (100 samples, 10% for validation, 20 epochs), on data that is
    not standardised (scale 3, mean 1), so that what is left of the initial 0/1 values
    shows."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), L.Dense(8), L.BatchNormalization(),
                              L.Dense(12)])
    x = data(100, 12, scale=3.0, offset=1.0)
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    model.fit(x, x, batch_size=32, epochs=20, validation_split=0.1, verbose=0)
    model.save(tmp_path / "ae.keras")
    inspected = varshift.inspect(tmp_path / "ae.keras")
    assert inspected.optimizer_iterations == 60
    assert ("STATS_NEAR_INIT", "error") in {(f.code, f.severity) for f in inspected.findings}
    # the evidence and the fix speak Keras' convention (the weight of the old value)
    findings = diagnose(model, x[:90], batch_size=32)
    (stale,) = [f for f in findings if f.code == "STALE_RUNNING_STATS"]
    assert stale.severity == "error" and stale.evidence["var_shift"] > 1.5
    assert stale.evidence["momentum"] == pytest.approx(0.99) and "smaller momentum" in stale.fix
    fixed = recalibrate(model, x[:90], batch_size=32)
    assert fixed.before.bn[0].shift > 1.5 and fixed.after.bn[0].shift == pytest.approx(1)
    assert not [f for f in diagnose(model, x[:90], batch_size=32)
                if f.code in ("STALE_RUNNING_STATS", "STATS_AT_INIT")]


# ------------------------------------------------------------------ bad input
def test_bad_input_names_argument_layer_expected_and_actual():
    model = nested()
    with pytest.raises(ValueError, match=r"measure: data batch 0 of shape \(32, 4\): model "
                                         r"'outer': .*expected shape=\(None, 6\), found "
                                         r"shape=\(32, 4\)"):
        measure(model, np.ones((32, 4), "float32"))
    inner = model.get_layer("inner")
    with pytest.raises(ValueError, match=r"(?s)measure: data batch 0 of shape \(32, 5\): .*layer "
                                         r"'d'.*expected axis -1 of input shape to have value 8, "
                                         r"but received input with shape \(32, 5\)"):
        measure(inner, np.ones((32, 5), "float32"))
    with pytest.raises(ValueError, match="looks like labels"):
        measure(model, np.arange(10))
    with pytest.raises(TypeError, match="measure: data batch 0 must be numeric"):
        measure(model, [np.array([["a"] * 6] * 4)])
    with pytest.raises(TypeError, match=r"model must be .* a Keras 3 model or a Flax NNX module, "
                                        r"got 'model' \(str\)"):
        measure("model", data())
    unbuilt = keras.Sequential([L.Dense(3), L.BatchNormalization()])
    with pytest.raises(ValueError, match=r"diagnose: layer 'sequential.*' \(Sequential\) is not "
                                         r"built yet; call the model on a batch once"):
        diagnose(unbuilt, data())
    assert not unbuilt.built


def test_uncontrolled_noise_is_detected():
    class AlwaysNoisy(keras.layers.Layer):
        def call(self, x):
            return x + keras.random.normal(keras.ops.shape(x))

    model = keras.Sequential([keras.Input((6,)), L.Dense(4), AlwaysNoisy(), L.BatchNormalization()])
    with pytest.warns(UncontrolledNoiseWarning):
        measure(model, data(128))
    assert "EVAL_NOT_DETERMINISTIC" in {f.code for f in diagnose(model, data(128))}


@pytest.mark.parametrize("keras_momentum, advice", [(0.1, "momentum=0.9"), (1.0, "momentum=0.99")])
def test_suspicious_momentum_is_explained_in_keras_convention(keras_momentum, advice):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8),
                              L.BatchNormalization(momentum=keras_momentum, name="bn"), L.Dense(2)])
    found = [f for f in diagnose(model, data(256), batch_size=64) if f.code == "SUSPICIOUS_MOMENTUM"]
    assert [f.layer for f in found] == ["bn"]
    assert f"momentum={keras_momentum:g}" in found[0].explanation
    assert "Keras'" in found[0].explanation and advice in found[0].fix
