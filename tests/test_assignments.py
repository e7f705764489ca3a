"""Course use: student editions and autograding (synthetic chapters: fast and exact)."""

import csv
import hashlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
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

```{exercise}
:label: ex-func
Write `double(v)`.
```

```{solution-start} ex-func
```

```{code-cell} ipython3
# BEGIN SOLUTION
def double(v):
    return 2 * v
# END SOLUTION
```

```{solution-end}
```

```{code-cell} ipython3
import numpy as np
from conserved import diagnostics
unseen = np.linspace(-3.0, 5.0, 11) ** 3
assert np.allclose(double(unseen), 2 * unseen), "double(v) must be 2 v"
assert float(diagnostics.relative_error(double(unseen), 2 * unseen)) < 1e-12
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
    assert [e.label for e in exercises] == ["ex-double", "ex-three", "ex-func"]
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
    assert [e.label for e in result.exercises] == ["ex-double", "ex-three", "ex-func"]


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
    assert (full.total, full.maximum) == (3, 3), full.table()
    student = _student(chapter, tmp_path)
    digest = hashlib.sha256(student.read_bytes()).hexdigest()
    zero = assignments.grade(student, source=chapter, cell_timeout=60)
    assert zero.total == 0 and zero.maximum == 3
    assert all(
        "NameError" in e.message or "NotImplementedError" in e.message for e in zero.exercises
    )
    assert hashlib.sha256(student.read_bytes()).hexdigest() == digest  # never modified
    partial = assignments.grade(_with_answers(student, {"ex-three": "z = 3"}), source=chapter)
    assert [e.score for e in partial.exercises] == [0, 1, 0]


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
    assert [e.score for e in report.exercises] == [0, 1, 0], report.table()


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
    assert report.total == 0 and report.maximum == 3 and "not a valid notebook" in report.message
    orphan = assignments.grade(broken)  # no chapter of the repository is named "broken"
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
    assert report["total"] == 0 and report["max"] == 3
    assert {e["label"] for e in report["exercises"]} == {"ex-double", "ex-three", "ex-func"}


# ------------------------------------------------------------------------------------------
# Hidden tests hidden everywhere; the sandbox's fallback; a gradebook
# ------------------------------------------------------------------------------------------


def test_hidden_tests_need_a_remove_cell_tag_and_leave_the_student_edition(chapter, tmp_path):
    exercises, _ = assignments.analyse(assignments.read_chapter(chapter))
    assert exercises[0].hidden_cell is not None and "isinstance" in exercises[0].check_source
    nb = nbformat.read(_student(chapter, tmp_path), as_version=4)
    assert not any("HIDDEN" in c.source for c in nb.cells)
    untagged = tmp_path / "untagged.md"
    untagged.write_text(CHAPTER.replace(":tags: [remove-cell]\n", ""))
    with pytest.raises(assignments.AssignmentError, match="remove-cell"):
        assignments.analyse(assignments.read_chapter(untagged))
    inline = tmp_path / "inline.md"
    inline.write_text(
        CHAPTER.replace(
            "assert y == 2\n```\n\n```{code-cell} ipython3\n:tags: [remove-cell]\n",
            "assert y == 2\n",
        )
    )
    with pytest.raises(assignments.AssignmentError, match="rendered book"):
        assignments.analyse(assignments.read_chapter(inline))


def test_without_a_sandbox_grading_works_says_so_and_strict_refuses(chapter, tmp_path, monkeypatch):
    bare = assignments.Sandbox(False, False, False, ["network (test)", "read-only (test)"])
    monkeypatch.setattr(assignments, "_SANDBOX", bare)
    refused = assignments.grade(chapter, source=chapter, strict=True)
    assert refused.total == 0 and "--strict" in refused.message
    assert "network (test)" in refused.table()
    report = assignments.grade(chapter, source=chapter, cell_timeout=60)
    assert report.total == report.maximum == 3, report.table()
    assert report.protections_off == ["network (test)", "read-only (test)"]


def test_a_folder_grades_into_a_gradebook(chapter, tmp_path, capsys):
    folder = tmp_path / "submissions"
    folder.mkdir()
    student = _student(chapter, tmp_path)
    honest = _with_answers(
        student,
        {"ex-double": "y = 2", "ex-three": "z = 3", "ex-func": "def double(v):\n    return v + v"},
    )
    honest.rename(folder / "99_tiny_alice.ipynb")
    (folder / "99_tiny_bob.ipynb").write_bytes(student.read_bytes())
    (folder / "99_tiny_carol.ipynb").write_text("{ not json")
    out = tmp_path / "book.csv"
    code = assignments.main(["grade", str(folder), "--source", str(chapter), "--out", str(out)])
    assert code == 0, capsys.readouterr()
    rows = list(csv.DictReader(out.open()))
    assert [(r["submission"], r["total"]) for r in rows] == [
        ("99_tiny_alice.ipynb", "3.0"),
        ("99_tiny_bob.ipynb", "0.0"),
        ("99_tiny_carol.ipynb", "0.0"),
    ]
    assert "not a valid notebook" in rows[2]["message"]
    # a folder of reference chapters, matched by the released file's name
    report = assignments.grade(folder / "99_tiny_alice.ipynb", source=chapter.parent)
    assert report.source == str(chapter) and report.total == 3


# ------------------------------------------------------------------------------------------
# Hostile submissions: each attack scores zero on the attacked exercise, with a message, and
# leaves the machine, the repository and the submission as they were.
# ------------------------------------------------------------------------------------------

HONEST = {"ex-three": "z = 3", "ex-func": "def double(v):\n    return 2 * v"}


@pytest.fixture
def sandboxed():
    """The attacks on the machine need the namespaces; without them (a container that forbids
    unshare) these tests skip and say why, except under CI=true, where they fail."""
    box = assignments.sandbox()
    if not box.namespaces:
        message = "no sandbox on this machine: " + "; ".join(box.off)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _hostile(chapter, tmp_path, attack: str, **extra) -> Path:
    answers = {**HONEST, **extra, "ex-double": attack}
    return _with_answers(_student(chapter, tmp_path), answers)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_attack_forged_metadata_source_is_not_trusted(chapter, tmp_path):
    # the student's own "chapter": solutions kept, every check replaced by `pass`
    forged = tmp_path / "my_key.md"
    text = CHAPTER.replace("assert y == 2", "pass").replace("assert z == 3", "pass")
    forged.write_text(text.replace("y = 2 * x", "y = 0"))
    submission = _student(chapter, tmp_path)
    nb = nbformat.read(submission, as_version=4)
    nb.metadata["conserved"]["source"] = str(forged)
    for cell in nb.cells:
        if cell.metadata.get("conserved", {}).get("role") == "solution":
            cell.source = "y = 0\nz = 0\ndef double(v):\n    return v"
    claimed = tmp_path / "99_tiny.ipynb"
    nbformat.write(nb, claimed)
    alone = assignments.grade(claimed)  # no --source: never the submission's own key
    assert alone.total == 0
    report = assignments.grade(claimed, source=chapter)
    assert report.total == 0 and "claims to belong to" in report.message, report.table()
    # a .md submission is not its own key either
    md = tmp_path / "99_tiny_student.md"
    md.write_text(text.replace("y = 2 * x", "y = 0"))
    assert assignments.grade(md, source=chapter).exercises[0].score == 0


def test_attack_forged_results_file_and_killing_the_parent(chapter, tmp_path):
    attack = (
        "import json, os, signal\n"
        "nb = {'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [\n"
        "  {'cell_type': 'code', 'source': 'pass', 'outputs': [], 'execution_count': 1,\n"
        "   'metadata': {'conserved': {'exercise': e, 'role': 'check'}}}\n"
        "  for e in ('ex-double', 'ex-three', 'ex-func')]}\n"
        "for name in ('executed.ipynb', '../executed.ipynb'):\n"
        "    try:\n"
        "        json.dump(nb, open(name, 'w'))\n"
        "    except OSError:\n"
        "        pass\n"
        "os.kill(os.getppid(), signal.SIGKILL)\n"
    )
    submission = _hostile(chapter, tmp_path, attack)
    report = assignments.grade(submission, source=chapter, cell_timeout=30)
    assert report.exercises[0].score == 0, report.table()
    assert report.total < report.maximum


def test_attack_patching_the_checker_in_the_kernel(chapter, tmp_path):
    patch = (
        "import builtins, numpy as np\n"
        "from conserved import diagnostics\n"
        "np.allclose = lambda *a, **k: True\n"
        "diagnostics.relative_error = lambda *a, **k: 0.0\n"
        "builtins.AssertionError = type('Never', (Exception,), {})\n"
        "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
        "y = 2.0\n"  # wrong type: the hidden test fails
    )
    submission = _hostile(chapter, tmp_path, patch, **{"ex-func": "def double(v):\n    return v"})
    report = assignments.grade(submission, source=chapter, cell_timeout=30)
    scores = {e.label: e.score for e in report.exercises}
    assert scores == {"ex-double": 0, "ex-three": 1, "ex-func": 0}, report.table()
    assert "must be an int" in report.exercises[0].message
    assert "double(v) must be 2 v" in report.exercises[2].message


def test_attack_opening_a_socket(chapter, tmp_path, sandboxed):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.1)
    port = server.getsockname()[1]
    attack = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "s.sendall(b'leak')\n"
        "exec(s.recv(100).decode())\n"
    )
    report = assignments.grade(_hostile(chapter, tmp_path, attack), source=chapter)
    with pytest.raises(socket.timeout):
        server.accept()  # nothing ever connected
    server.close()
    assert [e.score for e in report.exercises] == [0, 1, 1], report.table()
    assert any("Network is unreachable" in e for e in report.cell_errors), report.cell_errors


def test_attack_writing_into_the_repository_the_package_and_the_submission(
    chapter, tmp_path, sandboxed
):
    package = Path(assignments.__file__)
    planted = [ROOT / "chapters" / "_planted.md", package.with_name("_planted.py")]
    submission = _hostile(chapter, tmp_path, "")
    before = {p: _digest(p) for p in (package, chapter, submission)}
    targets = [str(p) for p in planted] + [str(package), str(chapter), str(submission)]
    attack = (
        "import os\n"
        "for path in " + repr(targets) + ":\n"
        "    try:\n"
        "        open(path, 'a').write('\\n# planted')\n"
        "    except OSError as exc:\n"
        "        print(path, exc)\n"
        "open(" + repr(str(package)) + ", 'a')\n"  # fails in the sandbox, so y stays unset
        "y = 2\n"
    )
    nb = nbformat.read(submission, as_version=4)
    for cell in nb.cells:
        if (
            cell.metadata.get("conserved", {}).get("exercise") == "ex-double"
            and cell.metadata["conserved"]["role"] == "solution"
        ):
            cell.source = attack
    nbformat.write(nb, submission)
    before[submission] = _digest(submission)
    try:
        report = assignments.grade(submission, source=chapter)
        assert not any(p.exists() for p in planted)
        assert {p: _digest(p) for p in before} == before
    finally:
        for p in planted:
            p.unlink(missing_ok=True)
    assert report.exercises[0].score == 0, report.table()
    assert any("Read-only file system" in e for e in report.cell_errors), report.cell_errors


def test_attack_allocating_20_gigabytes(chapter, tmp_path):
    attack = "big = bytearray(20 * 2**30)\ny = 2\n"  # refused at once under the memory limit
    report = assignments.grade(_hostile(chapter, tmp_path, attack), source=chapter)
    assert [e.score for e in report.exercises] == [0, 1, 1], report.table()
    assert any("MemoryError" in e for e in report.cell_errors), report.cell_errors


def _sleepers(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_attack_forking_a_thousand_processes(chapter, tmp_path, sandboxed):
    marker = f"{time.time() % 1000:.6f}"
    attack = (
        "import os\n"
        "for i in range(1000):\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "y = 2\n"
    )
    report = assignments.grade(_hostile(chapter, tmp_path, attack), source=chapter, processes=200)
    left = _sleepers(marker)
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} forked processes outlived the grading"
    assert report.exercises[0].score == 0, report.table()
    # refused by RLIMIT_NPROC, or (root, which the limit exempts) the kernel stopped
    assert any(
        "Resource temporarily unavailable" in e or "more than 200 processes" in e
        for e in report.cell_errors
    ), report.cell_errors


def test_attack_printing_a_million_lines(chapter, tmp_path):
    attack = "for i in range(10**6):\n    print(i)\ny = 3\n"
    report = assignments.grade(_hostile(chapter, tmp_path, attack), source=chapter, cell_timeout=90)
    assert len(json.dumps(report.to_json())) < 20000
    assert [e.score for e in report.exercises] == [0, 1, 1], report.table()
