"""Noether's Razor: exact flows of quadratics, orbit averages, the matrix-normal posterior and its
KL, the ELBO, training, and the generator analysis."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import bad_input, float64
from conserved import mechanics, razor, systems
from conserved.symmetry import symplectic_matrix


def _oscillator_quadratics(n: int) -> razor.Quadratics:
    functions = [lambda x, a=a: 0.5 * x @ a @ x for a in systems.oscillator_conserved_matrices(n)]
    return razor.Quadratics.from_functions(functions, 2 * n)


# --------------------------------------------------------------------------------------------
# Quadratics and exact flows
# --------------------------------------------------------------------------------------------


def test_quadratic_coefficients_read_off_a_and_b(x64):
    a = jnp.array([[2.0, 1.0], [1.0, 3.0]])
    b = jnp.array([0.5, -1.0])
    got_a, got_b = razor.quadratic_coefficients(lambda x: 0.5 * x @ a @ x + b @ x + 7.0, 2)
    np.testing.assert_allclose(got_a, a, atol=1e-12)
    np.testing.assert_allclose(got_b, b, atol=1e-12)
    with bad_input(match="quadratic"):
        razor.quadratic_coefficients(lambda x: jnp.sum(x**4), 2)
    with bad_input(match="even"):
        razor.quadratic_coefficients(lambda x: x @ x, 3)


@pytest.mark.parametrize(
    "name,system,functions",
    [
        ("3 oscillators", systems.harmonic_oscillators(3), None),
        (
            "2 bodies 2-D",
            systems.n_body(2, 2, softening=1.0),
            systems.n_body_quadratic_invariants(2, 2),
        ),
        (
            "3 bodies 3-D",
            systems.n_body(3, 3, masses=jnp.array([1.0, 2.0, 0.5])),
            systems.n_body_quadratic_invariants(3, 3, masses=jnp.array([1.0, 2.0, 0.5])),
        ),
    ],
)
def test_exact_flow_of_a_conserved_quadratic_leaves_h_invariant(name, system, functions):
    with float64():
        dim = 2 * system.dof
        if functions is None:
            quads = _oscillator_quadratics(system.dof)
        else:
            quads = razor.Quadratics.from_functions(list(functions.values()), dim)
        states = system.sample(jr.key(1), 8)
        states = states + 0.5 * jr.normal(jr.key(2), states.shape)  # generic, not only bound
        gens = quads.generators()
        taus = jnp.array([-2.0, 0.7, 3.0])
        # every (quantity, τ) pair at once: one-hot rows of symmetry times
        times = (jnp.eye(quads.count)[:, None, :] * taus[None, :, None]).reshape(-1, quads.count)
        moved = razor.transform(razor.group_elements(gens, times), states)
        energy = jax.jit(jax.vmap(jax.vmap(system.hamiltonian)))
        before = energy(states[None])
        np.testing.assert_allclose(
            energy(moved),
            jnp.broadcast_to(before, moved.shape[:2]),
            rtol=1e-9,
            atol=1e-9,
            err_msg=name,
        )


def test_n_body_quadratic_invariants_count_commute_and_are_independent(x64):
    for n, dim, count in [(2, 2, 7), (3, 3, 15)]:
        invariants = systems.n_body_quadratic_invariants(n, dim)
        assert len(invariants) == count
        system = systems.n_body(n, dim, softening=1.0)
        states = system.sample(jr.key(0), 8)
        functions = list(invariants.values())

        @jax.jit
        def brackets(x, functions=functions, h=system.hamiltonian):
            return jnp.stack([mechanics.poisson_bracket(c, h)(x) for c in functions])

        worst = jnp.max(jnp.abs(jax.vmap(brackets)(states)), axis=0)
        assert float(jnp.max(worst)) < 1e-10, (n, dim, dict(zip(invariants, worst, strict=True)))
        gens = razor.Quadratics.from_functions(list(invariants.values()), 2 * n * dim).generators()
        assert np.linalg.matrix_rank(np.asarray(gens).reshape(count, -1)) == count
    with bad_input():
        systems.n_body_quadratic_invariants(1, 2)


@eqx.filter_jit
def _flows(a, b, tau, x):
    """The exact flow of C = ½xᵀAx + bᵀx and Diffrax's integration of it, and C before/after."""

    def c(y):
        return 0.5 * y @ a @ y + b @ y

    moved = razor.exact_flow(a, b, tau, x)
    return moved, mechanics.flow(c, x, tau), c(x), c(moved)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), tau=st.floats(-3.0, 3.0))
