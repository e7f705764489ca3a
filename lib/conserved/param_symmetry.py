"""Symmetries of a network's parameters, the quantities gradient flow conserves because of them,
teleportation along a symmetry orbit, and permutation alignment of two trained networks.

Networks are Equinox MLPs (`eqx.nn.MLP`), whose layer `l` stores `weight` (out × in) and `bias`.
Hidden layer `l` (0-based, `0 <= l < len(layers) - 1`) is the output of `layers[l]`.

- `act_on_hidden(mlp, l, g)`: W_l -> g W_l, b_l -> g b_l, W_{l+1} -> W_{l+1} g⁻¹. Which g leave the
  function unchanged depends on the activation σ: permutations for any elementwise σ, positive
  diagonal matrices for ReLU (σ(ax) = aσ(x), a > 0), ±1 diagonals for odd σ (tanh), any invertible
  g for the identity (a linear network).
- `neuron_balance(mlp, l)`: ‖w_in,j‖² + b_j² - ‖w_out,j‖² for each neuron j of hidden layer l,
  conserved by gradient flow of any loss of a ReLU network (the rescaling symmetry's charge).
- `linear_imbalance(w1, w2)`: W2ᵀW2 - W1W1ᵀ, conserved by gradient flow of a two-layer linear net.
- `gradient_flow` (Diffrax) and `optimiser_path` (optax, one step at a time) produce parameter
  trajectories.
- `teleport_linear`: move along the GL(h) orbit of a two-layer linear net to a point of equal loss
  and larger gradient.
- `weight_matching`, `permute_mlp`, `interpolation_losses`, `barrier`: Git Re-Basin's weight
  matching and the loss barrier along the straight line between two networks.
- `booth`, `booth_rotate`, `booth_teleport`: Booth's function, its SO(2) symmetry (rotating the
  residual) and the closed-form steepest point of an orbit.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PyTree, Scalar
from scipy.optimize import linear_sum_assignment

from ._checks import positive_int
from .ode import solve_ode

# ------------------------------------------------------------------------------------------
# Group actions on parameters
# ------------------------------------------------------------------------------------------


__all__ = [
    "right_divide",
    "booth_teleport",
    "act_on_hidden",
    "permutation_matrix",
    "permute_mlp",
    "softmax_shift",
    "layer_norm",
    "attention",
    "act_on_attention",
    "neuron_balance",
    "linear_imbalance",
    "gradient_flow",
    "optimiser_path",
    "teleport_linear",
    "weight_matching",
    "interpolate",
    "interpolation_losses",
    "barrier",
    "booth",
    "booth_rotate",
]


def _check_hidden(mlp: eqx.nn.MLP, layer: int) -> int:
    if not isinstance(mlp, eqx.nn.MLP):
        raise ValueError(f"mlp must be an equinox.nn.MLP, got {type(mlp).__name__}")
    hidden = len(mlp.layers) - 1
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < hidden:
        raise ValueError(f"layer must be a hidden layer index in [0, {hidden}), got {layer!r}")
    return layer


def right_divide(w: Float[Array, "m n"], g: Float[Array, "n n"]) -> Float[Array, "m n"]:
    """W g⁻¹, by solving X g = W (gᵀ Xᵀ = Wᵀ, one LU factorisation for all rows)."""
    return jnp.linalg.solve(jnp.asarray(g).T, jnp.asarray(w).T).T


def act_on_hidden(mlp: eqx.nn.MLP, layer: int, g: Float[ArrayLike, "h h"]) -> eqx.nn.MLP:
    """The action of an invertible h×h matrix g on hidden layer `layer`:
    W_l -> g W_l, b_l -> g b_l, W_{l+1} -> W_{l+1} g⁻¹ (the next bias is untouched)."""
    layer = _check_hidden(mlp, layer)
    g = jnp.asarray(g)
    h = mlp.layers[layer].weight.shape[0]
    if g.shape != (h, h):
        raise ValueError(f"g must be {h}×{h} for hidden layer {layer} of width {h}, got {g.shape}")
    first, second = mlp.layers[layer], mlp.layers[layer + 1]
    return eqx.tree_at(
        lambda m: (m.layers[layer].weight, m.layers[layer].bias, m.layers[layer + 1].weight),
        mlp,
        (g @ first.weight, g @ first.bias, right_divide(second.weight, g)),
    )


def permutation_matrix(perm: ArrayLike) -> Float[Array, "h h"]:
    """P with (P x)_i = x_{perm[i]}."""
    perm = np.asarray(perm)
    if sorted(perm.tolist()) != list(range(len(perm))):
        raise ValueError(f"perm must be a permutation of 0..{len(perm) - 1}, got {perm}")
    return jnp.eye(len(perm))[perm]


def permute_mlp(mlp: eqx.nn.MLP, perms: list[ArrayLike]) -> eqx.nn.MLP:
    """Permute the neurons of every hidden layer: `perms[l]` for hidden layer l."""
    if len(perms) != len(mlp.layers) - 1:
        raise ValueError(
            f"need one permutation per hidden layer ({len(mlp.layers) - 1}), got {len(perms)}"
        )
    for layer, perm in enumerate(perms):
        mlp = act_on_hidden(mlp, layer, permutation_matrix(perm))
    return mlp


def softmax_shift(mlp: eqx.nn.MLP, shift: float) -> eqx.nn.MLP:
    """Add the same constant to every output logit (the last bias): softmax and cross-entropy
    do not change."""
    return eqx.tree_at(lambda m: m.layers[-1].bias, mlp, mlp.layers[-1].bias + shift)


def layer_norm(z: Float[Array, "... h"]) -> Float[Array, "... h"]:
    """Layer normalisation without learned gain or bias, (z - mean) / std over the last axis.
    Scaling its input by any c > 0 (for example the weights of the layer before it) changes
    nothing: the normalisation's scale symmetry."""
    z = jnp.asarray(z)
    centred = z - jnp.mean(z, axis=-1, keepdims=True)
    return centred / jnp.sqrt(jnp.mean(centred**2, axis=-1, keepdims=True))


