import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given, settings

from conftest import bad_input
from conserved import operators as ops

seeds = st.integers(0, 2**31 - 1)


def _small_fno(boundary="periodic", key=0, **kw):
    kw = dict(width=8, modes=5, layers=2) | kw
    return ops.FNO1d(boundary=boundary, key=jr.key(key), **kw)


def _small_unet(boundary="periodic", key=0, **kw):
    kw = dict(width=4, levels=2, kernel=3) | kw
    return ops.UNet1d(boundary=boundary, key=jr.key(key), **kw)


@pytest.mark.parametrize("boundary", ["periodic", "even"])
@pytest.mark.parametrize("make", [_small_fno, _small_unet])
def test_shapes_single_and_multi_channel(make, boundary):
    u = jr.normal(jr.key(1), (32,))
    assert make(boundary)(u).shape == (32,)
    assert make(boundary)(u[None]).shape == (1, 32)
    multi = make(boundary, in_channels=2, out_channels=3)
    assert multi(jr.normal(jr.key(2), (2, 32))).shape == (3, 32)
    batch = jax.vmap(make(boundary))(jr.normal(jr.key(3), (5, 32)))
    assert batch.shape == (5, 32) and bool(jnp.all(jnp.isfinite(batch)))


@pytest.mark.parametrize("make", [_small_fno, _small_unet])
def test_bad_shapes_and_arguments_raise(make):
    model = make()
    with bad_input(match="shape"):
        model(jnp.ones((2, 32)))  # two channels into a one-channel model
    with bad_input(match="shape"):
        model(jnp.ones((3, 1, 32)))  # a batch must be vmapped
    with bad_input(match="boundary"):
        make("reflect")
    with bad_input(match="width"):
        make(width=0)


def test_fno_and_unet_specific_errors():
    with bad_input(match="modes"):
        _small_fno(modes=20)(jnp.ones(16))  # 16 points have 9 real Fourier modes
    with bad_input(match="divisible"):
        _small_unet()(jnp.ones(30))
    with bad_input(match="odd"):
        _small_unet(kernel=4)


def test_spectral_convolution_keeps_only_its_modes():
    conv = ops.SpectralConv1d(3, 2, 4, key=jr.key(0))
    out = conv(jr.normal(jr.key(1), (3, 64)))
    spectrum = jnp.abs(jnp.fft.rfft(out, axis=-1))
    assert float(jnp.max(spectrum[:, 4:])) < 1e-5 * float(jnp.max(spectrum))
    assert float(jnp.max(spectrum[:, :4])) > 0


@settings(max_examples=10, deadline=None)
@given(seed=seeds, shift=st.integers(1, 31))
def test_periodic_fno_commutes_with_circular_shifts(seed, shift):
    model = _small_fno(key=seed % 1000)
    u = jr.normal(jr.key(seed), (32,))
    np.testing.assert_allclose(
        model(jnp.roll(u, shift)), jnp.roll(model(u), shift), atol=2e-5, rtol=1e-4
    )


@settings(max_examples=10, deadline=None)
@given(seed=seeds, blocks=st.integers(1, 7))
def test_periodic_unet_commutes_with_shifts_by_its_pooling_stride(seed, blocks):
    model = _small_unet(key=seed % 1000)  # two levels of pooling: stride 4
    u = jr.normal(jr.key(seed), (32,))
    shift = 4 * blocks
    np.testing.assert_allclose(
        model(jnp.roll(u, shift)), jnp.roll(model(u), shift), atol=2e-5, rtol=1e-4
    )


@pytest.mark.parametrize("make", [_small_fno, _small_unet])
@pytest.mark.parametrize("boundary", ["periodic", "even"])
def test_constant_in_constant_out(make, boundary):
    # periodic, or periodic after the even reflection: a constant has no place to prefer
    out = make(boundary)(jnp.full(32, 0.7))
    assert float(jnp.max(out) - jnp.min(out)) < 1e-5


def test_even_boundary_is_the_periodic_operator_on_the_reflected_field():
    even = _small_fno("even", modes=6)
    periodic = ops.FNO1d(width=8, modes=6, layers=2, boundary="periodic", key=jr.key(0))
    u = jr.normal(jr.key(4), (16,))
    reflected = jnp.concatenate([u, u[::-1]])
    np.testing.assert_allclose(even(u), periodic(reflected)[:16], atol=1e-6)


def test_residual_and_rollout():
    model = ops.Residual(_small_fno())
    u = jr.normal(jr.key(0), (16,))
    np.testing.assert_allclose(model(u), u + model.increment(u), atol=1e-7)
    states = ops.rollout(model, u, 5)
    assert states.shape == (6, 16)
    np.testing.assert_array_equal(states[0], u)
    manual = u
    for k in range(1, 6):
        manual = model(manual)
        np.testing.assert_allclose(states[k], manual, atol=1e-5)
    with bad_input(match="steps"):
        ops.rollout(model, u, 0)
    with bad_input(match="shape"):
        ops.rollout(lambda v: v[:-1], u, 3)
    with bad_input(match="shape"):
        ops.Residual(_small_fno(out_channels=2))(u)


def test_parameter_count():
    model = ops.FNO1d(width=4, modes=3, layers=1, key=jr.key(0))
    # lifting 1→4 (8), spectral 2·4·4·3 (96), pointwise 4→4 (20), projection 4→16→1 (80 + 17)
    assert ops.parameter_count(model) == 8 + 96 + 20 + 80 + 17


def test_unet_growth_sets_the_channels_per_level():
    flat = _small_unet(width=4, levels=2, growth=1)
    classic = _small_unet(width=4, levels=2, growth=2)
    assert flat.bottom.second.weight.shape[0] == 4 and classic.bottom.second.weight.shape[0] == 16
    assert ops.parameter_count(flat) < ops.parameter_count(classic)
    assert flat(jnp.ones(16)).shape == (16,)
    with bad_input(match="growth"):
        _small_unet(growth=0)


def test_forward_flops_grow_with_the_model_and_the_batch():
    small = _small_fno(width=4)
    large = _small_fno(width=16)
    batch = jnp.ones((8, 32))
    assert 0 < ops.forward_flops(small, batch) < ops.forward_flops(large, batch)
    assert ops.forward_flops(small, batch) < ops.forward_flops(small, jnp.ones((32, 32)))
    with bad_input(match="batch axis"):
        ops.forward_flops(small, jnp.ones(32))


def test_conv_matches_lax_convolution():
    conv = ops.Conv(3, 5, 4, key=jr.key(0))
    v = jr.normal(jr.key(1), (3, 20))
    reference = jax.lax.conv_general_dilated(v[None], conv.weight, (1,), "VALID")[0]
    np.testing.assert_allclose(conv(v), reference + conv.bias[:, None], atol=1e-5)
    assert conv(v).shape == (5, 17)
    bound = 1 / np.sqrt(12)
    assert (
        float(jnp.max(jnp.abs(conv.weight))) <= bound and float(jnp.std(conv.weight)) > 0.1 * bound
    )