def test_flow_of_a_random_quadratic_conserves_it_and_matches_integration(seed, tau):
    with float64():
        ka, kb, kx = jr.split(jr.key(seed), 3)
        w = jr.normal(ka, (4, 4))
        moved, reference, before, after = _flows(
            0.5 * (w + w.T), jr.normal(kb, (4,)), jnp.asarray(tau), jr.normal(kx, (4,))
        )
        assert abs(float(after - before)) < 1e-8 * (1 + abs(float(before)))
        # the matrix exponential is the flow that Diffrax integrates
        np.testing.assert_allclose(moved, reference, rtol=1e-7, atol=1e-7)


def test_group_elements_are_affine_symplectic_and_compose(x64):
    quads = razor.Quadratics.random(jr.key(0), 3, 4, scale=0.5)
    gens = quads.generators()
    assert gens.shape == (3, 5, 5)
    np.testing.assert_array_equal(gens[:, 4], 0.0)  # homogeneous: last row zero
    times = razor.sample_times(jr.key(1), 6, 3)
    g = razor.group_elements(gens, times)
    j = symplectic_matrix(2)
    lin = g[:, :4, :4]
    np.testing.assert_allclose(
        jnp.swapaxes(lin, 1, 2) @ j @ lin, jnp.broadcast_to(j, lin.shape), atol=1e-10
    )
    # one-parameter subgroups compose: exp(sĜ) exp(tĜ) = exp((s+t)Ĝ)
    single = gens[:1]
    s, t = 0.4, -1.3
    prod = (
        razor.group_elements(single, jnp.array([[s]]))[0]
        @ razor.group_elements(single, jnp.array([[t]]))[0]
    )
    np.testing.assert_allclose(
        prod, razor.group_elements(single, jnp.array([[s + t]]))[0], atol=1e-10
    )
    # transform applies the affine map to every state
    x = jr.normal(jr.key(2), (5, 4))
    moved = razor.transform(g, x)
    assert moved.shape == (6, 5, 4)
    np.testing.assert_allclose(moved[2, 3], g[2, :4, :4] @ x[3] + g[2, :4, 4], atol=1e-12)


def test_sample_times_measures():
    ball = razor.sample_times(jr.key(0), 4000, 3, "ball")
    cube = razor.sample_times(jr.key(0), 4000, 3, "cube")
    assert ball.shape == cube.shape == (4000, 3)
    assert float(jnp.max(jnp.linalg.norm(ball, axis=1))) <= math.pi + 1e-5
    assert float(jnp.max(jnp.abs(cube))) <= math.pi + 1e-5
    # uniform in the ball: P(|ε| < ½) = ⅛
    inner = float(jnp.mean(jnp.linalg.norm(ball, axis=1) < 0.5 * math.pi))
    assert abs(inner - 0.125) < 0.02
    with bad_input(match="measure"):
        razor.sample_times(jr.key(0), 4, 3, "normal")


def test_orbit_average_of_an_invariant_function_equals_the_function(x64):
    quads = _oscillator_quadratics(2)
    net = razor.VariationalMLP(4, width=8, key=jr.key(0))
    model = razor.RazorHNN(net, quads, num_samples=32)
    x = jr.normal(jr.key(1), (10, 4))
    elements = model.elements(jr.key(2))
    # the energy is U(2)-invariant, a random network is not
    energy = 0.5 * jnp.sum(razor.transform(elements, x) ** 2, axis=-1).mean(axis=0)
    np.testing.assert_allclose(energy, 0.5 * jnp.sum(x**2, axis=1), rtol=1e-12)
    weights = net.mean_weights()
    averaged = model.hamiltonian(weights, elements, x)
    raw = net.forward(weights, x)
    assert float(jnp.max(jnp.abs(averaged - raw))) > 1e-3
    # an orbit average is itself (nearly) invariant: move x by a group element and re-average
    # over many samples
    big = razor.RazorHNN(net, quads, num_samples=4000)
    g = big.elements(jr.key(3))
    moved = razor.transform(
        razor.group_elements(quads.generators(), jnp.array([[0.3, -0.2, 0.1, 0.5]])), x
    )[0]
    a1 = big.hamiltonian(weights, g, x)
    a2 = big.hamiltonian(weights, g, moved)
    assert float(jnp.max(jnp.abs(a1 - a2))) < 0.2 * float(jnp.max(jnp.abs(averaged - raw)))


