"""Exterior-embedded conservation (ECF, Dong et al. 2025): neural operators that conserve exactly.

A one-step operator N maps a state u(t) on n grid points (spacing dx) to a prediction
ū = N(u(t)) of u(t + Δt). When the equation conserves the total E = ∫u dx ≈ dx Σ_j u_j, ECF
wraps N, whatever it is, in two parameter-free pieces:

- the **encoder** reads the conserved quantity off the input: its zero Fourier mode
  c_0 = (F u)_0 / n = mean(u), i.e. the total E = n dx c_0 (`encode`, `zero_mode`);
- the **decoder** replaces the zero Fourier mode of the prediction by it,
  û = F⁻¹[c_0, ū_1, ū_2, ...] (`swap_zero_mode`). In real space that is a constant shift,
  û = ū + (mean(u) - mean(ū)): exactly PINN-Proj's linear projection, `projection.fix_mean`,
  which is what `decode` (given a total) calls. `correct` is the encoder and decoder in one, fed
  the input state itself: it computes the shift from the two means, with no dx in it, which in
  float32 keeps a long rollout's total an order of magnitude better than going through the
  total (dx Σ u, then / (n dx)) when dx is not exactly representable.

`ConservingOperator(backbone)` is N followed by `correct`: dx Σ û = dx Σ u for every input, to
floating-point round-off, whatever the weights. Two ways to train it:

- *integrated*: train `ConservingOperator(backbone)` itself (the decoder is in the loss);
- *staged*: train the bare backbone, then `attach` the decoder afterwards.

`train` fits one model to (u(t), u(t + Δt)) pairs (`one_step_pairs`), optionally with a soft
mass penalty (the baseline); `train_together` fits several copies of one backbone (bare,
penalised, integrated; several seeds) side by side with one compilation, and records each
member's own loss; `evaluate` rolls a model out against
reference trajectories and measures one-step error, rollout error and conservation error.

Because the decoder removes only the component of the error along the constant vector 1, and
that component is orthogonal to the rest, per sample

    MSE(û, v) = MSE(ū, v) - (mean ū - mean v)² + (mean u - mean v)²,

and the last term vanishes when the data conserve exactly (mean u = mean v): the corrected error
is never larger (`mse_identity`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Scalar

from . import diagnostics, training
from ._checks import non_negative, positive
from .operators import rollout
from .projection import fix_mean, linear_integral

__all__ = [
    "zero_mode",
    "correct",
    "encode",
    "decode",
    "swap_zero_mode",
    "ConservingOperator",
    "attach",
    "one_step_loss",
    "train",
    "train_together",
    "mse_identity",
    "one_step_pairs",
    "evaluate",
]


def zero_mode(u: Float[ArrayLike, "... n"]) -> Float[Array, "..."]:
    """The zero Fourier coefficient of u over its last axis, normalised: (F u)_0 / n = mean(u)."""
    u = jnp.asarray(u)
    if u.ndim < 1 or u.shape[-1] < 1:
        raise ValueError(f"u must have a grid axis last, got shape {u.shape}")
    return jnp.fft.rfft(u, axis=-1)[..., 0].real / u.shape[-1]


def encode(u: Float[ArrayLike, "... n"], dx: float) -> Float[Array, "..."]:
    """Conserved-quantity encoder: the total dx Σ_j u_j = n dx · zero_mode(u) of each field."""
    return linear_integral(u, dx)


def decode(
    prediction: Float[ArrayLike, "... n"], total: Float[ArrayLike, "..."], dx: float
) -> Float[Array, "... n"]:
    """Conserved-quantity decoder: give `prediction` the total `total` by replacing its zero
    Fourier mode, i.e. shifting it by a constant (`projection.fix_mean`)."""
    return fix_mean(prediction, total, dx)


def correct(
    prediction: Float[ArrayLike, "... n"], state: Float[ArrayLike, "... n"]
) -> Float[Array, "... n"]:
    """The encoder and decoder in one: shift `prediction` by a constant so that its mean (hence
    its total, for any dx) is that of `state`, û = ū + (mean u - mean ū).

    Equal to `decode(prediction, encode(state, dx), dx)` up to round-off, but computed from the
    two means only. Going through the total multiplies by dx and divides by n dx; when dx is not
    exactly representable in float32 that rounds the same way at every step of a rollout, and
    the total drifts about ten times more over 100 steps (the tests measure both)."""
    prediction, state = jnp.asarray(prediction), jnp.asarray(state)
    if prediction.shape != state.shape or prediction.ndim < 1:
        raise ValueError(
            f"prediction and state must have the same shape (..., n), got {prediction.shape} "
            f"and {state.shape}"
        )
    shift = jnp.mean(state - prediction, axis=-1, keepdims=True)  # the mean of a small difference
    return prediction + shift


def swap_zero_mode(
    prediction: Float[ArrayLike, "... n"], source: Float[ArrayLike, "... n"]
) -> Float[Array, "... n"]:
    """The decoder as the paper writes it: FFT the prediction, put the zero coefficient of
    `source` in place of its own, inverse FFT. Equal to `decode(prediction, encode(source))` up
    to round-off; kept as the reference form for tests and the chapter."""
    prediction, source = jnp.asarray(prediction), jnp.asarray(source)
    if prediction.shape != source.shape:
        raise ValueError(
            f"prediction and source must have the same shape, got {prediction.shape} and "
            f"{source.shape}"
        )
    n = prediction.shape[-1]
    coefficients = jnp.fft.rfft(prediction, axis=-1)
    coefficients = coefficients.at[..., 0].set(jnp.fft.rfft(source, axis=-1)[..., 0])
    return jnp.fft.irfft(coefficients, n=n, axis=-1)


class ConservingOperator(eqx.Module):
    """Any one-step operator followed by the ECF decoder: û = N(u) + (mean u - mean N(u)).

    **Fields:**

    - `backbone`: the wrapped model (any callable Equinox module mapping a field to a field of
      the same shape: `(n,)` or `(channels, n)`).
    - `dx`: grid spacing, used to state the total dx Σ u (it cancels in the shift).
    - `channels`: for `(channels, n)` fields, the indices of the conserved channels (the same
      index in input and output), e.g. `(0,)` for the water height of shallow water; `None`
      conserves every channel.

    The conserved channels of the output have exactly the input's totals, for any weights.
    """

    backbone: Callable[[Array], Array]
    dx: float = eqx.field(static=True, default=1.0)
    channels: tuple[int, ...] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        positive("dx", self.dx)
        if self.channels is not None and (
            not isinstance(self.channels, tuple)
            or not all(isinstance(c, int) and c >= 0 for c in self.channels)
        ):
            raise ValueError(
                f"channels must be None or a tuple of non-negative ints, got {self.channels!r}"
            )

    def __call__(self, u: Float[ArrayLike, "*c n"]) -> Float[Array, "*c n"]:
        u = jnp.asarray(u)
        prediction = self.backbone(u)
        if prediction.shape != u.shape:
            raise ValueError(
                f"the backbone must return the input's shape {u.shape}, got {prediction.shape}"
            )
        if self.channels is None or u.ndim == 1:
            if self.channels not in (None, (0,)):
                raise ValueError(
                    f"a single-channel field (shape {u.shape}) has only channel 0, got "
                    f"channels={self.channels}"
                )
            return correct(prediction, u)
        index = np.asarray(self.channels)
        if index.size and index.max() >= u.shape[0]:
            raise ValueError(
                f"channels {self.channels} out of range for a field with {u.shape[0]} channels"
            )
        fixed = correct(prediction[index], u[index])
        return prediction.at[index].set(fixed)


def attach(
    backbone: Callable[[Array], Array], dx: float = 1.0, channels: Sequence[int] | None = None
):
    """Staged ECF: put the decoder around an already trained (bare) backbone."""
    return ConservingOperator(backbone, dx, None if channels is None else tuple(channels))


def _check_pairs(inputs, targets) -> tuple[Array, Array]:
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    if inputs.ndim < 2 or inputs.shape != targets.shape:
        raise ValueError(
            "inputs and targets must be batches of fields of the same shape (batch, ..., n), "
            f"got {inputs.shape} and {targets.shape}"
        )
    return inputs, targets


def one_step_loss(
    model: eqx.Module,
    inputs: Float[Array, "batch *c n"],
    targets: Float[Array, "batch *c n"],
    mass_penalty: float | Scalar = 0.0,
) -> Scalar:
    """Mean squared one-step error over a batch, plus `mass_penalty` times the mean squared
    error of the grid mean, (mean ū - mean u)², against the *input's* mean (the soft-constraint
    baseline: it knows the same conserved quantity the ECF encoder reads)."""
    predictions = jax.vmap(model)(inputs)
    loss = jnp.mean((predictions - targets) ** 2)
    if isinstance(mass_penalty, jax.Array) or mass_penalty:  # an array may be traced: always add
        loss = loss + mass_penalty * jnp.mean(
            (jnp.mean(predictions, axis=-1) - jnp.mean(inputs, axis=-1)) ** 2
        )
    return loss


class _OneStepLoss(eqx.Module):
    # a Module, not a closure: equal settings compare equal, so a second `train` with them
    # reuses the compiled training step
    mass_penalty: float = eqx.field(static=True)

    def __call__(self, m, batch, _key):
        return one_step_loss(m, *batch, mass_penalty=self.mass_penalty)


def train(
    model: eqx.Module,
    inputs: Float[ArrayLike, "pairs *c n"],
    targets: Float[ArrayLike, "pairs *c n"],
    *,
    steps: int,
    key: PRNGKeyArray,
    learning_rate: float = 1e-3,
    batch_size: int = 64,
    mass_penalty: float | Scalar = 0.0,
    progress: bool = True,
    desc: str = "operator",
) -> training.TrainResult:
    """Train a one-step operator on (u(t), u(t + Δt)) pairs with Adam and cosine decay, in
    minibatches (`training.fit`). Pass a `ConservingOperator` for integrated ECF, a bare backbone
    for the bare operator or the first stage of staged ECF, `mass_penalty > 0` for the soft
    constraint."""
    inputs, targets = _check_pairs(inputs, targets)
    mass_penalty = non_negative("mass_penalty", mass_penalty)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")

    return training.fit(
        _OneStepLoss(float(mass_penalty)),
        model,
        training.adam_cosine(float(learning_rate), steps),
        steps=steps,
        key=key,
        data=(inputs, targets),
        batch_size=min(batch_size, inputs.shape[0]),
        progress=progress,
        desc=desc,
    )


class _Switched(eqx.Module):
    # backbone, then the decoder weighted by `switch` (0: bare, 1: conserving); a traced switch
    # lets bare and conserving members share one compiled training step
    backbone: Callable[[Array], Array]
    switch: Array

    def __call__(self, u):
        prediction = self.backbone(u)
        return prediction + self.switch * (correct(prediction, u) - prediction)


def train_together(
    models: Sequence[eqx.Module],
    inputs: Float[ArrayLike, "members pairs *c n"],
    targets: Float[ArrayLike, "members pairs *c n"],
    *,
    steps: int,
    key: PRNGKeyArray,
    learning_rate: float = 1e-3,
    batch_size: int = 64,
    mass_penalty: float | Sequence[float] = 0.0,
    conserve: bool | Sequence[bool] = False,
    dx: float = 1.0,
    progress: bool = True,
    desc: str = "operators",
) -> tuple[list[eqx.Module], np.ndarray]:
    """`train` for several backbones of one structure at once, each on its own data, with its own
    `mass_penalty`, and bare or, where `conserve` is true, integrated with the decoder (the
    member is trained as `ConservingOperator(backbone, dx)` and returned as one). The members are
    stacked into one model, vmapped, and trained by a single `fit` call, so the training step is
    compiled once for all of them.

    The parameters of the members are disjoint and Adam updates every parameter on its own, so
    minimising the sum of the members' losses gives each member exactly the updates that `train`
    would give it alone with the same `key` (which draws the same minibatch indices); only the
    floating-point summation order can differ.

    `inputs[m]`, `targets[m]` are member m's pairs (the same number for every member). Returns
    the trained members as a list, and each member's own loss at every step (before its
    update), a NumPy array of shape `(steps, members)` whose rows sum to the loss `fit` records
    (the per-member values are sent out of the compiled step by an ordered `jax.debug.callback`).
    """
    models = list(models)
    if not models:
        raise ValueError("models must contain at least one model")
    parts = [eqx.partition(m, eqx.is_array) for m in models]
    structure = jax.tree_util.tree_structure(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if jax.tree_util.tree_structure(part) != structure:
            raise ValueError(
                f"models[{i}] differs in structure from models[0]; stack like with like "
                "(pass backbones, and conserve=True for the conserving members)"
            )
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    count = len(models)
    if inputs.shape != targets.shape or inputs.ndim < 3 or inputs.shape[0] != count:
        raise ValueError(
            f"inputs and targets must both have shape ({count}, pairs, ..., n), one slice "
            f"per model, got {inputs.shape} and {targets.shape}"
        )
    penalties = jnp.broadcast_to(jnp.asarray(mass_penalty, dtype=inputs.dtype), (count,))
    if not bool(jnp.all(penalties >= 0)):
        raise ValueError(f"mass_penalty must be >= 0, got {mass_penalty!r}")
    flags = np.broadcast_to(np.asarray(conserve), (count,))
    if flags.dtype != bool:
        raise ValueError(f"conserve must be a bool or a sequence of bools, got {conserve!r}")
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *[p for p, _ in parts])
    ensemble = eqx.combine(stacked, parts[0][1])
    switches = jnp.asarray(flags, dtype=inputs.dtype)

    def member_loss(backbone, x, y, penalty, switch):
        return one_step_loss(_Switched(backbone, switch), x, y, mass_penalty=penalty)

    history: list[np.ndarray] = []

    def loss(members, batch, _key):
        x, y = batch  # (batch, members, ...): the pair axis leads, for minibatching
        per_member = eqx.filter_vmap(member_loss, in_axes=(eqx.if_array(0), 1, 1, 0, 0))(
            members, x, y, penalties, switches
        )
        jax.debug.callback(lambda v: history.append(np.asarray(v)), per_member, ordered=True)
        return jnp.sum(per_member)

    result = training.fit(
        loss,
        ensemble,
        optax.adam(optax.cosine_decay_schedule(learning_rate, steps)),
        steps=steps,
        key=key,
        data=(jnp.swapaxes(inputs, 0, 1), jnp.swapaxes(targets, 0, 1)),
        batch_size=min(batch_size, inputs.shape[1]),
        progress=progress,
        desc=desc,
    )
    trained, static = eqx.partition(result.model, eqx.is_array)
    members = [
        eqx.combine(jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], trained), static)
        for i in range(count)
    ]
    members = [attach(m, dx) if flag else m for m, flag in zip(members, flags, strict=True)]
    return members, np.stack(history[:steps])  # the last chunk may run a few inactive steps


def mse_identity(
    inputs: Float[ArrayLike, "batch n"],
    predictions: Float[ArrayLike, "batch n"],
    targets: Float[ArrayLike, "batch n"],
    dx: float = 1.0,
) -> dict[str, np.ndarray]:
    """Both sides of the ECF error identity, per sample, in float64:

        MSE(û, v) = MSE(ū, v) - (mean ū - mean v)² + (mean u - mean v)²

    for inputs u, bare predictions ū, targets v and the corrected predictions
    û = decode(ū, encode(u)), which are computed here in float64 with the same `decode`. Returns
    NumPy arrays of shape (batch,): `bare` = MSE(ū, v), `corrected` = MSE(û, v), `mean_error` =
    (mean ū - mean v)², `data_defect` = (mean u - mean v)² (zero when the data conserve exactly)
    and `residual` = |left side - right side|, which is float64 round-off.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (inputs, predictions, targets)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2:
        raise ValueError(
            "inputs, predictions and targets must share one shape (batch, n), "
            f"got {[a.shape for a in arrays]}"
        )
    u, bar, v = arrays
    with jax.enable_x64(True):
        hat = np.asarray(decode(jnp.asarray(bar), encode(jnp.asarray(u), dx), dx))
    bare = np.mean((bar - v) ** 2, axis=-1)
    corrected = np.mean((hat - v) ** 2, axis=-1)
    mean_error = (bar.mean(-1) - v.mean(-1)) ** 2
    defect = (u.mean(-1) - v.mean(-1)) ** 2
    return dict(
        bare=bare,
        corrected=corrected,
        mean_error=mean_error,
        data_defect=defect,
        residual=np.abs(corrected - (bare - mean_error + defect)),
    )


