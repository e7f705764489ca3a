"""Argument checks that also hold under `jit` and `vmap`.

A check written as `if not bool(ok): raise ValueError(...)` needs a concrete value, so inside a
traced function it is skipped and a bad argument passes silently. `require` raises the
`ValueError` at once on concrete values, and on traced ones attaches the check to the
computation with `equinox.error_if`, which raises when the compiled function runs.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool


def require(value: ArrayLike, ok: Bool[ArrayLike, "..."], message: str) -> Array:
    """`value`, unchanged, once every entry of `ok` is known to be true.

    Concrete `ok`: raises `ValueError(message)` now if any entry is false. Traced `ok`: returns
    `value` tied to the check (use the returned value, or the check is dropped), so that the
    compiled function raises an error carrying `message` when it runs on a bad argument.
    """
    if isinstance(ok, jax.core.Tracer) or isinstance(value, jax.core.Tracer):
        return eqx.error_if(jnp.asarray(value), ~jnp.all(ok), message)
    if not bool(np.all(np.asarray(ok))):
        raise ValueError(message)
    return value


def positive_int(name: str, value, minimum: int = 1) -> int:
    """`value` as an int, or a ValueError naming the argument unless it is an int (not a
    bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def non_negative(name: str, value) -> float:
    """`value` as a float, or a ValueError naming the argument unless it is a number >= 0 (NaN
    and infinity are refused)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"{name} must be >= 0 and finite, got {value!r}")
    return number


def positive(name: str, value):
    """`value` as a float, or a ValueError naming the argument unless it is finite and
    positive; a traced value is checked when the compiled function runs (`require`)."""
    if isinstance(value, jax.core.Tracer):
        return require(
            value, (value > 0) & jnp.isfinite(value), f"{name} must be positive and finite"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not 0 < number < float("inf"):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return number
