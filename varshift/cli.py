"""Command line: ``varshift COMMAND ...`` (also ``python -m varshift``)."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
import textwrap
import threading
import time
from contextlib import contextmanager

from . import __version__

DATA_HELP = """DATA is 'mnist' (the four IDX files, searched in --data-dir, $VARSHIFT_DATA/mnist,
../shared/data/mnist and ~/.cache/varshift/mnist; --download fetches them), 'mnist1d'
(generated; needs the mnist1d package), an .npy file of inputs, or an .npz file with
an array 'x' (or 'x_train' or 'inputs')."""

EXIT_CODES = """exit codes: 0 success; 1 failure while running; 2 bad usage, data or model file;
3 (diagnose, inspect) problems of severity warning or error were found."""

EPILOG = f"""examples:
  varshift demo --epochs 2 -o model.npz     train the reference convnet on MNIST, measure it
  varshift measure model.npz mnist          per-layer report on the MNIST training images
  varshift measure model.npz mnist --split test --limit 2000 --plot shift.png
  varshift diagnose model.npz x.npy --train-batch-size 32 --json
  varshift recalibrate model.npz mnist -o fixed.npz --holdout-split test
  varshift reproduce --quick --jobs 2       Li et al.'s figures, analytic and empirical
  varshift case stale-running-stats --plot stale.png   a posted question, measured
  varshift inspect model.keras --json       a saved Keras model (.keras or .h5), without Keras

{DATA_HELP}
{EXIT_CODES}"""

#: Folder of the MNIST files in this project's checkouts, relative to the current
#: folder (where the tests look too), searched after $VARSHIFT_DATA/mnist.
SHARED_MNIST = "../shared/data/mnist"


def _load_mnist(args):
    """MNIST as in ``load_mnist``, searched in the command line's places, with an error
    message written in terms of options."""
    from . import datasets

    try:
        return datasets.load_mnist(_data_dir(args), download=args.download,
                                   mirrors=datasets.MNIST_MIRRORS,
                                   extra=[os.path.abspath(SHARED_MNIST)])
    except datasets.MNISTNotFoundError as err:
        looked = "\n".join(f"  - {place}" for place in err.places)
        failed = f"\nDownloading failed: {err.download_error}" if err.download_error else ""
        raise FileNotFoundError(
            f"MNIST files not found. Looked for the four IDX files (train-images-idx3-ubyte, "
            f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw "
            f"or .gz) in:\n{looked}\nGive their folder with --data-dir FOLDER, set "
            f"VARSHIFT_DATA to a folder with an 'mnist' sub-folder, or add --download to "
            f"fetch them (about 11 MB, checksums verified) into {err.places[-1]}.{failed}"
        ) from err


def _mnist_folder(args):
    """--data-dir (see :func:`_data_dir`), else this project's shared folder where it
    exists (load_mnist then also searches $VARSHIFT_DATA/mnist and the user cache)."""
    if args.data_dir is None and os.path.isdir(SHARED_MNIST):
        return os.path.abspath(SHARED_MNIST)
    return _data_dir(args)


def _data_dir(args):
    """The MNIST folder named by --data-dir, which may be that folder or, as
    $VARSHIFT_DATA, the folder that holds ``mnist/``; None without --data-dir.

    Raises
    ------
    FileNotFoundError
        If --data-dir holds neither layout (unless --download is given: the files
        are then fetched into the user cache), with a "did you mean" hint naming a
        folder near it that holds the files.
    """
    from .datasets import MNIST_FILES, holds_mnist, mnist_folders_near

    if args.data_dir is None:
        return None
    folder = os.path.abspath(args.data_dir)
    for place in (folder, os.path.join(folder, "mnist")):
        if holds_mnist(place):
            return place
    if getattr(args, "download", False):
        return folder
    if not os.path.exists(folder):
        what = "does not exist"
    elif not os.path.isdir(folder):
        what = "is not a folder"
    else:
        what = "holds neither the MNIST files nor an 'mnist' folder with them"
    near = mnist_folders_near(folder)
    hint = f" Did you mean --data-dir {_quoted(near[0])}?" if near else ""
    raise FileNotFoundError(
        f"MNIST files not found: --data-dir {args.data_dir!r} {what}. It must be the "
        f"folder with the four IDX files ({', '.join(MNIST_FILES)}, raw or .gz) or the "
        f"folder that holds it as 'mnist/' (as for VARSHIFT_DATA).{hint}")


def _quoted(path) -> str:
    """``path`` as typed in a shell."""
    import shlex

    return shlex.quote(str(path))


def _load_data(spec, args, split=None):
    """Inputs named by DATA on the command line, as an array."""
    split = split or args.split or "train"
    if spec in ("mnist", "mnist1d"):
        from .datasets import load_mnist1d

        x_train, _, x_test, _ = _load_mnist(args) if spec == "mnist" else load_mnist1d()
        x = x_train if split == "train" else x_test
    elif spec.endswith((".npy", ".npz")):
        from ._safe_read import read_arrays

        names = ("x", "x_train", "inputs")
        with _reading("DATA", spec):
            try:
                x = read_arrays(spec, keys=names)
            except ValueError as err:  # also ModelFileError: a damaged or hostile file
                raise ValueError(f"cannot read DATA {spec!r}: {err}") from err
        if isinstance(x, dict):
            key = next((k for k in names if k in x), None)
            if key is None:
                raise ValueError(f"cannot read DATA {spec!r}: expected an array named 'x', "
                                 f"'x_train' or 'inputs' in the archive")
            x = x[key]
    else:
        raise ValueError(f"DATA must be 'mnist', 'mnist1d', an .npy or an .npz file, got {spec!r}")
    if args.limit:
        x = x[:args.limit]
    if args.flatten:
        x = x.reshape(len(x), -1)
    return x


@contextmanager
def _reading(argument, path):
    """Read the user's file ``path``, given as ``argument`` (e.g. 'MODEL'): only a
    regular file (not a folder, a device or a pipe, which could be read forever), and
    any OSError on the way as a ValueError naming the argument and the file (exit
    code 2)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            what = "a folder; give a file" if stat.S_ISDIR(mode) else "not a regular file"
            raise ValueError(f"{argument}: {path!r} is {what}")
        yield
    except OSError as err:
        why = {errno.ENOENT: f"no such file {path!r}",
               errno.EISDIR: f"{path!r} is a folder; give a file",
               errno.EACCES: f"permission denied: cannot read {path!r}",
               errno.EPERM: f"permission denied: cannot read {path!r}"}.get(
            err.errno, f"cannot read {path!r}: {err.strerror or err}")
        raise ValueError(f"{argument}: {why}") from err


