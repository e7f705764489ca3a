"""One training loop for every model in the book.

`fit` minimises a scalar loss over the floating-point arrays of an Equinox model with any optax
optimiser (L-BFGS included). Steps run inside `jax.lax.scan` in jitted chunks, so Python only
sees one call per chunk; between chunks it updates a tqdm progress bar and checks the losses.
A non-finite loss stops training with `TrainingDiverged`, which carries the last finite model.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree, Scalar
from tqdm import tqdm

from . import config
from ._checks import positive_int as _positive_int
from ._sharing import shared

__all__ = [
    "LossFn",
    "TrainResult",
    "TrainingDiverged",
    "adam_cosine",
    "fit",
    "fit_adam",
    "mse",
]


LossFn = Callable[[PyTree, PyTree, PRNGKeyArray], Scalar]


class TrainResult(NamedTuple):
    """What `fit` returns.

    - `model`: the trained model (same structure as the one passed in).
    - `losses`: NumPy array of shape `(steps,)`, the loss at every step (before its update).
    - `opt_state`: the optimiser state, to continue training.
    - `chunk_times`: NumPy array of shape `(chunks, 2)`: the steps and the wall-clock seconds of
      each jitted chunk (the first one includes compiling the step, unless it was reused).
    """

    model: PyTree
    losses: np.ndarray
    opt_state: PyTree
    chunk_times: np.ndarray

    @property
    def seconds_per_step(self) -> float:
        """Wall-clock seconds per step once compiled: the chunks after the first (the first
        chunk alone when there is only one, compilation included)."""
        times = self.chunk_times[1:] if len(self.chunk_times) > 1 else self.chunk_times
        return float(times[:, 1].sum() / times[:, 0].sum())


class TrainingDiverged(FloatingPointError):
    """Raised when the loss becomes NaN or infinite.

    Attributes: `step` (first bad step, 0-based), `model` (the model just before that step),
    `losses` (the losses up to and including the bad one, which is NaN).
    """

    def __init__(self, message: str, step: int, model: PyTree, losses: np.ndarray):
        super().__init__(message)
        self.step = step
        self.model = model
        self.losses = losses


def _dataset_size(data: PyTree) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data must contain at least one array, got an empty pytree")
    sizes = set()
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError("every array in data needs a leading batch axis; got a scalar leaf")
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise ValueError(
            f"all arrays in data must share their leading size, got sizes {sorted(sizes)}"
        )
    return sizes.pop()


def _all_finite(tree: PyTree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _draw_batch(data: PyTree, size: int, batch_size: int | None, key: PRNGKeyArray) -> PyTree:
    if data is None or batch_size is None or batch_size == size:
        return data
    index = jr.permutation(key, size)[:batch_size]
    return jax.tree_util.tree_map(lambda leaf: leaf[index], data)


def _loss_of_params(loss_fn, static, params, batch, key):
    return loss_fn(eqx.combine(params, static), batch, key)


def _run_chunk(loss_fn, optimiser, static, size, batch_size, params, opt_state, data, inputs):
    """Run `len(inputs[0])` optimiser steps in one `lax.scan`.

    Jitted at module level (below), so a second `fit` with an equal loss function, the same
    optimiser object and a model of the same structure reuses the compiled scan (callables
    compare by identity, Equinox modules by their fields)."""
    tx = optax.with_extra_args_support(optimiser)

    def value_fn(p, batch, loss_key):
        return _loss_of_params(loss_fn, static, p, batch, loss_key)

    def one_step(carry, step_inputs):
        step_key, active = step_inputs
        params, opt_state, failed = carry
        batch_key, loss_key = jr.split(step_key)
        batch = _draw_batch(data, size, batch_size, batch_key)
        loss, grads = jax.value_and_grad(value_fn)(params, batch, loss_key)
        updates, new_state = tx.update(
            grads,
            opt_state,
            params,
            value=loss,
            grad=grads,
            value_fn=lambda p: value_fn(p, batch, loss_key),
        )
        new_params = optax.apply_updates(params, updates)
        # After the first non-finite loss or gradient, freeze: the host raises after the chunk
        # and hands back the parameters from just before the bad step.
        finite = jnp.isfinite(loss) & _all_finite(grads)
        ok = finite & ~failed & active  # padding steps past `steps` change nothing
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        new_params = jax.tree_util.tree_map(keep, new_params, params)
        new_state = jax.tree_util.tree_map(keep, new_state, opt_state)
        loss = jnp.where(finite, loss, jnp.nan)
        return (new_params, new_state, failed | (~finite & active)), loss

    carry = (params, opt_state, jnp.array(False))
    (params, opt_state, _), losses = jax.lax.scan(one_step, carry, inputs)
    return params, opt_state, losses


_run_chunk = eqx.filter_jit(_run_chunk)

# A long run (steps x operations per step of `config.LONG_RUN_FLOPS` or more) is compiled with
# XLA's full optimisation even where the process asked for fast compilation
# (`config.compile_fast_in_quick_mode`), from the lowering its cost was read from, so the chunk
# is traced and lowered once. JAX keeps one lowering per traced chunk: a second run of the same
# program finds its compiled form here.
_optimised_programs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compile_optimised(lowered):
    """The lowered chunk compiled with `config.FULL_OPTIMISATION`, once per lowering; called
    with `_run_chunk`'s arguments."""
    lowering = getattr(lowered.lowered, "_lowering", None)  # JAX's, shared by equal traces
    if lowering is None:
        return lowered.compile(config.FULL_OPTIMISATION)
    if lowering not in _optimised_programs:
        _optimised_programs[lowering] = lowered.compile(config.FULL_OPTIMISATION)
    return _optimised_programs[lowering]


