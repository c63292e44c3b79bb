"""A throwaway PostgreSQL 15 cluster for the integration tests.

Recipe: ``real-servers.md`` section 2 (Debian binaries, ``initdb`` + ``pg_ctl``
on loopback, no containers). One cluster per test session:

* ``pg_cluster`` (session): ``initdb`` in a private temporary directory (in RAM
  when ``/dev/shm`` allows; see ``_cluster_dir``), a free loopback port, the Unix socket in a private directory, durability off
  (``fsync``, ``synchronous_commit``, ``full_page_writes``: test data only).
  It creates the owner role ``crmflow_owner`` (runs migrations, owns the
  tables) and the application role ``crmflow_app`` (DML grants only), both
  ``NOSUPERUSER NOBYPASSRLS``, and a template database migrated once with
  :func:`crmflow.store.migrate.upgrade`.
* ``pg_database`` (function): a fresh copy of the template per test
  (``CREATE DATABASE ... TEMPLATE ...``, the procrastinate test-suite pattern),
  dropped afterwards.
* ``pg_empty_database`` (function): an empty database owned by
  ``crmflow_owner``, for migrating from nothing.

Password authentication (scram) is on for TCP, so every URL proves its
credentials. A missing binary skips locally and fails in CI
(:func:`tests.servers.require.missing_server`). Teardown stops only the server
this module started (``pg_ctl stop -m fast``); the server log is then copied to a
``postgres-log`` directory of pytest's temp tree.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.abc import Query

from crmflow.store.migrate import upgrade
from tests.servers.require import missing_server

__all__ = [
    "PgCluster",
    "PgDatabase",
    "cluster_in",
    "pg_available",
    "standalone_database",
]

#: Debian's PostgreSQL 15 binaries; override with CRMFLOW_PG_BIN
PG_BIN = Path(os.environ.get("CRMFLOW_PG_BIN", "/usr/lib/postgresql/15/bin"))
#: OS user that runs the server when the tests run as root (initdb refuses root)
PG_OS_USER = "postgres"
SUPERUSER = "postgres"
OWNER_ROLE = "crmflow_owner"
APP_ROLE = "crmflow_app"
TEMPLATE_DB = "crmflow_template"
#: pg_ctl -w waits this long for start / stop, in seconds
PG_CTL_TIMEOUT_S = 30
#: use /dev/shm for the cluster only with this much room, in bytes
RAM_DIR_MIN_FREE_BYTES = 512 * 1024 * 1024
#: a port picked as free can be taken before the server binds it: retry
START_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class PgCluster:
    """A running cluster and the credentials of its three roles."""

    #: loopback address the server listens on
    host: str
    port: int
    #: the cluster's data directory
    data_dir: Path
    #: the private Unix socket directory
    socket_dir: Path
    #: the server log
    log_file: Path
    superuser_password: str
    owner_password: str
    app_password: str
    #: the migrated template every ``pg_database`` is copied from
    template: str

    def url(self, user: str, password: str, dbname: str) -> str:
        """A ``postgresql://`` URL for ``user`` on database ``dbname``."""
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname}"

    def superuser_url(self, dbname: str = "postgres") -> str:
        """The superuser's URL (bypasses row level security: setup only)."""
        return self.url(SUPERUSER, self.superuser_password, dbname)

    def admin_url(self, dbname: str) -> str:
        """The owner (migration) role's URL."""
        return self.url(OWNER_ROLE, self.owner_password, dbname)

    def app_url(self, dbname: str) -> str:
        """The application role's URL."""
        return self.url(APP_ROLE, self.app_password, dbname)

    def database(self, dbname: str) -> PgDatabase:
        """The three URLs of one database."""
        return PgDatabase(
            admin_url=self.admin_url(dbname),
            app_url=self.app_url(dbname),
            superuser_url=self.superuser_url(dbname),
            name=dbname,
        )


@dataclass(frozen=True, slots=True)
class PgDatabase:
    """One test database and the URLs of the roles that use it."""

    #: ``crmflow_owner``: owns the tables, runs migrations
    admin_url: str
    #: ``crmflow_app``: DML grants only, subject to row level security
    app_url: str
    #: ``postgres``: bypasses row level security; setup and inspection only
    superuser_url: str
    #: the database name
    name: str


def _is_root() -> bool:
    return os.geteuid() == 0


