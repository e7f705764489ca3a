"""Every chapter in _toc.yml runs in quick mode, and works as a course assignment.

Each chapter is executed top to bottom by the autograder (`conserved.assignments.grade`): a
fresh kernel, CONSERVED_MODE=quick, the chapter's own checks. The instructor version must run
without a single failing cell and score full marks; its student edition must contain no
solution text and score zero. Time budgets are not tested (a busy machine must not fail a
correct book): `make bench` (tools/bench.py) reports each chapter's time against its budget.
"""

import re

import nbformat
import pytest
import yaml

from conftest import ROOT
from conserved import assignments


def toc_chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []
    for part in toc.get("parts", []):
        for entry in part.get("chapters", []):
            if entry["file"].startswith("chapters/"):
                files.append(entry["file"])
    return files


def test_toc_lists_existing_chapters_each_with_exercises():
    chapters = toc_chapters()
    assert chapters, "_toc.yml lists no chapter"
    for chapter in chapters:
        path = ROOT / f"{chapter}.md"
        assert path.is_file(), f"_toc.yml lists {chapter} but {chapter}.md is missing"
        exercises, _ = assignments.analyse(assignments.read_chapter(path))
        wanted = 1 if chapter.endswith("00_jax_primer") else 3
        assert len(exercises) >= wanted, f"{chapter} has {len(exercises)} exercises, needs {wanted}"


@pytest.mark.notebook
@pytest.mark.parametrize("chapter", toc_chapters())
def test_chapter_runs_in_quick_mode_and_scores_full_marks(chapter):
    report = assignments.grade(
        ROOT / f"{chapter}.md", mode="quick", cell_timeout=600, total_timeout=1200
    )
    print(f"{chapter}: {report.seconds:.1f} s in quick mode, {report.total:g}/{report.maximum:g}")
    assert not report.cell_errors, "\n".join(report.cell_errors)
    assert report.total == report.maximum > 0, report.table()


def _meaningful(line: str) -> bool:
    line = line.strip()
    return len(line) >= 8 and re.search(r"[A-Za-z]", line) is not None and not line.startswith("#")


@pytest.mark.notebook
@pytest.mark.parametrize("chapter", toc_chapters())
def test_student_edition_has_no_solution_and_scores_zero(chapter, tmp_path):
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
    student_lines = {line.strip() for cell in nb.cells for line in cell.source.split("\n")}
    for exercise in result.exercises:
        for line in exercise.solution_lines + exercise.hidden_lines:
            if _meaningful(line):
                assert line.strip() not in student_lines, (
                    f"{exercise.label}: {line.strip()!r} leaked"
                )
    report = assignments.grade(
        result.written[0], source=source, cell_timeout=600, total_timeout=1200
    )
    assert report.maximum == len(result.exercises) and report.total == 0, report.table()
    assert all(e.status == "failed" for e in report.exercises), report.table()
