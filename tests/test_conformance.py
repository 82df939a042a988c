"""The conformance suite (issue 22): the same properties of ``measure``, ``diagnose`` and
``recalibrate`` on every framework varshift takes models from, on the same small
models, through the public API only.

Frameworks and models come from ``tests/frameworks`` (its docstring describes the
adapter a framework needs, and the oracle); a framework that is not installed is
skipped with how to install it, and a model a framework cannot express is skipped
with why. Every framework is checked for:

* the numbers: every BatchNorm's input moments (real and nodrop; train where the
  noise allows: equal where no noise reaches it, the moments one Dropout predicts
  where one does) and every layer's output moments equal an oracle computed layer
  by layer in that framework's own operations; with the same weights they also equal
  the NumPy engine's;
* the state: bitwise unchanged after ``measure`` and ``diagnose``, and after
  ``recalibrate`` except the running statistics;
* failures: an exception or KeyboardInterrupt raised by a layer in the middle of a
  pass (of each of the three calls), or bad data in a later batch, leaves everything,
  the running statistics included, as it was;
* ``recalibrate``: the exact population statistics of each BatchNorm's input in
  inference mode, the earlier BatchNorms already recalibrated (unbiased variance, or
  the population variance for Keras), and one count per batch;
* structure: names, kinds, order, settings, frozen BatchNorms, Dropout upstream of
  BatchNorm.

The failure and bad-data checks run on every model with ``-m slow``; by default on
:data:`CORE` only for torch and Keras (on every model for the fast engine). What only
one framework has is in ``test_torch_quirks.py`` and ``test_keras_quirks.py``.
"""

import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from frameworks import (
    BATCH,
    COMPLEX,
    EPS,
    EXACT,
    MODELS,
    MOMENTUM,
    N,
    Tripped,
    Unavailable,
    adapters,
    dropped,
    oracle,
    pooled,
    tripwire,
    weights,
)

from varshift import Report, diagnose, measure, recalibrate

FRAMEWORKS = adapters()
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' torch backend


# ------------------------------------------------------------------ fixtures
def loaded(adapter):
    """The adapter with its framework imported, or a skip saying how to install it."""
    try:
        adapter.load()
    except ImportError as err:
        pytest.skip(f"{adapter.name} is not installed ({err}); {adapter.install}")
    except Unavailable as err:
        pytest.skip(f"{adapter.name}: {err}")
    return adapter


@pytest.fixture(scope="module", params=FRAMEWORKS, ids=lambda fw: fw.name)
def fw(request):
    return loaded(request.param)


@pytest.fixture(scope="module", params=list(MODELS))
def spec(request, fw):
    return supported(fw, MODELS[request.param])


#: The models the costlier checks of model-independent machinery (failures, bad data)
#: use on torch and Keras by default; the other models run with ``-m slow`` (the
#: engine's are fast, so all of them always run).
CORE = ("frozen_bn", "bn_called_twice")


def everywhere(*params):
    """Parameters ``(framework, model, *param)`` for every framework and model, marked
    slow outside :data:`CORE` (except for the engine)."""
    found = []
    for adapter in FRAMEWORKS:
        for name in MODELS:
            marks = [] if name in CORE or adapter.name == "numpy" else [pytest.mark.slow]
            for extra in params or [()]:
                shown = [getattr(e, "__name__", str(e)) for e in extra]
                found.append(pytest.param(adapter, name, *extra, marks=marks,
                                          id="-".join([adapter.name, name, *shown])))
    return found


def supported(fw, spec):
    if spec.name in fw.unsupported:
        pytest.skip(f"{fw.name} cannot express {spec.name}: {fw.unsupported[spec.name]}")
    return spec


@dataclass
class Case:
    """A framework's model of a spec, its data and its weights."""

    fw: object
    spec: object
    model: object
    names: dict
    w: dict
    x: np.ndarray

    def fingerprint(self):
        return self.fw.fingerprint(self.model)

    @property
    def batchnorms(self):
        return [self.names[label] for label in self.spec.batchnorms]

    def oracle(self, mode, stats=None):
        return oracle(self.fw, self.model, self.names, self.spec, self.w, self.x, mode, stats)


