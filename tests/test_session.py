"""The framework-independent core: kinds and modes, the session over an adapter, and
module names that say what they hold."""

import importlib
import pkgutil
import sys

import numpy as np
import pytest

import varshift
from varshift import nn
from varshift.backends import EVAL, NODROP, PASSES, TRAIN, Kind, Modes, Statistics, session_for
from varshift.backends.numpy_engine import dropout_upstream_of_batchnorm


def test_kind_is_one_vocabulary_and_a_misspelt_kind_fails_at_class_definition():
    assert Kind("dropout") is Kind.DROPOUT and Kind.CONV == "conv"
    assert {layer.kind for layer in (nn.Dense(2, 2), nn.Dropout(), nn.BatchNorm(2))} == {
        Kind.DENSE, Kind.DROPOUT, Kind.BATCHNORM}
    with pytest.raises(ValueError, match="Noisy.kind must be one of 'conv', .*, got 'dropuot'"):
        class Noisy(nn.Layer):
            kind = "dropuot"

    class Custom(nn.Layer):
        kind = "dropout"  # a plain string names a kind too

    assert Custom.kind is Kind.DROPOUT


@pytest.mark.parametrize("kind", list(Kind))
def test_one_place_maps_a_kind_and_a_pass_to_a_mode(kind):
    for name, modes in PASSES.items():
        expected = {Kind.BATCHNORM: modes.batchnorm, Kind.DROPOUT: modes.dropout}.get(
            kind, modes.other)
        assert modes.training(kind) is expected, (name, kind)
    assert not TRAIN.training(Kind.BATCHNORM, frozen=True)
    assert NODROP.training(Kind.BATCHNORM) and not NODROP.training(Kind.DROPOUT)
    assert not any(EVAL.training(k) for k in Kind)
    assert Modes(True, False, False).any_training


def test_no_module_is_shadowed_by_a_function():
    """``import varshift.<module> as m`` gives the module (``m.Report`` works)."""
    names = [info.name for info in pkgutil.iter_modules(varshift.__path__)]
    for name in names:
        if name.startswith("_") or name == "__main__":
            continue
        if name in ("keras", "lightning"):  # import their framework: checked unimported
            assert getattr(varshift, name, None) in (None, sys.modules.get(f"varshift.{name}"))
            continue
        module = importlib.import_module(f"varshift.{name}")
        attribute = getattr(varshift, name, module)
        assert attribute is module, f"varshift.{name} is {attribute!r}, not the module"
    import varshift.measurement as m

    assert m.Report is varshift.Report


def _model(seed=0):
    return nn.Sequential(
        nn.Dense(6, 8), nn.Dropout(0.3), nn.BatchNorm(8), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Dense(8, 8), nn.Uout(0.5), nn.BatchNorm(8))),
        nn.Concat(nn.Sequential(nn.GaussianDropout(0.2), nn.Dense(8, 4)), nn.Dense(8, 4)),
        nn.BatchNorm(8), nn.Dropout(0.5), nn.Dense(8, 2), seed=seed)


def test_noise_found_by_behaviour_equals_the_engine_structure():
    """The session switches layers on and watches BatchNorm inputs; on an engine model
    this must agree with following its Sequential, Residual and Concat structure (the
    last Dropout reaches no BatchNorm)."""
    model = _model()
    x = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    session = session_for(model, "test")
    with session.preserved(0):
        found = session.noise_upstream(x)
    assert found == dropout_upstream_of_batchnorm(model) == {
        "2": ["1"], "4.body.2": ["4.body.1"], "6": ["5.0.0"]}


class _Shifted(nn.Layer):
    """Adds 1 in train mode: deterministic, so not noise."""

    def _forward(self, x):
        return (x + 1 if self.training else x), None

    def _backward(self, dout, cache):
        return dout, {}


def test_a_layer_that_only_computes_differently_in_train_mode_is_not_noise():
    model = nn.Sequential(nn.Dense(4, 4), _Shifted(), nn.BatchNorm(4), seed=0)
    x = np.random.default_rng(1).standard_normal((32, 4)).astype(np.float32)
    session = session_for(model, "test")
    with session.preserved(0):
        assert session.noise_upstream(x) == {}
    assert [f.code for f in varshift.diagnose(model, x) if f.code == "DROPOUT_BEFORE_BN"] == []


def test_the_session_restores_state_after_an_interrupt_inside():
    model = _model()
    x = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    session = session_for(model, "test")
    with pytest.raises(KeyboardInterrupt):
        with session.preserved(0, keep_buffers=True):
            session.set_running_stats("2", np.full(8, 5.0), np.full(8, 7.0), 3)
            session.run_passes(x, PASSES, Statistics())
            raise KeyboardInterrupt
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    with session.preserved(0, keep_buffers=True):
        session.set_running_stats("2", np.full(8, 5.0), np.full(8, 7.0), 3)
    assert np.array_equal(model.layers[2].buffers["running_var"], np.full(8, 7.0, np.float32))


def test_an_unknown_model_is_refused_naming_every_framework():
    with pytest.raises(TypeError, match=r"measure: model must be a varshift model .*torch.nn."
                                        r"Module, a Keras 3 model or a Flax NNX module, got "
                                        r"'model' \(str\)"):
        session_for("model", "measure")
