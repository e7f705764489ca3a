"""Course use: student editions and autograding (synthetic chapters: fast and exact)."""

import hashlib
import json
from pathlib import Path

import nbformat
import pytest

from conserved import assignments

CHAPTER = """---
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
:class: dropdown
```

Doubling is multiplying by two, explained at length.

```{code-cell} ipython3
prelude = "kept"
# BEGIN SOLUTION
y = 2 * x
# END SOLUTION
```

```{solution-end}
```

```{code-cell} ipython3
assert y == 2
```

```{code-cell} ipython3
:tags: [remove-cell]
# BEGIN HIDDEN TESTS
assert isinstance(y, int), "y must be an int"
# END HIDDEN TESTS
```

```{exercise}
:label: ex-three
Set `z` to three.
```

```{solution-start} ex-three
:class: dropdown
```

```{code-cell} ipython3
# BEGIN SOLUTION
z = 3
# END SOLUTION
```

```{solution-end}
```

```{code-cell} ipython3
assert z == 3
```
"""


@pytest.fixture
def chapter(tmp_path) -> Path:
    folder = tmp_path / "chapters"
    folder.mkdir()
    path = folder / "99_tiny.md"
    path.write_text(CHAPTER)
    return path


def _student(chapter, tmp_path):
    return assignments.release(chapter, tmp_path / "handout").written[0]


def _with_answers(path, answers: dict[str, str]) -> Path:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("conserved", {})
        if meta.get("role") == "solution" and meta["exercise"] in answers:
            cell.source = answers[meta["exercise"]]
    out = path.with_name(f"answered_{len(answers)}_{abs(hash(tuple(answers.values())))}.ipynb")
    nbformat.write(nb, out)
    return out


def test_analyse_finds_exercises_solutions_and_checks(chapter):
    exercises, _ = assignments.analyse(assignments.read_chapter(chapter))
    assert [e.label for e in exercises] == ["ex-double", "ex-three"]
    assert exercises[0].solution_lines == ["y = 2 * x"]
    assert exercises[0].hidden_lines == ['assert isinstance(y, int), "y must be an int"']
    assert "assert y == 2" in exercises[0].check_source


def test_release_strips_solutions_hidden_tests_and_text(chapter, tmp_path):
    result = assignments.release(chapter, tmp_path / "handout", markdown=True)
    ipynb, md = result.written
    text = ipynb.read_text()
    for forbidden in (
        "BEGIN SOLUTION",
        "END SOLUTION",
        "HIDDEN",
        "y = 2 * x",
        "z = 3",
        "isinstance",
        "explained at length",
        "solution-start",
        "solution-end",
    ):
        assert forbidden not in text, forbidden
        assert forbidden not in md.read_text(), forbidden
    nb = nbformat.read(ipynb, as_version=4)
    sources = [c.source for c in nb.cells]
    assert any("raise NotImplementedError" in s and 'prelude = "kept"' in s for s in sources)
    assert "assert y == 2" in "\n".join(sources)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["conserved"]["edition"] == "student"
    assert [e.label for e in result.exercises] == ["ex-double", "ex-three"]


def test_release_refuses_chapters_folder_and_overwrites(chapter, tmp_path):
    with pytest.raises(assignments.AssignmentError, match="refusing"):
        assignments.release(chapter, chapter.parent)
    with pytest.raises(assignments.AssignmentError, match="refusing"):
        assignments.release(chapter, chapter.parent / "sub")
    assignments.release(chapter, tmp_path / "out")
    with pytest.raises(assignments.AssignmentError, match="--force"):
        assignments.release(chapter, tmp_path / "out")
    assignments.release(chapter, tmp_path / "out", force=True)


