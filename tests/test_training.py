import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from conftest import bad_input
from conserved import config, training


def _linear_data(key, n=64):
    x = jr.normal(key, (n, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.3
    return x, y


def _loss(model, batch, key):
    x, y = batch
    return training.mse(jax.vmap(model)(x).squeeze(-1), y)


def test_fit_learns_a_linear_map(key):
    data = _linear_data(key)
    model = eqx.nn.Linear(3, 1, key=jr.key(1))
    result = training.fit(
        _loss,
        model,
        optax.adam(5e-2),
        steps=600,
        key=key,
        data=data,
        chunk_size=128,
        progress=False,
    )
    assert result.losses.shape == (600,)
    assert result.losses[-1] < 1e-4 * result.losses[0]
    np.testing.assert_allclose(result.model.weight.ravel(), [1.0, -2.0, 0.5], atol=1e-2)


def test_fit_is_deterministic_and_minibatches(key):
    data = _linear_data(key)
    model = eqx.nn.MLP(3, 1, 8, 1, key=jr.key(2))
    run = lambda: training.fit(  # noqa: E731
        _loss,
        model,
        optax.sgd(1e-2),
        steps=30,
        key=key,
        data=data,
        batch_size=16,
        chunk_size=7,
        progress=False,
    )
    a, b = run(), run()
    np.testing.assert_array_equal(a.losses, b.losses)
    other = training.fit(
        _loss,
        model,
        optax.sgd(1e-2),
        steps=30,
        key=jr.key(9),
        data=data,
        batch_size=16,
        progress=False,
    )
    assert not np.array_equal(a.losses, other.losses)  # the key draws the minibatches


def test_fit_supports_lbfgs(key):
    data = _linear_data(key)
    model = eqx.nn.Linear(3, 1, key=jr.key(1))
    result = training.fit(_loss, model, optax.lbfgs(), steps=30, key=key, data=data, progress=False)
    assert result.losses[-1] < 1e-8


def test_fit_without_data():
    target = jnp.array([1.0, 2.0])
    result = training.fit(
        lambda p, batch, key: jnp.sum((p - target) ** 2),
        jnp.zeros(2),
        optax.sgd(0.1),
        steps=100,
        key=jr.key(0),
        progress=False,
    )
    np.testing.assert_allclose(result.model, target, atol=1e-6)


def test_nan_stops_training_with_last_good_model():
    # Gradient descent on x**2 with learning rate 2.5 multiplies x by -4 every step: it overflows.
    def loss(p, batch, key):
        return jnp.sum(p**2)

    with pytest.raises(training.TrainingDiverged, match="non-finite at step") as info:
        training.fit(
            loss,
            jnp.ones(1),
            optax.sgd(2.5),
            steps=200,
            key=jr.key(0),
            chunk_size=50,
            progress=False,
        )
    err = info.value
    assert np.isfinite(np.asarray(err.model)).all()
    assert np.isnan(err.losses[-1]) and np.isfinite(err.losses[:-1]).all()
    assert len(err.losses) == err.step + 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"chunk_size": -1}, "chunk_size"),
        ({"batch_size": 100}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"data": (jnp.ones((4, 3)), jnp.ones(5))}, "leading size"),
        ({"data": jnp.ones(())}, "leading batch axis"),
    ],
)
def test_fit_rejects_bad_arguments(key, kwargs, match):
    args = dict(steps=5, key=key, data=_linear_data(key), progress=False)
    args.update(kwargs)
    with bad_input(match=match):
        training.fit(_loss, eqx.nn.Linear(3, 1, key=key), optax.sgd(0.1), **args)


def test_fit_rejects_non_scalar_loss_and_bad_optimiser(key):
    model = eqx.nn.Linear(3, 1, key=key)
    with bad_input(match="scalar"):
        training.fit(
            lambda m, b, k: jnp.ones(2), model, optax.sgd(0.1), steps=2, key=key, progress=False
        )
    with bad_input(match="optimiser"):
        training.fit(_loss, model, "adam", steps=2, key=key, progress=False)
    with bad_input(match="batch_size"):
        training.fit(_loss, model, optax.sgd(0.1), steps=2, key=key, batch_size=4, progress=False)


