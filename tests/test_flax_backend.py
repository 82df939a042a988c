"""varshift.measure, diagnose and recalibrate on Flax NNX modules, against oracles
computed by hand from the modules' own parameters."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx", reason="flax is not installed (pip install flax)")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from varshift import diagnose, measure, recalibrate  # noqa: E402
from varshift.measurement import UncontrolledNoiseWarning  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BATCH = 32


# ---------------------------------------------------------------------- models
# Kernels are drawn with NumPy: Flax's default initialisers compile for every shape
# (seconds on a CPU), zeros do not.
def linear(fan_in, fan_out, rngs):
    return nnx.Linear(fan_in, fan_out, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)


def conv(fan_in, fan_out, rngs):
    return nnx.Conv(fan_in, fan_out, (3, 3), kernel_init=nnx.initializers.zeros_init(),
                    rngs=rngs)


def randomised(model, seed=0):
    rng = np.random.default_rng(seed)
    for path, v in nnx.iter_graph(model):
        if isinstance(v, nnx.Param) and path[-1] == "kernel":
            shape = v[...].shape
            v[...] = jnp.asarray(rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1])),
                                 jnp.float32)
    return model


def trained(model, x):
    """Train-mode calls (running statistics move away from 0/1), then eval mode."""
    model.train()
    for i in range(0, len(x), BATCH):
        model(jnp.asarray(x[i:i + BATCH]))
    model.eval()
    return model


def data(shape, seed=0):
    return (np.random.default_rng(seed).normal(size=shape) + 0.3).astype(np.float32)


def mlp():
    """Linear -> Dropout -> BatchNorm -> relu -> Linear, in eval mode after 4 updates."""
    rngs = nnx.Rngs(0, dropout=1)
    model = nnx.Sequential(linear(6, 8, rngs), nnx.Dropout(0.5, rngs=rngs),
                           nnx.BatchNorm(8, momentum=0.9, rngs=rngs), nnx.relu,
                           linear(8, 3, rngs))
    return trained(randomised(model), data((128, 6), seed=1))


class ConvNet(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = conv(3, 4, rngs)
        self.bn1 = nnx.BatchNorm(4, momentum=0.8, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.conv2 = conv(4, 5, rngs)
        self.bn2 = nnx.BatchNorm(5, momentum=0.8, rngs=rngs)
        self.head = linear(5, 2, rngs)

    def __call__(self, x):
        h = self.drop(nnx.relu(self.bn1(self.conv1(x))))
        return self.head(self.bn2(self.conv2(h)).mean(axis=(1, 2)))


class GaussianNoise(nnx.Module):
    """A user's noise layer: adds noise from its nnx.Rngs unless deterministic."""

    def __init__(self, sigma, rngs, deterministic=False):
        self.sigma, self.rngs, self.deterministic = sigma, rngs, deterministic

    def __call__(self, x):
        if self.deterministic:
            return x
        return x + self.sigma * jax.random.normal(self.rngs.noise(), x.shape)


class Flaky(nnx.Module):
    """Identity that counts its calls (a counter varshift restores) and raises on call
    ``fail_at`` of all instances (a count outside the model)."""

    total = [0]

    def __init__(self, fail_at):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, x):
        self.calls += 1
        Flaky.total[0] += 1
        if Flaky.total[0] == self.fail_at:
            raise ValueError("flaky failed")
        return x


class Block(nnx.Module):
    def __init__(self, rngs, middle):
        self.lin = linear(4, 4, rngs)
        self.middle = middle
        self.bn = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.middle(self.lin(x)))


@pytest.fixture(scope="module")
def x():
    return data((128, 6), seed=2)


@pytest.fixture(scope="module")
def images():
    return data((96, 6, 6, 3), seed=3)


@pytest.fixture(scope="module")
def trained_mlp():
    return mlp()


@pytest.fixture(scope="module")
def convnet(images):
    return trained(randomised(ConvNet(nnx.Rngs(0, dropout=1))), images)


# ---------------------------------------------------------------------- helpers
def fingerprint(model):
    """Every leaf of nnx.state(model) as bytes, every module's class, mode attributes
    and plain attributes, and the identity of every Variable."""
    leaves = {}
    for path, leaf in jax.tree.leaves_with_path(nnx.state(model)):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        a = np.asarray(leaf)
        leaves[jax.tree_util.keystr(path)] = (a.dtype.str, a.shape, a.tobytes())
    nodes = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable):
            nodes[path] = id(node)
        elif isinstance(node, nnx.Pytree):
            nodes[path] = (type(node), sorted(vars(node)),
                           {k: v for k, v in vars(node).items()
                            if isinstance(v, (bool, int, float, str, type(None)))})
    return leaves, nodes


