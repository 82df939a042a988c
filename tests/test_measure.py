"""varshift.measure and its Report."""

import json

import matplotlib
import numpy as np
import pytest
from helpers import blobs, dropout_before_bn, healthy, trained
from hypothesis import given
from hypothesis import strategies as st

from varshift import Report, measure, nn
from varshift.stats import RunningMoments

matplotlib.use("Agg")


def test_case_a_shift_matches_li_et_al_equation_8():
    """Dropout(p) -> BN on x ~ N(c, v): with exact train-mode running statistics the
    measured real/moving variance ratio is Delta = v / ((c^2 + v) / p - c^2)."""
    c, v, p = 1.0, 2.0, 0.6
    x = (c + np.sqrt(v) * np.random.default_rng(0).standard_normal((40000, 8))).astype(np.float32)
    model = nn.Sequential(nn.Dropout(1 - p), nn.BatchNorm(8, momentum=None), seed=1)
    for start in range(0, len(x), 500):  # record exact (cumulative) train-mode statistics
        model(x[start:start + 500])
    bn = measure(model, x, batch_size=500).bn[0]
    delta = v / ((c * c + v) / p - c * c)
    assert bn.var_ratio == pytest.approx(delta, rel=0.02)
    assert bn.shift == pytest.approx(1 / delta, rel=0.02)
    assert bn.attribution["dropout"] == pytest.approx(delta, rel=0.02)
    assert bn.attribution["running_stats"] == pytest.approx(1.0, abs=0.01)
    assert bn.attribution["upstream"] == pytest.approx(1.0, abs=1e-9)


def test_attribution_factors_multiply_to_the_ratio():
    x, y = blobs()
    report = measure(trained(dropout_before_bn(), (x, y)), x)
    for b in report.bn:
        a = b.attribution
        assert a["upstream"] * a["dropout"] * a["running_stats"] == pytest.approx(b.var_ratio, rel=1e-12)
        assert b.shift == pytest.approx(max(b.var_ratio, 1 / b.var_ratio))
    assert report.bn[1].attribution["dropout"] < 0.6  # the rate-0.5 Dropout right before it


