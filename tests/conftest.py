"""Fixtures shared by the whole suite; small and generic. Test-specific helpers live in their own files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every test may ask for `ledger_db` (a DuckDB file, then a PostgreSQL database) or `postgres_server`.
from tests.ledgers import ledger_db, ledger_kind, postgres_server  # noqa: F401


@pytest.fixture(autouse=True, scope="session")
def _isolated_config(tmp_path_factory: pytest.TempPathFactory):
    """No test may touch the user's ledger (data/kit.duckdb) or pick up a kit.toml from the working
    directory: the default ledger and the config file point into a session temp folder."""
    home = tmp_path_factory.mktemp("kit-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_DB", str(home / "default.duckdb"))
        patch.setenv("KIT_CONFIG", str(home / "kit.toml"))
        patch.setenv("KIT_LOCK_DIR", str(home / "locks"))  # run-key locks of this session only
        patch.setenv("KIT_JOURNAL_DIR", str(home / "journals"))  # a PostgreSQL ledger's local journals
        patch.delenv("KIT_ALLOW_LIVE", raising=False)
        yield


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A fresh ledger path for one test; the file does not exist until something writes to it."""
    return tmp_path / "kit.duckdb"


SAFETY_ENV = ("KIT_HALT", "KIT_HALT_FILE", "KIT_DRY_RUN", "KIT_ALLOW_LIVE")


@pytest.fixture
def clean_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No risk limit, halt switch, dry run or live permission from the environment; kit.toml and the
    default halt file (data/HALT, relative to the project root: tmp_path here) inside the test's folder."""
    for name in list(os.environ):
        if name.startswith("KIT_RISK_") or name in SAFETY_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("KIT_CONFIG", str(tmp_path / "kit.toml"))
    monkeypatch.chdir(tmp_path)
