"""The PostgreSQL fixture: a real server the suite starts itself, private to the tests and gone afterwards."""

from __future__ import annotations

import os
import socket

import pytest

try:
    import psycopg
except ImportError:  # psycopg[binary] belongs in pyproject's test extra; CI must have it
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("needs psycopg[binary]==3.3.9: pip install psycopg[binary]==3.3.9", allow_module_level=True)

from tests.pg_server import PostgresServer, postgres_bin  # postgres_server: tests/conftest.py

pytestmark = pytest.mark.skipif(postgres_bin() is None and os.environ.get("CI") != "true",
                                reason="needs PostgreSQL's server binaries: apt-get install -y postgresql")


def test_a_table_one_connection_creates_is_seen_by_another(postgres_server: PostgresServer):
    dsn = postgres_server.dsn
    assert dsn == f"postgresql://kit@127.0.0.1:{postgres_server.port}/kit"
    with psycopg.connect(dsn) as writer:
        writer.execute("CREATE TABLE greetings (id int PRIMARY KEY, text text NOT NULL)")
        writer.execute("INSERT INTO greetings VALUES (1, 'hello')")
    with psycopg.connect(dsn) as reader:
        assert reader.execute("SELECT text FROM greetings").fetchall() == [("hello",)]
        settings = dict(reader.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'listen_addresses')").fetchall())
        assert settings == {"fsync": "on", "listen_addresses": "127.0.0.1"}
        # The cluster runs as an unprivileged user even when the tests are root: PostgreSQL insists.
        owner = os.stat(postgres_server.data_dir).st_uid
        assert owner != 0 or os.geteuid() != 0
        reader.execute("DROP TABLE greetings")


def test_a_test_can_have_a_database_of_its_own(postgres_server: PostgresServer):
    dsn = postgres_server.create_database("isolated")
    assert dsn == f"postgresql://kit@127.0.0.1:{postgres_server.port}/isolated"
    with psycopg.connect(dsn) as own:
        own.execute("CREATE TABLE mine (id int)")
    with psycopg.connect(postgres_server.dsn) as shared:
        assert shared.execute("SELECT to_regclass('mine')").fetchone() == (None,)


def test_a_stopped_server_is_gone_with_its_files():
    server = PostgresServer().start()
    dsn, root, port = server.dsn, server.root, server.port
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
    server.stop()

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5)
    assert not root.exists()
    with socket.socket() as probe:  # nothing listens on the port any more: it can be taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()
