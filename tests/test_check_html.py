"""The browser check of the rendered book (tools/check_html.py) fails on a broken page.

A tiny Jupyter Book with the book's own Sphinx settings (_config.yml: extensions, theme options)
and a page of each kind the book has (maths, a notebook figure, an exercise with a dropdown
solution) is built once; the check must pass on it. Copies of its chapter page are
then broken one way each (an image that does not load, raw `$$` left in the text, a request
to another host, a solution shown open or one that does not open, MathJax missing, a console
error, too few figures, a dead table-of-contents button) and the check must fail on each with
the message that names the fault.

The check drives the system Chromium (Debian's `chromium`; `make browser` installs it). Where
it is missing these tests skip and say why, except under CI (CI=true), where they fail.
"""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import check_html
import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.browser


def _need_browser() -> None:
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem is None and check_html.find_chromium() is None:
        problem = "no Chromium on PATH: run `make browser` (as root) to install Debian's chromium"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the browser check cannot run in CI: {problem}")
        pytest.skip(problem)


def _config() -> str:
    """The tiny book's _config.yml: the book's own `parse` and `sphinx` sections."""
    book = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = dict(book["sphinx"])
    sphinx["local_extensions"] = {
        name: str(ROOT / path) for name, path in sphinx["local_extensions"].items()
    }
    sphinx["config"] = {
        key: value for key, value in sphinx["config"].items() if not key.startswith("bibtex")
    }
    config = {
        "title": "tiny",
        "execute": {"execute_notebooks": "off"},
        "parse": book["parse"],
        "sphinx": sphinx,
    }
    return yaml.safe_dump(config)


TOC = """
format: jb-book
root: intro
chapters:
  - file: chapters/good
"""

INTRO = """# A tiny book

Energy is conserved: $E = \\tfrac12 p^2 + \\tfrac12 q^2$.
"""

CHAPTER_TEXT = [
    "# A chapter\n\nThe flow keeps\n\n$$\n\\frac{d}{dt} H(q, p) = 0 .\n$$\n",
    "\\begin{align}\n\\dot q &= p \\\\\n\\dot p &= -q\n\\end{align}\n",
    None,  # the figure cell
    "TABLE",  # a cell that displays a Markdown table, as `diagnostics.summary_table` does
    "## Exercises\n\n```{exercise}\n:label: ex-one\n\nShow that $H$ is conserved.\n```\n",
    "```{solution} ex-one\n:class: dropdown\n\nDifferentiate $H$ along the flow: "
    "the two terms cancel.\n```\n",
]


