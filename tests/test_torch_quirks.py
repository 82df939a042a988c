"""What only torch.nn.Module models have (issue 14): nn.Sequential paths, torch's data
forms, every dropout and BatchNorm module kind, lazy modules, F.dropout in a forward
method, hard-coded noise, update_bn, torch's conventions in diagnose, the ways torch
freezes a BatchNorm, torchvision's architectures.

What every framework shares (numbers against an oracle, state, failures, recalibrate's
statistics, frozen BatchNorm, Dropout upstream of BatchNorm) is in
``test_conformance.py``.
"""

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='torch is not installed: pip install ".[torch]"')
from torch import nn  # noqa: E402
from torch_helpers import FunctionalDropout, assert_same_state, mlp, state, trained_torch  # noqa: E402
from torchvision_like import SMALL  # noqa: E402

from varshift import diagnose, measure, recalibrate  # noqa: E402
from varshift.measurement import UncontrolledNoiseWarning  # noqa: E402


@pytest.fixture(scope="module")
def x():
    return torch.randn(1024, 20, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def trained_mlp(x):
    torch.manual_seed(0)
    return trained_torch(mlp(), x)


def codes(findings):
    return sorted({(f.code, f.layer, f.severity) for f in findings})


def test_report_of_an_nn_sequential(trained_mlp, x):
    """Paths of nn.Sequential children, torch's kinds and default settings, and the
    issue's network's Dropout shift (the numbers: test_conformance.py)."""
    report = measure(trained_mlp, x, batch_size=128)
    assert [(r.name, r.kind) for r in report.layers] == [
        ("0", "dense"), ("1", "activation"), ("2", "dropout"), ("3", "dense"), ("4", "batchnorm"),
        ("5", "activation"), ("6", "dense")]
    assert report.num_samples == 1024 and report.batch_size == 128
    b = report.bn[0]
    assert (b.name, b.num_features, b.momentum, b.eps, b.frozen) == ("4", 64, 0.1, 1e-5, False)
    np.testing.assert_array_equal(b.moving_var, trained_mlp[4].running_var.double().numpy())
    assert b.num_batches_tracked == int(trained_mlp[4].num_batches_tracked) == 30
    a = b.attribution
    assert a["dropout"] < 0.6 and a["upstream"] == pytest.approx(1.0, abs=1e-12)


def test_torch_data_forms_agree(trained_mlp, x):
    """Tensors, DataLoaders and [x, y] lists (arrays, pairs and dicts:
    test_conformance.py)."""
    from torch.utils.data import DataLoader, TensorDataset

    y = torch.zeros(len(x), dtype=torch.long)
    reference = measure(trained_mlp, x.numpy(), batch_size=128).to_json()
    loader = DataLoader(TensorDataset(x, y), batch_size=128)
    forms = [x, (x, y), (x.numpy(), y.numpy()), loader, list(loader),
             [x[i:i + 128] for i in range(0, len(x), 128)],
             ({"image": x[i:i + 128], "label": y[i:i + 128]} for i in range(0, len(x), 128))]
    for data in forms:
        got = measure(trained_mlp, data, batch_size=128, input_key="image")
        assert got.to_json() == reference
    with pytest.raises(TypeError, match="must be an array, an .x, y. pair or an iterable"):
        measure(trained_mlp, TensorDataset(x, y))


def test_batches_move_to_the_model_dtype_and_errors_name_batch_and_module(x):
    model = mlp().double()
    assert measure(model, x.numpy().astype(np.float32)[:64]).num_samples == 64
    before = state(model)
    with pytest.raises(RuntimeError, match=r"measure: data batch 0 of shape \(64, 5\): module '0' "
                                           r"\(Linear\(in_features=20.*\): mat1 and mat2 shapes"):
        measure(model, x[:64, :5])
    bad = x[:64].clone()
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="measure: data has 1 non-finite values"):
        measure(model, bad)
    with pytest.raises(ValueError, match="looks like labels"):
        measure(model, torch.arange(10))
    assert_same_state(model, before)


