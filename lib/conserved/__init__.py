"""Conserved: the library behind the book *Conserved: symmetry and conservation laws in machine
learning*. One module per idea; the chapters import them, and each is loaded on first use.
Importing it changes no global JAX setting (see `config.enable_compilation_cache`).

- `config`: quick / full / paper modes, seeds, float64 switch, the compilation cache.
- `ode`: the symplectic structure J and Diffrax ODE solves that every other module uses.
- `training`: the one jitted optax training loop.
- `diagnostics`: drift of conserved quantities, relative errors, summary tables.
- `plotting`: the book's figure style and recurring plots.
- `symmetry`: Lie algebras, group actions, invariance, orbit averaging.
- `mechanics`, `systems`, `hnn`: Hamiltonian mechanics, reference systems, HNNs.
- `razor`: Noether's Razor, learned quadratic conserved quantities and the variational bound.
- `param_symmetry`: symmetries of network parameters and their conserved quantities.
- `projection`, `pde`, `pinn`: exact integral projections; method-of-lines PDE solvers;
  physics-informed networks with projected outputs.
- `operators`, `ecf`: neural operators (FNO, U-Net); exterior-embedded conservation around them.
- `assignments`: student editions and autograding (imported on demand).
"""

import importlib

__all__ = [
    "config",
    "diagnostics",
    "ecf",
    "hnn",
    "mechanics",
    "ode",
    "operators",
    "param_symmetry",
    "pde",
    "pinn",
    "plotting",
    "projection",
    "razor",
    "symmetry",
    "systems",
    "training",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Load a submodule on first use (PEP 562): `import conserved` stays light (the
    autograder's checker process imports `conserved.assignments` and none of JAX), while
    `conserved.razor` and `from conserved import razor` work as before."""
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
