"""environment.yml (for conda users) pins exactly what pyproject.toml pins (what pip installs here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    listed = set(re.findall(r"^\s+- ([A-Za-z0-9_.-]+(?:==|>=)[^\s]+)\s*$",
                            (ROOT / "environment.yml").read_text(), re.MULTILINE))
    assert listed == pinned
    python = re.search(r"python=(\d+\.\d+)", (ROOT / "environment.yml").read_text()).group(1)
    assert project["requires-python"] == f">={python}"
