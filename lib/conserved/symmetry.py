"""Symmetry groups as matrices: Lie algebra bases, the exponential map, group actions,
measured invariance and equivariance, and orbit averaging.

Conventions.

- A *generator* is a matrix in a Lie algebra; a basis is an array of shape `(d, m, m)`.
- `exp_map(basis, coefficients)` returns exp(sum_i c_i G_i), batched over leading axes of the
  coefficients.
- Points are arrays whose last axis is the space dimension, `(..., n)`. A rigid motion of
  SE(n) is the homogeneous `(n+1, n+1)` matrix [[R, t], [0, 1]].
- A phase-space state of `n` degrees of freedom is `x = (q, p)` of shape `(..., 2n)`; U(n) acts
  on it through the real form [[Re U, -Im U], [Im U, Re U]] of a unitary U, i.e. on the complex
  coordinates z = q + i p by z -> U z.
- A `GroupAction` pairs a sampler of random group elements with how an element acts on data.
  `invariance_error`, `equivariance_error` and `symmetrise` take one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree, Scalar

from . import training
from ._checks import positive_int
from ._sharing import shared
from .ode import symplectic_matrix

# --------------------------------------------------------------------------------------------
# Lie algebra bases
# --------------------------------------------------------------------------------------------


__all__ = [
    "so_basis",
    "translation_basis",
    "se_basis",
    "symplectic_matrix",
    "u_basis",
    "expm",
    "combine",
    "exp_map",
    "bracket",
    "bracket_closure_error",
    "orthogonality_error",
    "symplectic_error",
    "apply_linear",
    "apply_affine",
    "apply_rigid_to_phase_space",
    "unitary_real_form",
    "random_rotation",
    "random_unitary",
    "random_rigid_motion",
    "planar_rotation",
    "GroupAction",
    "rotations",
    "rigid_motions",
    "unitary",
    "cyclic_rotations",
    "permutations_of_points",
    "equivariance_error",
    "invariance_error",
    "symmetrise",
    "OrbitAverage",
    "augment",
    "Symmetrised",
    "planar_invariants",
    "STRATEGIES",
    "fit_with_symmetry",
]


def _unit(n: int, i: int, j: int) -> Array:
    return jnp.zeros((n, n)).at[i, j].set(1.0)


def so_basis(n: int) -> Float[Array, "d n n"]:
    """Basis of so(n), the antisymmetric n×n matrices: E_ij - E_ji for i < j, d = n(n-1)/2.

    For n = 2 the one generator [[0, -1], [1, 0]] rotates counter-clockwise.
    """
    n = positive_int("n", n, 2)
    return jnp.stack([_unit(n, j, i) - _unit(n, i, j) for i in range(n) for j in range(i + 1, n)])


def translation_basis(n: int) -> Float[Array, "n h h"]:
    """Generators of the translations of R^n as homogeneous (n+1)×(n+1) matrices."""
    n = positive_int("n", n, 1)
    return jnp.stack([_unit(n + 1, i, n) for i in range(n)])


def se_basis(n: int) -> Float[Array, "d h h"]:
    """Basis of se(n) in homogeneous coordinates: the rotations of so(n) in the top-left block,
    then the n translations; d = n(n-1)/2 + n."""
    n = positive_int("n", n, 2)
    rotations = jnp.pad(so_basis(n), ((0, 0), (0, 1), (0, 1)))
    return jnp.concatenate([rotations, translation_basis(n)])


def u_basis(n: int) -> Float[Array, "d dim dim"]:
    """Basis of u(n) as real 2n×2n matrices acting on x = (q, p).

    An anti-Hermitian matrix X + iY (X antisymmetric, Y symmetric) acts on z = q + i p as the real
    matrix [[X, -Y], [Y, X]]. These are exactly the matrices that are antisymmetric *and* commute
    with J: the intersection so(2n) ∩ sp(2n). The first n(n-1)/2 elements come from X, the
    remaining n(n+1)/2 from Y (the last n of them are diagonal in Y).
    """
    n = positive_int("n", n, 1)
    zero = jnp.zeros((n, n))
    xs = [jnp.block([[x, zero], [zero, x]]) for x in (so_basis(n) if n > 1 else [])]
    sym = [_unit(n, i, j) + _unit(n, j, i) for i in range(n) for j in range(i + 1, n)]
    sym += [_unit(n, i, i) for i in range(n)]
    ys = [jnp.block([[zero, -y], [y, zero]]) for y in sym]
    return jnp.stack(xs + ys)


# --------------------------------------------------------------------------------------------
# The exponential map and Lie brackets
# --------------------------------------------------------------------------------------------


def _check_basis(basis: Array, name: str = "basis") -> Array:
    basis = jnp.asarray(basis)
    if basis.ndim != 3 or basis.shape[1] != basis.shape[2]:
        raise ValueError(f"{name} must have shape (d, m, m), got {basis.shape}")
    return basis


def expm(generator: Float[ArrayLike, "*batch m m"]) -> Float[Array, "*batch m m"]:
    """Matrix exponential, batched over leading axes (Padé scaling and squaring)."""
    generator = jnp.asarray(generator)
    if generator.ndim < 2 or generator.shape[-1] != generator.shape[-2]:
        raise ValueError(f"generator must have shape (..., m, m), got {generator.shape}")
    flat = generator.reshape(-1, *generator.shape[-2:])
    return _batched_expm(flat).reshape(generator.shape)


_batched_expm = jax.jit(jax.vmap(jax.scipy.linalg.expm))  # compiled once per shape and dtype


def combine(basis: Float[ArrayLike, "d m m"], coefficients: Float[ArrayLike, "*batch d"]):
    """The algebra element sum_i c_i G_i, batched over leading axes of `coefficients`."""
    basis = _check_basis(basis)
    coefficients = jnp.asarray(coefficients)
    if coefficients.shape[-1:] != basis.shape[:1]:
        raise ValueError(
            f"coefficients must have last axis {basis.shape[0]} (one per generator), "
            f"got shape {coefficients.shape}"
        )
    return jnp.einsum("...d,dij->...ij", coefficients, basis)


def exp_map(
    basis: Float[ArrayLike, "d m m"], coefficients: Float[ArrayLike, "*batch d"]
) -> Float[Array, "*batch m m"]:
    """Group element exp(sum_i c_i G_i) for each coefficient vector."""
    return expm(combine(basis, coefficients))


def bracket(a: Float[ArrayLike, "*batch m m"], b: Float[ArrayLike, "*batch m m"]):
    """Lie bracket (commutator) [A, B] = AB - BA."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape or a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(
            f"bracket needs two square matrices of one shape, got {a.shape}, {b.shape}"
        )
    return a @ b - b @ a


