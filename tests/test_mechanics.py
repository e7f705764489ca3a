import diffrax
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given, settings

from conftest import bad_input, float64
from conserved import diagnostics, mechanics, systems

seeds = st.integers(0, 2**31 - 1)


def random_polynomial(key, dof=2, degree=3):
    """A random polynomial of phase space with monomials up to `degree`."""
    k1, k2 = jr.split(key)
    powers = jr.randint(k1, (6, 2 * dof), 0, degree)
    coeffs = jr.normal(k2, (6,))

    def poly(x):
        return jnp.sum(coeffs * jnp.prod(x[None, :] ** powers, axis=1))

    return poly


@settings(max_examples=15, deadline=None)
@given(seed=seeds)
def test_bracket_identities_on_random_polynomials(seed):
    with float64():
        kf, kg, kh, kx, ka = jr.split(jr.key(seed), 5)
        F, G, K = (random_polynomial(k) for k in (kf, kg, kh))
        x = jr.normal(kx, (4,))
        a, b = jr.normal(ka, (2,))
        pb = mechanics.poisson_bracket
        # antisymmetry
        np.testing.assert_allclose(pb(F, G)(x), -pb(G, F)(x), rtol=1e-10, atol=1e-10)
        # bilinearity
        lin = lambda y: a * F(y) + b * K(y)  # noqa: E731
        np.testing.assert_allclose(
            pb(lin, G)(x), a * pb(F, G)(x) + b * pb(K, G)(x), rtol=1e-9, atol=1e-9
        )
        # Leibniz: {F K, G} = F {K, G} + K {F, G}
        prod = lambda y: F(y) * K(y)  # noqa: E731
        np.testing.assert_allclose(
            pb(prod, G)(x), F(x) * pb(K, G)(x) + K(x) * pb(F, G)(x), rtol=1e-9, atol=1e-8
        )
        # Jacobi: {F, {G, K}} + {G, {K, F}} + {K, {F, G}} = 0
        jacobi = pb(F, pb(G, K))(x) + pb(G, pb(K, F))(x) + pb(K, pb(F, G))(x)
        scale = abs(pb(F, pb(G, K))(x)) + abs(pb(K, pb(F, G))(x)) + 1.0
        assert abs(float(jacobi)) < 1e-9 * scale


def test_canonical_brackets():
    q = lambda x: x[0]  # noqa: E731
    p = lambda x: x[1]  # noqa: E731
    x = jnp.array([0.3, -0.7])
    assert float(mechanics.poisson_bracket(q, p)(x)) == 1.0
    field = mechanics.hamiltonian_vector_field(lambda x: 0.5 * x[1] ** 2 + jnp.cos(x[0]))
    np.testing.assert_allclose(field(x), [x[1], jnp.sin(x[0])], rtol=1e-6)


ALL_SYSTEMS = {
    "oscillators(1)": lambda: systems.harmonic_oscillators(1),
    "oscillators(3)": lambda: systems.harmonic_oscillators(3),
    "pendulum": systems.pendulum,
    "kepler": systems.kepler,
    "2 bodies 2-D": lambda: systems.n_body(2, 2),
    "3 bodies 2-D": lambda: systems.n_body(3, 2, masses=jnp.array([1.0, 2.0, 0.5])),
    "3 bodies 3-D": lambda: systems.n_body(3, 3),
}


@pytest.mark.parametrize("name", sorted(ALL_SYSTEMS))
def test_every_listed_quantity_commutes_with_h(name):
    with float64():
        system = ALL_SYSTEMS[name]()
        states = system.sample(jr.key(0), 16)
        for cname, c in system.conserved.items():
            brackets = jax.vmap(mechanics.poisson_bracket(c, system.hamiltonian))(states)
            assert float(jnp.max(jnp.abs(brackets))) < 1e-10, (name, cname)


def test_oscillator_count_and_pendulum_has_no_momentum():
    for n in (1, 2, 3):
        assert len(systems.harmonic_oscillators(n).conserved) == n * n + 1
    with float64():
        pend = systems.pendulum()
        states = pend.sample(jr.key(0), 8)
        momentum = lambda x: x[1]  # noqa: E731
        brackets = jax.vmap(mechanics.poisson_bracket(momentum, pend.hamiltonian))(states)
        assert float(jnp.max(jnp.abs(brackets))) > 0.1


@pytest.mark.parametrize("name", ["oscillators(3)", "kepler", "2 bodies 2-D"])
def test_flow_of_a_conserved_quantity_leaves_h_invariant(name):
    with float64():
        system = ALL_SYSTEMS[name]()
        x = system.sample(jr.key(1), 3)
        for cname, c in list(system.conserved.items())[1:5]:  # the energy is first
            moved = jax.vmap(lambda y, c=c: mechanics.flow(c, y, 0.7))(x)
            h0 = jax.vmap(system.hamiltonian)(x)
            h1 = jax.vmap(system.hamiltonian)(moved)
            np.testing.assert_allclose(h1, h0, rtol=1e-8, atol=1e-10, err_msg=cname)
        # a quantity that is not conserved moves H
        not_conserved = lambda y: y[0] * y[system.dof]  # noqa: E731  (q_1 p_1: a squeeze)
        moved = mechanics.flow(not_conserved, x[0], 0.7)
        assert abs(float(system.hamiltonian(moved) - system.hamiltonian(x[0]))) > 1e-3


