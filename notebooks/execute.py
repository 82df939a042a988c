"""Run the course notebooks top to bottom; store them with their outputs, or check the
student version.

    python notebooks/execute.py                      # every notebook, stored in place
    python notebooks/execute.py 03_*.ipynb           # some of them
    python notebooks/execute.py --student 01_*.ipynb # the student version (nothing stored)

Each notebook runs in a fresh kernel (nbclient) with this folder as working directory.

Stored notebooks are executed with ``VARSHIFT_SOLUTIONS=1``: every exercise function
(decorated with ``@course.exercise``) is replaced by its reference solution from
``solutions.py``, so the stored outputs show every check passing. A cell that raises
stops that notebook and leaves the stored file unchanged.

``--student`` runs the notebooks as a student gets them, without the solutions: every
cell must run except the exercise cells (tagged ``exercise``), and each of those must
fail with its stub's ``NotImplementedError("Exercise N: ...")`` - not with anything
else, and no other cell may fail. ``tests/test_notebooks.py`` runs both in CI.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
TIMEOUT = 600  # seconds per cell
TAG = "exercise"


@contextmanager
def _solutions(enabled: bool):
    """``VARSHIFT_SOLUTIONS`` for kernels started inside the block (they inherit it)."""
    saved = os.environ.get("VARSHIFT_SOLUTIONS")
    os.environ["VARSHIFT_SOLUTIONS"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["VARSHIFT_SOLUTIONS"]
        else:
            os.environ["VARSHIFT_SOLUTIONS"] = saved


def run(path, *, solutions=True, allow_errors=False):
    """Execute the notebook at ``path`` in memory; returns ``(notebook, seconds)``.

    Raises ``nbclient.exceptions.CellExecutionError`` at the first failing cell unless
    ``allow_errors``.
    """
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with _solutions(solutions):
        NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3", allow_errors=allow_errors,
                       record_timing=False, resources={"metadata": {"path": str(path.parent)}}
                       ).execute()
    return notebook, time.perf_counter() - start


def is_exercise(cell) -> bool:
    return cell.cell_type == "code" and TAG in cell.get("metadata", {}).get("tags", [])


def errors(notebook):
    """``(cell index, cell, error output)`` for every cell that raised."""
    return [(i, cell, out) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            for out in cell.outputs if out.output_type == "error"]


def student_problems(notebook) -> list[str]:
    """What is wrong with an executed student version (empty: it fails cleanly)."""
    problems = []
    failed = {i: out for i, _, out in errors(notebook)}
    for i, cell in enumerate(notebook.cells):
        out = failed.get(i)
        if not is_exercise(cell):
            if out is not None:
                problems.append(f"cell {i} (not an exercise) raised {out.ename}: {out.evalue}")
        elif out is None:
            problems.append(f"exercise cell {i} passed without a solution")
        elif out.ename != "NotImplementedError" or not out.evalue.startswith("Exercise "):
            problems.append(f"exercise cell {i} raised {out.ename}: {out.evalue} "
                            "(expected the stub's NotImplementedError)")
    if not any(is_exercise(cell) for cell in notebook.cells):
        problems.append("no exercise cell")
    return problems


def store(path) -> float:
    """Execute ``path`` with the reference solutions and write it in place; seconds taken."""
    notebook, seconds = run(path, solutions=True)
    nbformat.write(notebook, path)
    return seconds


def main(argv):
    student = "--student" in argv
    names = [a for a in argv if a != "--student"]
    paths = [Path(p).resolve() if Path(p).exists() else HERE / p for p in names] or sorted(
        HERE.glob("[0-9]*.ipynb"))
    status = 0
    for path in paths:
        if student:
            notebook, seconds = run(path, solutions=False, allow_errors=True)
            problems = student_problems(notebook)
            exercises = sum(is_exercise(cell) for cell in notebook.cells)
            print(f"{path.name}: {seconds:.1f} s, student version: "
                  + ("; ".join(problems) if problems else
                     f"fails cleanly ({exercises} exercise checks raise NotImplementedError)"),
                  flush=True)
            status |= bool(problems)
        else:
            print(f"{path.name}: {store(path):.1f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
