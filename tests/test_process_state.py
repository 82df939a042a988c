"""varshift leaves the user's process as it found it (issue 21): environment, thread
counts, global random states, a pending autograd graph, and one call per model."""

import importlib.util
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import blobs, dropout_before_bn

import varshift
from varshift import diagnose, evaluate, fit, measure, nn, optim, recalibrate
from varshift._process import ModelInUseError

ROOT = Path(__file__).resolve().parents[1]


def run_python(code, env=None, timeout=300):
    """Run ``code`` in a fresh interpreter with varshift importable; its stdout."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "PYTHONPATH": path, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def global_states():
    torch = sys.modules.get("torch")
    return (random.getstate(), np.random.get_state()[1].tobytes(),  # noqa: NPY002
            None if torch is None else torch.get_rng_state().numpy().tobytes())


# --------------------------------------------------------------- environment and threads
def test_import_and_calls_change_no_environment_variable_and_no_thread_count():
    code = """
import json, os
before = dict(os.environ)
import varshift
after_import = dict(os.environ)
import numpy as np, torch
torch.set_num_threads(1)
from varshift import nn
from varshift._runtimes import loaded
runtimes = lambda: sorted((lib.filepath, lib.num_threads) for lib in loaded())
model = nn.Sequential(nn.Conv2D(1, 4, 3), nn.BatchNorm(4), nn.ReLU(), nn.Dropout(0.3), seed=0)
x = np.random.default_rng(0).random((600, 1, 16, 16), dtype=np.float32)
model(x)
varshift.measure(model, x)
tm = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.3))
start = runtimes()
for call in (varshift.measure, varshift.diagnose, varshift.recalibrate):
    call(tm, torch.from_numpy(x))
print(json.dumps({"import": after_import == before, "calls": dict(os.environ) == before,
                  "torch_threads": torch.get_num_threads(), "runtimes": runtimes() == start,
                  "changed": sorted(k for k in os.environ if before.get(k) != os.environ[k])}))
"""
    pytest.importorskip("torch")
    out = json.loads(run_python(code).strip().splitlines()[-1])
    assert out == {"import": True, "calls": True, "torch_threads": 1, "runtimes": True,
                   "changed": []}


THREAD_VARIABLES = ("KMP_DUPLICATE_LIB_OK", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def test_no_environment_write_even_for_a_moment_in_import_calls_and_worker_pools():
    """No ``putenv``/``unsetenv`` at all (a write put back is still a write, and
    ``setenv`` is not thread-safe): not while importing varshift, not in a call that
    saves and restores thread counts, not in ``tasks.run(jobs=2)``; and the C
    environment agrees with ``os.environ`` afterwards."""
    code = """
import ctypes, json, os
import numpy  # NumPy's own import sets and unsets OPENBLAS_MAIN_FREE (numpy/_core)
calls = []
real_putenv, real_unsetenv = os.putenv, os.unsetenv
os.putenv = lambda key, value: (calls.append(("putenv", os.fsdecode(key))),
                                real_putenv(key, value))[1]
os.unsetenv = lambda key: (calls.append(("unsetenv", os.fsdecode(key))), real_unsetenv(key))[1]
before = dict(os.environ)
import varshift
from varshift import nn, tasks
imported = list(calls)
import numpy as np
model = nn.Sequential(nn.Dense(4, 8), nn.BatchNorm(8), nn.Dropout(0.3), seed=0)
varshift.measure(model, np.ones((300, 4), np.float32))
called = calls[len(imported):]
todo = [tasks.Task(f"t{i}", "json:loads", {"s": f"[{i}]"}) for i in range(3)]
results, _ = tasks.run(todo, jobs=2)
pooled = calls[len(imported) + len(called):]
getenv = ctypes.CDLL(None).getenv
getenv.restype = ctypes.c_char_p
c_env = {k: (v.decode() if (v := getenv(k.encode())) else None) for k in %r}
print(json.dumps({"import": imported, "call": called, "pool": pooled,
                  "results": sorted(results.values()), "same": dict(os.environ) == before,
                  "c_env": c_env == {k: before.get(k) for k in c_env}}))
