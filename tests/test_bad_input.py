"""Bad input gets a clear ValueError naming the argument, instead of a silent wrong answer or
an obscure failure deep inside JAX."""

import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from conserved import mechanics, param_symmetry, pde, razor, systems

# the library's own checks, reached without jaxtyping's runtime checker in front (conftest)
pytestmark = pytest.mark.usefixtures("unchecked")


@pytest.mark.parametrize("length", [0.0, -2.0, math.inf, math.nan])
def test_periodic_operators_need_a_positive_length(length):
    u = jnp.sin(jnp.linspace(0, 2 * jnp.pi, 16, endpoint=False))
    with pytest.raises(ValueError, match="length"):
        pde.spectral_derivative(u, length)
    for make in (
        lambda: pde.advection_rhs(1.0, length),
        lambda: pde.kdv_rhs(0.1, length),
        lambda: pde.burgers_rhs(0.1, length),
    ):
        with pytest.raises(ValueError, match="length"):
            make()


@pytest.mark.parametrize("dx", [0.0, -0.1])
def test_grid_spacings_must_be_positive(dx):
    with pytest.raises(ValueError, match="dx"):
        pde.trapezoid(jnp.ones(5), dx)
    with pytest.raises(ValueError, match="dx"):
        pde.allen_cahn_rhs(0.1, dx)
    with pytest.raises(ValueError, match="dx"):
        pde.heat_neumann_rhs(0.1, dx)
    with pytest.raises(ValueError, match="epsilon"):
        pde.allen_cahn_rhs(-0.1, 0.1)


def test_trapezoid_is_the_trapezoid_rule():
    # ∫_0^1 x² dx on 5 points: the rule gives exactly 0.34375 (hand-derived: 11/32)
    x = jnp.linspace(0.0, 1.0, 5)
    assert float(pde.trapezoid(x**2, 0.25)) == pytest.approx(11 / 32)
    np.testing.assert_allclose(pde.trapezoid(jnp.stack([x, 2 * x]), 0.25), [0.5, 1.0])


def test_derivative_dataset_rejects_negative_noise():
    with pytest.raises(ValueError, match="noise"):
        systems.derivative_dataset(
            systems.pendulum(), jr.key(0), 2, jnp.linspace(0, 1, 3), noise=-0.1
        )


def test_weight_matching_needs_a_sweep():
    a = eqx.nn.MLP(2, 1, 4, 1, key=jr.key(0))
    b = eqx.nn.MLP(2, 1, 4, 1, key=jr.key(1))
    with pytest.raises(ValueError, match="max_sweeps"):
        param_symmetry.weight_matching(a, b, max_sweeps=0)


def test_poisson_bracket_rejects_integer_states():
    bracket = mechanics.poisson_bracket(lambda x: x[0] * x[1], lambda x: x @ x)
    with pytest.raises(ValueError, match="floating-point"):
        bracket(jnp.array([1, 2]))
    assert float(bracket(jnp.array([1.0, 2.0]))) == pytest.approx(4 * (2.0**2 - 1.0**2) / 2)


def _razor_model_and_data():
    # the checks refuse the arguments before any state is moved: random pairs will do
    x, y = jr.normal(jr.key(0), (2, 9, 2))
    net = razor.VariationalMLP(2, width=4, key=jr.key(0))
    return razor.RazorHNN(net), (x, y)


def test_razor_evaluate_refuses_a_test_set_named_train():
    model, data = _razor_model_and_data()
    with pytest.raises(ValueError, match="train"):
        razor.evaluate(model, data, {"train": data}, jr.key(0), dt=0.2, substeps=1)


@pytest.mark.parametrize("variance", [0.0, -1e-3])
def test_razor_noise_variance_must_be_positive(variance):
    model, data = _razor_model_and_data()
    with pytest.raises(ValueError, match="noise_variance"):
        razor.negative_elbo(model, data, jr.key(0), num_data=9, dt=0.2, noise_variance=variance)
    with pytest.raises(ValueError, match="noise_variance"):
        razor.evaluate(model, data, {}, jr.key(0), dt=0.2, noise_variance=variance)
    with pytest.raises(ValueError, match="noise_variance"):
        razor.train(model, data, steps=1, key=jr.key(0), dt=0.2, noise_variance=variance)


def test_projection_rejects_fields_it_cannot_rescale():
    from conserved import projection

    dx = 0.1
    with pytest.raises(ValueError, match="zero"):
        projection.project(jnp.zeros(8), dx, quadratic=1.0)
    with pytest.raises(ValueError, match="constant"):
        projection.project(jnp.full(8, 0.3), dx, linear=0.5, quadratic=1.0)
    # a float32 field varying by a part in 10⁴ is not constant: it is rescaled exactly
    x = jnp.linspace(0.0, 2 * jnp.pi, 8, endpoint=False)
    nearly = (1.0 + 1e-4 * jnp.sin(x)).astype(jnp.float32)
    out = projection.project(nearly, dx, linear=0.5, quadratic=1.0)
    np.testing.assert_allclose(
        [float(dx * out.sum()), float(dx * (out**2).sum())], [0.5, 1.0], rtol=1e-3
    )
    # a constant field that already has the requested integrals is its own projection
    u = jnp.full(8, 0.25)
    c1, c2 = float(dx * u.sum()), float(dx * (u**2).sum())
    np.testing.assert_allclose(projection.project(u, dx, linear=c1, quadratic=c2), u)


