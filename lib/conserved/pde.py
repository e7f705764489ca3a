"""Reference solvers for one-dimensional PDEs, by the method of lines, time-stepped with Diffrax.

Each `*_rhs` function returns the right-hand side `f(u)` of the semi-discrete system u' = f(u) on
a uniform grid; `solve(rhs, u0, ts)` integrates it (Tsit5 by default, `stiff=True` for an
implicit Kvaerno5). Periodic problems use pseudo-spectral derivatives (FFT); the heat equation
with insulated ends and the mass-conserving Allen–Cahn equation use a finite-volume Laplacian
whose zero-flux boundaries conserve the discrete mass dx Σ u exactly.

| equation | function | conserves (discretely) |
|---|---|---|
| advection u_t + β u_x = 0 (periodic) | `advection_rhs` | ∫u and ∫u² (exact: a translation) |
| viscous Burgers u_t + u u_x = ν u_xx (periodic) | `burgers_rhs` | ∫u; ∫u² decays |
| KdV u_t + u u_x + δ² u_xxx = 0 (periodic) | `kdv_rhs` | ∫u and ∫u² |
| heat u_t = κ u_xx, insulated ends | `heat_neumann_rhs` | ∫u |
| Allen–Cahn u_t = ε² u_xx + u - u³ - mean(u - u³), insulated ends | `allen_cahn_rhs` | ∫u |

Data sets for neural operators: `random_cosine_fields` draws smooth initial fields with insulated
ends and a random mean each, `solve_batch` solves from many initial fields at once (`vmap`).

Quadrature of the integrals: `projection.linear_integral` and `projection.quadratic_integral`.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.integrate
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Scalar

from ._checks import non_negative, positive_int
from ._checks import positive as _positive
from .ode import solve_ode

__all__ = [
    "periodic_grid",
    "cell_centres",
    "spectral_derivative",
    "trapezoid",
    "advection_rhs",
    "burgers_rhs",
    "kdv_rhs",
    "heat_neumann_rhs",
    "allen_cahn_rhs",
    "solve",
    "advection_exact",
    "solve_batch",
    "random_cosine_fields",
]


def periodic_grid(n: int, length: float, start: float = 0.0) -> tuple[Float[Array, " n"], float]:
    """n equally spaced points on [start, start + length), and the spacing dx."""
    n = positive_int("n", n, 4)
    length = _positive("length", length)
    dx = length / n
    return start + dx * jnp.arange(n), dx


def cell_centres(n: int, length: float, start: float = 0.0) -> tuple[Float[Array, " n"], float]:
    """Centres of n equal cells covering [start, start + length], and the cell width dx."""
    x, dx = periodic_grid(n, length, start)
    return x + dx / 2, dx


def spectral_derivative(
    u: Float[Array, "... n"], length: float | Scalar, order: int = 1
) -> Float[Array, "... n"]:
    """d^order u / dx^order of a periodic field, by FFT (the Nyquist mode is dropped for odd
    orders)."""
    length = _positive("length", length)
    u = jnp.asarray(u)
    n = u.shape[-1]
    k = 2 * jnp.pi * jnp.fft.rfftfreq(n, d=length / n)
    if order % 2 and n % 2 == 0:
        k = k.at[-1].set(0.0)
    return jnp.fft.irfft((1j * k) ** order * jnp.fft.rfft(u, axis=-1), n=n, axis=-1)


def trapezoid(u: Float[ArrayLike, "... n"], dx: float) -> Float[Array, "..."]:
    """Trapezoid rule over the last axis, for a grid that includes both end points (non-periodic).
    On a periodic grid the rectangle rule (`projection.linear_integral`) is the same rule."""
    u = jnp.asarray(u)
    if u.shape[-1] < 2:
        raise ValueError(f"u needs at least 2 points on its last axis, got shape {u.shape}")
    return jax.scipy.integrate.trapezoid(u, dx=_positive("dx", dx), axis=-1)


def _neumann_laplacian(u: Float[Array, " n"], dx: float) -> Float[Array, " n"]:
    """Finite-volume u_xx with zero flux through both ends: Σ of the result is exactly 0."""
    flux = jnp.diff(u) / dx  # between cells
    flux = jnp.concatenate([jnp.zeros(1, u.dtype), flux, jnp.zeros(1, u.dtype)])
    return jnp.diff(flux) / dx


def advection_rhs(beta: float, length: float) -> Callable[[Array], Array]:
    """u_t = -β u_x on a periodic domain of the given length."""
    length = _positive("length", length)
    return lambda u: -beta * spectral_derivative(u, length)


def burgers_rhs(nu: float, length: float) -> Callable[[Array], Array]:
    """u_t = -(u²/2)_x + ν u_xx, periodic (conservative form, so the discrete mass is kept)."""
    nu = _positive("nu", nu)
    length = _positive("length", length)
    return lambda u: (
        -spectral_derivative(0.5 * u**2, length) + nu * spectral_derivative(u, length, 2)
    )


def kdv_rhs(delta: float, length: float) -> Callable[[Array], Array]:
    """u_t = -(u²/2)_x - δ² u_xxx, periodic."""
    length = _positive("length", length)
    return lambda u: (
        -spectral_derivative(0.5 * u**2, length) - delta**2 * spectral_derivative(u, length, 3)
    )


def heat_neumann_rhs(kappa: float, dx: float) -> Callable[[Array], Array]:
    """u_t = κ u_xx on cells with insulated (zero-flux) ends."""
    kappa = _positive("kappa", kappa)
    dx = _positive("dx", dx)
    return lambda u: kappa * _neumann_laplacian(u, dx)


def allen_cahn_rhs(epsilon: float, dx: float) -> Callable[[Array], Array]:
    """Mass-conserving Allen–Cahn, u_t = ε² u_xx + g(u) - mean(g(u)), g(u) = u - u³, on cells
    with insulated ends: the Lagrange multiplier mean(g) keeps dx Σ u fixed."""
    epsilon, dx = _positive("epsilon", epsilon), _positive("dx", dx)

    def rhs(u):
        g = u - u**3
        return epsilon**2 * _neumann_laplacian(u, dx) + g - jnp.mean(g)

    return rhs


def solve(
    rhs: Callable[[Array], Array],
    u0: Float[ArrayLike, " n"],
    ts: Float[ArrayLike, " T"],
    *,
    stiff: bool = False,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    max_steps: int = 200_000,
) -> Float[Array, "T n"]:
    """Integrate u' = rhs(u) from u0 at ts[0]; the field at every time of `ts`.

    `stiff=True` uses the implicit Kvaerno5 (for diffusion-dominated problems on fine grids).
    """
    u0 = jnp.asarray(u0)
    if u0.ndim != 1:
        raise ValueError(f"u0 must be a 1-D field, got shape {u0.shape}")
    solver = diffrax.Kvaerno5() if stiff else diffrax.Tsit5()
    return solve_ode(rhs, u0, ts, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)


def advection_exact(
    u0: Callable[[Array], Array],
    x: Float[ArrayLike, " n"],
    ts: Float[ArrayLike, " T"],
    beta: float,
    length: float,
) -> Float[Array, "T n"]:
    """The exact solution of periodic advection, u(x, t) = u0((x - βt) mod length)."""
    x, ts = jnp.asarray(x), jnp.asarray(ts)
    start = x[0]
    return u0(start + jnp.mod(x[None, :] - beta * ts[:, None] - start, length))


def solve_batch(
    rhs: Callable[[Array], Array],
    u0s: Float[ArrayLike, "count n"],
    ts: Float[ArrayLike, " T"],
    **kwargs,
) -> Float[Array, "count T n"]:
    """`solve` from each row of `u0s` (vmapped and jitted: one compilation, one batched solve).
    Keyword arguments go to `solve`. Returns the fields at every time of `ts`, per initial field.
    """
    u0s = jnp.asarray(u0s)
    if u0s.ndim != 2:
        raise ValueError(f"u0s must have shape (count, n), got {u0s.shape}")
    ts = jnp.asarray(ts)
    return _solve_batch(rhs, u0s, ts, tuple(sorted(kwargs.items())))


@eqx.filter_jit  # module level: the same rhs, shapes and options compile once
def _solve_batch(rhs, u0s, ts, options):
    return jax.vmap(lambda u0: solve(rhs, u0, ts, **dict(options)))(u0s)


def random_cosine_fields(
    key: PRNGKeyArray,
    count: int,
    n: int,
    length: float = 1.0,
    *,
    modes: int = 8,
    decay: float = 1.5,
    amplitude: float = 0.6,
    mean_range: float = 0.5,
) -> tuple[Float[Array, "count n"], Float[Array, " count"]]:
    """Smooth random fields on the n cell centres of [0, length] (`cell_centres`), each with its
    own mean: returns `(fields, means)` with

        u(x) = m + amplitude Σ_{k=1}^{modes} a_k k^(-decay) cos(kπx / length),

    a_k ~ N(0, 1) and m ~ U(-mean_range, mean_range), drawn independently per field. Each cosine
    has zero slope at both ends (insulated boundaries) and, for 1 <= k < 2n, sums to exactly
    zero over the cell centres, so the grid mean of u is m: the total dx Σ u = m · length differs
    from field to field.
    """
    count, modes = positive_int("count", count), positive_int("modes", modes)
    n = positive_int("n", n, 4)
    if modes >= 2 * n:
        raise ValueError(f"modes must be below 2n = {2 * n} (aliasing), got {modes}")
    mean_range = non_negative("mean_range", mean_range)
    x, _ = cell_centres(n, length)
    k_amplitude, k_mean = jr.split(key)
    ks = jnp.arange(1, modes + 1)
    coefficients = jr.normal(k_amplitude, (count, modes)) / ks**decay
    means = jr.uniform(k_mean, (count,), minval=-mean_range, maxval=mean_range)
    waves = jnp.cos(jnp.pi * ks[:, None] * x[None, :] / length)
    return means[:, None] + amplitude * coefficients @ waves, means