""" % (THREAD_VARIABLES,)
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**env, "PYTHONPATH": path})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "import": [], "call": [], "pool": [], "results": [[0], [1], [2]], "same": True,
        "c_env": True}


def worker_threads():
    """A task (run by the test below in a worker process): the thread counts it sees,
    after importing torch itself, and the worker's thread variables."""
    import numba

    from varshift._runtimes import loaded

    report = {"numba": numba.get_num_threads(),
              "runtimes_before_torch": sorted({lib.num_threads for lib in loaded()}),
              "environment": {k: os.environ.get(k) for k in THREAD_VARIABLES}}
    try:
        import torch
    except ImportError:
        return report
    report.update(torch=torch.get_num_threads(), interop=torch.get_num_interop_threads(),
                  runtimes=sorted({lib.num_threads for lib in loaded()}))
    return report


def test_pool_workers_run_single_threaded_with_the_parents_environment():
    """The workers are limited through the libraries' calls (Numba, every OpenMP and
    BLAS runtime, torch, also when the task imports torch only later), not through
    environment variables: their environment is the parent's."""
    import numba

    from varshift import tasks

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two cores to tell one thread from the default")
    todo = [tasks.Task(f"threads{i}", "test_process_state:worker_threads", {}) for i in range(2)]
    before = dict(os.environ)
    results, _ = tasks.run(todo, jobs=2)
    assert dict(os.environ) == before
    expected = {"numba": 1, "runtimes_before_torch": [1],
                "environment": {k: os.environ.get(k) for k in THREAD_VARIABLES}}
    if importlib.util.find_spec("torch") is not None:
        expected.update(torch=1, interop=1, runtimes=[1])
    assert list(results.values()) == [expected, expected]


def test_the_runtime_controller_agrees_with_threadpoolctl():
    """varshift's own controller finds the libraries threadpoolctl finds, with the same
    kind, thread count and OpenBLAS kernel, and its changes are the ones threadpoolctl
    sees (threadpoolctl is imported here, in a child process, for the comparison)."""
    pytest.importorskip("threadpoolctl")
    code = """
import json
import numpy, scipy.linalg.blas
from varshift.kernels import threads
threads.load_runtimes()
from varshift._runtimes import loaded
import threadpoolctl
def mine():
    return sorted((r.filepath, r.internal_api, r.num_threads, r.architecture) for r in loaded())
def theirs():
    return sorted((i["filepath"], i["internal_api"], i["num_threads"], i.get("architecture"))
                  for i in threadpoolctl.threadpool_info())
same = mine() == theirs()
counts = {r.filepath: r.num_threads for r in loaded()}
for r in loaded():
    r.set_num_threads(1)
one = {i["num_threads"] for i in threadpoolctl.threadpool_info()}
for r in loaded():
    r.set_num_threads(counts[r.filepath])
print(json.dumps({"same": same, "one": sorted(one), "back": mine() == theirs(),
                  "kinds": sorted({r.internal_api for r in loaded()})}))
"""
    out = json.loads(run_python(code).strip().splitlines()[-1])
    assert out["same"] and out["back"] and out["one"] == [1], out
    assert {"openmp", "openblas"} <= set(out["kinds"]), out


def test_the_runtimes_load_with_the_environment_as_the_user_left_it():
    """varshift sets no variable even for a moment while its thread runtimes load
    (glibc's setenv is not safe beside other threads)."""
    code = """
import os
from unittest import mock
import varshift
from varshift.kernels import threads
import numba.np.ufunc.parallel as parallel
before, seen = dict(os.environ), {}
launch = parallel._launch_threads
def spy():
    seen.update(os.environ)
    launch()
with mock.patch.object(parallel, "_launch_threads", spy):
    threads.load_runtimes()
print(seen == before == dict(os.environ))
"""
    assert run_python(code).split() == ["True"]


def test_numba_kernels_cache_in_a_user_folder_without_setting_numba_cache_dir(tmp_path):
    code = """
import os, numpy as np, numba, varshift
from varshift import nn
nn.Sequential(nn.Dense(4, 3), nn.BatchNorm(3), seed=0)(np.ones((5, 4), np.float32))
print(repr(os.environ.get("NUMBA_CACHE_DIR")), repr(numba.config.CACHE_DIR))
"""
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "VARSHIFT_KERNELS": "numba"}
    clean = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**clean, **env, "PYTHONPATH": path})
    assert out.stdout.split() == ["None", "''"], out.stderr[-2000:]
    assert list((tmp_path / "xdg" / "varshift" / "numba").rglob("*.nbi"))
    assert not list((ROOT / "varshift").rglob("*.nbi"))
    run_python(code, {"NUMBA_CACHE_DIR": str(tmp_path / "mine"), "VARSHIFT_KERNELS": "numba"})
    assert list((tmp_path / "mine").rglob("*.nbi"))  # the user's choice wins


