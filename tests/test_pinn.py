from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import Array

from conftest import bad_input, float64
from conserved import pde, pinn, projection


def _setup():
    x, dx = pde.periodic_grid(32, 2.0)
    ts = jnp.linspace(0.0, 1.0, 5)
    model = pinn.PINN(width=8, depth=2, key=jr.key(0))
    c1 = lambda t: 0.1 * t  # noqa: E731
    c2 = lambda t: 1.0 + 0.2 * t  # noqa: E731
    return x, dx, ts, model, c1, c2


@pytest.mark.parametrize("mode", ["linear", "quadratic", "joint"])
def test_projected_fields_satisfy_the_constraints_and_match_autodiff(mode):
    with float64():
        x, dx, ts, model, c1, c2 = _setup()
        cons = pinn.Constraints.for_mode(mode, c1, c2)
        f = pinn.fields(model, x, dx, ts, cons)
        if mode in ("linear", "joint"):
            np.testing.assert_allclose(
                projection.linear_integral(f.u, dx), jax.vmap(c1)(ts), atol=1e-12
            )
        if mode in ("quadratic", "joint"):
            # exact up to the eps guard: relative error ~ eps / (dx Σ fluctuation²), about 1e-9
            # here because a small untrained network is nearly constant in x
            np.testing.assert_allclose(
                projection.quadratic_integral(f.u, dx), jax.vmap(c2)(ts), rtol=1e-8
            )
        np.testing.assert_allclose(f.u, pinn.predict(model, x, dx, ts, cons), atol=1e-12)
        # off the grid, the same affine map: at the grid's own points it is the projection
        np.testing.assert_allclose(
            pinn.predict(model, x, dx, ts, cons, at=x), f.u, rtol=1e-9, atol=1e-12
        )
        between = x + 0.5 * dx
        scale = (pinn.predict(model, x, dx, ts, cons, at=between) - f.u) / (
            pinn.predict(model, x, dx, ts, at=between) - pinn.predict(model, x, dx, ts)
        )
        np.testing.assert_allclose(scale, scale[:, :1] * jnp.ones_like(scale), rtol=1e-6)

        # The time derivative through the projection equals a finite difference of the
        # projected field; the x-derivative equals autodiff of ũ(x, t) = a(t) + s(t) u(x, t).
        h = 1e-6
        plus = pinn.predict(model, x, dx, ts + h, cons)
        minus = pinn.predict(model, x, dx, ts - h, cons)
        np.testing.assert_allclose(f.u_t, (plus - minus) / (2 * h), atol=1e-6)
        # and the integrals' time derivatives are the targets' (c1' = 0.1, c2' = 0.2)
        if mode in ("linear", "joint"):
            np.testing.assert_allclose(projection.linear_integral(f.u_t, dx), 0.1, atol=1e-9)


def test_unprojected_fields_are_the_network_derivatives():
    with float64():
        x, dx, ts, model, _, _ = _setup()
        f = pinn.fields(model, x, dx, ts)
        t, xi = ts[2], x[3]
        assert float(f.u[2, 3]) == pytest.approx(float(model(xi, t)))
        assert float(f.u_x[2, 3]) == pytest.approx(float(jax.grad(model, argnums=0)(xi, t)))
        assert float(f.u_xx[2, 3]) == pytest.approx(
            float(jax.grad(jax.grad(model, argnums=0), argnums=0)(xi, t))
        )


def test_loss_terms_and_bad_mode():
    x, dx, ts, model, c1, c2 = _setup()
    u0 = jnp.sin(jnp.pi * x)
    args = dict(x=x, dx=dx, ts=ts, u0=u0, residual=lambda f: pinn.advection_residual(f, 0.1))
    plain = pinn.pinn_loss(model, **args)
    soft = pinn.pinn_loss(model, **args, soft=pinn.Constraints(linear=c1, quadratic=c2))
    assert float(soft) > float(plain)
    joint = pinn.Constraints.for_mode("joint", c1, c2)
    grads = eqx.filter_grad(lambda m: pinn.pinn_loss(m, **args, constraints=joint))(model)
    assert bool(jnp.all(jnp.isfinite(grads.mlp.layers[0].weight)))
    with bad_input(match="mode"):
        pinn.Constraints.for_mode("cubic", c1, c2)


