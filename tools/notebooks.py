"""The book's notebooks, two editions, from the MyST-Markdown sources (``make notebooks``).

Usage::

    .venv/bin/python tools/notebooks.py [--book .] [--out _build/notebooks] [--publish BRANCH]

writes

- ``reader/NN_name.ipynb``: every notebook page of ``_toc.yml`` as jupytext reads it, solutions
  included, with the outputs of the last ``make book`` when the execution cache holds this
  mode's run of the same code (nothing is executed here);
- ``student/NN_name.ipynb``: the student edition of each chapter with exercises, written by
  ``conserved.assignments release`` (solutions replaced by stubs, hidden tests removed).

When the book's repository is set (``repository.url`` in ``_config.yml`` or
$CONSERVED_REPOSITORY_URL), each notebook's first cell installs ``conserved`` from it when it
is not importable (Colab), and ``--publish BRANCH`` commits the two folders to that branch of
the book's git repository (git plumbing: the working tree, the index and HEAD are untouched),
where the Colab buttons of the rendered book point (``git push origin notebooks`` publishes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import editions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _cache_inputs(book: Path) -> list[str]:
    config = yaml.safe_load((book / "_config.yml").read_text()) or {}
    sphinx = (config.get("sphinx") or {}).get("config") or {}
    return list(sphinx.get("conserved_cache_inputs") or [])


def _with_cached_outputs(nb, book: Path):
    """``nb`` with the outputs of its cached run (same code, library, lock and mode), if any."""
    path = editions.cache_path(book, _cache_inputs(book))
    if not (path / "global.db").is_file():
        return nb, False
    from jupyter_cache import get_cache

    try:
        _, merged = get_cache(str(path)).merge_match_into_notebook(nb)
    except KeyError:
        return nb, False
    return merged, True


def write_editions(book: Path, out: Path) -> list[str]:
    """Write both editions of every notebook page of ``book`` into ``out``; one line each."""
    from conserved import assignments

    url, branch = editions.configured_repository(book)
    reader_dir, student_dir = out / "reader", out / "student"
    reader_dir.mkdir(parents=True, exist_ok=True)
    student_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for docname, source in editions.notebook_pages(book):
        name = Path(docname).name
        nb, cached = _with_cached_outputs(jupytext.read(source), book)
        nb.metadata.pop("jupytext", None)
        nbformat.write(editions.with_install_cell(nb, url, branch), reader_dir / f"{name}.ipynb")
        line = f"reader/{name}.ipynb ({'with' if cached else 'no'} outputs)"
        try:
            assignments.student_edition(source)
        except assignments.AssignmentError as error:
            if "has no exercises" not in str(error):
                raise
        else:
            release = assignments.release(source, student_dir, force=True)
            student = nbformat.read(release.written[0], as_version=4)
            nbformat.write(editions.with_install_cell(student, url, branch), release.written[0])
            line += f", student/{name}.ipynb ({len(release.exercises)} exercises)"
        lines.append(line)
    return lines


def _git(book: Path, *args: str, env=None, input: bytes | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(book), *args], env=env, input=input, capture_output=True, check=True
    )
    return proc.stdout.decode().strip()


def publish(book: Path, out: Path, branch: str) -> str:
    """Commit ``out``'s reader/ and student/ folders as the whole tree of ``branch``."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        for path in sorted(out.rglob("*.ipynb")):
            blob = _git(book, "hash-object", "-w", str(path.resolve()))
            rel = path.relative_to(out).as_posix()
            _git(book, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
        tree = _git(book, "write-tree", env=env)
    ref = f"refs/heads/{branch}"
    try:
        parent = _git(book, "rev-parse", "--verify", "--quiet", ref)
    except subprocess.CalledProcessError:
        parent = ""
    if parent and _git(book, "rev-parse", f"{parent}^{{tree}}") == tree:
        return parent
    source = _git(book, "rev-parse", "--short", "HEAD")
    args = ["commit-tree", tree, "-m", f"Notebooks generated from {source} (make notebooks)"]
    if parent:
        args += ["-p", parent]
    commit = _git(book, *args)
    _git(book, "update-ref", ref, commit)
    return commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", default=ROOT, type=Path, help="the book's folder")
    parser.add_argument("--out", type=Path, help="default: BOOK/_build/notebooks")
    parser.add_argument("--publish", metavar="BRANCH", help="commit the notebooks to BRANCH")
    args = parser.parse_args(argv)
    book = args.book.resolve()
    out = (args.out or book / "_build" / "notebooks").resolve()
    for line in write_editions(book, out):
        print(f"notebooks: {line}")
    print(f"notebooks: written to {out}")
    if args.publish:
        url, _ = editions.configured_repository(book)
        if not url:
            print(
                "notebooks: no repository is set (repository.url in _config.yml or "
                "REPOSITORY_URL=...): nothing to publish for",
                file=sys.stderr,
            )
            return 2
        commit = publish(book, out, args.publish)
        print(
            f"notebooks: branch {args.publish} at {commit[:12]}; publish: git push origin "
            f"{args.publish}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
