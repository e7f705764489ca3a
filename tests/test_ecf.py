import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from hypothesis import given, settings

from conftest import bad_input, float64
from conserved import ecf, operators, pde
from conserved.projection import fix_mean, linear_integral

seeds = st.integers(0, 2**31 - 1)
EPS32 = float(np.finfo(np.float32).eps)
DX = 1.0 / 32


def _backbone(kind: str, seed: int, boundary: str = "even"):
    key = jr.key(seed)
    if kind == "fno":
        return operators.FNO1d(width=8, modes=6, layers=2, boundary=boundary, key=key)
    if kind == "unet":
        return operators.UNet1d(width=4, levels=2, kernel=3, boundary=boundary, key=key)
    return operators.Residual(operators.FNO1d(width=8, modes=6, layers=2, key=key))


def _round_off(u):
    """float32 round-off of a grid total: a few ulps of the largest partial sum."""
    return 64 * EPS32 * DX * float(jnp.sum(jnp.abs(u))) + 1e-12


@settings(max_examples=20, deadline=None)
@given(seed=seeds, n=st.sampled_from([2, 3, 8, 17, 32]))
def test_zero_mode_is_the_mean_and_the_swap_is_the_mean_shift(seed, n):
    with float64():
        k1, k2 = jr.split(jr.key(seed))
        prediction = jr.normal(k1, (3, n)) * 2 + 1
        source = jr.normal(k2, (3, n)) - 0.5
        np.testing.assert_allclose(ecf.zero_mode(source), source.mean(-1), atol=1e-13)
        swapped = ecf.swap_zero_mode(prediction, source)
        shifted = ecf.decode(prediction, ecf.encode(source, DX), DX)
        np.testing.assert_allclose(swapped, shifted, atol=1e-12)
        np.testing.assert_allclose(shifted, fix_mean(prediction, linear_integral(source, DX), DX))
        # the non-zero modes of the prediction are untouched
        np.testing.assert_allclose(
            jnp.fft.rfft(swapped)[:, 1:], jnp.fft.rfft(prediction)[:, 1:], atol=1e-11
        )


@settings(max_examples=12, deadline=None)
@given(
    seed=seeds,
    kind=st.sampled_from(["fno", "unet", "residual"]),
    boundary=st.sampled_from(["periodic", "even"]),
    scale=st.floats(0.1, 5.0),
    offset=st.floats(-3.0, 3.0),
)
def test_conserving_operator_keeps_the_input_total_for_untrained_backbones(
    seed, kind, boundary, scale, offset
):
    model = ecf.ConservingOperator(_backbone(kind, seed % 1000, boundary), DX)
    u = scale * jr.normal(jr.key(seed), (32,)) + offset
    out = model(u)
    assert out.shape == u.shape
    error = abs(float(linear_integral(out, DX) - linear_integral(u, DX)))
    assert error <= _round_off(u) + _round_off(out), error
    # the bare backbone does not
    bare = model.backbone(u)
    assert abs(float(linear_integral(bare, DX) - linear_integral(u, DX))) > 1e2 * error


def test_conservation_to_float64_round_off():
    with float64():
        model = ecf.ConservingOperator(_backbone("fno", 0), DX)
        model = jax.tree_util.tree_map(
            lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model
        )
        u = jr.normal(jr.key(1), (32,), dtype=jnp.float64) + 0.3
        assert abs(float(linear_integral(model(u), DX) - linear_integral(u, DX))) < 1e-14


def test_rollout_keeps_the_total_over_100_steps():
    model = ecf.ConservingOperator(operators.Residual(_backbone("fno", 3)), DX)
    bare = model.backbone
    u0 = jr.normal(jr.key(2), (32,)) + 0.4
    states = operators.rollout(model, u0, 100)
    totals = linear_integral(states, DX)
    drift = float(jnp.max(jnp.abs(totals - totals[0])))
    assert drift < 100 * EPS32 * max(1.0, float(jnp.max(jnp.abs(states)))), drift
    bare_totals = linear_integral(operators.rollout(bare, u0, 100), DX)
    assert float(jnp.max(jnp.abs(bare_totals - bare_totals[0]))) > 1e3 * max(drift, EPS32)


def _relative_total_drift(states, dx):
    totals = dx * np.asarray(states, dtype=np.float64).sum(-1)  # measured in float64
    return float(np.max(np.abs(totals - totals[0])) / abs(totals[0]))


