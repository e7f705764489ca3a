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
  field J ∇Ĥ, and the one-step prediction by Euler sub-steps (Diffrax's `Euler`).
  `point_estimate=True` makes it the deterministic maximum-likelihood counterpart: the weights
  are the posterior means, never sampled, and the objective is the likelihood alone.
- `negative_elbo`: the per-data-point negative ELBO with a fixed observation variance σ²,
  -(1/N)·ELBO = E_q[(1/n) Σ_i -log N(y_i | ŷ_i, σ² I)] + KL(q || p)/N.
- `train`: the quadratics and the posterior trained jointly on that bound (or on the likelihood
  alone, `kl_weight=0`) with Adam at separate learning rates (`optax.multi_transform`).
- `generator_analysis`: singular values of the stacked learned generators and the
  "parallelness" of the leading right singular vectors to the span of the true generators.
"""

from __future__ import annotations

import functools
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
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray, Scalar

from . import mechanics, training
from ._checks import non_negative
from ._checks import positive as _positive
from ._checks import positive_int as _positive_int
from ._sharing import shared
from .ode import apply_symplectic, fixed_steps, symplectic_matrix
from .symmetry import expm

__all__ = [
    "ElboTerms",
    "Measure",
    "Weights",
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


# --------------------------------------------------------------------------------------------
# Quadratic conserved quantities and their exact flows
# --------------------------------------------------------------------------------------------


def generators(
    matrices: Float[ArrayLike, "K M M"], vectors: Float[ArrayLike, "K M"]
) -> Float[Array, "K h h"]:
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
    - `frozen`: a boolean array; true holds them fixed in training (an "oracle" with known
      conserved quantities). An array rather than a static flag, so that an oracle and a learned
      model of the same shape share one compiled training step.
    """

    weight: Float[Array, "K M M"]
    bias: Float[Array, "K M"]
    frozen: Bool[Array, ""]

    def __init__(self, weight: ArrayLike, bias: ArrayLike, frozen: bool | ArrayLike = False):
        self.weight = jnp.asarray(weight)
        self.bias = jnp.asarray(bias)
        self.frozen = jnp.asarray(frozen, dtype=bool)

    def __check_init__(self):
        w, b = self.weight, self.bias
        if w.ndim != 3 or w.shape[1] != w.shape[2] or w.shape[1] % 2 or w.shape[0] < 1:
            raise ValueError(f"weight must have shape (K, M, M) with M even, got {w.shape}")
        if b.shape != w.shape[:2]:
            raise ValueError(f"bias must have shape {w.shape[:2]}, got {b.shape}")
        if self.frozen.shape != ():
            raise ValueError(f"frozen must be a single bool, got shape {self.frozen.shape}")

    @classmethod
    def random(
        cls, key: PRNGKeyArray, count: int, dim: int, *, scale: float = 0.01, linear: bool = True
    ) -> Quadratics:
        """`count` quadratics on R^dim with entries ~ N(0, scale²) (`linear=False`: b = 0)."""
        weight, bias = _random_quadratics(key, _positive_int("count", count), _phase_dim(dim))
        return cls(scale * weight, scale * bias if linear else jnp.zeros_like(bias))

    @classmethod
    def from_functions(
        cls,
        functions: Sequence[Callable[[Array], Scalar]],
        dim: int,
        *,
        frozen: bool = True,
        count: int | None = None,
    ) -> Quadratics:
        """The quadratics of known conserved quantities (each must be a quadratic of x).

        `count`: pad with zero quadratics, which generate nothing (their flow is the identity),
        up to this many, to give an oracle the shape of a learned model with K = `count`."""
        if not functions:
            raise ValueError("functions must name at least one quadratic")
        a, b = _coefficients_of_many(functions, _phase_dim(dim))
        if count is not None:
            count = _positive_int("count", count)
            if count < len(functions):
                raise ValueError(
                    f"count must be at least {len(functions)} (one per function), got {count}"
                )
            a = jnp.concatenate([a, jnp.zeros((count - len(functions), *a.shape[1:]), a.dtype)])
            b = jnp.concatenate([b, jnp.zeros((count - len(functions), b.shape[1]), b.dtype)])
        return cls(a, b, frozen)

    @property
    def count(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def coefficients(self) -> tuple[Float[Array, "K M M"], Float[Array, "K M"]]:
        """(A, b): the symmetric matrices and the linear coefficients (held fixed if frozen)."""
        # Frozen: no gradient reaches them, and Adam moves a parameter with zero gradients by
        # exactly zero.
        w, b = (
            jnp.where(self.frozen, jax.lax.stop_gradient(v), v) for v in (self.weight, self.bias)
        )
        return 0.5 * (w + jnp.swapaxes(w, 1, 2)), b

    def generators(self) -> Float[Array, "K h h"]:
        """Ĝ_k, one (M+1)×(M+1) matrix per quantity."""
        return generators(*self.coefficients())

    def __call__(self, x: Float[Array, " M"]) -> Float[Array, " K"]:
        """The values C_k(x)."""
        a, b = self.coefficients()
        return 0.5 * jnp.einsum("i,kij,j->k", x, a, x) + b @ x


@functools.partial(jax.jit, static_argnums=(1, 2))
def _random_quadratics(key: PRNGKeyArray, count: int, dim: int) -> tuple[Array, Array]:
    kw, kb = jr.split(key)
    return jr.normal(kw, (count, dim, dim)), jr.normal(kb, (count, dim))


def quadratic_coefficients(
    function: Callable[[Array], Scalar], dim: int
) -> tuple[Float[Array, "M M"], Float[Array, " M"]]:
    """(A, b) with function(x) = ½ xᵀ A x + bᵀ x + const, read off by autodiff at x = 0.

    Raises `ValueError` if the function is not quadratic (its Hessian changes with x)."""
    a, b = _coefficients_of_many([function], _phase_dim(dim))
    return a[0], b[0]


def _coefficients_of_many(
    functions: Sequence[Callable[[Array], Scalar]], dim: int
) -> tuple[Float[Array, "K M M"], Float[Array, "K M"]]:
    """`quadratic_coefficients` of several functions from one compiled call."""
    stacked = _StackedFunctions(tuple(functions))
    zero = jnp.zeros(dim)
    probe = jnp.linspace(-1.0, 1.0, dim) + 0.3
    a, b, a_probe = _hessians_and_gradients(stacked, zero, probe)
    if not bool(jnp.allclose(a_probe, a, atol=1e-5)):
        raise ValueError("function must be a quadratic of the state (its Hessian varies with x)")
    return 0.5 * (a + jnp.swapaxes(a, 1, 2)), b


class _StackedFunctions(eqx.Module):
    functions: tuple[Callable[[Array], Scalar], ...]  # arrays inside them are traced, not hashed

    def __call__(self, x):
        return jnp.stack([jnp.asarray(f(x)) for f in self.functions])


@eqx.filter_jit
def _hessians_and_gradients(stacked, zero, probe):
    hessian = jax.jacfwd(jax.jacrev(stacked))
    return hessian(zero), jax.jacrev(stacked)(zero), hessian(probe)


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
    gens: Float[ArrayLike, "K h h"], times: Float[ArrayLike, "S K"]
) -> Float[Array, "S h h"]:
    """exp(Σ_k τ_sk Ĝ_k) for each row τ_s of `times`: the affine maps of the group."""
    gens = jnp.asarray(gens)
    times = jnp.asarray(times)
    if gens.ndim != 3 or gens.shape[1] != gens.shape[2]:
        raise ValueError(f"gens must have shape (K, M+1, M+1), got {gens.shape}")
    if times.ndim != 2 or times.shape[1] != gens.shape[0]:
        raise ValueError(f"times must have shape (S, {gens.shape[0]}), got {times.shape}")
    return expm(jnp.einsum("sk,kij->sij", times, gens))


def transform(elements: Float[Array, "S h h"], x: Float[Array, "N M"]) -> Float[Array, "S N M"]:
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


@functools.partial(jax.jit, static_argnums=1)
def _initial_layers(key: PRNGKeyArray, sizes: tuple[int, ...]) -> Weights:
    """Posterior means and biases of a fresh `VariationalMLP` (one compiled call, not a dozen
    small ones): means N(0, 1/fan-in) (N(0, 1) for the first layer); the first layer's biases
    U(-2, 2), which spread the ELU kinks over the data as in the paper's code; other biases 0."""
    keys = jr.split(key, 2 * len(sizes))
    layers = []
    for i, (inp, out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        std = 1.0 if i == 0 else 1.0 / math.sqrt(inp)
        mean = std * jr.normal(keys[2 * i], (out, inp))
        if i == 0:
            bias = jr.uniform(keys[2 * i + 1], (out,), minval=-2.0, maxval=2.0)
        else:
            bias = jnp.zeros(out)
        layers.append((mean, bias))
    return tuple(layers)


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
        sizes = (dim,) + (width,) * depth + (1,)
        scale = math.sqrt(posterior_scale)
        self.layers = tuple(
            MatrixNormalLinear(mean, bias, scale, scale)
            for mean, bias in _initial_layers(key, sizes)
        )
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
        return apply_symplectic(jax.grad(lambda y: jnp.sum(self.hamiltonian(y)))(x))


class RazorHNN(eqx.Module):
    """A variational HNN whose Hamiltonian is averaged over the group of learned quadratics.

    - `network`: the variational MLP F_θ.
    - `quadratics`: the conserved quantities that generate the group (`None`: a vanilla HNN).
    - `num_samples`: S, the number of group elements per prediction; `measure`: "ball"/"cube".
    - `point_estimate`: true makes a deterministic network: `weights` returns the posterior means
      (the covariance factors get no gradient and stay put), and `negative_elbo` drops the KL
      term, so training is plain maximum likelihood (a point mass has no finite KL to the
      prior, so such a model has no bound). An array rather than a static flag, so that the
      point-estimate and the variational model of one shape share one compiled training step.
    """

    network: VariationalMLP
    quadratics: Quadratics | None
    point_estimate: Bool[Array, ""]
    num_samples: int = eqx.field(static=True)
    measure: str = eqx.field(static=True)

    def __init__(
        self,
        network: VariationalMLP,
        quadratics: Quadratics | None = None,
        *,
        num_samples: int = 16,
        measure: Measure = "ball",
        point_estimate: bool | ArrayLike = False,
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
        self.point_estimate = jnp.asarray(point_estimate, dtype=bool)
        if self.point_estimate.shape != ():
            raise ValueError(
                f"point_estimate must be a single bool, got shape {self.point_estimate.shape}"
            )

    @property
    def dim(self) -> int:
        return self.network.layers[0].mean.shape[1]

    def weights(self, key: PRNGKeyArray) -> Weights:
        """One network drawn from q, or the posterior means for a point estimate."""
        drawn = self.network.sample_weights(key)
        means = self.network.mean_weights()
        return jax.tree_util.tree_map(
            lambda m, w: jnp.where(self.point_estimate, m, w), means, drawn
        )

    def elements(self, key: PRNGKeyArray) -> Float[Array, "S h h"] | None:
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
        """The state after time `dt`: `substeps` explicit Euler steps of J ∇Ĥ (Diffrax's `Euler`
        with constant steps, via `ode.fixed_steps`)."""
        field = _Field(lambda y: self.hamiltonian(weights, elements, y))
        return fixed_steps(field, x, dt, substeps)


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
    substeps: int | None = 10,
) -> tuple[Float[Array, "N M"], Float[Array, "N M"]]:
    """Transitions of the true dynamics from each initial state: trajectories of `steps` steps
    of length `dt`, cut into N = B·steps pairs (x_t, x_{t+dt}). `noise_variance > 0` adds
    N(0, σ² I) noise to the targets (needs `key`).

    Each step of `dt` is `substeps` fixed Tsit5 steps (`ode.fixed_steps`, local error of
    order (dt/substeps)⁵, far below the noise); `substeps=None` integrates adaptively instead
    (`mechanics.integrate_many`, rtol 1e-8), which compiles several times more slowly."""
    x0 = jnp.asarray(x0)
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (B, M), got {x0.shape}")
    steps = _positive_int("steps", steps)
    dt = _positive("dt", dt)
    noise_variance = non_negative("noise_variance", noise_variance)
    if noise_variance > 0 and key is None:
        raise ValueError("noise_variance > 0 needs a key")
    key = jr.key(0) if key is None else key  # unused without noise
    if substeps is None:
        trajs = mechanics.integrate_many(hamiltonian, x0, dt * jnp.arange(steps + 1.0))
        return _noisy_transitions(trajs, key, float(noise_variance))
    field = mechanics.hamiltonian_vector_field(hamiltonian)
    substeps = _positive_int("substeps", substeps)
    return _fixed_step_dataset(field, x0, float(dt), steps, substeps, key, float(noise_variance))


def _noisy_transitions(trajs, key, noise_variance):
    x, y = transitions(trajs)
    if noise_variance > 0:
        y = y + math.sqrt(noise_variance) * jr.normal(key, y.shape, y.dtype)
    return x, y


@eqx.filter_jit
def _fixed_step_dataset(field, x0, dt, steps, substeps, key, noise_variance):
    """`dataset` with fixed Tsit5 steps, in one compiled call: each step of `dt` is `substeps`
    steps of `ode.fixed_steps`."""
    advance = jax.vmap(lambda x: fixed_steps(field, x, dt, substeps, solver=diffrax.Tsit5()))

    def one(x, _):
        x = advance(x)
        return x, x

    _, later = jax.lax.scan(one, x0, None, length=steps)
    trajs = jnp.concatenate([x0[:, None], jnp.swapaxes(later, 0, 1)], axis=1)
    return _noisy_transitions(trajs, key, noise_variance)


def _check_noise_variance(noise_variance) -> None:
    _positive("noise_variance", noise_variance)


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
    kl_weight: float | Scalar = 1.0,
) -> Scalar:
    """The per-data-point negative ELBO on a minibatch, estimated with `mc_samples` networks
    (each with its own S group elements):

        (1/mc) Σ_m (1/n) Σ_i -log N(y_i | ŷ_i^(m), σ² I) + kl_weight · KL(q || p) / num_data.

    `kl_weight=0` leaves the expected negative log-likelihood alone. For a point-estimate model
    (`RazorHNN(..., point_estimate=True)`) every draw is the mean network and the KL term is
    dropped: the objective is the plain negative log-likelihood (maximum likelihood)."""
    x, y = _check_batch(batch, model.dim)
    _check_noise_variance(noise_variance)
    predictions = _draw_predictions(model, x, key, dt, substeps, mc_samples)
    nll = jnp.mean(_gaussian_nll(predictions, y, noise_variance))
    kl = jnp.where(model.point_estimate, 0.0, kl_weight * model.network.kl() / num_data)
    return nll + kl


def _draw_predictions(model: RazorHNN, x, key, dt, substeps, samples):
    """One-step predictions of `samples` networks drawn from q, each with its own S group
    elements: `(samples, N, M)`."""

    def one(k):
        kw, kg = jr.split(k)
        return model.predict(model.weights(kw), model.elements(kg), x, dt, substeps)

    return jax.vmap(one)(jr.split(key, samples))


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
    set, and the per-point NLL, KL/N and −ELBO on the training data. For a point-estimate
    model the MSE and NLL are those of its one network, and KL/N and −ELBO are NaN (a point
    mass has no bound)."""
    _check_noise_variance(noise_variance)
    if "train" in test_sets:
        raise ValueError("test_sets must not be named 'train' (that is the training data's column)")
    sets = {"train": _check_batch(train_data, model.dim)}
    for name, data in test_sets.items():
        sets[name] = _check_batch(data, model.dim)
    samples = _positive_int("samples", samples)
    columns = _evaluate(model, sets, key, dt, substeps, noise_variance, samples)
    # (a dict comes back from jit with sorted keys: restore the table's column order)
    row = {f"{name} MSE": float(columns[f"{name} MSE"]) for name in sets}
    kl = math.nan if bool(model.point_estimate) else float(columns["KL/N"])
    row.update(NLL=float(columns["NLL"]), **{"KL/N": kl})
    row["-ELBO"] = row["NLL"] + row["KL/N"]
    return row


@eqx.filter_jit
def _evaluate(model, sets, key, dt, substeps, noise_variance, samples):
    """`evaluate`'s numbers as arrays, from one compiled call."""
    x_all = jnp.concatenate([x for x, _ in sets.values()])
    preds = _draw_predictions(model, x_all, key, dt, substeps, samples)
    columns, start = {}, 0
    for name, (x, y) in sets.items():
        part = preds[:, start : start + x.shape[0]]
        start += x.shape[0]
        columns[f"{name} MSE"] = jnp.mean((jnp.mean(part, axis=0) - y) ** 2)
        if name == "train":
            columns["NLL"] = jnp.mean(_gaussian_nll(part, y, noise_variance))
    columns["KL/N"] = model.network.kl() / sets["train"][0].shape[0]
    return columns


def _labels(params) -> object:
    """The optimiser group of every trainable array: "network" or "quadratics"."""
    params = eqx.filter(params, eqx.is_inexact_array)
    labels = jax.tree_util.tree_map(lambda _: "network", params)
    if params.quadratics is not None:
        labels = eqx.tree_at(
            lambda m: m.quadratics,
            labels,
            jax.tree_util.tree_map(lambda _: "quadratics", labels.quadratics),
        )
    return labels


@shared
def _optimiser(lr_network: float, lr_quadratics: float, steps: int) -> optax.GradientTransformation:
    """Adam with cosine-decayed rates per group. Cached, so that equal settings give the same
    object and `training.fit` reuses the compiled training step of an earlier run."""
    return optax.multi_transform(
        {
            "network": optax.adam(optax.cosine_decay_schedule(lr_network, steps)),
            "quadratics": optax.adam(optax.cosine_decay_schedule(lr_quadratics, steps)),
        },
        _labels,
    )


class _Objective(eqx.Module):
    """`negative_elbo` with its settings bound: a module, so equal settings compare equal (and the
    compiled step is reused); `kl_weight` is an array, so the ELBO and the likelihood-only runs
    share one compiled step."""

    kl_weight: Array
    num_data: int = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    substeps: int = eqx.field(static=True)
    noise_variance: float = eqx.field(static=True)
    mc_samples: int = eqx.field(static=True)

    def __call__(self, model, batch, key):
        return negative_elbo(
            model,
            batch,
            key,
            num_data=self.num_data,
            dt=self.dt,
            substeps=self.substeps,
            noise_variance=self.noise_variance,
            mc_samples=self.mc_samples,
            kl_weight=self.kl_weight,
        )


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
    kl_weight: float | Scalar = 1.0,
    lr_network: float = 1e-3,
    lr_quadratics: float = 1e-2,
    progress: bool = True,
    desc: str = "Noether's razor",
) -> training.TrainResult:
    """Maximise the ELBO (minimise `negative_elbo`) over the posterior and the quadratics.

    Adam with cosine-decayed learning rates `lr_network` (posterior) and `lr_quadratics` (η),
    combined with `optax.multi_transform`; frozen (oracle) quadratics are not updated. The data
    are transitions `(x, y)` from `transitions`; `batch_size=None` uses them all every step.
    A second call with the same settings and a model of the same shape reuses the compiled step."""
    x, _ = _check_batch(data, model.dim)
    steps = _positive_int("steps", steps)
    _check_noise_variance(noise_variance)
    kl_weight = non_negative("kl_weight", kl_weight)
    objective = _Objective(
        kl_weight=jnp.asarray(kl_weight, dtype=x.dtype),
        num_data=x.shape[0],
        dt=float(dt),
        substeps=_positive_int("substeps", substeps),
        noise_variance=float(noise_variance),
        mc_samples=_positive_int("mc_samples", mc_samples),
    )
    return training.fit(
        objective,
        model,
        _optimiser(float(lr_network), float(lr_quadratics), steps),
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