def _missing() -> str | None:
    """Why the cluster cannot start here, or None when it can."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            return f"PostgreSQL binary {PG_BIN / tool} not found (apt install postgresql-15)"
    if _is_root():
        if shutil.which("runuser") is None:
            return "running as root but `runuser` is not available"
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            return f"running as root but there is no {PG_OS_USER!r} OS user"
    return None


def pg_available() -> bool:
    """Whether this machine can run the throwaway cluster."""
    return _missing() is None


def _as_server_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as the server's OS user (initdb and pg_ctl refuse root)."""
    if _is_root():
        return ["runuser", "-u", PG_OS_USER, "--", *cmd]
    return cmd


def _give_to_server_user(path: Path) -> None:
    path.chmod(0o755)
    if _is_root():
        entry = pwd.getpwnam(PG_OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """Let the server's OS user reach ``path`` (a temp dir may sit below 0700 dirs).

    Only the execute (search) bit is added, and only on directories we own.
    """
    if not _is_root():
        return
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH | stat.S_IXGRP)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(
        _as_server_user(cmd), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


def _pg_ctl(data_dir: Path, *args: str) -> list[str]:
    return [
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(data_dir),
        "-w",
        "-t",
        str(PG_CTL_TIMEOUT_S),
        *args,
    ]


def _start(data_dir: Path, socket_dir: Path, log_file: Path) -> int:
    """Start the server on a free loopback port; returns the port."""
    error: RuntimeError | None = None
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        options = (
            f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            # a connection attempt cancelled half-way (a task cancelled while
            # psycopg connects) leaves a backend waiting for the password;
            # DROP DATABASE waits for every backend of the cluster, so it would
            # wait the default 60 s for that one to time out
            "-c authentication_timeout=5s"
        )
        try:
            _run(
                _pg_ctl(data_dir, "-l", str(log_file), "-o", options, "start"),
                "pg_ctl start",
            )
        except RuntimeError as exc:
            error = exc  # most likely the port was taken meanwhile: pick another
            continue
        return port
    log = log_file.read_text(errors="replace") if log_file.exists() else ""
    raise RuntimeError(f"PostgreSQL did not start: {error}\n{log}")


def _execute(url: str, *statements: Query) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _create_roles(cluster: PgCluster) -> None:
    role = "CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS {} PASSWORD {}"
    _execute(
        cluster.superuser_url(),
        sql.SQL(role).format(
            sql.Identifier(OWNER_ROLE), sql.SQL("CREATEDB"), cluster.owner_password
        ),
        sql.SQL(role).format(
            sql.Identifier(APP_ROLE), sql.SQL("NOCREATEDB"), cluster.app_password
        ),
    )


def _create_template(cluster: PgCluster) -> None:
    _execute(
        cluster.superuser_url(),
        sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(cluster.template), sql.Identifier(OWNER_ROLE)
        ),
    )
    # PostgreSQL 15 already keeps PUBLIC from creating in ``public`` and gives the
    # schema to pg_database_owner; make both explicit so the app role can never
    # create objects, whatever the server's defaults.
    _execute(
        cluster.superuser_url(cluster.template),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(OWNER_ROLE)),
    )
    upgrade(cluster.admin_url(cluster.template), cluster.app_url(cluster.template))
    # Nobody connects to the template any more: copies never wait for sessions.
    _execute(
        cluster.superuser_url(),
        sql.SQL(
            "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
        ).format(sql.Identifier(cluster.template)),
    )


def _create_database(cluster: PgCluster, template: str | None) -> str:
    name = f"t_{uuid.uuid4().hex}"
    query = "CREATE DATABASE {} OWNER {}" + (" TEMPLATE {}" if template else "")
    parts = [sql.Identifier(name), sql.Identifier(OWNER_ROLE)]
    if template:
        parts.append(sql.Identifier(template))
    _execute(cluster.superuser_url(), sql.SQL(query).format(*parts))
    return name


def _drop_database(cluster: PgCluster, name: str) -> None:
    _execute(
        cluster.superuser_url(),
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
    )


