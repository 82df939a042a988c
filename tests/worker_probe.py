"""A task function for :mod:`test_tasks`: it says which process runs it, then waits."""

import os
import time
from pathlib import Path


def write_pid_and_wait(folder, i, seconds=120.0):
    """Write this process's id to ``folder/i.pid``, then sleep ``seconds``."""
    path = Path(folder) / f"{i}.pid"
    path.with_suffix(".tmp").write_text(str(os.getpid()))
    path.with_suffix(".tmp").replace(path)
    time.sleep(seconds)
    return {"pid": os.getpid()}
