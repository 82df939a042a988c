"""One training step (forward, backward, Adam) of the reproduction's 1-D networks,
``reproduce.networks.preresnet("a", 0.3)``, ``resnext("a", 0.3)`` and
``densenet("a", 0.3)`` on MNIST-1D-shaped input (batch 100, (N, 1, 40)), varshift
against idiomatic PyTorch (the same architecture written with PyTorch's own layers in
``_torch_peers.py``, same parameter count, checked), at 1 and 2 threads, each engine
and thread count in its own fresh process, rounds interleaved. The PyTorch worker never
imports varshift and asserts so where it times.

    python benchmarks/small_networks.py               # all three networks, 1 and 2 threads
    python benchmarks/small_networks.py --rounds 5 --threads 2

Prints, per network and thread count, the medians over rounds of each process's median
wall and CPU milliseconds per step (CPU time counts every thread, so threads that spin
show up there), and the ratios varshift / PyTorch. Targets (issue #25): wall ratio
<= 1.0 at 1 and at 2 threads (goal <= 0.7), and no network slower at 2 threads than at 1.
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
    blas_kernel,
    describe_machine,
    median_wall_and_cpu_ms,
    peer_threads,
    run_worker,
    torch_adam_step,
    varshift_adam_step,
)

BATCH, LENGTH = 100, 40
NETWORKS = ("preresnet", "resnext", "densenet")


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 1, LENGTH)).astype(np.float32)
    return x, rng.integers(0, 10, BATCH)


def varshift_worker(network, steps):
    import numba

    from varshift.reproduce import networks

    model = getattr(networks, network)("a", 0.3, seed=0)
    x, y = _data()
    step = varshift_adam_step(model, x, y)
    params = sum(v.size for v in model.state_dict(buffers=False).values())
    print(json.dumps({**median_wall_and_cpu_ms(step, steps, warmup=10), "params": params,
                      "numba_threads": numba.get_num_threads(), "blas": blas_kernel()}))


def torch_worker(network, threads, steps):
    import torch
    from _torch_peers import NETWORKS, assert_varshift_not_imported, parameter_count

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = NETWORKS[network]()
    x, y = _data()
    step = torch_adam_step(model, torch.from_numpy(x), torch.from_numpy(y))
    assert_varshift_not_imported()
    print(json.dumps({**median_wall_and_cpu_ms(step, steps, warmup=10),
                      "params": parameter_count(model), **peer_threads()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["varshift", "torch"])
    parser.add_argument("--network", choices=NETWORKS, nargs="+", default=list(NETWORKS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.worker == "varshift":
        return varshift_worker(args.network[0], args.steps)
    if args.worker == "torch":
        return torch_worker(args.network[0], args.threads[0], args.steps)
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("PyTorch is the benchmark peer: pip install torch==2.13.0")
    me = os.path.abspath(__file__)
    print("\n".join(describe_machine()))
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
        counts = {r["params"] for t in args.threads for e in ("varshift", "torch")
                  for r in results[network, t, e]}
        assert len(counts) == 1, f"{network}: the engines' parameter counts differ: {counts}"
        first = {e: results[network, args.threads[0], e][0] for e in ("varshift", "torch")}
        print(f"\n{network} ({counts.pop()} parameters in both engines; OpenBLAS "
              f"{first['varshift']['blas']}): median over rounds of per-process median ms per step")
        print(f"  {'threads':>7s} {'varshift wall':>14s} {'cpu':>7s} {'PyTorch wall':>13s} "
              f"{'cpu':>7s} {'ratio wall':>11s} {'ratio cpu':>10s}")
        for threads in args.threads:
            med = {(engine, key): statistics.median(r[key] for r in results[network, threads, engine])
                   for engine in ("varshift", "torch") for key in ("ms", "cpu_ms")}
            ours, peer = (results[network, threads, e][0] for e in ("varshift", "torch"))
            print(f"  {threads:7d} {med['varshift', 'ms']:14.2f} {med['varshift', 'cpu_ms']:7.2f} "
                  f"{med['torch', 'ms']:13.2f} {med['torch', 'cpu_ms']:7.2f} "
                  f"{med['varshift', 'ms'] / med['torch', 'ms']:11.2f} "
                  f"{med['varshift', 'cpu_ms'] / med['torch', 'cpu_ms']:10.2f}"
                  f"   [threads: torch {peer['torch_threads']} intra-op / "
                  f"{peer['torch_interop_threads']} inter-op, Numba {ours['numba_threads']}]")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    if not any(a == "--worker" for a in sys.argv):
        print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")
