"""Unit tests for the training recipes and helpers that only the chapters exercised before:
`symmetry.fit_with_symmetry`, `pinn.train_adam_lbfgs`, `pinn.integral_errors`,
`hnn.rollout_many` (`training.fit_adam` and `pinn.burgers_residual` are tested in
test_training.py and test_pinn.py). Each against a hand-derived or exact reference."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from conftest import bad_input, float64
from conserved import hnn, param_symmetry, pde, pinn, symmetry


def _radial_data(key, n=128):
    x = jr.normal(key, (n, 2))
    return x, jnp.sum(x**2, axis=-1)  # an invariant of rotations


def test_fit_with_symmetry_orbit_average_is_exactly_invariant():
    # symmetrising over a finite group (num_samples=None: every element) is a guarantee:
    # predictions agree on every point of an orbit to round-off, trained or not
    x, y = _radial_data(jr.key(0))
    action = symmetry.cyclic_rotations(4)
    model = eqx.nn.MLP(2, "scalar", 16, 2, key=jr.key(1))
    predict, result = symmetry.fit_with_symmetry(
        "symmetrise", model, x, y, action, steps=60, key=jr.key(2), num_samples=None
    )
    assert result.losses[-10:].mean() < result.losses[:10].mean()
    base = predict(x[:8])
    for g in action.elements:
        np.testing.assert_allclose(predict(action.apply(g, x[:8])), base, rtol=1e-5, atol=1e-5)
    # the unsymmetrised network is not invariant (the guarantee comes from the averaging)
    quarter = action.elements[1]
    gap = jax.vmap(model)(action.apply(quarter, x[:8])) - jax.vmap(model)(x[:8])
    assert float(jnp.max(jnp.abs(gap))) > 1e-3


@pytest.mark.parametrize("strategy", ["none", "augment"])
def test_fit_with_symmetry_learns_the_target(strategy):
    x, y = _radial_data(jr.key(0), 256)
    model = eqx.nn.MLP(2, "scalar", 32, 2, key=jr.key(1))
    predict, result = symmetry.fit_with_symmetry(
        strategy,
        model,
        x,
        y,
        symmetry.rotations(2),
        steps=400,
        key=jr.key(2),
        learning_rate=1e-2,
    )
    assert result.losses.shape == (400,)
    error = float(jnp.mean((predict(x) - y) ** 2))
    assert error < 0.1 * float(jnp.var(y))  # far better than predicting the mean


def test_fit_with_symmetry_rejects_bad_input():
    x, y = _radial_data(jr.key(0), 8)
    model = eqx.nn.MLP(2, "scalar", 4, 1, key=jr.key(1))
    action = symmetry.rotations(2)
    with bad_input(match="strategy"):
        symmetry.fit_with_symmetry("mirror", model, x, y, action, steps=1, key=jr.key(0))
    with bad_input(match="shapes"):
        symmetry.fit_with_symmetry("none", model, x, y[:4], action, steps=1, key=jr.key(0))
    predict, _ = symmetry.fit_with_symmetry(
        "symmetrise", model, x, y, action, steps=1, key=jr.key(0), num_samples=2
    )
    with bad_input(match="key"):
        predict(x)


def test_train_adam_lbfgs_runs_both_phases_and_lbfgs_finishes_the_job():
    x, _ = pde.periodic_grid(16, 2 * np.pi)
    ts = jnp.linspace(0.0, 1.0, 4)
    target = jnp.sin(x)[None, :] * jnp.ones((4, 1))

    def loss(model):
        return jnp.mean((pinn.predict(model, x, 1.0, ts) - target) ** 2)

    model = pinn.PINN(width=8, depth=2, key=jr.key(0))
    adam_only, first = pinn.train_adam_lbfgs(
        loss, model, adam_steps=50, lbfgs_steps=0, key=jr.key(1), progress=False
    )
    assert first.shape == (50,)
    trained, losses = pinn.train_adam_lbfgs(
        loss, model, adam_steps=50, lbfgs_steps=100, key=jr.key(1), progress=False
    )
    assert losses.shape == (150,)
    np.testing.assert_allclose(losses[:50], first, rtol=1e-6)  # the same Adam phase
    # the loss of the returned model is the history's last value or lower (losses are taken
    # before each update), and L-BFGS took it far below where Adam stopped
    assert float(loss(trained)) <= float(losses[-1]) + 1e-7
    assert float(loss(trained)) < 0.1 * float(loss(adam_only))


def test_integral_errors_by_hand():
    # u = c + a sin x on a periodic grid of [0, 2π): ∫u = 2πc and ∫u² = 2π(c² + a²/2) exactly
    # (the rectangle rule is exact for these trigonometric polynomials)
    with float64():
        x, dx = pde.periodic_grid(32, 2 * np.pi)
        ts = jnp.linspace(0.0, 1.0, 5)
        c, a = 0.3, 0.8
        u = (c + a * jnp.sin(x))[None, :] * jnp.ones((5, 1))
        errors = pinn.integral_errors(
            u,
            dx,
            ts,
            linear=lambda t: 2 * np.pi * c + 0.1 * t,
            quadratic=lambda t: 2 * np.pi * (c**2 + a**2 / 2) - 0.2 * t,
        )
        np.testing.assert_allclose(errors["linear"], 0.1 * ts, atol=1e-12)
        np.testing.assert_allclose(errors["quadratic"], 0.2 * ts, atol=1e-12)
        assert set(pinn.integral_errors(u, dx, ts, linear=lambda t: 0.0)) == {"linear"}


class _Oscillator(eqx.Module):
    """x' = (p, -q): the harmonic oscillator's field, as a model would be called."""

    def __call__(self, x):
        return jnp.array([x[1], -x[0]])


def test_rollout_many_matches_the_exact_rotation():
    with float64():
        x0 = jr.normal(jr.key(0), (5, 2))
        ts = jnp.linspace(0.0, 3.0, 7)
        states = hnn.rollout_many(_Oscillator(), x0, ts)
        assert states.shape == (5, 7, 2)
        c, s = jnp.cos(ts)[None, :], jnp.sin(ts)[None, :]
        q0, p0 = x0[:, :1], x0[:, 1:]
        exact = jnp.stack([q0 * c + p0 * s, -q0 * s + p0 * c], axis=-1)
        np.testing.assert_allclose(states, exact, atol=1e-6)


def test_right_divide_inverts_the_right_factor():
    with float64():
        w = jr.normal(jr.key(0), (3, 4))
        g = jr.normal(jr.key(1), (4, 4)) + 4 * jnp.eye(4)
        x = param_symmetry.right_divide(w, g)
        np.testing.assert_allclose(x @ g, w, atol=1e-12)
        np.testing.assert_allclose(x, w @ np.linalg.inv(np.asarray(g)), atol=1e-12)


def test_equivariance_error_compiles_once_for_new_samples_of_one_shape(caplog):
    action = symmetry.rotations(2)

    def centroid(points):
        return jnp.mean(points, axis=0)

    with jax.log_compiles(True), caplog.at_level("WARNING"):
        for seed in (1, 2):
            points = jr.normal(jr.key(seed), (6, 5, 2))
            error = symmetry.equivariance_error(centroid, action, points, jr.key(0))
            assert float(error) < 1e-5
    compiles = [r for r in caplog.records if "Compiling jit(_equivariance_gap)" in r.getMessage()]
    assert len(compiles) == 1


@pytest.mark.parametrize("strategy", ["augment", "symmetrise"])
def test_fit_with_symmetry_compiles_its_step_once(strategy, caplog):
    # new data of the same shape and a new initial model: the training step is reused
    action = symmetry.rotations(2)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        for seed in (1, 2):
            x, y = _radial_data(jr.key(10 + seed), 64)
            model = eqx.nn.MLP(2, "scalar", 8, 1, key=jr.key(seed))
            symmetry.fit_with_symmetry(
                strategy, model, x, y, action, steps=4, key=jr.key(3), num_samples=4
            )
    compiles = [r for r in caplog.records if "Compiling jit(_run_chunk)" in r.getMessage()]
    assert len(compiles) == 1, [r.getMessage()[:80] for r in compiles]
