"""Every way to read and run the book (issue 19), checked on a tiny two-chapter book with the
real configuration: links only to what the book owns, the notebook editions, the PDF, the
execution cache, the page that records what a build cost, and `make lab`'s setup."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import unicodedata
from pathlib import Path

import check_html
import editions
import nbformat
import pytest
import tinybook
import yaml

from conftest import ROOT

REPO = "https://github.com/someone/tiny"
CHAPTERS = [f"chapters/{name}" for name in tinybook.CHAPTERS]
TITLES = [title for title, _ in tinybook.CHAPTERS.values()]


def _git(folder: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    proc = subprocess.run(
        ["git", "-C", str(folder), *args], env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def _tool(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / name), *args],
        env=tinybook.environment(**env),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The tiny book with figures and the real 'Reproducing this book' page, in a git
    repository, built once (no repository set)."""
    folder = tinybook.make(tmp_path_factory.mktemp("tiny") / "book", reproducing=True)
    _git(folder, "init", "-q", "-b", "main")
    _git(folder, "add", ".")
    _git(folder, "commit", "-q", "-m", "tiny")
    log = folder.parent / "executed.log"
    proc, seconds, executed = tinybook.build(folder, "--all", log=log)
    print(f"tiny book, cold build: {seconds:.1f} s, executed {executed}")
    return {"folder": folder, "html": folder / "_build" / "html", "log": log, "proc": proc}


def _pages(html: Path) -> dict[str, str]:
    return {
        name: (html / f"{name}.html").read_text()
        for name in ["book/intro", *CHAPTERS, "book/reproducing"]
    }


# 1. Links that work, or none ---------------------------------------------------------------


def test_the_book_sets_no_repository_and_links_to_no_placeholder():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == ""
    assert "use_repository_button" not in config.get("html", {})
    texts = [ROOT / "_config.yml", ROOT / "README.md", *sorted((ROOT / "book").glob("*.md"))]
    texts += sorted((ROOT / "chapters").glob("*.md"))
    for path in texts:
        assert "conserved-book/conserved" not in path.read_text(), path


def test_without_a_repository_no_page_has_a_repository_or_launch_button(book):
    for name, page in _pages(book["html"]).items():
        for host in ("github.com", "mybinder.org", "colab.research.google.com"):
            assert host not in page, f"{name} links to {host}"
        assert check_html.foreign_links(page, "") == [], name


def test_with_a_repository_every_launch_link_opens_a_file_the_repository_holds(book, tmp_path):
    folder = book["folder"]
    tinybook.build(folder, "--all", "--path-output", str(tmp_path), CONSERVED_REPOSITORY_URL=REPO)
    html = tmp_path / "_build" / "html"
    _tool(
        "notebooks.py",
        "--book",
        str(folder),
        "--publish",
        "notebooks",
        CONSERVED_REPOSITORY_URL=REPO,
    )
    for chapter in CHAPTERS:
        page = (html / f"{chapter}.html").read_text()
        links = set(re.findall(r'href="(https://[^"]+)"', page))
        assert REPO in links
        binder = [link for link in links if link.startswith("https://mybinder.org/")]
        colab = [link for link in links if link.startswith("https://colab.research.google.com/")]
        assert len(binder) == 1 and len(colab) == 1, links
        # Binder opens the chapter's source on the main branch ...
        match = re.fullmatch(
            r"https://mybinder\.org/v2/gh/someone/tiny/(\w+)\?urlpath=tree/(.+)", binder[0]
        )
        assert match, binder
        _git(folder, "cat-file", "-e", f"{match[1]}:{match[2]}")
        # ... and Colab the published reader notebook, which installs `conserved` first.
        match = re.fullmatch(
            r"https://colab\.research\.google\.com/github/someone/tiny/blob/"
            r"(\w+)/(.+\.ipynb)",
            colab[0],
        )
        assert match, colab
        published = nbformat.reads(_git(folder, "show", f"{match[1]}:{match[2]}"), as_version=4)
        first = published.cells[0]
        assert first.cell_type == "code" and "except ImportError" in first.source
        assert f"git+{REPO}@main" in first.source
        assert check_html.foreign_links(page, REPO) == []
        # The same page checked as if no repository were set: its buttons are foreign.
        foreign = check_html.foreign_links(page, "")
        assert REPO in foreign and binder[0] in foreign and colab[0] in foreign
    # The source tree is untouched by publishing.
    assert _git(folder, "status", "--porcelain", "--untracked-files=no") == ""