def attention(x, wq, wk, wv, wo):
    """Single-head softmax self-attention of tokens x (n × d): softmax(QKᵀ/√d_k) V W_O."""
    q, k, v = x @ wq, x @ wk, x @ wv
    scores = jax.nn.softmax(q @ k.T / jnp.sqrt(wq.shape[1]), axis=-1)
    return scores @ v @ wo


def act_on_attention(params: tuple, a: Float[ArrayLike, "k k"], b: Float[ArrayLike, "v v"]):
    """(W_Q, W_K, W_V, W_O) -> (W_Q A, W_K A⁻ᵀ, W_V B, B⁻¹ W_O): the scores depend on W_Q W_Kᵀ
    and the output on W_V W_O only."""
    wq, wk, wv, wo = params
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != (wq.shape[1],) * 2 or b.shape != (wv.shape[1],) * 2:
        raise ValueError(f"a must be {wq.shape[1]}×{wq.shape[1]} and b {wv.shape[1]}×{wv.shape[1]}")
    wk_new = right_divide(wk, a.T)  # W_K A^{-T}
    wo_new = right_divide(wo.T, b.T).T  # B^{-1} W_O
    return wq @ a, wk_new, wv @ b, wo_new


# ------------------------------------------------------------------------------------------
# Conserved quantities of gradient flow
# ------------------------------------------------------------------------------------------


def neuron_balance(mlp: eqx.nn.MLP, layer: int) -> Float[Array, " h"]:
    """‖w_in,j‖² + b_j² - ‖w_out,j‖² for each neuron j of a ReLU network's hidden layer."""
    layer = _check_hidden(mlp, layer)
    first, second = mlp.layers[layer], mlp.layers[layer + 1]
    return jnp.sum(first.weight**2, axis=1) + first.bias**2 - jnp.sum(second.weight**2, axis=0)


def linear_imbalance(w1: Float[Array, "h d"], w2: Float[Array, "m h"]) -> Float[Array, "h h"]:
    """Q = W2ᵀW2 - W1W1ᵀ for the linear network x -> W2 W1 x, conserved by gradient flow."""
    w1, w2 = jnp.asarray(w1), jnp.asarray(w2)
    if w1.ndim != 2 or w2.ndim != 2 or w2.shape[1] != w1.shape[0]:
        raise ValueError(f"need W1 (h, d) and W2 (m, h), got {w1.shape} and {w2.shape}")
    return w2.T @ w2 - w1 @ w1.T


