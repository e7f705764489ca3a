"""Physics-informed neural networks (PINNs) on a time-grouped tensor grid, with exact
conservation by projection (PINN-Proj) or a soft penalty.

A PINN u_θ(x, t) is an MLP of two inputs. Collocation points form a tensor grid: the quadrature
grid x_1..x_n (spacing dx) at each of T times. At each time the projection of
`projection.affine_coefficients` turns the network into

    ũ(x, t) = a(t) + s(t) u_θ(x, t)        (offset a, scale s),

with a, s computed from the n grid values at that time, so every point of the grid reuses the
evaluations the projection needs. Derivatives follow by the chain rule:
ũ_x = s u_x, ũ_xx = s u_xx, ũ_t = a' + s' u + s u_t, where a', s' are the derivative of the
closed form for (a, s) along u_t (`coefficient_derivatives`): no second pass of the network.

- `PINN`: the network.
- `Constraints`: the target integrals c1(t) = ∫u dx and/or c2(t) = ∫u² dx as functions of t.
- `fields(model, x, dx, ts, constraints)`: ũ, ũ_t and spatial derivatives on the grid, `(T, n)`.
- `advection_residual`, `burgers_residual`, `kdv_residual`, `heat_residual`,
  `allen_cahn_residual`: PDE residuals from those fields.
- `pinn_loss`: initial-condition data + periodicity + residual (+ soft penalty).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray, Scalar

from . import config, projection, training
from ._checks import positive_int
from ._sharing import shared

__all__ = [
    "FieldNetwork",
    "MODES",
    "PINN",
    "Constraints",
    "Fields",
    "coefficient_derivatives",
    "train_together",
    "fields",
    "predict",
    "advection_residual",
    "burgers_residual",
    "kdv_residual",
    "heat_residual",
    "allen_cahn_residual",
    "pinn_loss",
    "train_adam_lbfgs",
    "integral_errors",
]


MODES = ("none", "linear", "quadratic", "joint")


FieldNetwork = Callable[[Scalar, Scalar], Scalar]
"""A network u(x, t) -> scalar at one point, such as a `PINN` (any callable of that shape
works: the tests pass closed-form solutions)."""


class PINN(eqx.Module):
    """u_θ(x, t): an MLP R² -> R with tanh activations."""

    mlp: eqx.nn.MLP

    def __init__(self, *, width: int = 20, depth: int = 4, key: PRNGKeyArray):
        self.mlp = eqx.nn.MLP(2, "scalar", width, depth, activation=jnp.tanh, key=key)

    def __call__(self, x: Scalar, t: Scalar) -> Scalar:
        return self.mlp(jnp.stack([x, t]))


class Constraints(eqx.Module):
    """Which integrals to enforce and their values over time: `linear(t)` = ∫u dx and
    `quadratic(t)` = ∫u² dx (callables of a scalar t; `None` to leave one free)."""

    linear: Callable[[Scalar], Scalar] | None = eqx.field(static=True, default=None)
    quadratic: Callable[[Scalar], Scalar] | None = eqx.field(static=True, default=None)

    def values(self, t: Scalar) -> tuple[Scalar | None, Scalar | None]:
        """(c1(t), c2(t)), `None` for an integral left free."""
        c1 = None if self.linear is None else self.linear(t)
        c2 = None if self.quadratic is None else self.quadratic(t)
        return c1, c2

    @classmethod
    def for_mode(cls, mode: str, linear, quadratic) -> Constraints | None:
        """Constraints of a projection mode (`none` -> None)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return {
            "none": None,
            "linear": cls(linear=linear),
            "quadratic": cls(quadratic=quadratic),
            "joint": cls(linear=linear, quadratic=quadratic),
        }[mode]


class Fields(NamedTuple):
    """Projected field and its derivatives on the (T, n) grid (`u_xxx` only with order=3)."""

    u: Array
    u_t: Array
    u_x: Array
    u_xx: Array
    u_xxx: Array | None = None


def _raw(model: FieldNetwork, x: Array, t: Scalar, order: int = 2):
    """u, u_t and the x-derivatives up to `order` of the bare network at the grid x, one time t
    (each (n,))."""

    def one(xi):
        f = lambda a, b: model(a, b)  # noqa: E731
        d1 = jax.grad(f, argnums=0)
        d2 = jax.grad(d1, argnums=0)
        out = (f(xi, t), jax.grad(f, argnums=1)(xi, t), d1(xi, t), d2(xi, t))
        if order >= 3:
            out = out + (jax.grad(d2, argnums=0)(xi, t),)
        return out

    return jax.vmap(one)(x)


