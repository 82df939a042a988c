"""varshift.recalibrate."""

import copy
import sys
import warnings

import numpy as np
import pytest
from helpers import blobs, dropout_before_bn, trained

from varshift import diagnose, evaluate, measure, nn, recalibrate


def test_after_shift_is_one_on_the_same_data_and_only_running_stats_change():
    x, y = blobs()
    model = trained(dropout_before_bn(), (x, y))
    model[2].eval()  # a mixed mode to restore
    params = {k: v.copy() for k, v, _ in model.named_parameters()}
    rng = model.rng_state()
    modes = [layer.training for _, layer in model.walk()]
    result = recalibrate(model, x, batch_size=128)
    assert [b.shift for b in result.before.bn][1] > 2
    for b in result.after.bn:
        assert b.shift == pytest.approx(1.0, abs=1e-5)
    assert all(np.array_equal(params[k], v) for k, v, _ in model.named_parameters())
    assert model.rng_state() == rng and [layer.training for _, layer in model.walk()] == modes
    assert result.layers == ["4", "7"]
    assert int(model[4].buffers["num_batches_tracked"]) == 16  # 2000 samples / 128
    assert "shift before" in str(result)


def test_running_stats_are_the_population_statistics_layer_by_layer():
    x, y = blobs(1000)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    recalibrate(model, x, batch_size=100)
    model.eval()
    h = x
    for layer in model.layers[:4]:
        h = layer(h)
    np.testing.assert_allclose(model[4].buffers["running_mean"], h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model[4].buffers["running_var"], h.astype(np.float64).var(0, ddof=1), rtol=1e-5)
    for layer in model.layers[4:7]:  # uses the new statistics of layer 4 upstream
        h = layer(h)
    np.testing.assert_allclose(model[7].buffers["running_var"], h.astype(np.float64).var(0, ddof=1), rtol=1e-5)


def test_recalibration_with_dropout_on_keeps_the_shift():
    x, y = blobs()
    model = trained(dropout_before_bn(), (x, y))
    on = recalibrate(copy.deepcopy(model), x, dropout="on")
    off = recalibrate(model, x, dropout="off")
    assert on.after.bn[1].shift > 1.5 and off.after.bn[1].shift == pytest.approx(1.0, abs=1e-5)


def test_holdout_reports_and_accuracy_recovers():
    x, y = blobs(3000)
    xt, yt = blobs(1000, seed=1)
    model = trained(dropout_before_bn(rate=0.6), (x, y))
    before = evaluate(model, (xt, yt), nn.CrossEntropyLoss())
    result = recalibrate(model, x, holdout=xt)
    after = evaluate(model, (xt, yt), nn.CrossEntropyLoss())
    assert after["loss"] < before["loss"]
    assert result.after.num_samples == 1000
    assert result.after.bn[1].shift < result.before.bn[1].shift
    assert result.after.bn[1].shift < 1.1


def test_argument_errors_and_failure_restores_the_model(monkeypatch):
    x, y = blobs(300)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    with pytest.raises(ValueError, match="dropout must be 'off' or 'on'"):
        recalibrate(model, x, dropout="eval")
    with pytest.raises(TypeError, match="one-shot iterator"):
        recalibrate(model, iter([x]))
    before = model.state_dict()
    module = sys.modules["varshift.recalibration"]

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    original = module._recalibrate_layer
    monkeypatch.setattr(module, "_recalibrate_layer", failing)
    with pytest.raises(RuntimeError, match="boom"):
        recalibrate(model, x)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_measure_after_recalibration_on_a_convnet():
    rng = np.random.default_rng(0)
    x = rng.random((300, 1, 12, 12), dtype=np.float32)
    model = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.Dropout(0.4), nn.BatchNorm(4), nn.ReLU(),
                          nn.Conv2D(4, 4, 3, stride=2), nn.BatchNorm(4), nn.GlobalAvgPool(),
                          nn.Dense(4, 2), seed=0)
    for start in range(0, 300, 50):
        model(x[start:start + 50])  # running stats from train mode (with Dropout)
    assert measure(model, x).bn[0].shift > 1.2
    result = recalibrate(model, x, batch_size=64)
    assert all(b.shift == pytest.approx(1.0, abs=1e-5) for b in result.after.bn)


