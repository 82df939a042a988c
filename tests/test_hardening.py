"""Issue 10, from the user's side: nothing lost or half-changed when something fails,
errors instead of silent wrong results, clear errors instead of internals, and a new
user's first hour (install, data, progress, help)."""

import copy
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import blobs, dropout_before_bn, healthy, trained

import varshift
from varshift import NonFiniteError, diagnose, evaluate, fit, measure, nn, optim, recalibrate
from varshift.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def state(model):
    """Everything about a model that must survive a failed call."""
    return (model.state_dict(), model.rng_state(), [layer.training for _, layer in model.walk()])


def assert_same_state(model, before):
    params, rng, modes = state(model)
    assert params.keys() == before[0].keys()
    assert all(np.array_equal(before[0][k], v) for k, v in params.items())
    assert rng == before[1] and modes == before[2]


@pytest.fixture(scope="module")
def problem():
    x, y = blobs(400)
    return x, y, trained(dropout_before_bn(), (x, y), epochs=1)


# --------------------------------------------------------------- nothing lost or half-changed
def test_a_failed_save_keeps_the_existing_file(tmp_path):
    path = tmp_path / "model.npz"
    model = healthy()
    varshift.save(model, path)
    saved = path.read_bytes()
    model[3].seed = np.random.default_rng(0)  # set after construction, so not caught there
    with pytest.raises(TypeError, match=r"layer '3' \(Dropout.*its seed is Generator.*nothing "
                                        r"was written to .*model.npz"):
        varshift.save(model, path)
    assert path.read_bytes() == saved and os.listdir(tmp_path) == ["model.npz"]
    with pytest.raises(TypeError, match="Dropout: seed must be None or an integer >= 0, got "
                                        "Generator"):
        nn.Dropout(0.5, seed=np.random.default_rng(0))


def test_a_write_interrupted_half_way_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    varshift.save(healthy(), path)
    saved = path.read_bytes()

    def half_written(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(varshift.io.np, "savez", half_written)
    with pytest.raises(KeyboardInterrupt):
        varshift.save(healthy(seed=1), path)
    assert path.read_bytes() == saved and os.listdir(tmp_path) == ["model.npz"]


def test_unwritable_targets_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"save: cannot write .*nowhere.*m\.npz"):
        varshift.save(healthy(), tmp_path / "nowhere" / "m.npz")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        varshift.save(healthy(), tmp_path)


@pytest.mark.parametrize("change, error, message", [
    (lambda x, y, opt: ((x, y + 2), opt), ValueError, r"fit: data y: labels must be in \[0, 2\)"),
    (lambda x, y, opt: ((x, y.astype(float)), opt), TypeError, "expected integer labels"),
    (lambda x, y, opt: ((x, np.eye(2)[y]), opt), TypeError, "one-hot labels"),
    (lambda x, y, opt: ((x, np.eye(2, dtype=int)[y]), opt), ValueError, "one-hot labels"),
    (lambda x, y, opt: ((x[:, :5], y), opt), ValueError, r"fit: data x .* does not fit the model"),
    (lambda x, y, opt: ((x, y), setattr(opt, "lr", float("nan")) or opt), ValueError,
     "optimizer.lr must be a positive float, got nan"),
    (lambda x, y, opt: ((x, y), setattr(opt, "lr", float("inf")) or opt), ValueError,
     "optimizer.lr must be a positive float, got inf"),
    (lambda x, y, opt: ((x, y), optim.SGD(healthy(), lr=0.1)), ValueError,
     "optimizer was built on another model"),
])
def test_fit_rejects_bad_labels_and_learning_rates_before_any_change(problem, change, error, message):
    x, y, model = problem
    data, opt = change(x, y, optim.SGD(model, lr=0.1))
    before = state(model)
    with pytest.raises(error, match=message):
        fit(model, data, nn.CrossEntropyLoss(), opt, batch_size=50)
    assert_same_state(model, before)
    with pytest.raises(ValueError, match=r"fit: validation_data y: labels must be in"):
        fit(model, (x, y), nn.CrossEntropyLoss(), optim.SGD(model, lr=0.1),
            validation_data=(x, y + 5))
    assert_same_state(model, before)


class Interrupt(nn.Identity):
    """Raises KeyboardInterrupt in its ``after``-th forward call."""

    def __init__(self, after=3):
        super().__init__()
        self.after, self.calls = after, 0

    def _forward(self, x):
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt
        return super()._forward(x)