@pytest.mark.parametrize("noise", [nn.Dropout(0.4), nn.Dropout1d(0.4), nn.AlphaDropout(0.4),
                                   nn.FeatureAlphaDropout(0.4)], ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("norm", ["BatchNorm1d", "SyncBatchNorm", "LazyBatchNorm1d"])
def test_every_dropout_kind_before_every_batchnorm_kind(noise, norm):
    x = torch.randn(256, 6, 5, generator=torch.Generator().manual_seed(1)) + 1
    bn = getattr(nn, norm)(6) if norm != "LazyBatchNorm1d" else nn.LazyBatchNorm1d()
    model = nn.Sequential(nn.Conv1d(6, 6, 3, padding=1), nn.ReLU(), copy.deepcopy(noise), bn,
                          nn.Flatten(), nn.Linear(30, 2))
    trained_torch(model, x, steps=10)
    report = measure(model, x, batch_size=64)
    assert [r.kind for r in report.layers][2:4] == ["dropout", "batchnorm"]
    assert report.bn[0].attribution["dropout"] < 0.9  # the noise inflates the train-mode variance
    found = [f for f in diagnose(model, x, batch_size=64) if f.code == "DROPOUT_BEFORE_BN"]
    assert [(f.layer, f.evidence["dropout_layers"]) for f in found] == [
        ("3", f"2 ({type(noise).__name__} 0.4)")]
    result = recalibrate(model, x, batch_size=64)
    assert result.after.bn[0].shift == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_batchnorm_and_dropout_of_images_and_volumes(dims):
    shape = (128, 4) + (5,) * dims
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    conv, noise = getattr(nn, f"Conv{dims}d"), getattr(nn, f"Dropout{dims}d")
    lazy = getattr(nn, f"LazyBatchNorm{dims}d")()
    model = nn.Sequential(conv(4, 4, 3, padding=1), noise(0.3), lazy, nn.ReLU(),
                          getattr(nn, f"BatchNorm{dims}d")(4), nn.Flatten(),
                          nn.Linear(4 * 5 ** dims, 2))
    trained_torch(model, x, steps=5, batch=32)  # initialises the lazy BatchNorm
    report = measure(model, x, batch_size=32)
    assert [b.name for b in report.bn] == ["2", "4"] and report.bn[0].attribution["dropout"] < 0.9
    assert all(b.shift == pytest.approx(1, abs=1e-5) for b in recalibrate(model, x).after.bn)


def test_an_uninitialised_lazy_module_is_refused_untouched():
    model = nn.Sequential(nn.LazyLinear(4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match=r"measure: module '0' \(LazyLinear\) is lazy and not "
                                         r"initialised yet; run one forward pass"):
        measure(model, torch.randn(8, 3))
    assert isinstance(model[0], nn.LazyLinear)


def test_functional_dropout_follows_the_training_flag(x):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), FunctionalDropout(32, 0.5), nn.BatchNorm1d(32),
                          nn.Linear(32, 2))
    trained_torch(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = measure(model, x)
    assert report.bn[0].attribution["dropout"] < 0.7
    assert report.layers[1].var_ratio < 0.7  # the block's output: noisy in train mode only
    findings = diagnose(model, x)
    shift = [f for f in findings if f.code == "DROPOUT_BEFORE_BN"]
    assert [(f.layer, f.evidence["dropout_layers"]) for f in shift] == [
        ("2", "1 (FunctionalDropout)")]  # found by its behaviour: the module draws noise
    assert "EVAL_NOT_DETERMINISTIC" not in {f.code for f in findings}
    result = recalibrate(model, x)
    assert result.after.bn[0].shift == pytest.approx(1.0, abs=1e-5)


def test_hard_coded_noise_is_detected(x):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), FunctionalDropout(32, 0.3, hard_coded=True),
                          nn.BatchNorm1d(32), nn.Linear(32, 2))
    trained_torch(model, x, steps=5)
    before = state(model)
    with pytest.warns(UncontrolledNoiseWarning, match="inference-mode output is random"):
        measure(model, x)
    findings = diagnose(model, x)
    assert ("EVAL_NOT_DETERMINISTIC", "", "error") in codes(findings)
    assert "EVAL_BATCH_DEPENDENT" not in {f.code for f in findings}
    assert_same_state(model, before)


