"""Course use: student editions of a chapter, and offline autograding of submissions.

A chapter is the single source. Each exercise is a sphinx-exercise `{exercise}` with a label,
followed by a gated solution (`{solution-start} LABEL` ... `{solution-end}`) whose code cells
hold the answer between `# BEGIN SOLUTION` and `# END SOLUTION`, followed by one *check cell*:
the first code cell after `{solution-end}`. A check cell may hold instructor-only tests between
`# BEGIN HIDDEN TESTS` and `# END HIDDEN TESTS`.

Command line (also installed as `conserved-assignments`)::

    python -m conserved.assignments release chapters/01_symmetries.md --out handout/ [--md]
    python -m conserved.assignments grade handout/01_symmetries.ipynb [--json]

`release` writes a student notebook: solution regions replaced by a stub that raises
`NotImplementedError`, hidden tests and solution text removed, outputs cleared. `grade` runs a
submission in a fresh kernel in a temporary directory, with a time limit per cell and in total,
replaces every check cell by the instructor's (public and hidden tests), and scores each
exercise: full marks when its check cell runs without error. Bad submissions (invalid JSON, a
crash, an endless loop) get zero for the affected exercises and a plain message; the submission
file is only read.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import csv
import dataclasses
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat

BEGIN_SOLUTION = "# BEGIN SOLUTION"
END_SOLUTION = "# END SOLUTION"
BEGIN_HIDDEN = "# BEGIN HIDDEN TESTS"
END_HIDDEN = "# END HIDDEN TESTS"
STUB = ["# YOUR CODE HERE", "raise NotImplementedError"]
METADATA_KEY = "conserved"

_FENCE = re.compile(r"^(`{3,}|:{3,})\s*(\{([\w-]+)\})?\s*(.*)$")


class AssignmentError(ValueError):
    """A chapter or submission that does not follow the exercise conventions."""


@dataclasses.dataclass
class Exercise:
    """One exercise of a chapter, located in the chapter's notebook."""

    label: str
    solution_cells: list[int] = dataclasses.field(default_factory=list)
    check_cell: int | None = None
    check_source: str = ""  # the instructor's check, hidden tests included
    hidden_cell: int | None = None  # a `remove-cell` cell of hidden tests after the check
    solution_lines: list[str] = dataclasses.field(default_factory=list)
    hidden_lines: list[str] = dataclasses.field(default_factory=list)
    text_lines_removed: int = 0


# ------------------------------------------------------------------------------------------
# Reading a chapter
# ------------------------------------------------------------------------------------------


def read_chapter(path: str | Path) -> nbformat.NotebookNode:
    """Read a chapter (MyST Markdown `.md` or `.ipynb`) as a notebook."""
    path = Path(path)
    if not path.is_file():
        raise AssignmentError(f"no such chapter: {path}")
    return jupytext.read(path)


def _regions(
    source: str, begin: str, end: str
) -> tuple[list[str | tuple[str, str]], list[str], int]:
    """Split cell source into (lines kept with each region replaced by a marker, region lines,
    number of regions). Raises on unbalanced markers."""
    kept, inside, regions, count = [], False, [], 0
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise AssignmentError(f"nested {begin!r}")
            inside, count = True, count + 1
            kept.append(("REGION", line[: len(line) - len(line.lstrip())]))
        elif stripped == end:
            if not inside:
                raise AssignmentError(f"{end!r} without {begin!r}")
            inside = False
        elif inside:
            regions.append(line)
        else:
            kept.append(line)
    if inside:
        raise AssignmentError(f"{begin!r} without {end!r}")
    return kept, regions, count


def analyse(nb: nbformat.NotebookNode) -> tuple[list[Exercise], list[str | None]]:
    """Find the exercises of a chapter notebook.

    Returns the exercises in order, and for every cell the markdown text that a student
    edition keeps (`None` for a markdown cell that disappears; code cells get their source).
    """
    exercises: dict[str, Exercise] = {}
    current_label = None  # the label of the last {exercise}
    solution_label = None  # inside {solution-start} ... {solution-end}
    awaiting_check = None  # after {solution-end}, the next code cell is the check
    kept_text: list[str | None] = []
    skip_fence = None  # inside a plain {solution} directive: skip until this fence closes
    last_check = None  # the label whose check cell was the previous cell
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            kept_text.append(cell.source)
            if solution_label is not None:
                exercises[solution_label].solution_cells.append(index)
            elif awaiting_check is not None:
                exercises[awaiting_check].check_cell = index
                exercises[awaiting_check].check_source = cell.source
                last_check, awaiting_check = awaiting_check, None
                continue
            elif last_check is not None and cell.source.lstrip().startswith(BEGIN_HIDDEN):
                if "remove-cell" not in cell.metadata.get("tags", []):
                    raise AssignmentError(
                        f"exercise {last_check!r}: the hidden-test cell needs the tag "
                        "remove-cell, or the rendered book shows it"
                    )
                exercises[last_check].hidden_cell = index
                exercises[last_check].check_source += "\n" + cell.source
            last_check = None
            continue
        last_check = None
        out_lines = []
        lines = cell.source.split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            match = _FENCE.match(line.strip())
            directive = match.group(3) if match else None
            if skip_fence is not None:
                if line.strip() == skip_fence:
                    skip_fence = None
                i += 1
                continue
            if directive == "exercise":
                label = _directive_label(lines, i)
                if label in exercises:
                    raise AssignmentError(f"exercise label {label!r} is used twice")
                exercises[label] = Exercise(label)
                current_label = label
            elif directive == "solution-start":
                label = match.group(4).strip() or current_label
                if label not in exercises:
                    raise AssignmentError(f"solution-start {label!r} names no exercise above it")
                solution_label = label
                i = _skip_directive(lines, i, match.group(1))
                continue
            elif directive == "solution-end":
                if solution_label is None:
                    raise AssignmentError("solution-end without solution-start")
                awaiting_check, solution_label = solution_label, None
                i = _skip_directive(lines, i, match.group(1))
                continue
            elif directive == "solution":
                skip_fence = match.group(1)
                i += 1
                continue
            if solution_label is not None:
                if line.strip():
                    exercises[solution_label].text_lines_removed += 1
            else:
                out_lines.append(line)
            i += 1
        text = "\n".join(out_lines).strip("\n")
        kept_text.append(text if text.strip() else None)
    if solution_label is not None:
        raise AssignmentError(f"solution of {solution_label!r} is never closed by solution-end")
    for ex in exercises.values():
        for index in ex.solution_cells:
            _, region, count = _regions(nb.cells[index].source, BEGIN_SOLUTION, END_SOLUTION)
            ex.solution_lines += region
            if count == 0:
                raise AssignmentError(
                    f"exercise {ex.label!r}: a solution cell has no {BEGIN_SOLUTION} region"
                )
        if not ex.solution_cells:
            raise AssignmentError(f"exercise {ex.label!r} has no solution code cell")
        if ex.check_cell is None:
            raise AssignmentError(f"exercise {ex.label!r} has no check cell after its solution")
        _, in_check, count = _regions(nb.cells[ex.check_cell].source, BEGIN_HIDDEN, END_HIDDEN)
        if count and "remove-cell" not in nb.cells[ex.check_cell].metadata.get("tags", []):
            raise AssignmentError(
                f"exercise {ex.label!r}: hidden tests inside the visible check cell would show "
                "in the rendered book; move them to a following code cell tagged remove-cell"
            )
        _, hidden, _ = _regions(ex.check_source, BEGIN_HIDDEN, END_HIDDEN)
        ex.hidden_lines = hidden
    return list(exercises.values()), kept_text