@pytest.mark.slow
def test_a_torch_step_is_as_fast_when_varshift_was_imported_first():
    """Importing varshift before torch used to make a small torch training step 2x
    slower (an OpenMP setting it left in the environment). Interleaved rounds in fresh
    processes; a generous bound, since this is a regression check, not a benchmark."""
    pytest.importorskip("torch")
    code = """
import sys, time, statistics
if sys.argv[1] == "first":
    import varshift
import torch
torch.manual_seed(0)
torch.set_num_threads(2)
m = torch.nn.Sequential(torch.nn.Conv1d(1, 32, 5, padding=2), torch.nn.BatchNorm1d(32),
                        torch.nn.ReLU(), torch.nn.Conv1d(32, 32, 5, padding=2),
                        torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Flatten(),
                        torch.nn.Linear(32 * 40, 10))
opt = torch.optim.Adam(m.parameters())
x, y = torch.randn(100, 1, 40), torch.randint(0, 10, (100,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
for _ in range(10): step()
times = []
for _ in range(40):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(statistics.median(times))
"""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    times = {"first": [], "never": []}
    for _ in range(3):
        for order in times:
            out = subprocess.run([sys.executable, "-c", code, order], capture_output=True,
                                 text=True, timeout=300, env={**os.environ, "PYTHONPATH": path})
            assert out.returncode == 0, out.stderr[-2000:]
            times[order].append(float(out.stdout))
    first, never = (float(np.median(t)) for t in times.values())
    assert first < 1.4 * never, times


# --------------------------------------------------------------- global random states
def _numpy_data_kinds(x, y):
    return {"array": x, "pair": (x, y), "list": [x[i:i + 100] for i in range(0, len(x), 100)]}


def test_no_public_call_changes_a_global_random_state_numpy_engine():
    model, (x, y) = dropout_before_bn(), blobs(400)
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002
    for kind, data in _numpy_data_kinds(x, y).items():
        for call in (measure, diagnose, recalibrate):
            before = global_states()
            call(model, data)
            assert global_states() == before, (kind, call.__name__)
    before = global_states()
    loss = nn.CrossEntropyLoss()
    fit(model, (x, y), loss, optim.SGD(model, lr=0.01), epochs=1)
    evaluate(model, (x, y), loss)
    varshift.gradcheck(nn.Dense(3, 2), np.ones((2, 3)))
    assert global_states() == before


def test_no_public_call_changes_a_global_random_state_torch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.3),
                                torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 2))
    x, y = torch.randn(400, 8), torch.randint(0, 2, (400,))
    kinds = {"tensor": x, "pair": (x, y), "list": [x[:200], x[200:]],
             "loader": DataLoader(TensorDataset(x, y), batch_size=100, shuffle=True),
             "numpy": x.numpy()}
    for kind, data in kinds.items():
        for call in (measure, diagnose, recalibrate):
            before = global_states()
            call(model, data)
            assert global_states() == before, (kind, call.__name__)
    before = global_states()
    measure(model, (b for b in [x[:200], x[200:]]))  # a one-shot generator
    assert global_states() == before


# --------------------------------------------------------------- a pending autograd graph
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_a_pending_autograd_graph_survives_every_public_call(train):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 2)).train(train)
    x, data = torch.randn(16, 1, 8, 8), torch.randn(300, 1, 8, 8)
    for call in (measure, diagnose, recalibrate):
        model.zero_grad()
        torch.manual_seed(1)  # the same Dropout masks in both graphs
        reference = model(x).sum()
        reference.backward()
        expected = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        torch.manual_seed(1)
        out = model(x).sum()  # built before the call, backward after it
        mean = model[1].running_mean
        call(model, data)
        out.backward()
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), expected)), \
            call.__name__
        if call is recalibrate:  # new statistics, in new tensors; the graph kept the old
            assert model[1].running_mean is not mean
            assert not torch.equal(model[1].running_mean, mean)
        else:
            assert model[1].running_mean is mean


def test_a_module_on_the_meta_device_gets_a_clear_error():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)).to("meta")
    with pytest.raises(ValueError, match=r"measure: module '0' \(Linear\) is on the 'meta' "
                                         r"device.*load its weights first"):
        measure(model, torch.randn(10, 3))


