"""varshift.plots.plot_bn_shift: a log axis of ratios, ticked with plain numbers, and
the BatchNorm layers' names as x ticks."""

from types import SimpleNamespace

import matplotlib
import pytest
from helpers import blobs, dropout_before_bn, trained

from varshift import measure, recalibrate
from varshift.plots import _ratio_ticks, plot_bn_shift

matplotlib.use("Agg")


def fake_report(shifts, names):
    """What plot_bn_shift reads of a Report: per BatchNorm its index, name and shift."""
    return SimpleNamespace(bn=[SimpleNamespace(index=i, name=n, shift=s)
                               for i, (n, s) in enumerate(zip(names, shifts))])


def tick_texts(ax, axis):
    ax.figure.canvas.draw()
    return [t.get_text() for t in getattr(ax, f"get_{axis}ticklabels")()]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    matplotlib.pyplot.close("all")


def test_shift_axis_is_log_with_plain_ticks_and_layer_names():
    # notebook 6's case: 15.7 next to 1.32 and 1.57, on a linear axis flattened to 1
    ax = plot_bn_shift(fake_report([15.7, 1.32, 1.57], ["1", "5", "9"]))
    assert ax.get_yscale() == "log"
    assert tick_texts(ax, "x") == ["1", "5", "9"]
    low, high = ax.get_ylim()
    assert low <= 1 and high >= 15.7
    assert [float(t) for t in tick_texts(ax, "y") if low <= float(t) <= high] == [1, 1.5, 2, 3, 5, 10, 15]
    # 1.32 and 1.57 sit visibly above 1 (a third of the way from 1 to 16 in log terms: no
    # flattening), and each point is drawn at its layer's tick
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == [15.7, 1.32, 1.57]


def test_shifts_of_about_one_still_get_ticks():
    ax = plot_bn_shift(fake_report([1.0, 1.0001], ["bn1", "bn2"]))
    low, high = ax.get_ylim()
    assert low <= 1 and high >= 1.5  # the axis spans at least 1 to 1.5
    assert {"1", "1.25", "1.5"} <= set(tick_texts(ax, "y"))


@pytest.mark.parametrize("low, high, expected", [
    (0.95, 1.6, [1, 1.1, 1.25, 1.5]),
    (0.9, 17, [1, 1.5, 2, 3, 5, 10, 15]),
    (0.9, 400, [1, 2, 5, 10, 20, 50, 100, 200])])
def test_ratio_ticks_get_coarser_as_the_axis_spans_more(low, high, expected):
    assert _ratio_ticks(low, high) == pytest.approx(expected)


def test_a_real_report_and_recalibration_plot_with_names():
    x, y = blobs(300)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    report = measure(model, x)
    names = [b.name for b in report.bn]
    ax = report.plot(kind="shift")
    assert ax.get_yscale() == "log" and tick_texts(ax, "x") == names
    ax = recalibrate(model, x).plot()  # before and after on one Axes
    assert ax.get_yscale() == "log" and tick_texts(ax, "x") == names
    assert len(ax.get_lines()) >= 2
