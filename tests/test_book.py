"""The whole book builds in quick mode with Sphinx warnings as errors, and reads offline."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_notebooks import toc_chapters

from conftest import ROOT


@pytest.fixture(scope="module")
def quick_book(graded) -> Path:
    """The book in quick mode, built where `make quick-book` puts it (_build/quick), so that
    `make check-html HTML_DIR=_build/quick/_build/html` (as .ci/run does) reuses this build.

    Every chapter is graded first (tests/test_notebooks.py: once per session, on whichever
    worker asks first), which stages its run into the quick book's execution cache: the build
    shows the graded run's outputs and executes no chapter itself."""
    for chapter in toc_chapters():
        graded(chapter)
    out = ROOT / "_build" / "quick"
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "CONSERVED_MODE")}
    env["CONSERVED_QUICK"] = "1"
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [
            str(jupyter_book),
            "build",
            str(ROOT),
            "--all",
            "-W",
            "--keep-going",
            "--path-output",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    (out / "build.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    BUILD_LOG.append(proc.stdout)
    return out / "_build" / "html"


BUILD_LOG: list[str] = []


@pytest.mark.book
def test_book_executes_through_the_execution_cache_of_its_mode(quick_book):
    """The same mechanism as `make book` (tools/editions.py): the cache folder is keyed by the
    library, the lock file and the mode, so a second build reuses what is still valid."""
    import editions

    inputs = editions.configured_cache_inputs(ROOT)
    assert inputs == ["lib/conserved", "requirements.lock"]
    expected = editions.cache_path(ROOT, inputs, {"CONSERVED_QUICK": "1"})
    assert expected.name.startswith("quick-")
    assert f"Using jupyter-cache at: {expected}" in BUILD_LOG[-1]
    assert (expected / "global.db").is_file()


@pytest.mark.book
def test_book_shows_the_graded_runs_and_executes_no_chapter(quick_book):
    """Each chapter executes once per `make test`: the book takes its graded run from the cache
    (staged by tests/test_notebooks.py). A library file edited while the suite runs changes the
    cache's key, and the build then executes the chapters itself: this test says so."""
    log = BUILD_LOG[-1]
    for chapter in toc_chapters():
        assert f"{chapter}.md: Using cached notebook" in log, (
            f"the book build executed {chapter} again instead of showing its graded run"
        )
        assert f"{chapter}.md: Executing notebook" not in log, chapter


@pytest.mark.book
def test_book_builds_with_every_toc_page(quick_book):
    assert (quick_book / "index.html").is_file()
    for chapter in toc_chapters():
        assert (quick_book / f"{chapter}.html").is_file(), chapter
    assert (quick_book / "book" / "reproducing.html").is_file()


@pytest.mark.book
def test_book_serves_mathjax_locally(quick_book):
    page = (quick_book / "chapters" / "00_jax_primer.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    assert any("_static/mathjax/tex-chtml.js" in s for s in scripts), scripts
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts
    assert (quick_book / "_static" / "mathjax" / "tex-chtml.js").is_file()


@pytest.mark.book
def test_primer_shows_its_executed_outputs(quick_book):
    page = (quick_book / "chapters" / "00_jax_primer.html").read_text()
    figures = re.findall(r'<img[^>]*src="(\.\./_images/[^"]+\.png)"', page)
    assert len(figures) >= 2, figures
    for figure in figures:
        assert (quick_book / "chapters" / figure).resolve().stat().st_size > 1000
    text = re.sub(r"<[^>]+>", "", page)
    assert re.search(r"reaches a test error of\s+\d\.\de-0\d", text), (
        "the glued test error is missing"
    )
    assert "mode: quick" in text


@pytest.mark.book
def test_results_page_lists_every_claim_with_a_computed_verdict(quick_book):
    """book/results.md: at least 20 claims, each cited, each with one glued verdict; in the
    built page every verdict cell holds one of the four verdicts (a glue key that did not
    resolve would fail the `-W` build before this) and the page names the build's mode."""
    from conserved.diagnostics import VERDICTS

    source = (ROOT / "book" / "results.md").read_text()
    rows = [
        line
        for line in source.splitlines()
        if line.startswith("| ") and not line.startswith("| claim")
    ]
    assert len(rows) >= 20, len(rows)
    for row in rows:
        assert row.count("_verdict_") == 1, row
        assert "{cite}" in row, row
    # a claim the book does not measure has no number; at least 20 have glued ones
    measured = [row for row in rows if "{glue:text}`/chapters/" in row.split("_verdict_")[0]]
    assert len(measured) >= 20, len(measured)
    page = (quick_book / "book" / "results.html").read_text()
    verdicts = []
    for body in re.findall(r"<tbody>(.*?)</tbody>", page, flags=re.S):
        for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S):
            cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)
            assert len(cells) == 6, tr
            verdicts.append(re.sub(r"<[^>]+>", "", cells[4]).strip())
    assert len(verdicts) == len(rows)
    assert set(verdicts) <= set(VERDICTS), set(verdicts) - set(VERDICTS)
    assert "quick\nmode" in re.sub(r"<[^>]+>", "", page) or "quick mode" in page