def build(fw, spec, frozen=True):
    """``spec`` in framework ``fw``; with ``frozen`` False, its frozen BatchNorms are
    not frozen (their running statistics still as far from the data)."""
    w = weights(spec)
    spec = spec if frozen else spec.unfrozen()
    model, names = fw.build(spec, w)
    return Case(fw, spec, model, names, w, fw.layout(spec.data()))


@pytest.fixture(scope="module")
def measured(fw, spec):
    """One measurement of the model, with its state before and after, and the oracle."""
    case = build(fw, spec)
    before = case.fingerprint()
    report = measure(case.model, case.x, batch_size=BATCH)
    after = case.fingerprint()
    return SimpleNamespace(case=case, report=report, before=before, after=after,
                           eval=case.oracle("eval"), nodrop=case.oracle("nodrop"))


# ------------------------------------------------------------------ comparisons
def assert_same_state(before, after, except_running=False):
    """Fingerprints are equal (but for the running statistics)."""
    keep = [k for k in before if not (except_running and k.startswith("running:"))]
    assert before.keys() == after.keys()
    changed = [k for k in keep if before[k] != after[k]]
    assert not changed, f"changed: {changed}"


def assert_moments(got, want, what, rtol):
    """``got`` (a report's RunningMoments) equals ``want`` (the oracle's Moments) to
    ``rtol`` of each channel's scale."""
    assert got.count == want.count, f"{what}: count {got.count} != {want.count}"
    std, scale = np.sqrt(want.var), np.abs(want.mean)
    err_mean = np.abs(got.mean - want.mean) / (std + scale + 1e-30)
    err_var = np.abs(got.var(1) - want.var) / (want.var + std * scale + 1e-30)
    assert err_mean.max() <= rtol, f"{what}: mean off by {err_mean.max():.3g} of its scale"
    assert err_var.max() <= rtol, f"{what}: variance off by {err_var.max():.3g} of its scale"


def assert_near_moments(got, want, what, tol=0.25):
    """``got`` is a noisy sample of what ``want`` predicts: channel-averaged variance
    within ``tol``, means within sampling error."""
    assert got.count == want.count, what
    ratio = np.mean(got.var(1)) / np.mean(want.var)
    assert abs(ratio - 1) < tol, f"{what}: variance {ratio:.3f}x the predicted"
    sem = np.sqrt(want.var / want.count)
    z = np.divide(np.abs(got.mean - want.mean), sem, out=np.zeros_like(sem), where=sem > 0)
    assert np.mean(z) < 2.5, f"{what}: means {np.mean(z):.2f} standard errors away"


def layer(report, name):
    found = [r for r in report.layers if r.name == name]
    assert len(found) == 1, f"layer {name!r} in {[r.name for r in report.layers]}"
    return found[0]


def report_key(case, key):
    """The report's name of an oracle output key (``'b1#2'``: second call), or None if
    the framework's reports do not list that layer."""
    label, sep, call = key.partition("#")
    name = case.names.get(label)
    return None if name is None else name + sep + call


def dropout_findings(findings):
    return {f.layer: f.evidence["dropout_layers"] for f in findings
            if f.code == "DROPOUT_BEFORE_BN"}


def expected_dropout(case, noise):
    """BatchNorm name -> the evidence DROPOUT_BEFORE_BN must give, from the model's
    structure: the Dropout layers upstream with no BatchNorm in between."""
    rates = {op.label: op.rate for op in case.spec.walk() if op.kind == "dropout"}
    return {case.names[b]: ", ".join(f"{name} (Dropout {rates[label]})" for name, label in
                                     sorted((case.names[d], d) for d in labels))
            for b, labels in noise.items() if labels}


# ------------------------------------------------------------------ measure
def test_measure_leaves_the_state_bitwise_unchanged(measured):
    assert_same_state(measured.before, measured.after)


