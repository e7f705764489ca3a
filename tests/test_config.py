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
