"""The project's pins: exact everywhere, and the same in pyproject.toml and environment.yml."""

import re
import tomllib

import yaml

from conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.\-+]+)$")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = PIN.match(requirement.strip())
        assert match, f"{requirement!r} is not pinned to an exact version (name==version)"
        pins[_normalise(match[1])] = match[2]
    return pins


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_pyproject_dependency_is_pinned_exactly():
    project = _pyproject()["project"]
    _pins(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        _pins(extra)


def test_environment_yml_installs_the_same_pins():
    project = _pyproject()["project"]
    expected = _pins(project["dependencies"] + project["optional-dependencies"]["book"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    requirements = [r for r in pip_sections[0] if not r.startswith("-e")]
    assert _pins(requirements) == expected
    assert "-e ." in pip_sections[0], "environment.yml must install the conserved package itself"
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python, "environment.yml must pin python"
    assert _version(python[0].split("=")[-1]) >= (3, 11), python[0]


def _version(text: str) -> tuple[int, ...]:
    """'3.11' -> (3, 11): versions compare as numbers ('3.9' < '3.11'), never as strings."""
    return tuple(int(part) for part in re.findall(r"\d+", text))


def test_versions_compare_as_numbers():
    assert _version("3.9") < _version("3.11") <= _version("3.11") < _version("3.12.1")
    assert "3.9" >= "3.11"  # the string comparison this replaces gets it wrong


def test_requires_python_matches_environment_yml():
    required = _pyproject()["project"]["requires-python"]
    assert required.startswith(">="), required
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert _version(python[0].split("=")[-1]) >= _version(required[2:])


def test_lock_file_agrees_with_pyproject():
    project = _pyproject()["project"]
    declared = _pins(
        project["dependencies"]
        + [r for extra in project["optional-dependencies"].values() for r in extra]
    )
    lines = (ROOT / "requirements.lock").read_text().split("\n")
    locked = _pins([line for line in lines if line.strip() and not line.startswith("#")])
    for name, version in declared.items():
        assert locked.get(name) == version, (
            f"requirements.lock has {name}=={locked.get(name)}, pyproject {version}"
        )