def test_the_download_button_offers_the_reader_notebook(book):
    html = book["html"]
    for chapter in CHAPTERS:
        page = (html / f"{chapter}.html").read_text()
        assert f"_sources/{chapter}.ipynb" in page and "download-notebook-button" in page
        nb = nbformat.read(html / "_sources" / f"{chapter}.ipynb", as_version=4)
        code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
        assert "# BEGIN SOLUTION" in code  # the reader's edition: solutions included
        assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


# 2. Notebooks, two editions ----------------------------------------------------------------


def test_make_notebooks_writes_reader_and_student_editions_without_executing(book):
    folder, log = book["folder"], book["log"]
    log.write_text("")
    proc = _tool("notebooks.py", "--book", str(folder), TINY_EXEC_LOG=str(log))
    assert log.read_text().split() == []  # nothing executed
    out = folder / "_build" / "notebooks"
    reader = sorted(p.name for p in (out / "reader").glob("*.ipynb"))
    student = sorted(p.name for p in (out / "student").glob("*.ipynb"))
    assert reader == ["01_alpha.ipynb", "02_beta.ipynb", "reproducing.ipynb"], proc.stdout
    assert student == ["01_alpha.ipynb", "02_beta.ipynb"], proc.stdout
    for name in student:
        r = nbformat.read(out / "reader" / name, as_version=4)
        s = nbformat.read(out / "student" / name, as_version=4)
        r_code = "\n".join(c.source for c in r.cells if c.cell_type == "code")
        s_code = "\n".join(c.source for c in s.cells if c.cell_type == "code")
        assert "# BEGIN SOLUTION" in r_code and "SOLUTION-TEXT" in json.dumps(r)
        assert "# BEGIN SOLUTION" not in s_code and "NotImplementedError" in s_code
        assert "SOLUTION-TEXT" not in json.dumps(s)
        # The outputs of the build come from the execution cache; no repository: no install cell.
        assert any(c.get("outputs") for c in r.cells if c.cell_type == "code")
        assert "except ImportError" not in r.cells[0].source
    assert "(with outputs)" in proc.stdout


# 4. A PDF edition ---------------------------------------------------------------------------


def _need_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed")
    if check_html.find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("the PDF check needs Chromium (make browser)")
        pytest.skip("no Chromium on PATH: run `make browser` (as root)")


def _pdf_text(path: Path) -> tuple[list[str], int]:
    """Each page's text (NFKC: ligatures undone) and the number of images drawn."""
    import pypdf

    reader = pypdf.PdfReader(str(path))
    pages = [unicodedata.normalize("NFKC", page.extract_text()) for page in reader.pages]
    return pages, sum(len(page.images) for page in reader.pages)


@pytest.fixture(scope="module")
def pdfs(book):
    _need_browser()
    folder, log = book["folder"], book["log"]
    log.write_text("")
    proc = _tool("pdf.py", "--book", str(folder), TINY_EXEC_LOG=str(log))
    executed = log.read_text().split()
    _tool("pdf.py", "--book", str(folder), "--edition", "student", "--no-build")
    single = folder / "_build" / "pdf" / "_build" / "singlehtml"
    figures = sum(
        len(re.findall(r'<img[^>]*src="[^"]*_images/', block))
        for block in re.findall(
            r'class="cell_output.*?</div>\s*</div>',
            (single / "book" / "intro.html").read_text(),
            re.S,
        )
    )
    print(proc.stdout)
    out = folder / "_build" / "pdf"
    return {
        "executed": executed,
        "figures": figures,
        "instructor": out / "conserved.pdf",
        "student": out / "conserved-student.pdf",
    }


def test_make_pdf_after_make_book_executes_nothing(pdfs):
    assert pdfs["executed"] == []


@pytest.mark.parametrize("edition", ["instructor", "student"])
def test_the_pdf_has_every_chapter_its_figures_and_typeset_maths(pdfs, edition):
    pages, images = _pdf_text(pdfs[edition])
    assert pdfs["figures"] == 2
    assert images >= pdfs["figures"]
    assert len(pages) >= len(TITLES) + 1
    for title in TITLES:
        starts = [
            text for text in pages if re.match(rf"(\d+\. )?{re.escape(title)}", text.lstrip())
        ]
        assert starts, f"no page begins with the chapter {title!r}"
    text = "\n".join(pages)
    assert "$$" not in text and "\\begin{" not in text and "\\frac" not in text
    assert "Exercise 1.1" in text and "Exercise 2.1" in text
    solutions = "alpha-SOLUTION-TEXT" in text, "# BEGIN SOLUTION" in text
    assert solutions == ((True, True) if edition == "instructor" else (False, False))


# 5. The execution cache -------------------------------------------------------------------


