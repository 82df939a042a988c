"""The command line, run as a user would."""

import os
import subprocess
import sys

from varshift.cli import main


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "varshift", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0 and "examples:" in out.stdout and "demo" in out.stdout
    assert run("--version").stdout.startswith("varshift ")
    assert run("frobnicate").returncode == 2


def test_demo_trains_on_a_subset(mnist_dir):
    out = run("demo", "--train-size", "1000", "--data-dir", str(mnist_dir))
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and "epoch" in out.stdout


def test_demo_without_data_explains_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VARSHIFT_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["demo", "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "MNIST files not found" in err and str(tmp_path / "none") in err
