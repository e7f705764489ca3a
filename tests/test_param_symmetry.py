import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import bad_input, float64
from conserved import param_symmetry as ps

seeds = st.integers(0, 2**31 - 1)


def _mlp(key, activation=jax.nn.relu, width=8):
    return eqx.nn.MLP(5, 3, width, 2, activation=activation, key=key)


def _rel_change(f, g, x):
    a, b = jax.vmap(f)(x), jax.vmap(g)(x)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))


@settings(max_examples=10, deadline=None)
@given(seed=seeds)
def test_actions_preserve_the_function(seed):
    with float64():
        k = jr.split(jr.key(seed), 6)
        x = jr.normal(k[0], (32, 5))
        relu = _mlp(k[1])
        perm = np.asarray(jr.permutation(k[2], 8))
        assert _rel_change(relu, ps.act_on_hidden(relu, 0, ps.permutation_matrix(perm)), x) < 1e-12
        scales = jnp.exp(jr.normal(k[3], (8,)))
        assert _rel_change(relu, ps.act_on_hidden(relu, 1, jnp.diag(scales)), x) < 1e-12
        tanh = _mlp(k[1], jnp.tanh)
        signs = jnp.where(jr.bernoulli(k[4], 0.5, (8,)), 1.0, -1.0)
        assert _rel_change(tanh, ps.act_on_hidden(tanh, 0, jnp.diag(signs)), x) < 1e-12
        linear = _mlp(k[1], lambda z: z)
        g = jnp.eye(8) + 0.3 * jr.normal(k[5], (8, 8))
        assert _rel_change(linear, ps.act_on_hidden(linear, 0, g), x) < 1e-12
        # a rescaling breaks a tanh network
        assert _rel_change(tanh, ps.act_on_hidden(tanh, 0, jnp.diag(scales)), x) > 1e-3


def test_attention_and_softmax_symmetries():
    with float64():
        k = jr.split(jr.key(0), 6)
        x = jr.normal(k[0], (6, 8))
        params = tuple(
            jr.normal(kk, s) for kk, s in zip(k[1:5], [(8, 4), (8, 4), (8, 4), (4, 8)], strict=True)
        )
        a = jnp.eye(4) + 0.3 * jr.normal(k[5], (4, 4))
        b = jnp.eye(4) + 0.2 * jr.normal(k[4], (4, 4))
        out = ps.attention(x, *params)
        moved = ps.attention(x, *ps.act_on_attention(params, a, b))
        assert float(jnp.max(jnp.abs(out - moved))) < 1e-12
        mlp = _mlp(k[0])
        logp = jax.nn.log_softmax(mlp(x[0, :5]))
        shifted = jax.nn.log_softmax(ps.softmax_shift(mlp, 3.7)(x[0, :5]))
        assert float(jnp.max(jnp.abs(logp - shifted))) < 1e-12
        w = jr.normal(k[5], (7, 5))
        ln = ps.layer_norm(x[:, :5] @ w.T)
        assert float(jnp.max(jnp.abs(ln - ps.layer_norm(x[:, :5] @ (3.7 * w).T)))) < 1e-12
        np.testing.assert_allclose(jnp.std(ln, axis=-1), 1.0, rtol=1e-12)


def test_conserved_quantities_under_gradient_flow_of_a_random_loss():
    with float64():
        k = jr.split(jr.key(1), 4)
        x, y = jr.normal(k[0], (16, 5)), jr.normal(k[1], (16, 3))
        mlp = _mlp(k[2], width=6)
        params, static = eqx.partition(mlp, eqx.is_inexact_array)

        def loss(p):
            m = eqx.combine(p, static)
            return jnp.mean((jax.vmap(m)(x) - y) ** 2)

        path = ps.gradient_flow(loss, params, jnp.linspace(0, 2, 5), dt0=1e-3)
        start = eqx.combine(jax.tree_util.tree_map(lambda a: a[0], path), static)
        end = eqx.combine(jax.tree_util.tree_map(lambda a: a[-1], path), static)
        assert float(loss(jax.tree_util.tree_map(lambda a: a[-1], path))) < float(loss(params))
        for layer in (0, 1):
            drift = jnp.max(
                jnp.abs(ps.neuron_balance(end, layer) - ps.neuron_balance(start, layer))
            )
            assert float(drift) < 1e-5
        # Linear network: Q = W2ᵀW2 - W1W1ᵀ
        w = (0.5 * jr.normal(k[3], (6, 4)), 0.5 * jr.normal(k[0], (3, 6)))
        xl, yl = jr.normal(k[1], (4, 20)), jr.normal(k[2], (3, 20))
        lin_loss = lambda p: 0.5 * jnp.mean(jnp.sum((p[1] @ p[0] @ xl - yl) ** 2, 0))  # noqa: E731
        lin = ps.gradient_flow(lin_loss, w, jnp.linspace(0, 5, 3))
        q0 = ps.linear_imbalance(*w)
        q1 = ps.linear_imbalance(lin[0][-1], lin[1][-1])
        assert float(jnp.max(jnp.abs(q1 - q0))) < 1e-8
        # ... and gradient descent breaks it
        gd = ps.optimiser_path(lin_loss, w, optax.sgd(0.1), 50)
        assert float(jnp.max(jnp.abs(ps.linear_imbalance(gd[0][-1], gd[1][-1]) - q0))) > 1e-6