def _load_model(args):
    """The model file MODEL (``varshift.load``); a Keras, PyTorch or other framework's
    file is named as such, with what to do instead."""
    from . import load
    from ._safe_read import ModelFileError

    with _reading("MODEL", args.model):
        try:
            return load(args.model)
        except ModelFileError as err:
            message = _foreign_model(args.model, args.command)
            if message is None:
                raise
            raise ValueError(message) from err


#: The signature an HDF5 file (Keras' legacy .h5 format) starts with.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: What torch.save's legacy (pickle) format starts with: pickle protocol 2, then
#: PyTorch's magic number as a 10-byte integer.
TORCH_LEGACY_START = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _model_file_kind(path):
    """What a model file is, from its first bytes and, for a zip archive, the names of
    its members; nothing is unpickled, decompressed or run.

    Returns
    -------
    {'varshift', 'keras', 'hdf5', 'torch', 'torch-legacy', 'pickle', 'safetensors'} or None
        A varshift model (an .npz archive with ``__varshift__``), a Keras 3 ``.keras``
        archive (a zip with ``config.json``), an HDF5 file (Keras' legacy ``.h5``
        models and weights), a ``torch.save`` file (a zip with ``data.pkl``, or the
        legacy pickle format), another pickle, a safetensors file; None: none of these,
        or unreadable.
    """
    import zipfile

    from ._safe_read import ZIP_ERRORS, open_regular

    try:
        with open_regular(path) as f:
            head = f.read(64)
            if head.startswith(b"PK"):
                f.seek(0)
                with zipfile.ZipFile(f) as archive:
                    names = set(archive.namelist())
                if "__varshift__.npy" in names:
                    return "varshift"
                if "config.json" in names:
                    return "keras"
                if any(n == "data.pkl" or n.endswith("/data.pkl") and n.count("/") == 1
                       for n in names):
                    return "torch"
                return None
            size = os.fstat(f.fileno()).st_size
            for offset in (0, 512, 1024, 2048):  # where HDF5 allows its signature
                f.seek(offset)
                if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return "hdf5"
    except (OSError, *ZIP_ERRORS):
        return None
    if head.startswith(TORCH_LEGACY_START):
        return "torch-legacy"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    return None


