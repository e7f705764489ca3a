import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from hypothesis import given, settings

from conftest import bad_input, float64
from conserved import symmetry as sym
from conserved import training

BASES = {
    "so2": lambda: sym.so_basis(2),
    "so3": lambda: sym.so_basis(3),
    "se2": lambda: sym.se_basis(2),
    "se3": lambda: sym.se_basis(3),
    "u1": lambda: sym.u_basis(1),
    "u2": lambda: sym.u_basis(2),
    "u3": lambda: sym.u_basis(3),
}
seeds = st.integers(0, 2**31 - 1)


def test_basis_dimensions():
    for n in (2, 3):
        assert sym.so_basis(n).shape == (n * (n - 1) // 2, n, n)
        assert sym.se_basis(n).shape == (n * (n - 1) // 2 + n, n + 1, n + 1)
    for n in (1, 2, 3):
        assert sym.u_basis(n).shape == (n * n, 2 * n, 2 * n)


@pytest.mark.parametrize("name", sorted(BASES))
def test_bases_are_linearly_independent_and_closed(name):
    basis = BASES[name]()
    assert np.linalg.matrix_rank(np.asarray(basis.reshape(len(basis), -1))) == len(basis)
    assert float(sym.bracket_closure_error(basis)) < 1e-6


def test_closure_error_detects_a_non_algebra():
    # Two symmetric matrices: their bracket is antisymmetric, outside their span.
    basis = jnp.stack([jnp.diag(jnp.array([1.0, -1.0])), jnp.array([[0.0, 1.0], [1.0, 0.0]])])
    assert float(sym.bracket_closure_error(basis)) > 0.9


@pytest.mark.parametrize("n", [1, 2, 3])
def test_u_basis_is_antisymmetric_and_commutes_with_j(n):
    basis = sym.u_basis(n)
    j = sym.symplectic_matrix(n)
    np.testing.assert_array_equal(basis, -jnp.swapaxes(basis, 1, 2))
    np.testing.assert_array_equal(basis @ j, j @ basis)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, name=st.sampled_from(sorted(BASES)))
def test_bracket_of_random_elements_stays_in_algebra(seed, name):
    basis = BASES[name]()
    a, b = jr.uniform(jr.key(seed), (2, len(basis)), minval=-1, maxval=1)
    c = sym.bracket(sym.combine(basis, a), sym.combine(basis, b))
    flat = np.asarray(basis.reshape(len(basis), -1)).T
    coeff, *_ = np.linalg.lstsq(flat, np.asarray(c).ravel(), rcond=None)
    assert np.abs(flat @ coeff - np.asarray(c).ravel()).max() < 1e-5


def test_bracket_is_antisymmetric_and_checks_shapes():
    a, b = jr.normal(jr.key(0), (2, 3, 3))
    np.testing.assert_allclose(sym.bracket(a, b), -sym.bracket(b, a))
    with bad_input(match="square"):
        sym.bracket(jnp.ones((2, 3)), jnp.ones((2, 3)))


def _group_errors(name, g):
    if name.startswith("so"):
        return [sym.orthogonality_error(g), jnp.abs(jnp.linalg.det(g) - 1).max()]
    if name.startswith("se"):
        n = g.shape[-1] - 1
        bottom = jnp.abs(g[..., n, :] - jnp.eye(n + 1)[n]).max()
        return [sym.orthogonality_error(g[..., :n, :n]), bottom]
    n = g.shape[-1] // 2
    j = sym.symplectic_matrix(n)
    return [sym.orthogonality_error(g), sym.symplectic_error(g), jnp.abs(g @ j - j @ g).max()]


def _exp_lands_in_group(seed, name, dtype, tolerance):
    basis = BASES[name]()
    coeffs = jr.uniform(jr.key(seed), (8, len(basis)), minval=-2.0, maxval=2.0)
    g = sym.exp_map(basis, coeffs)
    assert g.dtype == dtype
    for err in _group_errors(name, g):
        assert float(err) < tolerance


@settings(max_examples=25, deadline=None)
@given(seed=seeds, name=st.sampled_from(sorted(BASES)))
def test_exp_of_algebra_is_in_group_float32(seed, name):
    _exp_lands_in_group(seed, name, jnp.float32, 1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, name=st.sampled_from(sorted(BASES)))
def test_exp_of_algebra_is_in_group_float64(seed, name):
    with float64():
        _exp_lands_in_group(seed, name, jnp.float64, 1e-12)


def test_so2_exponential_is_the_planar_rotation():
    angles = jnp.linspace(-3, 3, 7)
    np.testing.assert_allclose(
        sym.exp_map(sym.so_basis(2), angles[:, None]), sym.planar_rotation(angles), atol=1e-6
    )


def test_se_translation_generator_translates():
    g = sym.exp_map(sym.se_basis(2), jnp.array([0.0, 1.5, -2.0]))
    np.testing.assert_allclose(sym.apply_affine(g, jnp.zeros(2)), [1.5, -2.0], atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=seeds)
def test_actions_are_homomorphisms(seed):
    k1, k2, k3 = jr.split(jr.key(seed), 3)
    points = jr.normal(k3, (5, 3))
    for action, compose in [
        (sym.rotations(3), jnp.matmul),
        (sym.rigid_motions(3), jnp.matmul),
    ]:
        g, h = action.sample(k1), action.sample(k2)
        np.testing.assert_allclose(
            action.apply(compose(g, h), points), action.apply(g, action.apply(h, points)), atol=1e-5
        )
    u = sym.unitary(2)
    g, h = u.sample(k1), u.sample(k2)
    state = jr.normal(k3, (4,))
    np.testing.assert_allclose(u.apply(g @ h, state), u.apply(g, u.apply(h, state)), atol=1e-5)
    # identity acts trivially
    np.testing.assert_allclose(sym.apply_affine(jnp.eye(4), points), points)


def test_rigid_motion_on_phase_space():
    key = jr.key(1)
    g = sym.random_rigid_motion(key, 2)
    state = jr.normal(key, (2 * 3 * 2,))  # 3 bodies in 2-D
    moved = sym.apply_rigid_to_phase_space(g, state, dim=2)
    q, p = state[:6].reshape(3, 2), state[6:].reshape(3, 2)
    np.testing.assert_allclose(moved[:6].reshape(3, 2), sym.apply_affine(g, q), atol=1e-6)
    np.testing.assert_allclose(moved[6:].reshape(3, 2), p @ g[:2, :2].T, atol=1e-6)
    # relative positions' lengths and |p| are invariant
    np.testing.assert_allclose(jnp.linalg.norm(moved[6:]), jnp.linalg.norm(state[6:]), rtol=1e-6)
    with bad_input(match="2·N·2"):
        sym.apply_rigid_to_phase_space(g, jnp.ones(5), dim=2)


def test_haar_samples_are_in_their_groups():
    keys = jr.split(jr.key(0), 50)
    rots = jax.vmap(lambda k: sym.random_rotation(k, 3))(keys)
    assert float(sym.orthogonality_error(rots)) < 1e-5
    np.testing.assert_allclose(jnp.linalg.det(rots), 1.0, atol=1e-5)
    # Haar on SO(2): the mean rotation matrix is near zero
    angles = jax.vmap(lambda k: sym.random_rotation(k, 2))(jr.split(jr.key(1), 4000))
    assert float(jnp.abs(angles.mean(0)).max()) < 0.05
    us = jax.vmap(lambda k: sym.random_unitary(k, 2))(keys)
    assert float(sym.orthogonality_error(us)) < 1e-5
    assert float(sym.symplectic_error(us)) < 1e-5


def test_wrong_shapes_raise():
    with bad_input(match="3×3 matrix acts on vectors of length 3"):
        sym.apply_linear(sym.random_rotation(jr.key(0), 3), jnp.ones((4, 2)))
    with bad_input(match="acts on 2-D points"):
        sym.apply_affine(jnp.eye(3), jnp.ones((4, 3)))
    with bad_input(match="last axis 3"):
        sym.combine(sym.so_basis(3), jnp.ones(2))
    with bad_input(match="shape \\(d, m, m\\)"):
        sym.combine(jnp.ones((3, 2)), jnp.ones(3))
    with bad_input(match="n must be an int >= 2"):
        sym.so_basis(1)
    with bad_input(match="even size"):
        sym.symplectic_error(jnp.eye(3))
    with bad_input(match="shape \\(N, 2\\)"):
        sym.planar_invariants(jnp.ones((3, 3)))


def _mlp(key, d):
    return eqx.nn.MLP(d, "scalar", 16, 2, activation=jnp.tanh, key=key)


def test_invariance_error_separates_invariant_from_not():
    points = jr.normal(jr.key(0), (64, 4, 2))
    action = sym.rotations(2)
    invariant = lambda x: jnp.sum(x**2) + jnp.sum(x[0] * x[1])  # noqa: E731
    not_invariant = lambda x: jnp.sum(x[:, 0] ** 3) + 1.0  # noqa: E731
    assert float(sym.invariance_error(invariant, action, points, jr.key(1))) < 1e-6
    assert float(sym.invariance_error(not_invariant, action, points, jr.key(1))) > 0.1
    mlp = _mlp(jr.key(2), 8)
    assert float(sym.invariance_error(lambda x: mlp(x.ravel()), action, points, jr.key(1))) > 0.01


def test_equivariance_error():
    points = jr.normal(jr.key(0), (32, 5, 3))
    action = sym.rigid_motions(3)
    centroid = lambda x: x.mean(axis=0)  # noqa: E731  (equivariant: moves with the points)
    first = lambda x: x[0] ** 2  # noqa: E731
    assert float(sym.equivariance_error(centroid, action, points, jr.key(1))) < 1e-6
    assert float(sym.equivariance_error(first, action, points, jr.key(1))) > 0.1


@settings(max_examples=4, deadline=None)
@given(seed=seeds)
def test_symmetrised_function_is_exactly_invariant_for_finite_groups(seed):
    with float64():
        k1, k2, k3 = jr.split(jr.key(seed), 3)
        # a module, so every example's check reuses the first one's compiled program
        f = eqx.nn.Sequential([eqx.nn.Lambda(jnp.ravel), _mlp(k1, 6)])
        points = jr.normal(k2, (16, 3, 2))
        for action in (sym.cyclic_rotations(5), sym.permutations_of_points(3)):
            fs = sym.symmetrise(f, action)
            assert float(sym.invariance_error(fs, action, points, k3)) < 1e-12
            assert float(sym.invariance_error(f, action, points, k3)) > 1e-3


def test_symmetrise_leaves_invariant_functions_unchanged():
    action = sym.rotations(2)
    f = lambda x: jnp.sum(x**2)  # noqa: E731
    fs = sym.symmetrise(f, action, num_samples=8, key=jr.key(0))
    x = jr.normal(jr.key(1), (3, 2))
    np.testing.assert_allclose(fs(x), f(x), rtol=1e-6)


def test_monte_carlo_symmetrisation_shrinks_with_samples():
    action = sym.rotations(2)
    mlp = _mlp(jr.key(0), 6)
    f = lambda x: mlp(x.ravel())  # noqa: E731
    points = jr.normal(jr.key(1), (64, 3, 2))
    errors = [
        float(
            sym.invariance_error(
                sym.symmetrise(f, action, num_samples=s, key=jr.key(2)), action, points, jr.key(3)
            )
        )
        for s in (4, 256)
    ]
    assert errors[1] < errors[0] / 3


def test_symmetrise_needs_elements_for_lie_groups():
    with bad_input(match="not finite"):
        sym.symmetrise(jnp.sum, sym.rotations(2))
    with bad_input(match="key"):
        sym.symmetrise(jnp.sum, sym.rotations(2), num_samples=4)


def test_symmetrised_model_trains_and_holds_no_group_parameters():
    action = sym.cyclic_rotations(4)
    flat_mlp = eqx.nn.Sequential([eqx.nn.Lambda(jnp.ravel), _mlp(jr.key(0), 6)])
    model = sym.Symmetrised(flat_mlp, action)
    # Only the MLP's arrays are trainable: the action holds none.
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    assert len(leaves) == len(
        jax.tree_util.tree_leaves(eqx.filter(model.model, eqx.is_inexact_array))
    )
    x = jr.normal(jr.key(1), (32, 3, 2))
    y = jax.vmap(lambda p: jnp.sum(p**2))(x)

    def loss(m, batch, key):
        xb, yb = batch
        return training.mse(jax.vmap(m)(xb), yb)

    result = training.fit(
        loss, model, optax.adam(1e-2), steps=50, key=jr.key(2), data=(x, y), progress=False
    )
    assert result.losses[-1] < result.losses[0]
    assert float(sym.invariance_error(result.model, action, x, jr.key(3))) < 1e-6
    with bad_input(match="key"):
        sym.Symmetrised(_mlp(jr.key(0), 6), sym.rotations(2), 4)(x[0])


def test_augment_and_planar_invariants():
    action = sym.rotations(2)
    points = jr.normal(jr.key(0), (10, 3, 2))
    moved = sym.augment(action, jr.key(1), points)
    np.testing.assert_allclose(
        jax.vmap(sym.planar_invariants)(moved), jax.vmap(sym.planar_invariants)(points), atol=1e-5
    )
    assert not np.allclose(moved, points)
    mirrored = points * jnp.array([1.0, -1.0])
    assert not np.allclose(
        jax.vmap(sym.planar_invariants)(mirrored), jax.vmap(sym.planar_invariants)(points)
    )
