"""Alembic migrations: from an empty database to head, and back, on both databases.

On SQLite (a file in ``tmp_path``) and on PostgreSQL (an empty database from
``pg_empty_database``, never the migrated template) the migrations must

* build, from nothing, exactly the schema the models declare
  (``alembic.autogenerate.compare_metadata`` finds no difference: the
  ``alembic check`` of house style 8.3);
* go down to ``base`` and up to ``head`` again.

Both entry points are exercised: :func:`crmflow.store.migrate.upgrade` (what
``crmflow db upgrade`` and the fixtures call) and the real ``alembic`` command
line with a generated ``alembic.ini`` and ``CRMFLOW_ADMIN_DATABASE_URL``.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    String,
    Uuid,
    column,
    create_engine,
    inspect,
    table,
    text,
)
from sqlalchemy.pool import NullPool

from crmflow.store.db import sync_url
from crmflow.store.migrate import alembic_config, current_revision, upgrade
from crmflow.store.models import Base, include_object
from tests.servers.postgres import APP_ROLE, PgDatabase

MODEL_TABLES = set(Base.metadata.tables)
#: seconds one ``alembic`` command may take
ALEMBIC_TIMEOUT_S = 120

ALEMBIC_INI = """\
[alembic]
script_location = crmflow.store:migrations
path_separator = os
"""


def head() -> str:
    """The newest revision the migration scripts define."""
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revision = scripts.get_current_head()
    assert revision is not None
    return revision


def schema_diff(url: str) -> list[Any]:
    """What autogenerate would change to make the database match the models."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "target_metadata": Base.metadata,
                    "include_object": include_object,
                },
            )
            diff: list[Any] = compare_metadata(context, Base.metadata)
            return diff
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    """The database's tables, without SQLite's full-text index (not a model)."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        return {
            t
            for t in inspect(engine).get_table_names()
            if include_object(None, t, "table", True, None)
        }
    finally:
        engine.dispose()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'crmflow.db'}"


def alembic_cli(tmp_path: Path, url: str, *args: str) -> str:
    """Run the real ``alembic`` command line against ``url``; returns its output.

    Runs in ``tmp_path`` (no stray ``.env``) with every other ``CRMFLOW_*``
    variable removed, so only ``CRMFLOW_ADMIN_DATABASE_URL`` decides the target.
    """
    ini = tmp_path / "alembic.ini"
    ini.write_text(ALEMBIC_INI)
    exe = Path(sys.executable).with_name("alembic")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "alembic"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env["CRMFLOW_ADMIN_DATABASE_URL"] = url
    result = subprocess.run(
        [*cmd, "-c", str(ini), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=ALEMBIC_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"alembic {' '.join(args)} failed:\n{output}"
    return output


# ----------------------------------------------------------------------- SQLite


def test_sqlite_upgrade_from_empty_matches_the_models(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head()
    assert tables(url) == MODEL_TABLES | {"alembic_version"}
    assert schema_diff(url) == []
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            fts = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'email_search'")
            )
            assert "fts5" in fts.scalar_one()
    finally:
        engine.dispose()


def test_sqlite_downgrade_to_base_and_upgrade_again(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    assert tables(url) == {"alembic_version"}
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head()
    assert schema_diff(url) == []


def test_sqlite_alembic_command_line(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    alembic_cli(tmp_path, url, "upgrade", "head")
    assert current_revision(url) == head()
    assert schema_diff(url) == []
    assert "No new upgrade operations detected" in alembic_cli(tmp_path, url, "check")
    alembic_cli(tmp_path, url, "downgrade", "base")
    assert tables(url) == {"alembic_version"}


# ------------------------------------------------------------------- PostgreSQL


def policies(url: str) -> set[tuple[str, str]]:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT tablename, policyname FROM pg_policies")
            ).all()
            return {(str(t), str(p)) for t, p in rows}
    finally:
        engine.dispose()


def functions(url: str) -> set[str]:
    """crmflow's own functions (an extension's, e.g. unaccent's, and the job
    queue's are not)."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT p.proname FROM pg_proc p JOIN pg_namespace n "
                    "ON n.oid = p.pronamespace WHERE n.nspname = 'public' "
                    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid "
                    "AND d.deptype = 'e')"
                )
            ).all()
            return {
                str(r[0]) for r in rows if not str(r[0]).startswith("procrastinate_")
            }
    finally:
        engine.dispose()


def queue_tables(url: str) -> set[str]:
    """The job queue's tables (procrastinate's, created by ``upgrade``)."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        return {
            t
            for t in inspect(engine).get_table_names()
            if t.startswith("procrastinate_")
        }
    finally:
        engine.dispose()


def app_privileges(url: str) -> dict[str, bool]:
    """Per model table: whether the app role has all four DML privileges."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {
                table: bool(
                    conn.scalar(
                        text(
                            "SELECT has_table_privilege(:role, :table, "
                            "'SELECT, INSERT, UPDATE, DELETE')"
                        ),
                        {"role": APP_ROLE, "table": table},
                    )
                )
                for table in sorted(MODEL_TABLES)
            }
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_upgrade_from_empty_matches_the_models(
    pg_empty_database: PgDatabase,
) -> None:
    db = pg_empty_database
    assert tables(db.admin_url) == set()
    upgrade(db.admin_url, db.app_url)
    assert current_revision(db.admin_url) == head()
    assert tables(db.admin_url) == MODEL_TABLES | {"alembic_version"}
    assert schema_diff(db.admin_url) == []
    # every table got its owner policy; the app role got DML on each
    assert {t for t, p in policies(db.admin_url) if p == "owner_all"} == MODEL_TABLES
    assert functions(db.admin_url) == {"crmflow_member_role"}
    assert app_privileges(db.admin_url) == dict.fromkeys(sorted(MODEL_TABLES), True)
    assert {"procrastinate_jobs", "procrastinate_periodic_defers"} <= queue_tables(
        db.admin_url
    )
    upgrade(db.admin_url, db.app_url)  # again: the queue's schema is kept as is
    assert current_revision(db.admin_url) == head()