def test_without_reports_the_statistics_are_the_same():
    x, y = blobs(600)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    twin = copy.deepcopy(model)
    quiet = recalibrate(model, x, batch_size=100, reports=False)
    recalibrate(twin, x, batch_size=100)
    assert quiet.before is None and quiet.after is None and quiet.layers == ["4", "7"]
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, twin.state_dict()[key])
    assert "no reports" in str(quiet)
    with pytest.raises(ValueError, match="no reports"):
        quiet.plot()


@pytest.mark.parametrize("scale", [1e-22, 1e-38])
def test_variances_below_the_dtype_range_warn_and_are_not_called_stale(scale):
    x = (np.random.default_rng(0).standard_normal((400, 4)) * scale).astype(np.float32)
    model = nn.Sequential(nn.BatchNorm(4), nn.Dense(4, 2), seed=0)
    with pytest.warns(UserWarning, match=r"recalibrate: BatchNorm '0': the variance of channels "
                                         r"0, 1, 2, 3 is too small for the layer's dtype .*"
                                         r"outputs are unaffected") as caught:
        recalibrate(model, x)
    assert caught[0].filename == __file__  # the user's line
    assert diagnose(model, x) == []
    twin = nn.Sequential(nn.BatchNorm(4), nn.Dense(4, 2), seed=0).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # float64 holds these variances
        result = recalibrate(twin, x.astype(np.float64))
    assert result.after.bn[0].shift == pytest.approx(1.0)


# ---------------------------------------------------------------- passes that replay
# recalibrate's pass k replays kept layer outputs (varshift.backends.replay); these
# tests hold it to the layer-by-layer definition, computed here without varshift.

def _torch_layer_by_layer(model, x, batch_size):
    """Each BatchNorm in call order gets the mean and unbiased variance of its input
    over ``x``, with the BatchNorms before it already set (the definition)."""
    import torch

    model.eval()
    order = []
    handles = [m.register_forward_pre_hook(lambda m, args: order.append(m))
               for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        model(x[:2])
    for handle in handles:
        handle.remove()
    for bn in order:
        seen = []
        handle = bn.register_forward_pre_hook(
            lambda m, args, seen=seen: seen.append(args[0].double()))
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size])
        handle.remove()
        h = torch.cat([s.transpose(0, 1).reshape(s.shape[1], -1) for s in seen], 1)
        bn.running_mean = h.mean(1).float()
        bn.running_var = h.var(1, unbiased=True).float()
    return order


