"""A real PostgreSQL server for the tests, started by the tests themselves.

Debian's PostgreSQL binaries (`apt-get install postgresql`; /usr/lib/postgresql/<major>/bin) run a
throw-away cluster: initdb in a temporary folder, the unix socket in that folder too, TCP only on
127.0.0.1 and a free port, trust authentication (nothing else can reach it). PostgreSQL refuses to run
as root, so when the tests are root the cluster belongs to the unprivileged `postgres` user (created by
the Debian package). fsync stays on: crash tests must see what a real server makes durable; the speed
comes from small memory settings, not from skipping durability.

Use the session fixture from a test module or a conftest:

    from tests.pg_server import postgres_dsn  # noqa: F401  (pytest finds the fixture by name)

or take a database of its own on the session's server (`postgres_server.create_database("t1")` returns its
DSN), or start a server of your own with `with PostgresServer() as server: server.dsn`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "kit"
DATABASE = "kit"
SERVER_USER = "postgres"  # the system user Debian's package creates; the cluster runs as it under root
# Small and quick, durability untouched (fsync, synchronous_commit and full_page_writes keep their defaults).
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "16MB",
    "max_connections": "40",
    "max_wal_senders": "0",
    "wal_level": "minimal",
    "logging_collector": "off",
    "log_min_messages": "warning",
}
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
PORT_ATTEMPTS = 5  # a free port found by bind(0) can be taken by someone else before the server binds it


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (KIT_PG_BIN wins), or None if there is none."""
    if explicit := os.environ.get("KIT_PG_BIN"):
        return Path(explicit)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One temporary cluster: `start()` creates and starts it, `stop()` stops it and deletes its folder."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or postgres_bin()
        if found is None or not (found / "initdb").exists():
            raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql "
                               "(or set KIT_PG_BIN)")
        self.bin_dir = found
        self.root: Path | None = None
        self.port: int | None = None
        self._run_as = self._server_user()

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def dsn(self) -> str:
        assert self.port is not None, "not started"
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> PostgresServer:
        self.root = Path(tempfile.mkdtemp(prefix="kit-pg-"))  # not under pytest's 0700 root-only folders
        try:
            if self._run_as is not None:
                os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
            self._pg("initdb", "-D", str(self.data_dir), "-U", USER, "--auth=trust", "--encoding=UTF8",
                     "--no-locale", "--no-instructions")
            self._start_on_a_free_port()
            self.create_database(DATABASE)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected) and delete the cluster."""
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(START_TIMEOUT), "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def pause(self) -> None:
        """Stop the server (fast shutdown: clients are cut off) but keep its cluster, to start it again."""
        self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(START_TIMEOUT), "stop")

    def resume(self) -> None:
        """Start a paused server again, on the same port, with everything it had committed."""
        options = " ".join(f"-c {name}={value}" for name, value in SETTINGS.items())
        self._pg("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-w", "-t",  # type: ignore[operator]
                 str(START_TIMEOUT), "-o", f"-p {self.port} -k {self.root} {options}", "start")

    def create_database(self, name: str) -> str:
        """A new, empty database on this server, for a test that needs its own; returns its DSN."""
        self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return self.dsn.rsplit("/", 1)[0] + f"/{name}"

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start_on_a_free_port(self) -> None:
        log = self.root / "server.log"  # type: ignore[operator]
        options = " ".join(f"-c {name}={value}" for name, value in SETTINGS.items())
        for _ in range(PORT_ATTEMPTS):
            self.port = _free_port()
            started = self._pg(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(log), "-w", "-t", str(START_TIMEOUT),
                "-o", f"-p {self.port} -k {self.root} {options}", "start", check=False)
            if started.returncode == 0:
                return
            if "could not bind" not in log.read_text(errors="replace"):
                break
        raise RuntimeError(f"PostgreSQL did not start:\n{started.stdout}{log.read_text(errors='replace')}")

    def _pg(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of PostgreSQL's programs, as the server's user when we are root."""
        done = subprocess.run(
            [str(self.bin_dir / program), *args], capture_output=True, text=True, timeout=START_TIMEOUT + 30,
            user=None if self._run_as is None else self._run_as.pw_uid,
            group=None if self._run_as is None else self._run_as.pw_gid,
            cwd=self.root, env={**os.environ, "LC_ALL": "C", "PGHOST": "127.0.0.1"},
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    @staticmethod
    def _server_user() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise RuntimeError(f"running as root needs an unprivileged {SERVER_USER!r} user to own the "
                               f"cluster: apt-get install -y postgresql creates it") from None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole session; each test that needs isolation makes its own schema or database."""
    if postgres_bin() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed: CI must apt-get install -y postgresql")
        pytest.skip("needs PostgreSQL's server binaries: apt-get install -y postgresql")
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """`postgresql://kit@127.0.0.1:PORT/kit` of the session's server."""
    return postgres_server.dsn