def coefficient_derivatives(
    u: Float[Array, " n"],
    u_t: Float[Array, " n"],
    dx: float,
    t: Scalar,
    constraints: Constraints,
) -> tuple[tuple[Scalar, Scalar], tuple[Scalar, Scalar]]:
    """The projection's coefficients at one time, ((a, s), (a', s')), from the network's grid
    values u(x_j, t) and their time derivatives u_t(x_j, t).

    (a, s) = `projection.affine_coefficients(u, dx, c1(t), c2(t))` is a closed form in u and
    the targets, so its time derivative is the forward-mode derivative of that closed form with
    tangents u_t (already computed for the residual) and c1'(t), c2'(t): the network is not run
    again. For the linear projection this is a' = c1'/(n dx) - mean(u_t), s' = 0.
    """
    values, tangents = jax.jvp(constraints.values, (t,), (jnp.ones_like(t),))

    def closed_form(v, c):
        return projection.affine_coefficients(v, dx, linear=c[0], quadratic=c[1])

    return jax.jvp(closed_form, (u, values), (u_t, tangents))


def fields(
    model: FieldNetwork,
    x: Float[Array, " n"],
    dx: float,
    ts: Float[Array, " T"],
    constraints: Constraints | None = None,
    *,
    order: int = 2,
) -> Fields:
    """The (projected) field and its derivatives at every grid point and time, each `(T, n)`;
    `order=3` adds u_xxx (for KdV)."""
    x, ts = jnp.asarray(x), jnp.asarray(ts)
    if x.ndim != 1 or ts.ndim != 1:
        raise ValueError(f"x and ts must be 1-D, got shapes {x.shape} and {ts.shape}")
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, got {order!r}")

    def at(t):
        raw = _raw(model, x, t, order)
        u, u_t, u_x, u_xx = raw[:4]
        if constraints is None:
            return raw
        (a, s), (da, ds) = coefficient_derivatives(u, u_t, dx, t, constraints)
        c1, c2 = constraints.values(t)
        return (
            (
                projection.project(u, dx, linear=c1, quadratic=c2),  # = a + s u, rounded well
                da + ds * u + s * u_t,
                s * u_x,
                s * u_xx,
            )
            + tuple(s * r for r in raw[4:])
        )

    return Fields(*jax.vmap(at)(ts))


def predict(
    model: FieldNetwork,
    x,
    dx,
    ts,
    constraints: Constraints | None = None,
    *,
    at: Float[Array, " m"] | None = None,
) -> Float[Array, "T n"]:
    """ũ on the grid x at every time of `ts` (no derivatives), shape `(T, n)`. With `at`, ũ at
    those points instead, `(T, m)`: the projection's coefficients still come from the grid x
    (ũ = a(t) + s(t) u_θ(at, t)), which is how the projected model is defined off its grid."""
    x, ts = jnp.asarray(x), jnp.asarray(ts)

    def on_grid(t):
        values = jax.vmap(lambda xi: model(xi, t))(x)
        if constraints is None:
            return values
        c1, c2 = constraints.values(t)
        return projection.project(values, dx, linear=c1, quadratic=c2)

    def off_grid(t):
        points = jax.vmap(lambda xi: model(xi, t))(jnp.asarray(at))
        if constraints is None:
            return points
        values = jax.vmap(lambda xi: model(xi, t))(x)
        c1, c2 = constraints.values(t)
        offset, scale = projection.affine_coefficients(values, dx, linear=c1, quadratic=c2)
        return offset + scale * points

    return jax.vmap(on_grid if at is None else off_grid)(ts)


def advection_residual(f: Fields, beta: float) -> Array:
    """u_t + β u_x."""
    return f.u_t + beta * f.u_x


def burgers_residual(f: Fields, nu: float) -> Array:
    """u_t + u u_x - ν u_xx."""
    return f.u_t + f.u * f.u_x - nu * f.u_xx


def kdv_residual(f: Fields, delta: float) -> Array:
    """u_t + u u_x + δ² u_xxx (needs `fields(..., order=3)`)."""
    if f.u_xxx is None:
        raise ValueError("the KdV residual needs u_xxx: compute the fields with order=3")
    return f.u_t + f.u * f.u_x + delta**2 * f.u_xxx