def test_statistics_equal_a_direct_computation():
    x, y = blobs(600)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    report = measure(model, x, batch_size=128)
    model.eval()
    h = x
    for i, layer in enumerate(model.layers):
        if i == 7:  # second BatchNorm: its input in inference mode = the real statistics
            np.testing.assert_allclose(report.bn[1].real_mean, h.astype(np.float64).mean(0), rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(report.bn[1].real_var, h.astype(np.float64).var(0, ddof=1), rtol=1e-5)
        h = layer(h)
        record = report.layers[i]
        np.testing.assert_allclose(record.eval.mean, h.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(record.eval.var(), h.astype(np.float64).var(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(report.bn[0].moving_var, model[4].buffers["running_var"])


# --- measuring never changes the model -------------------------------------------------

LEAVES = [lambda c: nn.BatchNorm(c), lambda c: nn.Dropout(0.3), lambda c: nn.Uout(0.2),
          lambda c: nn.GaussianDropout(0.2), lambda c: nn.ReLU(), lambda c: nn.Tanh(),
          lambda c: nn.Conv2D(c, c, 3, padding=1), lambda c: nn.BatchNorm(c, momentum=None)]


@st.composite
def architectures(draw):
    c = 3
    def block(depth):
        kind = draw(st.sampled_from(["leaf", "leaf", "seq", "res", "cat"] if depth < 2 else ["leaf"]))
        if kind == "leaf":
            return draw(st.sampled_from(LEAVES))(c)
        if kind == "seq":
            return nn.Sequential(*[block(depth + 1) for _ in range(draw(st.integers(1, 3)))])
        if kind == "res":
            return nn.Residual(nn.Sequential(*[block(depth + 1) for _ in range(draw(st.integers(1, 3)))]))
        return nn.Sequential(nn.Concat(block(depth + 1), nn.Identity()), nn.Conv2D(2 * c, c, 1))
    layers = [block(0) for _ in range(draw(st.integers(1, 4)))]
    model = nn.Sequential(nn.Conv2D(1, c, 3, padding=1), *layers, nn.GlobalAvgPool(), nn.Dense(c, 2),
                          seed=draw(st.integers(0, 1000)))
    for _, layer in model.walk():  # mixed, non-default modes must survive too
        layer.training = draw(st.booleans())
    return model


@given(architectures(), st.integers(0, 5))
def test_measuring_never_changes_the_model(model, seed):
    x = np.random.default_rng(seed).standard_normal((9, 1, 5, 5)).astype(np.float32)
    model(x[:4])  # leave a forward cache behind, and move running statistics
    before = model.state_dict()
    rng_before = model.rng_state()
    layers = [layer for _, layer in model.walk()]
    state = [(layer.training, layer._cache, layer._out_shape, len(layer._hooks)) for layer in layers]
    measure(model, x, batch_size=4, seed=seed)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert before[key].dtype == after[key].dtype and before[key].tobytes() == after[key].tobytes(), key
    assert model.rng_state() == rng_before
    assert [(layer.training, layer._cache, layer._out_shape, len(layer._hooks)) for layer in layers] == state


@pytest.mark.parametrize("container", ["residual", "concat", "nested"])
def test_passes_share_the_layers_before_the_noise_inside_containers(container):
    def body():
        return nn.Sequential(nn.BatchNorm(2), nn.ReLU(), nn.Dropout(0.5), nn.Conv1D(2, 2, 3, padding=1))

    model = {"residual": lambda: nn.Residual(body()),
             "concat": lambda: nn.Concat(body(), nn.Identity()),
             "nested": lambda: nn.Sequential(nn.Conv1D(2, 2, 1), nn.Residual(nn.Sequential(
                 nn.Residual(body()), nn.BatchNorm(2))))}[container]()
    model.initialize(0)
    x = np.random.default_rng(0).standard_normal((32, 2, 5)).astype(np.float32)
    calls = {}
    for _, layer in model.walk():
        layer.add_hook(lambda layer, x, out: calls.update({id(layer): calls.get(id(layer), 0) + 1}))
    report = measure(model, x, batch_size=len(x))
    layers = dict(model.walk())
    first_bn = next(path for path, layer in layers.items() if isinstance(layer, nn.BatchNorm))
    relu = next(layer for layer in layers.values() if isinstance(layer, nn.ReLU))
    # eval apart; train and nodrop together up to the Dropout, apart after it
    assert calls[id(layers[first_bn])] == 2 and calls[id(relu)] == 2
    conv = next(layer for path, layer in layers.items() if isinstance(layer, nn.Conv1D) and
                path.endswith("3"))
    assert calls[id(conv)] == 3
    bn = next(b for b in report.bn if b.name == first_bn)
    np.testing.assert_array_equal(bn.train_var, bn.nodrop_var)



@pytest.mark.parametrize("container", ["sequential", "residual", "concat"])
def test_each_batch_sees_the_original_running_statistics(container):
    """The train-mode passes update running statistics; they are put back after every
    call, so the inference statistics of every batch equal a direct computation."""
    def block():
        return nn.Sequential(nn.Conv1D(2, 2, 3, padding=1), nn.BatchNorm(2, momentum=0.9),
                             nn.ReLU(), nn.Dropout(0.5))

    inner = {"sequential": lambda: nn.Sequential(block(), block()),
             "residual": lambda: nn.Residual(nn.Sequential(block(), block())),
             "concat": lambda: nn.Sequential(nn.Concat(block(), block()),
                                             nn.Conv1D(4, 2, 1))}[container]()
    model = nn.Sequential(inner, nn.BatchNorm(2, momentum=0.9), seed=0)
    x = np.random.default_rng(1).standard_normal((40, 2, 6)).astype(np.float32)
    model(x)  # running statistics away from their initial values
    report = measure(model, x, batch_size=8)  # 5 batches, each updating them in train mode
    seen = {}
    for path, layer in model.walk():
        if isinstance(layer, nn.BatchNorm):
            layer.add_hook(lambda layer, inputs, out, path=path: seen.setdefault(path, inputs))
    model.eval()(x)
    assert len(report.bn) == len(seen) == 3
    for bn in report.bn:
        direct = seen[bn.name].astype(np.float64)
        np.testing.assert_allclose(bn.real_mean, direct.mean((0, 2)), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(bn.real_var, direct.var((0, 2), ddof=1), rtol=1e-5)


def test_measure_is_deterministic_given_the_seed():
    x, y = blobs(500)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    a, b, c = (measure(model, x, seed=s).to_json() for s in (3, 3, 4))
    assert a == b and a != c


def test_merge_of_shards_equals_the_whole():
    x, y = blobs(1024)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    whole = measure(model, x, batch_size=128)
    merged = measure(model, x[:512], batch_size=128).merge(measure(model, x[512:], batch_size=128))
    assert merged.num_samples == 1024
    for a, b in zip(merged.bn, whole.bn):  # inference-mode statistics do not depend on masks
        np.testing.assert_allclose(a.real_var, b.real_var, rtol=1e-10)
        np.testing.assert_allclose(a.real_mean, b.real_mean, rtol=1e-10, atol=1e-12)
        assert a.shift == pytest.approx(b.shift, rel=1e-10)
    for a, b in zip(merged.layers, whole.layers):
        np.testing.assert_allclose(a.eval.var(), b.eval.var(), rtol=1e-10, atol=1e-14)
    other = healthy()
    with pytest.raises(ValueError, match="different architectures"):
        whole.merge(measure(other, x))
    twin = dropout_before_bn(seed=5)
    with pytest.raises(ValueError, match="different running statistics"):
        whole.merge(measure(trained(twin, (x, y), epochs=1), x))


def test_running_moments_merge_matches_one_pass():
    x = np.random.default_rng(1).standard_normal((300, 4, 6)) * 3 + 7
    a = RunningMoments(4).update(x[:100]).merge(RunningMoments(4).update(x[100:]))
    np.testing.assert_allclose(a.var(), x.transpose(1, 0, 2).reshape(4, -1).var(1), rtol=1e-12)
    np.testing.assert_allclose(a.mean, x.mean((0, 2)), rtol=1e-12)


def test_json_round_trip_and_table(tmp_path):
    x, y = blobs(500)
    report = measure(trained(dropout_before_bn(), (x, y), epochs=1), x)
    again = Report.from_json(report.to_json())
    assert again.to_dict() == report.to_dict()
    report.to_json(tmp_path / "r.json")
    assert Report.from_json(tmp_path / "r.json").bn[1].shift == report.bn[1].shift
    text = str(report)
    assert "BatchNorm inputs" in text and "Layer outputs" in text and "upstream x dropout" in text
    assert json.loads(report.to_json())["bn"][0]["num_features"] == 64


def test_model_without_batchnorm_still_reports_layers():
    x, y = blobs(4000)
    model = nn.Sequential(nn.Dense(20, 8), nn.ReLU(), nn.Dropout(0.5), nn.Dense(8, 2), seed=0)
    report = measure(model, x)
    assert report.bn == [] and len(report.layers) == 4
    assert "no BatchNorm layer" in str(report)
    # Li et al.'s Eq. 7 per channel of the ReLU output (mean c, variance v), p = 0.5:
    # train-mode variance after Dropout (c^2 + v) / p - c^2, inference-mode variance v
    c, v = report.layers[1].eval.mean, report.layers[1].eval.var()
    expected = np.mean(v) / np.mean((c * c + v) / 0.5 - c * c)
    assert report.layers[2].var_ratio == pytest.approx(expected, rel=0.05)
    assert report.layers[2].var_ratio < 0.45  # below p: c > 0 after a ReLU


@pytest.mark.parametrize("kind", ["shift", "channels", "layers"])
def test_plots_return_axes(kind):
    x, y = blobs(300)
    report = measure(trained(dropout_before_bn(), (x, y), epochs=1), x)
    ax = report.plot(kind=kind)
    assert ax.get_ylabel() and ax.get_xlabel() is not None
    matplotlib.pyplot.close("all")


def test_plot_errors():
    x, _ = blobs(100)
    report = measure(nn.Sequential(nn.Dense(20, 2)), x)
    with pytest.raises(ValueError, match="kind must be"):
        report.plot(kind="pie")
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        report.plot(kind="channels")


def test_bad_input_gives_clear_errors():
    model = healthy()
    x, y = blobs(100)
    with pytest.raises(ValueError, match="measure: data is empty"):
        measure(model, x[:0])
    bad = x.copy()
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match="measure: data has 1 non-finite values"):
        measure(model, bad)
    with pytest.raises(ValueError, match=r"layer '0' \(Dense\(20, 64\)\): expected input of shape \(N, 20\)"):
        measure(model, x[:, :5])
    with pytest.raises(ValueError, match="looks like labels"):
        measure(model, y)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        measure(model, x, batch_size=0)
    with pytest.raises(ValueError, match="data is empty"):
        measure(model, iter([]))


def test_data_forms_agree_and_large_batches_work():
    x, y = blobs(301)
    model = trained(healthy(), (x, y), epochs=1)
    as_array = measure(model, x, batch_size=100)
    as_pair = measure(model, (x, y), batch_size=100)
    as_list = measure(model, [(x[:100], y[:100]), x[100:200], x[200:]])
    as_generator = measure(model, (x[i:i + 100] for i in range(0, 300, 100)), batch_size=7)
    assert as_array.to_json() == as_pair.to_json()
    assert as_array.num_samples == 301 and as_list.num_samples == 301  # the 1-sample tail folded in
    assert as_generator.num_samples == 300
    assert measure(model, x, batch_size=10_000).num_samples == 301


def _report_json():
    model = nn.Sequential(nn.Dense(6, 4), nn.BatchNorm(4), seed=0)
    return measure(model, np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)
                   ).to_json()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["bn"][0].update(moving_mean="fast"), r"bn\[0\].moving_mean must be a list of "
                                                      r"numbers, got 'fast'"),
    (lambda d: d["bn"][0].update(name=None), r"bn\[0\].name must be a string, got None"),
    (lambda d: d["bn"][0].update(moving_var=[1.0]), r"bn\[0\].moving_var has 1 values, its "
                                                    r"num_features is 4"),
    (lambda d: d["layers"][1].update(shape="x"), r"layers\[1\].shape must be a list of integers"),
    (lambda d: d["layers"][0]["train"].update(mean=[True]), r"layers\[0\].train must be moments"),
    (lambda d: d.update(num_samples=2.5), r"the report.num_samples must be an integer"),
    (lambda d: d.pop("bn"), r"the report: missing 'bn'"),
])
def test_a_report_json_with_wrong_typed_fields_names_the_field(edit, message):
    d = json.loads(_report_json())
    edit(d)
    with pytest.raises(ValueError, match="Report.from_json: text is not a varshift report's "
                                         "JSON .*" + message):
        Report.from_json(json.dumps(d))


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "1" + "0" * 5000,
                                  '{"layers": ' * 5000])
def test_hostile_report_texts_are_value_errors_not_file_names(text):
    with pytest.raises(ValueError, match="Report.from_json: text is not a varshift report's"):
        Report.from_json(text)


def test_the_inference_pass_alone_gives_the_same_shifts():
    """``measure_with(..., passes=('eval',))`` (the reproduction's check after
    recalibration) gives every shift of a full ``measure`` bit for bit, and leaves the
    other passes' moments empty."""
    from varshift.backends import session_for
    from varshift.measurement import measure_with

    x, y = blobs(600)
    model = trained(dropout_before_bn(), (x, y))
    session = session_for(model, "measure")
    fast = measure_with(session, session.batches(x, 128, "measure"), None, False,
                        passes=("eval",))
    full = measure(model, x, batch_size=128)
    assert [b.shift for b in fast.bn] == [b.shift for b in full.bn]
    assert max(b.shift for b in fast.bn) > 1.05  # a real shift, not a trivial 1
    assert all(b.train.count == 0 and b.nodrop.count == 0 for b in fast.bn)
