"""Shared fixtures: a fixed PRNG key, and the repository root."""

import contextlib
from pathlib import Path

import jax
import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def key():
    return jax.random.key(0)


@contextlib.contextmanager
def _temporarily(config, name: str, value):
    """Set `config`'s option `name` (JAX's or jaxtyping's: both have `update`) for a block,
    restoring the previous value afterwards."""
    previous = getattr(config, name)
    config.update(name, value)
    try:
        yield
    finally:
        config.update(name, previous)


def float64():
    """Run a block in float64, restoring the previous setting afterwards."""
    return _temporarily(jax.config, "jax_enable_x64", True)


@pytest.fixture
def x64():
    """Run a test in float64 (not for hypothesis tests: use `with float64():` inside them)."""
    with float64():
        yield


def unchecked_types():
    """Run a block without jaxtyping's runtime type checks (which `make test` switches on for
    the package: pyproject's `--jaxtyping-packages`), so that a deliberately bad argument
    reaches the library's own check and its `ValueError`: what a user, who runs without the
    checker, gets. Tests of bad input use it; every other test runs checked."""
    import jaxtyping

    return _temporarily(jaxtyping.config, "jaxtyping_disable", True)


@pytest.fixture
def unchecked():
    """`unchecked_types()` for a whole test."""
    with unchecked_types():
        yield


@contextlib.contextmanager
def bad_input(match: str | None = None):
    """`pytest.raises(ValueError, match=match)` around a deliberately bad call, with the
    runtime type checker off (`unchecked_types`): the block tests the library's own check."""
    with unchecked_types(), pytest.raises(ValueError, match=match) as info:
        yield info