def _directive_label(lines: list[str], start: int) -> str:
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if stripped.startswith(":label:"):
            return stripped.split(":label:", 1)[1].strip()
        if not stripped.startswith(":"):
            break
    raise AssignmentError(f"an exercise needs a :label: option (near {lines[start]!r})")


def _skip_directive(lines: list[str], start: int, fence: str) -> int:
    """Index after a short directive block such as ```{solution-end}\\n```."""
    for j in range(start + 1, len(lines)):
        if lines[j].strip() == fence:
            return j + 1
    return len(lines)


def _stub(source: str, begin: str, end: str, replacement: list[str]) -> str:
    kept, _, _ = _regions(source, begin, end)
    out = []
    for item in kept:
        if isinstance(item, tuple):
            out += [item[1] + r for r in replacement]
        else:
            out.append(item)
    return "\n".join(out)


def tag(nb: nbformat.NotebookNode, exercises: list[Exercise], source: str) -> None:
    """Mark solution and check cells in the cells' metadata, and the source in the notebook's."""
    for ex in exercises:
        for index in ex.solution_cells:
            nb.cells[index].metadata[METADATA_KEY] = {"exercise": ex.label, "role": "solution"}
        nb.cells[ex.check_cell].metadata[METADATA_KEY] = {"exercise": ex.label, "role": "check"}
        if ex.hidden_cell is not None:
            nb.cells[ex.hidden_cell].metadata[METADATA_KEY] = {
                "exercise": ex.label,
                "role": "hidden",
            }
    nb.metadata[METADATA_KEY] = {"source": source, "exercises": [ex.label for ex in exercises]}


# ------------------------------------------------------------------------------------------
# Student edition
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Release:
    notebook: nbformat.NotebookNode
    exercises: list[Exercise]
    written: list[Path]


def student_edition(chapter: str | Path) -> tuple[nbformat.NotebookNode, list[Exercise]]:
    """The student notebook of a chapter (in memory) and its exercises."""
    chapter = Path(chapter)
    nb = read_chapter(chapter)
    exercises, kept_text = analyse(nb)
    if not exercises:
        raise AssignmentError(f"{chapter} has no exercises")
    tag(nb, exercises, _source_name(chapter))
    roles = {}
    for ex in exercises:
        for index in ex.solution_cells:
            roles[index] = "solution"
        roles[ex.check_cell] = "check"
        if ex.hidden_cell is not None:
            roles[ex.hidden_cell] = "hidden"
    cells = []
    for index, cell in enumerate(nb.cells):
        cell = copy.deepcopy(cell)
        if cell.cell_type == "markdown":
            if kept_text[index] is None:
                continue
            cell.source = kept_text[index]
        elif roles.get(index) == "hidden":
            continue
        else:
            if roles.get(index) == "solution":
                cell.source = _stub(cell.source, BEGIN_SOLUTION, END_SOLUTION, STUB)
            elif roles.get(index) == "check":
                cell.source = _stub(cell.source, BEGIN_HIDDEN, END_HIDDEN, [])
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    nb.cells = cells
    nb.metadata[METADATA_KEY]["edition"] = "student"
    return nb, exercises


def _source_name(chapter: Path) -> str:
    """The chapter's path relative to the repository (or as given)."""
    chapter = chapter.resolve()
    root = _repository_root()
    if root is not None:
        try:
            return str(chapter.relative_to(root))
        except ValueError:
            pass
    return str(chapter)