def test_batchnorm_inputs_equal_the_oracle(fw, measured):
    case, report = measured.case, measured.report
    assert [b.name for b in report.bn] == case.batchnorms
    predicted = 0
    for label, b in zip(case.spec.batchnorms, report.bn):
        assert_moments(b.real, measured.eval.inputs[label], f"{b.name} real", fw.rtol)
        assert_moments(b.nodrop, measured.nodrop.inputs[label], f"{b.name} nodrop", fw.rtol)
        real, nodrop = measured.eval.inputs[label], measured.nodrop.inputs[label]
        if np.array_equal(real.mean, nodrop.mean) and np.array_equal(real.var, nodrop.var):
            # no BatchNorm upstream: both passes compute the same input
            assert b.attribution["upstream"] == pytest.approx(1.0, abs=1e-12)
        calls = measured.nodrop.input_calls[label]
        if all(tag == EXACT for tag, _ in calls):  # no noise reaches it: train == nodrop
            assert_moments(b.train, measured.nodrop.inputs[label], f"{b.name} train", fw.rtol)
        elif COMPLEX not in [tag for tag, _ in calls]:  # one Dropout of a noise-free value
            want = pooled([m if tag == EXACT else dropped(m, tag) for tag, m in calls])
            # (well apart from the variance without Dropout, so that this can fail)
            assert np.mean(want.var) > 1.6 * np.mean(measured.nodrop.inputs[label].var)
            assert_near_moments(b.train, want, f"{b.name} train")
            assert b.attribution["dropout"] < 0.85
            predicted += 1
    dropout_right_before = any(op.kind == "dropout" and nxt.kind == "bn" for ops in
                               [case.spec.ops] + [op.body for op in case.spec.walk()]
                               for op, nxt in zip(ops, ops[1:]))
    assert predicted or not dropout_right_before


def test_layer_outputs_equal_the_oracle(fw, measured):
    case, report = measured.case, measured.report
    checked = 0
    for key, (_, want) in measured.eval.outputs.items():
        name = report_key(case, key)
        if name is None:
            continue
        record = layer(report, name)
        assert_moments(record.eval, want, f"{name} eval output", fw.rtol)
        tag, nodrop = measured.nodrop.outputs[key]
        if tag == EXACT:  # no noise upstream: the train pass gives the nodrop values
            assert_moments(record.train, nodrop, f"{name} train output", fw.rtol)
        checked += 1
    assert checked >= len(case.spec.ops) - 1


def test_report_lists_the_layers_in_forward_order_with_their_settings(fw, measured):
    case, report = measured.case, measured.report
    assert report.num_samples == N and report.batch_size == BATCH and report.seed == 0
    kinds = fw.kinds
    ops = {op.label: op for op in case.spec.walk()}
    leaves = [report_key(case, key) for key in measured.eval.order
              if ops[key.partition("#")[0]].kind in kinds]
    listed = [r.name for r in report.layers]
    assert [name for name in listed if name in leaves] == leaves
    for key in measured.eval.order:
        label = key.partition("#")[0]
        if ops[label].kind in kinds:
            assert layer(report, report_key(case, key)).kind == kinds[ops[label].kind], key
    for i, (label, b) in enumerate(zip(case.spec.batchnorms, report.bn)):
        mean, var, tracked = fw.running_stats(case.model, b.name)
        assert (b.num_features, b.eps, b.frozen) == (len(case.w[label]["gamma"]), pytest.approx(
            EPS), label in case.spec.frozen)
        assert b.momentum == pytest.approx(MOMENTUM) and b.index == i
        np.testing.assert_array_equal(b.moving_mean, mean)
        np.testing.assert_array_equal(b.moving_var, var)
        np.testing.assert_array_equal(b.moving_var, case.w[label]["var"].astype(float))
        assert b.num_batches_tracked == tracked == (40 if fw.counts_batches else None)
        assert b.keras_momentum == (not fw.unbiased)


