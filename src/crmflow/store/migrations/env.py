"""Alembic environment: runs on SQLite (batch mode) and PostgreSQL.

The URL comes from ``config.attributes["url"]`` (set by ``crmflow db upgrade``
and the tests) or, when Alembic is run directly, from
``CRMFLOW_ADMIN_DATABASE_URL`` / ``CRMFLOW_DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from crmflow.store.db import ensure_sqlite_dir, sync_url
from crmflow.store.models import Base, include_object

config = context.config


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return str(url)
    from crmflow.config import load_settings

    return load_settings().effective_admin_database_url


def run_migrations() -> None:
    url = _url()
    ensure_sqlite_dir(url)
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("crmflow migrations run online only (alembic upgrade head)")
run_migrations()
