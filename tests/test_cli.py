"""The command line, run as a user would."""

import os
import subprocess
import sys
from pathlib import Path

from varshift.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None, cwd=None):
    """``python -m varshift ARGS`` with this checkout's package, from any folder."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "varshift", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})}, timeout=600,
                          cwd=cwd)


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0 and "examples:" in out.stdout and "demo" in out.stdout
    assert run("--version").stdout.startswith("varshift ")
    assert run("frobnicate").returncode == 2


def test_demo_trains_on_a_subset(mnist_dir):
    out = run("demo", "--train-size", "1000", "--measure", "500", "--data-dir", str(mnist_dir))
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and "epoch" in out.stdout
    assert "BatchNorm inputs" in out.stdout and "Diagnosis:" in out.stdout


def test_demo_without_data_explains_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared/data/mnist from here
    monkeypatch.setenv("VARSHIFT_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["demo", "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "MNIST files not found" in err and str(tmp_path / "none") in err


def _model_and_data(tmp_path):
    import numpy as np
    from helpers import blobs, dropout_before_bn, trained

    import varshift

    x, y = blobs(600)
    varshift.save(trained(dropout_before_bn(), (x, y), epochs=1), tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return tmp_path / "m.npz", tmp_path / "x.npy", tmp_path / "d.npz"


def test_measure_diagnose_recalibrate_commands(tmp_path):
    import json

    model, npy, npz = _model_and_data(tmp_path)
    out = run("measure", str(model), str(npy), "--plot", str(tmp_path / "s.png"))
    assert out.returncode == 0, out.stderr
    assert "BatchNorm inputs" in out.stdout and (tmp_path / "s.png").stat().st_size > 1000
    out = run("measure", str(model), str(npz), "--json", "--batch-size", "100")
    assert json.loads(out.stdout)["bn"][1]["shift"] > 1.5
    out = run("diagnose", str(model), str(npy))
    assert out.returncode == 3 and "DROPOUT_BEFORE_BN" in out.stdout
    findings = json.loads(run("diagnose", str(model), str(npy), "--json").stdout)
    assert "DROPOUT_BEFORE_BN" in {f["code"] for f in findings}
    out = run("recalibrate", str(model), str(npy), "-o", str(tmp_path / "fixed.npz"))
    assert out.returncode == 0, out.stderr
    assert "shift before" in out.stdout
    after = json.loads(run("measure", str(tmp_path / "fixed.npz"), str(npy), "--json").stdout)
    assert abs(after["bn"][1]["shift"] - 1) < 1e-4


def test_command_errors_have_exit_code_2(tmp_path):
    model, npy, _ = _model_and_data(tmp_path)
    out = run("measure", str(tmp_path / "missing.npz"), str(npy))
    assert out.returncode == 2 and "No such file" in out.stderr
    out = run("measure", str(model), "cifar")
    assert out.returncode == 2 and "DATA must be 'mnist'" in out.stderr
    out = run("measure", str(npy), str(npy))
    assert out.returncode == 2 and "cannot read" in out.stderr
    out = run("measure", str(model), "mnist", "--data-dir", str(tmp_path), env={"VARSHIFT_DATA": str(tmp_path)},
              cwd=tmp_path)
    assert out.returncode == 2 and "MNIST files not found" in out.stderr
    out = run("recalibrate", str(model), str(npy))
    assert out.returncode == 2 and "-o/--output" in out.stderr


def test_measure_on_mnist_subset(tmp_path, mnist_dir):
    import varshift
    from varshift.models import reference_convnet

    varshift.save(reference_convnet(seed=0), tmp_path / "ref.npz")
    out = run("measure", str(tmp_path / "ref.npz"), "mnist", "--data-dir", str(mnist_dir),
              "--split", "test", "--limit", "500", "-q")
    assert out.returncode == 0, out.stderr
    assert "(32, 14, 14)" in out.stdout


def test_measure_on_mnist1d(tmp_path):
    import pytest

    pytest.importorskip("mnist1d")
    import varshift
    from varshift import nn

    model = nn.Sequential(nn.Conv1D(1, 4, 5, padding="same"), nn.BatchNorm(4), nn.ReLU(),
                          nn.GlobalAvgPool(), nn.Dense(4, 10), seed=0)
    varshift.save(model, tmp_path / "m1d.npz")
    out = run("measure", str(tmp_path / "m1d.npz"), "mnist1d", "--limit", "300", "-q", "--json")
    assert out.returncode == 0, out.stderr
    assert '"num_samples": 300' in out.stdout
