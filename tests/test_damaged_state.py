"""Issue 21, from the user's side: damaged running statistics are diagnosed and repaired,
and loading never produces silent infinities or wrapped integers."""

import os

import numpy as np
import pytest
from conftest import import_keras
from helpers import blobs, dropout_before_bn, trained

import varshift
from varshift import diagnose, fit, nn, optim, recalibrate
from varshift.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained model's file and its data: (model path, x, .npy path of x)."""
    folder = tmp_path_factory.mktemp("damaged")
    x, y = blobs(600)
    varshift.save(trained(dropout_before_bn(), (x, y), epochs=1), folder / "m.npz")
    np.save(folder / "x.npy", x)
    return folder / "m.npz", x, folder / "x.npy"


def edited(path, target, **arrays):
    """A copy of the model file ``path`` at ``target`` with some arrays replaced, as a
    damaged or hand-edited file holds them."""
    with np.load(path) as file:
        content = dict(file)
    content.update(arrays)
    np.savez(target, **content)
    return target


def with_values(array, values):
    """``array`` with ``values`` (index -> value) put in."""
    array = np.array(array)
    array[list(values)] = list(values.values())
    return array


DAMAGE = {
    "NaN variance": ("running_var", {3: np.nan}, "running_var is NaN in channel 3"),
    "infinite variance": ("running_var", {7: np.inf}, "running_var is infinite in channel 7"),
    "negative variances": ("running_var", {5: -1.0, 9: -2.0},
                           "running_var is negative in channels 5, 9"),
    "NaN mean": ("running_mean", {0: np.nan}, "running_mean is NaN in channel 0"),
    "infinite mean": ("running_mean", {1: -np.inf}, "running_mean is infinite in channel 1"),
}


# --------------------------------------------------------------- damaged running statistics
@pytest.mark.parametrize("stat, values, message", list(DAMAGE.values()), ids=list(DAMAGE))
def test_damaged_running_stats_are_diagnosed_and_recalibrate_replaces_them(
        saved, stat, values, message):
    path, x, _ = saved
    model = varshift.load(path)
    model[4].buffers[stat][...] = with_values(model[4].buffers[stat], values)
    findings = diagnose(model, x)
    found = [f for f in findings if f.code == "DAMAGED_RUNNING_STATS"]
    assert [(f.layer, f.severity) for f in found] == [("4", "error")]
    assert message in found[0].explanation and "recalibrate" in found[0].fix
    assert findings[0] is found[0]  # errors first, in layer order
    assert "STALE_RUNNING_STATS" not in {f.code for f in findings if f.layer == "4"}
    report = varshift.measure(model, x)
    again = diagnose(model, x, report=report)  # a report of the damaged model is accepted
    assert [f.to_dict() for f in again] == [f.to_dict() for f in findings]
    result = recalibrate(model, x)
    assert str(result).splitlines()[2].split()[2] == "damaged"
    assert result.after.bn[0].shift == pytest.approx(1.0, abs=1e-5)
    assert all(np.isfinite(v).all() for v in model.state_dict().values())
    assert "DAMAGED_RUNNING_STATS" not in {f.code for f in diagnose(model, x)}


def test_damaged_file_diagnose_exits_3_and_recalibrate_writes_the_repair(saved, tmp_path, capsys):
    path, x, npy = saved
    with np.load(path) as file:
        var = with_values(file["4.running_var"], {2: np.nan, 4: -3.0, 6: np.inf})
    bad = edited(path, tmp_path / "bad.npz", **{"4.running_var": var,
                                                "7.num_batches_tracked": np.array(-5)})
    assert main(["diagnose", str(bad), str(npy)]) == 3
    assert "[error] DAMAGED_RUNNING_STATS at 2 layers" in capsys.readouterr().out  # grouped
    assert main(["diagnose", str(bad), str(npy), "--verbose"]) == 3
    out, err = capsys.readouterr()
    assert "DAMAGED_RUNNING_STATS at layer '4'" in out and "DAMAGED_RUNNING_STATS at layer '7'" in out
    assert "num_batches_tracked is negative (-5)" in out and "float limit" not in out + err
    assert main(["recalibrate", str(bad), str(npy), "-o", str(tmp_path / "fixed.npz")]) == 0
    out, err = capsys.readouterr()
    assert "damaged" in out and "wrote" in err
    fixed = varshift.load(tmp_path / "fixed.npz")
    assert int(fixed[7].buffers["num_batches_tracked"]) > 0
    assert all(np.isfinite(v).all() for v in fixed.state_dict().values())
    assert main(["diagnose", str(tmp_path / "fixed.npz"), str(npy), "--json"]) in (0, 3)
    assert "DAMAGED_RUNNING_STATS" not in capsys.readouterr().out


@pytest.mark.parametrize("momentum, tracked, stays_damaged", [
    (0.1, 3, True),  # an exponential average keeps a NaN, as in PyTorch
    (None, -1, False),  # a negative count restarts the cumulative average with a batch
])
def test_training_over_damaged_statistics_fails_nothing(momentum, tracked, stays_damaged):
    x, y = blobs(200)
    model = nn.Sequential(nn.Dense(20, 4), nn.BatchNorm(4, momentum=momentum), nn.Dense(4, 2),
                          seed=0)
    model[1].buffers["running_var"][1] = np.nan
    model[1].buffers["num_batches_tracked"][...] = tracked
    fit(model, (x, y), nn.CrossEntropyLoss(), optim.SGD(model, lr=0.1), batch_size=50,
        eval_train=False)
    var = model[1].buffers["running_var"]
    assert np.isnan(var[1]) == stays_damaged and np.isfinite(np.delete(var, 1)).all()
    assert int(model[1].buffers["num_batches_tracked"]) == tracked + 4


