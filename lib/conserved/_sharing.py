"""One object for equal arguments: constructors whose results hold functions (a system's
Hamiltonian, a group's action, an optimiser) return the same object when called again with
equal hashable arguments, so that JAX reuses what it compiled for the first (it keys compiled
programs on such functions by identity). The results are immutable, so sharing is safe."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def shared(constructor: F) -> F:
    """Cache `constructor` on its arguments, keyed by value and type (so `2.0` never gets what
    `2` built, and each call's arguments are still checked by the constructor); arguments that
    cannot be hashed (arrays) build anew."""
    cached = functools.lru_cache(maxsize=64, typed=True)(constructor)

    @functools.wraps(constructor)
    def build(*args, **kwargs):
        try:
            hash((args, tuple(kwargs.items())))
        except TypeError:  # an array of masses, say
            return constructor(*args, **kwargs)
        return cached(*args, **kwargs)

    return build  # type: ignore[return-value]
