"""Every chapter in _toc.yml runs in quick mode, and works as a course assignment.

Each chapter is executed once, top to bottom, by the autograder (`conserved.assignments.grade`):
a fresh kernel, CONSERVED_MODE=quick, the chapter's own checks. The instructor version must run
without a single failing cell and score full marks. Time budgets are not tested (a busy machine
must not fail a correct book): `make bench` (tools/bench.py) reports each chapter's time against
its budget.

The student edition must contain no solution text and score zero. Its zero is checked in the
same run, exercise by exercise: just before an exercise's solution cells, a probe cell runs the
student edition's cells of that exercise (the solution regions stubbed out exactly as `release`
stubs them) and then the instructor's check (hidden tests included), in a copy of the kernel's
namespace, and fails if the check passes. That is the student edition's situation for that
exercise, with everything before it as the chapter computes it: a check that passes without its
own solution would give a student marks for nothing, and it is caught here even when an earlier
unsolved exercise would hide it in a whole student run. (The whole release -> grade -> zero path
is tested on a small chapter in tests/test_assignments.py.) Executing the student edition as a
second full run would cost another execution of every chapter's training for no more evidence.

The graded run is also the quick book's execution: the grader records the outputs its kernel
displays, and a chapter that ran clean with full marks is staged into the quick book's execution
cache (tools/editions.py `stage_executed`), so tests/test_book.py builds the book without
executing any chapter again. One graded run per chapter per session is shared by every xdist
worker (the `graded` fixture of conftest.py: a file lock, then a pickled report).
"""

import collections
import fcntl
import json
import pickle
import re
import tempfile
from pathlib import Path

import editions
import nbformat
import pytest
import yaml

from conftest import ROOT
from conserved import assignments

PROBE_MARK = "student edition probe"

# A probe cell: the student's cells of one exercise, then the instructor's check, in a copy of
# the namespace (the real one is left as it was); it raises when the check passes.
PROBE = """\
# {mark}: the check of {label!r} must fail with its solution stubbed out
def __student_probe(label, stubs, check):
    import matplotlib.pyplot as plt
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    namespace, figures = dict(globals()), set(plt.get_fignums())
    try:
        for stub in stubs:
            try:
                exec(compile(transform(stub), "<student cell>", "exec"), namespace)
            except Exception:
                pass  # the stub raises NotImplementedError, as it does for the student
        try:
            exec(compile(transform(check), "<instructor check>", "exec"), namespace)
        except Exception as exc:
            print(f"{mark} {{label}}: the check fails ({{type(exc).__name__}})")
            return
    finally:
        for number in set(plt.get_fignums()) - figures:
            plt.close(number)
    raise AssertionError(
        f"{mark}: the check of {{label}} passes with its solution stubbed out"
    )


__student_probe({label!r}, json.loads({stubs!r}), json.loads({check!r}))
del __student_probe
"""


def toc_chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []
    for part in toc.get("parts", []):
        for entry in part.get("chapters", []):
            if entry["file"].startswith("chapters/"):
                files.append(entry["file"])
    return files


def with_student_probes(source: Path) -> nbformat.NotebookNode:
    """The chapter as the instructor's notebook (tagged as `release` tags it), with a probe
    cell before the first solution cell of each exercise."""
    nb = assignments.read_chapter(source)
    exercises, _ = assignments.analyse(nb)
    assignments.tag(nb, exercises, str(source))
    student, _ = assignments.student_edition(source)
    stubs: dict[str, list[str]] = {e.label: [] for e in exercises}
    for cell in student.cells:
        meta = cell.metadata.get(assignments.METADATA_KEY, {})
        if cell.cell_type == "code" and meta.get("role") == "solution":
            stubs[meta["exercise"]].append(cell.source)
    probes = {}
    for exercise in exercises:
        assert stubs[exercise.label], f"{exercise.label}: the student edition has no stub"
        assert exercise.solution_cells, f"{exercise.label}: no solution cell"
        source_code = PROBE.format(
            mark=PROBE_MARK,
            label=exercise.label,
            stubs=json.dumps(stubs[exercise.label]),
            check=json.dumps(exercise.check_source),
        )
        probes[min(exercise.solution_cells)] = nbformat.v4.new_code_cell(
            "import json\n" + source_code
        )
    cells = []
    for index, cell in enumerate(nb.cells):
        if index in probes:
            cells.append(probes[index])
        cells.append(cell)
    nb.cells = cells
    return nb