# --------------------------------------------------------------------------------------------
# Matrix-normal posterior
# --------------------------------------------------------------------------------------------


def _random_layer(key, out=3, inp=2) -> razor.MatrixNormalLinear:
    k1, k2, k3 = jr.split(key, 3)
    layer = razor.MatrixNormalLinear(jr.normal(k1, (out, inp)), jnp.zeros(out))
    layer = eqx.tree_at(lambda m: m.row_raw, layer, jnp.tril(0.5 * jr.normal(k2, (out, out))))
    layer = eqx.tree_at(lambda m: m.col_raw, layer, jnp.tril(0.5 * jr.normal(k3, (inp, inp))))
    return layer


def test_matrix_normal_sample_has_kronecker_covariance(x64):
    layer = _random_layer(jr.key(0))
    ls, la = layer.factors()
    cov = np.kron(np.asarray(ls @ ls.T), np.asarray(la @ la.T))
    samples = jax.vmap(layer.sample)(jr.split(jr.key(1), 100_000)).reshape(100_000, -1)
    np.testing.assert_allclose(samples.mean(0), layer.mean.reshape(-1), atol=0.03)
    emp = np.cov(np.asarray(samples), rowvar=False)
    assert np.max(np.abs(emp - cov)) < 0.05 * np.max(np.abs(cov))


@pytest.mark.parametrize("prior_variance", [None, 0.7])
def test_kl_matches_monte_carlo(prior_variance, x64):
    layer = _random_layer(jr.key(3))
    ls, la = layer.factors()
    cov = np.kron(np.asarray(ls @ ls.T), np.asarray(la @ la.T))
    mean = np.asarray(layer.mean).reshape(-1)
    d = mean.size
    v = (np.trace(cov) + mean @ mean) / d if prior_variance is None else prior_variance
    q = scipy.stats.multivariate_normal(mean, cov)
    p = scipy.stats.multivariate_normal(np.zeros(d), v * np.eye(d))
    w = q.rvs(size=200_000, random_state=0)
    mc = np.mean(q.logpdf(w) - p.logpdf(w))
    stderr = np.std(q.logpdf(w) - p.logpdf(w)) / math.sqrt(len(w))
    assert abs(float(layer.kl(prior_variance)) - mc) < 5 * stderr + 1e-3
    if prior_variance is None:  # the empirical prior is the best prior variance
        assert float(layer.kl(None)) <= float(layer.kl(0.5 * v)) + 1e-9
        assert float(layer.kl(None)) <= float(layer.kl(2.0 * v)) + 1e-9


# --------------------------------------------------------------------------------------------
# The model, the bound, training
# --------------------------------------------------------------------------------------------


def _data(n=1, num=6, dt=0.2):
    sy = systems.harmonic_oscillators(n)
    tr = systems.trajectories(sy, jr.key(0), num, jnp.arange(5) * dt)
    return razor.transitions(tr)


def test_transitions_pairs_consecutive_states():
    trajs = jnp.arange(2 * 4 * 2.0).reshape(2, 4, 2)
    x, y = razor.transitions(trajs)
    assert x.shape == y.shape == (6, 2)
    np.testing.assert_array_equal(x[3], trajs[1, 0])
    np.testing.assert_array_equal(y[3], trajs[1, 1])
    with bad_input(match="trajs"):
        razor.transitions(jnp.zeros((4, 2)))


