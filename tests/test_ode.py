"""The low-level tools of `conserved.ode`, checked against closed-form solutions and a second
method (Diffrax's own `diffeqsolve`), and the layering of the package: every import between
its modules points down."""

import ast

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, bad_input, float64
from conserved import mechanics, ode, systems


def test_symplectic_matrix_is_the_hand_written_j():
    np.testing.assert_array_equal(ode.symplectic_matrix(1), np.array([[0.0, 1.0], [-1.0, 0.0]]))
    j2 = np.zeros((4, 4))
    j2[0, 2] = j2[1, 3] = 1.0
    j2[2, 0] = j2[3, 1] = -1.0
    np.testing.assert_array_equal(ode.symplectic_matrix(2), j2)
    with bad_input(match="dof"):
        ode.symplectic_matrix(0)


def test_apply_symplectic_equals_multiplying_by_j():
    v = jax.random.normal(jax.random.key(3), (5, 6))
    np.testing.assert_allclose(ode.apply_symplectic(v), v @ np.asarray(ode.symplectic_matrix(3)).T)


def test_solve_ode_matches_the_exponential_of_a_linear_system():
    """y' = A y has y(t) = expm(t A) y0 (scipy's expm: an independent reference)."""
    from scipy.linalg import expm

    with float64():
        a = np.array([[-0.3, 1.0], [-2.0, -0.1]])
        y0 = np.array([1.0, 0.5])
        ts = np.linspace(0.0, 3.0, 7)
        field = lambda y: jnp.asarray(a) @ y  # noqa: E731
        got = ode.solve_ode(field, jnp.asarray(y0), ts, rtol=1e-10, atol=1e-12)
        expected = np.stack([expm(t * a) @ y0 for t in ts])
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-9)
        # two save times are the solve's own endpoints (no interpolation): same answer
        ends = ode.solve_ode(field, jnp.asarray(y0), ts[[2, 5]], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ends, [y0, expm((ts[5] - ts[2]) * a) @ y0], rtol=1e-8)


def test_solve_ode_rejects_bad_times():
    with bad_input(match="at least two"):
        ode.solve_ode(lambda y: -y, jnp.ones(2), jnp.array([0.0]))
    with bad_input(match="strictly increasing"):
        ode.solve_ode(lambda y: -y, jnp.ones(2), jnp.array([0.0, 1.0, 1.0]))
    with bad_input(match="dt0"):
        ode.solve_ode(lambda y: -y, jnp.ones(2), jnp.array([0.0, 1.0]), dt0=-0.1)


def test_integrate_many_is_integrate_state_by_state():
    system = systems.pendulum()
    x0 = system.sample(jax.random.key(1), 3)
    ts = jnp.linspace(0.0, 2.0, 5)
    batch = mechanics.integrate_many(system.hamiltonian, x0, ts)
    for i in range(3):
        one = mechanics.integrate(system.hamiltonian, x0[i], ts, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(batch[i], one, rtol=1e-5, atol=1e-6)


# Each module of the package and its layer: a module may import only modules of lower layers.
LAYERS = {
    "_checks": 0,
    "_sharing": 0,
    "config": 0,
    "ode": 1,
    "training": 1,
    "diagnostics": 1,
    "plotting": 1,
    "projection": 1,
    "operators": 1,
    "symmetry": 2,
    "mechanics": 2,
    "pde": 2,
    "param_symmetry": 2,
    "systems": 3,
    "hnn": 3,
    "pinn": 3,
    "ecf": 3,
    "razor": 4,
    "assignments": 0,
    "__init__": 5,
}


def package_imports(path):
    """The modules of `conserved` that the file at `path` imports (relative imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_every_import_between_modules_points_down():
    files = sorted((ROOT / "lib" / "conserved").glob("*.py"))
    assert {p.stem for p in files} == set(LAYERS), "a module is missing from LAYERS"
    for path in files:
        for imported in package_imports(path):
            assert LAYERS[imported] < LAYERS[path.stem], (
                f"{path.stem} (layer {LAYERS[path.stem]}) imports {imported} "
                f"(layer {LAYERS[imported]})"
            )
    assert package_imports(ROOT / "lib" / "conserved" / "ode.py") == {"_checks"}


@pytest.mark.parametrize("solver", [diffrax.Euler(), diffrax.Heun(), diffrax.Tsit5()])
def test_fixed_steps_matches_diffeqsolve_with_constant_steps(solver):
    with float64():
        pendulum = systems.pendulum()
        field = mechanics.hamiltonian_vector_field(pendulum.hamiltonian)
        x0 = jnp.array([1.2, -0.3])
        expected = ode.solve_ode(
            field, x0, jnp.array([0.0, 0.7]), solver=solver, dt0=0.7 / 5, max_steps=6
        )[-1]
        got = ode.fixed_steps(field, x0, 0.7, 5, solver=solver)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        # and it can be differentiated twice (the razor's loss needs d/dθ of ∇H inside)
        hess = jax.hessian(lambda y: jnp.sum(ode.fixed_steps(field, y, 0.7, 5) ** 2))(x0)
        assert hess.shape == (2, 2) and np.all(np.isfinite(hess))


def test_fixed_steps_rejects_bad_input():
    field = mechanics.hamiltonian_vector_field(systems.pendulum().hamiltonian)
    with bad_input(match="steps"):
        ode.fixed_steps(field, jnp.ones(2), 0.5, 0)
    with bad_input(match="duration"):
        ode.fixed_steps(field, jnp.ones(2), -0.5, 3)


def test_adaptive_tolerances_follow_the_state_dtype():
    """In float32 the default tolerances (1e-7, 1e-9) are below what a step can resolve; they
    are raised to 10 ε, and the solution is as accurate as float32 allows (exact: a rotation)."""
    f32 = jnp.finfo(jnp.float32).eps
    assert ode.resolvable_tolerance(jnp.ones(2, jnp.float32)) == pytest.approx(10 * f32)
    wide = jnp.ones(2, float)  # float64 when JAX runs with x64, float32 otherwise
    assert ode.resolvable_tolerance((jnp.ones(2, jnp.float32), wide)) == pytest.approx(
        10 * jnp.finfo(wide.dtype).eps
    )
    assert ode.resolvable_tolerance(jnp.arange(3)) == 0.0
    H = lambda x: 0.5 * jnp.sum(x**2)  # noqa: E731
    ts = jnp.linspace(0.0, 10.0, 11, dtype=jnp.float32)
    x0 = jnp.array([1.0, 0.0], jnp.float32)
    traj = mechanics.integrate(H, x0, ts)
    assert traj.dtype == jnp.float32
    exact = np.stack([np.cos(np.asarray(ts, float)), -np.sin(np.asarray(ts, float))], axis=1)
    np.testing.assert_allclose(np.asarray(traj, float), exact, atol=1e-4)
