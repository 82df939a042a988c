"""The README's example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(mnist_dir, monkeypatch, capsys):
    monkeypatch.setenv("VARSHIFT_DATA", str(mnist_dir.parent))
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 2  # the second, on Keras files, runs in test_inspect.py
    exec(compile(blocks[0], str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and float(printed[1]) < 1e-6  # gradcheck's worst error
