"""Course use: student editions of a chapter, and offline autograding of submissions.

A chapter is the single source. Each exercise is a sphinx-exercise `{exercise}` with a label,
followed by a gated solution (`{solution-start} LABEL` ... `{solution-end}`) whose code cells
hold the answer between `# BEGIN SOLUTION` and `# END SOLUTION`, followed by one *check cell*:
the first code cell after `{solution-end}`. A check cell may hold instructor-only tests between
`# BEGIN HIDDEN TESTS` and `# END HIDDEN TESTS`.

Command line (also installed as `conserved-assignments`)::

    python -m conserved.assignments release chapters/01_symmetries.md --out handout/ [--md]
    python -m conserved.assignments grade handout/01_symmetries.ipynb [--json]

`release` writes a student notebook: solution regions replaced by a stub that raises
`NotImplementedError`, hidden tests and solution text removed, outputs cleared. `grade` runs a
submission in a fresh kernel in a temporary directory, with a time limit per cell and in total,
replaces every check cell by the instructor's (public and hidden tests), and scores each
exercise: full marks when its check cell runs without error. Bad submissions (invalid JSON, a
crash, an endless loop) get zero for the affected exercises and a plain message; the submission
file is only read.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat

BEGIN_SOLUTION = "# BEGIN SOLUTION"
END_SOLUTION = "# END SOLUTION"
BEGIN_HIDDEN = "# BEGIN HIDDEN TESTS"
END_HIDDEN = "# END HIDDEN TESTS"
STUB = ["# YOUR CODE HERE", "raise NotImplementedError"]
METADATA_KEY = "conserved"

_FENCE = re.compile(r"^(`{3,}|:{3,})\s*(\{([\w-]+)\})?\s*(.*)$")


class AssignmentError(ValueError):
    """A chapter or submission that does not follow the exercise conventions."""


@dataclasses.dataclass
class Exercise:
    """One exercise of a chapter, located in the chapter's notebook."""

    label: str
    solution_cells: list[int] = dataclasses.field(default_factory=list)
    check_cell: int | None = None
    check_source: str = ""  # the instructor's check, hidden tests included
    solution_lines: list[str] = dataclasses.field(default_factory=list)
    hidden_lines: list[str] = dataclasses.field(default_factory=list)
    text_lines_removed: int = 0


# ------------------------------------------------------------------------------------------
# Reading a chapter
# ------------------------------------------------------------------------------------------


def read_chapter(path: str | Path) -> nbformat.NotebookNode:
    """Read a chapter (MyST Markdown `.md` or `.ipynb`) as a notebook."""
    path = Path(path)
    if not path.is_file():
        raise AssignmentError(f"no such chapter: {path}")
    return jupytext.read(path)


def _regions(source: str, begin: str, end: str) -> tuple[list[str], list[str], int]:
    """Split cell source into (lines kept with each region replaced by a marker, region lines,
    number of regions). Raises on unbalanced markers."""
    kept, inside, regions, count = [], False, [], 0
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise AssignmentError(f"nested {begin!r}")
            inside, count = True, count + 1
            kept.append(("REGION", line[: len(line) - len(line.lstrip())]))
        elif stripped == end:
            if not inside:
                raise AssignmentError(f"{end!r} without {begin!r}")
            inside = False
        elif inside:
            regions.append(line)
        else:
            kept.append(line)
    if inside:
        raise AssignmentError(f"{begin!r} without {end!r}")
    return kept, regions, count


