"""What diagnose and recalibrate say, from the user's side, on every framework: no false
alarm after varshift's own fix, noise found by its behaviour, frozen BatchNorms left
alone, advice in the user's convention, the input's scale named; and the one list of
codes."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import import_keras

import varshift
from varshift import nn
from varshift.findings import CODES, Finding, grade

ROOT = Path(__file__).resolve().parents[1]
X = np.random.default_rng(0).standard_normal((512, 12)).astype(np.float32)


# ---------------------------------------------------------------- one small model per framework
# Dense -> [noise] -> Dense -> BatchNorm -> ReLU -> Dense, with running statistics from a few
# train-mode batches (part of the initial 0/1 still in them: stale).
def _engine(noise="dropout", frozen=False):
    layer = {"dropout": nn.Dropout(0.5), "gaussian": nn.GaussianDropout(0.5), None: nn.ReLU()}
    model = nn.Sequential(nn.Dense(12, 32), nn.ReLU(), layer[noise], nn.Dense(32, 32),
                          nn.BatchNorm(32), nn.ReLU(), nn.Dense(32, 3), seed=0)
    model.train()
    for i in range(4):
        model(X[64 * i:64 * (i + 1)])
    model.eval()
    return model


def _torch(noise="dropout", frozen=False):
    torch = pytest.importorskip("torch")

    class GaussianNoise(torch.nn.Module):  # a user's own noise module
        def forward(self, x):
            return x + torch.randn_like(x) if self.training else x

    class StochasticDepth(torch.nn.Module):  # as torchvision.ops.StochasticDepth (row mode)
        def forward(self, x):
            if not self.training:
                return x
            keep = torch.empty(len(x), 1).bernoulli_(0.5)
            return x * keep / 0.5

    layer = {"dropout": torch.nn.Dropout(0.5), "gaussian": GaussianNoise(),
             "stochastic_depth": StochasticDepth(), None: torch.nn.Identity()}[noise]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), layer,
                                torch.nn.Linear(32, 32), torch.nn.BatchNorm1d(32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 3))
    with torch.no_grad():
        for i in range(4):
            model(torch.from_numpy(X[64 * i:64 * (i + 1)]))
    model.eval()
    if frozen:  # frozen-BatchNorm fine-tuning: the rest trains, the BatchNorm stays in eval
        model.train()
        model[4].eval()
        model[4].requires_grad_(False)
    return model


def _keras(noise="dropout", frozen=False):
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = import_keras()

    class GaussianNoise(keras.layers.Layer):  # a user's own noise layer, not Keras'
        def call(self, x, training=None):
            return x + keras.random.normal(keras.ops.shape(x)) if training else x

    layer = {"dropout": keras.layers.Dropout(0.5), "gaussian": GaussianNoise(),
             None: keras.layers.Identity()}[noise]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="relu"),
                              layer, keras.layers.Dense(32), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Dense(3)])
    for i in range(4):
        model(X[64 * i:64 * (i + 1)], training=True)
    if frozen:
        model.layers[3].trainable = False
    return model


def _flax(noise="dropout", frozen=False):
    pytest.importorskip("flax", reason="flax is not installed (pip install \".[flax]\")")
    import jax
    from flax import nnx

    class GaussianNoise(nnx.Module):
        def __init__(self, rngs):
            self.rngs, self.deterministic = rngs, False

        def __call__(self, x):
            return x if self.deterministic else x + jax.random.normal(self.rngs.noise(), x.shape)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc1 = nnx.Linear(12, 32, rngs=rngs)
            self.noise = {"dropout": nnx.Dropout(0.5, rngs=rngs), "gaussian": GaussianNoise(rngs),
                          None: None}[noise]
            self.fc2 = nnx.Linear(32, 32, rngs=rngs)
            self.bn = nnx.BatchNorm(32, rngs=rngs)
            self.fc3 = nnx.Linear(32, 3, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.fc1(x))
            x = x if self.noise is None else self.noise(x)
            return self.fc3(nnx.relu(self.bn(self.fc2(x))))

    model = Net(nnx.Rngs(0, noise=1))
    model.train()
    for i in range(4):
        model(X[64 * i:64 * (i + 1)])
    model.eval()
    if frozen:
        model.train()
        model.bn.use_running_average = True
    return model


FRAMEWORKS = {"engine": _engine, "torch": _torch, "keras": _keras, "flax": _flax}
def _bn(framework, model):
    """The name of the BatchNorm of a model of :data:`FRAMEWORKS` (Keras numbers its
    names per process)."""
    return model.layers[3].name if framework == "keras" else {"flax": "bn"}.get(framework, "4")


def _data(framework):
    if framework == "torch":
        import torch

        return torch.from_numpy(X)
    return X


def _codes(findings, at_least="info"):
    worst = ("error", "warning", "info").index(at_least)
    return sorted({(f.code, f.severity) for f in findings
                   if ("error", "warning", "info").index(f.severity) <= worst})


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_no_error_or_warning_after_recalibrating_on_the_same_data(framework):
    """Item 1: recalibrate, then diagnose on the same data: nothing about the statistics
    above info, and the Dropout finding speaks about training."""
    model, data = FRAMEWORKS[framework](), _data(framework)
    before = varshift.diagnose(model, data)
    assert ("DROPOUT_BEFORE_BN", "error") in _codes(before)
    result = varshift.recalibrate(model, data)
    assert abs(result.after.bn[0].shift - 1) < 1e-6  # like with like, in every convention
    after = varshift.diagnose(model, data)
    assert _codes(after, "warning") == []
    (dropout,) = [f for f in after if f.code == "DROPOUT_BEFORE_BN"]
    assert dropout.severity == "info" and "Inference is consistent now" in dropout.explanation
    assert "After every training run" in dropout.fix


@pytest.mark.parametrize("framework, noise", [
    ("engine", "gaussian"), ("torch", "gaussian"), ("torch", "stochastic_depth"),
    ("keras", "gaussian"), ("flax", "gaussian")])
def test_noise_that_is_not_a_dropout_call_is_found_by_its_behaviour(framework, noise):
    """Item 2: a user's own noise module (and stochastic depth) is found like a Dropout."""
    model = FRAMEWORKS[framework](noise)
    found = [f for f in varshift.diagnose(model, _data(framework))
             if f.code == "DROPOUT_BEFORE_BN"]
    assert [f.layer for f in found] == [_bn(framework, model)]
    assert found[0].severity in ("warning", "error")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_model_without_noise_gets_no_dropout_finding(framework):
    model = FRAMEWORKS[framework](None)
    assert [f for f in varshift.diagnose(model, _data(framework))
            if f.code == "DROPOUT_BEFORE_BN"] == []