def test_third_derivative_and_other_residuals():
    with float64():
        x, dx, ts, model, c1, c2 = _setup()
        f = pinn.fields(model, x, dx, ts, order=3)
        t, xi = ts[1], x[5]
        d3 = jax.grad(jax.grad(jax.grad(model, argnums=0), argnums=0), argnums=0)(xi, t)
        assert float(f.u_xxx[1, 5]) == pytest.approx(float(d3))
        cons = pinn.Constraints.for_mode("joint", c1, c2)
        fp = pinn.fields(model, x, dx, ts, cons, order=3)
        scale = fp.u_x / f.u_x
        np.testing.assert_allclose(fp.u_xxx, scale * f.u_xxx, rtol=1e-9)
        with bad_input(match="order=3"):
            pinn.kdv_residual(pinn.fields(model, x, dx, ts), 0.05)


@pytest.mark.parametrize("mode", ["linear", "quadratic", "joint"])
def test_coefficient_derivatives_equal_a_jvp_through_the_network(mode):
    """a', s' from the closed form along u_t equal the jvp in t that runs the network again
    (the former implementation), and the linear case is a' = c1'/(n dx) - mean(u_t)."""
    with float64():
        x, dx, ts, model, c1, c2 = _setup()
        cons = pinn.Constraints.for_mode(mode, c1, c2)
        for t in ts[1:3]:
            u = jax.vmap(lambda xi, t=t: model(xi, t))(x)
            u_t = jax.vmap(lambda xi, t=t: jax.grad(model, argnums=1)(xi, t))(x)

            def coefficients(time):
                values = jax.vmap(lambda xi: model(xi, time))(x)
                k1, k2 = cons.values(time)
                return projection.affine_coefficients(values, dx, linear=k1, quadratic=k2)

            expected = jax.jvp(coefficients, (t,), (jnp.ones_like(t),))
            got = pinn.coefficient_derivatives(u, u_t, dx, t, cons)
            leaves = jax.tree_util.tree_leaves
            for e, g in zip(leaves(expected), leaves(got), strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
            (_, scale), (d_offset, d_scale) = got
            if mode == "linear":
                assert float(scale) == 1.0 and float(d_scale) == 0.0
                expected_offset = 0.1 / (len(x) * dx) - jnp.mean(u_t)
                np.testing.assert_allclose(d_offset, expected_offset, rtol=1e-12)


class _Weighted(eqx.Module):
    """loss(model, weight) with the weight bound as an array."""

    loss: Callable
    weight: Array

    def __call__(self, model):
        return self.loss(model, self.weight)


def test_training_together_equals_training_each_alone():
    """Adam on the summed loss and the vmapped L-BFGS phase give every member the run it gets
    alone (same steps, same optimiser), up to round-off; one argument per member reaches it."""
    with float64():
        x, dx, ts, _, c1, c2 = _setup()
        u0 = jnp.sin(jnp.pi * x)
        soft = pinn.Constraints(linear=c1, quadratic=c2)

        def loss(m, weight):
            return pinn.pinn_loss(
                m,
                x=x,
                dx=dx,
                ts=ts,
                u0=u0,
                residual=lambda f: pinn.advection_residual(f, 0.1),
                soft=soft,
                soft_weight=weight,
                length=2.0,
            )

        models = [pinn.PINN(width=8, depth=2, key=jr.key(s)) for s in (1, 2)]
        weights = jnp.array([1.0, 10.0])
        together, losses = pinn.train_together(
            loss,
            models,
            adam_steps=20,
            lbfgs_steps=5,
            key=jr.key(3),
            args=weights,
            progress=False,
        )
        assert losses.shape == (25,)
        for model, weight, trained in zip(models, weights, together, strict=True):
            alone, _ = pinn.train_adam_lbfgs(
                _Weighted(loss, weight),  # a module: both members' runs share one compile
                model,
                adam_steps=20,
                lbfgs_steps=5,
                key=jr.key(3),
                progress=False,
            )
            for a, b in zip(
                jax.tree_util.tree_leaves(eqx.filter(alone, eqx.is_array)),
                jax.tree_util.tree_leaves(eqx.filter(trained, eqx.is_array)),
                strict=True,
            ):
                np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-9)
        with bad_input(match="one entry per model"):
            pinn.train_together(
                loss, models, adam_steps=1, lbfgs_steps=0, key=jr.key(0), args=jnp.ones(3)
            )


class _Exact(eqx.Module):
    """A closed-form u(x, t), called like a PINN."""

    fn: object = eqx.field(static=True)

    def __call__(self, x, t):
        return self.fn(x, t)


def _residual_on_grid(fn, residual, order=2):
    x, _ = pde.periodic_grid(16, 2 * np.pi)
    ts = jnp.linspace(0.0, 0.5, 3)
    return residual(pinn.fields(_Exact(fn), x, 1.0, ts, order=order))


