import json
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from conftest import bad_input
from conserved import config


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "full"),
        ({"CONSERVED_QUICK": "1"}, "quick"),
        ({"CONSERVED_QUICK": "0"}, "full"),
        ({"CONSERVED_MODE": "paper"}, "paper"),
        ({"CONSERVED_MODE": "Full", "CONSERVED_QUICK": "1"}, "full"),  # the explicit mode wins
    ],
)
def test_mode_from_environment(monkeypatch, env, expected):
    monkeypatch.delenv("CONSERVED_MODE", raising=False)
    monkeypatch.delenv("CONSERVED_QUICK", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert config.mode() == expected
    assert config.is_quick() == (expected == "quick")


@pytest.mark.parametrize(("name", "value"), [("CONSERVED_MODE", "fast"), ("CONSERVED_QUICK", "2")])
def test_bad_mode_names_the_variable(monkeypatch, name, value):
    monkeypatch.delenv("CONSERVED_MODE", raising=False)
    monkeypatch.setenv(name, value)
    with bad_input(match=name):
        config.mode()


def test_choose_picks_by_mode():
    assert config.choose(quick=1, full=2, paper=3, current="quick") == 1
    assert config.choose(quick=1, full=2, paper=3, current="full") == 2
    assert config.choose(quick=1, full=2, paper=3, current="paper") == 3
    assert config.choose(quick=1, full=2, current="paper") == 2  # paper falls back to full
    with bad_input(match="current"):
        config.choose(quick=1, full=2, current="huge")


def test_key_is_deterministic_and_validated():
    import jax

    a = jax.random.normal(config.key(3), (4,))
    b = jax.random.normal(config.key(3), (4,))
    c = jax.random.normal(config.key(4), (4,))
    assert jnp.array_equal(a, b)
    assert not jnp.array_equal(a, c)
    for bad in (-1, 1.5, "0", True):
        with bad_input(match="seed"):
            config.key(bad)


def test_x64_switch_round_trip():
    before = config.x64_enabled()
    try:
        config.enable_x64(True)
        assert jnp.ones(2).dtype == jnp.float64
        config.enable_x64(False)
        assert jnp.ones(2).dtype == jnp.float32
    finally:
        config.enable_x64(before)
    with bad_input(match="enabled"):
        config.enable_x64("yes")


def test_compilation_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("CONSERVED_JAX_CACHE", str(tmp_path / "jax"))
    assert config.compilation_cache_dir() == str(tmp_path / "jax")
    for off in ("off", "0", ""):
        monkeypatch.setenv("CONSERVED_JAX_CACHE", off)
        assert config.compilation_cache_dir() is None
    monkeypatch.delenv("CONSERVED_JAX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert config.compilation_cache_dir() == str(tmp_path / "conserved" / "jax")


def test_max_steps_from_environment(monkeypatch):
    monkeypatch.delenv("CONSERVED_MAX_STEPS", raising=False)
    assert config.max_steps() is None and not config.is_miniature()
    monkeypatch.setenv("CONSERVED_MAX_STEPS", " 3 ")
    assert config.max_steps() == 3 and config.is_miniature()
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv("CONSERVED_MAX_STEPS", bad)
        with bad_input(match="CONSERVED_MAX_STEPS"):
            config.max_steps()


def test_choose_applies_miniature_overrides_only_when_capped(monkeypatch):
    sizes = dict(quick=dict(a=1, b=2), full=dict(a=10, b=20), paper=dict(a=100, b=200))
    monkeypatch.delenv("CONSERVED_MAX_STEPS", raising=False)
    assert config.choose(**sizes, miniature=dict(b=3), current="paper") == dict(a=100, b=200)
    monkeypatch.setenv("CONSERVED_MAX_STEPS", "2")
    assert config.choose(**sizes, miniature=dict(b=3), current="paper") == dict(a=100, b=3)
    assert config.choose(**sizes, current="paper") == dict(a=100, b=200)
    with bad_input(match="miniature"):
        config.choose(**sizes, miniature=dict(c=3), current="paper")


_FAST_COMPILE_PROBE = """
import json, os, warnings
import jax, jax.numpy as jnp
from conserved import config
before = os.environ.get("XLA_FLAGS")
{early}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = config.compile_fast_in_quick_mode()
    again = config.compile_fast_in_quick_mode()
def f(x, w):
    body = lambda c, _: (jnp.tanh(w @ c) + c, None)
    return jax.lax.scan(body, x, None, length=5)[0]
x, w = jnp.ones(8), jnp.eye(8)
jax.jit(f)(x, w).block_until_ready()  # XLA started with the flags (it aborts on unknown ones)
print(json.dumps(dict(before=before, first=first, again=again, flags=os.environ.get("XLA_FLAGS"),
                      warnings=[str(w.message) for w in caught])))
"""


def _fast_compile_probe(mode: str, early: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CONSERVED_QUICK")}
    env["CONSERVED_MODE"] = mode
    out = subprocess.run(
        [sys.executable, "-c", _FAST_COMPILE_PROBE.format(early=early)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fast_compilation_only_in_quick_mode_and_only_before_jax_starts():
    quick = _fast_compile_probe("quick")
    assert quick["before"] is None and quick["first"] and quick["again"]
    assert quick["flags"].split() == list(config.FAST_COMPILATION_FLAGS)
    assert quick["warnings"] == []
    full = _fast_compile_probe("full")
    assert not full["first"] and full["flags"] is None and full["warnings"] == []
    late = _fast_compile_probe("quick", early="jnp.zeros(3).block_until_ready()")
    assert not late["first"] and late["flags"] is None
    assert any("after JAX's first computation" in w for w in late["warnings"])