@pytest.mark.parametrize("framework", ["torch", "keras", "flax"])
def test_frozen_batchnorms_are_left_as_they_are_and_spoken_of_as_frozen(framework):
    """Item 3: recalibrate leaves a frozen BatchNorm (and says so) unless asked;
    diagnose speaks of what a frozen layer does; measure's table marks it."""
    model, data = FRAMEWORKS[framework](frozen=True), _data(framework)
    report = varshift.measure(model, data)
    name = _bn(framework, model)
    assert report.bn[0].frozen and f"{name} (frozen)" in str(report)
    (dropout,) = [f for f in varshift.diagnose(model, data) if f.code == "DROPOUT_BEFORE_BN"]
    assert dropout.severity == "info" and "frozen" in dropout.explanation
    assert "inflates the input variance that BatchNorm records" not in dropout.explanation
    before = report.bn[0].moving_var.copy()
    result = varshift.recalibrate(model, data)
    assert result.layers == [] and result.frozen == [name]
    assert "frozen" in str(result)
    assert np.array_equal(varshift.measure(model, data).bn[0].moving_var, before)
    result = varshift.recalibrate(model, data, include_frozen=True)
    assert result.layers == [name] and abs(result.after.bn[0].shift - 1) < 1e-6


@pytest.mark.parametrize("framework, momentum, quoted, advice", [
    ("keras", 0.99, "momentum=0.99", "a smaller momentum (Keras' convention"),
    ("flax", 0.99, "momentum=0.99", "a smaller momentum (Flax's convention"),
    ("torch", 0.01, "momentum=0.01", "a larger momentum (PyTorch's convention")])
