"""Optional progress bars: tqdm when installed (the ``progress`` extra), else none."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(iterable, enabled: bool, total=None, desc: str = ""):
    """Wrap ``iterable`` in a tqdm bar on stderr when ``enabled``.

    Without tqdm a single line per call is printed to stderr instead.
    """
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(f"{desc} ...", file=sys.stderr, flush=True)
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)
