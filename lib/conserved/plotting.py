"""The book's figure style and the few plot types that recur across chapters.

Call `use_style()` once at the top of a chapter. Then `figure(...)` makes a figure of the book's
width, and `drift_curves`, `loss_curves` and `phase_portrait` draw the recurring plots onto an
axis that the caller owns (so they compose into multi-panel figures).
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from jaxtyping import ArrayLike, Float

from ._checks import positive, positive_int

#: Colour-blind-safe palette (Okabe & Ito), in the order the book assigns to compared methods.
__all__ = [
    "PALETTE",
    "BOOK_WIDTH",
    "STYLE",
    "use_style",
    "figure",
    "drift_curves",
    "loss_curves",
    "phase_portrait",
]


PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

BOOK_WIDTH = 7.0  # inches: the width of the text column in the rendered book

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.6,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the book's matplotlib style (idempotent)."""
    mpl.rcParams.update(STYLE)


def figure(ncols: int = 1, nrows: int = 1, *, height: float = 3.0, width: float = BOOK_WIDTH, **kw):
    """A figure with an `nrows × ncols` grid of axes at the book's width.

    Returns `(fig, axes)`; `axes` is a single axis when the grid is 1×1, otherwise an array
    (squeezed as in `plt.subplots`).
    """
    ncols, nrows = positive_int("ncols", ncols), positive_int("nrows", nrows)
    height, width = positive("height", height), positive("width", width)
    return plt.subplots(nrows, ncols, figsize=(width, height * nrows), **kw)


def _curve(values: ArrayLike, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"curve {name!r} must be 1-D, got shape {values.shape}")
    return values


def drift_curves(
    ax,
    ts: Float[ArrayLike, " T"],
    curves: Mapping[str, Float[ArrayLike, " T"]],
    *,
    ylabel: str = "relative drift",
    log: bool = True,
):
    """Plot drift-against-time curves, one per named method, on `ax` (log y-axis by default).

    Zeros (the drift at t = 0) are dropped from a log plot rather than drawn at -inf.
    """
    ts = np.asarray(ts, dtype=float)
    if ts.ndim != 1:
        raise ValueError(f"ts must be 1-D, got shape {ts.shape}")
    if not curves:
        raise ValueError("curves must contain at least one named curve")
    for name, values in curves.items():
        values = _curve(values, name)
        if values.shape != ts.shape:
            raise ValueError(
                f"curve {name!r} has shape {values.shape}, but ts has shape {ts.shape}"
            )
        keep = values > 0 if log else np.ones_like(values, dtype=bool)
        ax.plot(ts[keep], values[keep], label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("time")
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax


def loss_curves(ax, curves: Mapping[str, Float[ArrayLike, " steps"]], *, log: bool = True):
    """Plot training-loss histories (from `training.fit`), one per named run, against the step."""
    if not curves:
        raise ValueError("curves must contain at least one named curve")
    for name, values in curves.items():
        values = _curve(values, name)
        ax.plot(np.arange(1, len(values) + 1), values, label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    return ax


def phase_portrait(
    ax,
    trajectory: Float[ArrayLike, "T 2"],
    *,
    label: str | None = None,
    q_label: str = "$q$",
    p_label: str = "$p$",
    **kw,
):
    """Plot a trajectory of a one-degree-of-freedom system in the (q, p) plane."""
    trajectory = np.asarray(trajectory, dtype=float)
    if trajectory.ndim != 2 or trajectory.shape[1] != 2:
        raise ValueError(
            f"trajectory must have shape (T, 2) = (time, (q, p)), got {trajectory.shape}"
        )
    ax.plot(trajectory[:, 0], trajectory[:, 1], label=label, **kw)
    ax.set_xlabel(q_label)
    ax.set_ylabel(p_label)
    ax.set_aspect("equal", adjustable="datalim")
    return ax