def _ram_dir() -> Path | None:
    """``/dev/shm`` when it is usable and roomy, else None."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)):
        return None
    return shm if shutil.disk_usage(shm).free >= RAM_DIR_MIN_FREE_BYTES else None


@contextmanager
def _cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory for the cluster that its OS user can reach all session long.

    * RAM-backed ``/dev/shm`` when available: ``CREATE DATABASE ... TEMPLATE``
      measured 0.34 s per test database on this project's disk, 0.013 s in RAM.
    * Otherwise, as root, a directory of its own under the system temp dir: the
      server runs as ``postgres``, which must traverse every parent directory,
      but pytest resets ``/tmp/pytest-of-root`` to 0700 whenever *any* pytest
      session starts (concurrent runs), which locked ``initdb`` out mid-run.
    * Otherwise a ``tmp_path_factory`` directory.

    Directories of its own are removed after the server stopped.
    """
    ram = _ram_dir()
    if ram is None and not _is_root():
        yield tmp_path_factory.mktemp("postgres")
        return
    base = Path(tempfile.mkdtemp(prefix="crmflow-pg-", dir=ram))
    try:
        _make_traversable(base)
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _initdb(data_dir: Path, pwfile: Path) -> None:
    _run(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            # TCP needs the password, so every URL proves its credentials; the
            # private socket is only reachable by the server's OS user anyway
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
        "initdb",
    )


@contextmanager
def cluster_in(base: Path) -> Iterator[PgCluster]:
    """A running cluster with the crmflow roles and a migrated template, its
    files under ``base`` (which its OS user must be able to reach); stopped
    at the end."""
    data_dir, socket_dir, log_dir = base / "data", base / "sock", base / "log"
    for directory in (data_dir, socket_dir, log_dir):
        directory.mkdir()
        _give_to_server_user(directory)
    socket_dir.chmod(0o700)  # private: only the server's OS user connects here
    secrets = {name: uuid.uuid4().hex for name in ("super", "owner", "app")}
    pwfile = log_dir / "pwfile"
    pwfile.write_text(secrets["super"] + "\n")
    _give_to_server_user(pwfile)
    pwfile.chmod(0o600)
    try:
        _initdb(data_dir, pwfile)
    finally:
        pwfile.unlink()
    log_file = log_dir / "server.log"
    port = _start(data_dir, socket_dir, log_file)
    try:
        cluster = PgCluster(
            host="127.0.0.1",
            port=port,
            data_dir=data_dir,
            socket_dir=socket_dir,
            log_file=log_file,
            superuser_password=secrets["super"],
            owner_password=secrets["owner"],
            app_password=secrets["app"],
            template=TEMPLATE_DB,
        )
        _create_roles(cluster)
        _create_template(cluster)
        yield cluster
    finally:
        _run(_pg_ctl(data_dir, "-m", "fast", "stop"), "pg_ctl stop")


@contextmanager
def standalone_database() -> Iterator[PgDatabase]:
    """A cluster and one migrated database outside pytest (benchmarks):
    in RAM when ``/dev/shm`` allows, removed afterwards.

    Raises:
        RuntimeError: the PostgreSQL binaries are missing.
    """
    reason = _missing()
    if reason is not None:
        raise RuntimeError(reason)
    base = Path(tempfile.mkdtemp(prefix="crmflow-pg-", dir=_ram_dir()))
    try:
        _make_traversable(base)
        base.chmod(0o755)
        with cluster_in(base) as cluster:
            name = _create_database(cluster, cluster.template)
            yield cluster.database(name)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """A running PostgreSQL 15 cluster with the crmflow roles and a migrated template."""
    reason = _missing()
    if reason is not None:
        missing_server(reason)
    with _cluster_dir(tmp_path_factory) as base, cluster_in(base) as cluster:
        try:
            yield cluster
        finally:
            # keep the server log where pytest keeps test output
            if cluster.log_file.exists():
                shutil.copy(cluster.log_file, tmp_path_factory.mktemp("postgres-log"))


@pytest.fixture
def pg_database(pg_cluster: PgCluster) -> Iterator[PgDatabase]:
    """A fresh copy of the migrated template; dropped after the test."""
    name = _create_database(pg_cluster, pg_cluster.template)
    try:
        yield pg_cluster.database(name)
    finally:
        _drop_database(pg_cluster, name)


@pytest.fixture
def pg_empty_database(pg_cluster: PgCluster) -> Iterator[PgDatabase]:
    """An empty database owned by ``crmflow_owner`` (never migrated)."""
    name = _create_database(pg_cluster, None)
    try:
        yield pg_cluster.database(name)
    finally:
        _drop_database(pg_cluster, name)