def test_the_run_mode_is_read_as_the_library_reads_it():
    from conserved import config

    for env in (
        {},
        {"CONSERVED_QUICK": "1"},
        {"CONSERVED_MODE": "paper"},
        {"CONSERVED_MODE": "full", "CONSERVED_QUICK": "1"},
        {"CONSERVED_QUICK": "no"},
    ):
        saved = {k: os.environ.pop(k, None) for k in ("CONSERVED_MODE", "CONSERVED_QUICK")}
        try:
            os.environ.update(env)
            assert editions.run_mode(env) == config.mode(), env
        finally:
            for k in ("CONSERVED_MODE", "CONSERVED_QUICK"):
                os.environ.pop(k, None)
                if saved[k] is not None:
                    os.environ[k] = saved[k]


def test_the_cache_key_follows_the_library_the_lock_and_the_mode(tmp_path):
    folder = tinybook.make(tmp_path / "book", figures=False)
    inputs = ["lib", "requirements.lock"]
    key = editions.cache_key(folder, inputs, "quick")
    assert editions.cache_key(folder, inputs, "quick") == key
    assert editions.cache_key(folder, inputs, "full") != key
    (folder / "chapters" / "01_alpha.md").write_text("# changed\n")  # jupyter-cache's part
    (folder / "book" / "intro.md").write_text("# changed\n")
    assert editions.cache_key(folder, inputs, "quick") == key
    (folder / "lib" / "tinylib.py").write_text(tinybook.TINYLIB + "# touched\n")
    touched = editions.cache_key(folder, inputs, "quick")
    assert touched != key
    (folder / "requirements.lock").write_text("tinylib==1.1\n")
    assert editions.cache_key(folder, inputs, "quick") not in (key, touched)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "cache"
    assert config["sphinx"]["config"]["conserved_cache_inputs"] == [
        "lib/conserved",
        "requirements.lock",
    ]


@pytest.fixture(scope="module")
def rebuilds(tmp_path_factory):
    """The tiny book (no figures) built after each kind of change; what each build executed
    and how long it took."""
    folder = tinybook.make(tmp_path_factory.mktemp("cache") / "book", figures=False)
    log = folder.parent / "executed.log"
    alpha = folder / "chapters" / "01_alpha.md"
    results = {}

    def build(name, **env):
        _, seconds, executed = tinybook.build(folder, "--all", log=log, **env)
        results[name] = (sorted(executed), seconds)

    build("cold")
    build("warm")
    alpha.write_text(alpha.read_text().replace("is conserved:", "stays constant:"))
    build("text edited")
    alpha.write_text(alpha.read_text().replace('print("alpha:"', 'print("alpha, q=3:"'))
    build("code edited")
    lib = folder / "lib" / "tinylib.py"
    lib.write_text(lib.read_text() + "\n# touched\n")
    build("library touched")
    build("FRESH=1", CONSERVED_FRESH="1")
    build("after FRESH=1")
    build("full mode", CONSERVED_MODE="full")
    for name, (executed, seconds) in results.items():
        print(f"{name:>16}: {seconds:5.1f} s, executed {executed}")
    return results


@pytest.mark.parametrize(
    "change, expected",
    [
        ("cold", ["alpha", "beta"]),
        ("warm", []),
        ("text edited", []),
        ("code edited", ["alpha"]),
        ("library touched", ["alpha", "beta"]),
        ("FRESH=1", ["alpha", "beta"]),
        ("after FRESH=1", []),
        ("full mode", ["alpha", "beta"]),
    ],
)
def test_a_rebuild_executes_exactly_what_changed(rebuilds, change, expected):
    assert rebuilds[change][0] == expected