def test_float32_rollout_keeps_the_total_when_dx_is_not_representable():
    # dx = 0.37 has no exact float32 form and n dx is not a power of two times it: a decoder that
    # goes through the total (dx Σ u, then / (n dx)) rounds the same way at every step and
    # drifts; the shift computed from the two means does not.
    dx, n = 0.37, 100
    via_total, via_means = [], []
    for seed in range(4):
        fno = operators.FNO1d(width=8, modes=6, layers=2, boundary="even", key=jr.key(seed))

        def backbone(u, fno=fno):  # a bounded, near-identity step, like a trained operator's
            return u + 0.05 * jnp.tanh(fno(u))

        u0 = 0.3 * jr.normal(jr.key(10 + seed), (n,)) + 0.4 + 0.3 * seed
        model = ecf.ConservingOperator(backbone, dx)
        via_means.append(_relative_total_drift(operators.rollout(model, u0, 100), dx))

        def through_total(u, backbone=backbone):
            return ecf.decode(backbone(u), ecf.encode(u, dx), dx)

        via_total.append(_relative_total_drift(operators.rollout(through_total, u0, 100), dx))
    assert max(via_means) <= 2e-6, via_means
    assert max(via_total) > 2 * max(via_means), (via_total, via_means)


def test_correct_is_decode_of_encode():
    k1, k2 = jr.split(jr.key(3))
    prediction, state = jr.normal(k1, (4, 50)) + 1.0, jr.normal(k2, (4, 50)) - 0.3
    np.testing.assert_allclose(
        ecf.correct(prediction, state),
        ecf.decode(prediction, ecf.encode(state, 0.37), 0.37),
        atol=10 * EPS32,
    )
    with bad_input(match="same shape"):
        ecf.correct(jnp.ones(8), jnp.ones(9))


def test_multichannel_conserves_the_chosen_channels_only():
    backbone = operators.FNO1d(2, 2, width=8, modes=6, layers=2, key=jr.key(0))
    model = ecf.attach(backbone, DX, channels=[0])
    u = jr.normal(jr.key(1), (2, 32)) + jnp.array([[0.5], [-0.2]])
    out = model(u)
    assert abs(float(linear_integral(out[0], DX) - linear_integral(u[0], DX))) < 1e-6
    np.testing.assert_array_equal(out[1], backbone(u)[1])
    both = ecf.ConservingOperator(backbone, DX)(u)
    np.testing.assert_allclose(linear_integral(both, DX), linear_integral(u, DX), atol=1e-6)
    with bad_input(match="out of range"):
        ecf.ConservingOperator(backbone, DX, channels=(2,))(u)


def test_decoder_is_idempotent_and_fixes_conserving_operators():
    inner = ecf.ConservingOperator(_backbone("unet", 1), DX)
    outer = ecf.attach(inner, DX)
    u = jr.normal(jr.key(5), (32,))
    np.testing.assert_allclose(outer(u), inner(u), atol=1e-6)


def test_bad_arguments_raise():
    with bad_input(match="dx"):
        ecf.ConservingOperator(_backbone("fno", 0), 0.0)
    with bad_input(match="channels"):
        ecf.ConservingOperator(_backbone("fno", 0), DX, channels=[0])
    with bad_input(match="input's shape"):
        ecf.ConservingOperator(lambda u: u[:-1], DX)(jnp.ones(8))
    with bad_input(match="channel 0"):
        ecf.ConservingOperator(lambda u: u, DX, channels=(1,))(jnp.ones(8))
    with bad_input(match="same shape"):
        ecf.swap_zero_mode(jnp.ones(8), jnp.ones(9))
    with bad_input(match="share one shape"):
        ecf.mse_identity(jnp.ones((2, 8)), jnp.ones((2, 8)), jnp.ones((3, 8)))
    with bad_input(match="trajectories"):
        ecf.one_step_pairs(jnp.ones((4, 8)))
    with bad_input(match="trajectories"):
        ecf.evaluate(lambda u: u, jnp.ones((2, 1, 8)), DX)
    with bad_input(match="same shape"):
        ecf.train(_backbone("fno", 0), jnp.ones((4, 32)), jnp.ones((4, 16)), steps=1, key=jr.key(0))
    with bad_input(match="mass_penalty"):
        ecf.train(
            _backbone("fno", 0),
            jnp.ones((4, 32)),
            jnp.ones((4, 32)),
            steps=1,
            key=jr.key(0),
            mass_penalty=-1.0,
        )


@settings(max_examples=20, deadline=None)
@given(seed=seeds, bias=st.floats(-1.0, 1.0))
def test_mse_identity_holds_and_the_correction_never_hurts_conserving_data(seed, bias):
    k1, k2, k3 = jr.split(jr.key(seed), 3)
    inputs = jr.normal(k1, (6, 24))
    targets = fix_mean(jr.normal(k2, (6, 24)), linear_integral(inputs, DX), DX)
    predictions = targets + 0.3 * jr.normal(k3, (6, 24)) + bias
    terms = ecf.mse_identity(inputs, predictions, targets, DX)
    assert np.max(terms["residual"]) < 1e-12 * np.max(terms["bare"])
    # float32 data conserve to round-off, so the defect term is negligible ...
    assert np.max(terms["data_defect"]) < 1e-12
    # ... and the corrected error is never larger, smaller by exactly the squared mean error
    assert np.all(terms["corrected"] <= terms["bare"] + terms["data_defect"] + 1e-15)
    np.testing.assert_allclose(
        terms["bare"] - terms["corrected"], terms["mean_error"] - terms["data_defect"], atol=1e-12
    )


