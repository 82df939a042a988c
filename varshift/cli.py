"""Command line: ``varshift COMMAND ...`` (also ``python -m varshift``)."""

from __future__ import annotations

import argparse
import sys
import time

from . import __version__

EPILOG = """examples:
  varshift demo --epochs 2 -o model.npz     train the reference convnet on MNIST, measure it
  varshift measure model.npz mnist          per-layer report on the MNIST training images
  varshift measure model.npz mnist --split test --limit 2000 --plot shift.png
  varshift diagnose model.npz x.npy --train-batch-size 32 --json
  varshift recalibrate model.npz mnist -o fixed.npz --holdout-split test
  varshift reproduce --quick --jobs 2       Li et al.'s figures, analytic and empirical
  varshift case stale-running-stats --plot stale.png   a posted question, measured
  varshift inspect model.keras --json       a saved Keras model (.keras or .h5), without Keras

DATA is 'mnist' (read from --data-dir, else $VARSHIFT_DATA/mnist, else
~/.cache/varshift/mnist), 'mnist1d' (generated; needs the mnist1d package), or an .npy
file of inputs, or an .npz file with an array 'x' (or 'x_train').
exit codes: 0 success; 1 failure while running; 2 bad usage, data or model file;
3 (diagnose, inspect) problems of severity warning or error were found."""


def _load_data(spec, args, split=None):
    """Inputs named by DATA on the command line, as an array."""
    import numpy as np

    split = split or args.split
    if spec in ("mnist", "mnist1d"):
        from .datasets import load_mnist, load_mnist1d

        x_train, _, x_test, _ = load_mnist(args.data_dir) if spec == "mnist" else load_mnist1d()
        x = x_train if split == "train" else x_test
    elif spec.endswith(".npy"):
        x = np.load(spec, allow_pickle=False)
    elif spec.endswith(".npz"):
        with np.load(spec, allow_pickle=False) as data:
            key = next((k for k in ("x", "x_train", "inputs") if k in data.files), None)
            if key is None:
                raise ValueError(f"{spec}: expected an array named 'x' or 'x_train', "
                                 f"found {data.files}")
            x = data[key]
    else:
        raise ValueError(f"DATA must be 'mnist', 'mnist1d', an .npy or an .npz file, got {spec!r}")
    if args.limit:
        x = x[:args.limit]
    if args.flatten:
        x = x.reshape(len(x), -1)
    return x


def _progress(args) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _save_plot(plot, path):
    import matplotlib

    matplotlib.use("Agg")
    ax = plot()
    ax.figure.savefig(path, dpi=150)
    print(f"wrote {path}", file=sys.stderr)


def _measure(args) -> int:
    from . import load, measure

    model = load(args.model)
    report = measure(model, _load_data(args.data, args), batch_size=args.batch_size,
                     seed=args.seed, progress=_progress(args))
    print(report.to_json(indent=1) if args.json else report)
    if args.plot:
        _save_plot(lambda: report.plot(kind=args.plot_kind), args.plot)
    return 0


def _diagnose(args) -> int:
    import json

    from . import diagnose, load

    model = load(args.model)
    findings = diagnose(model, _load_data(args.data, args), batch_size=args.batch_size,
                        train_batch_size=args.train_batch_size, seed=args.seed,
                        progress=_progress(args))
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=1))
    elif findings:
        print("\n\n".join(str(f) for f in findings))
    else:
        print("No problems found.")
    return _findings_exit_code(findings)


def _findings_exit_code(findings) -> int:
    """3 if a finding is a warning or an error, else 0."""
    return 3 if any(f.severity in ("warning", "error") for f in findings) else 0


def _inspect(args) -> int:
    from .inspect import inspect

    result = inspect(args.model)
    print(result.to_json(indent=1) if args.json else result)
    return _findings_exit_code(result.findings)