def test_a_graded_run_staged_into_the_cache_is_not_executed_again(tmp_path, monkeypatch):
    """tests/test_notebooks.py's path, on the tiny book: the autograder records a chapter's
    outputs, `editions.stage_executed` puts them in the build's cache, and the build shows them
    without executing that chapter (the other still executes)."""
    from conserved import assignments

    folder = tinybook.make(tmp_path / "book")
    alpha = folder / "chapters" / "01_alpha.md"
    monkeypatch.setenv(  # the grader's kernel starts elsewhere: tinylib through PYTHONPATH
        "PYTHONPATH", os.pathsep.join([str(folder / "lib"), os.environ.get("PYTHONPATH", "")])
    )
    recorded = tmp_path / "alpha.ipynb"
    report = assignments.grade(alpha, source=alpha, mode="quick", record=recorded)
    assert report.total == report.maximum == 1, report.table()
    nb = nbformat.read(recorded, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [o.text for o in code[0].outputs] == ["alpha: 4.5\n"]
    assert "image/png" in code[1].outputs[-1].data  # the figure
    assert code[-1].outputs == []  # the check ran in the grader's checker, not the kernel
    changed = nbformat.from_dict(json.loads(json.dumps(nb)))
    changed.cells[-1].source += "\n# another line"
    with pytest.raises(ValueError, match="code cells are not the"):
        editions.stage_executed(folder, alpha, changed, {"CONSERVED_MODE": "quick"})
    staged = editions.stage_executed(folder, alpha, nb, {"CONSERVED_MODE": "quick"})
    assert staged.name.startswith("quick-")
    log = tmp_path / "executed.log"
    tinybook.build(folder, "--all", log=log)
    assert log.read_text().split() == ["beta"]
    page = (folder / "_build" / "html" / "chapters" / "01_alpha.html").read_text()
    assert "alpha: 4.5" in page and re.search(r"<img[^>]+\.png", page)


# 6. What a build cost ---------------------------------------------------------------------


def test_reproducing_page_records_times_mode_versions_and_commands(book):
    page = (book["html"] / "book" / "reproducing.html").read_text()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    for chapter in CHAPTERS:
        row = re.search(rf'<span class="doc">{chapter}</span>.*?</tr>', page, re.S)
        assert row, f"no execution-time row for {chapter}"
        cells = [
            re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row[0], re.S)
        ]
        assert "cache" in cells or "execute" in cells, cells
        assert any(re.fullmatch(r"\s*\d+(\.\d+)?\s*", c) for c in cells), cells
    assert "ran the chapters in quick mode" in text
    for name in ("Python", "jax", "equinox", "diffrax", "optax", "CPU"):
        assert re.search(rf"\b{name}\b \d", text) or (name == "CPU" and "logical cores" in text)
    for command in ("make book", "make pdf", "make notebooks", "make lab", "FRESH=1"):
        assert command in text


def test_reproducing_is_in_the_back_matter_before_the_bibliography():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    back = [part for part in toc["parts"] if part["caption"] == "Back matter"][0]
    files = [entry["file"] for entry in back["chapters"]]
    assert files.index("book/reproducing") < files.index("book/bibliography")


# 3. Open it in one command ----------------------------------------------------------------


def test_make_lab_installs_pinned_lab_and_opens_md_as_notebooks():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lab = {req.split("==")[0] for req in project["optional-dependencies"]["lab"]}
    assert lab == {"jupyterlab", "jupyterlab-myst"}
    assert any(r.startswith("jupytext==") for r in project["optional-dependencies"]["book"])
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("$(LAB_STAMP):") :]
    assert "'.[book,dev,lab]'" in recipe and "tools/lab-overrides.json" in recipe
    assert "share/jupyter/lab/settings/overrides.json" in makefile
    overrides = json.loads((ROOT / "tools" / "lab-overrides.json").read_text())
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["markdown"] == viewers["myst"] == "Jupytext Notebook"
    # jupytext's JupyterLab extension registers that viewer for those file types.
    extension = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "jupyterlab-jupytext"
    if not extension.is_dir():
        pytest.skip("jupytext's JupyterLab extension is not installed")
    code = "".join(p.read_text(errors="replace") for p in extension.rglob("*.js"))
    assert '"Jupytext Notebook"' in code
    assert re.search(r'FILE_TYPES=\[[^\]]*"markdown"[^\]]*"myst"', code)
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "pip install jupyterlab" not in readme


def test_after_make_lab_jupyterlab_opens_a_chapter_as_a_notebook(tmp_path):
    """Where `make lab` has run (JupyterLab in this environment, the overrides installed): a
    real server opens a chapter's .md as a notebook, with .md files set to open as notebooks
    and jupyterlab-myst loaded."""
    import socket
    import time
    import urllib.request

    pytest.importorskip("jupyterlab")
    overrides = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    if not overrides.is_file():
        pytest.skip("`make lab` has not installed the JupyterLab settings in this environment")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}"]
    command += ["--IdentityProvider.token=t", f"--ServerApp.root_dir={ROOT}", "--allow-root"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(path: str):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", headers={"Authorization": "token t"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    try:
        for _ in range(120):
            try:
                get("/api/status")
                break
            except OSError:
                time.sleep(0.5)
        chapter = get("/api/contents/chapters/00_jax_primer.md?type=notebook&content=1")
        assert chapter["type"] == "notebook" and len(chapter["content"]["cells"]) > 5
        plugin = get("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
        viewers = plugin["schema"]["properties"]["defaultViewers"]["default"]
        assert viewers["markdown"] == "Jupytext Notebook"
        names = {extension["name"] for extension in get("/lab/api/extensions")}
        assert {"jupyterlab-jupytext", "jupyterlab-myst"} <= names
    finally:
        server.terminate()
        server.wait(timeout=30)