class GradedRuns:
    """One graded run of each chapter (with its student probes) per test session, shared by
    every xdist worker through `folder`: the first worker to ask grades the chapter under a file
    lock, stages it into the quick book's cache and pickles the report; a worker that asks
    meanwhile waits for the lock, then reads the report."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._reports: dict[str, assignments.GradeReport] = {}

    def __call__(self, chapter: str) -> assignments.GradeReport:
        if chapter not in self._reports:
            name = Path(chapter).name
            result = self.folder / f"{name}.report.pickle"
            with open(self.folder / f"{name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not result.exists():
                    result.write_bytes(pickle.dumps(grade_and_stage(ROOT / f"{chapter}.md")))
            self._reports[chapter] = pickle.loads(result.read_bytes())
        return self._reports[chapter]


def grade_and_stage(source: Path) -> assignments.GradeReport:
    """Grade the chapter with its probes; when it ran clean with full marks, stage the recorded
    outputs (probe cells removed) as the quick book's execution of the chapter."""
    with tempfile.TemporaryDirectory(prefix="conserved-recorded-") as tmp:
        recorded = Path(tmp) / f"{source.stem}.ipynb"
        report = grade_with_probes(source, record=recorded)
        errors, _ = _split(report)
        if not errors and report.total == report.maximum > 0 and recorded.exists():
            nb = nbformat.read(recorded, as_version=4)
            nb.cells = [c for c in nb.cells if not _is_probe(c)]
            editions.stage_executed(ROOT, source, nb, {"CONSERVED_QUICK": "1"}, report.seconds)
    return report


def _is_probe(cell) -> bool:
    return cell.cell_type == "code" and PROBE_MARK in cell.source


def grade_with_probes(source: Path, record: Path | None = None) -> assignments.GradeReport:
    with tempfile.TemporaryDirectory(prefix="conserved-probed-") as tmp:
        submission = Path(tmp) / f"{source.stem}.ipynb"
        nbformat.write(with_student_probes(source), submission)
        return assignments.grade(
            submission,
            source=source,
            mode="quick",
            cell_timeout=600,
            total_timeout=1800,
            record=record,
        )


def test_toc_lists_existing_chapters_each_with_exercises():
    chapters = toc_chapters()
    assert chapters, "_toc.yml lists no chapter"
    for chapter in chapters:
        path = ROOT / f"{chapter}.md"
        assert path.is_file(), f"_toc.yml lists {chapter} but {chapter}.md is missing"
        exercises, _ = assignments.analyse(assignments.read_chapter(path))
        wanted = 1 if chapter.endswith("00_jax_primer") else 3
        assert len(exercises) >= wanted, f"{chapter} has {len(exercises)} exercises, needs {wanted}"


def test_probe_cells_sit_before_each_solution_and_parse():
    chapter = ROOT / f"{toc_chapters()[0]}.md"
    nb = with_student_probes(chapter)
    exercises, _ = assignments.analyse(assignments.read_chapter(chapter))
    probes = [c for c in nb.cells if _is_probe(c)]
    assert len(probes) == len(exercises)
    for probe in probes:
        compile(probe.source, "<probe>", "exec")
    first = {}
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get(assignments.METADATA_KEY, {})
        if meta.get("role") == "solution":
            first.setdefault(meta["exercise"], index)
    assert sorted(first) == sorted(e.label for e in exercises)
    for label, index in first.items():
        assert PROBE_MARK in nb.cells[index - 1].source and label in nb.cells[index - 1].source


def test_probe_fails_a_check_that_passes_without_its_solution():
    """The probe itself can fail: in a namespace where the check's names already hold right
    values (as when a check does not depend on its exercise), it raises."""
    source = PROBE.format(
        mark=PROBE_MARK,
        label="ex-weak",
        stubs=json.dumps(["# YOUR CODE HERE\nraise NotImplementedError"]),
        check=json.dumps("assert answer == 42"),
    )
    namespace = {"answer": 42}
    with pytest.raises(AssertionError, match="passes with its solution stubbed out"):
        exec(compile("import json\n" + source, "<probe>", "exec"), namespace)
    namespace = {"answer": 41}
    exec(compile("import json\n" + source, "<probe>", "exec"), namespace)


