"""Hamiltonian mechanics by automatic differentiation, integrated with Diffrax.

A state is x = (q, p) of shape `(2n,)`; a Hamiltonian is a scalar function `H(x)`. Hamilton's
equations read x' = J ∇H(x) with J = [[0, I], [-I, 0]].

- `hamiltonian_vector_field(H)`: the function x -> J ∇H(x).
- `poisson_bracket(F, G)`: the function x -> {F, G}(x) = ∇F(x)ᵀ J ∇G(x), so that along the flow
  of H, dC/dt = {C, H}.
- `flow(C, x, tau)`: the flow of the vector field of C for a "time" tau: the one-parameter
  symmetry that C generates (Noether).
- `integrate(H, x0, ts, solver=...)`: trajectories with any Diffrax solver; symplectic solvers
  (`StormerVerlet`, Diffrax's `SemiImplicitEuler`) need a `Separable` Hamiltonian T(p) + V(q).
- `integrate_many(H, x0s, ts)`: the same, vmapped over a batch of initial states.
- `StormerVerlet`: the second-order symplectic leapfrog, written as a Diffrax solver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from equinox.internal import ω
from jaxtyping import Array, ArrayLike, Float, Scalar

from ._checks import require
from .ode import Autonomous, apply_symplectic, check_times, solve_ode, symplectic_matrix

__all__ = [
    "Hamiltonian",
    "HamiltonianVectorField",
    "SYMPLECTIC_SOLVERS",
    "Separable",
    "StormerVerlet",
    "hamiltonian_vector_field",
    "integrate",
    "integrate_field",
    "integrate_many",
    "flow",
    "poisson_bracket",
    "symplectic_matrix",
]

Hamiltonian = Callable[[Float[Array, " dim"]], Scalar]


def _check_state(x: Array, name: str = "x") -> Array:
    x = jnp.asarray(x)
    if x.ndim != 1 or x.shape[0] % 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a phase-space state (q, p) of shape (2n,), got {x.shape}")
    return x


def _check_initial(x: Array, name: str = "x0") -> Array:
    """A state to integrate from: shape (2n,) and, when concrete, finite (a NaN would otherwise
    surface as the solver's "maximum number of steps")."""
    x = _check_state(x, name)
    return require(x, jnp.isfinite(x), f"{name} must be finite")


class HamiltonianVectorField(eqx.Module):
    """The vector field x -> J ∇H(x) of a Hamiltonian H.

    A Module rather than a closure, so that two fields of the same H compare equal and Diffrax
    reuses its compiled solve instead of compiling again.
    """

    hamiltonian: Hamiltonian

    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        return apply_symplectic(jax.grad(self.hamiltonian)(_check_state(x)))


def hamiltonian_vector_field(H: Hamiltonian) -> HamiltonianVectorField:
    """x -> J ∇H(x): Hamilton's equations q' = ∂H/∂p, p' = -∂H/∂q."""
    return HamiltonianVectorField(H)


class _Gradient(eqx.Module):
    """(t, y, args) -> sign · ∇f(y): the two halves of a separable Hamiltonian's field."""

    function: Callable[[Array], Scalar]
    sign: float = eqx.field(static=True)

    def __call__(self, t, y, args):
        return self.sign * jax.grad(self.function)(y)


def poisson_bracket(F: Hamiltonian, G: Hamiltonian) -> Callable[[Array], Scalar]:
    """x -> {F, G}(x) = ∇F(x)ᵀ J ∇G(x) = Σ_i ∂F/∂q_i ∂G/∂p_i - ∂F/∂p_i ∂G/∂q_i.

    Antisymmetric and bilinear, with the Leibniz rule and the Jacobi identity. Along the flow
    of H, any quantity C changes at the rate dC/dt = {C, H}: it is conserved iff {C, H} = 0.
    """
    grad_f, grad_g = jax.grad(F), jax.grad(G)

    def bracket(x):
        x = _check_state(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            raise ValueError(f"x must be a floating-point state, got dtype {x.dtype}")
        return jnp.dot(grad_f(x), apply_symplectic(grad_g(x)))

    return bracket


class Separable(eqx.Module):
    """A separable Hamiltonian H(q, p) = T(p) + V(q), which explicit symplectic solvers need.

    `kinetic(p)` and `potential(q)` take the `(n,)` momenta and positions.
    """

    kinetic: Callable[[Array], Scalar]
    potential: Callable[[Array], Scalar]

    def __call__(self, x: Float[Array, " dim"]) -> Scalar:
        x = _check_state(x)
        n = x.shape[0] // 2
        return self.kinetic(x[n:]) + self.potential(x[:n])


class StormerVerlet(diffrax.AbstractSolver):
    """Störmer–Verlet (leapfrog), a second-order symplectic method, as a Diffrax solver.

    Takes the same terms as `diffrax.SemiImplicitEuler`: `(term_q, term_p)` with
    dq/dt = term_q(t, p) and dp/dt = term_p(t, q), and `y0 = (q0, p0)`. One step of size h:

        p½ = p + h/2 · g(q);   q' = q + h · f(p½);   p' = p½ + h/2 · g(q').

    Fixed steps only (no error estimate); linear interpolation between steps.
    """

    term_structure: ClassVar = (diffrax.AbstractTerm, diffrax.AbstractTerm)
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        term_q, term_p = terms
        q0, p0 = y0
        tm = t0 + 0.5 * (t1 - t0)
        half_1 = term_p.contr(t0, tm)
        full = term_q.contr(t0, t1)
        half_2 = term_p.contr(tm, t1)
        p_half = (p0**ω + term_p.vf_prod(t0, q0, args, half_1) ** ω).ω
        q1 = (q0**ω + term_q.vf_prod(tm, p_half, args, full) ** ω).ω
        p1 = (p_half**ω + term_p.vf_prod(t1, q1, args, half_2) ** ω).ω
        y1 = (q1, p1)
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        term_q, term_p = terms
        q0, p0 = y0
        return term_q.vf(t0, p0, args), term_p.vf(t0, q0, args)


SYMPLECTIC_SOLVERS = (StormerVerlet, diffrax.SemiImplicitEuler)


def integrate_field(
    field: Callable[[Array], Array],
    x0: Float[ArrayLike, " dim"],
    ts: Float[ArrayLike, " T"],
    **kwargs,
) -> Float[Array, "T dim"]:
    """Integrate the phase-space field x' = field(x) from x0 = x(ts[0]); states at `ts`.
    Keyword arguments (`solver`, `dt0`, `rtol`, `atol`, `max_steps`) as in `solve_ode`."""
    return solve_ode(field, _check_initial(x0, "x0"), ts, **kwargs)


def integrate(
    H: Hamiltonian,
    x0: Float[ArrayLike, " dim"],
    ts: Float[ArrayLike, " T"],
    *,
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    max_steps: int = 100_000,
) -> Float[Array, "T dim"]:
    """Trajectory of Hamilton's equations for H from x0 = x(ts[0]), saved at `ts`.

    Any Diffrax ODE solver works (Tsit5 adaptive by default). A symplectic solver
    (`StormerVerlet`, `diffrax.SemiImplicitEuler`) needs a fixed `dt0` and a `Separable` H, whose
    two halves it updates in turn; for a general H it raises `ValueError`.
    """
    if solver is None or not isinstance(solver, SYMPLECTIC_SOLVERS):
        return integrate_field(
            hamiltonian_vector_field(H),
            x0,
            ts,
            solver=solver,
            dt0=dt0,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
        )
    if not isinstance(H, Separable):
        raise ValueError(
            f"{type(solver).__name__} is an explicit symplectic solver for separable Hamiltonians "
            "T(p) + V(q): pass H as mechanics.Separable(kinetic, potential)"
        )
    if dt0 is None or not dt0 > 0:
        raise ValueError(f"{type(solver).__name__} takes fixed steps: pass dt0 > 0, got {dt0!r}")
    x0 = _check_initial(x0, "x0")
    ts = check_times(ts)
    n = x0.shape[0] // 2
    terms = (
        diffrax.ODETerm(_Gradient(H.kinetic, 1.0)),
        diffrax.ODETerm(_Gradient(H.potential, -1.0)),
    )
    sol = diffrax.diffeqsolve(
        terms,
        solver,
        ts[0],
        ts[-1],
        dt0,
        (x0[:n], x0[n:]),
        saveat=diffrax.SaveAt(ts=ts),
        max_steps=max_steps,
    )
    return jnp.concatenate(sol.ys, axis=-1)


@eqx.filter_jit
def integrate_many(
    H: Hamiltonian,
    x0: Float[ArrayLike, "num dim"],
    ts: Float[ArrayLike, " T"],
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> Float[Array, "num T dim"]:
    """`integrate` vmapped over initial states (adaptive Tsit5), compiled once per Hamiltonian
    and shape."""
    return jax.vmap(lambda x: integrate(H, x, ts, rtol=rtol, atol=atol))(jnp.asarray(x0))


def flow(
    C: Hamiltonian,
    x: Float[ArrayLike, " dim"],
    tau: float | Scalar,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> Float[Array, " dim"]:
    """Φ_C^τ(x): move x along the Hamiltonian vector field J ∇C for a "time" tau (any sign).

    This is the one-parameter group of transformations generated by C. By Noether's theorem it
    is a symmetry of H (H ∘ Φ_C^τ = H) exactly when C is conserved by H ({C, H} = 0).
    Computed as the solution at s = 1 of dy/ds = tau · J ∇C(y), so tau may be traced (vmap, jit).
    """
    x = _check_initial(x, "x")
    field = Autonomous(hamiltonian_vector_field(C), jnp.asarray(tau, dtype=x.dtype))
    return integrate_field(field, x, jnp.array([0.0, 1.0]), rtol=rtol, atol=atol)[-1]