@pytest.mark.postgres
def test_postgres_downgrade_to_base_and_upgrade_again(
    pg_empty_database: PgDatabase,
) -> None:
    db = pg_empty_database
    upgrade(db.admin_url, db.app_url)
    installed = policies(db.admin_url)
    command.downgrade(alembic_config(db.admin_url), "base")
    assert tables(db.admin_url) == {"alembic_version"}
    assert policies(db.admin_url) == set()
    assert functions(db.admin_url) == set()
    assert current_revision(db.admin_url) is None
    upgrade(db.admin_url, db.app_url)
    assert current_revision(db.admin_url) == head()
    assert schema_diff(db.admin_url) == []
    assert policies(db.admin_url) == installed
    assert app_privileges(db.admin_url) == dict.fromkeys(sorted(MODEL_TABLES), True)


@pytest.mark.postgres
def test_postgres_alembic_command_line(
    pg_empty_database: PgDatabase, tmp_path: Path
) -> None:
    # Each command line run costs ~2 s of imports: upgrade only; the comparison
    # below is what ``alembic check`` runs (checked on SQLite above).
    url = pg_empty_database.admin_url
    alembic_cli(tmp_path, url, "upgrade", "head")
    assert current_revision(url) == head()
    assert schema_diff(url) == []
    assert {t for t, p in policies(url) if p == "owner_all"} == MODEL_TABLES


# ------------------------------------------------------------ data migrations


def _appointments_before_0009(url: str) -> dict[str, Any]:
    """Migrate to 0008 and add a single appointment and a weekly series (raw
    rows, as that revision's schema has them); their ids by name."""
    command.upgrade(alembic_config(url), "0008")
    engine = create_engine(sync_url(url), poolclass=NullPool)
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    org, user = uuid.uuid4(), uuid.uuid4()
    ids = {"single": uuid.uuid4(), "series": uuid.uuid4()}
    try:
        with engine.begin() as conn:
            organizations = table(
                "organizations",
                column("id", Uuid()),
                column("name", String()),
                column("slug", String()),
                column("created_at", DateTime(timezone=True)),
            )
            users = table(
                "users",
                *(column(name, String()) for name in ("email", "display_name")),
                column("id", Uuid()),
                column("password_hash", String()),
                column("is_active", Boolean()),
                column("created_at", DateTime(timezone=True)),
                column("updated_at", DateTime(timezone=True)),
            )
            appointments = table(
                "appointments",
                *(column(name, Uuid()) for name in ("id", "organization_id")),
                column("user_id", Uuid()),
                *(column(name, String()) for name in ("title", "timezone", "status")),
                column("recurrence_rule", String()),
                column("ical_uid", String()),
                *(
                    column(name, DateTime(timezone=True))
                    for name in ("start_at", "end_at", "created_at", "updated_at")
                ),
                column("all_day", Boolean()),
                column("version", Integer()),
                *(
                    column(name, JSON())
                    for name in ("attendees", "recurrence", "recurrence_exceptions")
                ),
            )
            conn.execute(
                organizations.insert().values(
                    id=org, name="Old", slug="old", created_at=now
                )
            )
            conn.execute(
                users.insert().values(
                    id=user,
                    email="old@example.com",
                    display_name="Old",
                    password_hash="x",
                    is_active=True,
                    created_at=now,
                    updated_at=now,
                )
            )
            for name, rule in (("single", None), ("series", "FREQ=WEEKLY")):
                conn.execute(
                    appointments.insert().values(
                        id=ids[name],
                        organization_id=org,
                        user_id=user,
                        title=name,
                        start_at=now,
                        end_at=now + dt.timedelta(hours=1),
                        timezone="UTC",
                        all_day=False,
                        attendees=[],
                        status="confirmed",
                        recurrence_rule=rule,
                        recurrence=[f"RRULE:{rule}"] if rule else [],
                        recurrence_exceptions=[],
                        ical_uid=f"{name}@old",
                        created_at=now,
                        updated_at=now,
                        version=1,
                    )
                )
    finally:
        engine.dispose()
    return ids


def _series_ends(url: str) -> dict[uuid.UUID, dt.datetime | None]:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, series_end_at FROM appointments"))
            return {
                uuid.UUID(str(row_id)) if not isinstance(row_id, uuid.UUID) else row_id:
                # SQLite hands back text
                None if end is None else dt.datetime.fromisoformat(str(end))
                for row_id, end in rows
            }
    finally:
        engine.dispose()


def _check_0009_backfill(url: str, ids: dict[str, Any]) -> None:
    ends = _series_ends(url)
    # a single appointment ends when it ends; an existing series is "maybe
    # still going" until its next write works its end out
    single_end = ends[ids["single"]]
    assert single_end is not None
    assert single_end.replace(tzinfo=dt.UTC) == dt.datetime(
        2026, 11, 1, 1, tzinfo=dt.UTC
    )
    assert ends[ids["series"]] is None


def test_sqlite_0009_gives_single_appointments_their_series_end(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    ids = _appointments_before_0009(url)
    upgrade(url)
    _check_0009_backfill(url, ids)


@pytest.mark.postgres
def test_postgres_0009_gives_single_appointments_their_series_end(
    pg_empty_database: PgDatabase,
) -> None:
    db = pg_empty_database
    ids = _appointments_before_0009(db.admin_url)
    upgrade(db.admin_url, db.app_url)
    _check_0009_backfill(db.admin_url, ids)