def test_mse_checks_shapes():
    assert float(training.mse(jnp.ones(3), jnp.zeros(3))) == 1.0
    with bad_input(match="same shape"):
        training.mse(jnp.ones(3), jnp.ones((3, 1)))


def test_padding_steps_of_the_last_chunk_change_nothing(key):
    # Full-batch gradient descent is deterministic, so the chunking must not matter.
    data = _linear_data(key)
    model = eqx.nn.Linear(3, 1, key=jr.key(1))
    runs = [
        training.fit(
            _loss,
            model,
            optax.sgd(0.05),
            steps=10,
            key=key,
            data=data,
            chunk_size=c,
            progress=False,
        )
        for c in (4, 10, 3)
    ]
    for run in runs:
        assert run.losses.shape == (10,)
        np.testing.assert_allclose(run.losses, runs[0].losses, rtol=1e-6)
        np.testing.assert_allclose(run.model.weight, runs[0].model.weight, rtol=1e-6)


def test_weakly_typed_parameters_compile_the_chunk_once(key, caplog):
    # jnp.full(3, 0.5) is weakly typed; the updated parameters are not. fit must hand the scan
    # the same input types on every chunk, or each training run compiles it twice.
    class Affine(eqx.Module):
        weight: jax.Array
        bias: jax.Array

        def __call__(self, x):
            return x @ self.weight + self.bias

    model = Affine(jnp.full(3, 0.5), jnp.asarray(0.0))
    assert model.weight.weak_type
    start = time.perf_counter()
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        result = training.fit(
            lambda m, b, k: training.mse(m(b[0]), b[1]),
            model,
            optax.adam(1e-2),
            steps=9,
            key=key,
            data=_linear_data(key),
            chunk_size=3,
            progress=False,
        )
    compiles = [
        r for r in caplog.records if "Compiling" in r.getMessage() and "run_chunk" in r.getMessage()
    ]
    assert len(compiles) == 1
    assert result.losses[-1] < result.losses[0]
    # chunk timings: three chunks of three steps, the first one paying for compilation
    assert result.chunk_times.shape == (3, 2)
    np.testing.assert_array_equal(result.chunk_times[:, 0], [3, 3, 3])
    wall = time.perf_counter() - start
    assert np.all(result.chunk_times[:, 1] > 0)
    # the chunks are timed inside the call, so their total cannot exceed the call's wall time;
    # seconds_per_step averages the chunks after the first (which paid for compiling the scan).
    # How long a step takes is measured by make bench, never asserted here.
    assert result.chunk_times[:, 1].sum() <= wall
    np.testing.assert_allclose(
        result.seconds_per_step, result.chunk_times[1:, 1].sum() / 6, rtol=1e-12
    )


def test_a_second_run_with_the_same_loss_and_optimiser_reuses_the_compiled_step(key, caplog):
    optimiser = optax.adam(1e-2)
    data = _linear_data(key)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        for seed in (1, 2):
            model = eqx.nn.Linear(3, 1, key=jr.key(seed))
            training.fit(
                _loss, model, optimiser, steps=8, key=key, data=data, chunk_size=4, progress=False
            )
    compiles = [r for r in caplog.records if "Compiling jit(_run_chunk)" in r.getMessage()]
    assert len(compiles) == 1