def _png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _notebook() -> dict:
    cells = []
    for text in CHAPTER_TEXT:
        if text == "TABLE":
            cells.append(
                {
                    "cell_type": "code",
                    "execution_count": 2,
                    "metadata": {},
                    "source": "Markdown(table)",
                    "outputs": [
                        {
                            "output_type": "execute_result",
                            "execution_count": 2,
                            "metadata": {},
                            "data": {
                                "text/markdown": "| | MSE |\n|---|---|\n| learned | 0.001 |\n",
                                "text/plain": "<IPython.core.display.Markdown object>",
                            },
                        }
                    ],
                }
            )
        elif text is None:
            cells.append(
                {
                    "cell_type": "code",
                    "execution_count": 1,
                    "metadata": {},
                    "source": "plot()",
                    "outputs": [
                        {
                            "output_type": "display_data",
                            "metadata": {},
                            "data": {"image/png": _png(), "text/plain": "<Figure>"},
                        }
                    ],
                }
            )
        else:
            cells.append({"cell_type": "markdown", "metadata": {}, "source": text})
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory) -> Path:
    """The tiny book, built; returns its HTML folder."""
    source = tmp_path_factory.mktemp("tiny")
    (source / "_config.yml").write_text(_config())
    (source / "_toc.yml").write_text(TOC)
    (source / "intro.md").write_text(INTRO)
    (source / "chapters").mkdir()
    (source / "chapters" / "good.ipynb").write_text(json.dumps(_notebook()))
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(jupyter_book), "build", str(source), "--keep-going"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    html = source / "_build" / "html"
    assert proc.returncode == 0 and (html / "chapters" / "good.html").is_file(), (
        f"tiny book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    )
    return html


def _sub(text: str, pattern: str, replacement: str, count: int = 1) -> str:
    new, n = re.subn(pattern, replacement, text, count=count)
    assert n, f"pattern {pattern!r} not found in the tiny book's page"
    return new


# Each broken copy of the chapter page: how to break it.
BREAKS = {
    "unloaded_image": lambda html: _sub(
        html, r'src="(\.\./_images/[^"]+)\.png"', r'src="\1-gone.png"'
    ),
    "raw_maths": lambda html: _sub(
        html, r"(<h2[^>]*>Exercises)", r"<p>Left untypeset: $$ x^2 $$ here.</p>\1"
    ),
    "raw_table": lambda html: _sub(
        html, r"(<h2[^>]*>Exercises)", r"<p>| | MSE | |---|---| | vanilla | 0.01 |</p>\1"
    ),
    "external_request": lambda html: _sub(
        html, r"</head>", '<script src="https://cdn.example.com/lib.js"></script></head>'
    ),
    "open_solution": lambda html: _sub(
        html, r'class="([^"]*\bsolution\b[^"]*?)\s*\bdropdown\b', r'class="\1'
    ),
    "unclickable_solution": lambda html: _sub(
        _sub(html, r'<script src="[^"]*togglebutton\.js[^"]*"></script>', ""),
        r'class="solution dropdown admonition',
        'class="solution dropdown admonition toggle-hidden',
    ),
    "no_mathjax": lambda html: _sub(html, r'<script[^>]*src="[^"]*tex-chtml\.js"></script>', ""),
    "console_error": lambda html: _sub(
        html, r"</body>", "<script>console.error('something broke');</script></body>"
    ),
    "few_figures": lambda html: html,
    # A repository button to a placeholder, outside the text (what _config.yml had before
    # issue 19), and a Colab link in the text to someone else's repository.
    "placeholder_button": lambda html: _sub(
        _sub(
            html,
            r"(<body[^>]*>)",
            r'\1<a class="btn" href="https://github.com/conserved-book/conserved">repo</a>',
        ),
        r"(<h2[^>]*>Exercises)",
        r'<p><a href="https://colab.research.google.com/github/a/b/blob/main/x.ipynb">run</a>'
        r' <a href="https://arxiv.org/abs/2106.00001">a paper</a></p>\1',
    ),
    # A hidden sidebar button ahead of the visible one takes its click handler (what
    # pydata-sphinx-theme's header bar did before _config.yml set navbar_persistent: []).
    "dead_toc_button": lambda html: _sub(
        html,
        r"(<body[^>]*>)",
        r'\1<button class="sidebar-toggle primary-toggle" style="display:none"></button>',
    ),
}


@pytest.fixture(scope="module")
def checked(tiny_book, tmp_path_factory):
    """The check run once over the good pages and every broken copy."""
    _need_browser()
    site = tmp_path_factory.mktemp("site") / "html"
    shutil.copytree(tiny_book, site)
    good = (site / "chapters" / "good.html").read_text()
    for name, breaks in BREAKS.items():
        (site / "chapters" / f"{name}.html").write_text(breaks(good))
    pages = ["intro", "chapters/good", *(f"chapters/{name}" for name in BREAKS)]
    shots = site.parent / "screenshots"
    reports = check_html.check_site(
        site,
        pages,
        screenshots=shots,
        figures_needed=lambda page: 2 if page.endswith("few_figures") else int(page != "intro"),
        exercises_needed=lambda page: 1 if page.startswith("chapters/") else 0,
        navigation={"intro", "chapters/good", "chapters/dead_toc_button"},
        repository="",
    )
    print(check_html.summary(reports))
    return {r.page: r for r in reports}, shots


def _failures(report) -> str:
    return "\n".join(report.failures)


def test_good_pages_pass_and_are_screenshot(checked, tiny_book):
    reports, shots = checked
    for page in ("intro", "chapters/good"):
        assert reports[page].failures == [], _failures(reports[page])
    good = reports["chapters/good"]
    assert good.figures == 1
    assert good.maths >= 3 and good.typeset == good.maths
    assert (good.exercises, good.solutions) == (1, 1)
    # the displayed Markdown table is rendered as a table (`nb_render_markdown_format: myst`)
    page = (tiny_book / "chapters" / "good.html").read_text()
    assert re.search(r"<table[^>]*>.*learned.*0\.001.*</table>", page, re.S)
    shot = shots / "good.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5_000


@pytest.mark.parametrize(
    "page, expected",
    [
        ("unloaded_image", r"image did not load: \.\./_images/.*-gone\.png"),
        ("unloaded_image", r"local resource missing: 404 .*-gone\.png"),
        ("unloaded_image", r"shows 0 figures, its issue asks for at least 1"),
        ("raw_maths", r"raw maths left in the text: .*\$\$ x\^2 \$\$"),
        ("raw_table", r"Markdown table shown as text, not as a table: .*\|---\|"),
        ("external_request", r"request leaves the machine \(blocked\): https://cdn\.example\.com"),
        ("open_solution", r"solution 1 .* is not a dropdown"),
        ("open_solution", r"solution 1 .* is shown when the page opens"),
        ("unclickable_solution", r"solution 1 .* does not open when its title is clicked"),
        ("no_mathjax", r"maths elements not typeset by MathJax"),
        ("no_mathjax", r"raw maths left in the text"),
        ("console_error", r"console error: something broke"),
        ("few_figures", r"shows 1 figures, its issue asks for at least 2"),
        ("dead_toc_button", r"on a phone the sidebar button does not show the table of contents"),
        ("dead_toc_button", r"on a desktop the sidebar button does not hide the table of contents"),
        (
            "placeholder_button",
            r"links to a host the book does not own \(no repository is set\): "
            r"https://github\.com/conserved-book/conserved$",
        ),
        ("placeholder_button", r"does not own .*: https://colab\.research\.google\.com/github/a/b"),
    ],
)
def test_broken_page_fails_with_a_message_naming_the_fault(checked, page, expected):
    reports, _ = checked
    report = reports[f"chapters/{page}"]
    assert any(re.search(expected, failure) for failure in report.failures), (
        f"expected /{expected}/ among:\n{_failures(report)}"
    )


def test_only_the_unclickable_solution_fails_to_open(checked):
    # Every other page's solution passed the collapsed-then-opened-by-a-click check (the one
    # shown open from the start is not clicked).
    reports, _ = checked
    for page, report in reports.items():
        opened = not any("does not open" in failure for failure in report.failures)
        assert opened == (page != "chapters/unclickable_solution"), _failures(report)


def test_command_line_exits_nonzero_and_lists_every_failure(tiny_book, tmp_path):
    _need_browser()
    site = tmp_path / "html"
    shutil.copytree(tiny_book, site)
    page = site / "chapters" / "good.html"
    page.write_text(BREAKS["unloaded_image"](BREAKS["raw_maths"](page.read_text())))
    toc = tmp_path / "_toc.yml"
    toc.write_text(TOC)
    command = [sys.executable, str(ROOT / "tools" / "check_html.py"), str(site)]
    command += ["--toc", str(toc), "--screenshots", str(tmp_path / "shots")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "chapters/good" in proc.stdout and "FAILED" in proc.stdout
    assert "chapters/good: image did not load" in proc.stderr
    assert "chapters/good: raw maths left in the text" in proc.stderr
    # The tiny chapter has one exercise; the book's rule for chapters wants three.
    assert "chapters/good: shows 1 exercises, needs at least 3" in proc.stderr
    assert (tmp_path / "shots" / "good.png").is_file()
    assert proc.stdout.strip().splitlines()[-1] == "check-html: 1 passed, 1 failed"


def test_command_line_says_when_there_is_no_build(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_html.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no built book" in proc.stderr and "make book" in proc.stderr


def test_placeholder_page_fails_only_on_its_two_links(checked):
    reports, _ = checked
    failures = reports["chapters/placeholder_button"].failures
    assert len(failures) == 2 and not any("arxiv" in failure for failure in failures), failures


PAGE = """<html><body><div class="bd-header-article">{header}</div>
<article class="bd-article"><p>See <a href="https://arxiv.org/abs/1">a paper</a>,
<a href="https://docs.jax.dev/">JAX</a>{text}</p><ul><li>open item</article>
<footer>{footer}</footer></body></html>"""


@pytest.mark.parametrize(
    "repository, header, text, footer, expected",
    [
        ("", "", "", "", []),
        ("", '<a href="../_sources/x.ipynb">.ipynb</a><a href="#top">top</a>', "", "", []),
        ("", '<a href="https://github.com/o/r">repo</a>', "", "", ["https://github.com/o/r"]),
        ("", "", "", '<a href="https://sphinx-doc.org/">S</a>', ["https://sphinx-doc.org/"]),
        (
            "",
            "",
            ', <a href="https://mybinder.org/v2/gh/o/r/main?urlpath=tree/x.md">run</a>',
            "",
            ["https://mybinder.org/v2/gh/o/r/main?urlpath=tree/x.md"],
        ),
        (
            "https://github.com/o/r",
            '<a href="https://github.com/o/r">repo</a>'
            '<a href="https://mybinder.org/v2/gh/o/r/main?urlpath=tree/x.md">B</a>'
            '<a href="https://colab.research.google.com/github/o/r/blob/nb/reader/x.ipynb">C</a>',
            "",
            "",
            [],
        ),
        (
            "https://github.com/o/r",
            '<a href="https://github.com/o/other">repo</a>',
            "",
            "",
            ["https://github.com/o/other"],
        ),
    ],
)
def test_foreign_links_outside_the_text(repository, header, text, footer, expected):
    page = PAGE.format(header=header, text=text, footer=footer)
    assert check_html.foreign_links(page, repository) == expected


def test_toc_pages_follow_the_books_toc():
    pages = check_html.toc_pages(ROOT / "_toc.yml")
    assert pages[0] == "book/intro"
    chapters = [page for page in pages if page.startswith("chapters/")]
    assert chapters and chapters == sorted(chapters)
    for page in chapters:
        assert (ROOT / f"{page}.md").is_file(), page


def test_every_chapter_file_has_a_figure_minimum():
    for chapter in sorted((ROOT / "chapters").glob("*.md")):
        assert f"chapters/{chapter.stem}" in check_html.MIN_FIGURES, chapter.name
