"""The PostgreSQL fixture: a real server the suite starts itself, private to the tests and gone afterwards."""

from __future__ import annotations

import os

import psycopg
import pytest

from tests.pg_server import PostgresServer, postgres_bin, postgres_server  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(postgres_bin() is None and os.environ.get("CI") != "true",
                                reason="needs PostgreSQL's server binaries: apt-get install -y postgresql")


def test_a_table_one_connection_creates_is_seen_by_another(postgres_server: PostgresServer):  # noqa: F811
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


def test_a_stopped_server_is_gone_with_its_files():
    server = PostgresServer().start()
    dsn, root, pid = server.dsn, server.root, server.pid()
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
    server.stop()

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5)
    assert not root.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
