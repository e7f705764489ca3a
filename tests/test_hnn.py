import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from conftest import bad_input
from conserved import diagnostics, hnn, systems


def test_hnn_field_is_divergence_free_and_conserves_its_energy():
    model = hnn.HNN(2, key=jr.key(0))
    xs = jr.normal(jr.key(1), (8, 4))
    div = jax.vmap(lambda x: hnn.divergence(model, x))(xs)
    assert float(jnp.max(jnp.abs(div))) < 1e-5
    baseline = hnn.NeuralODE(2, key=jr.key(0))
    assert float(jnp.max(jnp.abs(jax.vmap(lambda x: hnn.divergence(baseline, x))(xs)))) > 1e-3
    traj = hnn.rollout(model, xs[0], jnp.linspace(0, 5, 21), rtol=1e-8, atol=1e-8)
    energy = diagnostics.along(model.hamiltonian, traj)
    assert float(jnp.max(jnp.abs(energy - energy[0]))) < 1e-4


def test_training_reduces_vector_field_error():
    system = systems.pendulum()
    states, derivs = systems.derivative_dataset(system, jr.key(0), 10, jnp.linspace(0, 2, 11))
    for model in hnn.init_pair(1, jr.key(1), width=32):
        result = hnn.fit_vector_field(
            model, states, derivs, steps=300, key=jr.key(2), progress=False
        )
        assert result.losses[-1] < 0.1 * result.losses[0]


def test_shapes_are_checked():
    model = hnn.HNN(2, key=jr.key(0))
    with bad_input(match=r"\(4,\)"):
        model(jnp.ones(3))
    with bad_input(match="dof"):
        hnn.HNN(0, key=jr.key(0))
    with bad_input(match=r"\(N, 4\)"):
        hnn.fit_vector_field(model, jnp.ones((5, 2)), jnp.ones((5, 2)), steps=1, key=jr.key(0))


def test_hnn_field_is_hamiltons_equations_by_finite_differences(x64):
    # An independent reference: (dq/dt, dp/dt) = (∂H/∂p, -∂H/∂q), the partial derivatives of
    # the network's H taken by central differences, not by autodiff.
    model = hnn.HNN(2, key=jr.key(0))
    model = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model
    )
    x = jr.normal(jr.key(3), (4,), dtype=jnp.float64)
    h = 1e-5
    grad = np.array(
        [(model.hamiltonian(x + h * e) - model.hamiltonian(x - h * e)) / (2 * h) for e in np.eye(4)]
    )
    expected = np.concatenate([grad[2:], -grad[:2]])
    np.testing.assert_allclose(model(x), expected, rtol=1e-7, atol=1e-9)
    assert np.abs(expected).max() > 1e-3  # a non-trivial field