def test_a_long_run_is_compiled_with_full_optimisation_and_gives_the_same_model(key, monkeypatch):
    # fit compiles runs whose work (steps x XLA's operations per step) reaches
    # config.LONG_RUN_FLOPS with XLA's own optimisation (compiler options that override the
    # fast compilation of quick mode); the threshold is moved here so that the test stays
    # small. The two programs compute the same steps.
    data = _linear_data(key)
    model = eqx.nn.Linear(3, 1, key=jr.key(1))
    optimiser = optax.adam(1e-2)
    runs, sizes = {}, {}
    for name, threshold in (("short", float("inf")), ("long", 1.0)):
        monkeypatch.setattr(config, "LONG_RUN_FLOPS", threshold)
        before = len(training._optimised_programs)
        runs[name] = training.fit(
            _loss, model, optimiser, steps=6, key=key, data=data, chunk_size=3, progress=False
        )
        sizes[name] = len(training._optimised_programs) - before
    assert sizes == {"short": 0, "long": 1}
    # an equal second long run finds its program (one per JAX lowering) and compiles nothing
    before = len(training._optimised_programs)
    again = training.fit(
        _loss, model, optimiser, steps=6, key=key, data=data, chunk_size=3, progress=False
    )
    assert len(training._optimised_programs) == before
    np.testing.assert_array_equal(again.losses, runs["long"].losses)
    np.testing.assert_allclose(runs["long"].losses, runs["short"].losses, rtol=1e-5)
    np.testing.assert_allclose(runs["long"].model.weight, runs["short"].model.weight, rtol=1e-5)


def test_the_work_estimate_is_per_step_and_grows_with_the_batch(key):
    """What the long-run choice multiplies by the steps: one step's operations, whatever the
    chunk's length, and about proportional to the rows a step sees (a linear model's loss and
    gradient cost a fixed number of operations per row)."""
    model = eqx.nn.Linear(3, 1, key=jr.key(1))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimiser = optax.adam(1e-2)
    opt_state = optimiser.init(params)

    def flops(rows, chunk):
        data = _linear_data(key, n=rows)
        inputs = (jr.split(key, chunk), jnp.ones(chunk, dtype=bool))
        lowered = training._run_chunk.lower(
            _loss, optimiser, static, rows, None, params, opt_state, data, inputs
        )
        return training._flops_per_step(lowered)

    small = flops(256, 3)
    assert small > 256  # at least an operation per row
    assert flops(256, 12) == pytest.approx(small, rel=0.01)
    assert 1.6 < flops(1024, 3) / small < 4.4


def test_fit_adam_first_step_is_adams(key):
    # Adam's first step moves every parameter by the learning rate (±lr: the bias-corrected
    # m / sqrt(v) is ±1), computed here by hand; and training lowers the loss
    data = _linear_data(key)
    model = eqx.nn.Linear(3, 1, key=jr.key(1))
    steps = 20
    before = training.fit_adam(
        _loss, model, steps=1, key=key, data=data, learning_rate=0.1, batch_size=64, progress=False
    ).model
    np.testing.assert_allclose(np.abs(before.weight - model.weight), 0.1, rtol=1e-3)
    run = training.fit_adam(
        _loss, model, steps=steps, key=key, data=data, learning_rate=0.1, progress=False
    )
    assert run.losses.shape == (steps,)
    assert run.losses[-1] < 0.5 * run.losses[0]


def test_max_steps_caps_a_run_and_reports_its_memory(key, monkeypatch, capsys):
    """CONSERVED_MAX_STEPS stops the run early and prints one line with the compiled step's
    memory; the steps it does run are the uncapped run's first steps, bit for bit."""

    def loss(w, _batch, _key):
        return jnp.sum((w - 1.0) ** 2)

    w0 = jnp.zeros(300_000)
    full = training.fit(loss, w0, optax.adam(0.1), steps=10, key=key, progress=False)
    monkeypatch.setenv("CONSERVED_MAX_STEPS", "3")
    short = training.fit(loss, w0, optax.adam(0.1), steps=10, key=key, progress=False)
    assert short.losses.shape == (3,)
    np.testing.assert_array_equal(short.losses, full.losses[:3])
    line = capsys.readouterr().out
    assert "3 of 10 steps" in line
    # the parameters and Adam's two moments (300,000 float32 each) are arguments of the step
    mib = float(line.split("compiled step: ")[1].split(" MiB")[0])
    assert mib >= 0.99 * 3 * 300_000 * 4 / 2**20
    monkeypatch.setenv("CONSERVED_MAX_STEPS", "50")
    assert training.fit(
        loss, w0, optax.adam(0.1), steps=10, key=key, progress=False
    ).losses.shape == (10,)