def _foreign_model(path, command):
    """The error message for MODEL ``path`` of ``varshift command`` if it is another
    framework's file (or, for inspect, a varshift model), else None."""
    import shlex

    kind, shown, quoted = _model_file_kind(path), repr(path), shlex.quote(path)
    python = ("varshift.measure or varshift.diagnose(model, data)" if command == "inspect"
              else f"varshift.{command}(model, data)")
    if command == "inspect":
        if kind == "varshift":
            return (f"MODEL: {shown} is a varshift model (varshift.save), not a Keras file; "
                    f"`varshift diagnose {quoted} DATA` and `varshift measure {quoted} DATA` "
                    f"examine it on data.")
        if kind in ("keras", "hdf5"):
            return None  # inspect's own message says what is wrong with it
        inspect = "; `varshift inspect` reads Keras model files only"
    else:
        inspect = ""
    if kind == "keras":
        return (f"MODEL: {shown} is a Keras model file (.keras archive), not a varshift "
                f"model. `varshift inspect {quoted}` reads it without data; to {command} it "
                f"on data, load it in Python (keras.saving.load_model) and pass the model "
                f"to {python}.")
    if kind == "hdf5":
        return (f"MODEL: {shown} is an HDF5 file, the format of Keras' legacy .h5 models, "
                f"not a varshift model. If it holds a whole Keras model, `varshift inspect "
                f"{quoted}` reads it without data; to {command} it on data, load it in "
                f"Python (keras.saving.load_model) and pass the model to {python}.")
    if kind in ("torch", "torch-legacy"):
        legacy = ", legacy format" if kind == "torch-legacy" else ""
        return (f"MODEL: {shown} is a PyTorch checkpoint (torch.save{legacy}), not a "
                f"varshift model, and varshift never unpickles files{inspect}. Load it in "
                f"Python (a state_dict: build the module, then "
                f"module.load_state_dict(torch.load(path)); a whole module, from a source "
                f"you trust: torch.load(path, weights_only=False)) and pass the module to "
                f"{python}.")
    if kind == "pickle":
        return (f"MODEL: {shown} is a Python pickle, not a varshift model, and varshift "
                f"never unpickles files{inspect}. If it holds a model, load it in Python "
                f"and pass the model to {python}.")
    if kind == "safetensors":
        return (f"MODEL: {shown} is a safetensors file (weights only), not a varshift "
                f"model{inspect}. Build the model in Python, load the weights into it and "
                f"pass it to {python}.")
    return None


def _progress(args) -> bool:
    """Progress on stderr: with --progress always (plain lines in a log), else on a
    terminal unless --quiet."""
    return args.progress or (not args.quiet and sys.stderr.isatty())


def _save_plot(plot, path):
    import matplotlib

    matplotlib.use("Agg")
    from ._files import atomic_write

    ax = plot()
    with atomic_write(path, "wb", "--plot") as f:
        ax.figure.savefig(f, dpi=150, format=_plot_format(path))
    print(f"wrote {path}", file=sys.stderr)


def _plot_format(path):
    """The image format named by ``path``'s suffix; None (matplotlib's default, PNG)
    without a suffix."""
    from pathlib import Path

    return Path(path).suffix.lstrip(".").lower() or None


def _measure(args) -> int:
    from . import measure

    model = _load_model(args)
    report = measure(model, _load_data(args.data, args), batch_size=args.batch_size,
                     seed=args.seed, progress=_progress(args))
    print(report.to_json(indent=1) if args.json else report)
    if args.plot:
        _save_plot(lambda: report.plot(kind=args.plot_kind or "shift"), args.plot)
    return 0


def _diagnose(args) -> int:
    import json

    from . import diagnose

    model = _load_model(args)
    data = _load_data(args.data, args)
    report = None
    if args.plot:  # the measurement diagnose makes anyway, made here to draw it too
        from . import measure

        report = measure(model, data, batch_size=args.batch_size, seed=args.seed,
                         progress=_progress(args))
    findings = diagnose(model, data, batch_size=args.batch_size,
                        train_batch_size=args.train_batch_size, seed=args.seed,
                        report=report, progress=_progress(args))
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=1))
    elif findings:
        print(_findings_text(findings, args.verbose))
    else:
        print("No problems found.")
    if args.plot:
        _save_plot(lambda: report.plot(kind=args.plot_kind or "shift"), args.plot)
    return _findings_exit_code(findings)


