"""Cached, resumable tasks: serial, local processes and Dask give identical results."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from varshift import tasks
from varshift.tasks import Task

pytest.importorskip("mnist1d")


def tiny(seed, arch="PreResNet", rate=0.5):
    return Task(f"test/{arch}/seed{seed}", "varshift.reproduce.experiments:train_network",
                {"arch": arch, "placement": "a", "rate": rate, "seed": seed, "epochs": 1,
                 "num_samples": 500, "track": True})


TASKS = [tiny(0), tiny(1), tiny(0, "DenseNet")]


@pytest.fixture(scope="module")
def serial():
    results, _ = tasks.run(TASKS)
    return results


def test_keys_are_deterministic_and_depend_on_every_parameter():
    assert tiny(0).key == tiny(0).key and tiny(0).key.startswith("test/PreResNet/seed0-")
    assert tiny(0).key != tiny(0, rate=0.3).key
    with_option = Task(tiny(0).label, tiny(0).function, tiny(0).params, options={"data_dir": "x"})
    assert with_option.key == tiny(0).key  # options do not change the result


def test_local_processes_give_the_serial_results(serial):
    parallel, seconds = tasks.run(TASKS, jobs=2)
    assert parallel == serial and set(seconds) == set(serial)
    assert serial[TASKS[0].key]["test_error"] != serial[TASKS[1].key]["test_error"] or \
        serial[TASKS[0].key]["bn"] != serial[TASKS[1].key]["bn"]


def test_an_interrupted_run_resumes_from_the_cache(tmp_path, serial, monkeypatch):
    tasks.run(TASKS[:1], tmp_path)
    calls = []
    real = tasks._timed
    monkeypatch.setattr(tasks, "_timed", lambda *a: calls.append(a[1]["seed"]) or real(*a))
    results, _ = tasks.run(TASKS, tmp_path)
    assert len(calls) == 2 and results == serial  # the first task was read back
    stored = json.loads((tmp_path / f"{TASKS[0].key}.json").read_text())
    assert stored["params"] == TASKS[0].params and stored["result"] == serial[TASKS[0].key]
    (tmp_path / f"{TASKS[1].key}.json").write_text("{broken")  # a damaged file is recomputed
    calls.clear()
    assert tasks.run(TASKS, tmp_path)[0] == serial and calls == [1]


def _running(pid):
    """Whether process ``pid`` exists and is not a zombie (an orphan that ended is not
    always reaped where the container's first process does not wait for children)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def test_a_killed_runner_takes_its_workers_with_it(tmp_path):
    """SIGKILL gives the runner's Python code no chance to stop its pool: the workers
    must notice on their own that their parent is gone."""
    here = str(Path(__file__).parent)
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from varshift import tasks\n"
              "tasks.run([tasks.Task(f'wait/{i}', 'worker_probe:write_pid_and_wait',\n"
              "                      {'folder': %r, 'i': i}) for i in range(2)], jobs=2)\n"
              % (here, str(tmp_path)))
    runner = subprocess.Popen([sys.executable, "-c", script])
    pids = []
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2 and runner.poll() is None:
            assert time.monotonic() < deadline, "the workers did not start within 120 s"
            time.sleep(0.1)
        assert runner.poll() is None, f"the runner ended early, exit code {runner.returncode}"
        pids = [int(p.read_text()) for p in sorted(tmp_path.glob("*.pid"))]
        assert runner.pid not in pids and all(_running(p) for p in pids)
        runner.kill()
        runner.wait()
        deadline = time.monotonic() + 10
        while any(_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if _running(p)], "workers outlived their runner by 10 s"
    finally:
        for pid in [runner.pid] + pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="jobs must be a positive integer, got 0"):
        tasks.run(TASKS, jobs=0)
    with pytest.raises(TypeError, match="tasks must be Task objects, got dict"):
        tasks.run([{"label": "x"}])


@pytest.mark.slow
def test_a_dask_cluster_gives_the_serial_results(serial):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        results, _ = tasks.run(TASKS, client=client)
    assert results == serial


def test_reestimate_adds_two_estimates_and_changes_nothing_else():
    from varshift._json import json_ready
    from varshift.reproduce.experiments import UNUSED, train_network

    args = {"arch": "PreResNet", "placement": "a", "rate": 0.5, "seed": 3, "epochs": 1,
            "num_samples": 3000, "n_train": 200}
    plain = train_network(**args)
    more = train_network(**args, reestimate=True)
    extra = more.pop("reestimated")
    assert (json.dumps(json_ready(more), sort_keys=True)
            == json.dumps(json_ready(plain), sort_keys=True))
    assert set(extra) == {"dropout_on", "unused"}
    assert all(0.0 <= v <= 100.0 for v in extra.values())
    with pytest.raises(ValueError, match="reestimate needs n_train"):
        train_network(**{**args, "n_train": 3000 * 4 // 5 - UNUSED + 1}, reestimate=True)
