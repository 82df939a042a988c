"""Helpers for PyTorch users (``pip install ".[torch]"`` from a clone); importing this module
imports torch.

:func:`varshift.measure`, :func:`~varshift.diagnose` and :func:`~varshift.recalibrate`
take any ``torch.nn.Module`` directly (see :mod:`varshift.backends.torch` for what the
passes switch, what they cannot control, and what is restored).
"""

from __future__ import annotations

import torch.distributed as dist

from . import _validate
from .measurement import Report

__all__ = ["all_merge"]


def all_merge(report, group=None) -> Report:
    """The report of the whole data, from the reports each rank of a
    ``torch.distributed`` process group measured on its shard.

    Every rank calls it (a collective) and gets the same merged report: the ranks'
    reports combined in rank order with :meth:`Report.merge` (sample counts carried
    with the moments, so shards of any sizes combine exactly).

    Parameters
    ----------
    report : Report
        This rank's :func:`varshift.measure` of the same model on its shard.
    group : ProcessGroup, optional
        Default: the whole world.

    Returns
    -------
    Report

    Raises
    ------
    TypeError
        If ``report`` is not a Report.
    ValueError
        If the ranks measured different models (layers or running statistics differ).
    RuntimeError
        If no process group is initialised.

    Notes
    -----
    The reports travel as pickled objects (``all_gather_object``): with the NCCL
    backend, set the rank's device first (``torch.cuda.set_device``), as torch asks.
    """
    if not isinstance(report, Report):
        raise TypeError(f"all_merge: report must be a varshift Report, got "
                        f"{_validate.shown(report)}")
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("all_merge: no torch.distributed process group is initialised "
                           "(torch.distributed.init_process_group)")
    reports = [None] * dist.get_world_size(group)
    dist.all_gather_object(reports, report, group=group)
    merged = reports[0]
    for other in reports[1:]:
        merged = merged.merge(other)
    return merged