def test_negative_elbo_is_gaussian_nll_plus_kl_over_n(x64):
    x, y = _data()
    net = razor.VariationalMLP(2, width=8, posterior_scale=1e-12, key=jr.key(0))
    model = razor.RazorHNN(net)
    value = razor.negative_elbo(model, (x, y), jr.key(1), num_data=100, dt=0.2, substeps=4)
    pred = model.predict(net.mean_weights(), None, x, 0.2, 4)
    # Euler prediction = explicit Euler of (∂F/∂p, -∂F/∂q) by hand, F's gradient by autodiff
    grad = jax.grad(lambda z: net.forward(net.mean_weights(), z))
    hand = []
    for z in np.asarray(x):
        for _ in range(4):
            g = np.asarray(grad(jnp.asarray(z)))
            z = z + 0.05 * np.array([g[1], -g[0]])
        hand.append(z)
    hand = np.array(hand)
    np.testing.assert_allclose(pred, hand, rtol=1e-10)
    # the likelihood term by a second method: scipy's Gaussian log-density around the hand
    # prediction; the KL term is checked against Monte Carlo in test_kl_matches_monte_carlo
    density = [scipy.stats.multivariate_normal(m, 1e-3 * np.eye(2)) for m in hand]
    nll = -np.mean([d.logpdf(t) for d, t in zip(density, np.asarray(y), strict=True)])
    expected = nll + float(net.kl()) / 100
    assert abs(float(value) - expected) < 1e-6 * abs(expected)
    # evaluate's columns on the same (deterministic) model, against the hand predictions
    terms = razor.elbo_terms(model, (x, y), jr.key(2), dt=0.2, substeps=4)
    assert terms.nll == pytest.approx(nll, rel=1e-6)
    mse = razor.one_step_mse(model, (x, y), jr.key(2), dt=0.2, substeps=4)
    assert mse == pytest.approx(float(np.mean((hand - np.asarray(y)) ** 2)), rel=1e-6)


def test_training_lowers_the_bound_and_keeps_oracle_fixed(caplog):
    x, y = _data()
    data = (x, y)
    net = razor.VariationalMLP(2, width=8, key=jr.key(0))
    oracle = razor.Quadratics.from_functions([lambda z: 0.5 * z @ z], 2, count=2)
    learned = razor.Quadratics.random(jr.key(1), 2, 2)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        for quads in (None, oracle, learned):
            model = razor.RazorHNN(net, quads, num_samples=4, measure="cube")
            result = razor.train(
                model, data, steps=40, key=jr.key(2), dt=0.2, substeps=1, progress=False
            )
            assert result.losses[-10:].mean() < result.losses[:10].mean()
            if quads is oracle:
                np.testing.assert_array_equal(result.model.quadratics.weight, oracle.weight)
                np.testing.assert_array_equal(result.model.quadratics.bias, oracle.bias)
            if quads is learned:
                assert not np.allclose(result.model.quadratics.weight, learned.weight)
    # the oracle and the learned model have one shape: their training step compiles once
    compiles = [r for r in caplog.records if "Compiling jit(_run_chunk)" in r.getMessage()]
    assert len(compiles) == 2  # vanilla, then the one shared by the oracle and the learned model
    # training lowered the posterior predictive's one-step error, measured on its own
    before = razor.one_step_mse(model, data, jr.key(4), dt=0.2, substeps=1)
    after = razor.one_step_mse(result.model, data, jr.key(4), dt=0.2, substeps=1)
    assert after < before


def test_point_estimate_is_deterministic_maximum_likelihood(caplog):
    x, y = _data()
    net = razor.VariationalMLP(2, width=8, posterior_scale=0.5, key=jr.key(0))
    quads = razor.Quadratics.random(jr.key(1), 2, 2, scale=0.3)
    ml = razor.RazorHNN(net, quads, num_samples=4, point_estimate=True)
    elbo = razor.RazorHNN(net, quads, num_samples=4)
    # its weights are the posterior means whatever the key
    for k in (jr.key(2), jr.key(3)):
        for (w, c), (m, b) in zip(ml.weights(k), net.mean_weights(), strict=True):
            np.testing.assert_array_equal(w, m)
            np.testing.assert_array_equal(c, b)
    assert not np.allclose(elbo.weights(jr.key(2))[0][0], net.mean_weights()[0][0])
    # the objective is the plain Gaussian NLL of the mean network (no KL, whatever kl_weight)
    kwargs = dict(num_data=100, dt=0.2, substeps=2, mc_samples=1)
    value = razor.negative_elbo(ml, (x, y), jr.key(4), **kwargs)
    _, kg = jr.split(jr.split(jr.key(4), 1)[0])
    pred = ml.predict(net.mean_weights(), ml.elements(kg), x, 0.2, 2)
    nll = 0.5 * 2 * math.log(2 * math.pi * 1e-3) + 0.5 * jnp.sum((pred - y) ** 2, 1) / 1e-3
    np.testing.assert_allclose(float(value), float(jnp.mean(nll)), rtol=1e-5)
    # training moves the means and the quadratics, never the covariance factors, and shares
    # the compiled step with the variational model of the same shape
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        fits = {
            name: razor.train(
                model, (x, y), steps=30, key=jr.key(5), dt=0.2, substeps=1, progress=False
            )
            for name, model in (("elbo", elbo), ("ml", ml))
        }
    compiles = [r for r in caplog.records if "Compiling jit(_run_chunk)" in r.getMessage()]
    assert len(compiles) == 1
    trained = fits["ml"].model
    assert fits["ml"].losses[-5:].mean() < fits["ml"].losses[:5].mean()
    for before, after in zip(net.layers, trained.network.layers, strict=True):
        np.testing.assert_array_equal(after.row_raw, before.row_raw)
        np.testing.assert_array_equal(after.col_raw, before.col_raw)
        assert not np.allclose(after.mean, before.mean)
    assert not np.allclose(trained.quadratics.weight, quads.weight)
    # a point mass has no bound: evaluate reports its fit and NaN for KL/N and -ELBO
    row = razor.evaluate(trained, (x, y), {}, jr.key(6), dt=0.2, substeps=2, samples=3)
    assert math.isnan(row["KL/N"]) and math.isnan(row["-ELBO"])
    assert np.isfinite(row["NLL"]) and row["train MSE"] > 0
    with bad_input(match="point_estimate"):
        razor.RazorHNN(net, point_estimate=jnp.array([True, False]))