def test_report_is_serialisable_and_its_attribution_multiplies_out(measured):
    case, report = measured.case, measured.report
    assert Report.from_json(report.to_json()).to_dict() == report.to_dict()
    for b in report.bn:
        a = b.attribution
        assert a["upstream"] * a["dropout"] * a["running_stats"] == pytest.approx(
            b.var_ratio, rel=1e-12)
        assert b.shift == pytest.approx(max(b.var_ratio, 1 / b.var_ratio))
    text = str(report)
    assert ("upstream x dropout" in text) if report.bn else ("no BatchNorm layer" in text)
    assert_same_state(measured.before, case.fingerprint())


def test_the_numbers_equal_the_numpy_engines(fw, measured):
    """With the same weights, every deterministic number equals the engine's."""
    engine = next(a for a in FRAMEWORKS if a.name == "numpy")
    if fw is engine:
        pytest.skip("the engine itself")
    case = measured.case
    engine.load()
    twin = build(engine, supported(engine, case.spec))
    theirs = measure(twin.model, twin.x, batch_size=BATCH)
    for a, b in zip(measured.report.bn, theirs.bn):
        for moments in ("real", "nodrop"):
            assert_moments(getattr(a, moments), _as_moments(getattr(b, moments)),
                           f"{a.name} {moments}", 1e-4)
    for key in measured.eval.order:
        ours, engines = report_key(case, key), report_key(twin, key)
        if ours is not None and engines is not None:
            assert_moments(layer(measured.report, ours).eval,
                           _as_moments(layer(theirs, engines).eval), f"{ours} eval", 1e-4)


def _as_moments(running):
    return SimpleNamespace(count=running.count, mean=running.mean, var=running.var(1))


# ------------------------------------------------------------------ diagnose
def test_diagnose_finds_dropout_before_batchnorm_and_changes_nothing(measured):
    case = measured.case
    before = case.fingerprint()
    findings = diagnose(case.model, case.x, batch_size=BATCH)
    assert_same_state(before, case.fingerprint())
    expected = expected_dropout(case, measured.eval.noise)
    assert dropout_findings(findings) == expected
    assert expected or not any(tag != EXACT for calls in measured.nodrop.input_calls.values()
                               for tag, _ in calls)
    shifts = {f.layer: f.evidence["dropout_shift"] for f in findings
              if f.code == "DROPOUT_BEFORE_BN"}
    for b in measured.report.bn:
        if b.name in shifts:
            assert shifts[b.name] == pytest.approx(max(b.attribution["dropout"],
                                                       1 / b.attribution["dropout"]))
    codes = {f.code for f in findings}
    assert not codes & {"EVAL_NOT_DETERMINISTIC", "EVAL_BATCH_DEPENDENT", "STATS_AT_INIT",
                        "DAMAGED_RUNNING_STATS", "SUSPICIOUS_MOMENTUM", "SMALL_BATCH_STATS"}
    again = diagnose(case.model, case.x, batch_size=BATCH, report=measured.report)
    assert [(f.code, f.layer, f.severity) for f in again] == [
        (f.code, f.layer, f.severity) for f in findings]
    assert_same_state(before, case.fingerprint())


def test_diagnose_refuses_a_report_of_another_model(fw, measured):
    case = measured.case
    other = next(m for m in MODELS.values() if m.name != case.spec.name
                 and m.name not in fw.unsupported and m.input_shape == case.spec.input_shape)
    twin = build(fw, other)
    with pytest.raises(ValueError, match="report describes another model"):
        diagnose(twin.model, twin.x, batch_size=BATCH, report=measured.report)


@pytest.mark.parametrize("model", [
    "dense_dropout_before_bn", "dense_dropout_after_bn"])
def test_diagnose_calls_no_statistics_stale_right_after_recalibrate(fw, model):
    case = build(fw, MODELS[model])
    recalibrate(case.model, case.x, batch_size=BATCH, reports=False)
    findings = diagnose(case.model, case.x, batch_size=BATCH)
    assert [f.layer for f in findings if f.code == "STALE_RUNNING_STATS"] == []
    assert {f.code for f in findings} <= {"DROPOUT_BEFORE_BN"}
    assert {f.severity for f in findings} <= {"info"}  # inference is consistent now


