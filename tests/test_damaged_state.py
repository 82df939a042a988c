"""Issue 21, from the user's side: loading never produces silent infinities or wrapped
integers."""

import numpy as np
import pytest
from helpers import blobs, dropout_before_bn, trained

import varshift


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
