"""Training-loop monitors: the framework-free core (varshift.monitoring), the Keras
callback (varshift.keras) and the Lightning callback (varshift.lightning).

Every model here has a Dropout right before a BatchNorm, so its variance shift is
well above 1 and the DROPOUT_BEFORE_BN finding is reported.
"""

import importlib.util
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import keras_on_torch

from varshift.monitoring import (
    SEVERITY_LEVELS,
    Monitor,
    ShiftSummary,
    ShiftWarning,
    shift_summary,
    tag_part,
)

ROOT = Path(__file__).resolve().parents[1]

# Keras' torch backend converts tensors in a way NumPy 2 deprecates (not varshift's)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _run_python(code, **env):
    """Run ``code`` in a fresh interpreter from the repository root; its result."""
    import os

    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def _event_scalars(folder):
    """{tag: [(step, value), ...]} of the TensorBoard event files under ``folder``, read
    with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for events in sorted(Path(folder).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
    return scalars


# ---------------------------------------------------------------------- imports
def test_import_varshift_imports_no_framework():
    result = _run_python("import sys, varshift, varshift.monitoring; print(sorted(m for m in "
                         "('torch', 'keras', 'lightning', 'pytorch_lightning', 'jax', 'flax', "
                         "'tensorboard') if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_keras_names_the_extra():
    result = _run_python("import sys; sys.modules['keras'] = None; import varshift.keras")
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr
    assert "pip install keras torch" in result.stderr


def test_keras_without_its_backend_package_says_to_set_the_backend():
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (pip install \".[keras]\")")
    result = _run_python("import sys; sys.modules['tensorflow'] = None; import varshift.keras",
                         KERAS_BACKEND="tensorflow")
    assert result.returncode != 0
    assert "KERAS_BACKEND=torch" in result.stderr, result.stderr[-2000:]


def test_missing_lightning_names_the_extra():
    result = _run_python("import sys; sys.modules['lightning'] = None; "
                         "sys.modules['pytorch_lightning'] = None; import varshift.lightning")
    assert result.returncode != 0
    assert "pip install lightning" in result.stderr


def test_lightning_monitor_falls_back_to_pytorch_lightning():
    if importlib.util.find_spec("pytorch_lightning") is None:
        pytest.skip("pytorch_lightning is not installed (pip install pytorch_lightning)")
    result = _run_python("import sys; sys.modules['lightning'] = None; import varshift.lightning "
                         "as m; print(m.ShiftMonitor.__mro__[1].__module__)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("pytorch_lightning.")


# ---------------------------------------------------------------------- the core
def test_summary_names_and_numbers():
    summary = ShiftSummary({"a.bn": 1.5, "b bn": 2.5, "c": float("nan")}, ())
    assert summary.worst_layer == "b bn" and summary.worst_shift == 2.5
    assert summary.scalars() == {"varshift/shift/a.bn": 1.5, "varshift/shift/b_bn": 2.5,
                                 "varshift/shift/c": pytest.approx(float("nan"), nan_ok=True),
                                 "varshift/worst_shift": 2.5, "varshift/worst_severity": 0.0,
                                 "varshift/findings": 0.0}
    assert "no findings" in summary.describe()
    measured_only = ShiftSummary({}, None)
    assert math.isnan(measured_only.worst_shift) and measured_only.worst_layer is None
    assert list(measured_only.scalars("run1/vs")) == ["run1/vs/worst_shift"]
    assert SEVERITY_LEVELS == {"error": 3, "warning": 2, "info": 1}
    assert tag_part("") == "_" and tag_part("conv:0/bn[1]") == "conv_0/bn_1_"


def _torch_model(torch, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                               torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 1))


def _torch_data(torch):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 8, generator=g)
    return x, x.sum(1, keepdim=True)


def test_shift_summary_of_a_torch_model_and_its_tensorboard_scalars(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install \".[torch]\")")
    tensorboard = pytest.importorskip("torch.utils.tensorboard",
                                      reason="tensorboard is not installed (pip install "
                                             "tensorboard)")
    model = _torch_model(torch)
    x, _ = _torch_data(torch)
    writer = tensorboard.SummaryWriter(str(tmp_path))
    summary = shift_summary(model, x, writer=writer, step=7)
    writer.close()
    assert list(summary.shifts) == ["3"]
    assert summary.worst_layer == "3" and summary.worst_shift > 1.2
    assert summary.worst_finding.code == "STATS_AT_INIT"     # an untrained model
    assert summary.worst_severity == SEVERITY_LEVELS[summary.worst_finding.severity]
    scalars = _event_scalars(tmp_path)
    assert set(scalars) == {"varshift/shift/3", "varshift/worst_shift",
                            "varshift/worst_severity", "varshift/findings"}
    step, value = scalars["varshift/worst_shift"][0]
    assert step == 7 and value == pytest.approx(summary.worst_shift, rel=1e-6)
    measured_only = shift_summary(model, x, findings=False)
    assert measured_only.findings is None and measured_only.shifts == summary.shifts


def test_a_monitor_call_changes_nothing_of_the_model_nor_the_random_state():
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install \".[torch]\")")
    model = _torch_model(torch).train()
    x, _ = _torch_data(torch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    assert Monitor(x)(model, 0) is not None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert model.training and all(m.training for m in model.modules())


def test_shift_summary_of_a_flax_model_leaves_its_state_and_rngs():
    pytest.importorskip("flax", reason="flax is not installed (pip install \".[flax]\")")
    import jax
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(8, 16, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)
            self.bn = nnx.BatchNorm(16, rngs=rngs)
            self.head = nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x):
            return self.head(self.bn(self.dropout(nnx.relu(self.dense(x)))))

    def leaves(model):   # every Variable, the Rngs' keys and counts included
        return [np.asarray(jax.random.key_data(v) if jax.dtypes.issubdtype(
            v.dtype, jax.dtypes.prng_key) else v) for v in jax.tree.leaves(nnx.state(model))]

    model = Net(nnx.Rngs(0))
    before = leaves(model)
    summary = shift_summary(model, np.random.default_rng(0).normal(size=(64, 8)).astype("float32"))
    assert list(summary.shifts) == ["bn"] and summary.worst_shift > 1.2
    after = leaves(model)
    assert len(after) == len(before) >= 10
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


def _train_torch_loop(torch, monitor=None, epochs=3):
    model = _torch_model(torch)
    x, y = _torch_data(torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(5)
    for epoch in range(epochs):
        for index in torch.randperm(len(x)).split(32):   # draws from the global generator
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x[index]), y[index]).backward()
            optimizer.step()
        if monitor is not None:
            monitor(model, epoch)
    return model


def test_plain_torch_loop_trains_the_same_with_the_monitor():
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install \".[torch]\")")
    x, _ = _torch_data(torch)
    monitor = Monitor(x[:48])
    with_monitor = _train_torch_loop(torch, monitor).state_dict()
    without = _train_torch_loop(torch).state_dict()
    assert len(monitor.history) == 3
    assert all(torch.equal(with_monitor[k], without[k]) for k in without)


def test_monitor_every_and_thresholds():
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install \".[torch]\")")
    model = _torch_model(torch)
    x, _ = _torch_data(torch)
    monitor = Monitor(x, every=2, stop_above=1e6, findings=False)
    assert [monitor(model, step) is not None for step in range(4)] == [False, True, False, True]
    assert [step for step, _ in monitor.history] == [1, 3] and not monitor.should_stop
    shift = monitor.last.worst_shift
    with pytest.warns(ShiftWarning, match=r"stop_above=1\b.*training stops") as record:
        stopping = Monitor(x, stop_above=1.0)
        stopping(model, 0)
    assert stopping.should_stop
    assert f"[error] {stopping.last.worst_finding.code}" in str(record[0].message)
    with pytest.warns(ShiftWarning, match="worst finding is at least a warning"):
        Monitor(x, warn_severity="warning")(model, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShiftWarning)
        quiet = Monitor(x, warn_above=shift * 2, stop_above=shift * 2)
        quiet(model, 0)
    assert not quiet.should_stop


@pytest.mark.parametrize("kwargs, error, match", [
    ({"data": iter([np.zeros((4, 8))])}, TypeError, "data must be held-out data that can be read"),
    ({"every": 0}, ValueError, "every must be a positive integer, got 0"),
    ({"every": 1.5}, TypeError, "every must be a positive integer"),
    ({"warn_above": 0.5}, ValueError, "warn_above must be a float >= 1, got 0.5"),
    ({"stop_above": "2"}, TypeError, "stop_above must be a float >= 1"),
    ({"warn_severity": "fatal"}, ValueError, "warn_severity must be 'error', 'warning' or 'info'"),
    ({"warn_severity": "error", "findings": False}, ValueError, "needs findings=True"),
    ({"writer": object()}, TypeError, r"writer must be None or a TensorBoard SummaryWriter"),
    ({"prefix": "my run"}, ValueError, "prefix must be a non-empty string"),
    ({"findings": "yes"}, TypeError, "findings must be True or False"),
])
def test_monitor_bad_arguments(kwargs, error, match):
    kwargs = {"data": np.zeros((4, 8)), **kwargs}
    with pytest.raises(error, match=match):
        Monitor(**kwargs)


def test_shift_summary_bad_arguments():
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install \".[torch]\")")

    class Writer:
        def add_scalar(self, tag, value, step):
            raise AssertionError("nothing may be written after a refused argument")

    model = _torch_model(torch)
    x, _ = _torch_data(torch)
    with pytest.raises(ValueError, match="step must be an integer >= 0 when a writer is given"):
        shift_summary(model, x, writer=Writer())
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        shift_summary(model, x, writer=Writer(), step=-1)
    with pytest.raises(TypeError, match="model must be"):
        shift_summary("not a model", x)
    with pytest.raises(TypeError, match="shift_summary: data must be held-out data that can be"):
        shift_summary(model, iter([x]))
    assert shift_summary(model, iter([x]), findings=False).shifts   # read once: fine
    with pytest.raises(TypeError, match="monitor: step must be an integer >= 0, got .first."):
        Monitor(x, owner="monitor")(model, "first")


# ---------------------------------------------------------------------- Keras
def _keras_model(keras):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dropout(0.5), keras.layers.BatchNormalization(name="bn"),
                             keras.layers.Dense(1)])


def _keras_fit(keras, callbacks, epochs=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype("float32")
    model = _keras_model(keras)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, x.sum(1, keepdims=True), epochs=epochs, batch_size=32, verbose=0,
                        callbacks=callbacks)
    return model, history


def _keras_held_out():
    return np.random.default_rng(1).normal(size=(48, 8)).astype("float32")


@pytest.fixture
def keras():
    return keras_on_torch()


def test_keras_fit_records_the_shift_in_history(keras):
    import varshift.keras

    monitor = varshift.keras.ShiftMonitor(_keras_held_out())
    _, history = _keras_fit(keras, [monitor])
    recorded = history.history
    assert len(recorded["varshift/shift/bn"]) == len(recorded["loss"]) == 3
    assert recorded["varshift/worst_shift"] == recorded["varshift/shift/bn"]
    assert all(isinstance(v, float) and v > 1.2 for v in recorded["varshift/worst_shift"])
    assert recorded["varshift/worst_severity"] == [3.0] * 3     # DROPOUT_BEFORE_BN, an error
    assert [step for step, _ in monitor.monitor.history] == [0, 1, 2]


def test_keras_every_n_epochs(keras):
    import varshift.keras

    _, history = _keras_fit(keras, [varshift.keras.ShiftMonitor(_keras_held_out(), every=2,
                                                                findings=False)])
    assert len(history.history["loss"]) == 3
    assert len(history.history["varshift/worst_shift"]) == 1          # after epoch 2 only
    assert "varshift/worst_severity" not in history.history


def test_keras_warns_and_stops_past_thresholds(keras):
    import varshift.keras

    with pytest.warns(ShiftWarning, match=r"ShiftMonitor: at step 0, largest variance shift"):
        _, history = _keras_fit(keras, [varshift.keras.ShiftMonitor(_keras_held_out(),
                                                                    warn_above=1.0)], epochs=1)
    with pytest.warns(ShiftWarning, match="training stops"):
        _, history = _keras_fit(keras, [varshift.keras.ShiftMonitor(_keras_held_out(),
                                                                    stop_above=1.0)])
    assert len(history.history["loss"]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShiftWarning)
        _, history = _keras_fit(keras, [varshift.keras.ShiftMonitor(
            _keras_held_out(), warn_above=1e6, stop_above=1e6)])
    assert len(history.history["loss"]) == 3


def test_keras_training_is_the_same_with_the_monitor(keras):
    import varshift.keras

    monitored, _ = _keras_fit(keras, [varshift.keras.ShiftMonitor(_keras_held_out())])
    plain, _ = _keras_fit(keras, [])
    assert len(monitored.weights) == len(plain.weights) == 8    # BatchNorm's moving stats too
    seeds = [m.layers[1].seed_generator.state for m in (monitored, plain)]  # Dropout's stream
    for a, b in zip(monitored.weights + seeds[:1], plain.weights + seeds[1:]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b), err_msg=a.path)


def test_keras_monitor_writes_tensorboard_scalars(keras, tmp_path):
    tensorboard = pytest.importorskip("torch.utils.tensorboard",
                                      reason="tensorboard is not installed (pip install "
                                             "tensorboard)")
    import varshift.keras

    writer = tensorboard.SummaryWriter(str(tmp_path))
    _, history = _keras_fit(keras, [varshift.keras.ShiftMonitor(_keras_held_out(), writer=writer)])
    writer.close()
    events = _event_scalars(tmp_path)
    assert [step for step, _ in events["varshift/shift/bn"]] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in events["varshift/shift/bn"]],
                               history.history["varshift/shift/bn"], rtol=1e-6)


# ---------------------------------------------------------------------- Lightning
@pytest.fixture
def lightning():
    pytest.importorskip("torch", reason="torch is not installed (pip install \".[torch]\")")
    pytest.importorskip("lightning", reason="lightning is not installed (pip install "
                                            "\".[lightning]\")")
    import varshift.lightning

    return varshift.lightning


def _lightning_fit(torch, pl, callbacks, logger=False, epochs=2):
    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _torch_model(torch)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, index):
            x, y = batch
            return torch.nn.functional.mse_loss(self(x), y)

        def validation_step(self, batch, index):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    x, y = _torch_data(torch)
    data = torch.utils.data.TensorDataset(x, y)
    pl.seed_everything(3, verbose=False)
    module = Regression()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=logger,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=callbacks)
    with warnings.catch_warnings():
        # Lightning's advice for real runs: more DataLoader workers, more batches per epoch
        warnings.filterwarnings("ignore", message=".*(num_workers|log_every_n_steps)")
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=32, shuffle=True),
                    torch.utils.data.DataLoader(data, batch_size=48))
    return module, trainer


def test_lightning_trainer_logs_the_shift_to_tensorboard(lightning, tmp_path):
    import torch
    from lightning.pytorch import loggers

    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install "
                                              "tensorboard)")
    import lightning.pytorch as pl

    monitor = lightning.ShiftMonitor(_torch_data(torch)[0][:48])
    _, trainer = _lightning_fit(torch, pl, [monitor],
                                logger=loggers.TensorBoardLogger(str(tmp_path), name="run"))
    assert trainer.current_epoch == 2
    assert float(trainer.logged_metrics["varshift/worst_shift"]) > 1.2
    events = _event_scalars(tmp_path)
    shifts = events["varshift/shift/net.3"]
    assert len(shifts) == 2 and len(events["varshift/worst_severity"]) == 2
    assert [v for _, v in shifts] == pytest.approx(
        [s.shifts["net.3"] for _, s in monitor.monitor.history], rel=1e-6)


def test_lightning_training_is_the_same_with_the_monitor(lightning):
    import lightning.pytorch as pl
    import torch

    held_out = _torch_data(torch)[0][:48]
    for on in ("train", "validation"):
        monitor = lightning.ShiftMonitor(held_out, on=on)
        monitored, _ = _lightning_fit(torch, pl, [monitor])
        plain, _ = _lightning_fit(torch, pl, [])
        assert len(monitor.monitor.history) == 2, on     # not in the sanity check
        after, before = monitored.state_dict(), plain.state_dict()
        assert all(torch.equal(after[k], before[k]) for k in before), on


def test_lightning_stops_past_the_threshold(lightning):
    import lightning.pytorch as pl
    import torch

    monitor = lightning.ShiftMonitor(_torch_data(torch)[0][:48], stop_above=1.0,
                                     findings=False, module=lambda m: m.net)
    with pytest.warns(ShiftWarning, match="training stops"):
        _, trainer = _lightning_fit(torch, pl, [monitor], epochs=3)
    assert trainer.current_epoch == 1
    assert list(monitor.monitor.last.shifts) == ["3"]      # the submodule's own path
    assert set(trainer.logged_metrics) == {"val_loss", "varshift/shift/3",
                                           "varshift/worst_shift"}


def test_lightning_bad_arguments(lightning):
    with pytest.raises(ValueError, match="on must be 'train' or 'validation', got 'test'"):
        lightning.ShiftMonitor(np.zeros((4, 8)), on="test")
    with pytest.raises(TypeError, match="module must be None or a function"):
        lightning.ShiftMonitor(np.zeros((4, 8)), module="net")
    with pytest.raises(ValueError, match=r"varshift.lightning.ShiftMonitor: every must be"):
        lightning.ShiftMonitor(np.zeros((4, 8)), every=-1)
