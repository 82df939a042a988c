"""Fuzzing the file readers: truncations at many offsets and seeded bit flips of a
varshift ``.npz``, a ``.keras`` archive and a legacy ``.h5`` model. Every case runs in a
worker process under a memory limit (RLIMIT_AS) and a per-case alarm; each outcome must
be a clean result or a ValueError (``ModelFileError``) naming the file, in bounded time.
The default run takes a few dozen cases per format; ``-m slow`` runs a larger sweep."""

import json
import subprocess
import sys
import textwrap

import pytest
from hostile_files import keras_archive, legacy_h5

import varshift

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the worker limits memory with RLIMIT_AS and /proc")

#: Seconds one case may take (the HDF5 child's own limit is set lower in the worker).
CASE_SECONDS = 20
#: Bytes the worker may allocate beyond what it holds after importing varshift.
MEMORY_BYTES = 3 * 2**30

WORKER = textwrap.dedent("""
    import json, os, random, resource, signal, sys, time
    import varshift
    from varshift import keras_file

    args = json.loads(sys.argv[1])
    keras_file.HDF5_TIME_LIMIT = 5.0
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + args["memory"], resource.RLIM_INFINITY))

    def expired(signum, frame):
        raise TimeoutError("case ran past its alarm")

    signal.signal(signal.SIGALRM, expired)
    read = varshift.load if args["suffix"] == ".npz" else varshift.inspect
    with open(args["seed"], "rb") as f:
        original = f.read()
    rng = random.Random(args["rng"])
    n = len(original)
    cases = [("truncate", int(n * i / args["truncations"]), 0)
             for i in range(args["truncations"])]
    cases += [("flip", rng.randrange(n), rng.randrange(8)) for _ in range(args["flips"])]
    path = os.path.join(os.path.dirname(args["seed"]), "case" + args["suffix"])
    results = {"ok": 0, "refused": 0, "bad": [], "slowest": 0.0}
    for kind, at, bit in cases:
        data = bytearray(original[:at] if kind == "truncate" else original)
        if kind == "flip":
            data[at] ^= 1 << bit
        with open(path, "wb") as f:
            f.write(data)
        start = time.monotonic()
        signal.alarm(args["seconds"])
        try:
            read(path)
            results["ok"] += 1
        except ValueError as err:
            if path in str(err):
                results["refused"] += 1
            else:
                results["bad"].append([kind, at, bit, "message without the file", str(err)[:300]])
        except BaseException as err:
            results["bad"].append([kind, at, bit, type(err).__name__, str(err)[:300]])
        finally:
            signal.alarm(0)
        results["slowest"] = max(results["slowest"], time.monotonic() - start)
    print(json.dumps(results))
""")


def fuzz(seed, truncations, flips, rng=0):
    """Run the cases on the file ``seed`` in a worker; its results."""
    args = {"seed": str(seed), "suffix": seed.suffix, "truncations": truncations,
            "flips": flips, "rng": rng, "seconds": CASE_SECONDS, "memory": MEMORY_BYTES}
    limit = 60 + CASE_SECONDS * (truncations + flips)
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(args)], capture_output=True,
                         text=True, timeout=limit)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert not results["bad"], results["bad"]
    assert results["ok"] + results["refused"] == truncations + flips
    return results


def _npz(folder):
    path = folder / "m.npz"
    varshift.save(varshift.nn.Sequential(varshift.nn.Dense(6, 5), varshift.nn.BatchNorm(5),
                                         varshift.nn.ReLU(), varshift.nn.Dropout(0.5),
                                         varshift.nn.Dense(5, 2), seed=0), path)
    return path


def _keras(folder):
    pytest.importorskip("h5py")
    return keras_archive(folder / "m.keras")


def _h5(folder):
    pytest.importorskip("h5py")
    return legacy_h5(folder / "m.h5")


@pytest.mark.parametrize("make, truncations, flips", [(_npz, 60, 120), (_keras, 10, 24),
                                                      (_h5, 10, 24)])
def test_damaged_files_give_a_result_or_the_documented_error(tmp_path, make, truncations,
                                                              flips):
    results = fuzz(make(tmp_path), truncations, flips)
    assert results["refused"] >= truncations - 1  # every cut file but the empty one is refused
    assert results["slowest"] < CASE_SECONDS


@pytest.mark.slow
@pytest.mark.parametrize("make", [_npz, _keras, _h5])
@pytest.mark.parametrize("rng", [1, 2])
def test_damaged_files_larger_sweep(tmp_path, make, rng):
    fuzz(make(tmp_path), 100, 300, rng=rng)