TINY = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A tiny chapter

```{code-cell} ipython3
x = 1
```

```{exercise}
:label: ex-double
Set `y` to twice `x`.
```

```{solution-start} ex-double
```

```{code-cell} ipython3
# BEGIN SOLUTION
y = 2 * x
# END SOLUTION
```

```{solution-end}
```

```{code-cell} ipython3
assert y == 2
```

```{exercise}
:label: ex-weak
Set `z` to three.
```

```{solution-start} ex-weak
```

```{code-cell} ipython3
# BEGIN SOLUTION
z = 3
# END SOLUTION
```

```{solution-end}
```

```{code-cell} ipython3
assert x == 1  # does not look at z: a student gets this mark for nothing
```
"""


def test_probes_in_a_graded_run_catch_a_check_that_ignores_its_exercise(tmp_path):
    folder = tmp_path / "chapters"
    folder.mkdir()
    chapter = folder / "99_tiny.md"
    chapter.write_text(TINY)
    report = grade_with_probes(chapter)
    errors, probes = _split(report)
    assert not errors, errors
    assert report.total == report.maximum == 2, report.table()
    assert len(probes) == 1 and "ex-weak" in probes[0], probes


def _split(report: assignments.GradeReport) -> tuple[list[str], list[str]]:
    probes = [e for e in report.cell_errors if PROBE_MARK in e]
    return [e for e in report.cell_errors if PROBE_MARK not in e], probes


def _meaningful(line: str) -> bool:
    line = line.strip()
    return len(line) >= 8 and re.search(r"[A-Za-z]", line) is not None and not line.startswith("#")


class _Chapter:
    """The two tests of one chapter. One class per chapter (below), so that under
    `pytest -n N --dist loadscope` (make test) both run on one worker and share one run, while
    different chapters run in parallel."""

    chapter: str

    @pytest.mark.notebook
    def test_runs_in_quick_mode_and_scores_full_marks(self, graded):
        report = graded(self.chapter)
        print(
            f"{self.chapter}: {report.seconds:.1f} s in quick mode, "
            f"{report.total:g}/{report.maximum:g}"
        )
        errors, _ = _split(report)
        assert not errors, "\n".join(errors)
        assert report.total == report.maximum > 0, report.table()

    @pytest.mark.notebook
    def test_student_edition_has_no_solution_and_scores_zero(self, tmp_path, graded):
        chapter = self.chapter
        source = ROOT / f"{chapter}.md"
        result = assignments.release(source, tmp_path / "handout")
        raw = result.written[0].read_text()
        for marker in (
            "BEGIN SOLUTION",
            "END SOLUTION",
            "BEGIN HIDDEN",
            "END HIDDEN",
            "solution-start",
        ):
            assert marker not in raw, marker
        nb = nbformat.read(result.written[0], as_version=4)
        student = collections.Counter(
            line.strip() for cell in nb.cells for line in cell.source.split("\n")
        )
        # a solution line may also occur in the chapter's own code (`assert (`, a call opened
        # on one line): it leaks only if the handout holds it more often than the source does
        # outside its solution and hidden regions
        secret = collections.Counter(
            line.strip()
            for exercise in result.exercises
            for line in exercise.solution_lines + exercise.hidden_lines
        )
        outside = collections.Counter(line.strip() for line in source.read_text().split("\n"))
        outside.subtract(secret)
        for exercise in result.exercises:
            for line in exercise.solution_lines + exercise.hidden_lines:
                if _meaningful(line):
                    assert student[line.strip()] <= max(outside[line.strip()], 0), (
                        f"{exercise.label}: {line.strip()!r} leaked"
                    )
        # every probe ran (the run reached every check) and none found a check passing unsolved
        report = graded(chapter)
        _, probe_errors = _split(report)
        assert not probe_errors, "\n".join(probe_errors)
        assert all(e.status == "passed" for e in report.exercises), report.table()


for _chapter in toc_chapters():
    _name = "TestChapter" + "".join(w.title() for w in Path(_chapter).name.split("_"))
    globals()[_name] = type(_name, (_Chapter,), {"chapter": _chapter})
