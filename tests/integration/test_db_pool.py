"""Pooled PostgreSQL connections that the server closed while they sat idle
(a restart, a network cut) are replaced before a transaction gets one."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from crmflow.store import db as db_module
from crmflow.store.db import Database
from tests.servers.postgres import PgDatabase

pytestmark = pytest.mark.postgres


async def _backend_pids(db: Database) -> set[int]:
    """The server processes of every pooled connection (one per transaction
    open at once)."""
    async with db.admin() as first, db.admin() as second:
        return {
            int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)
            for session in (first, second)
        }


def _close_connections(pg: PgDatabase, pids: set[int]) -> None:
    """What a server restart does to them."""
    with psycopg.connect(pg.superuser_url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])


async def test_an_idle_connection_closed_by_the_server_is_replaced(
    pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(pg_database.admin_url)
    try:
        closed = await _backend_pids(db)
        _close_connections(pg_database, closed)
        # both connections count as idle long enough: each is checked first
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.0)
        now = await _backend_pids(db)
        assert len(now) == 2
        assert not now & closed
    finally:
        await db.dispose()


async def test_a_connection_used_a_moment_ago_is_not_checked(
    pg_database: PgDatabase,
) -> None:
    """The other half of the contract (and why the first test can fail): a
    connection back in the pool for less than ``PING_AFTER_IDLE_S`` goes to
    the next transaction unchecked, so closing it under the pool fails
    that transaction."""
    db = Database(pg_database.admin_url)
    try:
        _close_connections(pg_database, await _backend_pids(db))
        with pytest.raises(DBAPIError):
            async with db.admin() as session:
                await session.execute(text("SELECT 1"))
    finally:
        await db.dispose()