def _damaged_torch(model, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean = torch.rand(m.num_features, generator=gen) - 0.5
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5
    return model.eval()


class _GlobalSkip:
    """Built lazily (torch is imported by the tests that use it)."""

    @staticmethod
    def make():
        import torch
        from torch import nn as tnn

        class GlobalSkip(tnn.Module):
            """The last BatchNorm reads the raw input again: no pass may replay it."""

            def __init__(self):
                super().__init__()
                self.conv1, self.bn1 = tnn.Conv2d(3, 3, 3, padding=1), tnn.BatchNorm2d(3)
                self.conv2, self.bn2 = tnn.Conv2d(3, 3, 3, padding=1), tnn.BatchNorm2d(3)
                self.bn3 = tnn.BatchNorm2d(3)

            def forward(self, x):
                h = torch.relu(self.bn1(self.conv1(x)))
                h = torch.relu(self.bn2(self.conv2(h)))
                return self.bn3(h + x)

        return GlobalSkip()


@pytest.mark.parametrize("shape", ["resnet", "densenet", "global_skip"])
def test_torch_statistics_equal_the_layer_by_layer_definition(shape):
    torch = pytest.importorskip("torch")
    from torchvision_like import densenet121, resnet18

    from varshift.backends import session_for
    from varshift.backends.modes import EVAL
    from varshift.backends.replay import plan_passes

    torch.manual_seed(0)
    model = {"resnet": lambda: resnet18(width=4),
             "densenet": lambda: densenet121(growth_rate=4, num_init_features=8,
                                             block_config=(2, 3)),
             "global_skip": _GlobalSkip.make}[shape]()
    model = _damaged_torch(model)
    x = torch.randn(150, 3, 16, 16)
    expected = copy.deepcopy(model)
    order = _torch_layer_by_layer(expected, x, 64)
    recalibrate(model, x, batch_size=64, reports=False)
    names = {m: name for name, m in expected.named_modules()}
    got = dict(model.named_modules())
    for bn in order:
        mine = got[names[bn]]
        np.testing.assert_allclose(mine.running_mean.numpy(), bn.running_mean.numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=names[bn])
        np.testing.assert_allclose(mine.running_var.numpy(), bn.running_var.numpy(),
                                   rtol=1e-5, err_msg=names[bn])
        assert int(mine.num_batches_tracked) == 3
    # which passes replay: all but the first; with a skip from the input, not the last
    session = session_for(copy.deepcopy(model), "recalibrate")
    with session.preserved(0):
        session.trace(x)
        plan = plan_passes(session, [names[bn] for bn in order], x, EVAL)
    replaying = [plan.replays(k) for k in range(len(order))]
    assert replaying == ([False] + [True] * (len(order) - 1) if shape != "global_skip"
                         else [False, True, False])


def test_torch_each_convolution_computes_the_data_once():
    """A regression to one pass from the input per BatchNorm computes the first
    convolutions once per BatchNorm."""
    torch = pytest.importorskip("torch")
    from torchvision_like import resnet18

    from varshift.backends.replay import PROBE_SAMPLES

    computed = {}

    class Counting(torch.nn.Conv2d):
        def forward(self, x):  # not called where the layer is replayed
            computed[id(self)] = computed.get(id(self), 0) + len(x)
            return super().forward(x)

    torch.manual_seed(0)
    model = resnet18(width=4)
    for m in list(model.modules()):
        for child_name, child in list(m.named_children()):
            if type(child) is torch.nn.Conv2d:
                counting = Counting(child.in_channels, child.out_channels, child.kernel_size,
                                    child.stride, child.padding, bias=child.bias is not None)
                counting.load_state_dict(child.state_dict())
                setattr(m, child_name, counting)
    model = _damaged_torch(model)
    n, batch = 256, 64
    x = torch.randn(n, 3, 16, 16)
    twin = copy.deepcopy(model)
    recalibrate(model, x, batch_size=batch, reports=False)
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    convs = [id(m) for m in model.modules() if isinstance(m, Counting)]
    # the data once, the trace (3 x the probe's samples), the probe a few times, one
    # sample per batch and pass
    bound = n + 3 * PROBE_SAMPLES + 4 * PROBE_SAMPLES + bns * (n // batch)
    assert all(computed.get(c, 0) <= bound for c in convs), computed
    # the first convolution: the data once, the trace (its inference-mode pass is the
    # probe's full pass) and the probe's plain first pass; replayed afterwards
    assert computed[id(model.conv1)] == n + 3 * PROBE_SAMPLES + PROBE_SAMPLES
    computed.clear()
    recalibrate(twin, x, batch_size=batch, reports=False, cache_bytes=0)  # plain passes
    assert computed[id(twin.conv1)] == n * bns + 3 * PROBE_SAMPLES
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_engine_replayed_passes_equal_plain_passes_and_the_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2, 8, 8)).astype(np.float32)
    block = nn.Sequential(nn.Conv2D(4, 4, 3, padding=1), nn.BatchNorm(4), nn.ReLU(),
                          nn.Conv2D(4, 4, 3, padding=1), nn.BatchNorm(4))
    model = nn.Sequential(nn.Conv2D(2, 4, 3, padding=1), nn.BatchNorm(4), nn.ReLU(),
                          nn.Residual(block), nn.ReLU(),
                          nn.Concat(nn.Sequential(nn.Conv2D(4, 3, 1), nn.BatchNorm(3)),
                                    nn.Sequential(nn.Conv2D(4, 3, 1), nn.BatchNorm(3))),
                          nn.BatchNorm(6), nn.GlobalAvgPool(), nn.Dense(6, 2), seed=0)
    for start in range(0, 300, 50):
        model(x[start:start + 50])  # running statistics from train mode
    twin = copy.deepcopy(model)
    recalibrate(model, x, batch_size=128, reports=False)
    recalibrate(twin, x, batch_size=128, reports=False, cache_bytes=0)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, twin.state_dict()[key], err_msg=key)
    model.eval()  # the definition for the last BatchNorm, upstream ones set
    h = x
    for layer in model.layers[:6]:
        h = layer(h)
    moved = np.moveaxis(h, 1, 0).reshape(6, -1).astype(np.float64)
    np.testing.assert_allclose(model[6].buffers["running_var"], moved.var(1, ddof=1), rtol=1e-5)


