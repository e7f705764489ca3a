"""Run modes, seeds and floating-point precision shared by every chapter.

Three modes size every experiment in the book:

- ``quick``: what the test suite runs; each chapter finishes in well under a minute on two CPU
  cores. Selected by ``CONSERVED_QUICK=1`` or ``CONSERVED_MODE=quick``.
- ``full``: what the rendered book shows (the default); a few minutes per chapter on a laptop.
- ``paper``: the papers' own sizes, for readers with a GPU. The same code runs there; the book
  build never executes it.

``CONSERVED_MAX_STEPS=N`` caps every training run at ``N`` optimiser steps (`max_steps`), in any
mode: with ``CONSERVED_MODE=paper`` it gives the *miniature* paper run that CI executes
(``make paper-smoke``): the papers' shapes and settings, every code path, a few steps.

A chapter reads its sizes once, in its parameter cell::

    from conserved import config
    sizes = config.choose(quick=dict(steps=200), full=dict(steps=2_000), paper=dict(steps=50_000))

Compiled XLA programs can be kept on disk between runs (JAX's persistent compilation cache), so
a notebook run a second time skips most of its compilation: each chapter's parameter cell calls
``config.enable_compilation_cache()``, which stores them in ``$CONSERVED_JAX_CACHE`` if set
(``off`` disables it), else in ``$XDG_CACHE_HOME/conserved/jax`` (``~/.cache/conserved/jax``).
In quick mode the same cell's ``config.compile_fast_in_quick_mode()`` has XLA compile at its
lowest optimisation, except the training loops with much work to do (`LONG_RUN_FLOPS`).
Importing `conserved` changes no global JAX setting.
"""

from __future__ import annotations

import os
import warnings
from typing import TypeVar

import jax
from jaxtyping import PRNGKeyArray

MODES = ("quick", "full", "paper")
DEFAULT_SEED = 0

T = TypeVar("T")


def mode() -> str:
    """The current run mode, read from the environment.

    ``CONSERVED_MODE`` (one of ``quick``, ``full``, ``paper``) wins; otherwise
    ``CONSERVED_QUICK=1`` selects ``quick``; otherwise ``full``.
    """
    explicit = os.environ.get("CONSERVED_MODE", "").strip().lower()
    if explicit:
        if explicit not in MODES:
            raise ValueError(
                f"CONSERVED_MODE must be one of {MODES}, got {os.environ['CONSERVED_MODE']!r}"
            )
        return explicit
    quick = os.environ.get("CONSERVED_QUICK", "").strip().lower()
    if quick in ("", "0", "false", "no"):
        return "full"
    if quick in ("1", "true", "yes"):
        return "quick"
    raise ValueError(
        f"CONSERVED_QUICK must be 1/0 (or true/false), got {os.environ['CONSERVED_QUICK']!r}"
    )


def max_steps() -> int | None:
    """The cap on optimiser steps per training run set by ``CONSERVED_MAX_STEPS`` (`None`: no
    cap). `training.fit` runs at most this many steps, so a chapter keeps its mode's shapes and
    settings but trains only briefly (the miniature paper run of ``make paper-smoke``)."""
    raw = os.environ.get("CONSERVED_MAX_STEPS", "").strip()
    if raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"CONSERVED_MAX_STEPS must be a positive integer, got {raw!r}")
    return value


def is_miniature() -> bool:
    """True when training runs are capped (``CONSERVED_MAX_STEPS`` is set): the claims that need
    a trained model cannot hold, and ``make paper-smoke`` reports them as skipped."""
    return max_steps() is not None


def is_quick() -> bool:
    """True in quick mode (the test suite's mode)."""
    return mode() == "quick"


def choose(
    *,
    quick: T,
    full: T,
    paper: T | None = None,
    miniature: dict | None = None,
    current: str | None = None,
) -> T:
    """Pick the value for the current mode.

    **Arguments:**

    - `quick`, `full`: the values for those modes.
    - `paper`: the value at the papers' scale; defaults to `full` when not given.
    - `miniature`: entries that replace those of the chosen dict when training runs are capped
      (`is_miniature`): the counts of samples or test trajectories that only make an evaluation
      more precise, never a shape of the model or its training step.
    - `current`: force a mode instead of reading the environment (used by tests).
    """
    current = mode() if current is None else current
    if current not in MODES:
        raise ValueError(f"current must be one of {MODES}, got {current!r}")
    if current == "quick":
        chosen = quick
    elif current == "paper" and paper is not None:
        chosen = paper
    else:
        chosen = full
    if miniature is None or not is_miniature():
        return chosen
    if not isinstance(chosen, dict) or not set(miniature) <= set(chosen):
        raise ValueError(
            f"miniature must replace entries of the chosen dict, got {sorted(miniature)}"
        )
    return {**chosen, **miniature}