def heat_residual(f: Fields, kappa: float) -> Array:
    """u_t - κ u_xx."""
    return f.u_t - kappa * f.u_xx


def allen_cahn_residual(f: Fields, epsilon: float) -> Array:
    """u_t - ε² u_xx - g(u) + mean_x g(u), g(u) = u - u³ (mass-conserving Allen–Cahn)."""
    g = f.u - f.u**3
    return f.u_t - epsilon**2 * f.u_xx - g + jnp.mean(g, axis=-1, keepdims=True)


def pinn_loss(
    model: FieldNetwork,
    *,
    x: Float[Array, " n"],
    dx: float,
    ts: Float[Array, " T"],
    u0: Float[Array, " n"],
    residual: Callable[[Fields], Array],
    constraints: Constraints | None = None,
    soft: Constraints | None = None,
    soft_weight: float | Scalar = 10.0,
    length: float | None = None,
    order: int = 2,
) -> Scalar:
    """Initial-condition MSE + mean squared residual on the (T, n) grid; with `length`, a
    periodicity penalty (u(x_0, t) = u(x_0 + length, t)); with `soft`, the soft-constraint
    penalty `soft_weight` · mean_t |ĉ(t) - c(t)|² on the integrals it names (PINN-SC)."""
    grid = fields(model, x, dx, ts, constraints, order=order)
    initial = predict(model, x, dx, jnp.zeros(1, ts.dtype), constraints)[0]
    loss = jnp.mean((initial - u0) ** 2) + jnp.mean(residual(grid) ** 2)
    if length is not None:
        left = jax.vmap(lambda t: model(x[0], t))(ts)
        right = jax.vmap(lambda t: model(x[0] + length, t))(ts)
        loss = loss + jnp.mean((left - right) ** 2)
    if soft is not None:
        if soft.linear is not None:
            target = jax.vmap(soft.linear)(ts)
            loss = loss + soft_weight * jnp.mean(
                (projection.linear_integral(grid.u, dx) - target) ** 2
            )
        if soft.quadratic is not None:
            target = jax.vmap(soft.quadratic)(ts)
            loss = loss + soft_weight * jnp.mean(
                (projection.quadratic_integral(grid.u, dx) - target) ** 2
            )
    return loss


class _FullBatch(eqx.Module):
    """`loss(model)` as `training.fit`'s `loss_fn(model, batch, key)`. A module, so two runs
    with the same loss (or one whose arrays differ, such as a soft-constraint weight) share
    the compiled steps: `fit` keys them on the loss function and the optimiser object."""

    loss: Callable[[PINN], Scalar]

    def __call__(self, model, batch, key):
        return self.loss(model)


# one optimiser object per setting: `fit` keys its compiled steps on the optimiser object
_adam = shared(optax.adam)
_lbfgs = shared(optax.lbfgs)


def train_adam_lbfgs(
    loss: Callable[[PINN], Scalar],
    model: FieldNetwork,
    *,
    adam_steps: int,
    lbfgs_steps: int,
    key: PRNGKeyArray,
    learning_rate: float = 1e-3,
    progress: bool = True,
) -> tuple[PINN, Array]:
    """Adam (`adam_steps`, constant `learning_rate`), then L-BFGS (`optax.lbfgs` with its zoom
    line search; skipped when `lbfgs_steps=0`) on a full-batch loss `loss(model)`. Returns the
    model and all losses."""
    step_loss = _FullBatch(loss)
    k1, k2 = jax.random.split(key)
    first = training.fit(
        step_loss,
        model,
        _adam(float(learning_rate)),
        steps=adam_steps,
        key=k1,
        progress=progress,
        desc="Adam",
    )
    if lbfgs_steps == 0:
        return first.model, jnp.asarray(first.losses)
    second = training.fit(
        step_loss,
        first.model,
        _lbfgs(),
        steps=lbfgs_steps,
        key=k2,
        progress=progress,
        desc="L-BFGS",
    )
    return second.model, jnp.concatenate([jnp.asarray(first.losses), jnp.asarray(second.losses)])


