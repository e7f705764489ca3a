"""Noether's Razor (van der Ouderaa, van der Wilk and de Haan, NeurIPS 2024): learn quadratic
conserved quantities, and with them the symmetry of a Hamiltonian, by maximising a variational
lower bound on the marginal likelihood.

The pieces, from the bottom up:

- `Quadratics`: K learnable quadratics C_k(x) = ½ xᵀ A_k x + b_kᵀ x on phase space R^M. The
  Hamiltonian vector field of C_k is affine, x ↦ J A_k x + J b_k, so in homogeneous coordinates
  (x, 1) it is linear with the generator Ĝ_k = [[J A_k, J b_k], [0, 0]] ((M+1)×(M+1)) and the flow
  is exact: Φ^τ(x) = exp(τ Ĝ_k)(x, 1). Several quantities at once: one exponential of Σ_k τ_k Ĝ_k.
- `sample_times`, `group_elements`, `transform`: S group elements with τ = π ε, ε uniform in the
  unit ball (or cube) of R^K, applied to a batch of states in one einsum.
- `VariationalMLP`: an MLP F_θ whose weight matrices have a matrix-normal posterior
  q(W) = MN(M, U, V) (Louizos and Welling), vec(W) ~ N(vec M, U ⊗ V) (row-major vec), with
  Cholesky factors U = L_S L_Sᵀ, V = L_A L_Aᵀ; biases are point estimates. The KL to the Gaussian
  prior N(0, v I) is closed form, and so is the best ("empirical") prior variance v*.
- `RazorHNN`: the symmetrised Hamiltonian Ĥ(x) = (1/S) Σ_s F_θ(Φ^{τ_s}(x)) (one set of S
  transforms per prediction, shared by the whole batch and by every Euler sub-step), its vector
  field J ∇Ĥ, and the one-step prediction by Euler sub-steps with Diffrax.
- `negative_elbo`: the per-data-point negative ELBO with a fixed observation variance σ²,
  -(1/N)·ELBO = E_q[(1/n) Σ_i -log N(y_i | ŷ_i, σ² I)] + KL(q || p)/N.
- `train`: the quadratics and the posterior trained jointly on that bound (or on the likelihood
  alone, `kl_weight=0`) with Adam at separate learning rates (`optax.multi_transform`).
- `generator_analysis`: singular values of the stacked learned generators and the
  "parallelness" of the leading right singular vectors to the span of the true generators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Scalar

from . import mechanics, systems, training
from .symmetry import expm, symplectic_matrix

__all__ = [
    "Quadratics",
    "quadratic_coefficients",
    "generators",
    "sample_times",
    "group_elements",
    "transform",
    "exact_flow",
    "MatrixNormalLinear",
    "VariationalMLP",
    "RazorHNN",
    "transitions",
    "dataset",
    "negative_elbo",
    "elbo_terms",
    "one_step_mse",
    "evaluate",
    "train",
    "GeneratorAnalysis",
    "generator_analysis",
]

Measure = Literal["ball", "cube"]


def _phase_dim(m, name: str = "dim") -> int:
    if isinstance(m, bool) or not isinstance(m, int) or m < 2 or m % 2:
        raise ValueError(f"{name} must be an even phase-space dimension >= 2, got {m!r}")
    return m


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Quadratic conserved quantities and their exact flows
# --------------------------------------------------------------------------------------------


def generators(
    matrices: Float[ArrayLike, "K M M"], vectors: Float[ArrayLike, "K M"]
) -> Float[Array, "K M+1 M+1"]:
    """Generators Ĝ_k = [[J A_k, J b_k], [0, 0]] of the flows of C_k = ½ xᵀA_k x + b_kᵀx.

    `matrices` must be symmetric (only their symmetric part enters a quadratic form)."""
    a = jnp.asarray(matrices)
    b = jnp.asarray(vectors)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] % 2:
        raise ValueError(f"matrices must have shape (K, M, M) with M even, got {a.shape}")
    if b.shape != a.shape[:2]:
        raise ValueError(f"vectors must have shape {a.shape[:2]} (K, M), got {b.shape}")
    k, m = a.shape[:2]
    j = symplectic_matrix(m // 2).astype(a.dtype)
    top = jnp.concatenate([j @ a, (j @ b[..., None])], axis=2)
    bottom = jnp.zeros((k, 1, m + 1), a.dtype)
    return jnp.concatenate([top, bottom], axis=1)


class Quadratics(eqx.Module):
    """K quadratics C_k(x) = ½ xᵀ A_k x + b_kᵀ x on R^M, with A_k = ½(W_k + W_kᵀ).

    - `weight`: `(K, M, M)` unconstrained W_k; `bias`: `(K, M)` the b_k.
    - `frozen`: hold them fixed in training (an "oracle" with known conserved quantities).
    """

    weight: Float[Array, "K M M"]
    bias: Float[Array, "K M"]
    frozen: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        w, b = self.weight, self.bias
        if w.ndim != 3 or w.shape[1] != w.shape[2] or w.shape[1] % 2 or w.shape[0] < 1:
            raise ValueError(f"weight must have shape (K, M, M) with M even, got {w.shape}")
        if b.shape != w.shape[:2]:
            raise ValueError(f"bias must have shape {w.shape[:2]}, got {b.shape}")

    @classmethod
    def random(
        cls, key: PRNGKeyArray, count: int, dim: int, *, scale: float = 0.01, linear: bool = True
    ) -> Quadratics:
        """`count` quadratics on R^dim with entries ~ N(0, scale²) (`linear=False`: b = 0)."""
        count = _positive_int("count", count)
        dim = _phase_dim(dim)
        kw, kb = jr.split(key)
        bias = scale * jr.normal(kb, (count, dim)) if linear else jnp.zeros((count, dim))
        return cls(scale * jr.normal(kw, (count, dim, dim)), bias)

    @classmethod
    def from_functions(
        cls, functions: Sequence[Callable[[Array], Scalar]], dim: int, *, frozen: bool = True
    ) -> Quadratics:
        """The quadratics of known conserved quantities (each must be a quadratic of x)."""
        if not functions:
            raise ValueError("functions must name at least one quadratic")
        pairs = [quadratic_coefficients(f, dim) for f in functions]
        return cls(jnp.stack([a for a, _ in pairs]), jnp.stack([b for _, b in pairs]), frozen)

    @property
    def count(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def coefficients(self) -> tuple[Float[Array, "K M M"], Float[Array, "K M"]]:
        """(A, b): the symmetric matrices and the linear coefficients (held fixed if frozen)."""
        w, b = self.weight, self.bias
        if self.frozen:
            w, b = jax.lax.stop_gradient((w, b))
        return 0.5 * (w + jnp.swapaxes(w, 1, 2)), b

    def generators(self) -> Float[Array, "K M+1 M+1"]:
        """Ĝ_k, one (M+1)×(M+1) matrix per quantity."""
        return generators(*self.coefficients())

    def __call__(self, x: Float[Array, " M"]) -> Float[Array, " K"]:
        """The values C_k(x)."""
        a, b = self.coefficients()
        return 0.5 * jnp.einsum("i,kij,j->k", x, a, x) + b @ x


def quadratic_coefficients(
    function: Callable[[Array], Scalar], dim: int
) -> tuple[Float[Array, "M M"], Float[Array, " M"]]:
    """(A, b) with function(x) = ½ xᵀ A x + bᵀ x + const, read off by autodiff at x = 0.

    Raises `ValueError` if the function is not quadratic (its Hessian changes with x)."""
    dim = _phase_dim(dim)
    zero = jnp.zeros(dim)
    a = jax.hessian(function)(zero)
    b = jax.grad(function)(zero)
    probe = jnp.linspace(-1.0, 1.0, dim) + 0.3
    if a.shape != (dim, dim) or not bool(jnp.allclose(jax.hessian(function)(probe), a, atol=1e-5)):
        raise ValueError("function must be a quadratic of the state (its Hessian varies with x)")
    return 0.5 * (a + a.T), b


def sample_times(
    key: PRNGKeyArray, num: int, count: int, measure: Measure = "ball"
) -> Float[Array, "num count"]:
    """`num` symmetry times τ = π ε for `count` generators, ε uniform in the unit ball or cube."""
    num = _positive_int("num", num)
    count = _positive_int("count", count)
    if measure == "cube":
        eps = jr.uniform(key, (num, count), minval=-1.0, maxval=1.0)
    elif measure == "ball":
        kd, kr = jr.split(key)
        direction = jr.normal(kd, (num, count))
        direction = direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
        radius = jr.uniform(kr, (num, 1)) ** (1.0 / count)
        eps = radius * direction
    else:
        raise ValueError(f"measure must be 'ball' or 'cube', got {measure!r}")
    return math.pi * eps


def group_elements(
    gens: Float[ArrayLike, "K M+1 M+1"], times: Float[ArrayLike, "S K"]
) -> Float[Array, "S M+1 M+1"]:
    """exp(Σ_k τ_sk Ĝ_k) for each row τ_s of `times`: the affine maps of the group."""
    gens = jnp.asarray(gens)
    times = jnp.asarray(times)
    if gens.ndim != 3 or gens.shape[1] != gens.shape[2]:
        raise ValueError(f"gens must have shape (K, M+1, M+1), got {gens.shape}")
    if times.ndim != 2 or times.shape[1] != gens.shape[0]:
        raise ValueError(f"times must have shape (S, {gens.shape[0]}), got {times.shape}")
    return expm(jnp.einsum("sk,kij->sij", times, gens))


def transform(elements: Float[Array, "S M+1 M+1"], x: Float[Array, "N M"]) -> Float[Array, "S N M"]:
    """Apply each affine map (homogeneous (M+1)×(M+1) matrix) to each state."""
    m = x.shape[-1]
    if elements.shape[1:] != (m + 1, m + 1):
        raise ValueError(f"elements must have shape (S, {m + 1}, {m + 1}), got {elements.shape}")
    return jnp.einsum("sij,nj->sni", elements[:, :m, :m], x) + elements[:, None, :m, m]


def exact_flow(
    matrix: Float[ArrayLike, "M M"], vector: Float[ArrayLike, " M"], tau, x: Float[ArrayLike, " M"]
) -> Float[Array, " M"]:
    """Φ^τ(x) for C(x) = ½ xᵀAx + bᵀx, exactly: the first M entries of exp(τĜ)(x, 1)."""
    x = jnp.asarray(x)
    gen = generators(jnp.asarray(matrix)[None], jnp.asarray(vector)[None])
    element = group_elements(gen, jnp.reshape(jnp.asarray(tau, x.dtype), (1, 1)))
    return transform(element, x[None])[0, 0]


# --------------------------------------------------------------------------------------------
# Matrix-normal variational MLP
# --------------------------------------------------------------------------------------------


def _cholesky(raw: Array) -> Array:
    """Lower-triangular factor with a positive diagonal exp(diag(raw))."""
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diag(raw)))


class MatrixNormalLinear(eqx.Module):
    """A linear layer y = W x + c with q(W) = MN(mean, L_S L_Sᵀ, L_A L_Aᵀ) and c deterministic.

    A sample is W = mean + L_S E L_Aᵀ with E ~ N(0, I): then Cov(W_ij, W_kl) = U_ik V_jl, i.e.
    the row-major vec(W) has covariance U ⊗ V (U: `(out, out)`, V: `(in, in)`).
    `row_raw`, `col_raw` hold the strictly lower parts and the log of the diagonals.
    """

    mean: Float[Array, "out in"]
    bias: Float[Array, " out"]
    row_raw: Float[Array, "out out"]
    col_raw: Float[Array, "in in"]

    def __init__(self, mean, bias, row_scale: float = 0.1, col_scale: float = 0.1):
        self.mean = jnp.asarray(mean)
        self.bias = jnp.asarray(bias)
        out, inp = self.mean.shape
        self.row_raw = jnp.diag(jnp.full(out, math.log(row_scale)))
        self.col_raw = jnp.diag(jnp.full(inp, math.log(col_scale)))

    def factors(self) -> tuple[Array, Array]:
        """(L_S, L_A): the Cholesky factors of the row and column covariances."""
        return _cholesky(self.row_raw), _cholesky(self.col_raw)

    def sample(self, key: PRNGKeyArray) -> Float[Array, "out in"]:
        ls, la = self.factors()
        return self.mean + ls @ jr.normal(key, self.mean.shape, self.mean.dtype) @ la.T

    def kl(self, prior_variance: float | None = None) -> Scalar:
        """KL(q(W) || N(0, v I)) in closed form; `prior_variance=None` uses the best v:
        v* = (tr U tr V + ‖M‖²)/d, which gives ½[d log(tr U tr V + ‖M‖²) − d log d − log|U ⊗ V|]."""
        ls, la = self.factors()
        out, inp = self.mean.shape
        d = out * inp
        logdet = inp * 2 * jnp.sum(jnp.log(jnp.diag(ls))) + out * 2 * jnp.sum(jnp.log(jnp.diag(la)))
        second_moment = jnp.sum(ls**2) * jnp.sum(la**2) + jnp.sum(self.mean**2)
        if prior_variance is None:
            return 0.5 * (d * jnp.log(second_moment) - d * math.log(d) - logdet)
        v = prior_variance
        return 0.5 * (second_moment / v - d + d * math.log(v) - logdet)


Weights = tuple[tuple[Array, Array], ...]


class VariationalMLP(eqx.Module):
    """F_θ: R^M → R, an ELU MLP whose weight matrices are matrix-normal (`MatrixNormalLinear`).

    `sample_weights(key)` draws one network, `mean_weights()` is the posterior mean, and
    `forward(weights, x)` evaluates a drawn network on states `(..., M)` → `(...)`.
    """

    layers: tuple[MatrixNormalLinear, ...]
    alpha: float = eqx.field(static=True)
    prior_variance: float | None = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        *,
        width: int = 64,
        depth: int = 2,
        alpha: float = 1.0,
        posterior_scale: float = 0.1,
        prior_variance: float | None = None,
        key: PRNGKeyArray,
    ):
        dim = _phase_dim(dim)
        width = _positive_int("width", width)
        depth = _positive_int("depth", depth)
        sizes = [dim] + [width] * depth + [1]
        keys = jr.split(key, 2 * len(sizes))
        layers = []
        for i, (inp, out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            std = 1.0 if i == 0 else 1.0 / math.sqrt(inp)
            mean = std * jr.normal(keys[2 * i], (out, inp))
            # a random first-layer offset spreads the ELU kinks over the data (as the paper's code)
            bias = (
                jr.uniform(keys[2 * i + 1], (out,), minval=-2.0, maxval=2.0)
                if i == 0
                else jnp.zeros(out)
            )
            scale = math.sqrt(posterior_scale)
            layers.append(MatrixNormalLinear(mean, bias, scale, scale))
        self.layers = tuple(layers)
        self.alpha = float(alpha)
        self.prior_variance = prior_variance

    def sample_weights(self, key: PRNGKeyArray) -> Weights:
        keys = jr.split(key, len(self.layers))
        pairs = zip(self.layers, keys, strict=True)
        return tuple((layer.sample(k), layer.bias) for layer, k in pairs)

    def mean_weights(self) -> Weights:
        return tuple((layer.mean, layer.bias) for layer in self.layers)

    def forward(self, weights: Weights, x: Float[Array, "... M"]) -> Float[Array, "..."]:
        h = x
        for i, (w, c) in enumerate(weights):
            h = h @ w.T + c
            if i < len(weights) - 1:
                h = jax.nn.elu(h, self.alpha)
        return h[..., 0]

    def kl(self) -> Scalar:
        """Σ over layers of the closed-form KL to the prior."""
        return sum(layer.kl(self.prior_variance) for layer in self.layers)


# --------------------------------------------------------------------------------------------
# The symmetrised variational HNN
# --------------------------------------------------------------------------------------------


class _Field(eqx.Module):
    """x ↦ J ∇Ĥ(x) for a batch of states `(N, M)`: the gradient of Σ_n Ĥ(x_n), row by row."""

    hamiltonian: Callable

    def __call__(self, x):
        grad = jax.grad(lambda y: jnp.sum(self.hamiltonian(y)))(x)
        half = x.shape[-1] // 2
        return jnp.concatenate([grad[..., half:], -grad[..., :half]], axis=-1)


class RazorHNN(eqx.Module):
    """A variational HNN whose Hamiltonian is averaged over the group of learned quadratics.

    - `network`: the variational MLP F_θ.
    - `quadratics`: the conserved quantities that generate the group (`None`: a vanilla HNN).
    - `num_samples`: S, the number of group elements per prediction; `measure`: "ball"/"cube".
    """

    network: VariationalMLP
    quadratics: Quadratics | None
    num_samples: int = eqx.field(static=True)
    measure: str = eqx.field(static=True)

    def __init__(
        self,
        network: VariationalMLP,
        quadratics: Quadratics | None = None,
        *,
        num_samples: int = 16,
        measure: Measure = "ball",
    ):
        if quadratics is not None and quadratics.dim != network.layers[0].mean.shape[1]:
            raise ValueError(
                f"quadratics act on R^{quadratics.dim} but the network takes "
                f"R^{network.layers[0].mean.shape[1]}"
            )
        if measure not in ("ball", "cube"):
            raise ValueError(f"measure must be 'ball' or 'cube', got {measure!r}")
        self.network = network
        self.quadratics = quadratics
        self.num_samples = _positive_int("num_samples", num_samples)
        self.measure = measure

    @property
    def dim(self) -> int:
        return self.network.layers[0].mean.shape[1]

    def elements(self, key: PRNGKeyArray) -> Float[Array, "S M+1 M+1"] | None:
        """S group elements drawn from the measure (`None` for a vanilla HNN)."""
        if self.quadratics is None:
            return None
        times = sample_times(key, self.num_samples, self.quadratics.count, self.measure)
        return group_elements(self.quadratics.generators(), times)

    def hamiltonian(
        self, weights: Weights, elements: Array | None, x: Float[Array, "N M"]
    ) -> Float[Array, " N"]:
        """Ĥ(x) = (1/S) Σ_s F_θ(g_s x) for each state of the batch."""
        if elements is None:
            return self.network.forward(weights, x)
        return jnp.mean(self.network.forward(weights, transform(elements, x)), axis=0)

    def predict(
        self,
        weights: Weights,
        elements: Array | None,
        x: Float[Array, "N M"],
        dt: float,
        substeps: int,
    ) -> Float[Array, "N M"]:
        """The state after time `dt`: `substeps` explicit Euler steps of J ∇Ĥ (Diffrax)."""
        field = _Field(lambda y: self.hamiltonian(weights, elements, y))
        ys = mechanics.solve_ode(
            field,
            x,
            jnp.array([0.0, dt], x.dtype),
            solver=diffrax.Euler(),
            dt0=dt / substeps,
            max_steps=substeps + 1,
        )
        return ys[-1]


def transitions(
    trajs: Float[ArrayLike, "B T M"],
) -> tuple[Float[Array, "N M"], Float[Array, "N M"]]:
    """Every consecutive pair (x_t, x_{t+Δt}) of every trajectory, flattened to N = B(T-1) rows."""
    trajs = jnp.asarray(trajs)
    if trajs.ndim != 3 or trajs.shape[1] < 2:
        raise ValueError(f"trajs must have shape (B, T >= 2, M), got {trajs.shape}")
    m = trajs.shape[2]
    return trajs[:, :-1].reshape(-1, m), trajs[:, 1:].reshape(-1, m)


def dataset(
    hamiltonian: Callable[[Array], Scalar],
    x0: Float[ArrayLike, "B M"],
    *,
    dt: float,
    steps: int,
    noise_variance: float = 0.0,
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "N M"], Float[Array, "N M"]]:
    """Transitions of the true dynamics from each initial state: trajectories of `steps` steps
    of length `dt` (adaptive Diffrax, `systems.integrate_many`), cut into N = B·steps pairs
    (x_t, x_{t+dt}). `noise_variance > 0` adds N(0, σ² I) noise to the targets (needs `key`)."""
    x0 = jnp.asarray(x0)
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (B, M), got {x0.shape}")
    steps = _positive_int("steps", steps)
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt!r}")
    if noise_variance < 0:
        raise ValueError(f"noise_variance must be >= 0, got {noise_variance!r}")
    x, y = transitions(systems.integrate_many(hamiltonian, x0, dt * jnp.arange(steps + 1.0)))
    if noise_variance > 0:
        if key is None:
            raise ValueError("noise_variance > 0 needs a key")
        y = y + math.sqrt(noise_variance) * jr.normal(key, y.shape, y.dtype)
    return x, y


def _gaussian_nll(prediction: Array, target: Array, variance: float) -> Array:
    """-log N(target | prediction, σ² I) per row."""
    d = target.shape[-1]
    sq = jnp.sum((prediction - target) ** 2, axis=-1)
    return 0.5 * d * math.log(2 * math.pi * variance) + 0.5 * sq / variance


def _check_batch(batch, dim: int):
    x, y = batch
    if x.ndim != 2 or x.shape != y.shape or x.shape[1] != dim:
        raise ValueError(
            f"batch must be (x, y), each of shape (N, {dim}); got {x.shape}, {y.shape}"
        )
    return x, y


def negative_elbo(
    model: RazorHNN,
    batch: tuple[Float[Array, "n M"], Float[Array, "n M"]],
    key: PRNGKeyArray,
    *,
    num_data: int,
    dt: float,
    substeps: int = 10,
    noise_variance: float = 1e-3,
    mc_samples: int = 2,
    kl_weight: float = 1.0,
) -> Scalar:
    """The per-data-point negative ELBO on a minibatch, estimated with `mc_samples` networks
    (each with its own S group elements):

        (1/mc) Σ_m (1/n) Σ_i -log N(y_i | ŷ_i^(m), σ² I) + kl_weight · KL(q || p) / num_data.

    `kl_weight=0` leaves the expected negative log-likelihood alone (maximum likelihood)."""
    x, y = _check_batch(batch, model.dim)
    predictions = _draw_predictions(model, x, key, dt, substeps, mc_samples)
    nll = jnp.mean(_gaussian_nll(predictions, y, noise_variance))
    return nll + kl_weight * model.network.kl() / num_data


def _draw_predictions(model: RazorHNN, x, key, dt, substeps, samples):
    """One-step predictions of `samples` networks drawn from q, each with its own S group
    elements: `(samples, N, M)`."""

    def one(k):
        kw, kg = jr.split(k)
        return model.predict(model.network.sample_weights(kw), model.elements(kg), x, dt, substeps)

    return jax.vmap(one)(jr.split(key, samples))


_sample_predictions = eqx.filter_jit(_draw_predictions)


class ElboTerms(NamedTuple):
    nll: float  # expected negative log-likelihood per data point
    kl: float  # KL(q || p) / N
    negative_elbo: float  # their sum, per data point


def elbo_terms(
    model: RazorHNN,
    data: tuple[Array, Array],
    key: PRNGKeyArray,
    *,
    dt: float,
    substeps: int = 10,
    noise_variance: float = 1e-3,
    samples: int = 16,
) -> ElboTerms:
    """Per-point NLL (averaged over `samples` draws from q), KL/N and −ELBO on all N rows."""
    row = evaluate(
        model,
        data,
        {},
        key,
        dt=dt,
        substeps=substeps,
        noise_variance=noise_variance,
        samples=samples,
    )
    return ElboTerms(row["NLL"], row["KL/N"], row["-ELBO"])


def one_step_mse(
    model: RazorHNN,
    data: tuple[Array, Array],
    key: PRNGKeyArray,
    *,
    dt: float,
    substeps: int = 10,
    samples: int = 16,
) -> float:
    """Mean squared one-step error of the posterior predictive mean: the average prediction of
    `samples` networks drawn from q (each with its own S group elements), averaged over rows and
    coordinates."""
    return evaluate(model, data, {}, key, dt=dt, substeps=substeps, samples=samples)["train MSE"]


def evaluate(
    model: RazorHNN,
    train_data: tuple[Array, Array],
    test_sets: dict[str, tuple[Array, Array]],
    key: PRNGKeyArray,
    *,
    dt: float,
    substeps: int = 10,
    noise_variance: float = 1e-3,
    samples: int = 16,
) -> dict:
    """The paper's table columns for one model, from one batch of `samples` posterior draws:
    the one-step MSE of the posterior predictive mean on the training data and on each test
    set, and the per-point NLL, KL/N and −ELBO on the training data."""
    sets = {"train": _check_batch(train_data, model.dim)}
    for name, data in test_sets.items():
        sets[name] = _check_batch(data, model.dim)
    samples = _positive_int("samples", samples)
    x_all = jnp.concatenate([x for x, _ in sets.values()])
    preds = _sample_predictions(model, x_all, key, dt, substeps, samples)
    row, start = {}, 0
    for name, (x, y) in sets.items():
        part = preds[:, start : start + x.shape[0]]
        start += x.shape[0]
        row[f"{name} MSE"] = float(jnp.mean((jnp.mean(part, axis=0) - y) ** 2))
        if name == "train":
            nll = float(jnp.mean(_gaussian_nll(part, y, noise_variance)))
    kl = float(model.network.kl()) / sets["train"][0].shape[0]
    row.update({"NLL": nll, "KL/N": kl, "-ELBO": nll + kl})
    return row


def _labels(model: RazorHNN):
    params = eqx.filter(model, eqx.is_inexact_array)
    labels = jax.tree_util.tree_map(lambda _: "network", params)
    if model.quadratics is not None:
        tag = "frozen" if model.quadratics.frozen else "quadratics"
        labels = eqx.tree_at(
            lambda m: m.quadratics,
            labels,
            jax.tree_util.tree_map(lambda _: tag, labels.quadratics),
        )
    return labels


def train(
    model: RazorHNN,
    data: tuple[Float[Array, "N M"], Float[Array, "N M"]],
    *,
    steps: int,
    key: PRNGKeyArray,
    dt: float,
    batch_size: int | None = None,
    substeps: int = 10,
    noise_variance: float = 1e-3,
    mc_samples: int = 2,
    kl_weight: float = 1.0,
    lr_network: float = 1e-3,
    lr_quadratics: float = 1e-2,
    progress: bool = True,
    desc: str = "Noether's razor",
) -> training.TrainResult:
    """Maximise the ELBO (minimise `negative_elbo`) over the posterior and the quadratics.

    Adam with cosine-decayed learning rates `lr_network` (posterior) and `lr_quadratics` (η),
    combined with `optax.multi_transform`; frozen (oracle) quadratics are not updated. The data
    are transitions `(x, y)` from `transitions`; `batch_size=None` uses them all every step."""
    x, _ = _check_batch(data, model.dim)
    steps = _positive_int("steps", steps)
    optimiser = optax.multi_transform(
        {
            "network": optax.adam(optax.cosine_decay_schedule(lr_network, steps)),
            "quadratics": optax.adam(optax.cosine_decay_schedule(lr_quadratics, steps)),
            "frozen": optax.set_to_zero(),
        },
        _labels(model),
    )

    def loss(m, batch, k):
        return negative_elbo(
            m,
            batch,
            k,
            num_data=x.shape[0],
            dt=dt,
            substeps=substeps,
            noise_variance=noise_variance,
            mc_samples=mc_samples,
            kl_weight=kl_weight,
        )

    return training.fit(
        loss,
        model,
        optimiser,
        steps=steps,
        key=key,
        data=data,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )


# --------------------------------------------------------------------------------------------
# Which symmetry was learned?
# --------------------------------------------------------------------------------------------


class GeneratorAnalysis(NamedTuple):
    """`relative_singular_values`: the singular values of the stacked learned generators
    divided by the largest, in decreasing order; `parallelness`: for each of the first L right
    singular vectors v_i, the norm of its projection onto the span of the L true generators."""

    relative_singular_values: np.ndarray
    parallelness: np.ndarray

    def active(self, threshold: float) -> int:
        """How many relative singular values exceed `threshold`."""
        return int(np.sum(self.relative_singular_values > threshold))

    def gap(self, count: int) -> float:
        """Ratio of the count-th to the (count+1)-th singular value (inf if there is none)."""
        s = self.relative_singular_values
        if not 1 <= count <= len(s):
            raise ValueError(f"count must be in [1, {len(s)}], got {count}")
        return float(s[count - 1] / s[count]) if count < len(s) else math.inf


def generator_analysis(
    learned: Float[ArrayLike, "K D D"], true: Float[ArrayLike, "L D D"]
) -> GeneratorAnalysis:
    """Compare learned generators with the true ones up to linear combination (van der Ouderaa
    et al., §5.1): SVD of the flattened learned generators, and the parallelness of the first L
    right singular vectors to span(true) (1 means the direction lies in the true span)."""
    learned = np.asarray(learned, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if learned.ndim != 3 or true.ndim != 3 or learned.shape[1:] != true.shape[1:]:
        raise ValueError(
            f"learned and true must have shapes (K, D, D) and (L, D, D) with the same D, got "
            f"{learned.shape} and {true.shape}"
        )
    if true.shape[0] > learned.shape[0]:
        raise ValueError(
            f"need at least as many learned generators as true ones, got {learned.shape[0]} "
            f"learned and {true.shape[0]} true"
        )
    flat = learned.reshape(learned.shape[0], -1)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    if s[0] == 0:
        raise ValueError("all learned generators are zero")
    basis, _ = np.linalg.qr(true.reshape(true.shape[0], -1).T)
    rank = np.linalg.matrix_rank(true.reshape(true.shape[0], -1))
    basis = basis[:, :rank]
    top = vt[: true.shape[0]]
    parallel = np.linalg.norm(top @ basis, axis=1)
    return GeneratorAnalysis(s / s[0], parallel)
