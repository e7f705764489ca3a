"""Hamiltonian neural networks (Greydanus et al., 2019) and a neural-ODE baseline, in Equinox.

Both map a state x = (q, p) of shape `(2n,)` to a predicted time derivative:

- `HNN`: a scalar network H_θ(x); the prediction is J ∇H_θ(x), a Hamiltonian vector field by
  construction (divergence-free, and it conserves H_θ exactly along its own flow).
- `NeuralODE`: an unconstrained network x -> f_θ(x) in R^{2n}.

`fit_vector_field` trains either on (state, derivative) pairs with the shared training loop;
`rollout` integrates the learned field with Diffrax.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Scalar

from . import mechanics, training
from ._checks import positive_int

__all__ = [
    "HNN",
    "NeuralODE",
    "vector_field_loss",
    "fit_vector_field",
    "rollout",
    "rollout_many",
    "divergence",
    "init_pair",
]


def _check_input(x: Array, dof: int) -> Array:
    x = jnp.asarray(x)
    if x.shape != (2 * dof,):
        raise ValueError(f"expected one state of shape {(2 * dof,)}, got {x.shape}")
    return x


class HNN(eqx.Module):
    """Hamiltonian neural network: an MLP H_θ: R^{2n} -> R, vector field J ∇H_θ."""

    mlp: eqx.nn.MLP
    dof: int = eqx.field(static=True)

    def __init__(self, dof: int, *, width: int = 64, depth: int = 2, key: PRNGKeyArray):
        self.dof = positive_int("dof", dof)
        self.mlp = eqx.nn.MLP(2 * dof, "scalar", width, depth, activation=jax.nn.softplus, key=key)

    def hamiltonian(self, x: Float[Array, " dim"]) -> Scalar:
        """The learned energy H_θ(x)."""
        return self.mlp(_check_input(x, self.dof))

    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        return mechanics.hamiltonian_vector_field(self.hamiltonian)(_check_input(x, self.dof))


class NeuralODE(eqx.Module):
    """Unconstrained baseline: an MLP f_θ: R^{2n} -> R^{2n} used directly as the vector field."""

    mlp: eqx.nn.MLP
    dof: int = eqx.field(static=True)

    def __init__(self, dof: int, *, width: int = 64, depth: int = 2, key: PRNGKeyArray):
        self.dof = positive_int("dof", dof)
        self.mlp = eqx.nn.MLP(2 * dof, 2 * dof, width, depth, activation=jax.nn.softplus, key=key)

    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        return self.mlp(_check_input(x, self.dof))


def vector_field_loss(model, batch, key=None) -> Scalar:
    """Mean squared error between the model's vector field and the target derivatives."""
    states, derivatives = batch
    return training.mse(jax.vmap(model)(states), derivatives)


def fit_vector_field(
    model,
    states: Float[ArrayLike, "N dim"],
    derivatives: Float[ArrayLike, "N dim"],
    *,
    steps: int,
    key: PRNGKeyArray,
    learning_rate: float = 3e-3,
    batch_size: int = 256,
    progress: bool = True,
) -> training.TrainResult:
    """Train an `HNN` or `NeuralODE` on (state, time derivative) pairs: Adam with cosine decay."""
    states, derivatives = jnp.asarray(states), jnp.asarray(derivatives)
    if states.ndim != 2 or states.shape != derivatives.shape or states.shape[1] != 2 * model.dof:
        raise ValueError(
            f"states and derivatives must both have shape (N, {2 * model.dof}), "
            f"got {states.shape} and {derivatives.shape}"
        )
    return training.fit_adam(
        vector_field_loss,
        model,
        steps=steps,
        key=key,
        data=(states, derivatives),
        learning_rate=learning_rate,
        batch_size=batch_size,
        progress=progress,
        desc=f"fit {type(model).__name__}",
    )


def rollout(
    model, x0: Float[ArrayLike, " dim"], ts: Float[ArrayLike, " T"], **kwargs
) -> Float[Array, "T dim"]:
    """Integrate the model's vector field from x0 (adaptive Tsit5 by default; keyword arguments
    as in `mechanics.integrate_field`)."""
    return mechanics.integrate_field(model, x0, ts, **kwargs)


@eqx.filter_jit
def rollout_many(
    model, x0: Float[Array, "num dim"], ts: Float[Array, " T"]
) -> Float[Array, "num T dim"]:
    """`rollout` vmapped over initial states; compiled once per model type and shape."""
    return jax.vmap(lambda x: mechanics.integrate_field(model, x, ts))(x0)


def divergence(field, x: Float[Array, " dim"]) -> Scalar:
    """Divergence of a vector field at x, the trace of its Jacobian (0 for a Hamiltonian field)."""
    return jnp.trace(jax.jacfwd(field)(x))


def init_pair(dof: int, key: PRNGKeyArray, **kwargs) -> tuple[HNN, NeuralODE]:
    """An HNN and a neural ODE of the same width and depth, from one key."""
    k1, k2 = jr.split(key)
    return HNN(dof, key=k1, **kwargs), NeuralODE(dof, key=k2, **kwargs)
