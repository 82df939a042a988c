"""Progress on stderr: a tqdm bar on a terminal (the ``progress`` extra), else a few
plain lines, which read well in a log file (no carriage returns)."""

from __future__ import annotations

import sys
import time

__all__ = ["progress_bar"]

#: Seconds between two plain progress lines of one loop.
LINE_INTERVAL = 10.0


def progress_bar(iterable, enabled: bool, total=None, desc: str = ""):
    """Wrap ``iterable`` to report progress on stderr when ``enabled``.

    On a terminal with tqdm installed: a tqdm bar. Otherwise (a log file, a pipe, no
    tqdm): one line when the loop starts, one every :data:`LINE_INTERVAL` seconds
    and one when it ends.
    """
    if not enabled:
        return iterable
    if sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)
    return _lines(iterable, total, desc)


def _lines(iterable, total, desc):
    of = f"/{total}" if total else ""
    start = last = time.perf_counter()
    _say(f"{desc}: started" + (f", {total} batches" if total else ""))
    count = 0
    for item in iterable:
        yield item
        count += 1
        now = time.perf_counter()
        if now - last >= LINE_INTERVAL:
            last = now
            _say(f"{desc}: {count}{of} batches, {now - start:.0f} s")
    _say(f"{desc}: done, {count} batches in {time.perf_counter() - start:.1f} s")


def _say(line):
    print(line, file=sys.stderr, flush=True)