def test_damaged_torch_statistics_are_diagnosed_and_repaired():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                                torch.nn.Linear(6, 2))
    x = np.random.default_rng(0).standard_normal((256, 5)).astype(np.float32)
    with torch.no_grad():
        model[1].running_var[2] = float("nan")
        model[1].running_mean[4] = float("inf")
    found = [f for f in diagnose(model, x) if f.code == "DAMAGED_RUNNING_STATS"]
    assert [f.layer for f in found] == ["1"]
    assert "running_var is NaN in channel 2" in found[0].explanation
    assert "running_mean is infinite in channel 4" in found[0].explanation
    result = recalibrate(model, x)
    assert "damaged" in str(result) and torch.isfinite(model[1].running_var).all()
    assert "DAMAGED_RUNNING_STATS" not in {f.code for f in diagnose(model, x)}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' torch backend
def test_damaged_keras_statistics_are_diagnosed_and_repaired():
    os.environ.setdefault("KERAS_BACKEND", "torch")  # as test_keras_quirks.py
    pytest.importorskip("torch")
    keras = import_keras()
    if keras.backend.backend() != "torch":
        pytest.skip("keras was imported before with another backend")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
                              keras.layers.Dense(2)])
    model.layers[1].moving_variance.assign(np.array([1, 1, np.nan, -1, 1, 1], np.float32))
    x = np.random.default_rng(0).standard_normal((256, 5)).astype(np.float32)
    found = [f for f in diagnose(model, x) if f.code == "DAMAGED_RUNNING_STATS"]
    assert [f.layer for f in found] == ["bn"]
    assert "NaN in channel 2" in found[0].explanation
    assert "negative in channel 3" in found[0].explanation
    assert "damaged" in str(recalibrate(model, x))
    assert (model.layers[1].moving_variance.numpy() > 0).all()


# --------------------------------------------------------------- no silent infinities or wraps
@pytest.mark.parametrize("key, value, shown", [
    ("0.weight", lambda w: with_values(w.astype(np.float64), {0: 1e300}), "got 1e+300 at index (0, 0)"),
    ("4.running_mean", lambda m: with_values(m.astype(np.float64), {3: -1e39}), "got -1e+39 at index (3,)"),
    ("4.num_batches_tracked", lambda n: np.array(np.inf), "got inf"),
    ("4.num_batches_tracked", lambda n: np.array(np.nan), "got nan"),
    ("4.num_batches_tracked", lambda n: np.array(2.5), "got 2.5"),
    ("4.num_batches_tracked", lambda n: np.array(2.0 ** 63), "got 9.223372036854776e+18"),
    ("4.num_batches_tracked", lambda n: np.array(2 ** 64 - 1, np.uint64), "got 18446744073709551615"),
])
def test_values_the_model_cannot_hold_are_refused_on_loading(saved, tmp_path, key, value, shown):
    path, _, _ = saved
    with np.load(path) as file:
        bad = edited(path, tmp_path / "bad.npz", **{key: value(file[key])})
    with pytest.raises(ValueError) as err:
        varshift.load(bad)  # the suite turns a RuntimeWarning of a cast into an error
    assert str(bad) in str(err.value) and repr(key) in str(err.value) and shown in str(err.value)
    model = varshift.load(path)
    with pytest.raises(ValueError, match=f"load_state_dict: {key!r} must hold"):
        model.load_state_dict({key: value(model.state_dict()[key])}, strict=False)
    assert all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(),
                                                    varshift.load(path).state_dict().values()))


def test_values_that_fit_load_unchanged(saved, tmp_path):
    path, _, _ = saved
    with np.load(path) as file:
        weight = file["0.weight"].astype(np.float64)
        var = with_values(file["4.running_var"], {0: np.nan})  # damage: diagnose reports it
    good = edited(path, tmp_path / "good.npz", **{"0.weight": weight, "4.running_var": var,
                                                  "4.num_batches_tracked": np.array(12.0)})
    model = varshift.load(good)
    np.testing.assert_array_equal(model[0].params["weight"], weight.astype(np.float32))
    assert np.isnan(model[4].buffers["running_var"][0])
    assert int(model[4].buffers["num_batches_tracked"]) == 12


@pytest.mark.parametrize("framework", ["varshift", "torch"])
def test_inputs_whose_variance_overflows_the_batch_statistics_are_refused(framework):
    """At scale 1e30 a float32 BatchNorm's batch variance overflows: PyTorch's layer then
    outputs zeros (finite), which gave a report with an infinite shift and no warning."""
    x = np.random.default_rng(0).standard_normal((256, 6)).astype(np.float32) * np.float32(1e30)
    if framework == "torch":
        torch = pytest.importorskip("torch")
        model, x = torch.nn.Sequential(torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2)), \
            torch.from_numpy(x)
    else:
        model = nn.Sequential(nn.BatchNorm(6), nn.Dense(6, 2), seed=0)
    for call in (varshift.measure, diagnose):
        with pytest.raises(varshift.NonFiniteError, match=r"BatchNorm '0'|BatchNorm\(6\)"):
            call(model, x, batch_size=64)
