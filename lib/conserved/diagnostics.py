"""How well is a quantity conserved, and how close is a prediction? Measures shared by all chapters.

- `along(quantity, trajectory)`: evaluate a scalar function of the state at every time.
- `drift(values)`: |Q(t) - Q(0)|, relative to |Q(0)| by default.
- `growth_exponent(ts, values)`: slope of log(values) against log(t), to tell a bounded error
  (exponent near 0) from one that grows (exponent near 1 or more).
- `relative_error(prediction, target)`: ||prediction - target|| / ||target||.
- `summary_table(rows)`: a Markdown table of named numbers, for the chapters' result tables.
- `verdict(holds, measured=, paper=)`: the results page's verdict on one claim of a paper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Scalar

from ._checks import positive_int

__all__ = [
    "along",
    "drift",
    "growth_exponent",
    "relative_error",
    "summary_table",
    "verdict",
]

#: The four verdicts of the results page, best first.
VERDICTS = ("reproduced", "partly", "not reproduced", "not tested here")


def along(
    quantity: Callable[[Float[Array, " M"]], Scalar], trajectory: Float[ArrayLike, "*batch T M"]
) -> Float[Array, "*batch T"]:
    """Evaluate `quantity(x)` at every state of a trajectory (or a batch of trajectories).

    `trajectory` has shape `(..., T, M)`: the last axis is the state, the one before it time.
    """
    trajectory = jnp.asarray(trajectory)
    if trajectory.ndim < 2:
        raise ValueError(
            f"trajectory must have shape (..., T, M) with a time and a state axis, "
            f"got shape {trajectory.shape}"
        )
    flat = trajectory.reshape(-1, trajectory.shape[-1])
    values = jax.vmap(quantity)(flat)
    if values.shape != (flat.shape[0],):
        raise ValueError(f"quantity must return a scalar per state, got shape {values.shape[1:]}")
    return values.reshape(trajectory.shape[:-1])


def drift(
    values: Float[ArrayLike, "*batch T"], *, relative: bool = True
) -> Float[Array, "*batch T"]:
    """Drift of a conserved quantity along time (the last axis).

    $$d(t) = |Q(t) - Q(0)| \\quad\\text{or, relative,}\\quad d(t) = |Q(t) - Q(0)| / |Q(0)|.$$

    Relative drift needs Q(0) != 0; for a quantity that starts at zero (a total momentum of
    zero, say) pass `relative=False`.
    """
    values = jnp.asarray(values)
    if values.ndim < 1 or values.shape[-1] < 1:
        raise ValueError(f"values must have a time axis of length >= 1, got shape {values.shape}")
    start = values[..., :1]
    change = jnp.abs(values - start)
    if not relative:
        return change
    if bool(jnp.any(start == 0)):
        raise ValueError(
            "relative drift needs Q(0) != 0, but some trajectory starts at Q(0) = 0; "
            "use relative=False"
        )
    return change / jnp.abs(start)


def growth_exponent(
    ts: Float[ArrayLike, " T"] | Sequence[float], values: Float[ArrayLike, " T"] | Sequence[float]
) -> float:
    """Least-squares slope p of log(values) against log(t): values ~ t**p.

    Times t <= 0 and values <= 0 are left out (a drift is exactly 0 at t = 0). An error that stays
    bounded gives p near 0, one that grows linearly p near 1. At least two usable points are needed.
    """
    ts = np.asarray(ts, dtype=float)
    values = np.asarray(values, dtype=float)
    if ts.ndim != 1 or ts.shape != values.shape:
        raise ValueError(
            "ts and values must be 1-D of the same length, "
            f"got shapes {ts.shape} and {values.shape}"
        )
    keep = (ts > 0) & (values > 0) & np.isfinite(values)
    if keep.sum() < 2:
        raise ValueError("growth_exponent needs at least two points with t > 0 and value > 0")
    slope, _ = np.polyfit(np.log(ts[keep]), np.log(values[keep]), 1)
    return float(slope)


def relative_error(
    prediction: Float[ArrayLike, "..."],
    target: Float[ArrayLike, "..."],
    *,
    axis: int | Sequence[int] | None = None,
) -> Float[Array, "..."]:
    """Relative error ||prediction - target|| / ||target|| (Frobenius norm over `axis`, all axes
    by default). Shapes must match exactly; a target of norm zero raises `ValueError`."""
    prediction = jnp.asarray(prediction)
    target = jnp.asarray(target)
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {prediction.shape} and "
            f"{target.shape}"
        )
    axis = tuple(axis) if isinstance(axis, Sequence) else axis
    scale = jnp.sqrt(jnp.sum(target**2, axis=axis))
    if bool(jnp.any(scale == 0)):
        raise ValueError("target has norm zero, so a relative error is undefined")
    return jnp.sqrt(jnp.sum((prediction - target) ** 2, axis=axis)) / scale


def summary_table(
    rows: Mapping[str, Mapping[str, float | str]],
    *,
    row_header: str = "",
    digits: int = 3,
) -> str:
    """A Markdown table: one row per key of `rows`, one column per key of its values.

    Numbers are printed with `digits` significant digits; strings as they are (a `|` escaped);
    a missing cell as an en dash. Display it in a notebook with `IPython.display.Markdown`.
    """
    if not rows:
        raise ValueError("rows must not be empty")
    digits = positive_int("digits", digits)
    columns: list[str] = []
    for name, cells in rows.items():
        if not isinstance(cells, Mapping):
            raise ValueError(f"row {name!r} must map column names to values, got {cells!r}")
        columns += [c for c in cells if c not in columns]

    def text(value: str) -> str:
        # a "|" inside a cell (say "max |{C, H}|") would end the cell: escape it
        return str(value).replace("|", "\\|")

    def cell(value) -> str:
        if isinstance(value, str):
            return text(value)
        return f"{float(value):.{digits}g}"

    lines = [
        "| " + " | ".join(text(c) for c in [row_header, *columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for name, cells in rows.items():
        lines.append(
            "| "
            + " | ".join([text(name), *(cell(cells[c]) if c in cells else "–" for c in columns)])
            + " |"
        )
    return "\n".join(lines)


def verdict(
    holds: bool | Sequence[bool],
    *,
    measured: float | None = None,
    paper: float | None = None,
    factor: float = 10.0,
) -> str:
    """The verdict on one claim of a paper, computed from what a chapter measured.

    `holds` has one entry per seed or setting measured: whether the claim held there in the
    paper's direction (a gap opened, an error fell, a quantity stayed put). Where the paper's
    text gives a number for the same quantity, pass it as `paper` and this book's as
    `measured` (both positive); they agree when within `factor` of each other, i.e.
    |log10(measured / paper)| <= log10(factor), the same order of magnitude by default.

    - "not tested here": no entry in `holds`;
    - "reproduced": the claim held on every entry, and the numbers (if given) agree;
    - "not reproduced": the claim held on no entry;
    - "partly": anything in between (some entries, or every entry but a number off by more
      than `factor`).
    """
    holds = [bool(h) for h in ([holds] if isinstance(holds, (bool, np.bool_)) else holds)]
    if (measured is None) != (paper is None):
        raise ValueError("give both `measured` and `paper`, or neither")
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    agree = True
    if measured is not None:
        if not (np.isfinite(measured) and np.isfinite(paper) and measured > 0 and paper > 0):
            raise ValueError(
                f"measured and paper must be finite and positive, got {measured} and {paper}"
            )
        agree = abs(np.log10(measured / paper)) <= np.log10(factor)
    if not holds:
        return VERDICTS[3]
    if all(holds) and agree:
        return VERDICTS[0]
    if not any(holds):
        return VERDICTS[2]
    return VERDICTS[1]