def test_keras_functional_statistics_equal_the_layer_by_layer_definition():
    from conftest import keras_on_torch

    keras = keras_on_torch()

    inputs = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn_a")(h))
    left = keras.layers.BatchNormalization(name="bn_b")(keras.layers.Conv2D(3, 1)(h))
    right = keras.layers.BatchNormalization(name="bn_c")(keras.layers.Conv2D(3, 1)(h))
    h = keras.layers.Concatenate()([left, right])
    h = keras.layers.BatchNormalization(name="bn_d")(keras.layers.Conv2D(4, 3)(h))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.uniform(-0.5, 0.5, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
    x = rng.standard_normal((200, 8, 8, 2)).astype(np.float32)
    recalibrate(model, x, batch_size=64, reports=False)
    for name in ["bn_a", "bn_b", "bn_c", "bn_d"]:  # the others are set: the definition
        layer = model.get_layer(name)
        seen = keras.ops.convert_to_numpy(keras.Model(inputs, layer.input)(x, training=False))
        seen = seen.reshape(-1, seen.shape[-1]).astype(np.float64)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), seen.mean(0),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance),
                                   seen.var(0), rtol=1e-5, err_msg=name)


def test_flax_replayed_passes_equal_plain_passes():
    pytest.importorskip("flax")
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(2, 4, (3, 3), rngs=rngs)
            self.bn1 = nnx.BatchNorm(4, rngs=rngs)
            self.conv2 = nnx.Conv(4, 4, (3, 3), rngs=rngs)
            self.bn2 = nnx.BatchNorm(4, rngs=rngs)
            self.bn3 = nnx.BatchNorm(4, rngs=rngs)

        def __call__(self, x):
            h = nnx.relu(self.bn1(self.conv1(x)))
            return self.bn3(nnx.relu(self.bn2(self.conv2(h))) + h)

    x = np.random.default_rng(0).standard_normal((120, 6, 6, 2)).astype(np.float32)
    model = Net(nnx.Rngs(0))
    model.train()
    model(x)  # running statistics from train mode
    model.eval()
    twin = nnx.clone(model)
    recalibrate(model, x, batch_size=50, reports=False)
    recalibrate(twin, x, batch_size=50, reports=False, cache_bytes=0)
    for a, b in ((model.bn1, twin.bn1), (model.bn2, twin.bn2), (model.bn3, twin.bn3)):
        np.testing.assert_array_equal(np.asarray(a.var[...]), np.asarray(b.var[...]))
        np.testing.assert_array_equal(np.asarray(a.mean[...]), np.asarray(b.mean[...]))


def test_cache_bytes_is_checked():
    x, _ = blobs(200)
    with pytest.raises((TypeError, ValueError), match="cache_bytes"):
        recalibrate(dropout_before_bn(), x, cache_bytes=-1)


