"""A tiny two-chapter book with the real book's configuration, for the tests of the build
itself (execution cache, links, notebooks, PDF) that must run in seconds, not the chapters'
minutes. Each chapter appends its name to $TINY_EXEC_LOG when it executes, so a test can count
executions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""

CHAPTER = (
    HEADER
    + """
# {title}

The energy $E = \\tfrac12 p^2 + \\tfrac12 q^2$ of the {name} oscillator is conserved:

$$
\\frac{{d}}{{dt}} E(q, p) = 0 .
$$

```{{code-cell}} ipython3
import os
import sys

sys.path.insert(0, os.path.join(os.getcwd(), "..", "lib"))
import tinylib

log = os.environ.get("TINY_EXEC_LOG")
if log:
    with open(log, "a") as file:
        file.write("{name}\\n")
print("{name}:", tinylib.energy({q}, 0.0))
```
{figure}
## Exercises

```{{exercise}}
:label: {name}-ex

Compute the energy at $q = {q}$, $p = 0$ and store it in `answer`.
```

```{{solution-start}} {name}-ex
:class: dropdown
```

The {name} solution: half the square, {name}-SOLUTION-TEXT.

```{{code-cell}} ipython3
# BEGIN SOLUTION
answer = tinylib.energy({q}, 0.0)
# END SOLUTION
```

```{{solution-end}}
```

```{{code-cell}} ipython3
assert abs(answer - {q} ** 2 / 2) < 1e-12
```
"""
)

FIGURE = """
```{{code-cell}} ipython3
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(3, 2))
ax.plot([0, 1, 2, 3], [0, {q}, 0, -{q}])
ax.set_title("{name}")
plt.show()
```

The {name} curve rises and falls once.
"""

TINYLIB = '''"""The tiny book's library."""


def energy(q, p):
    return 0.5 * q**2 + 0.5 * p**2
'''

CHAPTERS = {"01_alpha": ("Alpha: a first tiny chapter", 3), "02_beta": ("Beta: a second", 5)}


def config(repository: str = "") -> dict:
    """The real _config.yml, its paths made absolute, for a tiny book in another folder."""
    book = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = dict(book["sphinx"])
    sphinx["local_extensions"] = {
        name: str(ROOT / path) for name, path in sphinx["local_extensions"].items()
    }
    sphinx["config"] = {
        key: value for key, value in sphinx["config"].items() if not key.startswith("bibtex")
    }
    sphinx["config"]["conserved_cache_inputs"] = ["lib", "requirements.lock"]
    config = {key: book[key] for key in ("execute", "parse", "html", "launch_buttons")}
    config.update(
        title="Tiny",
        author="Tiny authors",
        only_build_toc_files=True,
        exclude_patterns=["_build", "lib"],
        sphinx=sphinx,
        repository={"url": repository, "branch": "main"},
    )
    return config


def toc(reproducing: bool) -> dict:
    parts = [
        {
            "caption": "Chapters",
            "numbered": True,
            "chapters": [{"file": f"chapters/{name}"} for name in CHAPTERS],
        }
    ]
    if reproducing:
        parts.append({"caption": "Back matter", "chapters": [{"file": "book/reproducing"}]})
    # The root in a folder, as the book's own (book/intro).
    return {"format": "jb-book", "root": "book/intro", "parts": parts}


def make(folder: Path, *, figures: bool = True, reproducing: bool = False) -> Path:
    """Write the tiny book into ``folder``; returns it."""
    folder = Path(folder)
    (folder / "chapters").mkdir(parents=True, exist_ok=True)
    (folder / "book").mkdir(exist_ok=True)
    (folder / "lib").mkdir(exist_ok=True)
    (folder / "_config.yml").write_text(yaml.safe_dump(config(), sort_keys=False))
    (folder / "_toc.yml").write_text(yaml.safe_dump(toc(reproducing), sort_keys=False))
    (folder / "book" / "intro.md").write_text("# A tiny book\n\nTwo chapters and nothing else.\n")
    (folder / "lib" / "tinylib.py").write_text(TINYLIB)
    (folder / "requirements.lock").write_text("tinylib==1.0\n")
    for name, (title, q) in CHAPTERS.items():
        short = name.split("_", 1)[1]
        figure = FIGURE.format(name=short, q=q) if figures else ""
        text = CHAPTER.format(title=title, name=short, q=q, figure=figure)
        (folder / "chapters" / f"{name}.md").write_text(text)
    if reproducing:
        (folder / "book" / "reproducing.md").write_text(
            (ROOT / "book" / "reproducing.md").read_text()
        )
    return folder


def environment(**extra: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MPLBACKEND", "CONSERVED_MODE", "CONSERVED_QUICK", "CONSERVED_FRESH")
        and not k.startswith("CONSERVED_REPOSITORY")
    }
    env["CONSERVED_MODE"] = "quick"
    env.update(extra)
    return env


def build(folder: Path, *args: str, log: Path | None = None, **env: str):
    """``jupyter-book build folder`` (warnings are errors); returns (process, seconds, executed
    chapters as logged)."""
    if log is not None:
        log.write_text("")
        env["TINY_EXEC_LOG"] = str(log)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(folder), "-W", "--keep-going", *args]
    started = time.perf_counter()
    proc = subprocess.run(
        command, env=environment(**env), capture_output=True, text=True, timeout=900
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, f"tiny book build failed:\n{proc.stdout[-5000:]}\n{proc.stderr}"
    executed = log.read_text().split() if log is not None else []
    return proc, seconds, executed