def analyse(nb: nbformat.NotebookNode) -> tuple[list[Exercise], list[str | None]]:
    """Find the exercises of a chapter notebook.

    Returns the exercises in order, and for every cell the markdown text that a student
    edition keeps (`None` for a markdown cell that disappears; code cells get their source).
    """
    exercises: dict[str, Exercise] = {}
    current_label = None  # the label of the last {exercise}
    solution_label = None  # inside {solution-start} ... {solution-end}
    awaiting_check = None  # after {solution-end}, the next code cell is the check
    kept_text: list[str | None] = []
    skip_fence = None  # inside a plain {solution} directive: skip until this fence closes
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            kept_text.append(cell.source)
            if solution_label is not None:
                exercises[solution_label].solution_cells.append(index)
            elif awaiting_check is not None:
                exercises[awaiting_check].check_cell = index
                exercises[awaiting_check].check_source = cell.source
                awaiting_check = None
            continue
        out_lines = []
        lines = cell.source.split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            match = _FENCE.match(line.strip())
            directive = match.group(3) if match else None
            if skip_fence is not None:
                if line.strip() == skip_fence:
                    skip_fence = None
                i += 1
                continue
            if directive == "exercise":
                label = _directive_label(lines, i)
                if label in exercises:
                    raise AssignmentError(f"exercise label {label!r} is used twice")
                exercises[label] = Exercise(label)
                current_label = label
            elif directive == "solution-start":
                label = match.group(4).strip() or current_label
                if label not in exercises:
                    raise AssignmentError(f"solution-start {label!r} names no exercise above it")
                solution_label = label
                i = _skip_directive(lines, i, match.group(1))
                continue
            elif directive == "solution-end":
                if solution_label is None:
                    raise AssignmentError("solution-end without solution-start")
                awaiting_check, solution_label = solution_label, None
                i = _skip_directive(lines, i, match.group(1))
                continue
            elif directive == "solution":
                skip_fence = match.group(1)
                i += 1
                continue
            if solution_label is not None:
                if line.strip():
                    exercises[solution_label].text_lines_removed += 1
            else:
                out_lines.append(line)
            i += 1
        text = "\n".join(out_lines).strip("\n")
        kept_text.append(text if text.strip() else None)
    if solution_label is not None:
        raise AssignmentError(f"solution of {solution_label!r} is never closed by solution-end")
    for ex in exercises.values():
        for index in ex.solution_cells:
            _, region, count = _regions(nb.cells[index].source, BEGIN_SOLUTION, END_SOLUTION)
            ex.solution_lines += region
            if count == 0:
                raise AssignmentError(
                    f"exercise {ex.label!r}: a solution cell has no {BEGIN_SOLUTION} region"
                )
        if not ex.solution_cells:
            raise AssignmentError(f"exercise {ex.label!r} has no solution code cell")
        if ex.check_cell is None:
            raise AssignmentError(f"exercise {ex.label!r} has no check cell after its solution")
        _, hidden, _ = _regions(ex.check_source, BEGIN_HIDDEN, END_HIDDEN)
        ex.hidden_lines = hidden
    return list(exercises.values()), kept_text


def _directive_label(lines: list[str], start: int) -> str:
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if stripped.startswith(":label:"):
            return stripped.split(":label:", 1)[1].strip()
        if not stripped.startswith(":"):
            break
    raise AssignmentError(f"an exercise needs a :label: option (near {lines[start]!r})")


def _skip_directive(lines: list[str], start: int, fence: str) -> int:
    """Index after a short directive block such as ```{solution-end}\\n```."""
    for j in range(start + 1, len(lines)):
        if lines[j].strip() == fence:
            return j + 1
    return len(lines)


def _stub(source: str, begin: str, end: str, replacement: list[str]) -> str:
    kept, _, _ = _regions(source, begin, end)
    out = []
    for item in kept:
        if isinstance(item, tuple):
            out += [item[1] + r for r in replacement]
        else:
            out.append(item)
    return "\n".join(out)


def tag(nb: nbformat.NotebookNode, exercises: list[Exercise], source: str) -> None:
    """Mark solution and check cells in the cells' metadata, and the source in the notebook's."""
    for ex in exercises:
        for index in ex.solution_cells:
            nb.cells[index].metadata[METADATA_KEY] = {"exercise": ex.label, "role": "solution"}
        nb.cells[ex.check_cell].metadata[METADATA_KEY] = {"exercise": ex.label, "role": "check"}
    nb.metadata[METADATA_KEY] = {"source": source, "exercises": [ex.label for ex in exercises]}