def _findings_text(findings, verbose) -> str:
    """Findings grouped by code (``format_findings``), with a pointer to --verbose
    where grouping left texts out; every one in full with ``verbose``."""
    from .findings import format_findings

    text = format_findings(findings, verbose=verbose)
    if not verbose and len({f.code for f in findings}) < len(findings):
        text += "\n\n(--verbose: every finding in full)"
    return text


def _findings_exit_code(findings) -> int:
    """3 if a finding is a warning or an error, else 0."""
    return 3 if any(f.severity in ("warning", "error") for f in findings) else 0


def _inspect(args) -> int:
    from ._safe_read import ModelFileError
    from .inspection import inspect

    with _reading("MODEL", args.model):
        try:
            result = inspect(args.model)
        except ModelFileError as err:
            message = _foreign_model(args.model, "inspect")
            if message is None:
                raise
            raise ValueError(message) from err
    if args.json:
        print(result.to_json(indent=1))
    else:
        print(_inspection_text(result, args.verbose))
    return _findings_exit_code(result.findings)


def _inspection_text(result, verbose) -> str:
    """The inspection's tables, then its findings grouped by code (every one in full
    with ``verbose``, as ``Inspection.summary`` has them)."""
    from dataclasses import replace

    none = "\n\nFindings: none."
    tables = replace(result, findings=[]).summary()
    if verbose or not result.findings or not tables.endswith(none):
        return result.summary()
    return f"{tables[:-len(none)]}\n\nFindings:\n{_findings_text(result.findings, False)}"


def _recalibrate(args) -> int:
    from . import recalibrate, save

    model = _load_model(args)
    holdout = _load_data(args.data, args, split=args.holdout_split) if args.holdout_split else None
    result = recalibrate(model, _load_data(args.data, args), batch_size=args.batch_size,
                         dropout=args.dropout, holdout=holdout, seed=args.seed,
                         progress=_progress(args))
    save(model, args.output)
    if args.json:
        print('{"before": %s, "after": %s}' % (result.before.to_json(), result.after.to_json()))
    else:
        print(result)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.plot:
        _save_plot(result.plot, args.plot)
    return 0