def _flops_per_step(lowered) -> float:
    """XLA's estimate of the floating-point operations of one training step, from the cost
    analysis of a lowered chunk (before compilation): it counts the body of the chunk's scan
    once, so one step. 0 when XLA gives no estimate."""
    cost = lowered.lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per device
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops", 0.0)
    return float(flops) if np.isfinite(flops) and flops > 0 else 0.0


def fit(
    loss_fn: LossFn,
    model: PyTree,
    optimiser: optax.GradientTransformation,
    *,
    steps: int,
    key: PRNGKeyArray,
    data: PyTree = None,
    batch_size: int | None = None,
    chunk_size: int = 250,
    progress: bool = True,
    desc: str = "training",
) -> TrainResult:
    """Minimise `loss_fn` over the inexact arrays of `model`.

    **Arguments:**

    - `loss_fn`: `loss_fn(model, batch, key) -> scalar`. `batch` is a minibatch of `data` (or
      all of it, or `None` without data); `key` is a fresh PRNG key each step.
    - `model`: an Equinox module (or any pytree); its floating-point arrays are trained, all
      other leaves are held fixed.
    - `optimiser`: any optax transformation. Those that need the loss value or a line search
      (`optax.lbfgs`) receive `value`, `grad` and `value_fn` each step.
    - `steps`: number of optimiser steps. `CONSERVED_MAX_STEPS` (`config.max_steps`) caps it:
      the run says so in one printed line, with the memory XLA reserves for the compiled step.
      A long run (`steps` times XLA's estimate of a step's floating-point operations of
      `config.LONG_RUN_FLOPS` or more) is compiled with XLA's full optimisation
      (`config.FULL_OPTIMISATION`) even in quick mode's fast compilation.
    - `key`: PRNG key; the same key gives the same run.
    - `data`: a pytree of arrays sharing a leading axis of size N, or `None`.
    - `batch_size`: draw this many rows of `data` without replacement each step; `None` uses
      the full data every step.
    - `chunk_size`: at most this many steps per jitted `lax.scan` chunk (one progress-bar
      update each); the steps are split into equal chunks so that the scan compiles once.
    - `progress`: show a tqdm progress bar.

    **Returns:** a `TrainResult(model, losses, opt_state, chunk_times)`; `losses` has shape
    `(steps,)` (of the capped count, when `CONSERVED_MAX_STEPS` caps it).

    **Raises:** `ValueError` for bad arguments or a non-scalar loss; `TrainingDiverged` when
    the loss is not finite.
    """
    steps = _positive_int("steps", steps)
    chunk_size = _positive_int("chunk_size", chunk_size)
    cap = config.max_steps()
    requested, steps = steps, steps if cap is None else min(steps, cap)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if not hasattr(optimiser, "init") or not hasattr(optimiser, "update"):
        raise ValueError(
            f"optimiser must be an optax GradientTransformation, got {type(optimiser).__name__}"
        )
    size = 0
    if data is not None:
        size = _dataset_size(data)
        data = jax.tree_util.tree_map(jnp.asarray, data)
    if batch_size is not None:
        if data is None:
            raise ValueError("batch_size was given but data is None")
        batch_size = _positive_int("batch_size", batch_size)
        if batch_size > size:
            raise ValueError(f"batch_size must be at most the data size {size}, got {batch_size}")

    params, static = eqx.partition(model, eqx.is_inexact_array)
    if not jax.tree_util.tree_leaves(params):
        raise ValueError("model has no floating-point arrays to train")
    # Arrays built from Python scalars are "weakly typed"; the optimiser's outputs are not, so
    # without this the second chunk would see new input types and compile the scan again.
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=a.dtype), params)

    probe = eqx.filter_eval_shape(
        _loss_of_params, loss_fn, static, params, _draw_batch(data, size, batch_size, key), key
    )
    if getattr(probe, "shape", None) != ():
        raise ValueError(
            f"loss_fn must return a scalar, got shape {getattr(probe, 'shape', probe)}"
        )
    opt_state = optax.with_extra_args_support(optimiser).init(params)

    # Equal chunks, so the scan compiles once; the few padding steps at the end are inactive.
    num_chunks = -(-steps // chunk_size)
    chunk = -(-steps // num_chunks)
    keys = jr.split(key, num_chunks * chunk)
    active = jnp.arange(num_chunks * chunk) < steps

    # Lowering traces the chunk once (a call of `_run_chunk` reuses that trace); its cost
    # analysis decides whether the run is long enough to repay full optimisation.
    lowered = _run_chunk.lower(
        loss_fn, optimiser, static, size, batch_size, params, opt_state, data,
        (keys[:chunk], active[:chunk]),
    )  # fmt: skip
    long_run = steps * _flops_per_step(lowered) >= config.LONG_RUN_FLOPS
    compiled_chunk = _compile_optimised(lowered) if long_run else _run_chunk

    def run_chunk(params, opt_state, data, inputs):
        return compiled_chunk(
            loss_fn, optimiser, static, size, batch_size, params, opt_state, data, inputs
        )

    history: list[np.ndarray] = []
    chunk_times: list[tuple[int, float]] = []
    done = 0
    with tqdm(total=steps, desc=desc, disable=not progress, leave=False) as bar:
        while done < steps:
            n = min(chunk, steps - done)
            window = slice(done, done + chunk)
            start = time.perf_counter()
            params, opt_state, losses = run_chunk(
                params, opt_state, data, (keys[window], active[window])
            )
            losses = np.asarray(losses)[:n]  # waits for the chunk to finish
            chunk_times.append((n, time.perf_counter() - start))
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                first = done + int(bad[0])
                history.append(losses[: bad[0] + 1])
                last = float(history[-1][-2]) if len(history[-1]) > 1 else float("nan")
                raise TrainingDiverged(
                    f"loss or gradient became non-finite at step {first} of {steps} "
                    f"(last finite loss {last:.4g}); lower the learning rate or check the data",
                    step=first,
                    model=eqx.combine(params, static),
                    losses=np.concatenate(history),
                )
            history.append(losses)
            done += n
            bar.update(n)
            bar.set_postfix(loss=f"{losses[-1]:.3e}")
    if cap is not None:
        program = compiled_chunk if long_run else lowered.compile()
        print(
            f"[miniature] {desc}: {steps} of {requested} steps (CONSERVED_MAX_STEPS={cap}); "
            f"compiled step: {_memory_text(program)}"
        )
    return TrainResult(
        eqx.combine(params, static),
        np.concatenate(history),
        opt_state,
        np.asarray(chunk_times, dtype=float),
    )


def _memory_text(compiled) -> str:
    """What XLA reserves for a compiled program (arguments, outputs, temporaries), in MiB."""
    compiled = getattr(compiled, "compiled", compiled)  # Equinox wraps JAX's compiled program
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        stats = None
    if stats is None:
        return "memory not reported by this backend"
    mib = [
        getattr(stats, f"{part}_size_in_bytes") / 2**20 for part in ("argument", "output", "temp")
    ]
    return (
        f"{sum(mib):.1f} MiB (arguments {mib[0]:.1f}, outputs {mib[1]:.1f}, "
        f"temporaries {mib[2]:.1f})"
    )


@shared
def adam_cosine(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """Adam with a cosine-decayed learning rate, one object per (learning_rate, steps): a second
    training run with the same settings reuses the compiled step (`fit` keys it on the
    optimiser object)."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, steps))


def fit_adam(
    loss_fn: LossFn,
    model: PyTree,
    *,
    steps: int,
    key: PRNGKeyArray,
    data: PyTree,
    learning_rate: float = 3e-3,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "training",
) -> TrainResult:
    """`fit` with Adam, a cosine-decayed learning rate and minibatches of at most `batch_size`:
    the recipe most of the book's small models use."""
    size = _dataset_size(data)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    return fit(
        loss_fn,
        model,
        adam_cosine(float(learning_rate), _positive_int("steps", steps)),
        steps=steps,
        key=key,
        data=data,
        batch_size=min(batch_size, size),
        progress=progress,
        desc=desc,
    )


def mse(prediction: Float[Array, "..."], target: Float[Array, "..."]) -> Scalar:
    """Mean squared error; shapes must match exactly (no silent broadcasting)."""
    if jnp.shape(prediction) != jnp.shape(target):
        raise ValueError(
            f"prediction and target must have the same shape, got {jnp.shape(prediction)} "
            f"and {jnp.shape(target)}"
        )
    return jnp.mean((prediction - target) ** 2)