def test_fit_interrupted_mid_step_leaves_the_model_as_after_the_last_step():
    x, y = blobs(400)
    model = nn.Sequential(nn.Dense(20, 16), nn.BatchNorm(16), nn.ReLU(), nn.Dropout(0.5),
                          Interrupt(after=3), nn.Dense(16, 2), seed=0)
    snapshots = []

    class Recording(optim.SGD):
        def step(self):
            super().step()
            snapshots.append(state(self.model))

    with pytest.raises(KeyboardInterrupt):  # in step 2: the BatchNorm and Dropout ran before it
        fit(model, (x, y), nn.CrossEntropyLoss(), Recording(model, lr=0.1), batch_size=50)
    assert len(snapshots) == 1  # the dry run was call 1, step 1 call 2
    assert_same_state(model, snapshots[0])


def test_recalibrate_restores_the_statistics_when_the_after_report_fails(problem):
    x, _, model = problem
    before = state(model)
    with pytest.raises(TypeError, match="recalibrate: holdout is read several times"):
        recalibrate(model, x, holdout=(b for b in [x]))

    class SecondReadFails:
        reads = 0

        def __iter__(self):
            self.reads += 1
            if self.reads == 2:
                raise OSError("the disk went away")
            return iter([x[:200], x[200:]])

    with pytest.raises(OSError, match="the disk went away"):
        recalibrate(model, x, holdout=SecondReadFails())
    assert_same_state(model, before)
    twin = copy.deepcopy(model)
    assert recalibrate(twin, x, holdout=SecondReadFails(), reports=False).after is None


# --------------------------------------------------------------- silent wrong results
def test_overflowing_running_variance_raises_and_changes_nothing():
    model = nn.Sequential(nn.Dense(2, 2), nn.BatchNorm(2), seed=0)
    model[0].params["weight"][...] = np.eye(2)
    huge = np.array([[3e38, 1], [-3e38, 2], [3e38, 3]], np.float32)
    before = state(model)
    with pytest.raises(NonFiniteError, match=r"layer '1' \(BatchNorm\(2\)\): running_var would "
                                             r"become .* in channel 0, beyond the float32 range"):
        model(huge)
    assert_same_state(model, before)
    assert isinstance(NonFiniteError("x"), FloatingPointError) and issubclass(NonFiniteError, ValueError)
    labels = np.array([0, 1, 0])
    with pytest.raises(NonFiniteError, match=r"in epoch 1, step 1 .*this step was not applied"):
        fit(model, (huge, labels), nn.CrossEntropyLoss(), optim.SGD(model, lr=0.1),
            batch_size=3, eval_train=False)
    assert_same_state(model, before)


def test_diagnose_refuses_a_report_of_another_model_or_of_older_statistics(problem):
    x, _, model = problem
    other = trained(healthy(), blobs(400), epochs=1)
    with pytest.raises(ValueError, match="report describes another model"):
        diagnose(model, x, report=measure(other, x))
    narrower = nn.Sequential(nn.Dense(20, 32), nn.ReLU(), nn.Dropout(0.5), nn.Dense(32, 32),
                             nn.BatchNorm(32), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm(32),
                             nn.Dense(32, 2), seed=0)  # same layer names and kinds
    with pytest.raises(ValueError, match="BatchNorm '4' with 32 channels, the model has '4' with 64"):
        diagnose(model, x, report=measure(narrower, x))
    with pytest.raises(ValueError, match="other running statistics"):
        diagnose(model, x, report=measure(dropout_before_bn(seed=1), x))
    stale = measure(model, x)
    fixed = copy.deepcopy(model)
    recalibrate(fixed, x, reports=False)
    with pytest.raises(ValueError, match=r"running_mean of BatchNorm '4' differs.*measure again"):
        diagnose(fixed, x, report=stale)
    with pytest.raises(TypeError, match="report must be a varshift Report"):
        diagnose(fixed, x, report=stale.to_dict())


@pytest.mark.parametrize("call, message", [
    (lambda m, x: diagnose(m, x, train_batch_size=0), "train_batch_size must be a positive integer, got 0"),
    (lambda m, x: diagnose(m, x, train_batch_size=-3), "train_batch_size must be a positive integer, got -3"),
    (lambda m, x: measure(m, x, batch_size=-5), "measure: batch_size must be a positive integer"),
    (lambda m, x: recalibrate(m, x, batch_size=0), "recalibrate: batch_size must be a positive"),
    (lambda m, x: evaluate(m, (x, np.zeros(len(x), int)), nn.CrossEntropyLoss(), batch_size=-1),
     "evaluate: batch_size must be a positive integer"),
    (lambda m, x: fit(m, (x, np.zeros(len(x), int)), nn.CrossEntropyLoss(), optim.SGD(m, lr=0.1),
                      epochs=0), "fit: epochs must be a positive integer, got 0"),
    (lambda m, x: fit(m, (x[:40], np.zeros(40, int)), nn.CrossEntropyLoss(), optim.SGD(m, lr=0.1),
                      batch_size=50, drop_last=True), "leaves no batch to train on"),
])
def test_non_positive_sizes_raise(problem, call, message):
    x, _, model = problem
    before = state(model)
    with pytest.raises(ValueError, match=message):
        call(model, x)
    assert_same_state(model, before)


