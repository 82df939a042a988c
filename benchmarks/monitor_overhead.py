"""What a training-loop monitor costs, against one evaluation pass over the same data.

    python benchmarks/monitor_overhead.py [--threads 2] [--rounds 5] [--n 512] [--size 32]

A torch resnet18 (torchvision's shape, built by ``tests/torchvision_like.py``, random
weights; its 20 BatchNorm layers are what the monitor measures) is timed three ways
on the same ``n`` held-out images, batches of 256, interleaved in every round so that
a change of the machine's load hits all three alike:

* ``eval``: one inference pass, ``model.eval()`` under ``torch.no_grad()`` -- what a
  validation epoch costs;
* ``measure``: ``Monitor(x, findings=False)(model, step)``, :func:`varshift.measure`'s
  three passes (train, eval, Dropout off) with per-channel statistics;
* ``diagnose``: ``Monitor(x)(model, step)``, the default: the measurement plus
  :func:`varshift.diagnose`'s passes over the first batch.

Printed: the CPU model, torch's version, the thread count, the load average, each
way's median seconds over the rounds, and the monitor's cost as a multiple of the
evaluation pass (the ratio of the medians).
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))
sys.path.insert(0, HERE)
from _common import cpu_model  # noqa: E402

BATCH = 256


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=512, help="held-out images")
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    args = parser.parse_args(argv)

    import torch
    from torchvision_like import resnet18

    from varshift.monitoring import Monitor

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    x = torch.randn(args.n, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))

    def evaluate():
        model.eval()
        with torch.no_grad():
            for batch in x.split(BATCH):
                model(batch)
        model.train()

    monitors = {"measure": Monitor(x, findings=False, batch_size=BATCH),
                "diagnose": Monitor(x, batch_size=BATCH)}
    ways = {"eval": evaluate,
            **{name: (lambda m=m: m(model, 0)) for name, m in monitors.items()}}
    for run in ways.values():   # warm-up: first calls import and allocate
        run()
    times = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, run in ways.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"CPU: {cpu_model()}; torch {torch.__version__}; {args.threads} threads; load "
          f"average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"resnet18 on {args.n} images of 3x{args.size}x{args.size}, batches of {BATCH}, "
          f"median of {args.rounds} interleaved rounds")
    for name, median in medians.items():
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        ratio = median / medians["eval"]
        print(f"  {name:<9} {median:8.3f} s  (range {spread} s)  {ratio:5.2f} x eval")


if __name__ == "__main__":
    main()
