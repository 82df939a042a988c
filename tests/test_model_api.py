"""State dicts, save/load, modes, dtypes, seeding: the contract later code relies on."""

import numpy as np
import pytest

import varshift
from varshift import nn
from varshift.models import reference_convnet


def nested_model():
    return nn.Sequential(
        nn.Conv2D(1, 2, 3, padding=1), nn.BatchNorm(2), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.BatchNorm(2), nn.Dropout(0.2), nn.Conv2D(2, 2, 3, padding=1))),
        nn.Concat(nn.Identity(), nn.Sequential(nn.Uout(0.1), nn.Conv2D(2, 1, 1))),
        nn.GlobalAvgPool(), nn.Dense(3, 2), seed=0)


def test_state_dict_keys_follow_pytorch():
    keys = list(nested_model().state_dict())
    assert keys[:7] == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                        "1.running_var", "1.num_batches_tracked"]
    assert "3.body.0.running_var" in keys and "3.body.2.weight" in keys
    assert "4.1.1.bias" in keys and keys[-1] == "6.bias"


def test_every_layer_is_a_model():
    layer = nn.BatchNorm(3)
    assert layer.eval() is layer and not layer.training
    assert set(layer.state_dict()) == {"weight", "bias", "running_mean", "running_var",
                                       "num_batches_tracked"}
    layer.load_state_dict({**layer.state_dict(), "running_var": np.full(3, 4.0)})
    assert layer.buffers["running_var"].tolist() == [4.0] * 3
    assert layer.astype(np.float64).buffers["running_var"].dtype == np.float64
    assert layer.buffers["num_batches_tracked"].dtype == np.int64


def test_load_state_dict_checks_everything_before_writing():
    model = nested_model()
    before = model.state_dict()
    bad = dict(before)
    bad["6.weight"] = np.zeros((5, 5))
    with pytest.raises(ValueError, match=r"'6.weight' expected shape \(2, 3\), got \(5, 5\)"):
        model.load_state_dict(bad)
    with pytest.raises(KeyError, match="missing keys.*'6.bias'"):
        model.load_state_dict({k: v for k, v in before.items() if k != "6.bias"})
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_save_load_round_trip_is_exact(tmp_path):
    model = nested_model().astype(np.float64)
    model(np.random.default_rng(0).standard_normal((4, 1, 5, 5)))  # move running stats and rng
    model[3].eval()
    varshift.save(model, tmp_path / "m.npz")
    loaded = varshift.load(tmp_path / "m.npz")
    assert repr(loaded) == repr(model) and loaded.dtype == np.float64
    for key, value in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[key], value) and loaded.state_dict()[key].dtype == value.dtype
    assert [layer.training for _, layer in loaded.walk()] == [layer.training for _, layer in model.walk()]
    x = np.random.default_rng(1).standard_normal((4, 1, 5, 5))
    np.testing.assert_array_equal(loaded(x), model(x))  # same dropout masks too


def test_load_rejects_truncated_and_foreign_files(tmp_path):
    varshift.save(reference_convnet(seed=0), tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a varshift"):
        varshift.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="not a varshift model"):
        varshift.load(tmp_path / "foreign.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="cannot read"):
        varshift.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        varshift.load(tmp_path / "missing.npz")
    np.save(tmp_path / "array.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"cannot read .* single array \(.npy\)"):
        varshift.load(tmp_path / "array.npy")


def test_modes_context_manager_restores_previous_modes():
    model = nested_model().eval()
    model[6].train()
    with nn.modes(model, batchnorm="train", dropout="eval") as m:
        assert m is model
        kinds = {layer.kind: layer.training for _, layer in model.leaves()}
        assert kinds["batchnorm"] is True and kinds["dropout"] is False
        assert model[0].training is False  # others unchanged
    assert [layer.training for _, layer in model.leaves()] == [False] * 10 + [True]
    with pytest.raises(ValueError, match="batchnorm must be 'train', 'eval'"):
        with nn.modes(model, batchnorm="training"):
            pass


def test_modes_restored_after_an_exception():
    model = nested_model().train()
    with pytest.raises(RuntimeError):
        with nn.modes(model, default="eval"):
            raise RuntimeError
    assert all(layer.training for _, layer in model.walk())


def test_seed_makes_models_reproducible():
    a, b = reference_convnet(seed=3), reference_convnet(seed=3)
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    np.testing.assert_array_equal(a(x), b(x))
    c = reference_convnet(seed=4)
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])