def test_torch_an_early_layer_reaching_a_late_batchnorm_is_found_among_many():
    """More frontier layers than probe samples: the layers are tested in groups, and
    only the two that reach the last BatchNorm are kept."""
    torch = pytest.importorskip("torch")
    from torch import nn as tnn

    from varshift.backends import session_for
    from varshift.backends.modes import EVAL
    from varshift.backends.replay import PROBE_SAMPLES, plan_passes

    class LongSkip(tnn.Module):
        def __init__(self):
            super().__init__()
            self.first = tnn.Conv2d(3, 3, 1)
            self.chain = tnn.ModuleList(tnn.Conv2d(3, 3, 1) for _ in range(2 * PROBE_SAMPLES))
            self.bn0, self.bn1 = tnn.BatchNorm2d(3), tnn.BatchNorm2d(3)

        def forward(self, x):
            a = h = self.first(x)
            for conv in self.chain:
                h = conv(h)
            return self.bn1(torch.relu(self.bn0(h)) + a)

    torch.manual_seed(0)
    model = _damaged_torch(LongSkip().eval())
    x = torch.randn(100, 3, 6, 6)
    session = session_for(copy.deepcopy(model), "recalibrate")
    with session.preserved(0):
        session.trace(x)
        plan = plan_passes(session, ["bn0", "bn1"], x, EVAL)
    last = f"chain.{2 * PROBE_SAMPLES - 1}"
    assert plan.live[1] == ("first", last)
    assert len(plan.dead[1]) == 2 * PROBE_SAMPLES - 1
    assert plan.keep[0] == {"first", last}
    twin = copy.deepcopy(model)
    recalibrate(model, x, batch_size=32, reports=False)
    recalibrate(twin, x, batch_size=32, reports=False, cache_bytes=0)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_torch_recent_live_layers_of_a_long_frontier_are_found_copying_only_them():
    """More frontier layers than probe samples, the live one among the latest: one run
    tests the latest alone and replays the others with one-sample stand-ins, so only
    the latest are copied at the probe's size (the test above is the case where a
    stand-in reaches the BatchNorm, and the groups are tested)."""
    torch = pytest.importorskip("torch")
    from torch import nn as tnn

    from varshift.backends import session_for
    from varshift.backends.modes import EVAL
    from varshift.backends.replay import PROBE_SAMPLES, plan_passes

    class LongChain(tnn.Module):
        def __init__(self):
            super().__init__()
            self.chain = tnn.ModuleList(tnn.Conv2d(3, 3, 1) for _ in range(2 * PROBE_SAMPLES))
            self.bn0, self.after, self.bn1 = tnn.BatchNorm2d(3), tnn.Conv2d(3, 3, 1), \
                tnn.BatchNorm2d(3)

        def forward(self, x):
            for conv in self.chain:
                x = conv(x)
            return self.bn1(self.after(torch.relu(self.bn0(x))))

    torch.manual_seed(0)
    model = _damaged_torch(LongChain().eval())
    x = torch.randn(100, 3, 6, 6)
    session = session_for(copy.deepcopy(model), "recalibrate")
    taken = []
    take = session.adapter.take
    session.adapter.take = lambda tensor, index: taken.append(len(index)) or take(tensor, index)
    with session.preserved(0):
        session.trace(x)
        plan = plan_passes(session, ["bn0", "bn1"], x, EVAL)
    last = f"chain.{2 * PROBE_SAMPLES - 1}"
    assert plan.live[1] == (last,)
    assert len(plan.dead[1]) == 2 * PROBE_SAMPLES - 1
    assert taken == [PROBE_SAMPLES] * (PROBE_SAMPLES - 1)  # the latest, in one run
    twin = copy.deepcopy(model)
    recalibrate(model, x, batch_size=32, reports=False)
    recalibrate(twin, x, batch_size=32, reports=False, cache_bytes=0)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_keras_graph_calls_no_replayed_layer(monkeypatch):
    """In a functional model's replayed pass, the layers before the frontier are not
    called (their stand-ins are), and the statistics equal plain passes' bit for bit."""
    from conftest import keras_on_torch

    keras = keras_on_torch()

    inputs = keras.Input((6, 6, 2))
    first = keras.layers.Conv2D(3, 3, padding="same", name="first")
    h = keras.layers.BatchNormalization(name="bn_a")(first(inputs))
    h = keras.layers.BatchNormalization(name="bn_b")(keras.layers.Conv2D(3, 1)(h))
    h = keras.layers.BatchNormalization(name="bn_c")(keras.layers.Conv2D(3, 1)(h))
    model = keras.Model(inputs, h)
    x = np.random.default_rng(0).standard_normal((90, 6, 6, 2)).astype(np.float32)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    calls = {"first": 0}
    layer_call = keras.layers.Conv2D.__call__

    def counting(self, *args, **kwargs):
        if self.name == "first":
            calls["first"] += 1
        return layer_call(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Conv2D, "__call__", counting)
    recalibrate(twin, x, batch_size=30, reports=False, cache_bytes=0)
    plain, calls["first"] = calls["first"], 0
    stand_ins = []  # (the BatchNorm of the pass, the replayed layer)
    from varshift.backends.keras import KerasAdapter as adapter_class

    replayed = adapter_class._replayed

    def reporting(self, name):
        stand_in = replayed(self, name)
        return lambda: stand_ins.append((self._interceptor._target, name)) or stand_in()

    monkeypatch.setattr(adapter_class, "_replayed", reporting)
    recalibrate(model, x, batch_size=30, reports=False)
    # plain: the trace and 3 passes x 3 batches; replayed: the trace (whose inference
    # pass is the probe's full run), the first pass's 3 batches and the probe's first
    # pass (the later passes call none)
    assert calls["first"] == plain - 2 * 3 + 1
    # in the last passes, 'first' is read only by replayed layers: not even its
    # stand-in is called (the probe's one run of bn_b's pass, which finds the plan and
    # checks it, and its 3 batches call it)
    assert [target for target, name in stand_ins if name == "first"] == ["bn_b"] * 4
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras_graph_that_cannot_be_walked_replays_through_the_layers(monkeypatch):
    """Where a graph lacks the Keras internals that varshift's walk reads, the
    replayed layers are called and their wrapped calls replay them without computing:
    the statistics are those of plain passes, bit for bit."""
    from conftest import keras_on_torch

    keras = keras_on_torch()
    from varshift.backends import keras as keras_backend

    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", name="first")(inputs)
    skip = keras.layers.BatchNormalization(name="bn_a")(h)
    h = keras.layers.BatchNormalization(name="bn_b")(keras.layers.Conv2D(3, 1)(skip))
    h = keras.layers.Add()([keras.layers.Conv2D(3, 1)(h), skip])
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn_c")(h))
    x = np.random.default_rng(0).standard_normal((90, 6, 6, 2)).astype(np.float32)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    walked, computed = [], {"first": 0}
    readers = keras_backend._readers
    monkeypatch.setattr(keras_backend, "_readers",
                        lambda graph: walked.append(readers(graph) is not None) and None)
    conv_call = keras.layers.Conv2D.call

    def counting(self, *args, **kwargs):
        computed["first"] += self.name == "first"
        return conv_call(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Conv2D, "call", counting)
    recalibrate(twin, x, batch_size=30, reports=False, cache_bytes=0)
    plain, computed["first"] = computed["first"], 0
    recalibrate(model, x, batch_size=30, reports=False)
    assert walked and all(walked)  # this Keras could have been walked
    assert computed["first"] == plain - 2 * 3 + 1  # as in the test above
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_replay_copies_an_output_when_asked_for_and_records_it():
    """A replayed output is made when the model asks for it: a copy (a layer may
    change its input in place), or the kept output's samples in a swapped order."""
    from varshift.backends import session_for
    from varshift.backends.replay import Replay

    model = nn.Sequential(nn.Dense(3, 2), seed=0)
    adapter = session_for(model, "recalibrate").adapter
    a, b = np.arange(6.0).reshape(3, 2), np.ones((3, 2))
    replay = Replay(adapter, {"a": a, "b": b}, swaps={"b": np.array([1, 1, 2])})
    assert set(replay) == {"a", "b"} and len(replay) == 2 and "a" in replay
    assert replay.read == set() and replay.get("c") is None and replay.read == set()
    np.testing.assert_array_equal(replay.get("a"), a)
    assert replay.read == {"a"}
    got = replay["a"]
    np.testing.assert_array_equal(got, a)
    got[0, 0] = 99.0  # the kept output is not changed
    assert a[0, 0] == 0.0 and replay.read == {"a"}
    b[1] = 2.0
    np.testing.assert_array_equal(replay["b"], [[2, 2], [2, 2], [1, 1]])
    assert replay.read == {"a", "b"}


