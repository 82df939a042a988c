"""``varshift.measure`` of a torch resnet18 (torchvision's shape, built by
``tests/torchvision_like.py``, random weights) against a hand-written forward-hook
implementation of the same statistics, each in a fresh process with the same thread
count (the hooks worker never imports varshift, asserted where it times).

    python benchmarks/torch_measure.py [--threads 2] [--rounds 3] [--n 512] [--size 32]

Both run the same three passes per batch (train; eval; Dropout off with BatchNorm on
batch statistics) and accumulate, in float64, per-channel statistics of every module's
output in the train and eval passes and of every BatchNorm's input in all three; both
leave the model as it was. Requirement (issue #25): ratio <= 1.0 (issue #14 asked for 1.3).
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
    describe_machine,
    peer_threads,
    print_seconds_of_second_call,
    run_worker,
)

BATCH = 64


def _model_and_data(n, size):
    import torch

    sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))
    from torchvision_like import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, x


def varshift_worker(n, size, threads):
    import torch

    import varshift

    torch.set_num_threads(threads)
    model, x = _model_and_data(n, size)
    varshift.measure(model, x[:2 * BATCH], batch_size=BATCH)  # warm up (Numba, allocator)
    start = time.perf_counter()
    varshift.measure(model, x, batch_size=BATCH)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def hooks_worker(n, size, threads):
    import torch
    from _torch_peers import assert_varshift_not_imported
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.dropout import _DropoutNd

    torch.set_num_threads(threads)
    model, x = _model_and_data(n, size)
    modules = [(name, m) for name, m in model.named_modules()
               if type(m).forward is not nn.Sequential.forward]

    def run():
        """Per pass, per module output (train, eval) and BatchNorm input (all passes):
        count, float64 sum and sum of squares per channel."""
        stats, calls = {}, {}

        def add(key, t):
            t = t.detach().double()
            dims = [0] + list(range(2, t.dim()))
            s = stats.setdefault(key, [0, 0.0, 0.0])
            s[0] += t.numel() // t.shape[1]
            s[1] = s[1] + t.sum(dims)
            s[2] = s[2] + (t * t).sum(dims)

        def before(name):
            def hook(module, inputs):
                if isinstance(module, _BatchNorm):
                    add((mode, name, "in"), inputs[0])
            return hook

        def after(name):
            def hook(module, inputs, output):
                calls[name] = calls.get(name, 0) + 1  # a module called twice: one entry per call
                if mode != "nodrop" and output.dim() > 1:
                    add((mode, name, calls[name]), output)
            return hook

        handles = [h for name, m in modules for h in (m.register_forward_pre_hook(before(name)),
                                                      m.register_forward_hook(after(name)))]
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        training = [(m, m.training) for m in model.modules()]
        rng = torch.get_rng_state()
        torch.manual_seed(0)
        with torch.no_grad():
            for start in range(0, len(x), BATCH):
                for mode in ("train", "eval", "nodrop"):
                    model.train(mode != "eval")
                    if mode == "nodrop":
                        for m in model.modules():
                            if isinstance(m, _DropoutNd):
                                m.eval()
                    calls.clear()
                    model(x[start:start + BATCH])
                    if mode != "eval":
                        model.load_state_dict(saved)  # train passes must not move the stats
        for handle in handles:
            handle.remove()
        for m, flag in training:
            m.training = flag
        torch.set_rng_state(rng)
        return stats

    assert_varshift_not_imported()
    print_seconds_of_second_call(run, peer_threads())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["varshift", "hooks"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    if args.worker == "varshift":
        return varshift_worker(args.n, args.size, args.threads)
    if args.worker == "hooks":
        return hooks_worker(args.n, args.size, args.threads)
    me = os.path.abspath(__file__)
    print("\n".join(describe_machine()))
    print(f"measure: resnet18 (random weights), {args.n} images 3x{args.size}x{args.size}, "
          f"batch {BATCH}, 3 passes, {args.threads} thread(s), each in a fresh process")
    times = {"varshift.measure": [], "hand-written hooks": []}
    for _ in range(args.rounds):
        for name, worker in (("varshift.measure", "varshift"), ("hand-written hooks", "hooks")):
            out = json.loads(run_worker(me, [worker, "--n", str(args.n), "--size", str(args.size)],
                                        args.threads))
            times[name].append(out["seconds"])
    print(f"  torch threads in the hooks worker: {out['torch_threads']} intra-op / "
          f"{out['torch_interop_threads']} inter-op")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, values in times.items():
        print(f"  {name:20s} {med[name]:6.2f} s  (rounds: {' '.join(f'{v:.2f}' for v in values)})")
    ratio = med["varshift.measure"] / med["hand-written hooks"]
    print(f"  ratio varshift / hand-written hooks: {ratio:.2f} (issue #25: <= 1.0)")


if __name__ == "__main__":
    main()