def test_report_batch_size_is_the_batch_size_seen(problem):
    x, _, model = problem
    assert measure(model, x[:50]).batch_size == 50
    assert measure(model, x, batch_size=128).batch_size == 128
    assert measure(model, [x[:100], x[100:200], x[200:250]]).batch_size == 100
    assert measure(model, (b for b in [x[:64], x[64:]])).batch_size == 64


@pytest.fixture
def saved(tmp_path, problem):
    x, _, model = problem
    varshift.save(model, tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "m.npz", tmp_path / "x.npy"


@pytest.mark.parametrize("options, message", [
    (["--split", "test"], "--split applies to DATA 'mnist' or 'mnist1d' only, not to"),
    (["--data-dir", "."], "--data-dir applies to DATA 'mnist' only"),
    (["--download"], "--download applies to DATA 'mnist' only"),
    (["--limit", "-5"], "argument --limit: must be a positive integer, got '-5'"),
    (["--limit", "0"], "argument --limit: must be a positive integer, got '0'"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["--plot-kind", "layers"], "--plot-kind needs --plot FILE"),
    (["--plot", "report.xyz"], "the file name must end in one of"),
    (["--plot", "missing/report.png"], "folder 'missing' does not exist"),
    (["-q", "--progress"], "not allowed with argument"),
])
def test_cli_options_that_do_not_apply_are_usage_errors(saved, capsys, options, message):
    model, npy = saved
    with pytest.raises(SystemExit) as exit_:
        main(["measure", str(model), str(npy), *options])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_cli_holdout_split_and_train_batch_size_are_checked(saved, capsys):
    model, npy = saved
    for argv, message in ((["recalibrate", str(model), str(npy), "-o", str(model),
                            "--holdout-split", "test"], "--holdout-split applies to DATA"),
                          (["recalibrate", str(model), str(npy), "-o", str(model.parent)],
                           "is a folder; give a file name"),
                          (["diagnose", str(model), str(npy), "--train-batch-size", "0"],
                           "must be a positive integer"),
                          (["demo", "--epochs", "0"], "argument --epochs: must be a positive"),
                          (["demo", "--dropout", "1"], "argument --dropout: must be a number in")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


# --------------------------------------------------------------- clear errors
def corrupted(path, tmp_path, change):
    with np.load(path) as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["__varshift__"]))
    change(meta, arrays)
    arrays["__varshift__"] = np.array(json.dumps(meta))
    target = tmp_path / "corrupt.npz"
    np.savez(target, **arrays)
    return target


@pytest.mark.parametrize("change, entry", [
    (lambda meta, arrays: meta.pop("architecture"), "'architecture' entry is corrupt"),
    (lambda meta, arrays: meta["architecture"].update({"class": "Nope"}), "unknown layer class"),
    (lambda meta, arrays: meta["architecture"]["args"]["layers"][0]["args"].update(
        {"in_features": "20"}), "in_features must be a positive integer, got '20'"),
    (lambda meta, arrays: meta.update(dtype="float16"), "'dtype' entry is corrupt"),
    (lambda meta, arrays: meta.update(rng={"2": {"bit_generator": "MT19937"}}), "'rng' entry"),
    (lambda meta, arrays: meta.update(rng={"0": {}}), "no stochastic layer '0'"),
    (lambda meta, arrays: meta.update(training={"99": True}), "'training' entry is corrupt"),
    (lambda meta, arrays: meta.update(training={"0": "yes"}), "expected true or false"),
    (lambda meta, arrays: arrays.pop("4.running_var"), "missing keys ['4.running_var']"),
    (lambda meta, arrays: arrays.update({"0.bias": np.zeros(3)}), "'0.bias' expected shape"),
])
def test_corrupt_model_metadata_names_the_file_and_the_entry(saved, tmp_path, capsys, change, entry):
    model, npy = saved
    bad = corrupted(model, tmp_path, change)
    with pytest.raises(ValueError) as err:
        varshift.load(bad)
    assert str(bad) in str(err.value) and entry in str(err.value)
    assert main(["measure", str(bad), str(npy), "-q"]) == 2
    assert entry in capsys.readouterr().err