def _keras_plain_and_replayed(keras, model, x, batch_size):
    """``model`` recalibrated (the plan's passes) and a clone recalibrated by plain
    passes; asserts their statistics equal bit for bit; returns the plan."""
    from varshift.backends import session_for
    from varshift.backends.modes import EVAL
    from varshift.backends.replay import plan_passes

    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    session = session_for(model, "recalibrate")
    with session.preserved(0):
        session.trace(x)
        plan = plan_passes(session, [bn.name for bn in session.batchnorms()], x, EVAL)
    recalibrate(model, x, batch_size=batch_size, reports=False)
    recalibrate(twin, x, batch_size=batch_size, reports=False, cache_bytes=0)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    return plan


def test_keras_a_skip_from_the_input_fails_the_read_check_and_runs_plain():
    """The run that replays every frontier layer is a check: where the model reads
    its raw input after the frontier, it fails, and that pass runs plain."""
    from conftest import keras_on_torch

    keras = keras_on_torch()

    inputs = keras.Input((6, 6, 2))
    h = keras.layers.BatchNormalization(name="bn_a")(keras.layers.Conv2D(2, 3, padding="same")(
        inputs))
    h = keras.layers.BatchNormalization(name="bn_b")(keras.layers.Conv2D(2, 1)(h))
    h = keras.layers.Add()([keras.layers.Conv2D(2, 1)(h), inputs])
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn_c")(h))
    x = np.random.default_rng(0).standard_normal((70, 6, 6, 2)).astype(np.float32)
    plan = _keras_plain_and_replayed(keras, model, x, 30)
    assert [plan.replays(k) for k in range(3)] == [False, True, False]