def bracket_closure_error(basis: Float[ArrayLike, "d m m"]) -> Scalar:
    """How far the span of `basis` is from being closed under the Lie bracket.

    For every pair (i, j), [G_i, G_j] is projected onto span(G) by least squares; the result is
    the largest relative residual ||[G_i, G_j] - proj|| / ||[G_i, G_j]|| (pairs whose bracket is
    zero count as closed). A Lie algebra gives round-off; a random set of matrices does not.
    """
    basis = _check_basis(basis)
    d = basis.shape[0]
    flat = basis.reshape(d, -1).T  # (m*m, d)
    a, b = basis[:, None], basis[None, :]
    brackets = (a @ b - b @ a).reshape(d * d, -1).T  # (m*m, d*d)
    coeffs, *_ = jnp.linalg.lstsq(flat, brackets)
    residual = jnp.linalg.norm(brackets - flat @ coeffs, axis=0)
    size = jnp.linalg.norm(brackets, axis=0)
    scale = jnp.max(jnp.linalg.norm(basis.reshape(d, -1), axis=1)) ** 2
    nonzero = size > 1e-6 * scale
    return jnp.max(jnp.where(nonzero, residual / jnp.where(nonzero, size, 1.0), 0.0))


def orthogonality_error(g: Float[ArrayLike, "*batch m m"]) -> Scalar:
    """max |gᵀg - I|: zero for orthogonal matrices (rotations, unitary real forms)."""
    g = jnp.asarray(g)
    eye = jnp.eye(g.shape[-1])
    return jnp.max(jnp.abs(jnp.swapaxes(g, -1, -2) @ g - eye))