# ------------------------------------------------------------------------------------------
# Student edition
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Release:
    notebook: nbformat.NotebookNode
    exercises: list[Exercise]
    written: list[Path]


def student_edition(chapter: str | Path) -> tuple[nbformat.NotebookNode, list[Exercise]]:
    """The student notebook of a chapter (in memory) and its exercises."""
    chapter = Path(chapter)
    nb = read_chapter(chapter)
    exercises, kept_text = analyse(nb)
    if not exercises:
        raise AssignmentError(f"{chapter} has no exercises")
    tag(nb, exercises, _source_name(chapter))
    roles = {}
    for ex in exercises:
        for index in ex.solution_cells:
            roles[index] = "solution"
        roles[ex.check_cell] = "check"
    cells = []
    for index, cell in enumerate(nb.cells):
        cell = copy.deepcopy(cell)
        if cell.cell_type == "markdown":
            if kept_text[index] is None:
                continue
            cell.source = kept_text[index]
        else:
            if roles.get(index) == "solution":
                cell.source = _stub(cell.source, BEGIN_SOLUTION, END_SOLUTION, STUB)
            elif roles.get(index) == "check":
                cell.source = _stub(cell.source, BEGIN_HIDDEN, END_HIDDEN, [])
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    nb.cells = cells
    nb.metadata[METADATA_KEY]["edition"] = "student"
    return nb, exercises


def _source_name(chapter: Path) -> str:
    """The chapter's path relative to the repository (or as given)."""
    chapter = chapter.resolve()
    root = _repository_root()
    if root is not None:
        try:
            return str(chapter.relative_to(root))
        except ValueError:
            pass
    return str(chapter)


