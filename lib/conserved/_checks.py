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
