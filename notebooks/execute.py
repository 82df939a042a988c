"""Run the course notebooks, write the student edition, or check that the student version
fails only at its exercises.

    python notebooks/execute.py                        # run every notebook (with the reference
                                                       # solutions) into build/notebooks/
    python notebooks/execute.py 3 02_variance_shift_in_theory
                                                       # some of them, by number or name
    python notebooks/execute.py --in-place 3           # store the tracked notebook executed
    python notebooks/execute.py --student-edition student
                                                       # the student edition (not executed)
    python notebooks/execute.py --check-student 1      # run the student version, check it

Each notebook runs in a fresh kernel (nbclient) with this folder as working directory.

Executed notebooks run with ``VARSHIFT_SOLUTIONS=1``: every exercise function (decorated
with ``@course.exercise``) is replaced by its reference solution from ``solutions.py``, so
the outputs show every check passing. They are written to ``--output-dir`` (default
``build/notebooks/``, ignored by git); a tracked notebook is overwritten only with
``--in-place``. A cell that raises stops that notebook and writes nothing for it.

Every execution records the settings its numbers were computed with: the versions of
NumPy and SciPy, each loaded BLAS library's version, kernel (OpenBLAS picks one for the
processor: SkylakeX, Haswell, ...) and thread count, and Numba's thread count, as the
notebook's ``course.setup()`` left them. They go to ``metadata["varshift"]["executed_with"]``
and, in words, between ``<!-- stored-with -->`` and ``<!-- /stored-with -->`` where a
markdown cell has these markers (the notebook's line saying which settings made its
stored numbers). ``tests/test_notebooks.py`` re-executes the notebooks and compares every
number the text quotes with the fresh outputs, strictly where the settings are the same.

The repository keeps the **instructor edition**: exercises with their reference outputs,
answers and model answers, all marked with cell tags (``View > Cell metadata`` in
JupyterLab):

``exercise``
    a code cell the student completes; the student edition keeps it without outputs.
``measure``
    a code cell whose output gives away the answer of an exercise before it (the
    measurement a locked prediction is graded against); kept without outputs.
``explanation``
    a markdown cell that explains an exercise's answer; the student edition keeps it
    collapsed in a ``<details>`` block, to open after answering.
``answer``
    a cell for instructors only (model answers of the inline questions, the reference
    numbers); the student edition drops it.

``--student-edition DIR`` derives the student edition from the stored notebooks by these
tags alone (nothing is executed) and writes it to ``DIR`` with ``course.py`` (and not
``solutions.py``). Put ``DIR`` beside ``notebooks/`` (e.g. ``student/`` at the top of the
repository) so that the notebooks' links to ``../figures`` and ``../README.md`` resolve.

``--check-student`` runs the notebooks as a student gets them, without the solutions:
every cell must run except the exercise cells, and each of those must fail with its
stub's ``NotImplementedError("Exercise N: ...")``, not with anything else, and no other
cell may fail. ``tests/test_notebooks.py`` runs it (slow) and checks the student edition.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
OUTPUT_DIR = HERE.parent / "build" / "notebooks"
TIMEOUT = 600  # seconds per cell
TAG = "exercise"
KEEP_WITHOUT_OUTPUTS = ("exercise", "measure")
COLLAPSE = "explanation"
DROP = "answer"
TAGS = (*KEEP_WITHOUT_OUTPUTS, COLLAPSE, DROP)
"""Every tag the student edition acts on."""


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


def course_notebooks() -> list[Path]:
    """The course notebooks: every ``notebooks/[0-9]*.ipynb``, in reading order."""
    return sorted(HERE.glob("[0-9]*.ipynb"))


def find(name: str) -> Path:
    """The notebook that ``name`` names: a number (``3``, ``03``), a name with or without
    ``.ipynb`` (``03_measuring_a_network``), or a path to a notebook file.

    Raises
    ------
    ValueError
        If ``name`` matches no notebook, or more than one.
    """
    path = Path(name)
    if path.suffix == ".ipynb" and path.is_file():
        return path.resolve()
    notebooks = course_notebooks()
    stem = path.name.removesuffix(".ipynb")
    if stem.isdigit():
        matches = [p for p in notebooks if p.name.split("_")[0].isdigit()
                   and int(p.name.split("_")[0]) == int(stem)]
    else:
        matches = [p for p in notebooks if p.stem == stem] or [p for p in notebooks
                                                                if p.stem.startswith(stem)]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in notebooks)
        found = "no notebook" if not matches else f"{len(matches)} notebooks"
        raise ValueError(f"notebook {name!r} names {found}; expected a number, a name or a path "
                         f"of one of: {known}")
    return matches[0]


_SETTINGS_CELL = """\
import json, pathlib
import numba, numpy, scipy
from varshift import _runtimes
print(json.dumps({"numpy": numpy.__version__, "scipy": scipy.__version__,
                  "numba_threads": numba.get_num_threads(),
                  "blas": [{"library": pathlib.Path(r.filepath).parent.name, "version": r.version,
                            "kernel": r.architecture, "threads": r.num_threads}
                           for r in _runtimes.loaded() if r.user_api == "blas"]}))