def test_padded_oracle_generates_the_same_group(x64):
    true = _oscillator_quadratics(2)
    padded = razor.Quadratics.from_functions(
        [lambda x, a=a: 0.5 * x @ a @ x for a in systems.oscillator_conserved_matrices(2)],
        4,
        count=6,
    )
    assert padded.count == 6 and bool(padded.frozen)
    np.testing.assert_array_equal(padded.weight[4:], 0.0)
    np.testing.assert_array_equal(padded.bias[4:], 0.0)
    times = razor.sample_times(jr.key(0), 8, 6, "cube")
    np.testing.assert_allclose(
        razor.group_elements(padded.generators(), times),
        razor.group_elements(true.generators(), times[:, :4]),
        atol=1e-12,
    )
    with bad_input(match="count"):
        razor.Quadratics.from_functions([lambda x: x @ x, lambda x: x[0] * x[1]], 2, count=1)


def test_evaluate_columns_do_not_depend_on_the_test_sets():
    x, y = _data()
    net = razor.VariationalMLP(2, width=8, key=jr.key(0))
    model = razor.RazorHNN(net, razor.Quadratics.random(jr.key(1), 1, 2), num_samples=4)
    kwargs = dict(dt=0.2, substeps=2, samples=3)
    alone = razor.evaluate(model, (x, y), {}, jr.key(5), **kwargs)
    # "a" sorts before "train": the columns must still belong to the right sets
    both = razor.evaluate(model, (x, y), {"test": (y, x), "a": (x[:3], y[:3])}, jr.key(5), **kwargs)
    assert list(both) == ["train MSE", "test MSE", "a MSE", "NLL", "KL/N", "-ELBO"]
    for column in ("train MSE", "NLL", "KL/N"):
        np.testing.assert_allclose(both[column], alone[column], rtol=1e-5)
    preds = razor._draw_predictions(model, x, jr.key(5), 0.2, 2, 3)
    nll = 0.5 * 2 * math.log(2 * math.pi * 1e-3) + 0.5 * jnp.sum((preds - y) ** 2, -1) / 1e-3
    np.testing.assert_allclose(alone["NLL"], float(jnp.mean(nll)), rtol=1e-5)
    np.testing.assert_allclose(
        alone["train MSE"], float(jnp.mean((preds.mean(0) - y) ** 2)), rtol=1e-5
    )
    np.testing.assert_allclose(
        both["a MSE"], float(jnp.mean((preds.mean(0)[:3] - y[:3]) ** 2)), rtol=1e-5
    )
    assert both["-ELBO"] == both["NLL"] + both["KL/N"]


def test_dataset_fixed_steps_match_the_adaptive_solver(x64):
    bodies = systems.n_body(2, 2, softening=1.0)
    x0 = systems.scattered_n_body_states(jr.key(0), 5)
    fixed = razor.dataset(bodies.hamiltonian, x0, dt=0.3, steps=20)
    adaptive = razor.dataset(bodies.hamiltonian, x0, dt=0.3, steps=20, substeps=None)
    assert fixed[0].shape == (100, 8)
    np.testing.assert_allclose(fixed[1], adaptive[1], atol=1e-6)
    noisy = razor.dataset(
        bodies.hamiltonian, x0, dt=0.3, steps=20, noise_variance=1e-2, key=jr.key(1)
    )
    np.testing.assert_array_equal(noisy[0], fixed[0])
    assert abs(float(jnp.var(noisy[1] - fixed[1])) - 1e-2) < 2e-3
    with bad_input(match="key"):
        razor.dataset(bodies.hamiltonian, x0, dt=0.3, steps=2, noise_variance=1e-2)