def symplectic_error(g: Float[ArrayLike, "*batch dim dim"]) -> Scalar:
    """max |gᵀ J g - J|: zero for symplectic matrices."""
    g = jnp.asarray(g)
    if g.shape[-1] % 2 or g.shape[-1] != g.shape[-2]:
        raise ValueError(f"a symplectic matrix is square of even size, got shape {g.shape}")
    j = symplectic_matrix(g.shape[-1] // 2)
    return jnp.max(jnp.abs(jnp.swapaxes(g, -1, -2) @ j @ g - j))


# --------------------------------------------------------------------------------------------
# Group actions on points and on phase space
# --------------------------------------------------------------------------------------------


def apply_linear(g: Float[ArrayLike, "n n"], x: Float[ArrayLike, "... n"]) -> Float[Array, "... n"]:
    """Linear action x -> g x on the last axis of `x` (points, or phase-space states)."""
    g, x = jnp.asarray(g), jnp.asarray(x)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"g must be a square matrix, got shape {g.shape}")
    if x.shape[-1:] != g.shape[:1]:
        raise ValueError(
            f"a {g.shape[0]}×{g.shape[0]} matrix acts on vectors of length {g.shape[0]}, "
            f"but x has last axis {x.shape[-1:]}"
        )
    return x @ g.T


def apply_affine(g: Float[ArrayLike, "h h"], x: Float[ArrayLike, "... n"]) -> Float[Array, "... n"]:
    """Affine action x -> R x + t of a homogeneous matrix g = [[R, t], [0, 1]] on points."""
    g, x = jnp.asarray(g), jnp.asarray(x)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"g must be a square homogeneous matrix, got shape {g.shape}")
    n = g.shape[0] - 1
    if x.shape[-1:] != (n,):
        raise ValueError(
            f"a homogeneous {n + 1}×{n + 1} matrix acts on {n}-D points, "
            f"but x has last axis {x.shape[-1:]}"
        )
    return x @ g[:n, :n].T + g[:n, n]


def apply_rigid_to_phase_space(
    g: Float[ArrayLike, "h h"], state: Float[ArrayLike, "... dim"], dim: int
) -> Float[Array, "... dim"]:
    """A rigid motion of SE(dim) acting on the phase space of N bodies.

    `state = (q, p)` with q, p each the N positions / momenta flattened body by body. Positions
    move as q_i -> R q_i + t, momenta rotate as p_i -> R p_i.
    """
    g, state = jnp.asarray(g), jnp.asarray(state)
    dim = positive_int("dim", dim, 1)
    if g.shape != (dim + 1, dim + 1):
        raise ValueError(f"g must have shape {(dim + 1, dim + 1)} for dim={dim}, got {g.shape}")
    size = state.shape[-1]
    if size % (2 * dim):
        raise ValueError(f"state's last axis must be 2·N·{dim} (positions, momenta), got {size}")
    bodies = size // (2 * dim)
    q, p = jnp.split(state.reshape(*state.shape[:-1], 2, bodies, dim), 2, axis=-3)
    q = apply_affine(g, q)
    p = apply_linear(g[:dim, :dim], p)
    return jnp.concatenate([q, p], axis=-3).reshape(state.shape)


def unitary_real_form(u: ArrayLike) -> Float[Array, "*batch dim dim"]:
    """Real 2n×2n form [[Re U, -Im U], [Im U, Re U]] of a complex n×n matrix U."""
    u = jnp.asarray(u)
    re, im = jnp.real(u), jnp.imag(u)
    return jnp.concatenate([jnp.concatenate([re, -im], -1), jnp.concatenate([im, re], -1)], axis=-2)


# --------------------------------------------------------------------------------------------
# Sampling group elements
# --------------------------------------------------------------------------------------------


def random_rotation(key: PRNGKeyArray, n: int) -> Float[Array, "n n"]:
    """A Haar-uniform rotation of SO(n) (QR of a Gaussian matrix, signs fixed, det = +1)."""
    n = positive_int("n", n, 2)
    q, r = jnp.linalg.qr(jr.normal(key, (n, n)))
    q = q * jnp.sign(jnp.diag(r))
    flip = jnp.where(jnp.linalg.det(q) < 0, -1.0, 1.0)
    return q.at[:, 0].multiply(flip)


def random_unitary(key: PRNGKeyArray, n: int) -> Float[Array, "dim dim"]:
    """A Haar-uniform element of U(n), returned in its real 2n×2n form (acting on (q, p))."""
    n = positive_int("n", n, 1)
    re_key, im_key = jr.split(key)
    z = (jr.normal(re_key, (n, n)) + 1j * jr.normal(im_key, (n, n))) / math.sqrt(2.0)
    q, r = jnp.linalg.qr(z)
    d = jnp.diag(r)
    return unitary_real_form(q * (d / jnp.abs(d)))