def test_teleport_keeps_loss_and_raises_gradient():
    with float64():
        k = jr.split(jr.key(2), 4)
        x, y = jr.normal(k[0], (6, 32)), jr.normal(k[1], (6, 32))
        w1, w2 = 0.1 * jr.normal(k[2], (6, 6)), 0.1 * jr.normal(k[3], (6, 6))
        loss = lambda p: 0.5 * jnp.mean(jnp.sum((p[1] @ p[0] @ x - y) ** 2, 0))  # noqa: E731
        n1, n2, steps = ps.teleport_linear(loss, w1, w2, gain=1.5)
        assert abs(float(loss((n1, n2)) - loss((w1, w2)))) < 1e-12
        g_old = sum(jnp.sum(g**2) for g in jax.grad(loss)((w1, w2)))
        g_new = sum(jnp.sum(g**2) for g in jax.grad(loss)((n1, n2)))
        assert float(g_new) >= 1.5 * float(g_old) and steps > 0


def test_weight_matching_recovers_a_planted_permutation():
    with float64():
        mlp = eqx.nn.MLP(4, 2, 10, 2, key=jr.key(3))
        planted = [
            np.asarray(jr.permutation(jr.key(4), 10)),
            np.asarray(jr.permutation(jr.key(5), 10)),
        ]
        shuffled = ps.permute_mlp(mlp, planted)
        x = jr.normal(jr.key(6), (8, 4))
        assert _rel_change(mlp, shuffled, x) < 1e-12
        perms = ps.weight_matching(mlp, shuffled)
        aligned = ps.permute_mlp(shuffled, perms)
        for la, lb in zip(mlp.layers, aligned.layers, strict=True):
            np.testing.assert_allclose(la.weight, lb.weight, atol=1e-12)
        assert _rel_change(mlp, aligned, x) < 1e-12
        alphas, losses = ps.interpolation_losses(
            lambda m: jnp.sum(jax.vmap(m)(x) ** 2), mlp, aligned, 5
        )
        assert ps.barrier(alphas, losses) < 1e-9


def test_bad_input_raises():
    mlp = _mlp(jr.key(0))
    with bad_input(match="hidden layer index"):
        ps.act_on_hidden(mlp, 2, jnp.eye(8))
    with bad_input(match="8×8"):
        ps.act_on_hidden(mlp, 0, jnp.eye(3))
    with bad_input(match="permutation"):
        ps.permutation_matrix([0, 0, 1])
    with bad_input(match="one permutation per hidden layer"):
        ps.permute_mlp(mlp, [np.arange(8)])
    with bad_input(match="W1"):
        ps.linear_imbalance(jnp.ones((3, 2)), jnp.ones((2, 4)))
    with bad_input(match="gain"):
        ps.teleport_linear(lambda p: 0.0, jnp.eye(2), jnp.eye(2), gain=0.5)


def test_booth_rotation_keeps_the_loss_and_changes_the_gradient():
    with float64():
        xy = jnp.array([5.0, -5.0])
        for angle in (0.3, 1.7, -2.2):
            moved = ps.booth_rotate(xy, angle)
            assert abs(float(ps.booth(moved) - ps.booth(xy))) < 1e-10
        norms = [
            float(jnp.sum(jax.grad(ps.booth)(ps.booth_rotate(xy, a)) ** 2))
            for a in jnp.linspace(0, 6.28, 64)
        ]
        assert max(norms) > 1.5 * min(norms)


@settings(max_examples=10, deadline=None)
@given(seed=seeds)
def test_booth_teleport_is_the_steepest_point_and_one_step_from_the_minimum(seed):
    with float64():
        xy = 10 * jr.normal(jr.key(seed), (2,))
        moved = ps.booth_teleport(xy)
        assert abs(float(ps.booth(moved) - ps.booth(xy))) <= 1e-12 * (1 + float(ps.booth(xy)))
        best = float(jnp.sum(jax.grad(ps.booth)(moved) ** 2))
        grid = jax.vmap(lambda a: jnp.sum(jax.grad(ps.booth)(ps.booth_rotate(xy, a)) ** 2))(
            jnp.linspace(0.0, 2 * jnp.pi, 721)
        )
        assert best >= float(grid.max()) * (1 - 1e-12)
        # a residual on the top eigenvector of AAᵀ: one step of 1/λ_max is Newton's step
        landed = moved - jax.grad(ps.booth)(moved) / 18.0
        assert float(ps.booth(landed)) <= 1e-20 * (1 + float(ps.booth(xy)))
    with bad_input(match="shape"):
        ps.booth_teleport(jnp.zeros(3))
