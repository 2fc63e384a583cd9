"""Fixtures shared by the whole suite; small and generic. Test-specific helpers live in their own files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_config(tmp_path_factory: pytest.TempPathFactory):
    """No test may touch the user's ledger (data/kit.duckdb) or pick up a kit.toml from the working
    directory: the default ledger and the config file point into a session temp folder."""
    home = tmp_path_factory.mktemp("kit-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_DB", str(home / "default.duckdb"))
        patch.setenv("KIT_CONFIG", str(home / "kit.toml"))
        patch.delenv("KIT_ALLOW_LIVE", raising=False)
        yield


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A fresh ledger path for one test; the file does not exist until something writes to it."""
    return tmp_path / "kit.duckdb"