def test_layers_compute_in_their_dtype_and_cast_integer_input():
    model = reference_convnet(seed=0)
    out = model(np.zeros((2, 1, 28, 28), dtype=np.uint8))
    assert out.dtype == np.float32
    assert model.astype(np.float64)(np.zeros((2, 1, 28, 28), dtype=np.int64)).dtype == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        model.astype(np.int32)


def test_dropout_statistics():
    x = np.ones((2000, 50), np.float32)
    for layer, second_moment in [(nn.Dropout(0.3, seed=0), 1 / 0.7),
                                 (nn.Uout(0.5, seed=0), 1 + 0.25 / 3),
                                 (nn.GaussianDropout(0.3, seed=0), 1 / 0.7)]:
        out = layer(x)
        assert out.mean() == pytest.approx(1.0, abs=0.01)
        assert (out.astype(np.float64) ** 2).mean() == pytest.approx(second_moment, rel=0.01)
        assert np.array_equal(layer.eval()(x), x)
    drop = nn.Dropout(0.3, seed=0)
    assert set(np.unique(drop(x))) == {0.0, np.float32(1 / 0.7)}


def test_batchnorm_conventions():
    x = np.random.default_rng(0).standard_normal((8, 3)) * 2 + 1
    torch_like = nn.BatchNorm(3)
    torch_like(x)
    m = 8
    np.testing.assert_allclose(torch_like.buffers["running_var"],
                               0.9 + 0.1 * x.var(axis=0) * m / (m - 1), rtol=1e-6)
    keras = nn.BatchNorm.keras(3)
    assert keras.momentum == pytest.approx(0.01) and keras.eps == 1e-3 and not keras.unbiased
    keras(x)
    np.testing.assert_allclose(keras.buffers["running_var"], 0.99 + 0.01 * x.var(axis=0), rtol=1e-6)
    cumulative = nn.BatchNorm(3, momentum=None)
    batches = [x[:4], x[4:]]
    for b in batches:
        cumulative(b)
    np.testing.assert_allclose(cumulative.buffers["running_mean"],
                               np.mean([b.mean(axis=0) for b in batches], axis=0), rtol=1e-6)
    assert int(cumulative.buffers["num_batches_tracked"]) == 2


def test_repr_and_describe():
    model = reference_convnet()
    assert repr(model[0]) == "Conv2D(1, 32, (5, 5), stride=(2, 2), padding=(2, 2))"
    assert "(9): Dropout(rate=0.3)" in repr(model)
    assert model[4].describe() == "layer '4' (BatchNorm(64))"


def test_reference_convnet_batchnorm_conventions():
    torch_style = reference_convnet(seed=0)
    keras_style = reference_convnet(seed=0, batchnorm="keras")
    plain = reference_convnet(seed=0, batchnorm=None)
    bns = [[layer for layer in m.layers if isinstance(layer, nn.BatchNorm)]
           for m in (torch_style, keras_style, plain)]
    assert [(b.momentum, b.eps, b.unbiased) for b in bns[0]] == [(0.1, 1e-5, True)] * 2
    assert [(b.momentum, b.eps, b.unbiased) for b in bns[1]] == [(pytest.approx(0.01), 1e-3, False)] * 2
    assert bns[2] == [] and len(plain.layers) == len(torch_style.layers) - 2
    x = np.zeros((2, 1, 28, 28), np.float32)
    assert plain(x).shape == keras_style(x).shape == (2, 10)
    with pytest.raises(ValueError, match="batchnorm must be 'pytorch', 'keras' or None, got 'tf'"):
        reference_convnet(batchnorm="tf")


def test_a_small_file_declaring_a_huge_layer_is_refused_before_building_it(tmp_path):
    """A 7 kB file whose architecture declares Dense(20000, 20000) made load initialise
    1.6 GB (15 s, 4.8 GB resident) before it found that the arrays do not fit."""
    import json

    varshift.save(nn.Sequential(nn.Dense(6, 16), seed=0), tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as f:
        arrays = dict(f)
    meta = json.loads(str(arrays.pop("__varshift__")))
    meta["architecture"]["args"]["layers"][0]["args"].update(in_features=20000,
                                                              out_features=20000)
    np.savez(tmp_path / "big.npz", __varshift__=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(varshift.ModelFileError, match=r"'architecture' entry is corrupt \(the "
                                                      r"layers declare more than 1048800 "
                                                      r"parameter and buffer values"):
        varshift.load(tmp_path / "big.npz")  # raised as the layer adds its weight, before
        # drawing its 4e8 values