# ------------------------------------------------------------------ recalibrate
def test_a_cumulative_batchnorm_is_recalibrated_like_any_other(x):
    """momentum=None (a cumulative average, torch only) is reported as None and gets
    the population statistics too (the statistics of every kind of model:
    test_conformance.py)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(20, 32), nn.Dropout(0.3), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Dropout(0.5), nn.Linear(32, 16), nn.BatchNorm1d(16, momentum=None),
                          nn.Linear(16, 2))
    trained_torch(model, x)
    before = state(model)
    result = recalibrate(model, x, batch_size=100)
    assert result.layers == ["2", "6"] and result.before.bn[1].shift > 1.5
    assert result.before.bn[1].momentum is None
    assert_same_state(model, before, except_running_stats=True)
    assert int(model[6].num_batches_tracked) == 11  # 1024 samples / 100: 11 batches
    model.eval()
    with torch.no_grad():
        h = model[:6](x).double()  # with the new statistics of BatchNorm 2 upstream
        torch.testing.assert_close(model[6].running_mean.double(), h.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model[6].running_var.double(), h.var(0), rtol=1e-5, atol=1e-7)
    assert all(b.shift == pytest.approx(1.0, abs=1e-5) for b in result.after.bn)


def test_update_bn_keeps_dropouts_variance_recalibrate_removes_it(trained_mlp, x):
    """The issue's network: torch's update_bn (train mode, Dropout on) leaves running_var
    about 2.5x the variance BatchNorm sees at inference; varshift's recalibrate 1.0."""
    from torch.optim.swa_utils import update_bn

    loader = [x[i:i + 128] for i in range(0, len(x), 128)]

    def inference_ratio(model):
        model.eval()
        with torch.no_grad():
            seen = model[:4](x).double().var(0)
        return float(model[4].running_var.double().mean() / seen.mean())

    theirs, ours = copy.deepcopy(trained_mlp), copy.deepcopy(trained_mlp)
    update_bn(loader, theirs)
    recalibrate(ours, loader)
    assert 2.2 < inference_ratio(theirs) < 2.8
    assert inference_ratio(ours) == pytest.approx(1.0, abs=1e-5)
    on = recalibrate(copy.deepcopy(trained_mlp), loader, dropout="on")  # update_bn's statistics
    assert on.after.bn[0].shift == pytest.approx(inference_ratio(theirs), rel=0.05)


# ------------------------------------------------------------------ diagnose
def test_diagnose_codes_with_torch_conventions(trained_mlp, x):
    healthy = trained_torch(nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(),
                                          nn.Dropout(0.5), nn.Linear(64, 2)), x, steps=60)
    assert diagnose(healthy, x) == []
    stale = copy.deepcopy(healthy)
    with torch.no_grad():
        stale[0].weight *= 3
    found = diagnose(stale, x)
    assert codes(found) == [("STALE_RUNNING_STATS", "1", "error")]
    assert found[0].evidence["var_shift"] == pytest.approx(9, rel=0.05)
    shifted = x * 3 + 2
    at_init = trained_torch(copy.deepcopy(healthy), shifted, steps=30)
    at_init[1].reset_running_stats()
    found = diagnose(at_init, shifted)
    assert codes(found) == [("STATS_AT_INIT", "1", "error")]
    assert found[0].evidence["num_batches_tracked"] == 0
    assert codes(diagnose(healthy, x, train_batch_size=4)) == [("SMALL_BATCH_STATS", "1", "error")]
    batch_stats = trained_torch(nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(
        16, track_running_stats=False), nn.ReLU(), nn.Linear(16, 2)), x)
    found = diagnose(batch_stats, x)
    assert codes(found) == [("EVAL_BATCH_DEPENDENT", "", "error")]
    assert found[0].evidence["batch_stat_layers_at_inference"] == "1"
    keras_like = copy.deepcopy(healthy)
    keras_like[1].momentum = 0.99
    assert ("SUSPICIOUS_MOMENTUM", "1", "warning") in codes(diagnose(keras_like, x))
    cumulative = copy.deepcopy(healthy)
    cumulative[1].momentum = None
    report = measure(cumulative, x)
    assert report.bn[0].momentum is None
    assert "SUSPICIOUS_MOMENTUM" not in {f.code for f in diagnose(cumulative, x, report=report)}
    assert ("DROPOUT_BEFORE_BN", "4", "error") in codes(diagnose(trained_mlp, x))