def _recalibrate(args) -> int:
    from . import load, recalibrate, save

    model = load(args.model)
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
    from .datasets import load_mnist
    from .models import reference_convnet

    x_train, y_train, x_test, y_test = load_mnist(args.data_dir)
    if args.train_size:
        x_train, y_train = x_train[:args.train_size], y_train[:args.train_size]
    model = reference_convnet(dropout=args.dropout, seed=args.seed)
    loss = nn.CrossEntropyLoss()
    print(f"Training the reference convnet on {len(x_train)} MNIST images "
          f"for {args.epochs} epoch(s), batch 200, Adam lr 1e-3 ...", file=sys.stderr)
    start = time.perf_counter()
    history = fit(model, (x_train, y_train), loss, optim.Adam(model, lr=1e-3),
                  epochs=args.epochs, batch_size=200, seed=args.seed, progress=True,
                  eval_train=False)
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
        report = measure(model, sample, progress=True)
        print(report)
        findings = diagnose(model, sample, train_batch_size=200, report=report)
        print("\nDiagnosis: " + ("no problems found." if not findings else
                                 "\n\n".join(str(f) for f in findings)))
    return 0 if np.isfinite(test["loss"]) else 1


def _dask_client(address):
    """A Dask client for ``--scheduler ADDRESS`` (dask is an optional extra)."""
    if address is None:
        return None
    try:
        from dask.distributed import Client
    except ImportError as err:
        raise SystemExit("varshift: --scheduler needs dask.distributed: "
                         "pip install 'varshift[dask]'") from err
    return Client(address)


def _reproduce(args) -> int:
    from .reproduce import default_out, run
    from .verdicts import tally

    out = args.out or default_out(args.quick)
    start = time.perf_counter()
    client = _dask_client(args.scheduler)
    try:
        results, skipped = run(out, quick=args.quick, only=args.only, seeds=args.seeds,
                               data_dir=args.data_dir, seed=args.seed, jobs=args.jobs,
                               client=client, cache=args.cache, progress=not args.quiet)
    finally:
        if client is not None:
            client.close()
    from .cases import CaseResult

    figures = [r for r in results if not isinstance(r, CaseResult)]
    cases = [r for r in results if isinstance(r, CaseResult)]
    claims = [c for r in figures for c in r.claims]
    statements = [c for r in cases for c in r.claims]
    print(f"{len(figures)} figure(s) and {len(cases)} case stud{'y' if len(cases) == 1 else 'ies'} "
          f"in {out}/ ({time.perf_counter() - start:.0f} s). Paper claims: {tally(claims)}; "
          f"posted statements: {tally(statements)}. Report: {out}/REPORT.md")
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    return 0


