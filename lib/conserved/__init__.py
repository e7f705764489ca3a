"""Conserved: the library behind the book *Conserved: symmetry and conservation laws in machine
learning*. One module per idea; the chapters import them.

- `config`: quick / full / paper modes, seeds, float64 switch.
- `training`: the one jitted optax training loop.
- `diagnostics`: drift of conserved quantities, relative errors, summary tables.
- `plotting`: the book's figure style and recurring plots.
"""

from . import config, diagnostics, plotting, training

__all__ = ["config", "diagnostics", "plotting", "training"]
__version__ = "0.1.0"