@pytest.mark.parametrize("layer, shape", [
    (nn.BatchNorm(3), (0, 3)), (nn.BatchNorm(3).eval(), (0, 3, 4)), (nn.MaxPool2D(2), (0, 3, 4, 4)),
    (nn.AvgPool1D(2), (0, 3, 4)), (nn.GlobalAvgPool(), (0, 3, 4)), (nn.Flatten(), (0, 3, 2)),
    (nn.Dense(3, 2), (0, 3)), (nn.Conv2D(3, 2, 1), (0, 3, 4, 4)), (nn.Conv1D(3, 2, 1), (0, 3, 5)),
    (nn.ReLU(), (0, 3)), (nn.Dropout(0.5), (0, 3)),
])
def test_empty_batches_name_the_layer(layer, shape):
    with pytest.raises(ValueError, match=re.escape(f"{layer!r}: expected at least one sample, "
                                                   f"got an empty batch of shape {shape}")):
        layer(np.zeros(shape, np.float32))
    model = nn.Sequential(nn.Dense(3, 3), nn.BatchNorm(3))
    with pytest.raises(ValueError, match=r"layer '0' \(Dense\(3, 3\)\): expected at least one sample"):
        model(np.zeros((0, 3)))


@pytest.mark.parametrize("make, error, message", [
    (lambda: nn.Dropout("0.5"), TypeError, r"Dropout: rate must be a float in \[0, 1\), got '0.5' \(str\)"),
    (lambda: nn.Conv2D(1, 2, kernel_size=2.5), TypeError, "Conv2D: kernel_size must be an int >= 1 or 2 of "
                                                          r"them, got 2.5 \(float\)"),
    (lambda: nn.MaxPool1D(2.5), TypeError, "MaxPool1D: kernel_size must be an int"),
    (lambda: nn.Conv1D(1, 2, 3, padding="valid"), ValueError, "padding must be 'same', an int"),
    (lambda: nn.Dense(3, "4"), TypeError, "Dense: out_features must be a positive integer, got '4'"),
    (lambda: nn.Dense(3, 4, bias="no"), TypeError, "Dense: bias must be True or False, got 'no'"),
    (lambda: nn.BatchNorm(3, momentum="0.1"), TypeError, "BatchNorm: momentum must be a float"),
    (lambda: nn.BatchNorm(3, eps=float("inf")), ValueError, "BatchNorm: eps must be a positive float, got inf"),
    (lambda: nn.LeakyReLU(float("nan")), ValueError, "negative_slope must be a finite float, got nan"),
    (lambda: nn.Uout(float("inf")), ValueError, "Uout: beta must be a float >= 0, got inf"),
    (lambda: nn.Sequential(nn.Dense(1, 1), seed=-1), ValueError, "Sequential: seed must be None or"),
    (lambda: optim.Adam(nn.Dense(1, 1), lr="1e-3"), TypeError, "Adam: lr must be a positive float"),
    (lambda: optim.Adam(nn.Dense(1, 1), betas=0.9), TypeError, "Adam: betas must be a pair"),
    (lambda: optim.SGD(None, lr=0.1), TypeError, "SGD: model must be a varshift model"),
    (lambda: nn.Dense(2, 2).astype("garbage"), TypeError, "astype: dtype must be float32 or float64"),
])
def test_non_numeric_arguments_name_argument_expected_and_actual(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("name", ["measure", "diagnose", "recalibrate", "fit", "evaluate", "save"])
def test_model_none_is_a_type_error_naming_model(name, tmp_path):
    x, y = blobs(50)
    calls = {"measure": lambda: measure(None, x), "diagnose": lambda: diagnose(None, x),
             "recalibrate": lambda: recalibrate(None, x),
             "fit": lambda: fit(None, (x, y), nn.CrossEntropyLoss(), None),
             "evaluate": lambda: evaluate(None, (x, y), nn.CrossEntropyLoss()),
             "save": lambda: varshift.save(None, tmp_path / "m.npz")}
    with pytest.raises(TypeError, match=f"{name}: model must be a varshift model .*, got None"):
        calls[name]()


def test_diagnose_reads_a_generator_once_and_agrees_with_the_array(problem):
    x, _, model = problem
    batches = [x[i:i + 100] for i in range(0, len(x), 100)]
    from_generator = diagnose(model, (b for b in batches))
    from_list = diagnose(model, batches)
    assert [f.to_dict() for f in from_generator] == [f.to_dict() for f in from_list]
    assert {f.code for f in from_generator} >= {"DROPOUT_BEFORE_BN"}
    with pytest.raises(ValueError, match="data is empty .* already consumed"):
        generator = (b for b in batches)
        list(generator)
        diagnose(model, generator)


def test_zero_variance_channels_give_no_runtime_warnings():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    x[:, 0], x[:, 1] = 0, 5  # constant inputs: zero-variance BatchNorm channels
    y = (x[:, 2] > 0).astype(np.int64)
    model = nn.Sequential(nn.BatchNorm(4), nn.Dense(4, 8), nn.BatchNorm(8), nn.ReLU(),
                          nn.Dropout(0.2), nn.Dense(8, 2), seed=0)
    model[1].params["weight"][0] = model[1].params["bias"][0] = 0  # a dead channel too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(model, (x, y), nn.CrossEntropyLoss(), optim.SGD(model, lr=0.01), epochs=2)
        result = recalibrate(model, x)
        report = measure(model, x)
        str(report), str(result), report.to_json()
        assert diagnose(model, x, report=report) == []
    assert model[0].buffers["running_var"][0] == 0 and report.bn[0].channel_shift[0] == 1
    assert report.bn[0].mean_shift[0] == 0


# --------------------------------------------------------------- a new user's first hour
def python(code, env, cwd=None):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": path, **env}, timeout=120)


def test_cli_finds_shared_data_like_the_tests_and_downloads_on_request(
        tmp_path, monkeypatch, capsys, mnist_dir):
    from varshift import datasets

    varshift.save(nn.Sequential(nn.Dense(784, 8), nn.BatchNorm(8), seed=0), tmp_path / "m.npz")
    work, shared = tmp_path / "work", tmp_path / "shared" / "data" / "mnist"
    work.mkdir()
    shared.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("VARSHIFT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["measure", str(tmp_path / "m.npz"), "mnist", "--flatten", "--limit", "300", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(shared) in err and "--data-dir" in err and "--download" in err
    assert "root=" not in err and "load_mnist" not in err  # written for the command line
    for f in mnist_dir.iterdir():
        (shared / f.name).symlink_to(f)
    assert main(argv) == 0, capsys.readouterr().err
    for f in shared.iterdir():
        f.unlink()
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (f"file://{mnist_dir}/",))
    assert main([*argv, "--download"]) == 0, capsys.readouterr().err
    assert len(list((tmp_path / "cache" / "varshift" / "mnist").glob("*.gz"))) == 4


def test_progress_in_a_log_is_a_few_plain_lines(problem, capsys):
    x, _, model = problem
    diagnose(model, x, batch_size=50, progress=True)
    recalibrate(copy.deepcopy(model), x, batch_size=50, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert "measure: started, 8 batches" in lines and "recalibrate 4: started, 8 batches" in lines
    assert sum(line.startswith("measure: done, 8 batches in") for line in lines) == 3
    assert len(lines) <= 12


def test_cli_progress_flag_writes_progress_to_a_log(saved, capsys):
    model, npy = saved
    assert main(["diagnose", str(model), str(npy)]) == 3
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    assert main(["diagnose", str(model), str(npy), "--progress"]) == 3
    assert "measure: done" in capsys.readouterr().err


def test_sub_command_help_has_no_global_examples_and_every_option_explained():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("demo", "measure", "diagnose", "recalibrate"):
        text = commands[name].format_help()
        assert "varshift reproduce" not in text and "varshift case" not in text
        assert f"varshift {name}" in text  # its own example
        for action in commands[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    assert "passes over the training images" in commands["demo"].format_help()
    assert "seed of the weights" in commands["demo"].format_help()


def test_ci_checks_the_install_order_of_the_readme():
    script = (ROOT / ".ci" / "run").read_text()
    steps = ['-m venv --system-site-packages', 'pip install -q ".[mnist1d]"', "varshift\" --version",
             "-name '*.nb[ic]'", 'pip install -q -e ".[test]"']
    positions = [script.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), positions


@pytest.mark.slow
def test_engine_guide_example_runs_as_written(mnist_dir):
    guide = (ROOT / "docs" / "guide" / "engine.md").read_text()
    code = guide.split("## Example\n\n```python\n", 1)[1].split("```", 1)[0]
    assert 'load_mnist("../shared/data/mnist", download=True)' in code
    if not (ROOT.parent / "shared" / "data" / "mnist").is_dir():
        pytest.skip("the example reads ../shared/data/mnist or downloads MNIST")
    out = python(code, {}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
