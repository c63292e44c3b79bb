"""Apply migrations and grants: ``crmflow db upgrade`` and the test fixtures.

Migrations run as the admin (owner) role. On PostgreSQL, the job queue's
schema (procrastinate's, for ``crmflow worker``) is created once after them,
and when the application connects as a different role, that role receives DML
grants only, so it can never alter tables or bypass row level security.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from crmflow.store.db import sync_url
from crmflow.store.rls import grant_statements


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at crmflow's migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(files("crmflow.store") / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def app_role_for(app_url: str, admin_url: str) -> str | None:
    """The application role to grant to, when it differs from the owner."""
    app, admin = make_url(app_url), make_url(admin_url)
    if app.get_backend_name() != "postgresql" and app.get_backend_name() != "postgres":
        return None
    if app.username and app.username != admin.username:
        return app.username
    return None


def upgrade(admin_url: str, app_url: str | None = None) -> None:
    """Migrate to the newest revision; on PostgreSQL also create the job
    queue's schema (once) and grant DML to the application role."""
    command.upgrade(alembic_config(admin_url), "head")
    if make_url(admin_url).get_backend_name() != "postgresql":
        return
    engine = create_engine(sync_url(admin_url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            apply_job_queue_schema(conn)
            role = app_role_for(app_url or admin_url, admin_url)
            for stmt in grant_statements(role) if role else ():
                conn.execute(text(stmt))
    finally:
        engine.dispose()


def apply_job_queue_schema(conn: Connection) -> bool:
    """Create procrastinate's tables, types and functions unless they exist.

    The schema is the installed procrastinate's own (``crmflow worker`` uses
    it as is); it lives beside crmflow's tables, without row level security:
    jobs carry ids, never personal data. Returns whether it was created.
    """
    if conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar():
        return False
    from procrastinate.schema import SchemaManager

    # the driver's cursor without parameters runs the script as is (through
    # SQLAlchemy its "%" and "::" would be read as placeholders)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # noqa: S101 - an open connection has one
    dbapi.cursor().execute(SchemaManager.get_schema())
    return True


def current_revision(url: str) -> str | None:
    """The revision a database is at (None when never migrated)."""
    parsed = make_url(url)
    is_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (
        None,
        "",
        ":memory:",
    )
    if is_file and not Path(parsed.database or "").exists():
        return None
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            has = conn.dialect.has_table(conn, "alembic_version")
            if not has:
                return None
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            return None if row is None else str(row[0])
    finally:
        engine.dispose()
