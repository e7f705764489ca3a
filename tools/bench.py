"""Timings, kept out of the test suite: `make bench`.

A busy machine must not fail a correct book, so the tests assert correctness only and the time
budgets live here. This script prints

1. each chapter's quick-mode time (graded the way the test suite grades it: a fresh kernel,
   `CONSERVED_MODE=quick`, the chapter's checks) against its budget, and
2. the library's per-step timings: seconds per compiled training step of the book's training
   loops, and one call of its solvers, after compilation.

It never fails on a slow run (exit status 0 unless a chapter fails its own checks or cannot
run); a line marked OVER says a chapter went past its budget. Usage::

    python tools/bench.py                    # every chapter of _toc.yml, then the library
    python tools/bench.py --library          # the library's timings only
    python tools/bench.py chapters/03_noethers_razor.md --budget 90
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

QUICK_BUDGET_S = 60.0  # each chapter in well under a minute on 2 idle cores in quick mode


def toc_chapters() -> list[Path]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [
        ROOT / f"{entry['file']}.md"
        for part in toc.get("parts", [])
        for entry in part.get("chapters", [])
        if entry["file"].startswith("chapters/")
    ]


def bench_chapters(chapters: list[Path], budget: float) -> bool:
    from conserved import assignments

    print(f"Chapters in quick mode (budget {budget:g} s each; load: {_load()})")
    ok = True
    for path in chapters:
        report = assignments.grade(path, mode="quick", cell_timeout=600, total_timeout=1800)
        verdict = "ok" if report.seconds <= budget else "OVER"
        score = f"{report.total:g}/{report.maximum:g}"
        print(f"  {path.stem:28s} {report.seconds:7.1f} s  / {budget:g} s  {verdict:4s}  {score}")
        if report.cell_errors or report.total != report.maximum:
            ok = False
            print("    " + "\n    ".join(report.cell_errors or [report.table()]))
    return ok


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _timed(fn, repeat: int = 5) -> float:
    """Best-of-`repeat` seconds of `fn()` (which must block until its result is ready)."""
    fn()  # compile
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_library() -> None:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import optax

    from conserved import ecf, hnn, mechanics, operators, pde, razor, systems, training

    print(f"Library, per step after compilation ({jax.devices()[0].platform}; load: {_load()})")
    rows: list[tuple[str, float]] = []
    key = jr.key(0)

    def per_step(name: str, run) -> None:
        result = run(steps=400)  # 2 chunks of 200: the second one is compiled already
        rows.append((name, result.seconds_per_step))

    # A plain MLP regression with fit_adam.
    x = jr.normal(key, (1024, 4))
    y = jnp.sin(x).sum(-1, keepdims=True)
    mlp = eqx.nn.MLP(4, 1, 64, 2, key=key)

    def mlp_loss(m, batch, _key):
        return training.mse(jax.vmap(m)(batch[0]), batch[1])

    per_step(
        "training.fit_adam, MLP 64x2, batch 256",
        lambda steps: training.fit(
            mlp_loss,
            mlp,
            optax.adam(1e-3),
            steps=steps,
            key=key,
            data=(x, y),
            batch_size=256,
            chunk_size=200,
            progress=False,
        ),
    )

    # An HNN on pendulum derivatives.
    system = systems.pendulum()
    states, derivatives = systems.derivative_dataset(system, key, 64, jnp.linspace(0, 5, 16))
    model = hnn.HNN(1, key=key)
    per_step(
        "hnn.fit_vector_field, HNN, batch 256",
        lambda steps: hnn.fit_vector_field(
            model, states, derivatives, steps=steps, key=key, progress=False
        ),
    )

    # Noether's razor on harmonic oscillators.
    oscillators = systems.harmonic_oscillators(1)
    x0 = jr.normal(key, (16, 2))
    data = razor.dataset(oscillators.hamiltonian, x0, dt=0.1, steps=4)
    network = razor.VariationalMLP(2, width=32, key=key)
    rmodel = razor.RazorHNN(network, razor.Quadratics.random(key, 3, 2), num_samples=8)
    per_step(
        "razor.train, 3 quadratics, 64 transitions",
        lambda steps: razor.train(rmodel, data, steps=steps, key=key, dt=0.1, progress=False),
    )

    # A one-step FNO wrapped in ECF.
    _, dx = pde.cell_centres(64, 1.0)
    fields, _ = pde.random_cosine_fields(key, 128, 64)
    backbone = operators.FNO1d(1, 1, width=16, modes=8, key=key)
    wrapped = ecf.attach(backbone, dx=dx)
    per_step(
        "ecf.train, FNO width 16, n=64, batch 64",
        lambda steps: ecf.train(
            wrapped, fields[:, None], fields[:, None], steps=steps, key=key, progress=False
        ),
    )

    # Solvers: one call, compiled.
    ts = jnp.linspace(0.0, 10.0, 101)
    x0 = jnp.array([1.0, 0.0])
    rows.append(
        (
            "mechanics.integrate, pendulum, t in [0, 10]",
            _timed(lambda: mechanics.integrate(system.hamiltonian, x0, ts).block_until_ready()),
        )
    )
    burgers = pde.burgers_rhs(0.01, 1.0)  # one right-hand side: one compilation
    times = jnp.linspace(0.0, 0.5, 11)
    rows.append(
        (
            "pde.solve, Burgers n=64, t in [0, 0.5]",
            _timed(lambda: pde.solve(burgers, fields[0], times).block_until_ready()),
        )
    )
    for name, seconds in rows:
        print(f"  {name:46s} {seconds * 1e3:9.3f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="chapters (default: _toc.yml)")
    parser.add_argument("--budget", type=float, default=QUICK_BUDGET_S, help="seconds")
    parser.add_argument("--library", action="store_true", help="library timings only")
    parser.add_argument("--no-library", action="store_true", help="chapters only")
    args = parser.parse_args(argv)
    ok = True
    if not args.library:
        ok = bench_chapters(args.chapters or toc_chapters(), args.budget)
    if not args.no_library:
        bench_library()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
