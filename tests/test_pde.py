import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import bad_input, float64
from conserved import pde
from conserved.projection import linear_integral, quadratic_integral


def test_advection_matches_its_exact_translation():
    with float64():
        x, dx = pde.periodic_grid(256, 2.0)
        u0 = lambda z: jnp.sin(2 * jnp.pi * z + 0.025) + 0.3 * jnp.cos(4 * jnp.pi * z)  # noqa: E731
        ts = jnp.linspace(0.0, 0.99, 100)
        numeric = pde.solve(pde.advection_rhs(0.1, 2.0), u0(x), ts)
        exact = pde.advection_exact(u0, x, ts, 0.1, 2.0)
        assert float(jnp.max(jnp.abs(numeric - exact))) < 1e-6
        np.testing.assert_allclose(
            quadratic_integral(numeric, dx), quadratic_integral(u0(x), dx), rtol=1e-8
        )


def test_burgers_keeps_mass_and_loses_energy():
    with float64():
        x, dx = pde.periodic_grid(128, 2.0, start=-1.0)
        ts = jnp.linspace(0.0, 0.5, 11)
        u = pde.solve(pde.burgers_rhs(0.05, 2.0), -jnp.sin(jnp.pi * x) + 0.2, ts)
        mass = linear_integral(u, dx)
        energy = quadratic_integral(u, dx)
        assert float(jnp.max(jnp.abs(mass - mass[0]))) < 1e-10
        assert bool(jnp.all(jnp.diff(energy) < 0))


def test_kdv_keeps_mass_and_energy():
    with float64():
        x, dx = pde.periodic_grid(128, 2.0, start=-1.0)
        ts = jnp.linspace(0.0, 0.3, 7)
        u = pde.solve(pde.kdv_rhs(0.05, 2.0), jnp.cos(jnp.pi * x), ts)
        mass, energy = linear_integral(u, dx), quadratic_integral(u, dx)
        assert float(jnp.max(jnp.abs(mass - mass[0]))) < 1e-10
        assert float(jnp.max(jnp.abs(energy / energy[0] - 1))) < 1e-5


def test_insulated_heat_and_allen_cahn_conserve_mass():
    with float64():
        x, dx = pde.cell_centres(64, 1.0)
        u0 = jnp.exp(-((x - 0.3) ** 2) / 0.01) + 0.5
        ts = jnp.linspace(0.0, 2.0, 5)
        heat = pde.solve(pde.heat_neumann_rhs(0.1, dx), u0, ts, stiff=True)
        mass = linear_integral(heat, dx)
        assert float(jnp.max(jnp.abs(mass - mass[0]))) < 1e-10
        # every non-constant mode decays at least as fast as the slowest, exp(-κ π² t)
        assert float(jnp.std(heat[-1])) < float(jnp.exp(-0.1 * jnp.pi**2 * 2.0)) * float(
            jnp.std(u0)
        )
        ac = pde.solve(
            pde.allen_cahn_rhs(0.02, dx), 0.2 * jnp.sin(6 * jnp.pi * x) + 0.1, ts, stiff=True
        )
        mass = linear_integral(ac, dx)
        assert float(jnp.max(jnp.abs(mass - mass[0]))) < 1e-10
        assert float(jnp.max(jnp.abs(ac[-1]))) > 0.5  # phases separate towards ±1


def test_spectral_derivative_and_bad_input():
    with float64():
        x, _ = pde.periodic_grid(64, 2 * np.pi)
        np.testing.assert_allclose(
            pde.spectral_derivative(jnp.sin(3 * x), 2 * np.pi), 3 * jnp.cos(3 * x), atol=1e-10
        )
        np.testing.assert_allclose(
            pde.spectral_derivative(jnp.sin(3 * x), 2 * np.pi, 2), -9 * jnp.sin(3 * x), atol=1e-9
        )
    with bad_input(match="n must be"):
        pde.periodic_grid(2, 1.0)
    with bad_input(match="nu"):
        pde.burgers_rhs(0.0, 1.0)
    with bad_input(match="1-D"):
        pde.solve(pde.heat_neumann_rhs(1.0, 0.1), jnp.ones((2, 3)), jnp.linspace(0, 1, 3))


def test_trapezoid_rule():
    with float64():
        x = jnp.linspace(0.0, 1.0, 101)
        assert float(pde.trapezoid(x**2, 0.01)) == pytest.approx(1 / 3, abs=2e-5)
        assert float(pde.trapezoid(2 * x + 1, 0.01)) == pytest.approx(
            2.0, abs=1e-12
        )  # exact for lines
        with bad_input(match="2 points"):
            pde.trapezoid(jnp.ones(1), 0.1)


def test_random_cosine_fields_have_their_drawn_means():
    with float64():
        fields, means = pde.random_cosine_fields(jax.random.key(3), 6, 32, 2.0, modes=12)
        assert fields.shape == (6, 32) and means.shape == (6,)
        _, dx = pde.cell_centres(32, 2.0)
        np.testing.assert_allclose(linear_integral(fields, dx), 2.0 * means, atol=1e-13)
        assert float(jnp.std(means)) > 0.05  # the totals differ between fields
        again, _ = pde.random_cosine_fields(jax.random.key(3), 6, 32, 2.0, modes=12)
        np.testing.assert_array_equal(fields, again)  # deterministic in the key
    with bad_input(match="modes"):
        pde.random_cosine_fields(jax.random.key(0), 2, 8, modes=16)
    with bad_input(match="count"):
        pde.random_cosine_fields(jax.random.key(0), 0, 8)
    with bad_input(match="mean_range"):
        pde.random_cosine_fields(jax.random.key(0), 2, 8, mean_range=-1.0)


def test_solve_batch_matches_single_solves_and_conserves_each_total():
    with float64():
        x, dx = pde.cell_centres(32, 1.0)
        u0s, means = pde.random_cosine_fields(jax.random.key(1), 3, 32)
        ts = jnp.linspace(0.0, 0.5, 6)
        rhs = pde.allen_cahn_rhs(0.03, dx)
        batch = pde.solve_batch(rhs, u0s, ts)
        assert batch.shape == (3, 6, 32)
        for i in range(3):
            np.testing.assert_allclose(batch[i], pde.solve(rhs, u0s[i], ts), atol=1e-10)
        totals = linear_integral(batch, dx)
        np.testing.assert_allclose(totals, jnp.broadcast_to(means[:, None], (3, 6)), atol=1e-10)
    with bad_input(match="count, n"):
        pde.solve_batch(rhs, jnp.ones(32), ts)