def _case(args) -> int:
    from .cases import run

    result = run(args.name, quick=not args.full, seeds=args.seeds, data_dir=args.data_dir,
                 seed=args.seed, progress=not args.quiet)
    print(result.to_json() if args.json else result.summary(markdown=args.markdown))
    if args.plot:
        _save_plot(result.plot, args.plot)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varshift", description="Measure and fix the Dropout/BatchNorm variance shift.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"varshift {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = dict(epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)

    demo = sub.add_parser("demo", help="train the reference convnet on MNIST", **fmt)
    demo.add_argument("--epochs", type=int, default=1)
    demo.add_argument("--train-size", type=int, default=0,
                      help="use only the first N training images (default: all)")
    demo.add_argument("--dropout", type=float, default=0.3, help="drop rate (default 0.3)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    demo.add_argument("-o", "--output", help="save the trained model to this .npz file")
    demo.add_argument("--measure", type=int, default=10000, metavar="N",
                      help="then measure and diagnose on N training images (0: skip)")
    demo.set_defaults(run=_demo)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("model", help="model file written by varshift.save (.npz)")
    common.add_argument("data", help="'mnist', 'mnist1d', or an .npy/.npz file of inputs")
    common.add_argument("--split", choices=["train", "test"], default="train",
                        help="split of mnist/mnist1d (default: train)")
    common.add_argument("--limit", type=int, default=0, help="use only the first N samples")
    common.add_argument("--flatten", action="store_true", help="reshape inputs to (N, -1)")
    common.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    common.add_argument("--batch-size", type=int, default=256)
    common.add_argument("--seed", type=int, default=0, help="seed of the Dropout masks")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    m = sub.add_parser("measure", parents=[common], **fmt,
                       help="per-layer train/inference statistics and variance shift")
    m.add_argument("--plot", metavar="FILE.png", help="also draw the report")
    m.add_argument("--plot-kind", choices=["shift", "channels", "layers"], default="shift")
    m.set_defaults(run=_measure)

    d = sub.add_parser("diagnose", parents=[common], **fmt,
                       help="name BatchNorm/Dropout problems, with evidence and fixes")
    d.add_argument("--train-batch-size", type=int, default=None,
                   help="batch size used in training (for SMALL_BATCH_STATS)")
    d.set_defaults(run=_diagnose)

    r = sub.add_parser("recalibrate", parents=[common], **fmt,
                       help="re-estimate BatchNorm statistics with Dropout off")
    r.add_argument("-o", "--output", required=True, help="where to save the fixed model")
    r.add_argument("--dropout", choices=["off", "on"], default="off")
    r.add_argument("--holdout-split", choices=["train", "test"], default=None,
                   help="measure before/after on this split of mnist/mnist1d")
    r.add_argument("--plot", metavar="FILE.png", help="draw the shift before and after")
    r.set_defaults(run=_recalibrate)

    rp = sub.add_parser("reproduce", **fmt,
                        help="reproduce Li et al.'s figures at small scale, with REPORT.md")
    rp.add_argument("--quick", action="store_true",
                    help="PreResNet only, 3 seeds, 10 epochs: minutes instead of hours")
    rp.add_argument("--only", nargs="+", metavar="NAME",
                    help="figures and case studies to make (default: all)")
    rp.add_argument("--out", default=None,
                    help="output folder (default: figures/quick with --quick, else figures)")
    rp.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    rp.add_argument("--seeds", type=int, default=None,
                    help="seeds per setting (default 3 with --quick, else 5)")
    rp.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    rp.add_argument("--jobs", type=int, default=1,
                    help="training runs in N local processes, one thread each (default 1)")
    rp.add_argument("--scheduler", metavar="ADDRESS", default=None,
                    help="run the training runs on this Dask scheduler (needs varshift[dask])")
    rp.add_argument("--cache", default=None,
                    help="folder of cached per-run results (default OUT/tasks); a stopped "
                         "run resumes from it")
    rp.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    rp.set_defaults(run=_reproduce)

    from .cases import CASES

    c = sub.add_parser("case", **fmt, help="a case study: a posted question answered with "
                                          "measurements over several seeds")
    c.add_argument("name", choices=sorted(CASES), metavar="NAME",
                   help="one of: " + ", ".join(sorted(CASES)))
    c.add_argument("--full", action="store_true",
                   help="the posted training length (slow: up to hours); default quick")
    c.add_argument("--seeds", type=int, default=None, help="seeds per setting")
    c.add_argument("--seed", type=int, default=0, help="first seed")
    c.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    c.add_argument("--json", action="store_true", help="every number, as JSON")
    c.add_argument("--markdown", action="store_true", help="summary as Markdown")
    c.add_argument("--plot", metavar="FILE.png", help="also draw the case's figure")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    c.set_defaults(run=_case)

    i = sub.add_parser("inspect", **fmt, help="a saved Keras model (.keras or .h5): BatchNorm "
                                             "statistics, dropout positions, findings")
    i.add_argument("model", help="Keras 3 .keras archive or legacy HDF5 .h5 model (needs h5py: "
                                 "pip install 'varshift[keras]')")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(run=_inspect)
    return parser


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ImportError) as err:
        print(f"varshift: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as err:
        print(f"varshift: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"varshift: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
