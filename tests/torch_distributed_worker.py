"""One rank of the all_merge test: measure a shard, merge over the ranks (gloo on
127.0.0.1); rank 0 writes the merged report's JSON to OUT.json and, measured in the same
process (the same threads, so the same float32 arithmetic), the single-process report
of the whole data to OUT.whole.json.

    python torch_distributed_worker.py RANK WORLD PORT OUT.json
"""

import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_helpers import mlp, trained_torch  # noqa: E402


def model_and_data():
    """The same trained model and data in every process."""
    torch.manual_seed(0)
    x = torch.randn(1000, 20, generator=torch.Generator().manual_seed(1)) * 2 + 1
    return trained_torch(mlp(), x, steps=10), x


def main(rank, world, port, out):
    import varshift
    from varshift.distributed import all_merge

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        model, x = model_and_data()
        shard = x[rank * len(x) // world:(rank + 1) * len(x) // world]
        merged = all_merge(varshift.measure(model, shard, batch_size=100))
        if rank == 0:
            Path(out).write_text(merged.to_json())
            Path(out).with_suffix(".whole.json").write_text(
                varshift.measure(model, x, batch_size=100).to_json())
        # leave together: a rank that tears its group down while the other still works
        # can abort in Gloo's shutdown ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
