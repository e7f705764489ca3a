"""Neural operators on one-dimensional grids: a Fourier neural operator and a small U-Net.

Both map a field sampled on n grid points to a field on the same grid. A field is either one
channel, shape `(n,)`, or several, shape `(channels, n)`; the output has the same layout
(`(n,)` in, `(n,)` out). Both are Equinox modules acting on *one* sample: `jax.vmap` them over a
batch.

**Fourier neural operator** (Li et al., 2021). With a pointwise lifting P, L Fourier layers and a
pointwise projection Q,

    v_0 = P u,    v_{l+1} = σ( W_l v_l + F⁻¹[ R_l · F v_l ] ),    output = Q v_L,

where F is the real FFT along the grid, R_l multiplies each of the lowest `modes` Fourier
coefficients by a learned complex `width × width` matrix and zeroes the rest, W_l is a pointwise
(1×1) linear map, σ the GELU (not applied after the last layer), P pointwise linear and Q a
pointwise two-layer network (width → 4 width → channels).

**Boundaries.** A spectral convolution treats the grid as periodic. For fields with insulated
(zero-flux, Neumann) ends on a cell-centred grid, such as the heat and Allen–Cahn data of
`conserved.pde`, pass `boundary="even"`: the field is first reflected, (u_1 … u_n, u_n … u_1),
which is periodic *and* smooth across both ends when u_x = 0 there, and the first n points of the
result are returned. Its Fourier series is then the cosine series natural to a Neumann problem,
and the mean of the reflected field is the mean of u. `boundary="periodic"` uses the grid as it
is. The U-Net pads its convolutions the same way (reflection or wrap-around).

`Residual(f)` makes a one-step model u ↦ u + f(u) that predicts the increment; `rollout(model,
u0, steps)` applies a one-step model autoregressively; `parameter_count` and `forward_flops`
measure a model's size and cost. All layers are plain `einsum`s (`Conv`), so that copies of a
model stacked and vmapped (`ecf.train_together`) run as batched matrix products.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import positive_int as _positive_int

__all__ = [
    "BOUNDARIES",
    "as_channels",
    "Conv",
    "SpectralConv1d",
    "FNO1d",
    "UNet1d",
    "Residual",
    "rollout",
    "parameter_count",
    "forward_flops",
]


BOUNDARIES = ("periodic", "even")


def _check_boundary(boundary: str) -> str:
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    return boundary


def as_channels(
    u: Float[ArrayLike, "... n"], channels: int, name: str = "u"
) -> tuple[Float[Array, "c n"], bool]:
    """Bring a field to shape `(channels, n)`; also return whether it came as a bare `(n,)`.

    Raises `ValueError` for anything but `(n,)` with `channels == 1` or `(channels, n)`.
    """
    u = jnp.asarray(u)
    if u.ndim == 1 and channels == 1:
        return u[None, :], True
    if u.ndim == 2 and u.shape[0] == channels:
        return u, False
    expected = "(n,) or (1, n)" if channels == 1 else f"({channels}, n)"
    raise ValueError(
        f"{name} must have shape {expected} for a model with {channels} input channel(s), "
        f"got shape {u.shape}; vmap the model over a batch axis"
    )


class Conv(eqx.Module):
    """A one-dimensional convolution, channels in → channels out, with no padding:
    `(cin, n + kernel - 1)` → `(cout, n)`; `kernel=1` is a pointwise linear map.

    Written as one `einsum` over the `kernel` shifted copies of the input, rather than
    `lax.conv`: the same numbers, but a model stacked along a leading axis and `vmap`ped (as
    `ecf.train_together` does) then runs as a batched matrix product, which on a CPU is several
    times faster than the grouped convolution `vmap` makes of `lax.conv`. Initialised like
    Equinox's layers: weights and bias uniform in ±1/sqrt(cin · kernel).
    """

    weight: Float[Array, "cout cin kernel"]
    bias: Float[Array, " cout"]

    def __init__(self, cin: int, cout: int, kernel: int = 1, *, key: PRNGKeyArray):
        for name, value in (("cin", cin), ("cout", cout), ("kernel", kernel)):
            _positive_int(name, value)
        bound = 1.0 / math.sqrt(cin * kernel)
        draws = jr.uniform(key, (cout * cin * kernel + cout,), minval=-bound, maxval=bound)
        self.weight = draws[: cout * cin * kernel].reshape(cout, cin, kernel)
        self.bias = draws[cout * cin * kernel :]

    def __call__(self, v: Float[Array, "cin m"]) -> Float[Array, "cout n"]:
        kernel = self.weight.shape[-1]
        if kernel == 1:
            return jnp.einsum("oi,in->on", self.weight[..., 0], v) + self.bias[:, None]
        n = v.shape[-1] - kernel + 1
        shifted = jnp.stack([v[:, j : j + n] for j in range(kernel)], axis=1)  # (cin, kernel, n)
        return jnp.einsum("oik,ikn->on", self.weight, shifted) + self.bias[:, None]


def _pointwise(key: PRNGKeyArray, cin: int, cout: int) -> Conv:
    return Conv(cin, cout, 1, key=key)


class SpectralConv1d(eqx.Module):
    """v ↦ F⁻¹[R · F v]: multiply the lowest `modes` Fourier coefficients of each input channel
    by a learned complex matrix (channels in → channels out), drop the higher ones.

    Input `(c_in, N)`, output `(c_out, N)`, with N >= 2 (modes - 1) + 1 so that the modes exist.
    The weights are stored as real and imaginary parts, shape `(c_out, c_in, modes)` each.
    """

    weight_real: Float[Array, "cout cin modes"]
    weight_imag: Float[Array, "cout cin modes"]
    modes: int = eqx.field(static=True)

    def __init__(self, cin: int, cout: int, modes: int, *, key: PRNGKeyArray):
        _positive_int("cin", cin)
        _positive_int("cout", cout)
        self.modes = _positive_int("modes", modes)
        scale = 1.0 / (cin * cout)
        kr, ki = jr.split(key)
        self.weight_real = scale * jr.uniform(kr, (cout, cin, modes))
        self.weight_imag = scale * jr.uniform(ki, (cout, cin, modes))

    def __call__(self, v: Float[Array, "cin N"]) -> Float[Array, "cout N"]:
        size = v.shape[-1]
        if size // 2 + 1 < self.modes:
            raise ValueError(
                f"a grid of {size} points has {size // 2 + 1} real Fourier modes, fewer than "
                f"modes={self.modes}"
            )
        coefficients = jnp.fft.rfft(v, axis=-1)[:, : self.modes]
        weight = self.weight_real + 1j * self.weight_imag
        mixed = jnp.einsum("oik,ik->ok", weight, coefficients)
        return jnp.fft.irfft(mixed, n=size, axis=-1)


class FNO1d(eqx.Module):
    """A one-dimensional Fourier neural operator (see the module docstring for the maths).

    **Arguments:**

    - `in_channels`, `out_channels`: channels of the input and output fields.
    - `width`: channels of the hidden representation.
    - `modes`: Fourier modes kept by each spectral convolution.
    - `layers`: number of Fourier layers.
    - `boundary`: `"periodic"` (use the grid as is) or `"even"` (reflect first: insulated ends).
    - `key`: PRNG key for the initial weights.

    Call on `(n,)` (one channel) or `(in_channels, n)`; returns `(n,)` or `(out_channels, n)`.
    """

    lifting: Conv
    spectral: tuple[SpectralConv1d, ...]
    pointwise: tuple[Conv, ...]
    projection: tuple[Conv, Conv]
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    boundary: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        width: int = 32,
        modes: int = 16,
        layers: int = 4,
        boundary: str = "periodic",
        key: PRNGKeyArray,
    ):
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("width", width),
            ("modes", modes),
            ("layers", layers),
        ):
            _positive_int(name, value)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.boundary = _check_boundary(boundary)
        keys = jr.split(key, 2 * layers + 3)
        self.lifting = _pointwise(keys[0], in_channels, width)
        self.spectral = tuple(
            SpectralConv1d(width, width, modes, key=k) for k in keys[1 : layers + 1]
        )
        self.pointwise = tuple(
            _pointwise(k, width, width) for k in keys[layers + 1 : 2 * layers + 1]
        )
        self.projection = (
            _pointwise(keys[-2], width, 4 * width),
            _pointwise(keys[-1], 4 * width, out_channels),
        )

    @property
    def modes(self) -> int:
        return self.spectral[0].modes

    def __call__(self, u: Float[ArrayLike, "*c n"]) -> Float[Array, "*cout n"]:
        v, bare = as_channels(u, self.in_channels)
        n = v.shape[-1]
        if n < 2:
            raise ValueError(f"u needs at least 2 grid points, got shape {jnp.shape(u)}")
        if self.boundary == "even":
            v = jnp.concatenate([v, v[:, ::-1]], axis=-1)
        v = self.lifting(v)
        last = len(self.spectral) - 1
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            v = spectral(v) + pointwise(v)
            if i < last:
                v = jax.nn.gelu(v)
        v = self.projection[1](jax.nn.gelu(self.projection[0](v)))[:, :n]
        return v[0] if bare and self.out_channels == 1 else v


def _pad(v: Float[Array, "c n"], amount: int, boundary: str) -> Float[Array, "c padded"]:
    # "symmetric" repeats the edge cell: the ghost cells of a zero-flux (insulated) boundary
    mode = "wrap" if boundary == "periodic" else "symmetric"
    return jnp.pad(v, ((0, 0), (amount, amount)), mode=mode)


class _ConvBlock(eqx.Module):
    """Two convolutions (kernel `kernel`, padded by the boundary rule), each followed by GELU."""

    first: Conv
    second: Conv
    boundary: str = eqx.field(static=True)

    def __init__(self, cin: int, cout: int, kernel: int, boundary: str, *, key: PRNGKeyArray):
        k1, k2 = jr.split(key)
        self.first = Conv(cin, cout, kernel, key=k1)
        self.second = Conv(cout, cout, kernel, key=k2)
        self.boundary = boundary

    def __call__(self, v: Float[Array, "cin n"]) -> Float[Array, "cout n"]:
        half = self.first.weight.shape[-1] // 2
        v = jax.nn.gelu(self.first(_pad(v, half, self.boundary)))
        return jax.nn.gelu(self.second(_pad(v, half, self.boundary)))


class UNet1d(eqx.Module):
    """A small one-dimensional U-Net: a second, non-spectral backbone.

    `levels` times: a convolution block, then halve the grid (average pooling); at the bottom one
    block; then `levels` times: double the grid (repeat each point), concatenate the skip
    connection of the same resolution, convolution block. Channels grow by the factor `growth` at
    each level down from `width` (2 in the classic U-Net; 1 keeps every level at `width`, which is
    smaller and quicker to set up). A final 1×1 convolution gives `out_channels`. Convolutions
    have odd `kernel` size and are padded by reflection (`boundary="even"`: the ghost cells of
    insulated ends) or wrap-around (`"periodic"`).

    Call on `(n,)` or `(in_channels, n)` with n divisible by 2**levels.
    """

    down: tuple[_ConvBlock, ...]
    bottom: _ConvBlock
    up: tuple[_ConvBlock, ...]
    output: Conv
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    levels: int = eqx.field(static=True)
    boundary: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        width: int = 16,
        levels: int = 2,
        kernel: int = 5,
        growth: int = 2,
        boundary: str = "periodic",
        key: PRNGKeyArray,
    ):
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("width", width),
            ("levels", levels),
            ("kernel", kernel),
            ("growth", growth),
        ):
            _positive_int(name, value)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (symmetric padding), got {kernel}")
        self.in_channels, self.out_channels, self.levels = in_channels, out_channels, levels
        self.boundary = _check_boundary(boundary)
        keys = jr.split(key, 2 * levels + 2)
        widths = [width * growth**i for i in range(levels + 1)]
        cins = [in_channels, *widths[:-2]]
        self.down = tuple(
            _ConvBlock(cin, w, kernel, boundary, key=k)
            for cin, w, k in zip(cins, widths[:-1], keys[:levels], strict=True)
        )
        self.bottom = _ConvBlock(widths[-2], widths[-1], kernel, boundary, key=keys[levels])
        self.up = tuple(
            _ConvBlock(
                widths[i + 1] + widths[i], widths[i], kernel, boundary, key=keys[levels + 1 + i]
            )
            for i in reversed(range(levels))
        )
        self.output = _pointwise(keys[-1], width, out_channels)

    def __call__(self, u: Float[ArrayLike, "*c n"]) -> Float[Array, "*cout n"]:
        v, bare = as_channels(u, self.in_channels)
        n = v.shape[-1]
        if n % 2**self.levels:
            raise ValueError(
                f"the grid size must be divisible by 2**levels = {2**self.levels}, got n = {n}"
            )
        skips = []
        for block in self.down:
            v = block(v)
            skips.append(v)
            v = v.reshape(v.shape[0], -1, 2).mean(axis=-1)
        v = self.bottom(v)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            v = jnp.repeat(v, 2, axis=-1)
            v = block(jnp.concatenate([v, skip], axis=0))
        v = self.output(v)
        return v[0] if bare and self.out_channels == 1 else v


class Residual(eqx.Module):
    """u ↦ u + f(u): a one-step model that predicts the increment (same layout in and out)."""

    increment: eqx.Module

    def __call__(self, u: Float[ArrayLike, "*c n"]) -> Float[Array, "*c n"]:
        u = jnp.asarray(u)
        step = self.increment(u)
        if step.shape != u.shape:
            raise ValueError(
                f"a residual model needs output shape == input shape, got {step.shape} for "
                f"input {u.shape}"
            )
        return u + step


def rollout(
    model: Callable[[Array], Array], u0: Float[ArrayLike, "*c n"], steps: int
) -> Float[Array, "snapshots *c n"]:
    """Apply a one-step model autoregressively: (u0, model(u0), model(model(u0)), ...).

    Returns `steps + 1` states along a new leading axis (u0 first). The model must map a state to
    a state of the same shape. For a batch, `jax.vmap(lambda u: rollout(model, u, steps))`.
    """
    steps = _positive_int("steps", steps)
    u0 = jnp.asarray(u0)
    out = jax.eval_shape(model, u0)
    if out.shape != u0.shape:
        raise ValueError(
            f"rollout needs a model whose output has the input's shape {u0.shape}, got {out.shape}"
        )

    def step(u, _):
        nxt = model(u)
        return nxt, nxt

    _, states = jax.lax.scan(step, u0, None, length=steps)
    return jnp.concatenate([u0[None], states.astype(u0.dtype)], axis=0)


def parameter_count(model: eqx.Module) -> int:
    """Number of trainable floating-point numbers in a model."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(math.prod(leaf.shape) for leaf in leaves))


def forward_flops(model: Callable[[Array], Array], batch: Float[ArrayLike, "batch *c n"]) -> float:
    """Floating-point operations of one jitted, vmapped forward pass over `batch`, as counted by
    XLA's cost analysis of the compiled program: a machine-independent measure of cost (wall
    times on a shared CPU are noisy)."""
    batch = jnp.asarray(batch)
    if batch.ndim < 2:
        raise ValueError(f"batch must have a leading batch axis, got shape {batch.shape}")
    params, static = eqx.partition(model, eqx.is_array)
    forward = jax.jit(lambda p, v: jax.vmap(eqx.combine(p, static))(v))
    analysis = forward.lower(params, batch).compile().cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis["flops"])
