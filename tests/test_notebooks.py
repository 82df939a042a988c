"""The teaching notebooks: stored executed, and still running top to bottom."""

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("[0-9]*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]


def test_the_notebooks_are_there_and_indexed():
    assert [n[:2] for n in NAMES] == ["01", "02", "03", "04", "05", "07"]
    index = (FOLDER / "README.md").read_text()
    assert all(f"({name})" in index for name in NAMES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_is_stored_executed_with_plots_and_no_errors(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    outputs = [out for cell in code for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs), "no plot stored"
    assert notebook.cells[0].cell_type == "markdown"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs_top_to_bottom(path, mnist_dir, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(FOLDER)}}).execute()  # raises on error
    print(f"{path.name}: {time.perf_counter() - start:.0f} s")
    images = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in cell.outputs if "image/png" in out.get("data", {})]
    assert images