def _repository_root() -> Path | None:
    """The repository that holds the installed package (lib/conserved -> ../..), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "chapters").is_dir() else None


def release(
    chapter: str | Path, out_dir: str | Path, *, markdown: bool = False, force: bool = False
) -> Release:
    """Write the student edition of `chapter` into `out_dir` (never into a chapters folder)."""
    chapter, out_dir = Path(chapter), Path(out_dir)
    chapters_dir = chapter.resolve().parent
    target = out_dir.resolve()
    if target == chapters_dir or chapters_dir in target.parents or target.name == "chapters":
        raise AssignmentError(
            f"refusing to write a student edition into {out_dir}: choose another --out"
        )
    nb, exercises = student_edition(chapter)
    paths = [target / f"{chapter.stem}.ipynb"]
    if markdown:
        paths.append(target / f"{chapter.stem}.md")
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise AssignmentError(f"{existing[0]} exists; pass --force to overwrite it")
    target.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, paths[0])
    if markdown:
        jupytext.write(nb, paths[1], fmt="md:myst")
    return Release(nb, exercises, paths)


# ------------------------------------------------------------------------------------------
# Grading
#
# Threat model: the submission is hostile. Its code runs only in a sandboxed kernel (own empty
# working directory, no network, read-only file system, reduced environment, memory, process
# and file-size limits, its own pid namespace killed as a whole at the time limits). The
# kernel never runs a check: each check cell runs in a separate *checker* process that only
# ever receives data (numbers, strings, arrays decoded without pickle) and fresh imports, and
# reaches the student's functions and objects through proxies whose calls execute in the
# kernel and answer with data. Whatever the kernel patches, the checker's numpy, library and
# assertions are its own. The grader reads outcomes from the checker, with a per-run secret
# nonce, never from the kernel or from a file.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ExerciseResult:
    label: str
    points: float
    score: float
    status: str  # passed, failed, not run, missing
    message: str = ""


@dataclasses.dataclass
class GradeReport:
    submission: str
    source: str | None
    exercises: list[ExerciseResult]
    message: str = ""
    seconds: float = 0.0
    cell_errors: list[str] = dataclasses.field(default_factory=list)
    protections_off: list[str] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(e.score for e in self.exercises)

    @property
    def maximum(self) -> float:
        return sum(e.points for e in self.exercises)

    def to_json(self) -> dict:
        return {
            "submission": self.submission,
            "source": self.source,
            "total": self.total,
            "max": self.maximum,
            "message": self.message,
            "seconds": round(self.seconds, 1),
            "exercises": [dataclasses.asdict(e) for e in self.exercises],
            "cell_errors": self.cell_errors,
            "protections_off": self.protections_off,
        }

    def table(self) -> str:
        width = max([len(e.label) for e in self.exercises] + [8])
        lines = [f"{'exercise':<{width}}  score  status"]
        for e in self.exercises:
            note = f"  ({e.message})" if e.message else ""
            lines.append(f"{e.label:<{width}}  {e.score:g}/{e.points:g}    {e.status}{note}")
        lines.append(f"{'total':<{width}}  {self.total:g}/{self.maximum:g}")
        if self.message:
            lines.append(self.message)
        if self.protections_off:
            lines.append("sandbox protections off: " + "; ".join(self.protections_off))
        return "\n".join(lines)


def _reference_for(submission: Path, source: str | Path | None) -> Path:
    """The instructor's chapter for a submission: `source` itself when it is a file, else the
    chapter of the folder `source` (default: the repository's chapters/) whose name the
    submission's file name starts with. Never taken from the submission's contents."""
    if source is not None and Path(source).is_file():
        return Path(source)
    if source is None:
        root = _repository_root()
        if root is None:
            raise AssignmentError("no chapters folder next to the package: pass --source CHAPTER")
        folder = root / "chapters"
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise AssignmentError(f"cannot find the chapter {source}: pass --source CHAPTER")
    stem = submission.stem
    matches = [
        p
        for p in sorted(folder.glob("*.md"))
        if stem == p.stem or (stem.startswith(p.stem) and stem[len(p.stem)] in "-_. ")
    ]
    if not matches:
        raise AssignmentError(
            f"no chapter in {folder} matches the file name {submission.name!r} "
            "(keep the released file's name, or pass --source CHAPTER)"
        )
    return max(matches, key=lambda p: len(p.stem))


def _error_text(ename: str, evalue: str) -> str:
    value = str(evalue).strip().split("\n")[0]
    return f"{ename}: {value}"[:300]


# ---- data that crosses between processes: JSON, arrays as .npy without pickle ------------

_KERNEL_HELPER = r"""
def __conserved_setup():
    import base64, io, json, sys, types
    import numpy
    refs = {}
    allowed = set(%(allowed)r)
    limit = %(limit)d

    def ref(value):
        refs[str(id(value))] = value
        return {"__ref__": str(id(value)), "type": type(value).__name__}

    def enc(value, depth=0):
        if depth > 20:
            raise ValueError("data nested too deeply")
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return {"__float__": repr(value)}
        if isinstance(value, complex):
            return {"__complex__": [value.real, value.imag]}
        if isinstance(value, types.ModuleType):
            name = value.__name__
            if name.split(".")[0] in allowed:
                return {"__module__": name}
            return ref(value)
        jax = sys.modules.get("jax")  # None while the notebook has not imported JAX
        is_jax = jax is not None and isinstance(value, jax.Array)
        if is_jax or isinstance(value, (numpy.ndarray, numpy.generic)):
            array = numpy.asarray(value)
            if array.dtype.kind in "biufc":
                buffer = io.BytesIO()
                numpy.save(buffer, array, allow_pickle=False)
                return {"__nd__": base64.b64encode(buffer.getvalue()).decode(), "jax": is_jax,
                        "scalar": isinstance(value, numpy.generic)}
            return ref(value)
        if isinstance(value, (list, tuple)):
            items = [enc(v, depth + 1) for v in value]
            return items if isinstance(value, list) else {"__tuple__": items}
        return ref(value)  # dicts, functions, models, objects: reached through proxies

    def dec(value):
        if isinstance(value, list):
            return [dec(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__float__" in value:
            return float(value["__float__"])
        if "__complex__" in value:
            return complex(*value["__complex__"])
        if "__tuple__" in value:
            return tuple(dec(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {dec(k): dec(v) for k, v in value["__dict__"]}
        if "__ref__" in value:
            return refs[value["__ref__"]]
        if "__module__" in value:
            import importlib
            return importlib.import_module(value["__module__"])
        if "__nd__" in value:
            array = numpy.load(io.BytesIO(base64.b64decode(value["__nd__"])), allow_pickle=False)
            if value.get("scalar"):
                return array[()]
            jax = sys.modules.get("jax")
            return jax.numpy.asarray(array) if value.get("jax") and jax else array
        raise ValueError("unknown value")

    def rpc(request, namespace):
        request = json.loads(request)
        try:
            op = request["op"]
            if op == "export":
                jax = sys.modules.get("jax")
                names = {n: enc(namespace[n]) for n in request["names"] if n in namespace}
                x64 = bool(jax.config.jax_enable_x64) if jax is not None else None
                result = {"names": names, "x64": x64}
            else:
                target = refs[request["ref"]]
                if op == "getattr":
                    result = enc(getattr(target, request["name"]))
                elif op == "getitem":
                    result = enc(target[dec(request["key"])])
                elif op == "len":
                    result = len(target)
                elif op == "keys":
                    result = [enc(k) for k in target.keys()]
                elif op == "call":
                    result = enc(target(*dec(request["args"]), **dec(request["kwargs"])))
                else:
                    raise ValueError(op)
            reply = {"ok": True, "value": result}
        except BaseException as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        text = json.dumps(reply)
        if len(text) > limit:
            text = json.dumps({"ok": False, "error": "the value is too large to check"})
        namespace["__conserved_reply"] = text

    return rpc

__conserved_rpc = __conserved_setup()
del __conserved_setup
"""

_ALLOWED_MODULES = (
    "numpy",
    "jax",
    "jaxlib",
    "equinox",
    "diffrax",
    "optax",
    "lineax",
    "jaxtyping",
    "conserved",
    "scipy",
    "math",
    "cmath",
    "functools",
    "itertools",
    "collections",
    "matplotlib",
    "time",
)
_REPLY_LIMIT = 256 * 2**20


# ---- the sandbox ---------------------------------------------------------------------------

_SANDBOX_SCRIPT = r"""
set -e
mount --make-rprivate /
for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
mount --bind "$1" "$1"
mount -o remount,bind,rw "$1"
cd "$1"
shift
exec "$@"
"""


@dataclasses.dataclass
class Sandbox:
    """How the kernel is confined on this machine (probed once per process)."""

    namespaces: bool  # own mount, network and pid namespaces (unshare)
    drop_caps: bool  # as root: the kernel runs without any capability
    map_root: bool  # a user namespace of its own (its process count starts at zero)
    off: list[str]


_SANDBOX: Sandbox | None = None


def _probe(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def sandbox() -> Sandbox:
    """Probe which protections this machine allows."""
    global _SANDBOX
    if _SANDBOX is not None:
        return _SANDBOX
    off = []
    root = os.geteuid() == 0
    unshare = shutil.which("unshare")
    namespaces = False
    map_root = False
    if unshare and sys.platform.startswith("linux"):
        base = [unshare, "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork"]
        base.append("--kill-child")
        probe = base + ["sh", "-c", _SANDBOX_SCRIPT, "sh", tempfile.gettempdir(), "true"]
        namespaces = _probe(probe)
        map_root = namespaces
    if not namespaces:
        off += [
            "network (no network namespace: unshare is missing or user namespaces are off)",
            "read-only file system (no mount namespace)",
            "process isolation (no pid namespace; the kernel's session is killed instead)",
        ]
        if root:
            off.append("process limit (root is exempt from RLIMIT_NPROC; the count is watched)")
    drop_caps = root and shutil.which("setpriv") is not None
    if root and not drop_caps:
        off.append("dropping root's capabilities (setpriv missing: limits and mounts are weaker)")
    _SANDBOX = Sandbox(namespaces, drop_caps, map_root, off)
    return _SANDBOX


def _tasks_of(uid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(entry / "task"))
            except OSError:
                pass
    return count


def _limits(memory_bytes: int, processes: int, own_namespace: bool):
    # in a user namespace of its own the count starts at zero; else it counts all the user's
    # tasks (and root is exempt: sandbox() then reports the limit as off)
    nproc = processes if own_namespace else _tasks_of(os.getuid()) + processes

    def apply():  # runs in the child before exec
        import ctypes
        import resource

        os.setsid()
        try:  # if the grader dies, so does the sandbox (and, with it, everything inside)
            ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        except (OSError, AttributeError):
            pass
        for limit, value in (
            (resource.RLIMIT_AS, memory_bytes),
            (resource.RLIMIT_NPROC, nproc),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_FSIZE, 2**30),
        ):
            try:
                resource.setrlimit(limit, (value, value))
            except (ValueError, OSError):
                pass

    return apply


def _kernel_env(workdir: Path, mode: str) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    package_parent = str(Path(__file__).resolve().parents[1])
    paths = [package_parent] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != package_parent
    ]
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        HOME=str(workdir),
        TMPDIR=str(workdir),
        IPYTHONDIR=str(workdir / ".ipython"),
        MPLCONFIGDIR=str(workdir / ".matplotlib"),
        XDG_CACHE_HOME=str(workdir / ".cache"),
        JUPYTER_RUNTIME_DIR=str(workdir / ".jupyter"),
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        CONSERVED_MODE=mode,
    )
    env.setdefault("PATH", "/usr/bin:/bin")
    # the instructor's JAX compilation cache, read-only in the sandbox: compiled programs are
    # reused (new ones are not written back: JAX only warns), so grading is not a cold start
    cache = os.environ.get("CONSERVED_JAX_CACHE")
    if cache is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        cache = os.path.join(base, "conserved", "jax")
        cache = cache if os.path.isdir(cache) else "off"
    env["CONSERVED_JAX_CACHE"] = cache
    return env


def _kernel_log():
    """The kernel's stderr: a file named by CONSERVED_KERNEL_LOG (for debugging), else none."""
    path = os.environ.get("CONSERVED_KERNEL_LOG")
    return open(path, "w") if path else subprocess.DEVNULL  # noqa: SIM115


class Kernel:
    """A sandboxed IPython kernel in an empty folder, spoken to over Unix sockets."""

    def __init__(self, workdir: Path, mode: str, memory_bytes: int, processes: int):
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        box = sandbox()
        self.workdir = workdir
        workdir.mkdir(mode=0o700)
        connection, _ = write_connection_file(
            str(workdir / "connection.json"), transport="ipc", ip=str(workdir / "k")
        )
        python = [sys.executable, "-m", "ipykernel_launcher", "-f", connection]
        command = python
        if box.drop_caps:  # root without capabilities: cannot remount, escape or override
            drop = ["--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]
            command = ["setpriv", *drop] + command
        if box.namespaces:
            prefix = ["unshare", "--user", "--map-root-user", "--mount", "--net", "--pid"]
            prefix += ["--fork", "--kill-child"]
            command = prefix + ["sh", "-c", _SANDBOX_SCRIPT, "sh", str(workdir)] + command
        self.process = subprocess.Popen(
            command,
            cwd=workdir,
            env=_kernel_env(workdir, mode),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.environ["CONSERVED_KERNEL_LOG"], "w")
            if os.environ.get("CONSERVED_KERNEL_LOG")
            else subprocess.DEVNULL,
            preexec_fn=_limits(memory_bytes, processes, box.map_root),
        )
        self.namespace = None  # the kernel's pid namespace, once it is known (count, kill)
        self.client = BlockingKernelClient()
        self.client.load_connection_file(connection)
        self.client.start_channels(hb=False)
        deadline = time.monotonic() + 120
        while True:  # the sockets appear once the sandboxed kernel has started
            if not self.alive() or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("the kernel did not start")
            self.client.kernel_info()
            try:
                self.client.get_shell_msg(timeout=2)
                break
            except queue.Empty:
                pass

        self.processes = processes
        self.kernel_pid = self.process.pid  # setpriv and sh exec the kernel: same process
        try:  # the kernel's pid namespace: every process the submission starts is in it
            child = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            first = child.read_text().split()
            if box.namespaces and first:
                self.kernel_pid = int(first[0])
                self.namespace = os.readlink(f"/proc/{first[0]}/ns/pid")
        except (OSError, ValueError):
            pass

    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> list[int]:
        """The processes the submission runs (its pid namespace, or the kernel's session)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if self.namespace is not None:
                    inside = os.readlink(f"/proc/{entry}/ns/pid") == self.namespace
                else:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    inside = int(stat.rsplit(")", 1)[1].split()[3]) == self.process.pid
            except (OSError, ValueError, IndexError):
                continue
            if inside:
                found.append(int(entry))
        return found

    def execute(
        self, code: str, timeout: float, reply: bool = False, outputs: list | None = None
    ) -> dict:
        """Run code; return {status, error, replies}. Status: ok, error, timeout, dead.

        Completion and errors come from the shell channel's execute_reply (never dropped);
        with `reply`, the value of `__conserved_reply` comes back in the same message. The
        kernel's broadcast output (iopub) is drained and ignored: a submission that floods
        it cannot make the grader lose a message it needs. With `outputs` (a trusted run that
        records what it displays), iopub is read until the kernel reports the request idle and
        its outputs are appended to `outputs` as notebook outputs."""
        expressions = {"r": "__conserved_reply"} if reply else {}
        msg_id = self.client.execute(
            code,
            store_history=False,
            allow_stdin=False,
            user_expressions=expressions,
            stop_on_error=False,  # an error must not abort the requests that follow
        )
        deadline = time.monotonic() + timeout
        out = {"status": None, "error": None, "replies": []}
        next_count = time.monotonic() + 0.25
        idle = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out["status"] = "timeout"
                return out
            if not self.alive():
                out["status"] = "dead"
                return out
            idle = self._drain(msg_id, outputs) or idle
            try:
                msg = self.client.get_shell_msg(timeout=min(remaining, 0.25))
            except queue.Empty:  # meanwhile, watch the number of processes
                if time.monotonic() > next_count:
                    next_count = time.monotonic() + 0.25
                    if len(self.pids()) > self.processes:
                        self.kill()
                        out["status"] = "dead"
                        out["error"] = (
                            f"the submission started more than {self.processes} processes"
                        )
                        return out
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            content = msg.get("content", {})
            if content.get("status") == "error":
                out["error"] = _error_text(content.get("ename", ""), content.get("evalue", ""))
            elif content.get("status") != "ok":
                out["error"] = f"the cell ended with status {str(content.get('status'))[:40]}"
            value = content.get("user_expressions", {}).get("r", {})
            text = value.get("data", {}).get("text/plain") if isinstance(value, dict) else None
            if isinstance(text, str):
                try:
                    out["replies"].append(ast.literal_eval(text))
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    pass
            out["status"] = "error" if out["error"] else "ok"
            if outputs is not None and not idle:
                self._drain_until_idle(msg_id, outputs, deadline)
            return out

    def _drain(self, msg_id: str | None = None, outputs: list | None = None) -> bool:
        """Empty the iopub channel; with `outputs`, keep what the request `msg_id` displayed.
        True when the kernel reported that request idle meanwhile."""
        idle = False
        for _ in range(10000):
            try:
                msg = self.client.get_iopub_msg(timeout=0)
            except queue.Empty:
                break
            if outputs is not None:
                idle = _record(msg, msg_id, outputs) or idle
        return idle

    def _drain_until_idle(self, msg_id: str, outputs: list, deadline: float) -> None:
        """Record iopub output of `msg_id` until the kernel reports it idle (trusted runs only)."""
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_iopub_msg(
                    timeout=max(0.0, min(5.0, deadline - time.monotonic()))
                )
            except queue.Empty:
                return
            if _record(msg, msg_id, outputs):
                return

    def interrupt(self) -> None:
        try:
            os.kill(self.kernel_pid, signal.SIGINT)
        except OSError:
            pass
        try:
            self.client.session.send(self.client.control_channel.socket, "interrupt_request", {})
        except Exception:  # noqa: BLE001
            pass

    def kill(self) -> None:
        try:
            self.client.stop_channels()
        except Exception:  # noqa: BLE001
            pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except OSError:
                pass
        try:
            self.process.kill()
            self.process.wait(timeout=30)
        except Exception:  # noqa: BLE001
            pass
        # SIGKILL reaches the submission's other processes asynchronously (the pid namespace
        # dies with its first process; a busy machine takes a while to end the rest), and a
        # process that left the kernel's process group escapes killpg: kill whatever is left
        # until nothing is, so that nothing the submission started outlives grading
        deadline = time.monotonic() + 30
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)


def _record(msg: dict, msg_id: str | None, outputs: list) -> bool:
    """Append an iopub message of request `msg_id` to `outputs` as a notebook output (as
    nbclient does); True once the kernel says the request is done (status idle)."""
    if msg.get("parent_header", {}).get("msg_id") != msg_id:
        return False
    kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
    content = msg.get("content", {})
    if kind == "status":
        return content.get("execution_state") == "idle"
    if kind == "clear_output":
        outputs.clear()
    elif kind in ("stream", "display_data", "execute_result", "error"):
        outputs.append(nbformat.v4.output_from_msg(msg))
    return False


# ---- the checker: a clean process that runs the instructor's checks on data ---------------


class Checker:
    """A clean Python process (instructor code only) that runs check cells."""

    def __init__(self, workdir: Path, nonce: str, preload: list[str] = ()):
        workdir.mkdir(mode=0o700)
        env = _kernel_env(workdir, "quick")
        env["MPLBACKEND"] = "Agg"
        self.nonce = nonce
        self.process = subprocess.Popen(
            [sys.executable, "-m", "conserved.assignments", "_checker"],
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self._send({"nonce": nonce, "preload": list(preload)})

    def _send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def check(self, label: str, source: str, kernel: Kernel, call_timeout: float) -> tuple:
        """Run one check; relay the checker's requests to the kernel. (passed, message)."""
        try:
            names = sorted(
                {
                    n.id
                    for n in ast.walk(ast.parse(source))
                    if isinstance(n, ast.Name) and n.id not in dir(builtins)
                }
            )
        except SyntaxError as exc:
            return False, f"the instructor's check does not parse: {exc}"
        exported = kernel.execute(
            "__conserved_reply = None\n"
            f"__conserved_rpc({json.dumps(json.dumps({'op': 'export', 'names': names}))}, "
            "globals())",
            call_timeout,
            reply=True,
        )
        reply = _reply(exported)
        if not reply.get("ok"):
            return False, f"the submission's values could not be read: {reply.get('error')}"
        self._send({"label": label, "source": source, **reply["value"]})
        while True:
            line = self.process.stdout.readline()
            if not line:
                return False, "the checker stopped unexpectedly"
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("nonce") != self.nonce:
                continue
            if message["type"] == "result":
                return message["passed"], message["message"]
            # a proxy request: run it in the kernel, answer with data
            answer = kernel.execute(
                "__conserved_reply = None\n"
                f"__conserved_rpc({json.dumps(json.dumps(message['request']))}, globals())",
                call_timeout,
                reply=True,
            )
            self._send({"reply": _reply(answer)})

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except OSError:
                pass
        self.process.wait()


def _reply(result: dict) -> dict:
    if result["status"] == "timeout":
        return {"ok": False, "error": "the submission's code ran past the cell time limit"}
    if result["status"] == "dead":
        return {"ok": False, "error": "the kernel died"}
    if not result["replies"]:
        return {"ok": False, "error": result["error"] or "no answer from the kernel"}
    try:
        reply = json.loads(result["replies"][-1])
    except (ValueError, TypeError):
        return {"ok": False, "error": "an unreadable answer from the kernel"}
    return reply if isinstance(reply, dict) else {"ok": False, "error": "a malformed answer"}


def _checker_main() -> int:
    """The checker process: fresh namespace per check; student objects only as proxies."""
    import base64
    import contextlib
    import importlib
    import io
    import traceback

    import numpy

    protocol = sys.stdout
    sys.stdout = io.StringIO()
    hello = json.loads(sys.stdin.readline())
    nonce = hello["nonce"]
    for name in hello.get("preload", []):  # imported while the submission runs
        if name.split(".")[0] in _ALLOWED_MODULES:
            try:
                importlib.import_module(name)
            except ImportError:
                pass

    def send(message):
        protocol.write(json.dumps({"nonce": nonce, **message}) + "\n")
        protocol.flush()

    class RemoteError(Exception):
        pass

    def request(payload):
        send({"type": "request", "request": payload})
        reply = json.loads(sys.stdin.readline())["reply"]
        if not reply.get("ok"):
            raise RemoteError(str(reply.get("error"))[:500])
        return reply.get("value")

    class Remote:
        """A student object: every use runs in the student's kernel and returns data."""

        def __init__(self, ref, kind):
            object.__setattr__(self, "_ref", ref)
            object.__setattr__(self, "_kind", kind)

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return dec(request({"op": "getattr", "ref": self._ref, "name": name}))

        def __getitem__(self, key):
            return dec(request({"op": "getitem", "ref": self._ref, "key": enc(key)}))

        def __call__(self, *args, **kwargs):
            payload = {"op": "call", "ref": self._ref, "args": enc(list(args))}
            payload["kwargs"] = {"__dict__": [[k, enc(v)] for k, v in kwargs.items()]}
            return dec(request(payload))

        def __len__(self):
            return int(request({"op": "len", "ref": self._ref}))

        def __iter__(self):
            raise TypeError(f"a check cannot iterate over the submission's {self._kind}")

        def __array__(self, *args, **kwargs):
            raise TypeError(f"the submission's {self._kind} is not an array")

        def keys(self):
            return [dec(k) for k in request({"op": "keys", "ref": self._ref})]

        def __repr__(self):
            return f"<submission's {self._kind}>"

    def enc(value):
        if isinstance(value, Remote):
            return {"__ref__": value._ref}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return {"__float__": repr(value)}
        if isinstance(value, (list, tuple)):
            items = [enc(v) for v in value]
            return items if isinstance(value, list) else {"__tuple__": items}
        if isinstance(value, dict):
            return {"__dict__": [[enc(k), enc(v)] for k, v in value.items()]}
        jax = sys.modules.get("jax")
        is_jax = jax is not None and isinstance(value, jax.Array)
        array = numpy.asarray(value)
        buffer = io.BytesIO()
        numpy.save(buffer, array, allow_pickle=False)
        return {"__nd__": base64.b64encode(buffer.getvalue()).decode(), "jax": is_jax}

    def dec(value):
        if isinstance(value, list):
            return [dec(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__float__" in value:
            return float(value["__float__"])
        if "__complex__" in value:
            return complex(*value["__complex__"])
        if "__tuple__" in value:
            return tuple(dec(v) for v in value["__tuple__"])
        if "__ref__" in value:
            return Remote(str(value["__ref__"]), str(value.get("type", "object")))
        if "__module__" in value:
            name = str(value["__module__"])
            if name.split(".")[0] not in _ALLOWED_MODULES:
                raise RemoteError(f"module {name} is not available to checks")
            return importlib.import_module(name)
        if "__nd__" in value:
            raw = base64.b64decode(value["__nd__"])
            array = numpy.load(io.BytesIO(raw), allow_pickle=False)
            if array.dtype.kind not in "biufc":
                raise RemoteError("not a numeric array")
            if value.get("scalar"):
                return array[()]
            if value.get("jax"):
                import jax.numpy as jnp

                return jnp.asarray(array)
            return array
        raise RemoteError("malformed data")

    for line in sys.stdin:
        job = json.loads(line)
        printed = io.StringIO()
        try:
            if job.get("x64") is not None:
                import jax

                jax.config.update("jax_enable_x64", bool(job["x64"]))
            namespace = {"__name__": "__check__"}
            for name, value in job["names"].items():
                namespace[str(name)] = dec(value)
            with contextlib.redirect_stdout(printed):
                exec(compile(job["source"], f"<check {job['label']}>", "exec"), namespace)
            send({"type": "result", "passed": True, "message": ""})
        except BaseException as exc:  # noqa: BLE001 - a failed check is a result
            if isinstance(exc, NameError):
                message = f"NameError: {exc}"
            else:
                frames = traceback.extract_tb(exc.__traceback__)
                where = [f for f in frames if f.filename.startswith("<check")]
                line_text = f" (check line: {where[-1].line})" if where and where[-1].line else ""
                message = f"{type(exc).__name__}: {str(exc).strip()}"[:300] + line_text
            send({"type": "result", "passed": False, "message": message[:400]})
    return 0


# ---- grade -----------------------------------------------------------------------------------


def _read_submission(submission: Path) -> nbformat.NotebookNode:
    if submission.suffix == ".md":
        nb = jupytext.reads(submission.read_text(encoding="utf-8"), fmt="md:myst")
        own, _ = analyse(nb)  # a chapter source: tag it like a release would
        tag(nb, own, submission.name)
        return nb
    return nbformat.reads(submission.read_text(encoding="utf-8"), as_version=4)


def grade(
    submission: str | Path,
    *,
    source: str | Path | None = None,
    cell_timeout: int = 300,
    total_timeout: int = 1800,
    mode: str = "quick",
    memory_gb: float = 8.0,
    processes: int = 512,
    strict: bool = False,
    record: str | Path | None = None,
) -> GradeReport:
    """Grade a submitted notebook (`.ipynb`, or a MyST `.md` chapter) against the instructor's
    chapter: `source` (a chapter file, or a folder of chapters matched by the submission's
    file name; default the repository's chapters/). Never raises for anything a submission
    contains: problems become zero scores with a message.

    `record`: also write the submission, with the outputs its kernel displayed, to this
    `.ipynb` (for the instructor's own chapters only: the test suite hands it to the book build
    so that a chapter executes once; check cells run in the checker and keep no outputs)."""
    submission = Path(submission)
    start = time.perf_counter()
    try:
        chapter = _reference_for(submission, source)
        reference = read_chapter(chapter)
        exercises, _ = analyse(reference)
    except AssignmentError as exc:
        return GradeReport(str(submission), None, [], str(exc))
    results = {e.label: ExerciseResult(e.label, 1.0, 0.0, "not run") for e in exercises}
    report = GradeReport(str(submission), str(chapter), list(results.values()))
    box = sandbox()
    report.protections_off = list(box.off)
    if strict and box.off:
        report.message = "--strict: refusing to grade without " + "; ".join(box.off)
        for r in results.values():
            r.message = "not graded (--strict)"
        return report
    try:
        _grade_into(
            report,
            results,
            exercises,
            submission,
            chapter,
            cell_timeout,
            total_timeout,
            mode,
            int(memory_gb * 2**30),
            processes,
            record,
        )
    except Exception as exc:  # noqa: BLE001 - never raise for a submission
        report.message = report.message + f" grading stopped: {type(exc).__name__}: {exc}"
        report.message = report.message.strip()[:500]
    report.seconds = time.perf_counter() - start
    return report


_TOTAL = "the notebook did not finish within the total time limit of %s s"
_DIED = "the kernel died (the notebook crashed the Python process); later cells did not run"


def _grade_into(
    report,
    results,
    exercises,
    submission,
    chapter,
    cell_timeout,
    total_timeout,
    mode,
    memory_bytes,
    processes,
    record=None,
) -> None:
    try:
        nb = _read_submission(submission)
    except FileNotFoundError:
        nb, report.message = None, f"submission {submission} does not exist"
    except Exception as exc:  # noqa: BLE001 - invalid JSON, not a notebook, malformed source
        nb = None
        report.message = (
            f"the submission is not a valid notebook ({type(exc).__name__}: {str(exc)[:200]})"
        )
    if nb is None:
        for r in results.values():
            r.message = "no valid notebook"
        return
    claimed = (
        nb.metadata.get(METADATA_KEY, {}).get("source")
        if isinstance(nb.metadata.get(METADATA_KEY), dict)
        else None
    )
    if claimed and Path(str(claimed)).name != chapter.name:
        report.message = (
            f"the submission claims to belong to {str(claimed)[:100]!r}; "
            f"graded against the instructor's {chapter.name}"
        )
    checks = {e.label: e.check_source for e in exercises}
    plan = []  # ("code", index, source) or ("check", index, label)
    seen = set()
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get(METADATA_KEY, {})
        meta = meta if isinstance(meta, dict) else {}
        role, label = meta.get("role"), meta.get("exercise")
        if role == "hidden":
            continue
        if role == "check" and label in checks and label not in seen:
            seen.add(label)
            plan.append(("check", index, label))
        elif role != "check":
            plan.append(("code", index, str(cell.get("source", ""))))
    for label in set(checks) - seen:
        results[label].status = "missing"
        results[label].message = "its check cell is missing from the submission"

    deadline = time.monotonic() + total_timeout
    stop = ""
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="conserved-grade-") as tmp:
        os.chmod(tmp, 0o711)  # the kernel's user may pass through to its own folder only
        kernel = checker = None
        try:
            uses_jax = "import jax" in "\n".join(c.source for c in read_chapter(chapter).cells)
            preload = ["jax", "jax.numpy", "conserved"] if uses_jax else []
            checker = Checker(Path(tmp, "checker"), nonce, preload)
            kernel = Kernel(Path(tmp, "kernel"), mode, memory_bytes, processes)
            kernel.execute(
                "%matplotlib inline\n"
                + _KERNEL_HELPER % {"allowed": _ALLOWED_MODULES, "limit": _REPLY_LIMIT},
                120,
            )
            for kind, index, payload in plan:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stop = _TOTAL % total_timeout
                    break
                if not kernel.alive():
                    stop = _DIED
                    break
                limit = min(cell_timeout, remaining)
                if kind == "code":
                    outputs = [] if record is not None else None
                    ran = kernel.execute(payload, limit, outputs=outputs)
                    if outputs is not None:
                        nb.cells[index].outputs = outputs
                    if ran["status"] == "error":
                        report.cell_errors.append(f"cell {index}: {ran['error']}")
                    elif ran["status"] == "timeout":
                        if limit < cell_timeout:
                            stop = _TOTAL % total_timeout
                            break
                        report.cell_errors.append(f"cell {index}: timed out after {cell_timeout} s")
                        kernel.interrupt()
                        settle = kernel.execute("pass", 30)
                        if settle["status"] != "ok":
                            stop = (
                                f"a cell ran past the cell time limit of {cell_timeout} s "
                                "and could not be interrupted; later cells did not run"
                            )
                            break
                    elif ran["status"] == "dead":
                        stop = f"{ran['error']}: {_DIED}" if ran["error"] else _DIED
                        report.cell_errors.append(f"cell {index}: {stop}")
                        break
                    continue
                passed, message = checker.check(payload, checks[payload], kernel, limit)
                result = results[payload]
                if passed:
                    result.status, result.score, result.message = "passed", result.points, ""
                else:
                    result.status, result.message = "failed", message
                    if not kernel.alive():
                        stop = _DIED
                        break
        finally:
            if kernel is not None:
                kernel.kill()
            if checker is not None:
                checker.close()
    if record is not None:
        nbformat.write(nb, str(record))
    if stop:
        for r in results.values():
            if r.status == "not run":
                r.message = stop
        report.message = (report.message + " " + stop).strip()


# ---- a folder of submissions -----------------------------------------------------------------


def gradebook(folder: str | Path, *, source: str | Path | None = None, **options) -> list:
    """Grade every `.ipynb` (and `.md`) file of a folder; one report per submission."""
    files = sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix in (".ipynb", ".md")
    )
    return [grade(p, source=source, **options) for p in files]


def write_gradebook(reports: list, path: str | Path) -> Path:
    """Write reports as CSV (one row per submission, one column per exercise) or JSON."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps([r.to_json() for r in reports], indent=2))
        return path
    labels = []
    for r in reports:
        for e in r.exercises:
            if e.label not in labels:
                labels.append(e.label)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", "total", "max"] + labels + ["message"])
        for r in reports:
            scores = {e.label: e.score for e in r.exercises}
            notes = [r.message] + [f"{e.label}: {e.message}" for e in r.exercises if e.message]
            writer.writerow(
                [Path(r.submission).name, r.total, r.maximum]
                + [scores.get(label, "") for label in labels]
                + [" | ".join(n for n in notes if n)[:1000]]
            )
    return path


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="conserved-assignments", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="write the student edition of a chapter")
    rel.add_argument("chapter")
    rel.add_argument("--out", required=True, help="folder for the student notebook")
    rel.add_argument("--md", action="store_true", help="also write a MyST .md version")
    rel.add_argument("--force", action="store_true", help="overwrite existing files")
    gr = sub.add_parser("grade", help="grade a submitted notebook, or a folder of them")
    gr.add_argument("submission", help="a notebook, or a folder of notebooks")
    gr.add_argument(
        "--source",
        help="the instructor's chapter, or a folder of chapters matched by file name "
        "(default: the repository's chapters/)",
    )
    gr.add_argument("--json", action="store_true", help="print a JSON report")
    gr.add_argument("--out", help="gradebook file for a folder (.csv or .json)")
    gr.add_argument("--cell-timeout", type=int, default=300)
    gr.add_argument("--total-timeout", type=int, default=1800)
    gr.add_argument("--mode", default="quick", choices=["quick", "full"])
    gr.add_argument("--memory-gb", type=float, default=8.0)
    gr.add_argument("--strict", action="store_true", help="refuse to grade without a full sandbox")
    sub.add_parser("_checker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.command == "_checker":
        return _checker_main()
    if args.command == "release":
        try:
            result = release(args.chapter, args.out, markdown=args.md, force=args.force)
        except AssignmentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {', '.join(str(p) for p in result.written)}")
        for ex in result.exercises:
            print(
                f"  {ex.label}: {len(ex.solution_cells)} solution cell(s), "
                f"{len(ex.solution_lines)} solution line(s) stubbed, "
                f"{len(ex.hidden_lines)} hidden test line(s) removed, "
                f"{ex.text_lines_removed} line(s) of solution text removed"
            )
        return 0
    options = dict(
        source=args.source,
        cell_timeout=args.cell_timeout,
        total_timeout=args.total_timeout,
        mode=args.mode,
        memory_gb=args.memory_gb,
        strict=args.strict,
    )
    if Path(args.submission).is_dir():
        reports = gradebook(args.submission, **options)
        out = Path(args.out or Path(args.submission) / "gradebook.csv")
        write_gradebook(reports, out)
        for r in reports:
            print(f"{Path(r.submission).name}: {r.total:g}/{r.maximum:g} {r.message}".rstrip())
        print(f"wrote {out}")
        return 0 if all(r.source is not None for r in reports) else 2
    report = grade(args.submission, **options)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    return 0 if report.source is not None else 2


if __name__ == "__main__":
    sys.exit(main())