def eval_bn(m, h, mean=None, var=None):
    """Flax's BatchNorm by hand, with its running statistics or those given."""
    mean = m.mean[...] if mean is None else mean
    var = m.var[...] if var is None else var
    return (h - mean) / jnp.sqrt(var + m.epsilon) * m.scale[...] + m.bias[...]


def batch_bn(m, h):
    """Flax's BatchNorm in train mode by hand (batch mean and population variance)."""
    axes = tuple(range(h.ndim - 1))
    return eval_bn(m, h, h.mean(axes), h.var(axes))


def channel_stats(h, ddof=1):
    flat = np.asarray(h, np.float64).reshape(-1, h.shape[-1])
    return flat.mean(0), flat.var(0, ddof=ddof)


# ---------------------------------------------------------------------- tests
def test_import_varshift_never_imports_jax_or_flax():
    code = ("import sys, numpy as np, varshift; from varshift import nn; "
            "m = nn.Sequential(nn.Dense(3, 4), nn.BatchNorm(4), seed=0); "
            "varshift.measure(m, np.ones((8, 3))); "
            "print(sorted({'jax', 'flax'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_measure_an_mlp_against_a_flax_oracle(trained_mlp, x):
    model = trained_mlp
    before = fingerprint(model)
    report = measure(model, x, batch_size=BATCH)
    assert fingerprint(model) == before
    assert [(r.name, r.kind) for r in report.layers] == [
        ("layers.0", "dense"), ("layers.1", "dropout"), ("layers.2", "batchnorm"),
        ("layers.4", "dense")]
    b = report.bn[0]
    assert (b.name, b.num_features, b.eps, b.num_batches_tracked, b.keras_momentum) == (
        "layers.2", 8, 1e-5, None, True)
    assert b.momentum == pytest.approx(0.1)  # PyTorch's convention: 1 - Flax's 0.9
    bn = model.layers[2]
    np.testing.assert_array_equal(b.moving_var, np.asarray(bn.var[...], np.float64))
    h = model.layers[0](jnp.asarray(x))  # eval mode: Dropout off, running statistics
    mean, var = channel_stats(h, ddof=0)  # in Flax's convention: the population variance
    assert not b.unbiased and b.framework == "flax"
    for got_mean, got_var in ((b.real_mean, b.real_var), (b.nodrop_mean, b.nodrop_var)):
        np.testing.assert_allclose(got_mean, mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got_var, var, rtol=1e-6)
    out = model.layers[4](nnx.relu(eval_bn(bn, h)))
    layers = {r.name: r for r in report.layers}
    np.testing.assert_allclose(layers["layers.4"].eval.var(1), channel_stats(out)[1], rtol=1e-5)
    np.testing.assert_allclose(layers["layers.0"].train.var(1), channel_stats(h)[1], rtol=1e-6)
    assert b.attribution["upstream"] == pytest.approx(1.0, abs=1e-12)
    assert b.attribution["dropout"] < 0.8  # Dropout 0.5 inflates the train-mode variance
    assert measure(model, x, batch_size=BATCH).to_json() == report.to_json()  # seeded
    assert measure(model, x, batch_size=BATCH, seed=1).to_json() != report.to_json()
    # every form of data gives the same numbers
    y = np.zeros(len(x))
    batches = [x[i:i + BATCH] for i in range(0, len(x), BATCH)]
    for form in (jnp.asarray(x), (x, y), (jnp.asarray(x), y), [jnp.asarray(b) for b in batches],
                 [(b, y[:BATCH]) for b in batches], x.astype(np.float64)):
        assert measure(model, form, batch_size=BATCH).to_json() == report.to_json()
    assert fingerprint(model) == before


def test_measure_a_convnet_against_a_flax_oracle(convnet, images):
    model = convnet
    before = fingerprint(model)
    report = measure(model, images, batch_size=BATCH)
    assert fingerprint(model) == before
    assert [r.name for r in report.bn] == ["bn1", "bn2"]
    assert [(r.name, r.kind, r.shape) for r in report.layers][:2] == [
        ("", "container", (2,)), ("conv1", "conv", (6, 6, 4))]
    real, nodrop = [], []
    for i in range(0, len(images), BATCH):
        h1 = model.conv1(jnp.asarray(images[i:i + BATCH]))
        real.append((h1, model.conv2(nnx.relu(eval_bn(model.bn1, h1)))))
        nodrop.append((h1, model.conv2(nnx.relu(batch_bn(model.bn1, h1)))))
    for k, b in enumerate(report.bn):
        for name, oracle in (("real", real), ("nodrop", nodrop)):
            mean, var = channel_stats(jnp.concatenate([pair[k] for pair in oracle]), ddof=0)
            np.testing.assert_allclose(getattr(b, f"{name}_mean"), mean, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(getattr(b, f"{name}_var"), var, rtol=1e-4)
    layers = {r.name: r for r in report.layers}
    h1 = jnp.concatenate([pair[0] for pair in real])
    np.testing.assert_allclose(layers["conv1"].eval.var(1), channel_stats(h1)[1], rtol=1e-5)
    assert layers["drop"].var_ratio < 0.9
    assert report.bn[1].attribution["dropout"] < 0.95  # Dropout 0.3 inflates bn2's input


def test_recalibrate_writes_exact_population_statistics(convnet, images):
    model = nnx.clone(convnet)
    before = fingerprint(model)
    result = recalibrate(model, images, batch_size=BATCH)
    assert result.after.bn[1].shift < result.before.bn[1].shift
    h1 = model.conv1(jnp.asarray(images))
    h2 = model.conv2(nnx.relu(eval_bn(model.bn1, h1)))  # inference mode, Dropout off
    for bn, h in ((model.bn1, h1), (model.bn2, h2)):
        mean, var = channel_stats(h, ddof=0)  # Flax averages biased batch variances
        np.testing.assert_allclose(np.asarray(bn.mean[...]), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(bn.var[...]), var, rtol=1e-5)
        assert bn.var[...].dtype == jnp.float32
    leaves, nodes = fingerprint(model)
    assert nodes == before[1]  # modes, classes, Variables' identities
    changed = {key for key in leaves if leaves[key] != before[0][key]}
    assert changed == {f"['bn{i}']['{s}'].value" for i in (1, 2) for s in ("mean", "var")}


@pytest.mark.parametrize("train_mode", [False, True])
def test_diagnose_finds_dropout_and_a_users_noise_module_and_changes_nothing(train_mode):
    x = data((128, 4))
    rngs = nnx.Rngs(0, noise=1, dropout=2)
    model = randomised(nnx.Sequential(Block(rngs, GaussianNoise(1.0, rngs)), nnx.relu,
                                      Block(rngs, nnx.Dropout(0.5, rngs=rngs))))
    if not train_mode:
        trained(model, x)
    before = fingerprint(model)
    findings = diagnose(model, x, batch_size=BATCH)
    assert fingerprint(model) == before
    found = {(f.layer, f.evidence["dropout_layers"]) for f in findings
             if f.code == "DROPOUT_BEFORE_BN"}
    assert found == {("layers.0.bn", "layers.0.middle (GaussianNoise())"),
                     ("layers.2.bn", "layers.2.middle (Dropout 0.5)")}
    report = measure(model, x, batch_size=BATCH)
    assert fingerprint(model) == before
    assert not any(b.frozen for b in report.bn)
    assert {r.name: r.kind for r in report.layers}["layers.0.middle"] == "layer"


def test_a_mode_passed_as_a_call_argument_is_the_models_own():
    """As in Flax, where a call argument beats the attribute: a Dropout called with
    deterministic=True never draws, a BatchNorm called with use_running_average=True
    always normalises with its running statistics."""
    class Explicit(nnx.Module):
        def __init__(self, rngs):
            self.lin = linear(4, 4, rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)

        def __call__(self, x):
            return self.bn(self.drop(self.lin(x), deterministic=True), True)

    report = measure(randomised(Explicit(nnx.Rngs(0))), data((128, 4)), batch_size=BATCH)
    assert report.bn[0].attribution["dropout"] == pytest.approx(1.0)  # never active
    bn = {r.name: r for r in report.layers}["bn"]
    np.testing.assert_allclose(bn.train.mean, bn.eval.mean, rtol=1e-6)  # running stats


def test_frozen_batchnorm_stays_in_inference_mode(trained_mlp, x):
    model = nnx.clone(trained_mlp)
    model.train()
    model.layers[2].use_running_average = True
    before = fingerprint(model)
    report = measure(model, x, batch_size=BATCH)
    assert fingerprint(model) == before
    assert report.bn[0].frozen
    # the train pass normalised with the running statistics, not the batch's
    assert np.abs({r.name: r for r in report.layers}["layers.2"].train.mean).max() > 1e-2
    report = measure(trained_mlp, x, batch_size=BATCH)  # all in eval mode: not frozen
    assert not report.bn[0].frozen
    assert np.abs({r.name: r for r in report.layers}["layers.2"].train.mean).max() < 1e-5


@pytest.mark.parametrize("run, fail_at", [(measure, 3), (recalibrate, 5)])
def test_a_failure_mid_pass_names_the_module_and_restores_everything(run, fail_at):
    rngs = nnx.Rngs(0, dropout=1)
    model = nnx.Sequential(linear(4, 4, rngs), nnx.BatchNorm(4, rngs=rngs), Flaky(fail_at),
                           nnx.Dropout(0.5, rngs=rngs), nnx.BatchNorm(4, rngs=rngs))
    Flaky.total[0] = -100
    trained(randomised(model), data((64, 4)))
    Flaky.total[0] = 0
    before = fingerprint(model)
    # measure: call 3 is the nodrop pass of batch 0; recalibrate: calls 1-3 trace (its
    # inference pass is the plan's full pass), call 4 the probe's run of layers.4's pass,
    # call 5 the first pass over the data reaching layers.4, after layers.1's statistics
    # were written
    kwargs = {"reports": False} if run is recalibrate else {}
    with pytest.raises(ValueError, match=r"data batch 0 of shape \(32, 4\): module 'layers.2' "
                                         r"\(Flaky\(\)\): flaky failed"):
        run(model, data((64, 4)), batch_size=BATCH, **kwargs)
    assert fingerprint(model) == before
    assert type(model.layers[2]) is Flaky


def test_a_bad_later_batch_restores_everything(trained_mlp):
    before = fingerprint(trained_mlp)
    batches = [data((BATCH, 6), seed=i) for i in range(4)]
    batches[2][0, 0] = np.nan
    for run in (measure, recalibrate):
        with pytest.raises(ValueError, match="data batch 2 has 1 non-finite values"):
            run(trained_mlp, batches)
        assert fingerprint(trained_mlp) == before


def test_noise_outside_the_modes_is_detected():
    class Hidden(nnx.Module):  # draws noise whatever its mode: it has no mode attribute
        def __init__(self, rngs):
            self.rngs = rngs

        def __call__(self, x):
            return x + jax.random.normal(self.rngs.noise(), x.shape)

    rngs = nnx.Rngs(0, noise=1)
    model = nnx.Sequential(linear(4, 4, rngs), Hidden(rngs), nnx.BatchNorm(4, rngs=rngs))
    with pytest.warns(UncontrolledNoiseWarning):
        measure(randomised(model), data((64, 4)), batch_size=BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codes = {f.code for f in diagnose(model, data((64, 4)), batch_size=BATCH)}
    assert "EVAL_NOT_DETERMINISTIC" in codes


def test_a_transformed_submodule_is_refused_untouched():
    class Jitted(nnx.Module):
        def __init__(self, rngs):
            self.lin = linear(4, 4, rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)

        def __call__(self, x):
            return nnx.jit(lambda lin, x: lin(x))(self.lin, self.bn(x))

    model = Jitted(nnx.Rngs(0))
    before = fingerprint(model)
    with pytest.raises(TypeError, match=r"module '\(model\)' \(Jitted\): a Linear module was "
                                        r"called inside a JAX transformation \(nnx.jit"):
        measure(model, data((64, 4)), batch_size=BATCH)
    assert fingerprint(model) == before and type(model.lin) is nnx.Linear


def test_linen_and_other_flax_objects_are_refused():
    import flax.linen as nn

    with pytest.raises(TypeError, match=r"measure: model is a Flax Linen module \(Dense\).*"
                                        r"flax.nnx layers .*ToNNX is not enough"):
        measure(nn.Dense(3), data((8, 4)))
    with pytest.raises(TypeError, match=r"recalibrate: a Flax model must be an NNX module"):
        recalibrate(nnx.Rngs(0), data((8, 4)))
