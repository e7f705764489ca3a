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
def float64():
    """Run a block in float64, restoring the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def x64():
    """Run a test in float64 (not for hypothesis tests: use `with float64():` inside them)."""
    with float64():
        yield