def integral_errors(
    u: Float[Array, "T n"],
    dx: float,
    ts: Float[Array, " T"],
    *,
    linear: Callable[[Scalar], Scalar] | None = None,
    quadratic: Callable[[Scalar], Scalar] | None = None,
) -> dict[str, Array]:
    """Per-time absolute errors |ĉ(t) - c(t)| of the integrals of u on its grid, `(T,)` each."""
    out = {}
    if linear is not None:
        out["linear"] = jnp.abs(projection.linear_integral(u, dx) - jax.vmap(linear)(ts))
    if quadratic is not None:
        out["quadratic"] = jnp.abs(projection.quadratic_integral(u, dx) - jax.vmap(quadratic)(ts))
    return out


def _lbfgs_together(member_loss, static, params, args, steps):
    """`steps` L-BFGS iterations (optax's zoom line search) for each member of a stacked model
    independently: one `lax.scan`, vmapped over the members. A member whose loss or gradient
    turns non-finite keeps its last finite parameters."""
    optimiser = _lbfgs()

    def run(p, a):
        value_fn = lambda q: member_loss(eqx.combine(q, static), a)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(value_fn)

        def step(carry, _):
            p, state = carry
            value, grad = value_and_grad(p, state=state)
            updates, new_state = optimiser.update(
                grad, state, p, value=value, grad=grad, value_fn=value_fn
            )
            new_p = optax.apply_updates(p, updates)
            finite = jnp.isfinite(value) & jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grad)])
            )
            keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
            new_p = jax.tree_util.tree_map(keep, new_p, p)
            new_state = jax.tree_util.tree_map(keep, new_state, state)
            return (new_p, new_state), value

        (p, _), values = jax.lax.scan(step, (p, optimiser.init(p)), None, length=steps)
        return p, values

    return jax.vmap(run)(params, args)


def train_together(
    loss: Callable[..., Scalar],
    models: list[PINN],
    *,
    adam_steps: int,
    lbfgs_steps: int,
    key: PRNGKeyArray,
    args: Array | None = None,
    learning_rate: float = 1e-3,
    progress: bool = True,
) -> tuple[list[PINN], Array]:
    """`train_adam_lbfgs` for several networks of one structure at once (seeds, and optionally
    one argument each, such as a penalty weight): `loss(model)`, or `loss(model, arg)` with
    `args[i]` for member i.

    Adam runs on the sum of the members' losses through one `training.fit`: the members'
    parameters are disjoint and Adam updates each parameter on its own, so every member gets
    the updates it would get alone. L-BFGS couples parameters through its curvature pairs and
    line search, so its phase is vmapped over the members instead (each keeps its own history).
    Returns the trained members and the members' summed loss at every step, shape
    `(adam_steps + lbfgs_steps,)`.
    """
    models = list(models)
    if not models:
        raise ValueError("models must contain at least one model")
    lbfgs_steps = positive_int("lbfgs_steps", lbfgs_steps, 0)
    count = len(models)
    if args is None:
        args = jnp.zeros(count)
        member_loss = lambda m, a: loss(m)  # noqa: E731
    else:
        args = jnp.asarray(args)
        if args.shape[:1] != (count,):
            raise ValueError(f"args needs one entry per model ({count}), got shape {args.shape}")
        member_loss = loss
    parts = [eqx.partition(m, eqx.is_inexact_array) for m in models]
    structure = jax.tree_util.tree_structure(parts[0][0])
    if any(jax.tree_util.tree_structure(p) != structure for p, _ in parts[1:]):
        raise ValueError("models must share one structure (same width and depth)")
    static = parts[0][1]
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *[p for p, _ in parts])

    def total(params, _batch, _key):
        per_member = jax.vmap(lambda p, a: member_loss(eqx.combine(p, static), a))(params, args)
        return jnp.sum(per_member)

    result = training.fit(
        total,
        stacked,
        optax.adam(learning_rate),
        steps=adam_steps,
        key=key,
        progress=progress,
        desc="Adam",
    )
    params = result.model
    losses = jnp.asarray(result.losses)
    cap = config.max_steps()
    if cap is not None and lbfgs_steps > cap:
        print(f"[miniature] L-BFGS: {cap} of {lbfgs_steps} steps (CONSERVED_MAX_STEPS={cap})")
        lbfgs_steps = cap
    if lbfgs_steps > 0:
        params, later = eqx.filter_jit(_lbfgs_together)(
            member_loss, static, params, args, lbfgs_steps
        )
        losses = jnp.concatenate([losses, jnp.sum(later, axis=0)])
    members = [
        eqx.combine(jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], params), static)
        for i in range(count)
    ]
    return members, losses