# ------------------------------------------------------------------ recalibrate
def test_recalibrate_writes_exact_population_statistics(fw, spec, measured):
    """Each BatchNorm's statistics are its input's over all the data in inference mode,
    with every other BatchNorm recalibrated and itself as it was. (Its own statistics
    matter only where it is called again downstream of its first call: recalibrate then
    takes the input of the later call from one pass with its old statistics, so the
    result is not a fixed point: its shift afterwards is about 1.007 here, not 1.)"""
    case = build(fw, spec)
    old = {label: (case.w[label]["mean"], case.w[label]["var"]) for label in spec.batchnorms}
    before = case.fingerprint()
    result = recalibrate(case.model, case.x, batch_size=BATCH, reports=False,
                         include_frozen=True)
    after = case.fingerprint()
    assert_same_state(before, after, except_running=True)
    assert result.layers == case.batchnorms
    new = {label: fw.running_stats(case.model, case.names[label]) for label in spec.batchnorms}
    for label in spec.batchnorms:
        # inference mode, every other BatchNorm recalibrated (this one as it was, for a
        # BatchNorm that feeds itself)
        stats = {**{k: v[:2] for k, v in new.items()}, label: old[label]}
        want = case.oracle("eval", stats).inputs[label]
        mean, var, tracked = new[label]
        name = case.names[label]
        np.testing.assert_allclose(mean, want.mean, rtol=0, atol=fw.rtol * np.sqrt(want.var).max(),
                                   err_msg=name)
        np.testing.assert_allclose(var, want.var if fw.unbiased else want.pop_var,
                                   rtol=fw.rtol, err_msg=name)
        assert tracked == (-(-N // BATCH) if fw.counts_batches else None)
        assert not np.array_equal(var, old[label][1].astype(float))
    if spec.batchnorms:
        with pytest.raises(ValueError, match=f"running_mean of BatchNorm '{case.batchnorms[0]}'"
                                             f" differs"):
            diagnose(case.model, case.x, batch_size=BATCH, report=measured.report)
    else:
        assert after == before


def test_recalibrate_reports_before_and_after_and_without_them_the_same_statistics(fw):
    """(The reports are the same for every model: checked on one.)"""
    spec = MODELS["conv_dropout_before_bn"]
    loud, quiet = build(fw, spec), build(fw, spec)
    report = measure(loud.model, loud.x, batch_size=BATCH)
    result = recalibrate(loud.model, loud.x, batch_size=BATCH)
    assert result.before.to_json() == report.to_json()
    assert result.layers == loud.batchnorms and "shift before" in str(result)
    for b in result.after.bn:
        mean, var, tracked = fw.running_stats(loud.model, b.name)
        np.testing.assert_array_equal(b.moving_var, var)
        assert b.num_batches_tracked == tracked
        assert b.shift == pytest.approx(1, rel=1e-5)  # like with like, in every convention
    silent = recalibrate(quiet.model, quiet.x, batch_size=BATCH, reports=False)
    assert silent.before is None and silent.after is None and silent.layers == result.layers
    assert "no reports" in str(silent)
    for name in loud.batchnorms:
        for ours, theirs in zip(fw.running_stats(quiet.model, name),
                                fw.running_stats(loud.model, name)):
            np.testing.assert_array_equal(ours, theirs)


# ------------------------------------------------------------------ failures
CALLS = {
    "measure": lambda case, x: measure(case.model, x, batch_size=BATCH),
    "diagnose": lambda case, x: diagnose(case.model, x, batch_size=BATCH),
    "recalibrate": lambda case, x: recalibrate(case.model, x, batch_size=BATCH),
}
#: Where the injected failures happen: (call, the call of the layer that raises, what
#: it raises); 'middle' and 'last' of the calls a run without failure makes.
FAILURES = [("measure", "middle", KeyboardInterrupt), ("diagnose", "last", Tripped),
            ("recalibrate", "middle", KeyboardInterrupt), ("recalibrate", "last", Tripped)]


@pytest.mark.parametrize("fw, model, call, when, exception", everywhere(*FAILURES))
def test_a_failure_in_the_middle_of_a_pass_restores_everything(fw, model, call, when,
                                                               exception):
    """A layer (near the last BatchNorm) raises at its middle or last call: the model is
    bitwise as before, running statistics included (recalibrate: also after it wrote
    them, its 'last' being in its final report)."""
    fw = loaded(fw)
    spec = supported(fw, MODELS[model])
    x = fw.layout(spec.data())[:2 * BATCH]  # two batches: failures cost passes, not samples
    dry = build(fw, spec)
    with tripwire(fw, dry.model, dry.names[spec.trip]) as calls:
        CALLS[call](dry, x)
    total = len(calls)
    assert total >= 4
    fail_on = total if when == "last" else total // 2 + 1
    case = build(fw, spec)
    with tripwire(fw, case.model, case.names[spec.trip], fail_on, exception) as calls:
        before = case.fingerprint()
        with pytest.raises(exception, match=f"injected failure at call {fail_on} "):
            CALLS[call](case, x)
        assert len(calls) == fail_on
        assert_same_state(before, case.fingerprint())


def _interrupted(batches):
    yield from batches
    raise KeyboardInterrupt


@pytest.mark.parametrize("fw, model", everywhere())
def test_bad_data_in_a_later_batch_restores_everything(fw, model):
    fw = loaded(fw)
    spec = supported(fw, MODELS[model])
    case = build(fw, spec)
    x = case.x
    nan = x[128:192].copy()
    nan.flat[7] = np.nan
    wrong = fw.layout(np.ones((64, spec.input_shape[0] - 1, *spec.input_shape[1:]), "float32"))
    before = case.fingerprint()
    with pytest.raises(ValueError, match="measure: data batch 2 has 1 non-finite"):
        measure(case.model, [x[:64], x[64:128], nan])
    assert_same_state(before, case.fingerprint())
    shape = r"\(" + ", ".join(map(str, wrong.shape)) + r"\)"
    with pytest.raises((ValueError, TypeError, RuntimeError),  # JAX: a TypeError
                       match=f"measure: data batch 2 of shape {shape}"):
        measure(case.model, [x[:64], x[64:128], wrong])
    assert_same_state(before, case.fingerprint())
    with pytest.raises(KeyboardInterrupt):
        measure(case.model, _interrupted([x[:64], x[64:128]]))
    assert_same_state(before, case.fingerprint())
    with pytest.raises(ValueError, match="diagnose: data batch 1 has 1 non-finite"):
        diagnose(case.model, [x[:64], nan])
    assert_same_state(before, case.fingerprint())
    with pytest.raises(ValueError, match="recalibrate: data batch 1 has 1 non-finite"):
        recalibrate(case.model, [x[:64], nan])
    assert_same_state(before, case.fingerprint())
    if spec.batchnorms:  # (without them, recalibrate reads the first batch only)
        with pytest.raises((ValueError, TypeError, RuntimeError), match="recalibrate: data batch 1 of "
                                                             "shape"):
            recalibrate(case.model, [x[:64], wrong], reports=False)
        assert_same_state(before, case.fingerprint())
    with pytest.raises(TypeError, match="one-shot iterator"):
        recalibrate(case.model, iter([x]))
    with pytest.raises(ValueError, match="looks like labels"):
        measure(case.model, np.arange(10))
    with pytest.raises(TypeError, match=r"model must be a varshift model .* a torch.nn.Module, "
                                        r"a Keras 3 model or a Flax NNX module, got 'model' "
                                        r"\(str\)"):
        measure("model", x)
    assert_same_state(before, case.fingerprint())


def test_data_forms_agree_and_the_seed_draws_the_masks(fw):
    """The same report, whatever the form of the data, and again for the same seed.
    (Data handling is the same for every model: checked on one.)"""
    case = build(fw, MODELS["conv_dropout_before_bn"])
    x, y = case.x, np.zeros(len(case.x), "int64")
    report = measure(case.model, x, batch_size=BATCH)
    forms = [(x, y), x.astype("float64"), [x[i:i + BATCH] for i in range(0, N, BATCH)],
             [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, N, BATCH)],
             ({"image": x[i:i + BATCH], "label": y[i:i + BATCH]} for i in range(0, N, BATCH))]
    for form in forms:
        assert measure(case.model, form, batch_size=BATCH, input_key="image").to_json() == \
            report.to_json()
    with pytest.raises(ValueError, match=r"data batch 0: a dict with keys \['image', 'label'\] "
                                         r"and no input_key was given; pass input_key="):
        measure(case.model, [{"image": x[:8], "label": y[:8]}])
    other = measure(case.model, x, batch_size=BATCH, seed=1)
    assert other.seed == 1
    tags = {report_key(case, key): tag for key, (tag, _) in case.oracle("nodrop").outputs.items()}
    for a, b in zip(report.layers, other.layers):  # only the train pass after Dropout differs
        assert np.array_equal(a.eval.m2, b.eval.m2)
        if a.name in tags:
            assert np.array_equal(a.train.m2, b.train.m2) == (tags[a.name] == EXACT), a.name
    for a, b in zip(report.bn, other.bn):
        assert not np.array_equal(a.train.m2, b.train.m2)
        np.testing.assert_array_equal(a.nodrop.m2, b.nodrop.m2)


# ------------------------------------------------------------------ frozen BatchNorm
def test_a_frozen_batchnorm_stays_in_inference_mode_and_is_not_stale(fw):
    spec = supported(fw, MODELS["frozen_bn"])
    case = build(fw, spec)
    (label,) = spec.frozen
    name = case.names[label]
    before = case.fingerprint()
    report = measure(case.model, case.x, batch_size=BATCH)
    assert [b.frozen for b in report.bn] == [b in spec.frozen for b in spec.batchnorms]
    frozen = report.bn[spec.batchnorms.index(label)]
    # its output in the train pass is its input normalised with the running statistics
    a = case.w[label]
    out = layer(report, name).train
    want = a["gamma"] * (frozen.train_mean - a["mean"]) / np.sqrt(a["var"] + EPS) + a["beta"]
    np.testing.assert_allclose(out.mean, want, rtol=1e-4, atol=1e-5)
    assert np.mean(out.var(1)) < 0.5 * np.mean(a["gamma"] ** 2)  # not batch-normalised
    assert frozen.shift > 2  # its statistics are far from these data...
    findings = diagnose(case.model, case.x, batch_size=BATCH, report=report)
    assert name not in {f.layer for f in findings if f.code == "STALE_RUNNING_STATS"}  # ...
    assert_same_state(before, case.fingerprint())
    result = recalibrate(case.model, case.x, batch_size=BATCH, reports=False)  # ...and stay
    assert result.frozen == [name] and name not in result.layers
    kept = {k: v for k, v in before.items() if k.startswith("running:") and name in k}
    assert kept and all(case.fingerprint()[k] == v for k, v in kept.items())
    thawed = build(fw, spec, frozen=False)  # the same BatchNorm, not frozen: stale
    report = measure(thawed.model, thawed.x, batch_size=BATCH)
    assert not any(b.frozen for b in report.bn)
    assert name in {f.layer for f in diagnose(thawed.model, thawed.x, batch_size=BATCH,
                                              report=report) if f.code == "STALE_RUNNING_STATS"}


# ------------------------------------------------------------------ imports
def test_import_varshift_never_imports_the_framework(fw):
    if not fw.modules:
        pytest.skip(f"{fw.name} is varshift itself")
    code = ("import sys, numpy as np, varshift; from varshift import nn; "
            "m = nn.Sequential(nn.Dense(3, 4), nn.BatchNorm(4), seed=0); "
            "varshift.measure(m, np.ones((8, 3))); varshift.recalibrate(m, np.ones((8, 3))); "
            "varshift.diagnose(m, np.ones((8, 3))); "
            f"print([m for m in {fw.modules!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
