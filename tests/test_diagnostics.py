import re

import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from conftest import bad_input
from conserved import diagnostics


def test_along_evaluates_each_state():
    traj = jnp.arange(24.0).reshape(2, 4, 3)  # (batch, T, M)
    values = diagnostics.along(lambda x: jnp.sum(x**2), traj)
    assert values.shape == (2, 4)
    np.testing.assert_allclose(values, np.sum(np.asarray(traj) ** 2, axis=-1))


def test_along_rejects_bad_shapes():
    with bad_input(match="trajectory"):
        diagnostics.along(jnp.sum, jnp.ones(5))
    with bad_input(match="scalar"):
        diagnostics.along(lambda x: x, jnp.ones((4, 3)))


def test_drift_relative_and_absolute():
    values = jnp.array([[2.0, 2.2, 1.6], [-1.0, -1.0, -0.5]])
    np.testing.assert_allclose(diagnostics.drift(values), [[0, 0.1, 0.2], [0, 0, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(
        diagnostics.drift(values, relative=False), [[0, 0.2, 0.4], [0, 0, 0.5]], rtol=1e-6
    )


def test_drift_zero_start_needs_absolute():
    with bad_input(match="relative=False"):
        diagnostics.drift(jnp.array([0.0, 1.0]))
    with bad_input(match="time axis"):
        diagnostics.drift(jnp.array(1.0))


@settings(max_examples=30, deadline=None)
@given(
    c=st.floats(0.1, 10.0),
    p=st.floats(-1.0, 3.0),
)
def test_growth_exponent_recovers_power_laws(c, p):
    ts = np.linspace(0.0, 50.0, 200)
    values = np.zeros_like(ts)
    values[1:] = c * ts[1:] ** p  # the value at t = 0 is left out by growth_exponent
    assert diagnostics.growth_exponent(ts, values) == pytest.approx(p, abs=1e-6)


def test_growth_exponent_tells_bounded_from_growing():
    ts = np.linspace(0, 100, 1000)
    bounded = 0.01 * np.abs(np.sin(ts)) + 1e-3
    growing = 1e-3 * ts
    assert abs(diagnostics.growth_exponent(ts, bounded)) < 0.2
    assert diagnostics.growth_exponent(ts, growing) > 0.9
    with bad_input(match="two points"):
        diagnostics.growth_exponent([0.0, 1.0], [0.0, 0.0])
    with bad_input(match="same length"):
        diagnostics.growth_exponent([1.0, 2.0], [1.0])


def test_relative_error():
    target = jnp.array([[3.0, 4.0], [1.0, 0.0]])
    assert float(diagnostics.relative_error(target, target)) == 0.0
    err = diagnostics.relative_error(target * 1.1, target, axis=1)
    np.testing.assert_allclose(err, [0.1, 0.1], rtol=1e-6)
    with bad_input(match="same shape"):
        diagnostics.relative_error(jnp.ones(3), jnp.ones((3, 1)))
    with bad_input(match="norm zero"):
        diagnostics.relative_error(jnp.ones(3), jnp.zeros(3))


def test_summary_table_layout():
    table = diagnostics.summary_table(
        {"Euler": {"drift": 0.123456, "note": "grows"}, "Tsit5": {"drift": 1.5e-7}},
        row_header="solver",
    )
    lines = table.splitlines()
    assert lines[0] == "| solver | drift | note |"
    assert lines[2] == "| Euler | 0.123 | grows |"
    assert lines[3] == "| Tsit5 | 1.5e-07 | – |"
    # pipes inside names and cells are escaped, so every row keeps its number of cells
    piped = diagnostics.summary_table({"|C|": {"max |{C, H}|": 1.0, "note": "a|b"}})
    assert piped.splitlines()[0] == "|  | max \\|{C, H}\\| | note |"
    assert piped.splitlines()[2] == "| \\|C\\| | 1 | a\\|b |"
    for line in piped.splitlines():
        assert len(re.findall(r"(?<!\\)\|", line)) == 4
    with bad_input(match="empty"):
        diagnostics.summary_table({})
    with bad_input(match="row 'a'"):
        diagnostics.summary_table({"a": 1.0})


@pytest.mark.parametrize(
    "holds, numbers, expected",
    [
        ([True, True, True], {}, "reproduced"),
        (True, {}, "reproduced"),
        ([True, False, True], {}, "partly"),
        ([False, False], {}, "not reproduced"),
        (False, {}, "not reproduced"),
        ([], {}, "not tested here"),
        # within a factor 10 of the paper's number, either side
        ([True], {"measured": 3e-4, "paper": 1e-3}, "reproduced"),
        ([True], {"measured": 9e-3, "paper": 1e-3}, "reproduced"),
        # the direction holds, the magnitude does not
        ([True], {"measured": 2e-2, "paper": 1e-3}, "partly"),
        ([True], {"measured": 5e-5, "paper": 1e-3}, "partly"),
        ([True], {"measured": 5e-5, "paper": 1e-3, "factor": 100.0}, "reproduced"),
        ([False], {"measured": 1e-3, "paper": 1e-3}, "not reproduced"),
    ],
)
def test_verdict_cases(holds, numbers, expected):
    assert diagnostics.verdict(holds, **numbers) == expected


@given(st.lists(st.booleans(), max_size=8), st.randoms(use_true_random=False))
def test_verdict_depends_on_the_set_of_outcomes_only(holds, rng):
    shuffled = list(holds)
    rng.shuffle(shuffled)
    result = diagnostics.verdict(holds)
    assert result == diagnostics.verdict(shuffled)
    assert result in diagnostics.VERDICTS
    # one failure more can never make a verdict "reproduced"
    assert diagnostics.verdict([*holds, False]) != "reproduced"


def test_verdict_rejects_bad_numbers():
    with bad_input(match="both"):
        diagnostics.verdict([True], measured=1.0)
    with bad_input(match="positive"):
        diagnostics.verdict([True], measured=-1.0, paper=1.0)
    with bad_input(match="positive"):
        diagnostics.verdict([True], measured=float("nan"), paper=1.0)
    with bad_input(match="factor"):
        diagnostics.verdict([True], measured=1.0, paper=1.0, factor=1.0)
