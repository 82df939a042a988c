"""Recalibration passes that resume from kept layer outputs instead of from the input.

:func:`~varshift.recalibrate` needs, for BatchNorm k in forward order, its input over
all of the data with BatchNorms 0..k-1 already final. Everything the model computed
before BatchNorm k-1 was called is final after pass k-1, so pass k only has to compute
what lies between BatchNorm k-1 and BatchNorm k. A :class:`Plan` says, per pass, which
layers are *replayed*: not run, their output taken from what an earlier pass kept. The
model runs on the first sample of each batch only; a replayed layer returns the whole
batch's output, and what follows it runs on the whole batch.

The replayed layers of pass k are the *frontier*: the calls that returned before
BatchNorm k-1 was called while their caller had not (the children of the calls open at
that moment, and the top-level calls). Those whose output reaches BatchNorm k are
*live*: replayed with the outputs kept over all of the data. The others are *dead*:
replayed with a one-sample stand-in, so that they are not computed.

Nothing is assumed about the model's code. The plan is found on a probe (the first
:data:`PROBE_SAMPLES` samples of the first batch) by running every pass there as it
will run on the data, and the pass as planned must give BatchNorm k the input of a full
forward pass, bit for bit, or it runs the plain way (over all of the data from the
input, as the passes of the first BatchNorm, of ``dropout='on'`` and of models whose
BatchNorms are called twice do). A model that reads its raw input after the frontier (a
skip from the input to a later layer), noise in inference mode or batch statistics fail
the check. What is checked on the probe is assumed of every batch: a forward method
whose control flow depends on the values of the data could differ on other batches.

Replayed outputs are made when the model asks for them (:class:`Replay`). A first run
replays the whole frontier with its kept outputs and is checked; a model that asks only
for the outputs it reads (a Keras functional graph, walked by varshift) tells which
layers can be live, and where they are few this run is the pass's plan. Otherwise
(torch modules are called, and ask for every output they replay) a frontier layer is
live if swapping one sample of its output for another changes that sample of BatchNorm
k's input (layers are tested in groups, a sample per group, and the groups that change
are split: :func:`_live`; where the last pass's live layers were among its latest, a
first run replays all but the latest with one-sample stand-ins, so that a long frontier
is not copied), and the pass with the live layers replayed is checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Plan", "Recorder", "Replay", "PROBE_SAMPLES", "plan_passes"]

#: Samples of the first batch the plan is found and checked on.
PROBE_SAMPLES = 16


@dataclass
class _Call:
    """A layer call in a forward pass: its caller and when it started and returned
    (ticks of one clock)."""

    parent: str | None
    enter: int
    exit: int | None = None


class Recorder:
    """Told of every call of a forward pass (see
    :meth:`Session.batchnorm_input <varshift.backends.session.Session.batchnorm_input>`):
    the calls, the inputs of chosen BatchNorms, and copies of chosen outputs.

    Parameters
    ----------
    adapter : Adapter
    keep : set of str or None
        Call keys whose outputs are kept (None: every call's with a tensor output).
    inputs : iterable of str, or None
        BatchNorm keys whose inputs are kept (as NumPy arrays; None: every one's).
    replayed : iterable of str
        Replayed keys (their outputs are not kept).
    """

    def __init__(self, adapter, keep=None, inputs=(), replayed=()):
        self.adapter = adapter
        self.keep, self.replayed = keep, set(replayed)
        self.want = None if inputs is None else set(inputs)
        self.calls, self.outputs, self.inputs = {}, {}, {}
        self._stack, self._clock = [], 0

    def enter(self, key):
        self.calls[key] = _Call(self._stack[-1] if self._stack else None, self._clock)
        self._clock += 1
        self._stack.append(key)

    def batchnorm(self, key, x):
        if self.want is None or key in self.want:
            self.inputs[key] = np.array(self.adapter.to_numpy(x), copy=True)

    def exit(self, key, output, reportable):
        self._stack.pop()
        self.calls[key].exit = self._clock
        self._clock += 1
        if (reportable and key not in self.replayed
                and (self.keep is None or key in self.keep)):
            self.outputs[key] = self.adapter.copy(output)


class Replay(Mapping):
    """The replayed layers of a run and their outputs (the ``replay`` of
    :meth:`Session.batchnorm_input <varshift.backends.session.Session.batchnorm_input>`):
    an output is made when the model asks for it, as a copy of the kept output (a
    layer may change its input in place, and a kept output serves several runs), and
    the layers asked for are recorded.

    Parameters
    ----------
    adapter : Adapter
    outputs : dict of str to tensor
        Layer key -> its kept output (not copied here).
    swaps : dict of str to ndarray, optional
        Layer key -> sample indexes: that layer's output is these samples of its kept
        output.

    Attributes
    ----------
    read : set of str
        The layers whose outputs the model asked for.
    """

    def __init__(self, adapter, outputs, swaps=None):
        self._adapter, self._outputs, self._swaps = adapter, outputs, swaps or {}
        self.read = set()

    def __getitem__(self, key):
        output = self._outputs[key]
        self.read.add(key)
        if self._swaps and key in self._swaps:
            return self._adapter.take(output, self._swaps[key])
        return self._adapter.copy(output)

    def get(self, key, default=None):
        """The output of ``key`` if it is replayed (the adapters ask every layer
        called), else ``default``."""
        return self[key] if key in self._outputs else default

    def __contains__(self, key):
        return key in self._outputs

    def __iter__(self):
        return iter(self._outputs)

    def __len__(self):
        return len(self._outputs)


@dataclass
class Plan:
    """How each recalibration pass runs.

    Attributes
    ----------
    live, dead : list of tuple of str
        Per pass: the layers replayed with kept outputs, and with stand-ins (both
        empty: a plain pass, from the input over all of the data).
    keep : list of set of str
        Per pass: the layers whose outputs this pass keeps for later passes.
    last_use : dict of str to int
        Layer -> the last pass that replays its kept outputs.
    standins : dict of str to tensor
        One-sample outputs of the dead layers.
    bytes_per_sample : int
        The most bytes per sample of data kept at once.
    """

    live: list
    dead: list
    keep: list
    last_use: dict = field(default_factory=dict)
    standins: dict = field(default_factory=dict)
    bytes_per_sample: int = 0

    @classmethod
    def plain(cls, passes):
        """Every pass plain."""
        return cls([()] * passes, [()] * passes, [set() for _ in range(passes)])

    def replays(self, k) -> bool:
        """Whether pass ``k`` replays layers."""
        return bool(self.live[k] or self.dead[k])


def plan_passes(session, targets, x, modes, full=None) -> Plan:
    """The passes that recalibrate BatchNorms ``targets`` (names, in forward order),
    found and checked on batch ``x`` (see the module docstring).

    Parameters
    ----------
    session : Session
        Inside :meth:`~varshift.backends.session.Session.preserved`.
    targets : list of str
    x : batch
        Its first :data:`PROBE_SAMPLES` samples are used.
    modes : Modes
        The recalibration's modes (inference, Dropout off).
    full : Recorder, optional
        What a pass of those samples in ``modes`` was told, with the inputs of the
        ``targets`` at least (as :meth:`Session.trace
        <varshift.backends.session.Session.trace>` can record it); by default that
        pass runs here.
    """
    x = x[:PROBE_SAMPLES]
    if len(x) < 2 or not targets:
        return Plan.plain(len(targets))
    adapter = session.adapter
    if full is None:
        full = Recorder(adapter, keep=set(), inputs=targets)
        session.watched(x, modes, full)
    calls = full.calls
    single = {key for key in calls if "#" not in key and f"{key}#2" not in calls}
    if any(name not in single or name not in full.inputs for name in targets):
        return Plan.plain(len(targets))  # a BatchNorm called twice, or not reached
    plan = Plan.plain(len(targets))
    kept, producer, sizes, tiny = {}, {}, {}, x[:1]
    hints = _Hints()
    for k, name in enumerate(targets):
        recorder = None
        if k:
            frontier = _frontier(calls, targets[k - 1], kept)
            recorder = _replayed(session, name, tiny, modes, full.inputs[name], kept,
                                 frontier, single, hints)
        if recorder is None:  # plain
            recorder = Recorder(adapter, keep=single)
            session.watched(x, modes, recorder, stop=name)
        else:
            plan.live[k], plan.dead[k] = recorder.live, recorder.dead
            for key in recorder.live:
                plan.keep[producer[key]].add(key)
                plan.last_use[key] = k
            for key in recorder.dead:
                plan.standins[key] = kept[key][:1]
        for key, output in recorder.outputs.items():
            array = adapter.to_numpy(output)
            if array.ndim and len(array) == len(x):  # not computed on the one sample
                kept[key], producer[key] = output, k
                sizes[key] = array.nbytes // len(x)
        # what can still be on a frontier: calls of calls open when this BatchNorm starts
        reachable = set(_frontier(calls, name, kept))
        kept = {key: output for key, output in kept.items() if key in reachable}
    first = {}
    for k, keys in enumerate(plan.keep):
        for key in keys:
            first.setdefault(key, k)
    plan.bytes_per_sample = max((sum(sizes[key] for key in first
                                     if first[key] <= k <= plan.last_use[key])
                                 for k in range(len(targets))), default=0)
    return plan


def _frontier(calls, batchnorm, kept) -> list:
    """The kept calls that returned before ``batchnorm`` started while their caller
    had not (see the module docstring)."""
    start, open_ = calls[batchnorm].enter, {None}
    parent = calls[batchnorm].parent
    while parent is not None:
        open_.add(parent)
        parent = calls[parent].parent
    return [key for key, call in calls.items() if key in kept and call.parent in open_
            and call.exit is not None and call.exit < start]


@dataclass
class _Hints:
    """What the passes planned so far suggest of the next one."""

    reads: bool = True  # the model asks only for the replayed outputs it reads
    recent: bool = True  # the last live layers were among the latest n - 1 of the frontier


def _replayed(session, name, tiny, modes, expected, kept, frontier, single, hints):
    """The probe's run of pass ``name`` that replays the ``frontier`` (see
    :func:`_replayed_pass`), or None for a plain pass; updates ``hints`` (a
    :class:`_Hints`) for the next pass.

    While ``hints.reads`` holds, a first run replays every frontier layer with its
    kept outputs (:func:`_read_pass`). It is a check: where it fails, a plan with
    fewer kept outputs would fail too (the unread layers cannot change what the model
    computes), and the pass is plain. Where it passes and the model asked for only
    some of the outputs it had (a Keras functional graph asks for those that a
    computed node reads), the layers asked for are the candidates; fewer than the
    probe's samples, they are the live ones, and this run is the plan's. Where the
    model asked for every output (it calls its replayed layers, as torch modules are
    called), the run says nothing of the data flow, and ``reads`` stops. Then the
    live layers are found among the candidates by group testing (:func:`_live`), and
    checked."""
    n = len(expected)
    candidates, checked = frontier, None
    if hints.reads:
        checked = _read_pass(session, name, tiny, modes, expected, kept, frontier, single)
        if checked is None:
            return None
        if len(checked.live) == len(frontier) > 1:
            hints.reads = False
        else:
            candidates = list(checked.live)
            if len(candidates) < n:
                hints.recent = _latest(candidates, frontier, n)
                return checked
    live = _live(session, name, tiny, modes, expected, kept, frontier, candidates,
                 hints.recent)
    if checked is not None:
        tries = [live] if len(live) < len(checked.live) else []
    else:
        tries = [live, frontier] if len(live) < len(frontier) else [frontier]
    hints.recent = _latest(live, frontier, n)
    return _replayed_pass(session, name, tiny, modes, expected, kept, frontier, tries,
                          single) or checked


def _latest(live, frontier, n) -> bool:
    """Whether the ``live`` layers are among the latest ``n - 1`` of the ``frontier``."""
    return set(live) <= set(frontier[max(len(frontier) - n + 1, 0):])


def _probe(session, name, tiny, modes, replay, keep):
    """Run pass ``name`` on ``tiny`` with ``replay`` (a :class:`Replay`): the Recorder
    (with BatchNorm ``name``'s input), or None if the model failed (it cannot run this
    way)."""
    recorder = Recorder(session.adapter, keep=keep, inputs=[name], replayed=replay)
    try:
        session.watched(tiny, modes, recorder, replay=replay, stop=name)
    except Exception:  # noqa: BLE001 -- any failure of a replayed pass means: run it plain
        return None
    return recorder if name in recorder.inputs else None


def _read_pass(session, name, tiny, modes, expected, kept, frontier, single):
    """The probe's run of pass ``name`` replaying every ``frontier`` layer with its
    kept outputs, if it gives BatchNorm ``name`` exactly ``expected``; else None. Its
    ``live`` layers are those whose outputs the model asked for, ``dead`` the others
    (the passes replay them with stand-ins, which the model does not ask for either:
    which outputs it asks for does not depend on their values). It keeps the outputs
    of the layers in ``single`` (called once per forward pass)."""
    replay = Replay(session.adapter, {key: kept[key] for key in frontier})
    recorder = _probe(session, name, tiny, modes, replay, single)
    if recorder is None or not _same(recorder.inputs[name], expected):
        return None
    recorder.live = tuple(key for key in frontier if key in replay.read)
    recorder.dead = tuple(key for key in frontier if key not in replay.read)
    return recorder


def _live(session, name, tiny, modes, expected, kept, frontier, candidates,
          recent=False) -> list:
    """The ``candidates`` (frontier layers; the others are not read, and get
    one-sample stand-ins) whose outputs reach BatchNorm ``name``, by group testing.

    Each run gives up to ``n - 1`` groups of layers (``n`` samples in the probe) a
    sample of their own, ``g``, swapped for the next one in all of their outputs; a
    group whose sample of BatchNorm ``name``'s input changes holds a live layer and is
    split for a later run, until single layers remain. The first run gives the latest
    layers (the likeliest to be live) groups of their own and puts the others in one
    group. The last sample is never swapped: if it changes, the model mixes samples,
    and all of the candidates are live (as when the model fails).

    With ``recent`` (the live layers are expected among the latest ``n - 1``), a run
    before these tests the latest ``n - 1`` candidates alone and replays the others
    with one-sample stand-ins, as dead layers are replayed: where that run succeeds
    and leaves the last sample as it was, the others are dead (the check of
    :func:`_replayed_pass` replays them so), and the others are not copied at the
    probe's size, which is most of the work on a long frontier."""
    n = len(expected)
    chosen = set(candidates)
    unread = [key for key in frontier if key not in chosen]
    if recent and len(candidates) > n - 1:
        latest = candidates[len(candidates) - n + 1:]
        rest = candidates[:len(candidates) - n + 1]
        changed = _changed(session, name, tiny, modes, expected, kept,
                           [[key] for key in latest], standins=rest + unread)
        if changed is not None:
            return [latest[g] for g in changed]
    live = []
    queue = _groups(candidates, n - 1, latest=True)
    while queue:
        groups, queue = queue[:n - 1], queue[n - 1:]
        tested = {key for group in groups for key in group}
        changed = _changed(session, name, tiny, modes, expected, kept, groups,
                           full=[key for key in candidates if key not in tested],
                           standins=unread)
        if changed is None:
            return list(candidates)
        for g in changed:
            if len(groups[g]) == 1:
                live.append(groups[g][0])
            else:
                queue += _groups(groups[g], n - 1)
    live = set(live)
    return [key for key in candidates if key in live]


def _changed(session, name, tiny, modes, expected, kept, groups, full=(), standins=()):
    """One run of :func:`_live`: pass ``name`` on ``tiny`` replaying the layers of
    group ``g`` with sample ``g`` of their kept outputs swapped for the next one, the
    layers ``full`` with their kept outputs and ``standins`` with one-sample
    stand-ins. Returns the groups whose sample of BatchNorm ``name``'s input differs
    from ``expected`` (indexes), or None if the model failed, the input's shape
    differs or its last sample (never swapped) changed."""
    n = len(expected)
    outputs, swaps = {}, {}
    for g, group in enumerate(groups):
        index = np.arange(n)
        index[g] = g + 1
        for key in group:
            outputs[key], swaps[key] = kept[key], index
    outputs.update({key: kept[key] for key in full})
    outputs.update({key: kept[key][:1] for key in standins})
    recorder = _probe(session, name, tiny, modes, Replay(session.adapter, outputs, swaps),
                      frozenset())
    if recorder is None or recorder.inputs[name].shape != expected.shape:
        return None
    seen, expected = recorder.inputs[name].reshape(n, -1), expected.reshape(n, -1)
    if seen[n - 1].tobytes() != expected[n - 1].tobytes():
        return None  # the model mixes samples, or a stand-in reached the BatchNorm
    return [g for g in range(len(groups)) if seen[g].tobytes() != expected[g].tobytes()]


def _groups(keys, n, latest=False) -> list:
    """``keys`` in at most ``n`` groups: ``latest``, the last ``n - 1`` alone and the
    rest together; else in order, of sizes that differ by at most one."""
    if len(keys) <= n:
        return [[key] for key in keys]
    if latest:
        return [list(keys[:len(keys) - n + 1])] + [[key] for key in keys[len(keys) - n + 1:]]
    size, extra = divmod(len(keys), n)
    out, start = [], 0
    for g in range(n):
        stop = start + size + (g < extra)
        out.append(list(keys[start:stop]))
        start = stop
    return out


def _replayed_pass(session, name, tiny, modes, expected, kept, frontier, tries, single):
    """The first probe's run of pass ``name`` that gives BatchNorm ``name`` exactly
    ``expected``, replaying the layers of one of ``tries`` with the kept outputs and
    the rest of the ``frontier`` with stand-ins; else None. It keeps the outputs of
    the layers in ``single`` (called once per forward pass)."""
    for chosen in tries:
        outputs = {key: kept[key] for key in chosen}
        dead = [key for key in frontier if key not in outputs]
        outputs.update({key: kept[key][:1] for key in dead})
        recorder = _probe(session, name, tiny, modes, Replay(session.adapter, outputs),
                          single)
        if recorder is not None and _same(recorder.inputs[name], expected):
            recorder.live, recorder.dead = tuple(chosen), tuple(dead)
            return recorder
    return None


def _same(a, b) -> bool:
    """Bit for bit (NaN equal to itself)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
