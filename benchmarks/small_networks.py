"""One training step (forward, backward, Adam) of the reproduction's 1-D networks,
``reproduce.networks.preresnet("a", 0.3)`` and ``densenet("a", 0.3)`` on MNIST-1D-shaped
input (batch 100, (N, 1, 40)), varshift against the same PyTorch model, at 1 and 2
threads, each engine and thread count in its own fresh process, rounds interleaved.

    python benchmarks/small_networks.py               # both networks, 1 and 2 threads
    python benchmarks/small_networks.py --rounds 5 --threads 2

Prints, per network and thread count, the medians over rounds of each process's median
wall and CPU milliseconds per step (CPU time counts every thread, so threads that spin
show up there), and the ratios varshift / PyTorch. Targets (issue #11): wall ratio
<= 1.0 with 2 threads (goal <= 0.7), and no network slower at 2 threads than at 1.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import (  # noqa: E402
    THREAD_VARS,
    median_wall_and_cpu_ms,
    run_worker,
    torch_adam_step,
    varshift_adam_step,
)

BATCH, LENGTH = 100, 40
NETWORKS = ("preresnet", "densenet")


def worker(engine, network, threads, steps):
    import numpy as np

    from varshift.reproduce import networks

    model = getattr(networks, network)("a", 0.3, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 1, LENGTH)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)
    if engine == "varshift":
        step = varshift_adam_step(model, x, y)
    else:
        import torch

        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
        from torch_equivalent import to_torch  # the test oracle's model translation

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        step = torch_adam_step(to_torch(model), torch.from_numpy(x), torch.from_numpy(y))

    print(json.dumps(median_wall_and_cpu_ms(step, steps, warmup=10)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["varshift", "torch"])
    parser.add_argument("--network", choices=NETWORKS, nargs="+", default=list(NETWORKS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.network[0], args.threads[0], args.steps)
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("PyTorch is the benchmark peer: pip install torch==2.13.0")
    me = os.path.abspath(__file__)
    print(f"1-D networks of the reproduction, Adam step, batch {BATCH}, input (N, 1, {LENGTH}); "
          f"{args.steps} timed steps per process, {args.rounds} interleaved rounds; each "
          f"engine in a fresh process ({', '.join(THREAD_VARS)} set)")
    runs = [(n, t, e) for n in args.network for t in args.threads for e in ("varshift", "torch")]
    results = {run: [] for run in runs}
    for _ in range(args.rounds):
        for network, threads, engine in runs:
            worker_args = [engine, "--network", network, "--steps", str(args.steps)]
            results[network, threads, engine].append(json.loads(run_worker(me, worker_args, threads)))
    for network in args.network:
        print(f"\n{network}: median over rounds of per-process median ms per step")
        print(f"  {'threads':>7s} {'varshift wall':>14s} {'cpu':>7s} {'PyTorch wall':>13s} "
              f"{'cpu':>7s} {'ratio wall':>11s} {'ratio cpu':>10s}")
        for threads in args.threads:
            med = {(engine, key): statistics.median(r[key] for r in results[network, threads, engine])
                   for engine in ("varshift", "torch") for key in ("ms", "cpu_ms")}
            print(f"  {threads:7d} {med['varshift', 'ms']:14.2f} {med['varshift', 'cpu_ms']:7.2f} "
                  f"{med['torch', 'ms']:13.2f} {med['torch', 'cpu_ms']:7.2f} "
                  f"{med['varshift', 'ms'] / med['torch', 'ms']:11.2f} "
                  f"{med['varshift', 'cpu_ms'] / med['torch', 'cpu_ms']:10.2f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    if not any(a == "--worker" for a in sys.argv):
        print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")