def test_bad_shapes_raise():
    net = razor.VariationalMLP(2, width=8, key=jr.key(0))
    with bad_input(match="R\\^4"):
        razor.RazorHNN(net, razor.Quadratics.random(jr.key(0), 2, 4))
    with bad_input(match="weight"):
        razor.Quadratics(jnp.zeros((2, 3, 3)), jnp.zeros((2, 3)))
    with bad_input(match="bias"):
        razor.Quadratics(jnp.zeros((2, 4, 4)), jnp.zeros((2, 3)))
    with bad_input(match="times"):
        razor.group_elements(jnp.zeros((2, 5, 5)), jnp.zeros((3, 4)))
    with bad_input(match="elements"):
        razor.transform(jnp.zeros((3, 4, 4)), jnp.zeros((5, 4)))
    with bad_input(match="batch"):
        razor.negative_elbo(
            razor.RazorHNN(net),
            (jnp.zeros((3, 4)), jnp.zeros((3, 4))),
            jr.key(0),
            num_data=3,
            dt=0.1,
        )
    with bad_input(match="dim"):
        razor.VariationalMLP(3, key=jr.key(0))
    with bad_input(match="measure"):
        razor.RazorHNN(net, measure="gauss")


# --------------------------------------------------------------------------------------------
# Which symmetry was learned?
# --------------------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), true_count=st.integers(1, 5))
def test_analysis_counts_true_generators_among_noise(seed, true_count):
    k1, k2, k3 = jr.split(jr.key(seed), 3)
    true = np.asarray(jr.normal(k1, (true_count, 5, 5)))
    mix = np.asarray(jr.normal(k2, (10, true_count)))  # 10 learned = mixtures of the true ones
    learned = np.einsum("kl,lij->kij", mix, true) + 1e-4 * np.asarray(jr.normal(k3, (10, 5, 5)))
    result = razor.generator_analysis(learned, true)
    assert result.active(1e-2) == true_count
    assert result.gap(true_count) > 10
    assert result.parallelness.shape == (true_count,)
    assert np.all(result.parallelness > 0.999)


def test_analysis_parallelness_detects_directions_outside_the_span():
    true = np.zeros((2, 3, 3))
    true[0, 0, 1] = 1.0
    true[1, 1, 2] = 1.0
    inside = np.stack([true[0] + true[1], true[0] - 2 * true[1], np.zeros((3, 3))])
    outside = inside.copy()
    outside[1] = np.zeros((3, 3))
    outside[1, 2, 0] = 1.0
    assert np.allclose(razor.generator_analysis(inside, true).parallelness, 1.0)
    assert razor.generator_analysis(outside, true).parallelness.min() < 0.01
    with bad_input(match="at least as many"):
        razor.generator_analysis(true[:1], true)
    with bad_input(match="shapes"):
        razor.generator_analysis(np.zeros((3, 4, 4)), true)
    with bad_input(match="zero"):
        razor.generator_analysis(np.zeros((3, 3, 3)), true)


def test_scattered_n_body_states_place_centres_and_validate():
    states = systems.scattered_n_body_states(
        jr.key(0),
        4000,
        2,
        2,
        spread=0.5,
        momentum=0.2,
        centre_scale=3.0,
        centre_shift=jnp.array([6.0, -1.0]),
    )
    assert states.shape == (4000, 8)
    centres = states[:, :4].reshape(4000, 2, 2).mean(axis=1)
    np.testing.assert_allclose(centres.mean(axis=0), [6.0, -1.0], atol=0.2)
    # per-state centre spread 3, plus the mean of two N(0, 0.5²) offsets
    np.testing.assert_allclose(centres.std(axis=0), np.sqrt(9 + 0.125), rtol=0.05)
    np.testing.assert_allclose(states[:, 4:].std(), 0.2, rtol=0.05)
    with bad_input(match="centre_shift"):
        systems.scattered_n_body_states(jr.key(0), 4, centre_shift=jnp.zeros(3))
    with bad_input(match="spread"):
        systems.scattered_n_body_states(jr.key(0), 4, spread=0.0)
