"""Paper mode in miniature: `make paper-smoke` (CI runs it on every submission).

Every chapter executes end to end with ``CONSERVED_MODE=paper`` (the papers' shapes and
settings) and ``CONSERVED_MAX_STEPS`` (default 2: every training run stops after that many
optimiser steps), in a fresh kernel, on the CPU. Everything runs: data sets of the papers'
sizes, models of their widths, every compiled program, every plot and table. What cannot hold
after two steps of training is a trained model's claim, so in this run an ``assert`` that fails
does not stop the chapter: it prints one line, ``[miniature] check skipped: assert ...``, and
the chapter goes on. Any other error fails the run.

For each chapter the script prints the time, the number of capped training runs, the memory
XLA reserves for the largest compiled training step (arguments, outputs and temporaries, from
``memory_analysis()`` of the compiled program; what a GPU run needs beyond the framework's own
footprint), the host's peak resident memory of the kernel (an upper bound that includes JAX
itself and every evaluation), and the checks skipped. Times are reported, never asserted (a busy
machine must not fail a correct book). Usage::

    python tools/paper_smoke.py                       # every chapter of _toc.yml
    python tools/paper_smoke.py chapters/05_pinn_projection.md --max-steps 5
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from bench import toc_chapters  # noqa: E402  the chapters of _toc.yml, as make bench runs them

BUDGET_S = 120.0  # each chapter in miniature paper mode on 2 CPU cores

# The first cell of the run: failing asserts print a line instead of raising.
SOFT_ASSERTS = r"""
import ast as _miniature_ast


def _miniature_skip(text):
    print(f"[miniature] check skipped: assert {text}")


class _MiniatureSoftAsserts(_miniature_ast.NodeTransformer):
    def visit_Assert(self, node):
        ast = _miniature_ast
        text = ast.unparse(node.test).replace("\n", " ")
        text = text if len(text) <= 100 else text[:97] + "..."
        skip = ast.parse(f"_miniature_skip({text!r})").body[0]
        new = ast.If(test=ast.UnaryOp(op=ast.Not(), operand=node.test), body=[skip], orelse=[])
        return ast.fix_missing_locations(ast.copy_location(new, node))


get_ipython().ast_transformers.append(_MiniatureSoftAsserts())
"""

# The last cell: the kernel's peak resident memory (Linux reports kibibytes).
PEAK_MEMORY = r"""
import resource as _miniature_resource

_peak = _miniature_resource.getrusage(_miniature_resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"[miniature] peak host memory: {_peak:.0f} MiB")
"""

STEP_LINE = re.compile(
    r"\[miniature\] (.*?): (\d+) of (\d+) steps(?:.*?compiled step: ([\d.]+) MiB)?"
)
PEAK_LINE = re.compile(r"\[miniature\] peak host memory: (\d+) MiB")
SKIP_LINE = re.compile(r"\[miniature\] check skipped: (.*)")


def _stream_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
    return "".join(parts)


def run_chapter(path: Path, max_steps: int, timeout: int) -> dict:
    """Execute one chapter in miniature paper mode; return what it printed, parsed."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = jupytext.read(path)
    nb.cells.insert(0, nbformat.v4.new_code_cell(SOFT_ASSERTS))
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_MEMORY))
    env = dict(os.environ, CONSERVED_MODE="paper", CONSERVED_MAX_STEPS=str(max_steps))
    env.pop("CONSERVED_QUICK", None)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    error = None
    try:
        client.execute(env=env)  # the kernel's environment; this process's is left alone
    except (CellExecutionError, CellTimeoutError) as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        error = lines[-1] if isinstance(exc, CellExecutionError) and lines else repr(exc)[:300]
    seconds = time.perf_counter() - start
    text = _stream_text(nb)
    cells = []
    for number, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        began, ended = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if cell.cell_type == "code" and began and ended:
            spent = (_stamp(ended) - _stamp(began)).total_seconds()
            cells.append((spent, number, cell.source.strip().splitlines()[0][:60]))
    steps = STEP_LINE.findall(text)
    peak = PEAK_LINE.findall(text)
    return dict(
        seconds=seconds,
        error=error,
        runs=len(steps),
        step_mib=max((float(m[3]) for m in steps if m[3]), default=0.0),
        peak_mib=int(peak[-1]) if peak else None,
        skipped=SKIP_LINE.findall(text),
        slowest=sorted(cells, reverse=True)[:3],
    )


def _stamp(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="default: every chapter")
    parser.add_argument("--max-steps", type=int, default=2, help="optimiser steps per run")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--verbose", action="store_true", help="list every skipped check")
    args = parser.parse_args(argv)
    if args.max_steps < 1:
        parser.error(f"--max-steps must be a positive integer, got {args.max_steps}")
    chapters = [p.resolve() for p in args.chapters] or toc_chapters()
    for path in chapters:
        if not path.is_file():
            parser.error(f"no such chapter: {path}")

    print(
        f"Paper mode in miniature: CONSERVED_MODE=paper, CONSERVED_MAX_STEPS={args.max_steps} "
        f"(budget {BUDGET_S:g} s a chapter on 2 CPU cores)"
    )
    print(
        f"  {'chapter':28s} {'time':>8s}  {'runs':>4s}  {'step MiB':>8s}  {'peak MiB':>8s}  skipped"
    )
    failed = []
    for path in chapters:
        r = run_chapter(path, args.max_steps, args.timeout)
        over = "" if r["seconds"] <= BUDGET_S else "  OVER budget"
        peak = "?" if r["peak_mib"] is None else str(r["peak_mib"])
        print(
            f"  {path.stem:28s} {r['seconds']:6.1f} s  {r['runs']:4d}  {r['step_mib']:8.1f}  "
            f"{peak:>8s}  {len(r['skipped'])}{over}",
            flush=True,
        )
        for text in r["skipped"] if args.verbose else []:
            print(f"      skipped: {text}")
        for spent, number, first in r["slowest"] if args.verbose else []:
            print(f"      cell {number:3d} {spent:6.1f} s  {first}")
        if r["error"] is not None:
            failed.append(path.stem)
            print(f"    FAILED: {r['error']}")
    if failed:
        print(f"paper-smoke: {len(failed)} chapter(s) failed: {', '.join(failed)}")
        return 1
    print(f"paper-smoke: {len(chapters)} chapters ran end to end in miniature paper mode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
