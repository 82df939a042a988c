"""``varshift.recalibrate`` against one ``varshift.measure`` on the same data, in the same
process: a ratio of varshift to itself (issue #25's target: at most 2x, goal 1.5x).

    python benchmarks/recalibrate.py [--rounds 3] [--models resnet18,densenet121,keras,engine]
                                     [--sizes small|large|both] [--no-plain] [--threads N]

``recalibrate`` runs with ``reports=False`` (the reports are two ``measure`` calls);
``recal plain`` is the same call with ``cache_bytes=0``, every pass from the input, which
is what ``recalibrate`` did before its passes replayed kept layer outputs (its ratio is
the "before"). Models: torchvision-shaped ResNet-18 and DenseNet-121 (full depth,
narrow, from ``tests/torchvision_like.py``) on 32x32 images (128 and 512 for ResNet-18,
64 and 512 for DenseNet-121), Keras' DenseNet121 (``weights=None``, 32 and 256 images)
on Keras' torch backend, and the engine's 1-D PreResNet and DenseNet
(``varshift.reproduce.networks``). Each round times every call once, interleaved;
medians over the rounds of wall and CPU time (all threads). ``--threads N`` sets torch's
intra-op threads in this process: on a machine that other work keeps busy, torch's
threads wait for each other at every operation, and the CPU time they spin measures
the load more than the work (``--threads 1`` removes that; the default keeps torch's).
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
os.environ.setdefault("KERAS_BACKEND", "torch")  # this script's own process

import numpy as np  # noqa: E402
from _common import describe_machine  # noqa: E402

#: Images per torch model: the original small rows (the probe's 16 samples are an
#: eighth to a quarter of them) and a realistic size, where the fixed cost is small.
TORCH_SIZES = {"resnet18": (128, 512), "densenet121": (64, 512)}
#: Images for Keras' DenseNet121, small and realistic.
KERAS_SIZES = (32, 256)


def _torch_models(names, sizes):
    import torch
    from torchvision_like import densenet121, resnet18

    torch.manual_seed(0)
    makers = {"resnet18": lambda: resnet18(width=8),
              "densenet121": lambda: densenet121(growth_rate=4, num_init_features=8)}
    out = {}
    for name in names:
        if name in makers:
            model = makers[name]()
            model.train()
            x = torch.randn(max(TORCH_SIZES[name]), 3, 32, 32)
            with torch.no_grad():
                model(x[:64])  # running statistics from a train-mode batch
            model.eval()
            for n in sizes(TORCH_SIZES[name]):
                out[f"torch {name} {n}"] = (model, x[:n])
    return out


def _keras_model(sizes):
    import keras

    model = keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(0).standard_normal((max(KERAS_SIZES), 32, 32, 3))
    x = x.astype(np.float32)
    return {f"keras DenseNet121 {n}": (model, x[:n]) for n in sizes(KERAS_SIZES)}


def _engine_models():
    from varshift.reproduce.networks import densenet, preresnet

    x = np.random.default_rng(0).standard_normal((2048, 1, 64)).astype(np.float32)
    out = {}
    for name, model in (("engine PreResNet", preresnet(width=16, blocks=6, seed=0)),
                        ("engine DenseNet", densenet(growth=8, layers=8, seed=0))):
        model.train()
        model(x[:128])  # running statistics from a train-mode batch
        out[name] = (model.eval(), x)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="resnet18,densenet121,keras,engine")
    parser.add_argument("--sizes", choices=("small", "large", "both"), default="both",
                        help="data sizes of the torch and Keras models (default: both rows)")
    parser.add_argument("--no-plain", action="store_true",
                        help="skip 'recal plain' (one pass from the input per BatchNorm: "
                             "minutes at the large sizes)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's intra-op threads in this process (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    import varshift

    def sizes(pair):
        return {"small": pair[:1], "large": pair[1:], "both": pair}[args.sizes]

    names = args.models.split(",")
    models = _torch_models(names, sizes)
    if "keras" in names:
        models.update(_keras_model(sizes))
    if "engine" in names:
        models.update(_engine_models())
    print("\n".join(describe_machine()))
    if args.threads is not None:
        print(f"torch intra-op threads in this process: {args.threads} (--threads)")
    calls = {
        "measure": lambda m, x: varshift.measure(m, x, batch_size=32),
        "recalibrate": lambda m, x: varshift.recalibrate(m, x, batch_size=32, reports=False),
        "recal plain": lambda m, x: varshift.recalibrate(m, x, batch_size=32, reports=False,
                                                         cache_bytes=0),
    }
    if args.no_plain:
        del calls["recal plain"]
    print(f"{'model':<24} {'call':<12} {'wall s':>8} {'CPU s':>8} {'x measure (CPU)':>16}")
    for label, (model, x) in models.items():
        for name in ("measure", "recalibrate"):  # warm-up (compilation, first calls)
            calls[name](model, x)
        times = {name: ([], []) for name in calls}
        for _ in range(args.rounds):
            for name, fn in calls.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                fn(model, x)
                times[name][0].append(time.perf_counter() - start)
                times[name][1].append(time.process_time() - start_cpu)
        base = statistics.median(times["measure"][1])
        for name, (wall, cpu) in times.items():
            print(f"{label:<24} {name:<12} {statistics.median(wall):>8.2f} "
                  f"{statistics.median(cpu):>8.2f} {statistics.median(cpu) / base:>16.2f}",
                  flush=True)
    print("load average after:", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
