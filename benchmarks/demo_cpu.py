"""CPU seconds of ``varshift demo`` on an idle machine and with one core busy with
another process (issue #11: busy <= 1.3x idle; goal 1.0x).

    python benchmarks/demo_cpu.py [--rounds 3] [--train-size 10000]

Each round runs the demo idle, then again while a pure-Python busy loop holds one core
(interleaved, fresh processes). CPU time is the demo process's user + system time over
all its threads (``getrusage`` of the finished child); threads that wait by spinning
show up here even when the wall time hides them. Needs the MNIST files
($VARSHIFT_DATA/mnist or --data-dir).
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import describe_machine  # noqa: E402


def _demo_seconds(args, out):
    """Wall and CPU seconds of one ``varshift demo`` run in a fresh process."""
    cmd = [sys.executable, "-m", "varshift", "demo", "--quiet", "--epochs", "1",
           "--train-size", str(args.train_size), "--measure", str(args.measure), "-o", out]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"varshift demo failed:\n{done.stderr}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--measure", type=int, default=10000)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    print("\n".join(describe_machine()))
    print(f"varshift demo (1 epoch on {args.train_size} images, measure on {args.measure}), "
          f"{os.cpu_count()} cores, {args.rounds} interleaved rounds")
    results = {"idle": [], "one core busy": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.npz")
        _demo_seconds(args, out)  # warm the Numba cache and the page cache
        for _ in range(args.rounds):
            results["idle"].append(_demo_seconds(args, out))
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.5)
                results["one core busy"].append(_demo_seconds(args, out))
            finally:
                busy.kill()
                busy.wait()
    med = {}
    for name, runs in results.items():
        med[name] = (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        rounds = "  ".join(f"{w:.1f}/{c:.1f}" for w, c in runs)
        print(f"  {name:14s} wall {med[name][0]:6.1f} s   CPU {med[name][1]:6.1f} s   "
              f"(rounds, wall/CPU: {rounds})")
    ratio = med["one core busy"][1] / med["idle"][1]
    print(f"  CPU seconds, one core busy / idle: {ratio:.2f}  (bar <= 1.3, goal 1.0)")


if __name__ == "__main__":
    main()
