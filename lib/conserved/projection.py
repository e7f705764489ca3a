"""Exact projections of a discretised field onto the set with prescribed integrals.

A field sampled on a uniform grid of n points with spacing dx, u = (u_1, ..., u_n), has the
rectangle-rule integrals

    I_1(u) = dx Σ_j u_j          (linear: mass, momentum)
    I_2(u) = dx Σ_j u_j²         (quadratic: energy)

`project(u, dx, linear=c1, quadratic=c2)` returns the point nearest to u (Euclidean distance)
with I_1 = c1 and/or I_2 = c2. Each case is a constrained least-squares problem whose Lagrange
conditions have a closed form:

- linear only: shift by a constant, u + (c1/(n dx) - mean(u));
- quadratic only: rescale, u · sqrt(c2 / I_2(u));
- both: keep the fluctuation's direction, fix the mean and rescale the fluctuation,
  m + s (u - mean(u)) with m = c1/(n dx) and s = sqrt((c2 - c1²/(n dx)) / (dx |u - mean(u)|²)).

All leading axes of u are batch axes (for example time); c1, c2 broadcast against them. The
projection is differentiable, so it can sit inside a model during training (PINN-Proj), and the
linear case is the same operation as replacing the zero Fourier mode (exterior-embedded
conservation): `fix_mean`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._checks import require

__all__ = [
    "EPS",
    "linear_integral",
    "quadratic_integral",
    "fix_mean",
    "project",
    "affine_coefficients",
]


EPS = 1e-12


def _check(u, dx) -> Array:
    u = jnp.asarray(u)
    if u.ndim < 1 or u.shape[-1] < 2:
        raise ValueError(f"u must have a grid axis of at least 2 points last, got shape {u.shape}")
    if isinstance(dx, jax.core.Tracer):
        return require(u, dx > 0, "dx must be positive")
    if not float(dx) > 0:
        raise ValueError(f"dx must be positive, got {dx!r}")
    return u


def linear_integral(u: Float[ArrayLike, "... n"], dx: float) -> Float[Array, "..."]:
    """dx Σ_j u_j over the last axis (rectangle rule; exact for periodic grids)."""
    return dx * jnp.sum(_check(u, dx), axis=-1)


def quadratic_integral(u: Float[ArrayLike, "... n"], dx: float) -> Float[Array, "..."]:
    """dx Σ_j u_j² over the last axis."""
    return dx * jnp.sum(_check(u, dx) ** 2, axis=-1)


def fix_mean(
    u: Float[ArrayLike, "... n"], target: Float[ArrayLike, "..."], dx: float
) -> Float[Array, "... n"]:
    """Shift u by a constant so that dx Σ u = target: the nearest field with that integral.

    Equivalently: replace the zero Fourier mode (the grid mean) of u by target / (n dx).
    """
    u = _check(u, dx)
    n = u.shape[-1]
    shift = jnp.asarray(target)[..., None] / (n * dx) - jnp.mean(u, axis=-1, keepdims=True)
    return u + shift


def _check_target(name: str, target, batch: tuple[int, ...]) -> None:
    """A target integral must broadcast to the field's batch shape and, when concrete, be
    finite."""
    if target is None:
        return
    target = jnp.asarray(target)
    try:
        shape = jnp.broadcast_shapes(target.shape, batch)
    except ValueError:
        shape = None
    if shape != batch:
        raise ValueError(
            f"{name} must have the field's batch shape {batch} (or broadcast to it), "
            f"got shape {target.shape}"
        )
    if _concrete(target) and not bool(jnp.all(jnp.isfinite(target))):
        raise ValueError(f"{name} must be finite, got {target}")


def _round_off(u: Array) -> float:
    return float(jnp.finfo(u.dtype).eps) if jnp.issubdtype(u.dtype, jnp.floating) else 0.0


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def project(
    u: Float[ArrayLike, "... n"],
    dx: float,
    *,
    linear: Float[ArrayLike, "..."] | None = None,
    quadratic: Float[ArrayLike, "..."] | None = None,
    eps: float = EPS,
) -> Float[Array, "... n"]:
    """Nearest point to u with dx Σ u = `linear` and/or dx Σ u² = `quadratic`.

    `eps` is added to the norms in the denominators: at initialisation a network's output can be
    (nearly) constant in x, and then the direction to rescale is undefined; the guard keeps the
    result and its gradient finite (the constraint then holds only up to eps).

    Raises `ValueError` when neither constraint is given, for a target that is not finite or
    does not broadcast to u's batch shape, for a negative quadratic value, when the quadratic
    value is below c1²/(n dx), the smallest that a field with integral c1 can have (the constant
    field), and when u is zero (quadratic alone) or constant (both) on the grid, so that no
    rescaling of it can meet the quadratic target. The value checks run on concrete values (not
    inside `jit`).
    """
    u = _check(u, dx)
    for name, target in (("linear", linear), ("quadratic", quadratic)):
        _check_target(name, target, u.shape[:-1])
    if linear is not None and quadratic is None:
        return fix_mean(u, linear, dx)
    _, scale = affine_coefficients(u, dx, linear=linear, quadratic=quadratic, eps=eps)
    if linear is None:
        return scale[..., None] * u
    # m + s (u - mean u), centred twice: when the field is nearly constant, s is large and the
    # rounding error of a one-pass mean would be amplified into the linear integral
    fluctuation = u - jnp.mean(u, axis=-1, keepdims=True)
    fluctuation = fluctuation - jnp.mean(fluctuation, axis=-1, keepdims=True)
    mean = jnp.asarray(linear)[..., None] / (u.shape[-1] * dx)
    return mean + scale[..., None] * fluctuation


def affine_coefficients(
    u: Float[ArrayLike, "... n"],
    dx: float,
    *,
    linear: Float[ArrayLike, "..."] | None = None,
    quadratic: Float[ArrayLike, "..."] | None = None,
    eps: float = EPS,
) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """The projection as an affine map of the field: project(u) = offset + scale · u, with
    (offset, scale) per batch entry (per time). The same map extends the projection from the
    grid to any point x, ũ(x, t) = a(t) + s(t) u(x, t), so ũ_x = s u_x.

    linear: (c1/(n dx) - mean u, 1); quadratic: (0, sqrt(c2 / I_2(u))); both:
    (m - s mean u, s) with s = sqrt((c2 - c1²/(n dx)) / (dx |u - mean u|²)). Same checks and
    `eps` guard as `project`.
    """
    u = _check(u, dx)
    n = u.shape[-1]
    mean = jnp.mean(u, axis=-1)
    if linear is None and quadratic is None:
        raise ValueError("give linear=, quadratic= or both")
    for name, target in (("linear", linear), ("quadratic", quadratic)):
        _check_target(name, target, u.shape[:-1])
    if quadratic is None:
        offset = jnp.asarray(linear) / (n * dx) - mean
        return offset, jnp.ones_like(offset)
    quadratic = jnp.asarray(quadratic)
    if _concrete(quadratic) and bool(jnp.any(quadratic < 0)):
        raise ValueError(f"quadratic must be >= 0 (it is dx Σ u²), got {quadratic}")
    if linear is None:
        size = quadratic_integral(u, dx)
        if _concrete(u) and _concrete(quadratic) and bool(jnp.any((size == 0) & (quadratic > 0))):
            raise ValueError(
                "u is zero on the grid, so no rescaling of it has the requested quadratic "
                f"integral {quadratic}"
            )
        scale = jnp.sqrt(quadratic / (size + eps))
        return jnp.zeros_like(scale), scale
    linear = jnp.asarray(linear)
    floor = linear**2 / (n * dx)
    if (
        _concrete(quadratic)
        and _concrete(linear)
        and bool(jnp.any(quadratic < floor * (1 - 16 * _round_off(u))))
    ):
        raise ValueError(
            "infeasible constraints: with dx Σ u = c1 on n points, dx Σ u² >= c1²/(n dx) "
            f"(the constant field); got c1 = {linear}, c2 = {quadratic}, minimum {floor}"
        )
    spread = jnp.maximum(quadratic - floor, 0.0)
    fluctuation = quadratic_integral(u - mean[..., None], dx)
    size = quadratic_integral(u, dx)
    if (
        _concrete(u)
        and _concrete(quadratic)
        and _concrete(linear)
        # constant to round-off: the spread about the mean is within what rounding the mean
        # of n values can leave, (n ε)² of the field's size
        and bool(jnp.any((fluctuation <= (n * _round_off(u)) ** 2 * size) & (spread > 0)))
    ):
        raise ValueError(
            "u is constant on the grid, so no field of the form a + s u has the requested "
            f"quadratic integral {quadratic} (above the constant field's {floor})"
        )
    scale = jnp.sqrt(spread / (fluctuation + eps))
    return linear / (n * dx) - scale * mean, scale