def one_step_pairs(
    trajectories: Float[ArrayLike, "batch T *c n"],
) -> tuple[Float[Array, "pairs *c n"], Float[Array, "pairs *c n"]]:
    """All consecutive pairs (u(t_i), u(t_(i+1))) of a batch of trajectories, flattened into
    one batch of batch · (T - 1) inputs and targets."""
    trajectories = jnp.asarray(trajectories)
    if trajectories.ndim < 3 or trajectories.shape[1] < 2:
        raise ValueError(
            f"trajectories must have shape (batch, T >= 2, ..., n), got {trajectories.shape}"
        )
    field = trajectories.shape[2:]
    return (
        trajectories[:, :-1].reshape(-1, *field),
        trajectories[:, 1:].reshape(-1, *field),
    )


@eqx.filter_jit
def _rollouts(model, trajectories):
    # module level, so models of the same structure share one compilation
    steps = trajectories.shape[1] - 1
    states = jax.vmap(lambda u0: rollout(model, u0, steps))(trajectories[:, 0])
    return states, jax.vmap(jax.vmap(model))(trajectories[:, :-1])


def evaluate(
    model: eqx.Module, trajectories: Float[ArrayLike, "batch T n"], dx: float
) -> dict[str, np.ndarray]:
    """Roll `model` out from the first state of each reference trajectory for T - 1 steps and
    measure it against the reference.

    Returns NumPy arrays: `states` (batch, T, n), the rollouts; `predictions` (batch, T - 1, n),
    one step from each reference state but the last; `one_step` (batch,), their relative L2
    error, averaged over the trajectory's T - 1 pairs;
    `rollout` (T,), relative L2 error against time, averaged over the batch; `conservation`
    (T,), the largest over the batch of |dx Σ û(t) - dx Σ u(0)|.
    """
    trajectories = jnp.asarray(trajectories)
    if trajectories.ndim != 3 or trajectories.shape[1] < 2:
        raise ValueError(
            f"trajectories must have shape (batch, T >= 2, n), got {trajectories.shape}"
        )
    states, one = _rollouts(model, trajectories)
    one_step = diagnostics.relative_error(one, trajectories[:, 1:], axis=-1).mean(axis=-1)
    over_time = diagnostics.relative_error(states, trajectories, axis=-1).mean(axis=0)
    totals = encode(states, dx)
    drift = diagnostics.drift(totals, relative=False).max(axis=0)
    return dict(
        states=np.asarray(states),
        predictions=np.asarray(one),
        one_step=np.asarray(one_step),
        rollout=np.asarray(over_time),
        conservation=np.asarray(drift),
    )