def _demo(args) -> int:
    import numpy as np

    from . import evaluate, fit, nn, optim
    from .models import reference_convnet

    x_train, y_train, x_test, y_test = _load_mnist(args)
    if args.train_size:
        x_train, y_train = x_train[:args.train_size], y_train[:args.train_size]
    model = reference_convnet(dropout=args.dropout, seed=args.seed)
    loss = nn.CrossEntropyLoss()
    print(f"Training the reference convnet on {len(x_train)} MNIST images "
          f"for {args.epochs} epoch(s), batch 200, Adam lr 1e-3 ...", file=sys.stderr)
    start = time.perf_counter()
    history = fit(model, (x_train, y_train), loss, optim.Adam(model, lr=1e-3),
                  epochs=args.epochs, batch_size=200, seed=args.seed,
                  progress=_progress(args), eval_train=False)
    seconds = time.perf_counter() - start
    test = evaluate(model, (x_test, y_test), loss)
    print(f"{'epoch':>5}  {'train loss':>10}  {'train acc':>9}")
    for epoch, (value, acc) in enumerate(zip(history["loss"], history["accuracy"]), 1):
        print(f"{epoch:>5}  {value:>10.4f}  {acc:>9.2%}")
    print(f"test loss {test['loss']:.4f}, test accuracy {test['accuracy']:.2%} "
          f"({history.steps} steps in {seconds:.1f} s, "
          f"{1000 * seconds / history.steps:.0f} ms/step)")
    if args.output:
        from . import save

        save(model, args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.measure:
        from . import diagnose, measure

        sample = x_train[:args.measure]
        print(f"\nMeasuring the trained model on {len(sample)} training images "
              f"(train mode, inference mode, Dropout off) ...", file=sys.stderr)
        report = measure(model, sample, progress=_progress(args))
        print(report)
        findings = diagnose(model, sample, train_batch_size=200, report=report)
        print("\nDiagnosis: " + ("no problems found." if not findings else
                                 _findings_text(findings, args.verbose)))
    return 0 if np.isfinite(test["loss"]) else 1


def _dask_client(address):
    """A Dask client for ``--scheduler ADDRESS`` (dask is an optional extra)."""
    if address is None:
        return None
    try:
        from dask.distributed import Client
    except ImportError as err:
        raise SystemExit("varshift: --scheduler needs dask.distributed: "
                         "pip install 'dask[distributed]'") from err
    return Client(address)


def _reproduce(args) -> int:
    from .reproduce import data_skips, default_out, run, skip_notice
    from .verdicts import adjusted_tally

    out = args.out or default_out(args.quick)
    start = time.perf_counter()
    data_dir, progress = _mnist_folder(args), _progress(args)
    if not progress:  # with progress, run says it itself
        skips = data_skips(args.only, data_dir, args.seed)
        if skips:
            print(skip_notice(skips), file=sys.stderr, flush=True)
    client = _dask_client(args.scheduler)
    try:
        results, skipped = run(out, quick=args.quick, only=args.only, seeds=args.seeds,
                               data_dir=data_dir, seed=args.seed, jobs=args.jobs,
                               client=client, cache=args.cache, progress=progress)
    finally:
        if client is not None:
            client.close()
    from .cases import CaseResult

    figures = [r for r in results if not isinstance(r, CaseResult)]
    cases = [r for r in results if isinstance(r, CaseResult)]
    claims = [c for r in figures for c in r.claims]
    statements = [c for r in cases for c in r.claims]
    print(f"{len(figures)} figure(s) and {len(cases)} case stud{'y' if len(cases) == 1 else 'ies'} "
          f"in {out}/ ({time.perf_counter() - start:.0f} s). Holm-adjusted, paper claims: "
          f"{adjusted_tally(claims)}; our extensions: {adjusted_tally(claims, 'extension')}; posted "
          f"statements: {adjusted_tally(statements)}. Report: {out}/REPORT.md")
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    return 0


def _case(args) -> int:
    from .cases import run

    client = _dask_client(args.scheduler)
    try:
        result = run(args.name, quick=not args.full, seeds=args.seeds, data_dir=_mnist_folder(args),
                     seed=args.seed, jobs=args.jobs, client=client, cache=args.cache,
                     progress=_progress(args))
    finally:
        if client is not None:
            client.close()
    print(result.to_json() if args.json else result.summary(markdown=args.markdown))
    if args.plot:
        _save_plot(result.plot, args.plot)
    return 0


def _integer_at_least(minimum, expected):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value
    parse.__name__ = expected  # argparse names the type in some messages
    return parse


_positive_int = _integer_at_least(1, "a positive integer")
_non_negative_int = _integer_at_least(0, "an integer >= 0")
_seed = _integer_at_least(0, "an integer >= 0")


def _drop_rate(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


DATA_DIR_HELP = ("folder with the MNIST IDX files, or the folder that holds it as mnist/ "
                 "(as $VARSHIFT_DATA); searched first")


def _data_source_options(parser):
    parser.add_argument("--data-dir", default=None, metavar="FOLDER", help=DATA_DIR_HELP)
    parser.add_argument("--download", action="store_true",
                        help="if the MNIST files are not found, download them (about 11 MB, "
                             "checksums verified) into ~/.cache/varshift/mnist")


def _check_options(args) -> None:
    """Usage errors (exit code 2, through the sub-command's ``parser.error``) for
    options that do not apply to the data given or that would only fail after the
    computation."""
    error = args.usage_error

    data = getattr(args, "data", "mnist")  # demo always reads MNIST
    given = lambda name: getattr(args, name, None) not in (None, False)  # noqa: E731
    if data not in ("mnist", "mnist1d"):
        for name in ("split", "holdout_split"):
            if given(name):
                error(f"--{name.replace('_', '-')} applies to DATA 'mnist' or 'mnist1d' "
                             f"only, not to {data!r}")
    if data != "mnist":
        for name in ("data_dir", "download"):
            if given(name):
                error(f"--{name.replace('_', '-')} applies to DATA 'mnist' only, not "
                             f"to {data!r}")
    if given("plot_kind") and not given("plot"):
        error("--plot-kind needs --plot FILE")
    if given("plot"):
        from matplotlib.figure import Figure

        formats = Figure().canvas.get_supported_filetypes()
        if _plot_format(args.plot) not in (None, *formats):
            error(f"--plot {args.plot!r}: the file name must end in one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    from ._files import check_writable

    for name, option in (("output", "-o/--output"), ("plot", "--plot")):
        path = getattr(args, name, None)
        if path is not None:  # '' too: no file name given
            try:
                check_writable(path, option)
            except OSError as err:
                error(err.strerror)


def _progress_options(parser):
    """-q/--quiet and --progress (exclusive): progress on stderr only on a terminal by
    default (see :func:`_progress`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress on stderr (default: progress on a terminal)")
    group.add_argument("--progress", action="store_true",
                       help="progress on stderr also when it is not a terminal (a few plain "
                            "lines, for logs)")


def _plot_options(parser):
    """--plot FILE and --plot-kind: draw the measurement report."""
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw the measurement (.png, .svg, .pdf)")
    parser.add_argument("--plot-kind", choices=["shift", "channels", "layers"], default=None,
                        help="what --plot draws: shift per BatchNorm, channels of the most "
                             "shifted BatchNorm, or variance per layer (default: shift)")


def _verbose_option(parser):
    parser.add_argument("--verbose", action="store_true",
                        help="every finding in full (default: grouped by code, the "
                             "explanation and fix once, a row of evidence per layer)")


def _examples(examples) -> str:
    """An epilog's list of examples: ``(command, what it does)`` pairs."""
    lines = [f"  {command}\n      {what}" for command, what in examples]
    return "examples:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varshift", description="Measure and fix the Dropout/BatchNorm variance shift.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"varshift {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = dict(formatter_class=argparse.RawDescriptionHelpFormatter)

    demo = sub.add_parser(
        "demo", help="train the reference convnet on MNIST", **fmt,
        description="Train the reference convnet (Dropout after every BatchNorm) on MNIST\n"
                    "with Adam, batch 200, then measure and diagnose it.",
        epilog=_examples([
            ("varshift demo --epochs 2 --train-size 10000 -o model.npz",
             "a quick model, saved for measure and diagnose"),
            ("varshift demo --download", "fetch MNIST first (about 11 MB) if not found"),
        ]) + "\n\nMNIST is searched in --data-dir, $VARSHIFT_DATA/mnist, ../shared/data/mnist "
               "and\n~/.cache/varshift/mnist; --download fetches it.\n" + EXIT_CODES)
    demo.add_argument("--epochs", type=_positive_int, default=1,
                      help="passes over the training images (default 1)")
    demo.add_argument("--train-size", type=_positive_int, default=None, metavar="N",
                      help="use only the first N training images (default: all 60000)")
    demo.add_argument("--dropout", type=_drop_rate, default=0.3, metavar="RATE",
                      help="drop rate of the Dropout layer, in [0, 1) (default 0.3)")
    demo.add_argument("--seed", type=_seed, default=0,
                      help="seed of the weights, the Dropout masks and the shuffling (default 0)")
    _data_source_options(demo)
    demo.add_argument("-o", "--output", metavar="FILE.npz",
                      help="save the trained model to this .npz file")
    demo.add_argument("--measure", type=_non_negative_int, default=10000, metavar="N",
                      help="then measure and diagnose on N training images (0: skip; "
                           "default 10000)")
    _progress_options(demo)
    _verbose_option(demo)
    demo.set_defaults(run=_demo, usage_error=demo.error)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("model", help="model file written by varshift.save (.npz)")
    common.add_argument("data", help="'mnist', 'mnist1d', or an .npy/.npz file of inputs "
                                     "(see below)")
    common.add_argument("--split", choices=["train", "test"], default=None,
                        help="split of mnist/mnist1d (default: train)")
    common.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                        help="use only the first N samples")
    common.add_argument("--flatten", action="store_true",
                        help="reshape inputs to (N, -1), for models that start with Dense")
    _data_source_options(common)
    common.add_argument("--batch-size", type=_positive_int, default=256, metavar="N",
                        help="samples per batch, also for BatchNorm's batch statistics in "
                             "train mode (default 256)")
    common.add_argument("--seed", type=_seed, default=0,
                        help="seed of the Dropout masks (default 0)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    _progress_options(common)

    def command(name, help, description, examples):
        parser = sub.add_parser(name, parents=[common], help=help,
                                description=textwrap.fill(description, 88),
                                epilog=f"{_examples(examples)}\n\n{DATA_HELP}\n{EXIT_CODES}",
                                **fmt)
        parser.set_defaults(usage_error=parser.error)
        return parser

    m = command("measure", "per-layer train/inference statistics and variance shift",
                "Measure every layer's output statistics in train and inference mode, and "
                "every BatchNorm's running against real statistics (Li et al.'s shift).",
                [("varshift measure model.npz mnist --split test --limit 2000 --plot shift.png",
                  "the test images; the shift per BatchNorm drawn"),
                 ("varshift measure model.npz x.npy --json > report.json",
                  "your inputs (an .npy array), every number as JSON"),
                 ("varshift measure model.npz mnist --data-dir ~/data --plot-kind channels "
                  "--plot c.svg", "MNIST in ~/data/mnist; channels of the worst BatchNorm")])
    _plot_options(m)
    m.set_defaults(run=_measure)

    d = command("diagnose", "name BatchNorm/Dropout problems, with evidence and fixes",
                "Check the model's BatchNorm layers for known problems (Dropout before "
                "BatchNorm, stale or initial running statistics, small batches, ...).",
                [("varshift diagnose model.npz x.npy --train-batch-size 32 --json",
                  "trained with batches of 32; findings as JSON"),
                 ("varshift diagnose model.npz mnist --limit 5000 --plot shift.png",
                  "5000 training images; the shift per BatchNorm drawn"),
                 ("varshift diagnose model.npz mnist --verbose", "every finding in full")])
    _plot_options(d)
    d.add_argument("--train-batch-size", type=_positive_int, default=None, metavar="N",
                   help="batch size used in training, for SMALL_BATCH_STATS (default: "
                        "--batch-size)")
    _verbose_option(d)
    d.set_defaults(run=_diagnose)

    r = command("recalibrate", "re-estimate BatchNorm statistics with Dropout off",
                "Replace every BatchNorm's running statistics by the exact statistics of "
                "DATA in inference mode (Dropout off), and save the model.",
                [("varshift recalibrate model.npz mnist -o fixed.npz --holdout-split test",
                  "statistics from the training images, checked on the test images"),
                 ("varshift recalibrate model.npz x.npy -o model.npz --plot before-after.png",
                  "in place, on your inputs; the shift before and after drawn")])
    r.add_argument("-o", "--output", required=True, metavar="FILE.npz",
                   help="where to save the recalibrated model (may be MODEL itself)")
    r.add_argument("--dropout", choices=["off", "on"], default="off",
                   help="Dropout during recalibration: off (the fix, default) or on "
                        "(PyTorch's update_bn, for comparison)")
    r.add_argument("--holdout-split", choices=["train", "test"], default=None,
                   help="measure before/after on this split of mnist/mnist1d (default: on "
                        "DATA itself)")
    r.add_argument("--plot", metavar="FILE.png", help="draw the shift before and after")
    r.set_defaults(run=_recalibrate)

    rp = sub.add_parser(
        "reproduce", **fmt,
        help="reproduce Li et al.'s figures at small scale, with REPORT.md",
        description=textwrap.fill(
            "Reproduce the figures of Li et al. (CVPR 2019) at small scale, analytic and "
            "empirical, and the case studies (in their quick mode): a PNG, an SVG, the "
            "numbers as JSON and a caption per figure, and REPORT.md with every claim of the "
            "paper, our estimate, its 95% interval over seeds and a verdict. Training runs "
            "are cached: a stopped run resumes. Figures and cases that need MNIST are "
            "skipped, and named at the start, when the MNIST files are not found.", 88),
        epilog=_examples([
            ("varshift reproduce --quick --jobs 2", "minutes: PreResNet only, 3 seeds, "
             "into figures/quick"),
            ("varshift reproduce --only width --data-dir ~/data", "one figure; MNIST in "
             "~/data/mnist"),
            ("varshift reproduce --jobs 8 --progress 2> log.txt", "everything (hours), "
             "progress into a log"),
        ]) + "\n\nexit codes: 0 success; 1 failure while running; 2 bad usage or data.")
    rp.add_argument("--quick", action="store_true",
                    help="PreResNet only, 3 seeds, 4 epochs, three case studies trimmed "
                         "(REPORT says how): minutes instead of hours")
    rp.add_argument("--only", nargs="+", metavar="NAME",
                    help="figures and case studies to make (default: all)")
    rp.add_argument("--out", default=None,
                    help="output folder (default: figures/quick with --quick, else figures)")
    rp.add_argument("--data-dir", default=None, metavar="FOLDER", help=DATA_DIR_HELP)
    rp.add_argument("--seeds", type=int, default=None,
                    help="seeds per setting (default 3 with --quick, else 5)")
    rp.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    rp.add_argument("--jobs", type=int, default=1,
                    help="training runs in N local processes, one thread each (default 1)")
    rp.add_argument("--scheduler", metavar="ADDRESS", default=None,
                    help="run the training runs on this Dask scheduler (needs dask: pip install 'dask[distributed]')")
    rp.add_argument("--cache", default=None,
                    help="folder of cached per-run results (default OUT/tasks); a stopped "
                         "run resumes from it")
    _progress_options(rp)
    rp.set_defaults(run=_reproduce, usage_error=rp.error)

    from .cases import CASES

    c = sub.add_parser(
        "case", **fmt,
        help="a case study: a posted question answered with measurements over several seeds",
        description=textwrap.fill(
            "Answer a question posted about BatchNorm and Dropout (a forum thread, an "
            "issue) with measurements: the posted setting trained over several seeds, "
            "each statement checked with a 95% interval. Quick by default (minutes); "
            "--full runs the posted training length. Training runs are cached with "
            "--cache: a stopped run resumes.", 88),
        epilog=_examples([
            ("varshift case stale-running-stats --plot stale.png",
             "quick run, with the case's figure"),
            ("varshift case bn-dropout-mnist-convnet --data-dir ~/data --jobs 2 --markdown",
             "MNIST in ~/data/mnist, 2 processes, a Markdown summary"),
            ("varshift case stale-running-stats --full --cache runs/ --json",
             "the posted length, resumable, every number as JSON"),
        ]) + "\n\nexit codes: 0 success; 1 failure while running; 2 bad usage or data.")
    c.add_argument("name", choices=sorted(CASES), metavar="NAME",
                   help="one of: " + ", ".join(sorted(CASES)))
    c.add_argument("--full", action="store_true",
                   help="the posted training length (slow: up to hours); default quick")
    c.add_argument("--seeds", type=int, default=None, help="seeds per setting")
    c.add_argument("--seed", type=int, default=0, help="first seed")
    c.add_argument("--data-dir", default=None, metavar="FOLDER", help=DATA_DIR_HELP)
    c.add_argument("--jobs", type=int, default=1,
                   help="training runs in N local processes, one thread each (default 1)")
    c.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the training runs on this Dask scheduler (needs dask: pip install 'dask[distributed]')")
    c.add_argument("--cache", metavar="DIR", default=None,
                   help="folder of cached per-run results; a stopped run resumes from it")
    c.add_argument("--json", action="store_true", help="every number, as JSON")
    c.add_argument("--markdown", action="store_true", help="summary as Markdown")
    c.add_argument("--plot", metavar="FILE.png", help="also draw the case's figure")
    _progress_options(c)
    c.set_defaults(run=_case, usage_error=c.error)

    i = sub.add_parser(
        "inspect", **fmt,
        help="a saved Keras model (.keras or .h5): BatchNorm statistics, dropout positions, "
             "findings",
        description=textwrap.fill(
            "Read a saved Keras model without Keras and without data: the BatchNorm "
            "layers' stored statistics, where the Dropout layers sit, and the findings "
            "that need no data (Dropout before BatchNorm, initial or damaged running "
            "statistics, ...). Nothing in the file is run or unpickled. To measure a "
            "model on data, load it in Python and pass it to varshift.diagnose.", 88),
        epilog=_examples([
            ("varshift inspect model.keras", "tables and findings"),
            ("varshift inspect legacy.h5 --json", "a legacy HDF5 model, as JSON"),
            ("varshift inspect model.keras --verbose", "every finding in full"),
        ]) + "\n\n" + EXIT_CODES)
    i.add_argument("model", help="Keras 3 .keras archive or legacy HDF5 .h5 model (needs h5py: "
                                 "pip install h5py)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    _verbose_option(i)
    i.set_defaults(run=_inspect)
    return parser


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived while a command ran (see :func:`stopping_on_signals`).

    A BaseException, like KeyboardInterrupt, so that only clean-up code catches it.

    Attributes
    ----------
    signum : int
    """

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


#: Signals that stop a command as Ctrl-C does, where the platform has them.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


@contextmanager
def stopping_on_signals():
    """Within the block, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread,
    so that, as for Ctrl-C, half-written output files are deleted (``atomic_write``)
    and models put back; the previous handlers are restored on exit. Outside the main
    thread (where Python cannot set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        for other in STOP_SIGNALS:  # a second signal must not interrupt the clean-up
            signal.signal(other, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: set outside Python
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "usage_error"):
        _check_options(args)
    try:
        with stopping_on_signals():
            return args.run(args)
    except FloatingPointError as err:  # also NonFiniteError: numbers diverged while running
        print(f"varshift: error: {err}", file=sys.stderr)
        return 1
    except (OSError, ImportError, ValueError, TypeError) as err:
        print(f"varshift: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("varshift: interrupted", file=sys.stderr)
        return 130
    except Stopped as stop:
        print(f"varshift: stopped by {signal.Signals(stop.signum).name}; files not "
              f"completely written were removed", file=sys.stderr)
        return 128 + stop.signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
