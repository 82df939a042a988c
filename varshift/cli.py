"""Command line: ``varshift COMMAND ...`` (also ``python -m varshift``)."""

from __future__ import annotations

import argparse
import sys
import time

from . import __version__

EPILOG = """examples:
  varshift demo                     train the reference convnet on MNIST for 1 epoch
  varshift demo --epochs 3 --data-dir ../shared/data/mnist

MNIST is read from --data-dir, else $VARSHIFT_DATA/mnist, else ~/.cache/varshift/mnist.
exit codes: 0 success, 1 failure while running, 2 bad usage or missing data."""


def _demo(args) -> int:
    import numpy as np

    from . import evaluate, fit, nn, optim
    from .datasets import load_mnist
    from .models import reference_convnet

    x_train, y_train, x_test, y_test = load_mnist(args.data_dir)
    if args.train_size:
        x_train, y_train = x_train[:args.train_size], y_train[:args.train_size]
    model = reference_convnet(dropout=0.3, seed=args.seed)
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
    return 0 if np.isfinite(test["loss"]) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varshift", description="Measure and fix the Dropout/BatchNorm variance shift.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"varshift {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the reference convnet on MNIST",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--epochs", type=int, default=1)
    demo.add_argument("--train-size", type=int, default=0,
                      help="use only the first N training images (default: all)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FileNotFoundError as err:
        print(f"varshift: {err}", file=sys.stderr)
        return 2
    except (ValueError, FloatingPointError) as err:
        print(f"varshift: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
