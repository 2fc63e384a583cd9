"""Both ledgers for one test: a fresh DuckDB file, or a fresh database on the session's PostgreSQL server.

    from tests.ledgers import ledger_db, postgres_server  # noqa: F401  (fixtures, found by name)

    def test_x(ledger_db): kit.execute(..., db=ledger_db)

The PostgreSQL case skips, saying why, only where Debian's server binaries or psycopg are missing (never in
CI, where .ci/run installs them: tests/pg_server.py fails there instead).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from tests.pg_server import PostgresServer, postgres_bin, postgres_server  # noqa: F401  (the fixture)

KINDS = ("duckdb", "postgres")
_names = itertools.count()


def missing_postgres() -> str | None:
    """Why the PostgreSQL ledger cannot be tested here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "needs psycopg[binary] (the test extra)"
    if postgres_bin() is None:
        return "needs PostgreSQL's server binaries: apt-get install -y postgresql"
    return None


def fresh_database(server: PostgresServer, prefix: str = "t") -> str:
    """A new, empty database on `server`, named uniquely in this session; its URL."""
    return server.create_database(f"{prefix}_{os.getpid()}_{next(_names)}")


@pytest.fixture(params=KINDS)
def ledger_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and (why := missing_postgres()) and os.environ.get("CI") != "true":
        pytest.skip(why)
    return request.param


@pytest.fixture
def ledger_db(ledger_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """Where the test's ledger lives: a file path (not created yet) or a PostgreSQL URL (an empty
    database)."""
    if ledger_kind == "duckdb":
        return tmp_path / "kit.duckdb"
    return fresh_database(request.getfixturevalue("postgres_server"))