def gradient_flow(
    loss: Callable[[PyTree], Scalar],
    params: PyTree,
    ts: Float[ArrayLike, " T"],
    *,
    weight_decay: float = 0.0,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    dt0: float | None = None,
    max_steps: int = 1_000_000,
) -> PyTree:
    """Integrate θ' = -∇L(θ) - λθ with Diffrax (Tsit5; adaptive, or fixed steps of `dt0`).

    Returns the parameters at `ts`, as a pytree whose leaves gain a leading time axis.
    """
    flat, unravel = ravel_pytree(params)

    def field(theta):
        return -jax.grad(lambda th: loss(unravel(th)))(theta) - weight_decay * theta

    ys = solve_ode(field, flat, ts, dt0=dt0, rtol=rtol, atol=atol, max_steps=max_steps)
    return jax.vmap(unravel)(ys)


def optimiser_path(
    loss: Callable[[PyTree], Scalar],
    params: PyTree,
    optimiser: optax.GradientTransformation,
    steps: int,
) -> PyTree:
    """Parameters after every step of an optax optimiser on a full-batch loss (a `lax.scan`).

    Returns a pytree whose leaves have a leading axis of length `steps + 1` (the start included).
    """
    steps = positive_int("steps", steps)
    state = optimiser.init(params)

    def step(carry, _):
        p, s = carry
        updates, s = optimiser.update(jax.grad(loss)(p), s, p)
        p = optax.apply_updates(p, updates)
        return (p, s), p

    _, path = jax.lax.scan(step, (params, state), None, length=steps)
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), params, path)


# ------------------------------------------------------------------------------------------
# Teleportation
# ------------------------------------------------------------------------------------------


def teleport_linear(
    loss: Callable[[tuple], Scalar],
    w1: Float[Array, "h d"],
    w2: Float[Array, "m h"],
    *,
    gain: float = 2.0,
    step: float = 0.02,
    max_steps: int = 200,
) -> tuple[Array, Array, int]:
    """Move a two-layer linear network along its GL(h) orbit, W1 -> g W1, W2 -> W2 g⁻¹, with
    g = exp(T), by normalised gradient ascent on ‖∇L‖² over T, until ‖∇L‖² has grown by the
    factor `gain` (or `max_steps` is reached). The loss is unchanged (the function is).

    `loss((w1, w2))` takes the pair. Returns the new (w1, w2) and the number of ascent steps.
    """
    if not gain > 1:
        raise ValueError(f"gain must be > 1, got {gain!r}")

    def moved(t):
        g = jax.scipy.linalg.expm(t)
        return g @ w1, w2 @ jax.scipy.linalg.expm(-t)

    def grad_norm2(t):
        grads = jax.grad(loss)(moved(t))
        return sum(jnp.sum(x**2) for x in grads)

    target = gain * grad_norm2(jnp.zeros((w1.shape[0],) * 2))
    ascent = jax.jit(jax.value_and_grad(grad_norm2))
    t = jnp.zeros((w1.shape[0],) * 2)
    for k in range(max_steps):
        value, direction = ascent(t)
        if value >= target:
            return *moved(t), k
        t = t + step * direction / (jnp.linalg.norm(direction) + 1e-30)
    return *moved(t), max_steps


# ------------------------------------------------------------------------------------------
# Permutation alignment and linear mode connectivity
# ------------------------------------------------------------------------------------------


def weight_matching(
    mlp_a: eqx.nn.MLP, mlp_b: eqx.nn.MLP, *, max_sweeps: int = 50
) -> list[np.ndarray]:
    """Permutations of the hidden neurons of `mlp_b` that best align its weights with `mlp_a`'s
    (Git Re-Basin weight matching): coordinate ascent over layers, each a linear assignment
    problem that maximises Σ ⟨W_a, P W_b⟩ over the weights touching that layer.
    Apply the result with `permute_mlp(mlp_b, perms)`."""
    max_sweeps = positive_int("max_sweeps", max_sweeps)
    if [lay.weight.shape for lay in mlp_a.layers] != [lay.weight.shape for lay in mlp_b.layers]:
        raise ValueError("the two networks must have the same layer shapes")
    wa = [np.asarray(lay.weight) for lay in mlp_a.layers]
    ba = [np.asarray(lay.bias) for lay in mlp_a.layers]
    wb = [np.asarray(lay.weight) for lay in mlp_b.layers]
    bb = [np.asarray(lay.bias) for lay in mlp_b.layers]
    hidden = len(wa) - 1
    perms = [np.arange(w.shape[0]) for w in wa[:-1]]
    for _ in range(max_sweeps):
        changed = False
        for layer in range(hidden):
            prev = perms[layer - 1] if layer > 0 else np.arange(wa[0].shape[1])
            nxt = perms[layer + 1] if layer + 1 < hidden else np.arange(wa[-1].shape[0])
            # similarity[i, j]: how well neuron j of B matches neuron i of A
            incoming = wa[layer] @ wb[layer][:, prev].T + np.outer(ba[layer], bb[layer])
            outgoing = wa[layer + 1].T @ wb[layer + 1][nxt, :]
            _, best = linear_sum_assignment(incoming + outgoing, maximize=True)
            if not np.array_equal(best, perms[layer]):
                perms[layer], changed = best, True
        if not changed:
            break
    return perms