# --------------------------------------------------------------- one call per model
class _Blocking:
    """Batches that stop after the first until :attr:`release` is set, so that another
    thread can try the model while a call holds it."""

    def __init__(self, x):
        self.x, self.started, self.release = x, threading.Event(), threading.Event()

    def __iter__(self):
        yield self.x[:100]
        self.started.set()
        assert self.release.wait(60)
        yield self.x[100:]


def _state(model):
    return ({k: v.copy() for k, v in model.state_dict().items()},
            [layer.training for _, layer in model.walk()], model.rng_state())


@pytest.mark.parametrize("second", ["measure", "recalibrate", "fit", "save", "a layer"])
def test_a_second_thread_is_refused_while_a_call_uses_the_model(second, tmp_path):
    model, (x, y) = dropout_before_bn(), blobs(400)
    before = _state(model)
    batches = _Blocking(x)
    calls = {"measure": lambda: measure(model, x),
             "recalibrate": lambda: recalibrate(model, x, reports=False),
             "fit": lambda: fit(model, (x, y), nn.CrossEntropyLoss(), optim.SGD(model, lr=0.1)),
             "save": lambda: varshift.save(model, tmp_path / "m.npz"),
             "a layer": lambda: measure(model[4], np.ones((10, 64), np.float32))}
    results = {}
    held = threading.Thread(target=lambda: results.update(report=measure(model, batches)))
    held.start()
    try:
        assert batches.started.wait(60)
        with pytest.raises(ModelInUseError, match="in use by varshift.measure in another "
                                                  "thread") as info:
            calls[second]()
    finally:
        batches.release.set()
        held.join(60)
    assert str(info.value).startswith(f"{'measure' if second == 'a layer' else second}: the "
                                      f"model ")
    assert isinstance(results.get("report"), varshift.Report)
    after = _state(model)
    assert all(np.array_equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]
    assert not (tmp_path / "m.npz").exists()
    measure(model, x)  # free again


def test_one_thread_may_nest_calls_and_other_models_run_in_parallel():
    x, _ = blobs(400)
    errors = []

    def work(model):
        try:
            for _ in range(3):
                diagnose(model, x)  # diagnose calls measure on the same model
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(dropout_before_bn(seed=s),)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []


def test_a_torch_module_in_use_by_another_thread_is_refused():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.3),
                                torch.nn.BatchNorm1d(16))
    x = torch.randn(300, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches, results = _Blocking(x), {}
    held = threading.Thread(target=lambda: results.update(report=measure(model, batches)))
    held.start()
    try:
        assert batches.started.wait(60)
        with pytest.raises(ModelInUseError, match=r"recalibrate: the model BatchNorm1d.*in use "
                                                  r"by varshift.measure in another thread"):
            recalibrate(model[2], torch.randn(50, 16))  # a layer of the model in use
    finally:
        batches.release.set()
        held.join(60)
    assert isinstance(results.get("report"), varshift.Report)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_draws_other_threads_make_during_a_call_are_not_undone():
    """The global states are put back around the user's data iteration only, not around
    the whole call: a thread drawing meanwhile must not see its numbers again."""
    model, (x, _) = dropout_before_bn(), blobs(2000)
    batches = [x[i:i + 50] for i in range(0, len(x), 50)]
    drawn, stop = [], threading.Event()

    def user():
        while not stop.is_set():
            drawn.append((np.random.random(), random.random()))  # noqa: NPY002

    thread = threading.Thread(target=user)
    thread.start()
    try:
        for _ in range(3):
            measure(model, batches)
    finally:
        stop.set()
        thread.join(60)
    assert len(drawn) > 100 and len(set(drawn)) == len(drawn)


def test_a_users_dataset_drawing_augmentations_leaves_the_global_states_as_they_were():
    model, (x, _) = dropout_before_bn(), blobs(400)

    class Augmented:
        def __iter__(self):
            for i in range(0, len(x), 100):
                yield x[i:i + 100] + np.float32(np.random.normal()) \
                    + np.float32(random.random())  # noqa: NPY002

    before = global_states()
    for call in (measure, diagnose, recalibrate):
        call(model, Augmented())
    assert global_states() == before


@pytest.mark.parametrize("wrap, message", [
    (lambda t: t, "measure: data is on the 'meta' device"),
    (lambda t: [t], "measure: data batch 0: it is on the 'meta' device"),
])
def test_data_on_the_meta_device_gets_a_clear_error(wrap, message):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match=message):
        measure(model, wrap(torch.randn(8, 6, device="meta")))
