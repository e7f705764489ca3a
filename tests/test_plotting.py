import matplotlib.pyplot as plt
import numpy as np
import pytest

from conftest import bad_input
from conserved import plotting


def test_style_and_figure():
    plotting.use_style()
    fig, axes = plotting.figure(2, height=2.0)
    assert len(axes) == 2
    assert fig.get_size_inches()[0] == pytest.approx(plotting.BOOK_WIDTH)
    plt.close(fig)
    with bad_input(match="ncols"):
        plotting.figure(0)


def test_drift_curves_drop_zeros_on_log_axis():
    fig, ax = plotting.figure()
    ts = np.linspace(0, 1, 5)
    plotting.drift_curves(ax, ts, {"a": ts**2, "b": ts})
    assert len(ax.lines) == 2
    assert len(ax.lines[0].get_xdata()) == 4  # the zero at t = 0 is not drawn on a log axis
    assert ax.get_yscale() == "log"
    with bad_input(match="curve 'c'"):
        plotting.drift_curves(ax, ts, {"c": ts[:3]})
    plt.close(fig)


def test_loss_curves_and_phase_portrait():
    fig, (a, b) = plotting.figure(2)
    plotting.loss_curves(a, {"run": np.array([3.0, 2.0, 1.0])})
    assert list(a.lines[0].get_xdata()) == [1, 2, 3]
    theta = np.linspace(0, 2 * np.pi, 50)
    plotting.phase_portrait(b, np.stack([np.cos(theta), np.sin(theta)], axis=1), label="circle")
    assert len(b.lines) == 1
    with bad_input(match=r"\(T, 2\)"):
        plotting.phase_portrait(b, np.ones((5, 3)))
    plt.close(fig)
