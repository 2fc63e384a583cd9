"""Configuration from the environment, optionally from a `kit.toml` at the project's root.

The environment wins over the file, so a scheduled job can override a team-wide file. Secrets never live
here: IB credentials stay in TWS / IB Gateway, never in kit, a notebook or the ledger.

Relative paths (the default ledger `data/kit.duckdb`, the halt file, kit.toml) are taken from the project
root: the nearest directory at or above the working directory that holds a kit.toml or pyproject.toml. A
notebook that JupyterLab runs from `notebooks/` must write to the same ledger as `make demo` at the root.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DB = "data/kit.duckdb"


def project_root() -> Path:
    here = Path.cwd()
    for directory in (here, *here.parents):
        if (directory / "kit.toml").is_file() or (directory / "pyproject.toml").is_file():
            return directory
    return here


def _file_settings() -> dict[str, Any]:
    path = Path(os.environ.get("KIT_CONFIG", project_root() / "kit.toml"))
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    # Keys in the file are the environment names without the KIT_ prefix, lower case: db, ib_port, ...
    return {f"KIT_{key.upper()}": value for key, value in data.items() if not isinstance(value, dict)} | {
        f"KIT_{section.upper()}_{key.upper()}": value
        for section, table in data.items() if isinstance(table, dict) for key, value in table.items()
    }


def setting(name: str, default: Any = None) -> Any:
    """One setting: environment variable `name`, else kit.toml, else `default`."""
    if name in os.environ:
        return os.environ[name]
    return _file_settings().get(name, default)


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def project_path(path: str | os.PathLike[str]) -> Path:
    """The one path resolver: a relative default or configured path is taken from the project root, so two
    processes started from different folders agree on every file kit keeps."""
    path = Path(path)
    return path if path.is_absolute() else project_root() / path


def db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The ledger: `db` as given (relative to the working directory, like any argument), else KIT_DB."""
    return Path(db) if db is not None else project_path(setting("KIT_DB", DEFAULT_DB))


def runs_dir() -> Path:
    """Where `kit run` keeps output notebooks (one folder per UTC date)."""
    return project_path(setting("KIT_RUNS_DIR", "data/runs"))


def schedule_state_path() -> Path:
    """The scheduler's state file: the last slot run per job."""
    return project_path(setting("KIT_SCHEDULE_STATE", "data/schedule.json"))


def lock_dir() -> Path:
    """Per-job (and per-run-key) lock files."""
    return project_path(setting("KIT_LOCK_DIR", "data/locks"))


@dataclass(frozen=True)
class IBSettings:
    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 17
    account: str = ""
    allow_live: bool = False
    connect_timeout: float = 10.0

    @classmethod
    def load(cls) -> IBSettings:
        return cls(
            host=str(setting("KIT_IB_HOST", cls.host)),
            port=int(setting("KIT_IB_PORT", cls.port)),
            client_id=int(setting("KIT_IB_CLIENT_ID", cls.client_id)),
            account=str(setting("KIT_IB_ACCOUNT", cls.account)),
            allow_live=truthy(setting("KIT_ALLOW_LIVE", "0")),
            connect_timeout=float(setting("KIT_IB_CONNECT_TIMEOUT", cls.connect_timeout)),
        )


def halt_file() -> Path:
    return project_path(setting("KIT_HALT_FILE", "data/HALT"))


def halted() -> str | None:
    """Why new submissions are stopped, or None. The file survives restarts; the variable is per process."""
    if truthy(setting("KIT_HALT", "0")):
        return "KIT_HALT is set"
    path = halt_file()
    if path.exists():
        reason = path.read_text().strip()
        return f"{path} exists" + (f": {reason}" if reason else "")
    return None