def _repository_root() -> Path | None:
    """The repository that holds the installed package (lib/conserved -> ../..), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "chapters").is_dir() else None


def release(
    chapter: str | Path, out_dir: str | Path, *, markdown: bool = False, force: bool = False
) -> Release:
    """Write the student edition of `chapter` into `out_dir` (never into a chapters folder)."""
    chapter, out_dir = Path(chapter), Path(out_dir)
    chapters_dir = chapter.resolve().parent
    target = out_dir.resolve()
    if target == chapters_dir or chapters_dir in target.parents or target.name == "chapters":
        raise AssignmentError(
            f"refusing to write a student edition into {out_dir}: choose another --out"
        )
    nb, exercises = student_edition(chapter)
    paths = [target / f"{chapter.stem}.ipynb"]
    if markdown:
        paths.append(target / f"{chapter.stem}.md")
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise AssignmentError(f"{existing[0]} exists; pass --force to overwrite it")
    target.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, paths[0])
    if markdown:
        jupytext.write(nb, paths[1], fmt="md:myst")
    return Release(nb, exercises, paths)


# ------------------------------------------------------------------------------------------
# Grading
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ExerciseResult:
    label: str
    points: float
    score: float
    status: str  # passed, failed, not run, missing
    message: str = ""


@dataclasses.dataclass
class GradeReport:
    submission: str
    source: str | None
    exercises: list[ExerciseResult]
    message: str = ""
    seconds: float = 0.0
    cell_errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(e.score for e in self.exercises)

    @property
    def maximum(self) -> float:
        return sum(e.points for e in self.exercises)

    def to_json(self) -> dict:
        return {
            "submission": self.submission,
            "source": self.source,
            "total": self.total,
            "max": self.maximum,
            "message": self.message,
            "seconds": round(self.seconds, 1),
            "exercises": [dataclasses.asdict(e) for e in self.exercises],
            "cell_errors": self.cell_errors,
        }

    def table(self) -> str:
        width = max([len(e.label) for e in self.exercises] + [8])
        lines = [f"{'exercise':<{width}}  score  status"]
        for e in self.exercises:
            note = f"  ({e.message})" if e.message else ""
            lines.append(f"{e.label:<{width}}  {e.score:g}/{e.points:g}    {e.status}{note}")
        lines.append(f"{'total':<{width}}  {self.total:g}/{self.maximum:g}")
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)


def _find_source(nb, submission: Path, source: str | Path | None) -> Path:
    if source is None:
        meta = nb.metadata.get(METADATA_KEY, {}) if nb is not None else {}
        source = meta.get("source")
        if not source:
            raise AssignmentError(
                "the submission does not say which chapter it belongs to: pass --source CHAPTER"
            )
    candidates = [Path(source)]
    root = _repository_root()
    if root is not None and not Path(source).is_absolute():
        candidates.append(root / source)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AssignmentError(f"cannot find the chapter {source}: pass --source CHAPTER")


def _error_summary(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            value = str(output.get("evalue", "")).strip().split("\n")[0]
            return f"{output.get('ename', 'Error')}: {value}"[:300]
    return None


def grade(
    submission: str | Path,
    *,
    source: str | Path | None = None,
    cell_timeout: int = 300,
    total_timeout: int = 1800,
    mode: str = "quick",
) -> GradeReport:
    """Grade a submitted notebook (`.ipynb`, or a MyST `.md` chapter) against its chapter.

    The submission is executed in a fresh kernel in a temporary directory, with the chapter's
    check cells (hidden tests included) in place of the submitted ones, `cell_timeout` seconds
    per cell and `total_timeout` in all, with `CONSERVED_MODE=mode`. Never raises for a bad
    submission: problems become zero scores with a message.
    """
    submission = Path(submission)
    start = time.perf_counter()
    nb, message = None, ""
    try:
        if submission.suffix == ".md":
            nb = jupytext.read(submission)
        else:
            nb = nbformat.reads(submission.read_text(encoding="utf-8"), as_version=4)
    except FileNotFoundError:
        message = f"submission {submission} does not exist"
    except Exception as exc:  # invalid JSON, not a notebook, undecodable
        message = f"the submission is not a valid notebook ({type(exc).__name__}: {str(exc)[:200]})"
    if source is None and submission.suffix == ".md":
        source = submission  # a chapter graded as it stands (the instructor version)
    try:
        chapter = _find_source(nb, submission, source)
    except AssignmentError as exc:
        return GradeReport(str(submission), None, [], f"{message} {exc}".strip())
    reference = read_chapter(chapter)
    exercises, _ = analyse(reference)
    results = {e.label: ExerciseResult(e.label, 1.0, 0.0, "not run") for e in exercises}
    report = GradeReport(str(submission), str(chapter), list(results.values()), message)
    if nb is None:
        for r in results.values():
            r.message = "no valid notebook"
        return report

    if submission.suffix == ".md":  # a chapter source: tag it like a release would
        own, _ = analyse(nb)
        tag(nb, own, str(chapter))
    checks = {e.label: e.check_source for e in exercises}
    found = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            meta = cell.metadata.get(METADATA_KEY, {})
            if meta.get("role") == "check" and meta.get("exercise") in checks:
                cell.source = checks[meta["exercise"]]
                found.add(meta["exercise"])
    for label in set(checks) - found:
        results[label].status = "missing"
        results[label].message = "its check cell is missing from the submission"

    with tempfile.TemporaryDirectory(prefix="conserved-grade-") as tmp:
        todo, done = Path(tmp, "submission.ipynb"), Path(tmp, "executed.ipynb")
        nbformat.write(nb, todo)
        env = {k: v for k, v in os.environ.items() if k not in ("CONSERVED_QUICK", "MPLBACKEND")}
        env["CONSERVED_MODE"] = mode
        command = [sys.executable, "-m", "conserved.assignments", "_execute", str(todo), str(done)]
        command += ["--cell-timeout", str(cell_timeout)]
        try:
            proc = subprocess.run(
                command, cwd=tmp, env=env, capture_output=True, text=True, timeout=total_timeout
            )
            run_note = proc.stderr.strip().split("\n")[-1] if proc.returncode else ""
        except subprocess.TimeoutExpired:
            run_note = (
                f"the notebook did not finish within the total time limit of {total_timeout} s"
            )
        executed = nbformat.read(done, as_version=4) if done.exists() else nb
    stop_reason = executed.metadata.get(METADATA_KEY, {}).get("stopped", "") or run_note

    for index, cell in enumerate(executed.cells):
        if cell.cell_type != "code":
            continue
        error = _error_summary(cell)
        if error:
            report.cell_errors.append(f"cell {index}: {error}")
        meta = cell.metadata.get(METADATA_KEY, {})
        label = meta.get("exercise")
        if meta.get("role") != "check" or label not in results:
            continue
        result = results[label]
        if cell.get("execution_count") is None and error is None:
            result.status, result.message = "not run", stop_reason or "the cell was not reached"
        elif error:
            result.status, result.message = "failed", error
        else:
            result.status, result.score, result.message = "passed", result.points, ""
    if stop_reason:
        report.message = (report.message + " " + stop_reason).strip()
    report.seconds = time.perf_counter() - start
    return report


def _execute(todo: Path, done: Path, cell_timeout: int) -> int:
    """Child process: run a notebook, keep going after errors, always write what ran."""
    import nbclient
    from nbclient.exceptions import DeadKernelError

    nb = nbformat.read(todo, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=cell_timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        resources={"metadata": {"path": str(todo.parent)}},
    )
    try:
        client.execute()
    except DeadKernelError:
        nb.metadata.setdefault(METADATA_KEY, {})["stopped"] = (
            "the kernel died (the notebook crashed the Python process); later cells did not run"
        )
    except Exception as exc:  # noqa: BLE001 - recorded for the report, never a traceback
        nb.metadata.setdefault(METADATA_KEY, {})["stopped"] = (
            f"execution stopped: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"
        )
    finally:
        nbformat.write(nb, done)
    return 0


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="conserved-assignments", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="write the student edition of a chapter")
    rel.add_argument("chapter")
    rel.add_argument("--out", required=True, help="folder for the student notebook")
    rel.add_argument("--md", action="store_true", help="also write a MyST .md version")
    rel.add_argument("--force", action="store_true", help="overwrite existing files")
    gr = sub.add_parser("grade", help="grade a submitted notebook")
    gr.add_argument("submission")
    gr.add_argument("--source", help="the chapter (default: read from the notebook's metadata)")
    gr.add_argument("--json", action="store_true", help="print a JSON report")
    gr.add_argument("--cell-timeout", type=int, default=300)
    gr.add_argument("--total-timeout", type=int, default=1800)
    gr.add_argument("--mode", default="quick", choices=["quick", "full"])
    ex = sub.add_parser("_execute", help=argparse.SUPPRESS)
    ex.add_argument("todo", type=Path)
    ex.add_argument("done", type=Path)
    ex.add_argument("--cell-timeout", type=int, default=300)
    args = parser.parse_args(argv)

    if args.command == "_execute":
        return _execute(args.todo, args.done, args.cell_timeout)
    if args.command == "release":
        try:
            result = release(args.chapter, args.out, markdown=args.md, force=args.force)
        except AssignmentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {', '.join(str(p) for p in result.written)}")
        for ex in result.exercises:
            print(
                f"  {ex.label}: {len(ex.solution_cells)} solution cell(s), "
                f"{len(ex.solution_lines)} solution line(s) stubbed, "
                f"{len(ex.hidden_lines)} hidden test line(s) removed, "
                f"{ex.text_lines_removed} line(s) of solution text removed"
            )
        return 0
    report = grade(
        args.submission,
        source=args.source,
        cell_timeout=args.cell_timeout,
        total_timeout=args.total_timeout,
        mode=args.mode,
    )
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    return 0 if report.source is not None else 2


if __name__ == "__main__":
    sys.exit(main())
