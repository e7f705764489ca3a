import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given, settings
from scipy.optimize import minimize

from conftest import bad_input, float64
from conserved import projection as proj

seeds = st.integers(0, 2**31 - 1)
DX = 2.0 / 32


def _field(seed, shape=(32,)):
    return jr.normal(jr.key(seed), shape) + 0.3


@settings(max_examples=25, deadline=None)
@given(seed=seeds, c1=st.floats(-1.0, 1.0), extra=st.floats(0.1, 3.0))
def test_constraints_hold_and_projection_is_idempotent(seed, c1, extra):
    with float64():
        u = _field(seed, (5, 32))  # five "times"
        c2 = c1**2 / (32 * DX) + extra
        cases = [dict(linear=c1), dict(quadratic=c2), dict(linear=c1, quadratic=c2)]
        for kwargs in cases:
            p = proj.project(u, DX, **kwargs)
            if "linear" in kwargs:
                np.testing.assert_allclose(proj.linear_integral(p, DX), c1, atol=1e-12)
            if "quadratic" in kwargs:
                np.testing.assert_allclose(proj.quadratic_integral(p, DX), c2, rtol=1e-10)
            np.testing.assert_allclose(proj.project(p, DX, **kwargs), p, atol=1e-10)


@pytest.mark.parametrize("which", ["linear", "quadratic", "joint"])
def test_projection_is_the_nearest_point(which):
    with float64():
        rng = np.random.default_rng(0)
        dx, c1, c2 = 0.1, 0.4, 1.7
        for _ in range(3):
            u = rng.normal(size=12) + 0.2
            kwargs = {
                "linear": dict(linear=c1),
                "quadratic": dict(quadratic=c2),
                "joint": dict(linear=c1, quadratic=c2),
            }[which]
            ours = np.asarray(proj.project(jnp.asarray(u), dx, **kwargs))
            constraints = []
            if "linear" in kwargs:
                constraints.append({"type": "eq", "fun": lambda y: dx * y.sum() - c1})
            if "quadratic" in kwargs:
                constraints.append({"type": "eq", "fun": lambda y: dx * (y**2).sum() - c2})
            result = minimize(
                lambda y, u=u: np.sum((y - u) ** 2),
                ours + 0.05 * rng.normal(size=12),
                constraints=constraints,
                method="SLSQP",
                options={"ftol": 1e-14, "maxiter": 500},
            )
            assert result.success
            np.testing.assert_allclose(ours, result.x, atol=1e-6)
            assert np.sum((ours - u) ** 2) <= result.fun + 1e-9


def test_batched_targets_per_time():
    with float64():
        u = _field(1, (4, 32))
        c1 = jnp.linspace(-0.5, 0.5, 4)
        c2 = jnp.linspace(1.0, 2.0, 4)
        p = proj.project(u, DX, linear=c1, quadratic=c2)
        np.testing.assert_allclose(proj.linear_integral(p, DX), c1, atol=1e-12)
        np.testing.assert_allclose(proj.quadratic_integral(p, DX), c2, rtol=1e-12)


def test_fix_mean_is_the_zero_fourier_mode_swap():
    with float64():
        u = _field(2, (3, 32))
        target = jnp.array([0.1, -0.2, 0.3])
        spectrum = jnp.fft.rfft(u, axis=-1)
        spectrum = spectrum.at[..., 0].set(target * 32 / (32 * DX))
        swapped = jnp.fft.irfft(spectrum, n=32, axis=-1)
        np.testing.assert_allclose(proj.fix_mean(u, target, DX), swapped, atol=1e-12)
        np.testing.assert_allclose(proj.fix_mean(u, target, DX), proj.project(u, DX, linear=target))


def test_gradients_are_finite_even_for_a_constant_field():
    for u in (_field(3), jnp.ones(32)):
        for kwargs in (dict(linear=0.5), dict(quadratic=1.0), dict(linear=0.5, quadratic=1.0)):
            grad = jax.grad(lambda v, kw=kwargs: jnp.sum(proj.project(v, DX, **kw) ** 3))(u)
            assert bool(jnp.all(jnp.isfinite(grad)))


def test_bad_input_raises():
    u = _field(4)
    with bad_input(match="infeasible"):
        proj.project(u, DX, linear=2.0, quadratic=0.1)  # c2 < c1²/(n dx) = 2
    with bad_input(match="quadratic must be >= 0"):
        proj.project(u, DX, quadratic=-1.0)
    with bad_input(match="linear=, quadratic="):
        proj.project(u, DX)
    with bad_input(match="dx must be positive"):
        proj.project(u, 0.0, linear=1.0)
    with bad_input(match="grid axis"):
        proj.project(jnp.ones(()), DX, linear=1.0)
