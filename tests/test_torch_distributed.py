"""varshift.distributed.all_merge over torch.distributed ranks: 2 CPU processes, gloo, on the
loopback interface only, bounded in time."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch_distributed_worker import model_and_data  # noqa: E402

from varshift import Report, measure  # noqa: E402

WORKER = Path(__file__).resolve().parent / "torch_distributed_worker.py"
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reports_merged_over_two_ranks_equal_the_single_process_report(tmp_path):
    out = tmp_path / "merged.json"
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1",
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    port = str(_free_port())
    ranks = [subprocess.Popen([sys.executable, str(WORKER), str(rank), "2", port, str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for rank in range(2)]
    try:
        logs = [rank.communicate(timeout=TIMEOUT)[0] for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
                rank.wait()
    assert [rank.returncode for rank in ranks] == [0, 0], logs
    merged = Report.from_json(out)
    whole = Report.from_json(out.with_suffix(".whole.json"))
    assert merged.num_samples == whole.num_samples == 1000
    for a, b in zip(merged.layers, whole.layers):
        assert a.name == b.name and a.eval.count == b.eval.count == a.train.count
        np.testing.assert_allclose(a.eval.mean, b.eval.mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a.eval.m2, b.eval.m2, rtol=1e-12)
    for a, b in zip(merged.bn, whole.bn):
        np.testing.assert_array_equal(a.moving_var, b.moving_var)
        for pass_name in ("real", "nodrop"):
            ours, theirs = getattr(a, pass_name), getattr(b, pass_name)
            assert ours.count == theirs.count
            np.testing.assert_allclose(ours.mean, theirs.mean, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(ours.m2, theirs.m2, rtol=1e-12)
        assert a.shift == pytest.approx(b.shift, rel=1e-12)


def test_all_merge_needs_a_report_and_a_process_group():
    from varshift.distributed import all_merge

    with pytest.raises(TypeError, match="all_merge: report must be a varshift Report"):
        all_merge({"bn": []})
    model, x = model_and_data()
    with pytest.raises(RuntimeError, match="no torch.distributed process group"):
        all_merge(measure(model, x[:100]))
