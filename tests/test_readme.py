"""The README's and the user guides' examples run as written.

An example followed by a ``text`` block shows what it prints: the test compares the
printed output with that block, line for line (the examples are seeded). The guides to
measure, diagnose and recalibrate go on from one example, run in one namespace in that
order, and the command-line guide runs its commands on that example's model. The examples
that moved from the README into the user guides keep the checks they had there.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import keras_on_torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide"
EXAMPLE = re.compile(r"```python\n(.*?)```(?:\s*```text\n(.*?)```)?", flags=re.S)


def examples(path):
    """(code, shown output or None) of every Python block of a Markdown file."""
    return [(code, shown or None) for code, shown in EXAMPLE.findall(path.read_text())]


def python_block(path, after_heading):
    """The first Python block after a heading of a Markdown file."""
    section = path.read_text().split(after_heading + "\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def run(code, path):
    exec(compile(code, str(path), "exec"), {})


README_EXAMPLES = examples(README)
README_IDS = ["quick start (engine)", "practitioner (PyTorch)", "researcher (theory)"]


def test_readme_examples_are_the_three_audiences_with_their_outputs():
    assert len(README_EXAMPLES) == len(README_IDS), [c[:60] for c, _ in README_EXAMPLES]
    assert all(shown for _, shown in README_EXAMPLES), "every README example shows its output"
    quick, practitioner, researcher = (code for code, _ in README_EXAMPLES)
    assert "import torch" not in quick and "import torch" in practitioner
    assert "theory" in researcher


@pytest.mark.parametrize(("code", "shown"), README_EXAMPLES, ids=README_IDS)
def test_readme_example_prints_what_it_shows(code, shown, monkeypatch, capsys):
    if "import torch" in code:
        pytest.importorskip("torch", reason='torch is not installed (pip install ".[torch]")')
    monkeypatch.chdir(ROOT)
    run(code, README)
    assert capsys.readouterr().out.splitlines() == shown.splitlines()


def test_readme_links_lead_to_files():
    # relative links and images of the README (the documentation links into docs/)
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if "://" not in t]
    assert any(t.startswith("docs/") for t in local) and any(t.endswith(".png") for t in local)
    missing = [t for t in local if not (ROOT / unquote(t)).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


GUIDE_CHAIN = ["measure.md", "diagnose.md", "recalibrate.md"]


def test_measure_diagnose_recalibrate_guides_print_what_they_show(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    namespace = {}
    for name in GUIDE_CHAIN:
        [(code, shown)] = examples(GUIDE / name)
        exec(compile(code, str(GUIDE / name), "exec"), namespace)
        printed = capsys.readouterr().out.splitlines()
        assert printed == shown.splitlines(), f"docs/guide/{name} shows another output"


def test_cli_guide_commands_print_what_they_show(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    [(code, _)] = examples(GUIDE / "measure.md")
    namespace = {}
    exec(compile(code, str(GUIDE / "measure.md"), "exec"), namespace)
    namespace["varshift"].save(namespace["model"], "model.npz")
    namespace["np"].save("x.npy", namespace["x"])
    capsys.readouterr()
    session = (GUIDE / "cli.md").read_text().split("```text\n$ ", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's varshift
    for step in ("$ " + session).split("\n$ "):
        command, *shown = step.removeprefix("$ ").rstrip("\n").split("\n")
        words = shlex.split(command)
        assert words[0] == "varshift", command
        out = subprocess.run([sys.executable, "-m", "varshift", *words[1:]], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode in (0, 3), out.stderr
        assert out.stdout.splitlines() == shown, f"docs/guide/cli.md: {command}"


def test_engine_example_runs(mnist_dir, monkeypatch, capsys):
    monkeypatch.setenv("VARSHIFT_DATA", str(mnist_dir.parent))
    run(python_block(GUIDE / "engine.md", "## Example"), GUIDE / "engine.md")
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and float(printed[1]) < 1e-6  # gradcheck's worst error


def test_pytorch_guide_example_runs(monkeypatch, capsys):
    pytest.importorskip("torch", reason='torch is not installed (pip install ".[torch]")')
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the example extends it
    run(python_block(GUIDE / "pytorch.md", "# Your PyTorch model"), GUIDE / "pytorch.md")
    printed = capsys.readouterr().out
    assert printed.startswith("shift ") and "[error] DROPOUT_BEFORE_BN at layer '4'" in printed
    assert "shift after" in printed and printed.rstrip().endswith("{'STATS_AT_INIT'}\n[]")


def test_keras_guide_live_example_runs(capsys):
    pytest.importorskip("torch", reason='torch is not installed (pip install ".[torch]")')
    keras_on_torch()
    run(python_block(GUIDE / "keras.md", "# Your Keras model"), GUIDE / "keras.md")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['STALE_RUNNING_STATS']"
    assert printed[-1].split()[-2:] == ["2.0188", "1.0000"]


def test_keras_guide_file_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch", reason='torch is not installed (pip install ".[torch]")')
    keras_on_torch()
    monkeypatch.chdir(tmp_path)  # the example writes autoencoder.keras
    run(python_block(GUIDE / "keras.md", "## Your Keras model file"), GUIDE / "keras.md")
    first, second = capsys.readouterr().out.splitlines()
    assert first == "60 ['STATS_NEAR_INIT']" and float(second) == pytest.approx(0.99 ** 60)


def test_flax_guide_example_runs(capsys):
    pytest.importorskip("flax", reason='flax is not installed (pip install ".[flax]")')
    run(python_block(GUIDE / "flax.md", "# Your Flax model"), GUIDE / "flax.md")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['DROPOUT_BEFORE_BN']"
    before, after = map(float, printed[-1].split()[-2:])
    assert before > 1.5 and abs(after - 1) < 0.02
