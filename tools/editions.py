"""The book's editions: one repository setting, a never-stale execution cache, the reader's
notebook. Shared by ``tools/notebooks.py`` and ``tools/pdf.py``, and a Sphinx extension that
``_config.yml`` loads (``local_extensions: editions: tools``).

Repository. ``repository.url`` in ``_config.yml`` is the one setting; the environment variable
``CONSERVED_REPOSITORY_URL`` (``make book REPOSITORY_URL=...``) overrides it. Unset (the
default), no page shows a repository, Binder or Colab button. Set, the repository button links
to it, Binder opens the chapter's ``.md`` (which the repository holds) and Colab opens the
reader notebook that ``make notebooks PUBLISH=1`` commits to the branch
``conserved_notebooks_branch`` (``notebooks``) as ``reader/NN_name.ipynb``; its first cell
installs ``conserved`` from the repository when it is not importable.

Execution cache. ``execute_notebooks: cache`` runs each notebook through jupyter-cache, whose
key is the notebook's code cells. This extension adds the rest of what changes results by
choosing the cache folder: ``_build/.jupyter_cache/<mode>-<hash>``, the hash taken over the
files named by ``conserved_cache_inputs`` (the library's sources, ``requirements.lock``), the
run mode (``CONSERVED_MODE`` / ``CONSERVED_QUICK``, read as ``conserved.config.mode`` does) and
the Python version. Editing one chapter's code re-executes that chapter; touching the library or
the lock file, or changing the mode, starts another folder, so every notebook re-executes.
``CONSERVED_FRESH=1`` (``make book FRESH=1``) empties the folder first: everything re-executes
and the cache holds the new results.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

REPOSITORY_ENV = "CONSERVED_REPOSITORY_URL"
FRESH_ENV = "CONSERVED_FRESH"
MODES = ("quick", "full", "paper")
NOTEBOOKS_BRANCH = "notebooks"
COLAB_URL = "https://colab.research.google.com"
CACHE_FOLDER = Path("_build") / ".jupyter_cache"
# What Jupyter Book fills in when a book's _config.yml names no repository: not the book's.
JUPYTER_BOOK_DEFAULT_URL = "https://github.com/executablebooks/jupyter-book"


# ------------------------------------------------------------------------------------------
# Repository and launch links
# ------------------------------------------------------------------------------------------


def repository_url(configured: str | None = None, env=None) -> str:
    """The book's repository: $CONSERVED_REPOSITORY_URL, else ``configured``; '' when unset."""
    env = os.environ if env is None else env
    configured = (configured or "").strip().rstrip("/")
    if configured == JUPYTER_BOOK_DEFAULT_URL:
        configured = ""
    url = env.get(REPOSITORY_ENV, "").strip() or configured
    return url.rstrip("/").removesuffix(".git")


def book_config(root: Path) -> dict:
    """The book's _config.yml in ``root``, as a dict."""
    import yaml

    return yaml.safe_load((Path(root) / "_config.yml").read_text()) or {}


def configured_repository(root: Path) -> tuple[str, str]:
    """(url, branch) of the book in ``root``: its _config.yml, overridden by the environment."""
    config = book_config(root)
    repository = config.get("repository") or {}
    return repository_url(repository.get("url")), str(repository.get("branch") or "main")


def github_parts(url: str) -> tuple[str, str] | None:
    """(org, repo) of a GitHub repository URL, else None."""
    parts = urlsplit(url)
    if parts.hostname not in ("github.com", "www.github.com"):
        return None
    pieces = [p for p in parts.path.split("/") if p]
    return (pieces[0], pieces[1]) if len(pieces) >= 2 else None


def colab_link(url: str, name: str, branch: str = NOTEBOOKS_BRANCH) -> str | None:
    """Colab's link to the published reader notebook ``reader/<name>.ipynb``."""
    parts = github_parts(url)
    if parts is None:
        return None
    org, repo = parts
    return f"{COLAB_URL}/github/{org}/{repo}/blob/{branch}/reader/{name}.ipynb"


def owned_link_prefixes(url: str, binderhub: str = "https://mybinder.org") -> list[str]:
    """Links that belong to the book when its repository is ``url``: the repository itself and
    the launch services opened on it. Empty when no repository is set."""
    if not url:
        return []
    prefixes = [url + "/", url + "?", url + "#"]
    parts = github_parts(url)
    if parts:
        org, repo = parts
        prefixes += [
            f"{binderhub.rstrip('/')}/v2/gh/{org}/{repo}/",
            f"{COLAB_URL}/github/{org}/{repo}/",
        ]
    return prefixes


def install_cell_source(url: str, branch: str = "main") -> str:
    """The first cell of a published notebook: installs ``conserved`` when it is missing."""
    return (
        "# Run where the book's library is not installed (Colab, a fresh kernel): install it\n"
        "# from the book's repository, with the versions the book was built with.\n"
        "try:\n"
        "    import conserved  # noqa: F401\n"
        "except ImportError:\n"
        f'    %pip install --quiet "conserved @ git+{url}@{branch}"\n'
        "    import importlib\n"
        "\n"
        "    importlib.invalidate_caches()\n"
        "    import conserved  # noqa: F401"
    )