def random_rigid_motion(key: PRNGKeyArray, n: int, scale: float = 1.0) -> Float[Array, "h h"]:
    """A rigid motion of SE(n): Haar rotation, translation ~ N(0, scale² I)."""
    rot_key, shift_key = jr.split(key)
    g = jnp.eye(n + 1)
    g = g.at[:n, :n].set(random_rotation(rot_key, n))
    return g.at[:n, n].set(scale * jr.normal(shift_key, (n,)))


def planar_rotation(angle: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch 2 2"]:
    """The rotation of the plane by `angle` (counter-clockwise), batched over angles."""
    angle = jnp.asarray(angle)
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


class GroupAction(eqx.Module):
    """A group acting on data: how to draw an element, and how an element acts.

    - `sample(key) -> g`: one random group element (an array).
    - `apply(g, x) -> g·x`.
    - `enumerate() -> elements`: for a finite group, all its elements stacked on a leading axis
      (`None` for an infinite group). A function rather than an array, so that an action holds
      no trainable arrays when it sits inside a model.
    """

    sample: Callable[[PRNGKeyArray], Array] = eqx.field(static=True)
    apply: Callable[[Array, PyTree], PyTree] = eqx.field(static=True)
    enumerate: Callable[[], Array] | None = eqx.field(static=True, default=None)

    @property
    def elements(self) -> Array | None:
        """All elements of a finite group, or `None`."""
        return None if self.enumerate is None else self.enumerate()

    def sample_many(self, key: PRNGKeyArray, num: int) -> Array:
        """`num` independent group elements, stacked on a leading axis."""
        num = positive_int("num", num)
        return jax.vmap(self.sample)(jr.split(key, num))


@shared
def rotations(n: int) -> GroupAction:
    """SO(n) acting on points `(..., n)` by rotation, Haar-sampled."""
    n = positive_int("n", n, 2)
    return GroupAction(lambda key: random_rotation(key, n), apply_linear)


@shared
def rigid_motions(n: int, scale: float = 1.0) -> GroupAction:
    """SE(n) acting on points `(..., n)`; translations drawn from N(0, scale² I)."""
    n = positive_int("n", n, 2)
    return GroupAction(lambda key: random_rigid_motion(key, n, scale), apply_affine)


@shared
def unitary(n: int) -> GroupAction:
    """U(n) acting on phase-space states `(..., 2n)` of n oscillators, Haar-sampled."""
    n = positive_int("n", n, 1)
    return GroupAction(lambda key: random_unitary(key, n), apply_linear)


@shared
def cyclic_rotations(order: int) -> GroupAction:
    """The finite group C_order of plane rotations by multiples of 2π/order, on 2-D points."""
    order = positive_int("order", order, 1)

    def enumerate_all():
        return planar_rotation(2 * jnp.pi * jnp.arange(order) / order)

    def sample(key):
        return planar_rotation(2 * jnp.pi * jr.randint(key, (), 0, order) / order)

    return GroupAction(sample, apply_linear, enumerate_all)


@shared
def permutations_of_points(num_points: int) -> GroupAction:
    """The symmetric group S_N permuting the rows of a point set `(..., N, n)` (finite, N <= 6)."""
    import itertools

    num_points = positive_int("num_points", num_points, 1)
    if num_points > 6:
        raise ValueError(
            f"num_points must be at most 6 to list all N! permutations, got {num_points}"
        )
    perms = tuple(itertools.permutations(range(num_points)))

    def apply(perm, x):
        x = jnp.asarray(x)
        if x.ndim < 2 or x.shape[-2] != num_points:
            raise ValueError(f"x must have shape (..., {num_points}, n), got {x.shape}")
        return jnp.take(x, perm, axis=-2)

    def enumerate_all():
        return jnp.array(perms)

    def sample(key):
        return jnp.array(perms)[jr.randint(key, (), 0, len(perms))]

    return GroupAction(sample, apply, enumerate_all)


# --------------------------------------------------------------------------------------------
# Measured invariance and equivariance, and orbit averaging
# --------------------------------------------------------------------------------------------


def _relative_gap(a: Array, b: Array) -> Array:
    """||a - b|| / (||a|| + ||b||) over all but the leading axis (0 when both are 0)."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    scale = jnp.linalg.norm(a, axis=1) + jnp.linalg.norm(b, axis=1)
    gap = jnp.linalg.norm(a - b, axis=1)
    return jnp.where(scale > 0, gap / jnp.where(scale > 0, scale, 1.0), 0.0)


def _check_samples(samples) -> Array:
    samples = jnp.asarray(samples)
    if samples.ndim < 1 or samples.shape[0] < 1:
        raise ValueError(f"samples must have a leading batch axis, got shape {samples.shape}")
    return samples


def equivariance_error(
    f: Callable[[Array], Array],
    action: GroupAction,
    samples: ArrayLike,
    key: PRNGKeyArray,
    *,
    output_apply: Callable[[Array, Array], Array] | None = None,
) -> Scalar:
    """Mean relative equivariance error of `f` over `samples` and random group elements:

    mean_i ||f(g_i x_i) - g_i f(x_i)|| / (||f(g_i x_i)|| + ||g_i f(x_i)||)

    with one fresh g_i per sample. `output_apply(g, y)` says how g acts on outputs (default: as
    on inputs). 0 means exactly equivariant; an unrelated function gives order 1.
    """
    samples = _check_samples(samples)
    out_apply = action.apply if output_apply is None else output_apply
    return _equivariance_gap(f, action, out_apply, samples, key)


@eqx.filter_jit  # module level: a second call with the same f, action and shapes reuses it
def _equivariance_gap(f, action, out_apply, samples, key):
    gs = action.sample_many(key, samples.shape[0])
    moved = jax.vmap(lambda g, x: f(action.apply(g, x)))(gs, samples)
    expected = jax.vmap(lambda g, x: out_apply(g, f(x)))(gs, samples)
    return jnp.mean(_relative_gap(moved, expected))


def invariance_error(
    f: Callable[[Array], Array], action: GroupAction, samples: ArrayLike, key: PRNGKeyArray
) -> Scalar:
    """Mean relative invariance error ||f(g x) - f(x)|| / (||f(g x)|| + ||f(x)||) over samples
    and random group elements: `equivariance_error` with the trivial action on outputs."""
    return equivariance_error(f, action, samples, key, output_apply=_outputs_unmoved)


def _outputs_unmoved(g: Array, y: Array) -> Array:
    """The trivial action on outputs. Module level, so repeated `invariance_error` calls with
    the same f and action reuse one compiled check (a fresh lambda would compile it again)."""
    return y


def symmetrise(
    f: Callable[[Array], Array],
    action: GroupAction,
    *,
    elements: Array | None = None,
    num_samples: int | None = None,
    key: PRNGKeyArray | None = None,
) -> OrbitAverage:
    """Orbit average (Reynolds operator) f_sym(x) = mean over g of f(g·x).

    - Finite group: with neither `elements` nor `num_samples`, average over all of
      `action.elements`; the result is exactly invariant.
    - Lie group: pass `num_samples` and `key` for a Monte Carlo average over that many sampled
      elements (approximately invariant, error ~ 1/sqrt(num_samples)), or pass `elements`.

    The elements are drawn once, so the returned `OrbitAverage` (a callable module) is
    deterministic.
    """
    if elements is None:
        if num_samples is not None:
            if key is None:
                raise ValueError("num_samples needs a key to draw the group elements")
            elements = action.sample_many(key, num_samples)
        elif action.elements is not None:
            elements = action.elements
        else:
            raise ValueError(
                "this group is not finite: pass num_samples and key (Monte Carlo), or elements"
            )
    return OrbitAverage(f, action, jnp.asarray(elements))


class OrbitAverage(eqx.Module):
    """x -> mean over the stacked `elements` g of f(g·x) (what `symmetrise` returns). A module
    rather than a closure: the elements are an array argument, so two averages of the same f
    over as many elements (fresh Monte Carlo draws, say) share one compiled program. The
    elements get no gradient, so inside a trained model they stay put."""

    f: Callable[[Array], Array]
    action: GroupAction
    elements: Array

    def __call__(self, x: Array) -> Array:
        elements = jax.lax.stop_gradient(self.elements)
        moved = jax.vmap(lambda g: self.f(self.action.apply(g, x)))(elements)
        return jnp.mean(moved, axis=0)


# --------------------------------------------------------------------------------------------
# Three ways to give a model a symmetry: augmentation, orbit averaging, invariant features
# --------------------------------------------------------------------------------------------


def augment(action: GroupAction, key: PRNGKeyArray, batch: ArrayLike) -> Array:
    """Data augmentation: move every example of `batch` (leading axis) by its own random element."""
    batch = _check_samples(batch)
    gs = action.sample_many(key, batch.shape[0])
    return jax.vmap(action.apply)(gs, batch)


class Symmetrised(eqx.Module):
    """A model made invariant by orbit averaging: x -> (1/S) sum_s model(g_s · x).

    The S group elements are drawn from `action` with the key passed at call time (fresh ones
    each training step); with a finite group and `num_samples=None`, all its elements are used
    and the model is exactly invariant.
    """

    model: Callable[[Array], Array]
    action: GroupAction
    num_samples: int | None = eqx.field(static=True, default=None)

    def __call__(self, x: Array, key: PRNGKeyArray | None = None) -> Array:
        if self.num_samples is None:
            return symmetrise(self.model, self.action)(x)
        if key is None:
            raise ValueError("a Monte Carlo symmetrised model needs a key to draw group elements")
        return symmetrise(self.model, self.action, num_samples=self.num_samples, key=key)(x)


def planar_invariants(points: Float[ArrayLike, "N 2"]) -> Float[Array, " F"]:
    """A complete set of SO(2)-invariant features of N points in the plane: the squared norms
    |x_i|², the dot products x_i·x_j and the cross products x_i × x_j for i < j.

    (Cross products are unchanged by rotations but change sign under reflections, so these
    features tell a point set from its mirror image.)
    """
    points = jnp.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    i, j = jnp.triu_indices(points.shape[0], 1)
    norms = jnp.sum(points**2, axis=-1)
    dots = jnp.sum(points[i] * points[j], axis=-1)
    crosses = points[i, 0] * points[j, 1] - points[i, 1] * points[j, 0]
    return jnp.concatenate([norms, dots, crosses])


STRATEGIES = ("none", "augment", "symmetrise")


def fit_with_symmetry(
    strategy: str,
    model: Callable[[Array], Array],
    x: Float[ArrayLike, "N ..."],
    y: Float[ArrayLike, " N"],
    action: GroupAction,
    *,
    steps: int,
    key: PRNGKeyArray,
    learning_rate: float = 3e-3,
    batch_size: int = 64,
    num_samples: int | None = 16,
    progress: bool = False,
):
    """Fit a scalar regression model y ≈ model(x) with one of three treatments of a symmetry.

    - `"none"`: plain least squares (pass a model built on invariant features to get the
      *constrained architecture*);
    - `"augment"`: every example in every minibatch moved by a fresh random group element;
    - `"symmetrise"`: train the orbit average `Symmetrised(model, action, num_samples)`, with
      fresh group elements each step (all elements for a finite group with `num_samples=None`).

    Adam with a cosine-decayed learning rate, minibatches of `batch_size`, `steps` steps.

    **Returns:** `(predict, result)`: `predict(x_batch, key) -> (N,)` predictions (the key draws
    the orbit-average samples; other strategies ignore it) and the `TrainResult`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    x, y = jnp.asarray(x), jnp.asarray(y)
    if y.ndim != 1 or x.shape[:1] != y.shape:
        raise ValueError(f"x must be (N, ...) and y (N,), got shapes {x.shape} and {y.shape}")
    if strategy == "symmetrise":
        model = Symmetrised(model, action, num_samples)
    result = training.fit_adam(
        _SymmetryLoss(strategy, action),
        model,
        steps=steps,
        key=key,
        data=(x, y),
        learning_rate=learning_rate,
        batch_size=batch_size,
        progress=progress,
        desc=f"fit ({strategy})",
    )

    def predict(xs, k=None):
        if strategy == "symmetrise" and num_samples is not None and k is None:
            raise ValueError("predictions of a Monte Carlo symmetrised model need a key")
        return _call_batch(strategy, result.model, jnp.asarray(xs), k)

    return predict, result


def _call_batch(strategy: str, model, xs: Array, key: PRNGKeyArray | None) -> Array:
    if strategy == "symmetrise":
        return jax.vmap(model, in_axes=(0, None))(xs, key)  # one orbit sample for the batch
    return jax.vmap(model)(xs)


class _SymmetryLoss(eqx.Module):
    """The loss of `fit_with_symmetry`: mean squared error of the batch, moved first by random
    group elements under `"augment"`. A Module, not a closure, so that every run with the same
    strategy and action (and a model of the same shape) reuses one compiled training step."""

    strategy: str = eqx.field(static=True)
    action: GroupAction

    def __call__(self, model, batch, key: PRNGKeyArray) -> Array:
        xs, ys = batch
        move_key, orbit_key = jr.split(key)
        if self.strategy == "augment":
            xs = augment(self.action, move_key, xs)
        return training.mse(_call_batch(self.strategy, model, xs, orbit_key), ys)
