"""Every chapter listed in _toc.yml executes top to bottom in quick mode (CONSERVED_QUICK=1).

Each chapter is read with jupytext and run with nbclient in a fresh kernel, from the chapters/
folder, exactly as the book build runs it. A cell that raises (a failed `assert` on a claim
included) fails the test with the cell's traceback.
"""

import os
import time

import jupytext
import nbclient
import pytest
import yaml
from conftest import ROOT

QUICK_BUDGET_S = 60  # each chapter must run in well under a minute on 2 cores in quick mode


def toc_chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []
    for part in toc.get("parts", []):
        for entry in part.get("chapters", []):
            if entry["file"].startswith("chapters/"):
                files.append(entry["file"])
    return files


def test_toc_lists_existing_chapters():
    chapters = toc_chapters()
    assert chapters, "_toc.yml lists no chapter"
    for chapter in chapters:
        assert (ROOT / f"{chapter}.md").is_file(), (
            f"_toc.yml lists {chapter} but {chapter}.md is missing"
        )


@pytest.mark.notebook
@pytest.mark.parametrize("chapter", toc_chapters())
def test_chapter_runs_in_quick_mode(chapter, monkeypatch):
    monkeypatch.setenv("CONSERVED_QUICK", "1")
    monkeypatch.delenv("CONSERVED_MODE", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws with the inline backend
    path = ROOT / f"{chapter}.md"
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    print(f"{chapter}: {elapsed:.1f} s in quick mode")
    assert elapsed < QUICK_BUDGET_S * 1.5, f"{chapter} took {elapsed:.0f} s in quick mode"
    assert os.environ["CONSERVED_QUICK"] == "1"
