"""One object for equal arguments: constructors whose results hold functions (a system's
Hamiltonian, a group's action) return the same object when called again with equal hashable
arguments, so that JAX reuses what it compiled for the first (it keys compiled programs on
such functions by identity). The results are immutable Equinox modules, so sharing is safe."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def shared(constructor: F) -> F:
    """Cache `constructor` on its arguments; unhashable arguments (arrays) build anew."""
    cached = functools.lru_cache(maxsize=64)(constructor)

    @functools.wraps(constructor)
    def build(*args, **kwargs):
        try:
            return cached(*args, **kwargs)
        except TypeError as error:  # an unhashable argument (an array of masses, say)
            if "unhashable" not in str(error):
                raise
            return constructor(*args, **kwargs)

    return build  # type: ignore[return-value]
