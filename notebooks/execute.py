"""Run notebooks top to bottom and store them with their outputs.

    python notebooks/execute.py                  # every notebook in this folder
    python notebooks/execute.py 03_*.ipynb       # some of them

Each runs in its own folder with a fresh kernel (nbclient); a cell that raises stops
that notebook with the error and leaves the stored file unchanged.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TIMEOUT = 600  # seconds per cell


def execute(path: Path) -> float:
    """Execute ``path`` in place; returns the seconds taken."""
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    nbformat.write(notebook, path)
    return seconds


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted(here.glob("[0-9]*.ipynb"))
    for path in paths:
        print(f"{path.name}: {execute(path):.1f} s", flush=True)