def _sech2(z):
    return 1.0 / jnp.cosh(z) ** 2


# Exact solutions of each PDE: the residual vanishes to round-off. A sign or factor error in a
# residual (or a wrong derivative in `fields`) leaves an O(1) residual on them.
EXACT = {
    # u_t + β u_x = 0: any profile moving at speed β
    "advection": (
        lambda x, t: jnp.sin(x - 0.7 * t) + 0.3 * jnp.cos(2 * (x - 0.7 * t)),
        lambda f: pinn.advection_residual(f, 0.7),
        2,
    ),
    # u_t = κ u_xx: a decaying Fourier mode
    "heat": (
        lambda x, t: jnp.exp(-0.1 * 4 * t) * jnp.sin(2 * x),
        lambda f: pinn.heat_residual(f, 0.1),
        2,
    ),
    # u_t + u u_x = ν u_xx: Cole-Hopf, u = -2ν φ_x / φ with φ = 1 + a e^{-νt} cos x
    "burgers": (
        lambda x, t: (
            2
            * 0.05
            * 0.5
            * jnp.exp(-0.05 * t)
            * jnp.sin(x)
            / (1 + 0.5 * jnp.exp(-0.05 * t) * jnp.cos(x))
        ),
        lambda f: pinn.burgers_residual(f, 0.05),
        2,
    ),
    # u_t + u u_x + δ² u_xxx = 0: the soliton u = 3c sech²(√c (x - ct) / (2δ))
    "kdv": (
        lambda x, t: 3 * 0.8 * _sech2(jnp.sqrt(0.8) * (x - 3.0 - 0.8 * t) / (2 * 0.5)),
        lambda f: pinn.kdv_residual(f, 0.5),
        3,
    ),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_residuals_vanish_on_exact_solutions(name):
    fn, residual, order = EXACT[name]
    with float64():
        r = _residual_on_grid(fn, residual, order)
        assert r.shape == (3, 16)
        assert float(jnp.max(jnp.abs(r))) < 1e-10
        # ... and do not vanish on a solution of another equation (the test can fail)
        other = _residual_on_grid(lambda x, t: jnp.sin(x + t), residual, order)
        assert float(jnp.max(jnp.abs(other))) > 1e-2


def test_allen_cahn_residual_by_hand():
    # u = A(t) sin x on a full period: mean_x (u - u^3) = 0, so by hand
    # u_t - ε² u_xx - (u - u³) = A' sin x + ε² A sin x - A sin x + A³ sin³ x.
    eps = 0.3
    amplitude = lambda t: 0.5 + 0.2 * t  # noqa: E731
    with float64():
        x, _ = pde.periodic_grid(16, 2 * np.pi)
        ts = jnp.linspace(0.0, 0.5, 3)
        f = pinn.fields(_Exact(lambda x, t: amplitude(t) * jnp.sin(x)), x, 1.0, ts)
        r = pinn.allen_cahn_residual(f, eps)
        a = amplitude(ts)[:, None]
        s = jnp.sin(x)[None, :]
        expected = 0.2 * s + eps**2 * a * s - a * s + a**3 * s**3
        np.testing.assert_allclose(r, expected, atol=1e-12)
        # the mean of g is subtracted: a constant field that is not an equilibrium of g has
        # zero residual (its mass cannot change), unlike plain Allen-Cahn
        flat = pinn.fields(_Exact(lambda x, t: 0.5 + 0 * x), x, 1.0, ts)
        np.testing.assert_allclose(pinn.allen_cahn_residual(flat, eps), 0.0, atol=1e-14)


def test_periodicity_penalty_is_zero_exactly_for_a_periodic_model():
    # the loss with `length` adds mean_t (u(x0, t) - u(x0 + length, t))², computed by hand here
    periodic = _Exact(lambda x, t: jnp.sin(x - t))
    drifting = _Exact(lambda x, t: jnp.sin(x - t) + 0.1 * x)
    with float64():
        x, dx = pde.periodic_grid(16, 2 * np.pi)
        ts = jnp.linspace(0.0, 1.0, 4)
        args = dict(x=x, dx=dx, ts=ts, u0=jnp.sin(x), residual=lambda f: f.u_t + f.u_x)
        for model, penalty in ((periodic, 0.0), (drifting, (0.1 * 2 * np.pi) ** 2)):
            plain = pinn.pinn_loss(model, **args)
            with_period = pinn.pinn_loss(model, **args, length=2 * np.pi)
            assert float(with_period - plain) == pytest.approx(penalty, abs=1e-12)
