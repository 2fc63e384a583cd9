"""The packaging scheme: pyproject.toml declares ranges, constraints.txt the exact set `make` installs and
tests, environment.yml installs the same way for conda users, and a missing extra is named when needed.

The wheel itself, installed core-only into a fresh environment, is exercised by tests/test_wheel.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from kit.brokers.ib import ib_library
from kit.errors import KitError

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
INSYNC_PYTHON = ROOT / ".venv-insync" / "bin" / "python"


def constraints(file: str = "constraints.txt") -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / file).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert canonicalize_name(name) not in pins, f"{file} pins {name} twice"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def makefile_variable(name: str) -> str:
    return re.search(rf"^{name} := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1).strip()


def declared() -> list[Requirement]:
    extras = PROJECT["optional-dependencies"].values()
    return [Requirement(r) for r in PROJECT["dependencies"] + [r for extra in extras for r in extra]]


def test_every_dependency_is_pinned_within_its_range():
    """A dependency added to pyproject without re-running `make constraints` would install untested."""
    pins = constraints()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in constraints.txt: run `make constraints`"
        assert requirement.specifier.contains(pins[name]), f"constraints.txt pins {name}=={pins[name]}, " \
                                                           f"outside pyproject's {requirement}"


def test_make_test_lowest_pins_each_lower_bound():
    """`make test-lowest` runs the suite on what the lower bounds promise (kit[lab] and kit[insync] aside:
    nothing imports JupyterLab, and ib_insync's 0.9.86 is its last release, tested in .venv-insync)."""
    lowest = constraints("constraints-lowest.txt")
    bounds = {canonicalize_name(r.name): next(s.version for s in r.specifier if s.operator == ">=")
              for r in declared()}
    assert lowest.keys() == bounds.keys() - {"jupyterlab", "ib-insync"}
    for name, pin in lowest.items():
        assert Version(pin) == Version(bounds[name]), f"{name}=={pin} vs >={bounds[name]}"


def installed_closure(requirements: list[Requirement], extras: set[str]) -> dict[str, str]:
    """Every distribution these requirements pull in here (markers and extras applied), and its version."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(r, frozenset(extras)) for r in requirements]
    environment = default_environment()
    while pending:
        requirement, wanted = pending.pop()
        if requirement.marker and not any(requirement.marker.evaluate(environment | {"extra": e})
                                          for e in wanted or {""}):
            continue
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        dist = distribution(name)
        found[name] = dist.version
        pending += [(Requirement(r), frozenset(requirement.extras)) for r in dist.requires or []]
    return found


def test_make_installed_exactly_the_constrained_set():
    """What this suite runs on is what constraints.txt says: `make` installs from it and it covers
    everything kit[ib,lab,review,test] pulls in."""
    pins = constraints()
    extras = set(makefile_variable("EXTRAS").split(","))
    kit_requirements = [Requirement(r) for r in distribution("kit").requires or []]
    installed = installed_closure(kit_requirements, extras)
    assert {"ib-async", "jupyterlab", "plotly", "pytest"} <= installed.keys()
    unpinned = sorted(name for name in installed if name not in pins)
    assert not unpinned, f"installed but not in constraints.txt: {unpinned}; run `make constraints`"
    differ = {name: (version, pins[name]) for name, version in installed.items() if pins[name] != version}
    assert not differ, f"installed version differs from constraints.txt (installed, pinned): {differ}"


@pytest.mark.skipif(not INSYNC_PYTHON.exists(), reason="needs .venv-insync: run `make insync`")
def test_insync_environment_uses_the_same_pins_and_has_no_ib_async():
    script = ("import json, importlib.metadata as m; "
              "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    output = subprocess.run([str(INSYNC_PYTHON), "-c", script], capture_output=True, text=True, check=True)
    installed = {canonicalize_name(n): v for n, v in json.loads(output.stdout).items()}
    pins = constraints()
    assert "ib-insync" in installed and "ib-async" not in installed
    differ = {name: (version, pins[name]) for name, version in installed.items()
              if name in pins and pins[name] != version}
    assert not differ, f".venv-insync differs from constraints.txt (installed, pinned): {differ}"
    assert {"ib-insync", "pandas", "duckdb", "pytest"} <= {n for n in installed if n in pins}


def test_environment_yml_installs_like_make():
    """conda users get the same Python, the same extras and the same pins as `make`."""
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    python = next(d.split("=", 1)[1] for d in conda if d.startswith("python="))
    assert PROJECT["requires-python"] == f">={python}"
    assert f"on Python {python}" in (ROOT / "constraints.txt").read_text()
    assert "-c constraints.txt" in pip
    assert f"-e .[{makefile_variable('EXTRAS')}]" in pip
    pins = constraints()
    for line in pip:
        if "==" in line:
            name, version = line.split("==")
            assert pins.get(canonicalize_name(name)) == version, f"environment.yml {line} vs constraints.txt"


def test_a_missing_ib_client_names_the_extra_to_install():
    with pytest.raises(PackageNotFoundError):
        distribution("ib_insync")  # .venv has ib_async; ib_insync lives in .venv-insync
    with pytest.raises(KitError, match=re.escape("install kit[insync] (pip install 'kit[insync]')")):
        ib_library("ib_insync")