@pytest.mark.parametrize("which", ["linear", "quadratic"])
def test_projection_targets_must_be_finite_and_fit_the_batch(which):
    from conserved import projection

    u = jnp.sin(jnp.linspace(0.0, 6.0, 16)).reshape(2, 8) + 1.0
    with pytest.raises(ValueError, match=f"{which} must be finite"):
        projection.project(u, 0.1, **{which: jnp.array([1.0, jnp.nan])})
    with pytest.raises(ValueError, match=f"{which} must have the field's batch shape"):
        projection.project(u, 0.1, **{which: jnp.ones(3)})
    # one value per batch entry, or one for all, is accepted
    for target in (jnp.array([1.0, 2.0]), 1.5):
        out = projection.project(u, 0.1, **{which: target})
        assert out.shape == u.shape


def test_integrators_reject_a_nan_initial_state():
    H = systems.harmonic_oscillators(1).hamiltonian
    bad = jnp.array([jnp.nan, 1.0])
    with pytest.raises(ValueError, match="x0 must be finite"):
        mechanics.integrate(H, bad, jnp.linspace(0.0, 1.0, 5))
    with pytest.raises(ValueError, match="x must be finite"):
        mechanics.flow(H, bad, 0.3)


def test_fit_vector_field_rejects_a_negative_learning_rate():
    from conserved import hnn

    model, _ = hnn.init_pair(1, jr.key(0), width=8)
    states = jnp.ones((4, 2))
    with pytest.raises(ValueError, match="learning_rate"):
        hnn.fit_vector_field(model, states, states, steps=2, key=jr.key(1), learning_rate=-1e-3)


def test_argument_checks_hold_under_jit():
    """A check on a traced argument is not skipped: it raises when the compiled code runs
    (an `EquinoxRuntimeError`, which JAX's CPU runtime may re-raise wrapped in another error
    that carries the same message)."""
    import equinox as eqx
    import jax

    raised = (eqx.EquinoxRuntimeError, ValueError, RuntimeError)

    from conserved import projection

    H = systems.harmonic_oscillators(1).hamiltonian
    x0 = jnp.array([1.0, 0.0])
    integrate = jax.jit(lambda ts: mechanics.integrate(H, x0, ts))
    np.testing.assert_allclose(integrate(jnp.linspace(0.0, 1.0, 3))[0], x0)
    with pytest.raises(raised, match="strictly increasing"):
        integrate(jnp.array([0.0, 1.0, 0.5])).block_until_ready()
    derivative = jax.jit(lambda length: pde.spectral_derivative(jnp.ones(8), length))
    with pytest.raises(raised, match="length must be positive"):
        derivative(-1.0).block_until_ready()
    project = jax.jit(lambda dx: projection.project(jnp.arange(8.0), dx, linear=1.0))
    with pytest.raises(raised, match="dx must be positive"):
        project(-0.1).block_until_ready()


def test_the_shared_validators_name_the_argument():
    from conserved import _checks

    assert _checks.positive_int("n", np.int64(3)) == 3 and _checks.positive_int("k", 0, 0) == 0
    for value in (0, -1, 1.0, True, "2"):
        with pytest.raises(ValueError, match="n must be a positive int"):
            _checks.positive_int("n", value)
    with pytest.raises(ValueError, match="m must be an int >= 4"):
        _checks.positive_int("m", 3, 4)
    assert _checks.non_negative("noise", 0) == 0.0 and _checks.positive("dt", 0.5) == 0.5
    for value in (-0.1, math.inf, math.nan, "a", None):
        with pytest.raises(ValueError, match="noise must be"):
            _checks.non_negative("noise", value)
    for value in (0.0, -1.0, math.inf, math.nan, "a"):
        with pytest.raises(ValueError, match="dt must be (positive|a positive number)"):
            _checks.positive("dt", value)


@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf])
def test_non_negative_settings_refuse_negative_nan_and_infinite_values(value):
    system = systems.harmonic_oscillators(1)
    ts = jnp.linspace(0.0, 1.0, 3)
    with pytest.raises(ValueError, match="noise"):
        systems.trajectories(system, jr.key(0), 2, ts, noise=value)
    with pytest.raises(ValueError, match="noise"):
        systems.derivative_dataset(system, jr.key(0), 2, ts, noise=value)
    with pytest.raises(ValueError, match="noise_variance"):
        razor.dataset(system.hamiltonian, jnp.ones((2, 2)), dt=0.1, steps=3, noise_variance=value)
    with pytest.raises(ValueError, match="mean_range"):
        pde.random_cosine_fields(jr.key(0), 2, 16, mean_range=value)
