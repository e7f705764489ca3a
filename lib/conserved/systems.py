"""Reference Hamiltonian systems, their known conserved quantities, and data sets of trajectories.

Each constructor returns a `System`: the Hamiltonian (a `mechanics.Separable`, so symplectic
solvers apply), the number of degrees of freedom, the known conserved quantities by name, and a
sampler of initial states.

| system | state | conserved quantities |
|---|---|---|
| `harmonic_oscillators(n)` | (q, p) ∈ R^{2n} | the n² quadratics of u(n) (energy among them) |
| `pendulum()` | (θ, p_θ) | energy only |
| `kepler()` | one body in R², pulled to the origin | energy, angular momentum, Runge–Lenz |
| `n_body(n, dim)` | n bodies in R^dim | energy, total momentum, angular momentum |

`n_body_quadratic_invariants(n, dim)` lists every quadratic conserved quantity of the n-body
problem (7 in 2-D), the symmetry group that Noether's Razor should find.

Data sets: `trajectories(system, key, num, ts, ...)` integrates random initial states with
Diffrax (vmapped) and can add Gaussian noise; `derivative_dataset` returns states with their
exact time derivatives, the targets of Hamiltonian-network training.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, Scalar

from . import mechanics
from ._checks import non_negative
from ._checks import positive as _positive
from ._checks import positive_int as _positive_int
from ._sharing import shared
from .symmetry import u_basis

__all__ = [
    "System",
    "oscillator_conserved_matrices",
    "harmonic_oscillators",
    "pendulum",
    "kepler",
    "n_body",
    "n_body_quadratic_invariants",
    "scattered_n_body_states",
    "trajectories",
    "derivative_dataset",
]


class System(eqx.Module):
    """A Hamiltonian system with known conserved quantities.

    - `name`: a short label.
    - `hamiltonian`: H(x) for x = (q, p) of shape `(2·dof,)`, a `mechanics.Separable`.
    - `dof`: degrees of freedom n.
    - `conserved`: name -> scalar function of x, each with {C, H} = 0 (energy included); a
      pytree field (not static: a dict is not hashable), so a `System` passes through
      `eqx.filter_jit` as an argument.
    - `sample`: `sample(key, num) -> (num, 2·dof)` initial states.
    """

    name: str = eqx.field(static=True)
    hamiltonian: mechanics.Separable
    dof: int = eqx.field(static=True)
    conserved: dict[str, Callable[[Array], Scalar]]
    sample: Callable[[PRNGKeyArray, int], Array] = eqx.field(static=True)

    def conserved_values(self, x: Float[Array, "... dim"]) -> dict[str, Array]:
        """Every known conserved quantity evaluated on states `(..., 2n)`."""
        x = jnp.asarray(x)
        flat = x.reshape(-1, x.shape[-1])
        return {name: jax.vmap(c)(flat).reshape(x.shape[:-1]) for name, c in self.conserved.items()}


# --------------------------------------------------------------------------------------------
# Harmonic oscillators: U(n) symmetry, n² quadratic conserved quantities
# --------------------------------------------------------------------------------------------


def oscillator_conserved_matrices(n: int) -> Float[Array, "d dim dim"]:
    """Symmetric matrices A_k with C_k(x) = ½ xᵀ A_k x conserved by H = ½|x|².

    A_k = -J M_k for the u(n) generators M_k (`symmetry.u_basis`): the Hamiltonian vector field
    of C_k is J A_k x = M_k x, so the flow of C_k is exp(τ M_k), a unitary transformation.
    """
    n = _positive_int("n", n)
    j = mechanics.symplectic_matrix(n)
    return -j @ u_basis(n)


@shared
def harmonic_oscillators(n: int = 1, *, scale: float = 1.0) -> System:
    """n identical uncoupled oscillators, H = ½ Σ (q_i² + p_i²).

    In z = q + ip, H = ½|z|², invariant under U(n): the n² quadratics ½ xᵀ A_k x of
    `oscillator_conserved_matrices` are conserved (the individual energies, and the
    "angular momenta" and "cross energies" between pairs). Initial states ~ N(0, scale² I).
    """
    n = _positive_int("n", n)
    scale = _positive("scale", scale)
    H = mechanics.Separable(lambda p: 0.5 * jnp.sum(p**2), lambda q: 0.5 * jnp.sum(q**2))
    matrices = oscillator_conserved_matrices(n)
    conserved = {"energy": H}
    for k in range(n * n):
        conserved[f"C{k}"] = lambda x, a=matrices[k]: 0.5 * x @ a @ x

    def sample(key, num):
        return scale * jr.normal(key, (num, 2 * n))

    return System(f"{n} harmonic oscillator{'s' if n > 1 else ''}", H, n, conserved, sample)


# --------------------------------------------------------------------------------------------
# Pendulum: energy only
# --------------------------------------------------------------------------------------------


@shared
def pendulum(*, gravity: float = 1.0, length: float = 1.0, mass: float = 1.0) -> System:
    """A rigid pendulum, H = p²/(2 m l²) - m g l cos θ. Only the energy is conserved.

    Initial states: θ uniform in (-2π/3, 2π/3), p uniform in (-1, 1) (mostly libration).
    """
    g, length, m = (
        _positive("gravity", gravity),
        _positive("length", length),
        _positive("mass", mass),
    )
    H = mechanics.Separable(
        lambda p: jnp.sum(p**2) / (2 * m * length**2),
        lambda q: -m * g * length * jnp.sum(jnp.cos(q)),
    )

    def sample(key, num):
        kq, kp = jr.split(key)
        q = jr.uniform(kq, (num, 1), minval=-2 * jnp.pi / 3, maxval=2 * jnp.pi / 3)
        p = jr.uniform(kp, (num, 1), minval=-1.0, maxval=1.0)
        return jnp.concatenate([q, p], axis=1)

    return System("pendulum", H, 1, {"energy": H}, sample)


# --------------------------------------------------------------------------------------------
# Gravitation: Kepler problem and n bodies
# --------------------------------------------------------------------------------------------


def _cross2(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


@shared
def kepler(*, mu: float = 1.0) -> System:
    """One body in the plane attracted to the origin, H = |p|²/2 - mu/|q|.

    Conserved: energy, angular momentum L = q × p, and the Laplace–Runge–Lenz vector
    A = p × L ẑ - mu q/|q| (two components), whose conservation closes the orbits.
    Initial states: bound, eccentric orbits with radius in (0.8, 1.5).
    """
    mu = _positive("mu", mu)
    H = mechanics.Separable(lambda p: 0.5 * jnp.sum(p**2), lambda q: -mu / jnp.sqrt(jnp.sum(q**2)))

    def angular(x):
        return _cross2(x[:2], x[2:])

    def runge_lenz(x, i):
        q, p = x[:2], x[2:]
        ell = _cross2(q, p)
        a = jnp.array([p[1] * ell, -p[0] * ell]) - mu * q / jnp.sqrt(jnp.sum(q**2))
        return a[i]

    def sample(key, num):
        kr, ka, kv = jr.split(key, 3)
        r = jr.uniform(kr, (num,), minval=0.8, maxval=1.5)
        angle = jr.uniform(ka, (num,), minval=0, maxval=2 * jnp.pi)
        speed = jnp.sqrt(mu / r) * jr.uniform(kv, (num,), minval=0.8, maxval=1.1)
        q = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)], 1)
        p = jnp.stack([-speed * jnp.sin(angle), speed * jnp.cos(angle)], 1)
        return jnp.concatenate([q, p], axis=1)

    conserved = {
        "energy": H,
        "angular momentum": angular,
        "Runge–Lenz x": lambda x: runge_lenz(x, 0),
        "Runge–Lenz y": lambda x: runge_lenz(x, 1),
    }
    return System("Kepler problem", H, 2, conserved, sample)


def _check_bodies(n, dim, masses):
    """Validated (n >= 2, dim in {2, 3}, masses: n positive numbers, ones by default)."""
    n = _positive_int("n", n, 2)
    dim = _positive_int("dim", dim, 2)
    if dim > 3:
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    masses = jnp.ones(n) if masses is None else jnp.asarray(masses, dtype=float)
    if masses.shape != (n,) or not bool(jnp.all(masses > 0)):
        raise ValueError(f"masses must be {n} positive numbers, got {masses}")
    return n, dim, masses


@shared
def n_body(
    n: int = 2,
    dim: int = 2,
    *,
    masses: Float[Array, " n"] | None = None,
    gravity: float = 1.0,
    softening: float = 0.0,
) -> System:
    """n gravitating bodies in R^dim, H = Σ |p_i|²/(2 m_i) - Σ_{i<j} G m_i m_j / r_ij.

    State x = (q, p): positions then momenta, each flattened body by body (length n·dim).
    r_ij = sqrt(|q_i - q_j|² + softening²). Conserved: energy, the dim components of the total
    momentum, and the angular momentum (one component in 2-D, three in 3-D).

    Initial states: for n = 2, a bound pair with random separation, orientation and centre of
    mass at rest at a random place; otherwise positions ~ N(0, I) and momenta ~ N(0, 0.25 I)
    with the total momentum removed.
    """
    n, dim, masses = _check_bodies(n, dim, masses)
    gravity = _positive("gravity", gravity)
    if softening < 0:
        raise ValueError(f"softening must be >= 0, got {softening!r}")
    i, j = jnp.triu_indices(n, 1)

    def kinetic(p):
        p = p.reshape(n, dim)
        return jnp.sum(jnp.sum(p**2, axis=1) / (2 * masses))

    def potential(q):
        q = q.reshape(n, dim)
        r = jnp.sqrt(jnp.sum((q[i] - q[j]) ** 2, axis=1) + softening**2)
        return -gravity * jnp.sum(masses[i] * masses[j] / r)

    H = mechanics.Separable(kinetic, potential)
    half = n * dim
    conserved: dict[str, Callable] = {"energy": H}
    for d in range(dim):
        conserved[f"momentum {'xyz'[d]}"] = lambda x, d=d: jnp.sum(x[half:].reshape(n, dim)[:, d])
    if dim == 2:
        conserved["angular momentum"] = lambda x: jnp.sum(
            _cross2(x[:half].reshape(n, 2), x[half:].reshape(n, 2))
        )
    else:
        for d in range(3):
            conserved[f"angular momentum {'xyz'[d]}"] = lambda x, d=d: jnp.sum(
                jnp.cross(x[:half].reshape(n, 3), x[half:].reshape(n, 3))[:, d]
            )

    def sample(key, num):
        if n == 2:
            return _sample_pair(key, num, dim, masses, gravity)
        kq, kp = jr.split(key)
        q = jr.normal(kq, (num, n, dim))
        p = 0.5 * jr.normal(kp, (num, n, dim))
        p = p - masses[:, None] * jnp.sum(p, axis=1, keepdims=True) / jnp.sum(masses)
        return jnp.concatenate([q.reshape(num, -1), p.reshape(num, -1)], axis=1)

    return System(f"{n} bodies in {dim}-D", H, n * dim, conserved, sample)


def n_body_quadratic_invariants(
    n: int = 2, dim: int = 2, *, masses: Float[Array, " n"] | None = None
) -> dict[str, Callable[[Array], Scalar]]:
    """Every quadratic conserved quantity of the n-body problem in R^dim (van der Ouderaa et al.,
    App. B.3), for the state layout of `n_body`:

    - the total momentum components P_d (translations);
    - the total angular momentum Σ_i q_i ∧ p_i (rotations about the origin);
    - the centre-of-mass angular momentum q_COM ∧ P (rotations about the centre of mass);
    - the products P_d P_e, d ≤ e (momentum-dependent translations).

    In 2-D that is 2 + 1 + 1 + 3 = 7 (in 3-D, 15): the quadratics whose flows generate a group
    that contains SE(dim) and is larger, with larger orbits (for two bodies in 2-D the seven
    flows span 4 directions at a generic state, SE(2)'s three span 3).
    """
    n, dim, masses = _check_bodies(n, dim, masses)
    half = n * dim

    def q_p(x):
        return x[:half].reshape(n, dim), x[half:].reshape(n, dim)

    def total(x):
        return jnp.sum(q_p(x)[1], axis=0)

    def centre(x):
        return masses @ q_p(x)[0] / jnp.sum(masses)

    def wedge(a, b, d, e):
        return a[..., d] * b[..., e] - a[..., e] * b[..., d]

    axes = "xyz"
    out: dict[str, Callable[[Array], Scalar]] = {}
    for d in range(dim):
        out[f"P{axes[d]}"] = lambda x, d=d: total(x)[d]
    for d in range(dim):
        for e in range(d + 1, dim):
            out[f"L{axes[d]}{axes[e]}"] = lambda x, d=d, e=e: jnp.sum(wedge(*q_p(x), d, e))
            out[f"L{axes[d]}{axes[e]} of COM"] = lambda x, d=d, e=e: wedge(
                centre(x), total(x), d, e
            )
    for d in range(dim):
        for e in range(d, dim):
            out[f"P{axes[d]}P{axes[e]}"] = lambda x, d=d, e=e: total(x)[d] * total(x)[e]
    return out


def scattered_n_body_states(
    key: PRNGKeyArray,
    num: int,
    n: int = 2,
    dim: int = 2,
    *,
    spread: float = 1.0,
    momentum: float = 0.5,
    centre_scale: float = 3.0,
    centre_shift: Float[Array, " dim"] | None = None,
) -> Float[Array, "num state"]:
    """n-body states scattered over the plane (or space), in the layout of `n_body`:
    positions c + N(0, spread² I) with one centre c ~ N(centre_shift, centre_scale² I) per state,
    momenta ~ N(0, momentum² I). The random centres expose the translation symmetry in data."""
    num = _positive_int("num", num)
    n = _positive_int("n", n, 2)
    dim = _positive_int("dim", dim, 2)
    for name, value in (("spread", spread), ("momentum", momentum)):
        _positive(name, value)
    if centre_scale < 0:
        raise ValueError(f"centre_scale must be >= 0, got {centre_scale!r}")
    shift = jnp.zeros(dim) if centre_shift is None else jnp.asarray(centre_shift, dtype=float)
    if shift.shape != (dim,):
        raise ValueError(f"centre_shift must have shape ({dim},), got {shift.shape}")
    kc, kq, kp = jr.split(key, 3)
    centre = shift + centre_scale * jr.normal(kc, (num, 1, dim))
    q = centre + spread * jr.normal(kq, (num, n, dim))
    p = momentum * jr.normal(kp, (num, n, dim))
    return jnp.concatenate([q.reshape(num, -1), p.reshape(num, -1)], axis=1)


def _sample_pair(key, num, dim, masses, gravity):
    """Bound two-body states: separation r ∈ (0.8, 1.5), near-circular relative speed, random
    orientation, centre of mass at rest at a point ~ N(0, 0.25 I)."""
    kr, ko, kv, kc = jr.split(key, 4)
    m1, m2 = masses
    total = m1 + m2
    r = jr.uniform(kr, (num,), minval=0.8, maxval=1.5)
    direction = jr.normal(ko, (num, dim))
    direction = direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
    # a unit vector orthogonal to the separation (in the plane of the first two axes for 3-D)
    ortho = jnp.stack([-direction[:, 1], direction[:, 0]] + [jnp.zeros(num)] * (dim - 2), 1)
    ortho = ortho / jnp.linalg.norm(ortho, axis=1, keepdims=True)
    speed = jnp.sqrt(gravity * total / r) * jr.uniform(kv, (num,), minval=0.8, maxval=1.05)
    rel_q = r[:, None] * direction
    rel_v = speed[:, None] * ortho
    centre = 0.5 * jr.normal(kc, (num, dim))
    q1 = centre + (m2 / total) * rel_q
    q2 = centre - (m1 / total) * rel_q
    mu = m1 * m2 / total
    p1 = mu * rel_v
    p2 = -mu * rel_v
    return jnp.concatenate([q1, q2, p1, p2], axis=1)


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------


def trajectories(
    system: System,
    key: PRNGKeyArray,
    num: int,
    ts: Float[Array, " T"],
    *,
    noise: float = 0.0,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> Float[Array, "num T dim"]:
    """`num` trajectories from random initial states, saved at `ts` (adaptive Tsit5, vmapped).

    `noise > 0` adds independent N(0, noise²) noise to every saved state (not to the dynamics).
    """
    num = _positive_int("num", num)
    noise = non_negative("noise", noise)
    init_key, noise_key = jr.split(key)
    x0 = system.sample(init_key, num)
    ys = mechanics.integrate_many(system.hamiltonian, x0, jnp.asarray(ts), rtol=rtol, atol=atol)
    if noise > 0:
        ys = ys + noise * jr.normal(noise_key, ys.shape)
    return ys


def derivative_dataset(
    system: System, key: PRNGKeyArray, num: int, ts: Float[Array, " T"], *, noise: float = 0.0
) -> tuple[Float[Array, "N dim"], Float[Array, "N dim"]]:
    """States along `num` random trajectories, flattened to `(num·T, 2n)`, with their exact time
    derivatives J ∇H(x) as targets (noise, if any, is added to the states only)."""
    noise = non_negative("noise", noise)
    traj_key, noise_key = jr.split(key)
    states = trajectories(system, traj_key, num, ts).reshape(-1, 2 * system.dof)
    derivatives = jax.vmap(mechanics.hamiltonian_vector_field(system.hamiltonian))(states)
    if noise > 0:
        states = states + noise * jr.normal(noise_key, states.shape)
    return states, derivatives