"""
"""Run after a notebook's last cell, in its kernel, and removed again: the settings that
made its numbers (the BLAS libraries as loaded then, with their kernels and thread
counts, and Numba's thread count, as the notebook's ``course.setup()`` left them)."""

SETTINGS_START, SETTINGS_END = "<!-- stored-with -->", "<!-- /stored-with -->"
"""Markers of the place in a markdown cell that ``execute.py`` fills with the settings of
the run that stored the outputs."""


def describe(settings) -> str:
    """The settings of an execution (``metadata["varshift"]["executed_with"]``) in words."""
    blas = "; ".join(f"{b['library'].removesuffix('.libs')}'s BLAS {b['version']}, kernel "
                     f"{b['kernel']}, {b['threads']} thread{'s' * (b['threads'] != 1)}"
                     for b in settings["blas"])
    return (f"NumPy {settings['numpy']}, SciPy {settings['scipy']} ({blas or 'no BLAS found'}), "
            f"Numba {settings['numba_threads']} thread{'s' * (settings['numba_threads'] != 1)}")


def _stamp(notebook, settings) -> None:
    """Record ``settings`` in the notebook's metadata and between the markers
    :data:`SETTINGS_START` and :data:`SETTINGS_END` of its markdown cells."""
    notebook.metadata.setdefault("varshift", {})["executed_with"] = settings
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and SETTINGS_START in cell.source:
            head, rest = cell.source.split(SETTINGS_START, 1)
            if SETTINGS_END not in rest:
                raise ValueError(f"a markdown cell has {SETTINGS_START} without {SETTINGS_END}")
            cell.source = (f"{head}{SETTINGS_START}{describe(settings)}{SETTINGS_END}"
                           f"{rest.split(SETTINGS_END, 1)[1]}")


def run(path, *, solutions=True, allow_errors=False):
    """Execute the notebook at ``path`` in memory; returns ``(notebook, seconds)``.

    The settings the kernel computed with (:func:`describe`) are recorded in
    ``notebook.metadata["varshift"]["executed_with"]`` and written between the markers
    :data:`SETTINGS_START` and :data:`SETTINGS_END` where a markdown cell has them.
    Raises ``nbclient.exceptions.CellExecutionError`` at the first failing cell unless
    ``allow_errors``.
    """
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(_SETTINGS_CELL))
    start = time.perf_counter()
    with _solutions(solutions):
        NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3", allow_errors=allow_errors,
                       record_timing=False, resources={"metadata": {"path": str(path.parent)}}
                       ).execute()
    seconds = time.perf_counter() - start
    settings_cell = notebook.cells.pop()
    printed = "".join(out.get("text", "") for out in settings_cell.outputs
                      if out.output_type == "stream" and out.name == "stdout")
    if printed:  # nothing if the settings cell itself failed (allow_errors): no record
        _stamp(notebook, json.loads(printed))
    return notebook, seconds


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_exercise(cell) -> bool:
    return cell.cell_type == "code" and TAG in tags(cell)


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


def _collapsed(source: str) -> str:
    """A markdown cell's text inside a closed ``<details>`` block (blank lines around the
    markdown, so that JupyterLab renders it, formulas included)."""
    return ("<details>\n<summary><b>Explanation</b> (open it after you have answered)</summary>\n\n"
            f"{source.strip()}\n\n</details>")


def student_edition(notebook):
    """The student edition of an instructor-edition ``notebook`` (a new notebook; the
    argument is not changed): ``answer`` cells dropped, ``exercise`` and ``measure`` cells
    without outputs, ``explanation`` cells collapsed. Raises ``ValueError`` for a cell
    that links ``solutions.py`` without being dropped."""
    edition = copy.deepcopy(notebook)
    cells = []
    for i, cell in enumerate(edition.cells):
        marks = tags(cell)
        if DROP in marks:
            continue
        if "solutions.py" in cell.source:
            raise ValueError(f"cell {i} links solutions.py; expected it tagged {DROP!r} "
                             "or the link removed")
        if cell.cell_type == "code" and any(tag in marks for tag in KEEP_WITHOUT_OUTPUTS):
            cell.outputs, cell.execution_count = [], None
        if cell.cell_type == "markdown" and COLLAPSE in marks:
            cell.source = _collapsed(cell.source)
        cells.append(cell)
    edition.cells = cells
    return edition


def _write(notebook, path: Path) -> None:
    """Write ``notebook`` to ``path`` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            nbformat.write(notebook, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_student_edition(paths, folder) -> list[Path]:
    """Write the student edition of the notebooks at ``paths``, and ``course.py``, to
    ``folder``; returns the notebooks written. Refuses the folder of the notebooks
    themselves (that would overwrite the instructor edition)."""
    folder = Path(folder).resolve()
    if folder == HERE:
        raise ValueError(f"--student-edition {folder}: expected another folder than the "
                         "instructor edition's own")
    written = []
    for path in paths:
        target = folder / Path(path).name
        _write(student_edition(nbformat.read(path, as_version=4)), target)
        written.append(target)
    shutil.copyfile(HERE / "course.py", folder / "course.py")
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python notebooks/execute.py",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="examples:\n"
               "  python notebooks/execute.py                      run all into build/notebooks/\n"
               "  python notebooks/execute.py --in-place 3         store notebook 3 executed\n"
               "  python notebooks/execute.py --student-edition student\n"
               "  python notebooks/execute.py --check-student 01_batchnorm_and_dropout_from_scratch",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="a number (3 or 03), a name (03_measuring_a_network) or a path; "
                             "default: every course notebook")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--output-dir", type=Path, default=None, metavar="DIR",
                      help="where executed notebooks go (default: build/notebooks/ at the top of "
                           "the repository)")
    mode.add_argument("--in-place", action="store_true",
                      help="overwrite the tracked notebooks with their executed version")
    mode.add_argument("--student-edition", type=Path, metavar="DIR",
                      help="write the student edition (derived from the stored notebooks by their "
                           "cell tags, not executed) and course.py to DIR")
    mode.add_argument("--check-student", action="store_true",
                      help="run the student version (no solutions) and check that only the "
                           "exercise cells fail, with their stubs; writes nothing")
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        paths = [find(name) for name in args.notebooks] or course_notebooks()
    except ValueError as error:
        parser.error(str(error))
    if args.student_edition is not None:
        try:
            written = write_student_edition(paths, args.student_edition)
        except ValueError as error:
            parser.error(str(error))
        for path in written:
            print(f"{path}: student edition", flush=True)
        return 0
    status = 0
    folder = None if args.in_place else (args.output_dir or OUTPUT_DIR).resolve()
    for path in paths:
        if args.check_student:
            notebook, seconds = run(path, solutions=False, allow_errors=True)
            problems = student_problems(notebook)
            exercises = sum(is_exercise(cell) for cell in notebook.cells)
            print(f"{path.name}: {seconds:.1f} s, student version: "
                  + ("; ".join(problems) if problems else
                     f"fails cleanly ({exercises} exercise checks raise NotImplementedError)"),
                  flush=True)
            status |= bool(problems)
            continue
        notebook, seconds = run(path, solutions=True)
        target = path if folder is None else folder / path.name
        _write(notebook, target)
        print(f"{path.name}: {seconds:.1f} s -> {target}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