def test_malformed_chapters_are_rejected(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text(CHAPTER.replace("# END SOLUTION\n", "", 1))
    with pytest.raises(assignments.AssignmentError, match="without"):
        assignments.analyse(assignments.read_chapter(bad))
    no_check = tmp_path / "no_check.md"
    no_check.write_text(CHAPTER.rsplit("```{code-cell} ipython3\nassert z == 3", 1)[0])
    with pytest.raises(assignments.AssignmentError, match="no check cell"):
        assignments.analyse(assignments.read_chapter(no_check))


def test_grading_instructor_student_and_partial(chapter, tmp_path):
    full = assignments.grade(chapter, source=chapter, cell_timeout=60)
    assert (full.total, full.maximum) == (2, 2), full.table()
    student = _student(chapter, tmp_path)
    digest = hashlib.sha256(student.read_bytes()).hexdigest()
    zero = assignments.grade(student, source=chapter, cell_timeout=60)
    assert zero.total == 0 and zero.maximum == 2
    assert all(
        "NameError" in e.message or "NotImplementedError" in e.message for e in zero.exercises
    )
    assert hashlib.sha256(student.read_bytes()).hexdigest() == digest  # never modified
    partial = assignments.grade(_with_answers(student, {"ex-three": "z = 3"}), source=chapter)
    assert [e.score for e in partial.exercises] == [0, 1]


def test_hidden_tests_and_tampered_checks_use_the_instructor_version(chapter, tmp_path):
    student = _student(chapter, tmp_path)
    nb = nbformat.read(student, as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("conserved", {})
        if meta.get("role") == "check":
            cell.source = "pass  # the student deleted the check"
        elif meta.get("role") == "solution" and meta["exercise"] == "ex-double":
            cell.source = "y = 2.0  # right value, wrong type"
    tampered = tmp_path / "tampered.ipynb"
    nbformat.write(nb, tampered)
    report = assignments.grade(tampered, source=chapter)
    first = report.exercises[0]
    assert first.score == 0 and "must be an int" in first.message


def test_endless_loop_is_cut_by_the_cell_time_limit(chapter, tmp_path):
    student = _student(chapter, tmp_path)
    looping = _with_answers(student, {"ex-double": "while True:\n    pass", "ex-three": "z = 3"})
    report = assignments.grade(looping, source=chapter, cell_timeout=3)
    assert [e.score for e in report.exercises] == [0, 1], report.table()


def test_crash_and_total_time_limit_give_zero_with_a_message(chapter, tmp_path):
    student = _student(chapter, tmp_path)
    crashing = _with_answers(student, {"ex-double": "import os\nos._exit(1)", "ex-three": "z = 3"})
    report = assignments.grade(crashing, source=chapter, cell_timeout=30)
    assert report.total == 0
    assert "kernel died" in report.message
    sleeping = _with_answers(student, {"ex-double": "import time\ntime.sleep(60)"})
    report = assignments.grade(sleeping, source=chapter, cell_timeout=120, total_timeout=8)
    assert report.total == 0 and "total time limit" in report.message


def test_invalid_submissions(chapter, tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ this is not json")
    report = assignments.grade(broken, source=chapter)
    assert report.total == 0 and report.maximum == 2 and "not a valid notebook" in report.message
    orphan = assignments.grade(broken)
    assert orphan.source is None and "--source" in orphan.message
    missing = assignments.grade(tmp_path / "nope.ipynb", source=chapter)
    assert missing.total == 0 and "does not exist" in missing.message


def test_command_line(chapter, tmp_path, capsys):
    assert assignments.main(["release", str(chapter), "--out", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "ex-double: 1 solution cell(s), 1 solution line(s) stubbed, 1 hidden test line(s)" in out
    assert assignments.main(["release", str(chapter), "--out", str(tmp_path / "h")]) == 2
    assert "--force" in capsys.readouterr().err
    student = tmp_path / "h" / "99_tiny.ipynb"
    assert assignments.main(["grade", str(student), "--source", str(chapter), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 0 and report["max"] == 2
    assert {e["label"] for e in report["exercises"]} == {"ex-double", "ex-three"}