def test_training_modes_and_evaluation():
    x, dx = pde.cell_centres(32, 1.0)
    u0s, _ = pde.random_cosine_fields(jr.key(0), 10, 32)
    trajectories = pde.solve_batch(pde.heat_neumann_rhs(0.02, dx), u0s, jnp.linspace(0, 0.5, 6))
    inputs, targets = ecf.one_step_pairs(trajectories[:8])
    assert inputs.shape == targets.shape == (40, 32)
    np.testing.assert_array_equal(inputs[5], trajectories[1, 0])
    np.testing.assert_array_equal(targets[5], trajectories[1, 1])
    backbone = operators.Residual(_backbone("fno", 0))
    kw = dict(steps=60, key=jr.key(1), batch_size=16, learning_rate=3e-3, progress=False)
    bare = ecf.train(backbone, inputs, targets, **kw)
    integrated = ecf.train(ecf.ConservingOperator(backbone, dx), inputs, targets, **kw)
    soft = ecf.train(backbone, inputs, targets, mass_penalty=10.0, **kw)
    assert bare.losses.shape == (60,)
    for result in (bare, integrated, soft):
        assert result.losses[-10:].mean() < result.losses[:10].mean()
    staged = ecf.attach(bare.model, dx)
    test = trajectories[8:]
    results = {
        name: ecf.evaluate(model, test, dx)
        for name, model in [
            ("bare", bare.model),
            ("staged", staged),
            ("integrated", integrated.model),
        ]
    }
    for r in results.values():
        assert r["states"].shape == test.shape and r["rollout"].shape == (6,)
        assert r["one_step"].shape == (2,) and r["conservation"][0] == 0.0
    for name in ("staged", "integrated"):
        assert results[name]["conservation"].max() < 1e-5
    # the theorem, per sample: staging never makes one step worse
    assert np.all(results["staged"]["one_step"] <= results["bare"]["one_step"] * (1 + 1e-5))


def test_training_together_equals_training_alone():
    x, dx = pde.cell_centres(16, 1.0)
    u0s, _ = pde.random_cosine_fields(jr.key(7), 8, 16)
    inputs, targets = ecf.one_step_pairs(
        pde.solve_batch(pde.heat_neumann_rhs(0.02, dx), u0s, jnp.linspace(0, 0.3, 4))
    )
    plain = operators.Residual(operators.FNO1d(width=4, modes=4, layers=1, key=jr.key(0)))
    other = operators.Residual(operators.FNO1d(width=4, modes=4, layers=1, key=jr.key(1)))
    kw = dict(steps=10, key=jr.key(2), batch_size=8, learning_rate=1e-2, progress=False)
    members, losses = ecf.train_together(
        [plain, other, plain],
        jnp.stack([inputs, inputs[::-1], inputs]),
        jnp.stack([targets, targets[::-1], targets]),
        mass_penalty=[0.0, 5.0, 0.0],
        conserve=[False, False, True],
        dx=dx,
        **kw,
    )
    alone = [
        ecf.train(plain, inputs, targets, **kw).model,
        ecf.train(other, inputs[::-1], targets[::-1], mass_penalty=5.0, **kw).model,
        ecf.train(ecf.ConservingOperator(plain, dx), inputs, targets, **kw).model,
    ]
    assert losses.shape == (10, 3)  # each member's own loss history, as if trained alone
    np.testing.assert_allclose(
        losses[:, 1],
        ecf.train(other, inputs[::-1], targets[::-1], mass_penalty=5.0, **kw).losses,
        rtol=1e-3,
    )
    assert isinstance(members[2], ecf.ConservingOperator) and members[2].dx == dx
    assert not isinstance(members[0], ecf.ConservingOperator)
    for together, single in zip(members, alone, strict=True):
        np.testing.assert_allclose(
            jax.vmap(together)(inputs), jax.vmap(single)(inputs), rtol=1e-3, atol=1e-5
        )
    # parameter by parameter for the bare members; a conserving member's constant output bias
    # has no effect on its output (the decoder removes it) and Adam moves it on round-off noise
    for together, single in zip(members[:2], alone[:2], strict=True):
        for a, b in zip(
            jax.tree_util.tree_leaves(eqx.filter(together, eqx.is_array)),
            jax.tree_util.tree_leaves(eqx.filter(single, eqx.is_array)),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    wrapped = ecf.ConservingOperator(plain, dx)
    two = (jnp.stack([inputs] * 2), jnp.stack([targets] * 2))
    with bad_input(match="structure"):
        ecf.train_together([plain, wrapped], *two, **kw)
    with bad_input(match="one slice"):
        ecf.train_together([plain], *two, **kw)
    with bad_input(match="mass_penalty"):
        ecf.train_together([plain], inputs[None], targets[None], mass_penalty=-1.0, **kw)
    with bad_input(match="conserve"):
        ecf.train_together([plain], inputs[None], targets[None], conserve=[0.5], **kw)
