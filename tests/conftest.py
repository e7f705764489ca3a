"""Shared fixtures: a fixed PRNG key, the repository root, the chapters' graded runs; the order
in which `make test`'s workers take the tests; XLA's compiler settings for the unit tests."""

import contextlib
import os
import sys
from pathlib import Path

import jax
import matplotlib
import pytest

matplotlib.use("Agg")  # before the library imports pyplot

from conserved import config  # noqa: E402

# The unit tests compile hundreds of small programs, each run a few times: XLA's LLVM
# optimisation passes cost them more time than they save (tests/test_razor.py in one process:
# 188 s with them, 133 s without). Set for this process only (its backend starts here), with
# the flags quick mode uses (`config.FAST_COMPILATION_FLAGS`); the chapters' kernels and the
# book builds this suite starts get the environment as it was, and each chapter's first cell
# sets them for itself (`config.compile_fast_in_quick_mode`), as a reader's quick run does.
_xla_flags = os.environ.get("XLA_FLAGS")
os.environ["XLA_FLAGS"] = " ".join([_xla_flags or "", *config.FAST_COMPILATION_FLAGS]).strip()
jax.devices()
if _xla_flags is None:
    del os.environ["XLA_FLAGS"]
else:
    os.environ["XLA_FLAGS"] = _xla_flags

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # the book's tools (editions, check_html) for the tests


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


@pytest.fixture(scope="session")
def graded(tmp_path_factory, worker_id):
    """`graded(chapter)`: the chapter's one graded run of this session (tests/test_notebooks.py
    `GradedRuns`), shared by the xdist workers through their common temporary folder."""
    from test_notebooks import GradedRuns

    base = tmp_path_factory.getbasetemp()
    return GradedRuns(base if worker_id == "master" else base.parent)


# The graded chapters, longest first (their quick-mode times in `make test`), so that the two
# workers share them; the book build (which needs them all) last.
_CHAPTERS_LONGEST_FIRST = ("03_", "05_", "02_", "01_", "04_", "06_", "00_")


def pytest_collection_modifyitems(config, items):
    """Order the tests for `pytest -n 2 --dist loadscope --no-loadscope-reorder` (make test):
    the chapters' graded runs first, longest first, then the rest as collected, the book last.
    Each module or class stays in one piece (one xdist scope)."""

    def rank(item):
        path = item.nodeid.split("::")[0]
        if path.endswith("test_book.py"):
            return (2, 0)
        cls = item.cls.__name__ if item.cls is not None else ""
        chapter = getattr(item.cls, "chapter", None) if cls.startswith("TestChapter") else None
        if chapter is not None:
            name = Path(chapter).name
            order = [i for i, p in enumerate(_CHAPTERS_LONGEST_FIRST) if name.startswith(p)]
            return (0, order[0] if order else len(_CHAPTERS_LONGEST_FIRST))
        return (1, 0)

    items.sort(key=rank)  # stable: the rest keep their collected order