def with_install_cell(nb, url: str, branch: str = "main"):
    """A copy of notebook ``nb`` whose first cell installs ``conserved`` (when ``url`` is set)."""
    import nbformat

    nb = copy.deepcopy(nb)
    if url:
        cell = nbformat.v4.new_code_cell(install_cell_source(url, branch))
        cell.metadata["tags"] = ["install-conserved"]
        if (nb.nbformat, nb.nbformat_minor) < (4, 5):
            cell.pop("id", None)  # cell ids came with nbformat 4.5
        nb.cells.insert(0, cell)
    return nb


# ------------------------------------------------------------------------------------------
# The book's notebooks
# ------------------------------------------------------------------------------------------


def toc_files(root: Path) -> list[str]:
    """Every file that ``root/_toc.yml`` lists, root first, in reading order (no suffix)."""
    import yaml

    data = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    files = [data["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for key in ("parts", "chapters", "sections"):
        walk(data.get(key))
    return [re.sub(r"\.(md|ipynb|rst)$", "", name) for name in files]


def source_of(root: Path, docname: str) -> Path | None:
    for suffix in (".md", ".ipynb"):
        path = Path(root) / f"{docname}{suffix}"
        if path.is_file():
            return path
    return None


def is_notebook(path: Path) -> bool:
    """An ``.ipynb``, or a MyST-Markdown notebook (a front matter with a kernelspec)."""
    if path.suffix == ".ipynb":
        return True
    text = path.read_text()
    head = re.match(r"---\n(.*?)\n---\n", text, re.S)
    return bool(head and "kernelspec:" in head[1])


def notebook_pages(root: Path) -> list[tuple[str, Path]]:
    """(docname, source) of every notebook page of the book, in reading order."""
    pages = []
    for docname in toc_files(root):
        path = source_of(root, docname)
        if path is not None and is_notebook(path):
            pages.append((docname, path))
    return pages


# ------------------------------------------------------------------------------------------
# The execution cache's key
# ------------------------------------------------------------------------------------------


def run_mode(env=None) -> str:
    """The run mode, read from the environment exactly as ``conserved.config.mode`` does
    (tests/test_editions.py checks that the two agree)."""
    env = os.environ if env is None else env
    explicit = env.get("CONSERVED_MODE", "").strip().lower()
    if explicit:
        if explicit not in MODES:
            raise ValueError(f"CONSERVED_MODE must be one of {MODES}, got {explicit!r}")
        return explicit
    quick = env.get("CONSERVED_QUICK", "").strip().lower()
    if quick in ("", "0", "false", "no"):
        return "full"
    if quick in ("1", "true", "yes"):
        return "quick"
    raise ValueError(f"CONSERVED_QUICK must be 1/0 (or true/false), got {quick!r}")


def _input_files(root: Path, inputs: list[str]) -> list[Path]:
    files = []
    for name in inputs:
        path = Path(root) / name
        if path.is_dir():
            files += [
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            ]
        elif path.is_file():
            files.append(path)
    return sorted(files)


def cache_key(root: Path, inputs: list[str], mode: str) -> str:
    """A hash of everything besides a notebook's code that changes what it computes."""
    digest = hashlib.sha256()
    digest.update(f"mode={mode}\npython={sys.version}\n".encode())
    for path in _input_files(root, inputs):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_path(root: Path, inputs: list[str], env=None) -> Path:
    """The jupyter-cache folder of this build: ``_build/.jupyter_cache/<mode>-<key>``."""
    mode = run_mode(env)
    return Path(root).resolve() / CACHE_FOLDER / f"{mode}-{cache_key(root, inputs, mode)}"


def configured_cache_inputs(root: Path) -> list[str]:
    """``conserved_cache_inputs`` of the book's _config.yml: what a cached result depends on."""
    return list(book_config(root)["sphinx"]["config"]["conserved_cache_inputs"])


def stage_executed(
    root: Path, source: Path, executed, env=None, seconds: float | None = None
) -> Path:
    """Put a notebook that was executed elsewhere into the build's execution cache, so that the
    next build of ``root`` in this mode shows its outputs instead of executing ``source`` again.

    ``executed``: the chapter's code cells, in order and with the same sources as MyST-NB reads
    them from ``source``, carrying their outputs (the autograder's recorded run; extra code
    cells must have been removed). jupyter-cache matches a notebook by its code cells' sources
    and metadata, so the staged notebook is MyST-NB's own reading of ``source`` with these
    outputs. ``seconds``: how long that run took (the reproducing page's execution table shows
    it). Returns the cache folder; raises ValueError when the code cells differ."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import read_myst_markdown_notebook

    source = Path(source).resolve()
    staged = read_myst_markdown_notebook(
        source.read_text("utf8"), add_source_map=True, path=str(source)
    )
    mine = [c for c in staged.cells if c.cell_type == "code"]
    theirs = [c for c in executed.cells if c.cell_type == "code"]
    if [c.source for c in mine] != [c.source for c in theirs]:
        raise ValueError(
            f"the executed notebook's {len(theirs)} code cells are not the "
            f"{len(mine)} of {source.name}"
        )
    for cell, ran in zip(mine, theirs, strict=True):
        cell.outputs = copy.deepcopy(ran.get("outputs", []))
    folder = cache_path(root, configured_cache_inputs(root), env)
    get_cache(folder).cache_notebook_bundle(
        CacheBundleIn(staged, str(source), data={"execution_seconds": seconds}),
        check_validity=False,
        overwrite=True,
    )
    return folder


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


# ------------------------------------------------------------------------------------------
# The Sphinx extension
# ------------------------------------------------------------------------------------------


def _configure(app, config) -> None:
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    theme = config.html_theme_options
    # Repository and launch buttons: only when a repository is set.
    url = repository_url(theme.get("repository_url"))
    launch = dict(theme.get("launch_buttons") or {})
    if url:
        theme["repository_url"] = url
        theme["use_repository_button"] = True
        # Colab cannot open a .md: this extension adds its button (the published .ipynb).
        config.conserved_colab_url = launch.pop("colab_url", "") or ""
        theme["launch_buttons"] = launch
    else:
        for key in ("repository_url", "use_repository_button", "use_edit_page_button"):
            theme.pop(key, None)
        theme["use_issues_button"] = False
        theme["launch_buttons"] = {}
        config.conserved_colab_url = ""
    config.conserved_repository_url = url

    # The execution cache's folder.
    if config.nb_execution_mode == "cache":
        root = Path(app.srcdir)
        path = cache_path(root, list(config.conserved_cache_inputs))
        if _truthy(os.environ.get(FRESH_ENV)) and path.exists():
            shutil.rmtree(path)
            logger.info(f"[editions] {FRESH_ENV}: emptied the execution cache {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        config.nb_execution_cache_path = str(path)
        logger.info(f"[editions] execution cache: {path}")


def _page_is_notebook(app, pagename: str) -> bool:
    metadata = app.env.metadata.get(pagename, {})
    return "kernelspec" in metadata


def _reader_download(app, pagename, templatename, context, doctree) -> None:
    """The download button offers the reader's .ipynb (run outputs included): set early, so
    that sphinx-book-theme's download menu lists it."""
    if app.builder.format != "html" or not _page_is_notebook(app, pagename):
        return
    context["ipynb_source"] = pagename + ".ipynb"


def _write_reader_notebook(app, pagename, templatename, context, doctree) -> None:
    """Write ``_sources/<page>.ipynb`` (after sphinx-book-theme, which may copy its own), and
    add the Colab button when a repository is set."""
    if app.builder.format != "html" or not _page_is_notebook(app, pagename):
        return
    import jupytext
    import nbformat

    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if executed.is_file():
        nb = nbformat.read(executed, as_version=4)
    else:
        nb = jupytext.read(app.env.doc2path(pagename))
    url = app.config.conserved_repository_url
    branch = app.config.html_theme_options.get("repository_branch") or "main"
    nb = with_install_cell(nb, url, branch)
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)

    colab = app.config.conserved_colab_url
    link = colab_link(url, Path(pagename).name, app.config.conserved_notebooks_branch)
    if not (colab and link):
        return
    link = link.replace(COLAB_URL, colab.rstrip("/"), 1)
    buttons = context.setdefault("header_buttons", [])
    group = next((b for b in buttons if b.get("label") == "launch-buttons"), None)
    if group is None:
        group = {
            "type": "group",
            "tooltip": "Launch interactive content",
            "icon": "fas fa-rocket",
            "buttons": [],
            "label": "launch-buttons",
        }
        buttons.append(group)
    group["buttons"].append(
        {
            "type": "link",
            "text": "Colab",
            "tooltip": "Launch on Colab",
            "icon": "_static/images/logo_colab.png",
            "url": link,
        }
    )


def _single_page_translates_like_html(app) -> None:
    """Sphinx's single-page builder takes node handlers registered for the builder name
    ``singlehtml`` if any extension registered one, and then ignores those registered for
    ``html`` (myst-nb's hidden code cells, for one): give it every ``html`` handler it lacks."""
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node, visitors in handlers.get("html", {}).items():
        single.setdefault(node, visitors)


def setup(app):
    app.add_config_value("conserved_cache_inputs", [], "env")
    app.add_config_value("conserved_notebooks_branch", NOTEBOOKS_BRANCH, "html")
    app.add_config_value("conserved_repository_url", "", "html")
    app.add_config_value("conserved_colab_url", "", "html")
    # Before myst-nb reads its configuration (builder-inited) and the theme its options.
    app.connect("config-inited", _configure, priority=900)
    app.connect("builder-inited", _single_page_translates_like_html)
    app.connect("html-page-context", _reader_download, priority=499)
    app.connect("html-page-context", _write_reader_notebook, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
