"""The numerical tools every other module builds on: the symplectic structure of phase space
and ODE solves with Diffrax. It imports nothing else of `conserved` but `_checks`.

- `symplectic_matrix(dof)`: J = [[0, I], [-I, 0]]; `apply_symplectic(v)`: J v without building J.
- `solve_ode(field, y0, ts)`: y' = field(y) saved at `ts` (adaptive Tsit5 by default, or fixed
  steps of any Diffrax solver); tolerances follow the dtype (`resolvable_tolerance`).
- `fixed_steps(field, y0, duration, steps)`: y(duration) by `steps` equal solver steps in a
  `lax.scan`, for short solves inside a loss.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._checks import positive_int, require

__all__ = [
    "symplectic_matrix",
    "apply_symplectic",
    "Autonomous",
    "check_times",
    "solve_ode",
    "resolvable_tolerance",
    "fixed_steps",
]


def symplectic_matrix(dof: int) -> Float[Array, "dim dim"]:
    """J = [[0, I], [-I, 0]] for `dof` degrees of freedom; Hamilton's equations read x' = J ∇H."""
    dof = positive_int("dof", dof)
    eye = jnp.eye(dof)
    zero = jnp.zeros((dof, dof))
    return jnp.block([[zero, eye], [-eye, zero]])


def apply_symplectic(v: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
    """J v for v = (a, b) along the last axis: (b, -a), without building J."""
    n = v.shape[-1] // 2
    return jnp.concatenate([v[..., n:], -v[..., :n]], axis=-1)


class Autonomous(eqx.Module):
    """Diffrax's (t, y, args) signature around an autonomous field y -> f(y), scaled by `scale`.

    A Module rather than a closure, so that two wrappers of equal fields compare equal and
    Diffrax reuses its compiled solve.
    """

    field: Callable[[Array], Array]
    scale: Array | float = 1.0

    def __call__(self, t, y, args):
        return self.scale * self.field(y)


def check_times(ts) -> Array:
    """`ts` as a 1-D array of at least two strictly increasing save times, else ValueError."""
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D array of at least two save times, got shape {ts.shape}")
    return require(ts, jnp.diff(ts) > 0, "ts must be strictly increasing")


def solve_ode(
    field: Callable[[Array], Array],
    y0: PyTree,
    ts: Float[ArrayLike, " T"],
    *,
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    max_steps: int = 100_000,
) -> PyTree:
    """Integrate the autonomous ODE y' = field(y) from y0 = y(ts[0]); return y at `ts` (every
    leaf gains a leading time axis).

    With `dt0=None` (default) the step is adaptive (Tsit5 unless `solver` is given, with a PID
    controller at `rtol`, `atol`); with `dt0` given, the solver takes fixed steps of that size.
    The tolerances follow the state's dtype: none is taken below 10 ε of that dtype (1.2e-6 in
    float32), which a step could not resolve anyway; in float64 the defaults hold as written.
    """
    ts = check_times(ts)
    solver = diffrax.Tsit5() if solver is None else solver
    if dt0 is None:
        floor = resolvable_tolerance(y0)
        controller = diffrax.PIDController(rtol=max(rtol, floor), atol=max(atol, floor))
    else:
        if not dt0 > 0:
            raise ValueError(f"dt0 must be positive, got {dt0!r}")
        controller = diffrax.ConstantStepSize()
    # Two save times are the ends of the solve: saving the endpoints themselves skips the dense
    # interpolation that SaveAt(ts=...) compiles (a third less compile time for a flow).
    two = ts.shape[0] == 2
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field if isinstance(field, Autonomous) else Autonomous(field)),
        solver,
        ts[0],
        ts[-1],
        dt0,
        y0,
        saveat=diffrax.SaveAt(t0=True, t1=True) if two else diffrax.SaveAt(ts=ts),
        stepsize_controller=controller,
        max_steps=max_steps,
    )
    return sol.ys


def resolvable_tolerance(y: PyTree) -> float:
    """10 ε of the widest floating dtype among y's leaves: the smallest tolerance an adaptive
    step can meet (1.2e-6 in float32, 2.2e-15 in float64)."""
    dtypes = [jnp.result_type(leaf) for leaf in jax.tree.leaves(y)]
    floating = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)]
    if not floating:
        return 0.0
    return 10 * float(min(jnp.finfo(d).eps for d in floating))


def fixed_steps(
    field: Callable[[Array], Array],
    y0: PyTree,
    duration: float,
    steps: int,
    *,
    solver: diffrax.AbstractSolver | None = None,
) -> PyTree:
    """y(duration) for the autonomous ODE y' = field(y): `steps` equal steps of a Diffrax solver
    (explicit `Euler` by default), its `step` iterated in a `lax.scan`.

    Same numbers as `solve_ode(..., dt0=duration / steps)` with `ConstantStepSize`, but without
    `diffeqsolve`'s adaptive loop and checkpointing: it traces and compiles several times faster
    and differentiates (also twice) by plain reverse mode. Meant for short, fixed-step solves
    inside a loss, such as the one-step predictions of a Hamiltonian network.
    """
    steps = positive_int("steps", steps)
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration!r}")
    solver = diffrax.Euler() if solver is None else solver
    term = diffrax.ODETerm(field if isinstance(field, Autonomous) else Autonomous(field))
    h = duration / steps
    state = solver.init(term, 0.0, h, y0, None)

    def one(carry, i):
        y, state = carry
        y, _, _, state, _ = solver.step(term, i * h, (i + 1) * h, y, None, state, False)
        return (y, state), None

    (y, _), _ = jax.lax.scan(one, (y0, state), jnp.arange(steps))
    return y