def test_flow_is_a_one_parameter_group():
    with float64():
        c = lambda x: x[0] * x[3] - x[1] * x[2]  # noqa: E731  (angular momentum)
        x = jnp.array([1.0, 0.5, -0.2, 0.3])
        np.testing.assert_allclose(
            mechanics.flow(c, mechanics.flow(c, x, 0.4), 0.5), mechanics.flow(c, x, 0.9), atol=1e-9
        )
        np.testing.assert_allclose(mechanics.flow(c, mechanics.flow(c, x, 0.4), -0.4), x, atol=1e-9)


def _energy_error(solver, steps=10_000, h=0.1):
    with float64():
        system = systems.pendulum()
        x0 = jnp.array([1.5, 0.0])
        ts = jnp.linspace(0.0, steps * h, 201)
        ys = mechanics.integrate(
            system.hamiltonian, x0, ts, solver=solver, dt0=h, max_steps=steps + 10
        )
        drift = diagnostics.drift(diagnostics.along(system.hamiltonian, ys))
        return np.asarray(ts), np.asarray(drift)


def test_symplectic_solver_keeps_energy_bounded_over_1e4_steps():
    ts, drift_sv = _energy_error(mechanics.StormerVerlet())
    _, drift_rk = _energy_error(diffrax.Heun())
    late, early = slice(100, None), slice(1, 100)
    # Störmer–Verlet: the error in the second half is no larger than in the first half
    assert float(drift_sv[late].max()) < 1.5 * float(drift_sv[early].max())
    assert float(drift_sv.max()) < 0.05  # O(h²) with h = 0.1 at amplitude 1.5 rad
    # Heun: the error keeps growing
    assert float(drift_rk[late].max()) > 1.8 * float(drift_rk[early].max())
    assert diagnostics.growth_exponent(ts, drift_rk) > 0.8


def test_stormer_verlet_is_second_order_and_semi_implicit_first():
    with float64():
        H = systems.harmonic_oscillators(1).hamiltonian
        x0 = jnp.array([1.0, 0.0])
        ts = jnp.array([0.0, 1.0])
        exact = jnp.array([jnp.cos(1.0), -jnp.sin(1.0)])
        for solver, order in [(mechanics.StormerVerlet(), 2), (diffrax.SemiImplicitEuler(), 1)]:
            errs = [
                float(
                    jnp.linalg.norm(
                        mechanics.integrate(H, x0, ts, solver=solver, dt0=h)[-1] - exact
                    )
                )
                for h in (0.02, 0.01)
            ]
            assert np.log2(errs[0] / errs[1]) == pytest.approx(order, abs=0.15)


def test_integrate_rejects_bad_input():
    H = systems.pendulum().hamiltonian
    with bad_input(match=r"shape \(2n,\)"):
        mechanics.integrate(H, jnp.ones(3), jnp.linspace(0, 1, 5))
    with bad_input(match="strictly increasing"):
        mechanics.integrate(H, jnp.ones(2), jnp.array([0.0, 1.0, 0.5]))
    with bad_input(match="dt0"):
        mechanics.integrate(H, jnp.ones(2), jnp.linspace(0, 1, 5), solver=mechanics.StormerVerlet())
    with bad_input(match="Separable"):
        mechanics.integrate(
            lambda x: jnp.sum(x**2),
            jnp.ones(2),
            jnp.linspace(0, 1, 5),
            solver=mechanics.StormerVerlet(),
            dt0=0.1,
        )
    with bad_input(match="masses"):
        systems.n_body(2, 2, masses=jnp.array([1.0, -1.0]))
    with bad_input(match="dim"):
        systems.n_body(2, 4)


def test_trajectories_and_noise():
    system = systems.harmonic_oscillators(2)
    ts = jnp.linspace(0, 2, 11)
    clean = systems.trajectories(system, jr.key(0), 4, ts)
    noisy = systems.trajectories(system, jr.key(0), 4, ts, noise=0.1)
    assert clean.shape == (4, 11, 4)
    # exact solution of unit-frequency oscillators: rotation in each (q_i, p_i) plane
    q0, p0 = clean[:, 0, :2], clean[:, 0, 2:]
    t = ts[-1]
    np.testing.assert_allclose(clean[:, -1, :2], q0 * jnp.cos(t) + p0 * jnp.sin(t), atol=1e-4)
    residual = noisy - clean
    assert 0.07 < float(jnp.std(residual)) < 0.13
    states, derivs = systems.derivative_dataset(system, jr.key(1), 3, ts)
    assert states.shape == derivs.shape == (33, 4)