def test_keras_many_read_layers_are_tested_and_only_the_live_kept():
    """More frontier layers read by the pass than probe samples: they are the
    candidates of the group testing (the other frontier layers are not read), and
    a layer read by a node that does not reach the BatchNorm is not kept."""
    from conftest import keras_on_torch

    from varshift.backends.replay import PROBE_SAMPLES

    keras = keras_on_torch()

    inputs = keras.Input((4, 4, 2))
    a = keras.layers.BatchNormalization(name="bn_a")(keras.layers.Conv2D(2, 1)(inputs))
    branches = [keras.layers.Conv2D(1, 1, name=f"branch{i}")(a)
                for i in range(PROBE_SAMPLES + 4)]
    deep = keras.layers.Concatenate(name="deep")(branches)
    for i in range(3):  # the branches are called before bn_b: on the frontier of bn_c
        deep = keras.layers.Conv2D(1, 1, name=f"deep{i}")(deep)
    b = keras.layers.BatchNormalization(name="bn_b")(
        keras.layers.Conv2D(2, 1, name="to_b")(branches[0]))
    c = keras.layers.BatchNormalization(name="bn_c")(
        keras.layers.Concatenate(name="cat")(branches[2:] + [b]))
    # computed after bn_b (nearer the output), reading branch1, not reaching bn_c
    side = keras.layers.Conv2D(1, 1, name="side_out")(
        keras.layers.Conv2D(1, 1, name="side")(branches[1]))
    model = keras.Model(inputs, [c, side, deep])
    x = np.random.default_rng(0).standard_normal((50, 4, 4, 2)).astype(np.float32)
    plan = _keras_plain_and_replayed(keras, model, x, 25)
    live = set(plan.live[2])
    assert live == {"to_b"} | {f"branch{i}" for i in range(2, PROBE_SAMPLES + 4)}
    assert {"branch0", "branch1"} <= set(plan.dead[2])


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_keras_replayed_passes_skip_the_models_own_layer_call_unless_dtypes_mix(
        monkeypatch, policy):
    """A replayed pass of a functional model runs its graph through the model's
    ``call``, not ``Layer.__call__`` (which clears every layer's losses), unless its
    dtypes are mixed (``Layer.__call__`` then opens an autocast scope); either way
    the statistics are those of plain passes, bit for bit."""
    from conftest import keras_on_torch

    keras = keras_on_torch()
    from keras.src.models.functional import Functional

    global_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # a functional model takes the global one
    try:
        inputs = keras.Input((6, 6, 2))
        h = keras.layers.BatchNormalization(name="bn_a")(
            keras.layers.Conv2D(3, 3, padding="same")(inputs))
        h = keras.layers.BatchNormalization(name="bn_b")(keras.layers.Conv2D(3, 1)(h))
        h = keras.layers.BatchNormalization(name="bn_c")(keras.layers.Conv2D(3, 1)(h))
        model = keras.Model(inputs, h)
    finally:
        keras.config.set_dtype_policy(global_policy)
    assert model.dtype_policy.name == policy
    x = np.random.default_rng(0).standard_normal((90, 6, 6, 2)).astype(np.float32)
    counts = {"__call__": 0, "call": 0}
    for method in counts:
        original = getattr(Functional, method)

        def counting(self, *args, original=original, method=method, **kwargs):
            counts[method] += self is model
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Functional, method, counting)
    plan = _keras_plain_and_replayed(keras, model, x, 30)
    assert [plan.replays(k) for k in range(3)] == [False, True, True]
    skipped = counts["call"] - counts["__call__"]
    # the replayed runs: the probe's one per replayed pass (of the plan returned and
    # of recalibrate's own), and 3 batches per replayed pass
    assert skipped == (2 * 2 + 2 * 3 if policy == "float32" else 0), counts