def test_advice_is_in_the_users_convention(framework, momentum, quoted, advice):
    """Item 4: a slow momentum's stale statistics, quoted and fixed as the user's
    framework writes momentum."""
    model, data = FRAMEWORKS[framework](None), _data(framework)
    bn = {"keras": lambda: model.layers[3], "flax": lambda: model.bn,
          "torch": lambda: model[4]}[framework]()
    bn.momentum = momentum
    varshift.recalibrate(model, data[:64])  # statistics of a small, different sample ...
    shifted = data * 3 + 1                   # ... and of data that has drifted since
    (stale,) = [f for f in varshift.diagnose(model, shifted) if f.code == "STALE_RUNNING_STATS"]
    assert stale.evidence["momentum"] == pytest.approx(momentum)
    assert advice in stale.fix


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_raw_images_are_an_input_scale_finding_not_stale_statistics(framework):
    """Item 6: uint8-like inputs (0-255) to a model whose statistics came from [0, 1]."""
    model = FRAMEWORKS[framework](None)
    data = np.round(np.abs(X) * 100).astype(np.float32)
    if framework == "torch":
        import torch

        data = torch.from_numpy(data)
    findings = varshift.diagnose(model, data)
    (scale,) = [f for f in findings if f.code == "INPUT_SCALE"]
    assert scale.severity == "error" and scale.evidence["input_range"][1] > 200
    assert "range [0, " in scale.explanation and "STALE_RUNNING_STATS" not in {
        f.code for f in findings}


def test_tables_align_for_long_names_and_huge_shifts():
    """Item 10."""
    inner = nn.Sequential(nn.Dense(12, 8), nn.BatchNorm(8))
    model = nn.Sequential(nn.Sequential(nn.Sequential(inner)), nn.ReLU(), seed=0)
    model.layers[0].layers[0].layers[0].layers[1].set_running_stats(np.zeros(8), np.full(8, 1e-9), 5)
    text = str(varshift.measure(model, X))
    rows = [line for line in text.splitlines() if "0.0.0.1" in line]
    assert rows and all(re.search(r"0\.0\.0\.1 +\S", row) for row in rows)
    header = next(line for line in text.splitlines() if line.lstrip().startswith("#"))
    assert header.index("C") == rows[0].index(" 8 ") + 1  # the channel column lines up
    assert not re.search(r"\d{9,}\.\d{4}", text)  # no 381726078129144.5000


def test_every_code_is_registered_documented_and_listed_in_the_docstring():
    docs = (ROOT / "docs" / "findings.md").read_text()
    for code in CODES.values():
        assert f"| `{code.name}` | {code.source} | {code.summary} |" in docs
        assert f"``{code.name}`` ({code.source})" in Finding.__doc__
    used = set()
    for path in (ROOT / "varshift").glob("*.py"):
        used |= set(re.findall(r'Finding\(\s*"([A-Z_]+)"', path.read_text()))
        used |= set(re.findall(r'^\s+"([A-Z_]{6,})", (?:b\.|layer)', path.read_text(), re.M))
    assert used <= set(CODES), used - set(CODES)
    with pytest.raises(ValueError, match="code must be one of"):
        Finding("STALE_STATS", "", "error")
    with pytest.raises(ValueError, match="severity must be one of"):
        Finding("INPUT_SCALE", "", "fatal")
    assert (grade(1.3, (1.2, 1.5)), grade(10, (32, 8)), grade(1.0, (1.2, 1.5))) == (
        "warning", "warning", None)