def key(seed: int = DEFAULT_SEED) -> PRNGKeyArray:
    """A JAX PRNG key from an integer seed: every random draw in the book starts from one.

    Raises `ValueError` for a seed that is not a non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return jax.random.key(seed)


def enable_x64(enabled: bool = True) -> None:
    """Switch JAX to float64 (``True``) or back to float32 (``False``).

    Call it before creating arrays: arrays made earlier keep their dtype. Chapters that check
    identities to 1e-12 use float64; training runs use JAX's default float32.
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled must be a bool, got {enabled!r}")
    jax.config.update("jax_enable_x64", enabled)


def x64_enabled() -> bool:
    """Whether JAX currently creates float64 arrays by default."""
    return bool(jax.config.jax_enable_x64)


def compilation_cache_dir() -> str | None:
    """Where compiled programs are cached between runs (`None`: caching is off)."""
    chosen = os.environ.get("CONSERVED_JAX_CACHE")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "0", "off", "false", "no") else chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "conserved", "jax")


def enable_compilation_cache() -> str | None:
    """Switch on JAX's persistent compilation cache in `compilation_cache_dir()` (a chapter's
    parameter cell calls it; importing the library does not). Leaves a cache directory the user
    configured in JAX alone. Returns the directory in use (`None`: caching is off)."""
    path = compilation_cache_dir()
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir  # the user configured JAX's cache already
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    # every program gets a disk entry: each compiles in under a second, but together they are
    # about a fifth of a quick-mode chapter's time (chapter 2: 126 s cold, 98 s warm)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


_enable_compilation_cache = enable_compilation_cache  # the name before 0.1.x; kept for callers


# XLA's LLVM back end at its lowest optimisation: a quick-mode chapter compiles hundreds of
# programs and runs most of them a handful of times, so optimising them costs more than it saves
# (cold, alone on two cores: chapter 1 takes 144 s with XLA's defaults and 100 s with these
# flags; the seven chapters 779 s and 708 s). XLA's newer fusion emitters are switched off too:
# they take about twice as long to compile a small program as the classic ones, and run these
# chapters' programs no faster (chapter 3: 169 s with them, 135 s without; chapter 5: 113 s and
# 85 s; chapter 5 with them on for its long runs only: 103 s).
FAST_COMPILATION_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_use_fusion_emitters=false",
)
# XLA's own defaults, as per-program compiler options: what the training loops with much work to
# do (`LONG_RUN_FLOPS`, `training.fit`) are compiled with whatever the process asked for; at the
# lowest level they run several times slower (chapter 5, whose PINNs train for 600 steps: 108 s
# with them optimised, 271 s without).
FULL_OPTIMISATION = {
    "xla_backend_optimization_level": 3,
    "xla_llvm_disable_expensive_passes": False,
}
# A training run is "long" when its steps times XLA's estimate of one step's floating-point
# operations reach this. Measured on two cores: chapter 3's two-body step (2.7e7 estimated
# operations) takes 25 ms at the lowest optimisation and 4.5 ms at full, which costs 4.6 s more
# to compile, so its 400-step runs repay it (chapter 3: 135 s -> 128 s; chapter 6's 150-step
# FNO and U-Net runs, 4e10 and 1e10 operations: 40 s -> 38 s). Steps made of matrix products
# lose little at the lowest level (chapter 1's symmetrised MLP, 2.8e7 operations: 2.2 ms), where
# the estimate's choice costs a second or two (chapter 1: 49 s -> 52 s).
LONG_RUN_FLOPS = 5e9


def compile_fast_in_quick_mode() -> bool:
    """In quick mode, ask XLA to compile every program of this process with its lowest LLVM
    optimisation (`FAST_COMPILATION_FLAGS`, added to ``XLA_FLAGS``); long training loops keep
    XLA's defaults (`FULL_OPTIMISATION`). Full and paper mode are left as they are: their
    programs run long enough to repay the optimisation.

    It must run before JAX's first computation, which starts XLA's CPU back end with the flags
    of that moment (each chapter's first cell calls it, right after the imports). Returns
    whether the flags are in force; a call after JAX has started changes nothing, says so in a
    warning and returns ``False``."""
    if not is_quick():
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if all(flag in flags.split() for flag in FAST_COMPILATION_FLAGS):
        return True  # set before, by this process or its parent
    from jax._src import xla_bridge  # JAX has no public "has the back end started?"

    if xla_bridge.backends_are_initialized():
        warnings.warn(
            "config.compile_fast_in_quick_mode() came after JAX's first computation: XLA keeps "
            "its default optimisation (call it before creating any array)",
            stacklevel=2,
        )
        return False
    os.environ["XLA_FLAGS"] = " ".join([flags, *FAST_COMPILATION_FLAGS]).strip()
    return True


__all__ = [
    "DEFAULT_SEED",
    "FAST_COMPILATION_FLAGS",
    "FULL_OPTIMISATION",
    "LONG_RUN_FLOPS",
    "MODES",
    "choose",
    "compilation_cache_dir",
    "compile_fast_in_quick_mode",
    "enable_compilation_cache",
    "enable_x64",
    "is_miniature",
    "is_quick",
    "key",
    "max_steps",
    "mode",
    "x64_enabled",
]