def interpolate(mlp_a: PyTree, mlp_b: PyTree, alpha: float) -> PyTree:
    """(1 - alpha) θ_a + alpha θ_b on every floating-point array."""
    return jax.tree_util.tree_map(
        lambda a, b: (1 - alpha) * a + alpha * b if eqx.is_inexact_array(a) else a, mlp_a, mlp_b
    )


def interpolation_losses(
    loss: Callable[[PyTree], Scalar], mlp_a: PyTree, mlp_b: PyTree, num: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """Losses along the straight line between two networks: (alphas, losses), `num` points."""
    alphas = np.linspace(0.0, 1.0, num)
    losses = np.array([float(loss(interpolate(mlp_a, mlp_b, a))) for a in alphas])
    return alphas, losses


def barrier(alphas: ArrayLike, losses: ArrayLike) -> float:
    """Loss barrier: max over the path of L(θ_α) - [(1 - α) L(θ_a) + α L(θ_b)]."""
    alphas, losses = np.asarray(alphas), np.asarray(losses)
    linear = (1 - alphas) * losses[0] + alphas * losses[-1]
    return float(np.max(losses - linear))


# ------------------------------------------------------------------------------------------
# A test function with a clean symmetry: Booth's function
# ------------------------------------------------------------------------------------------

_BOOTH_A = ((1.0, 2.0), (2.0, 1.0))
_BOOTH_C = (7.0, 5.0)


def booth(xy: Float[Array, " 2"]) -> Scalar:
    """Booth's function (x + 2y - 7)² + (2x + y - 5)² = |A xy - c|², minimum 0 at (1, 3)."""
    r = jnp.asarray(_BOOTH_A) @ xy - jnp.asarray(_BOOTH_C)
    return jnp.sum(r**2)


def booth_rotate(xy: Float[Array, " 2"], angle: float | Scalar) -> Float[Array, " 2"]:
    """The SO(2) symmetry of Booth's function: rotate the residual r = A xy - c by `angle` and
    map back, xy -> A⁻¹(R(angle) r + c). The loss |r|² is unchanged; the gradient 2Aᵀr is not."""
    a, c = jnp.asarray(_BOOTH_A), jnp.asarray(_BOOTH_C)
    r = a @ xy - c
    rot = jnp.array([[jnp.cos(angle), -jnp.sin(angle)], [jnp.sin(angle), jnp.cos(angle)]])
    return jnp.linalg.solve(a, rot @ r + c)


def booth_teleport(xy: Float[Array, " 2"]) -> Float[Array, " 2"]:
    """The steepest point of the SO(2) orbit of `xy` (closed form, no search).

    The loss |r|² is fixed on the orbit and ‖∇L‖² = 4 rᵀAAᵀr, so the steepest point turns the
    residual r = A xy - c onto the top eigenvector e of AAᵀ: r -> ±|r| e (the sign nearer to r).
    From there one gradient step of size 1/λ_max(∇²L) = 1/(2 λ_max(AᵀA)) lands on the minimum.
    """
    xy = jnp.asarray(xy)
    if xy.shape != (2,):
        raise ValueError(f"xy must be a point of shape (2,), got {xy.shape}")
    a, c = jnp.asarray(_BOOTH_A), jnp.asarray(_BOOTH_C)
    r = a @ xy - c
    top = jnp.linalg.eigh(a @ a.T)[1][:, -1]
    sign = jnp.where(r @ top >= 0, 1.0, -1.0)
    return jnp.linalg.solve(a, sign * jnp.linalg.norm(r) * top + c)