def test_the_ways_torch_freezes_a_batchnorm(x):
    """Frozen: in eval mode inside a model in train mode (also with trainable affine
    parameters), or in eval mode with frozen affine parameters while others train (also
    after model.eval()); not frozen: eval mode throughout. (What a frozen BatchNorm
    does in the passes and in diagnose: test_conformance.py.)"""
    torch.manual_seed(0)
    pretrained = trained_torch(nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                             nn.Linear(32, 2)), x, steps=60)
    new_data = x * 2 + 1  # fine-tuning data: other statistics
    frozen = copy.deepcopy(pretrained)
    frozen[1].weight.requires_grad_(False)
    frozen[1].bias.requires_grad_(False)
    frozen.train()
    frozen[1].eval()  # the classic set-up: BatchNorm kept in inference mode while training
    trained_torch(frozen, new_data, steps=5, keep_modes=True)
    before = state(frozen)
    report = measure(frozen, new_data)
    assert report.bn[0].frozen and report.bn[0].shift > 2  # ... though far from the new data
    assert "STALE_RUNNING_STATS" not in {f.code for f in diagnose(frozen, new_data)}
    assert_same_state(frozen, before)
    frozen.eval()  # also recognised after model.eval(), by the frozen affine parameters
    assert measure(frozen, new_data).bn[0].frozen
    trainable = copy.deepcopy(pretrained).train()
    trainable[1].eval()  # eval mode inside a model in train mode is enough
    assert measure(trainable, new_data).bn[0].frozen
    assert not measure(trainable.eval(), new_data).bn[0].frozen  # eval mode throughout
    plain = copy.deepcopy(pretrained)
    assert not measure(plain, new_data).bn[0].frozen
    assert ("STALE_RUNNING_STATS", "1", "error") in codes(diagnose(plain, new_data))


# ------------------------------------------------------------------ architectures
def _architecture_checks(model, images):
    trained_torch(model, images, steps=3, batch=32)
    before = state(model)
    report = measure(model, images, batch_size=32)
    findings = diagnose(model, images, batch_size=32, report=report)
    assert_same_state(model, before)
    assert report.bn and all(np.isfinite(b.shift) for b in report.bn)
    assert "EVAL_NOT_DETERMINISTIC" not in {f.code for f in findings}
    result = recalibrate(model, images, batch_size=32)
    assert_same_state(model, before, except_running_stats=True)
    assert all(b.shift == pytest.approx(1.0, abs=1e-4) for b in result.after.bn)
    return report, findings


@pytest.mark.parametrize("name", list(SMALL))
def test_torchvision_shaped_architectures(name):
    torch.manual_seed(0)
    images = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    report, findings = _architecture_checks(SMALL[name](), images)
    names = [r.name for r in report.layers]
    if name == "resnet18":  # one ReLU module called twice per block: one entry per call
        assert "layer1.0.relu" in names and "layer1.0.relu#2" in names
        assert [b.name for b in report.bn][:4] == ["bn1", "layer1.0.bn1", "layer1.0.bn2",
                                                   "layer1.1.bn1"]
    if name == "densenet121":  # F.dropout(x, p, self.training) before the next BatchNorms
        shift = {f.layer: f.evidence["dropout_layers"] for f in findings
                 if f.code == "DROPOUT_BEFORE_BN"}
        assert "features.denseblock1.denselayer1 (_DenseLayer)" in shift[
            "features.denseblock1.denselayer2.norm1"]
    if name == "vgg11_bn":  # Dropout only after the last BatchNorm
        assert "DROPOUT_BEFORE_BN" not in {f.code for f in findings}


@pytest.mark.parametrize("name", list(SMALL))
def test_torchvision_models(name):
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    images = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _architecture_checks(getattr(models, name)(num_classes=10), images)
