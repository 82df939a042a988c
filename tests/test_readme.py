"""The README's examples run as written."""

import re
import sys
from pathlib import Path

import pytest
from conftest import import_keras

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_five_examples():
    # the engine example runs here; the PyTorch, live Keras and Flax ones below; the Keras
    # file one in test_inspect.py
    assert len(BLOCKS) == 5 and "import torch" in BLOCKS[1] and "import keras" in BLOCKS[2]
    assert "varshift.recalibrate(model" in BLOCKS[3] and "import keras" in BLOCKS[3]
    assert "from flax import nnx" in BLOCKS[4]


def test_readme_example_runs(mnist_dir, monkeypatch, capsys):
    monkeypatch.setenv("VARSHIFT_DATA", str(mnist_dir.parent))
    exec(compile(BLOCKS[0], str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and float(printed[1]) < 1e-6  # gradcheck's worst error


def test_readme_pytorch_example_runs(monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the example extends it
    exec(compile(BLOCKS[1], str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("shift ") and "[error] DROPOUT_BEFORE_BN at layer '4'" in printed
    assert "shift after" in printed and printed.rstrip().endswith("{'STATS_AT_INIT'}\n[]")


def test_readme_keras_example_runs(monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = import_keras()
    if keras.backend.backend() != "torch":
        pytest.skip("keras was imported before with another backend")
    exec(compile(BLOCKS[3], str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['STALE_RUNNING_STATS']"
    assert printed[-1].split()[-2:] == ["2.0188", "1.0000"]


def test_readme_flax_example_runs(capsys):
    pytest.importorskip("flax", reason="flax is not installed (pip install \".[flax]\")")
    exec(compile(BLOCKS[4], str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['DROPOUT_BEFORE_BN']"
    before, after = map(float, printed[-1].split()[-2:])
    assert before > 1.5 and abs(after - 1) < 0.02
