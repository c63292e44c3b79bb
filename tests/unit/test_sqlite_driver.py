"""SQLite connections that run a statement in one trip to their thread
(``crmflow.store.sqlite_driver``), through the engines ``Database`` makes.

Trips are counted where aiosqlite queues work for a connection's thread; the
outcomes (rows, counts, what another connection sees) are read back from the
database file.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from crmflow.store.db import Database


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Work handed to any aiosqlite connection's thread, by function name."""
    seen: Counter[str] = Counter()
    queue_work = aiosqlite.Connection._execute

    async def counted(
        self: aiosqlite.Connection, fn: Any, *args: Any, **kw: Any
    ) -> Any:
        seen[getattr(fn, "__name__", repr(fn))] += 1
        return await queue_work(self, fn, *args, **kw)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


async def _database(tmp_path: Path, *, pooled: bool) -> Database:
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
        setup.executemany(
            "INSERT INTO item (name) VALUES (?)", [("a",), ("b",), ("c",)]
        )
    database = Database(f"sqlite:///{path}", pooled=pooled)
    # pooled: the connections are opened here (pragmas and all), so that the
    # tests count only the trips of their own statements
    async with database.admin() as session:
        await session.execute(text("SELECT 1"))
    async with database.admin(write_lock=True) as session:
        await session.execute(text("SELECT 1"))
    return database


@pytest.fixture(params=[True, False], ids=["pooled", "unpooled"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """Both kinds of engine: crmflow serve's (pooled) and everyone else's."""
    database = await _database(tmp_path, pooled=request.param)
    yield database
    await database.dispose()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Database]:
    """The pooled engines of crmflow serve, connections already open."""
    database = await _database(tmp_path, pooled=True)
    yield database
    await database.dispose()


def _names(path: Path) -> list[str]:
    with sqlite3.connect(path) as check:
        return [row[0] for row in check.execute("SELECT name FROM item ORDER BY id")]


def _path(db: Database) -> Path:
    return Path(str(db.engine.url.database))


async def test_a_read_is_one_trip_with_all_its_rows(
    served: Database, trips: Counter[str]
) -> None:
    async with served.admin() as session:
        result = await session.execute(text("SELECT id, name FROM item ORDER BY id"))
        rows = [tuple(row) for row in result]
        assert list(result.keys()) == ["id", "name"]
    assert rows == [(1, "a"), (2, "b"), (3, "c")]
    # the statement; opening, fetching, closing, the commit of a transaction
    # that never began and the pool's rollback on return make none
    assert sum(trips.values()) == 1, trips


async def test_a_write_locked_transaction_costs_begin_statements_and_commit(
    served: Database, trips: Counter[str]
) -> None:
    async with served.admin(write_lock=True) as session:
        updated = await session.execute(
            text("UPDATE item SET name = name || '!' WHERE id >= 2")
        )
        assert updated.rowcount == 2  # type: ignore[attr-defined]
        inserted = await session.execute(
            text("INSERT INTO item (name) VALUES ('d') RETURNING id")
        )
        assert inserted.scalar_one() == 4
    # BEGIN IMMEDIATE, UPDATE, INSERT, COMMIT; no rollback on return
    assert sum(trips.values()) == 4, trips
    assert trips["commit"] == 1
    assert trips["rollback"] == 0
    assert _names(_path(served)) == ["a", "b!", "c!", "d"]


async def test_many_rows_in_one_statement(db: Database) -> None:
    async with db.admin(write_lock=True) as session:
        await session.execute(
            text("INSERT INTO item (name) VALUES (:name)"),
            [{"name": "x"}, {"name": "y"}],
        )
        renamed = await session.execute(
            text("UPDATE item SET name = :new WHERE name = :old"),
            [{"new": "x2", "old": "x"}, {"new": "y2", "old": "y"}],
        )
        assert renamed.rowcount == 2  # type: ignore[attr-defined]
        count = await session.scalar(text("SELECT count(*) FROM item"))
        assert count == 5
    assert _names(_path(db))[-2:] == ["x2", "y2"]


async def test_an_insert_tells_its_row_id(db: Database) -> None:
    async with db.admin(write_lock=True) as session:
        inserted = await session.execute(text("INSERT INTO item (name) VALUES ('n')"))
        assert inserted.lastrowid == 4  # type: ignore[attr-defined]


async def test_the_default_engine_commits_its_writes(db: Database) -> None:
    # no write lock: the driver begins the transaction implicitly at the write
    async with db.admin() as session:
        await session.execute(text("UPDATE item SET name = 'a1' WHERE id = 1"))
        await session.execute(text("INSERT INTO item (name) VALUES ('d')"))
    assert _names(_path(db)) == ["a1", "b", "c", "d"]


async def test_a_failed_statement_leaves_nothing_of_its_transaction(
    db: Database, trips: Counter[str]
) -> None:
    async def add_one_then_a_duplicate() -> None:
        async with db.admin(write_lock=True) as session:
            await session.execute(text("INSERT INTO item (name) VALUES ('e')"))
            await session.execute(text("INSERT INTO item (name) VALUES ('a')"))

    with pytest.raises(IntegrityError):
        await add_one_then_a_duplicate()
    assert trips["rollback"] == 1
    assert _names(_path(db)) == ["a", "b", "c"]
    # the connection is usable again (pooled: the same one)
    async with db.admin(write_lock=True) as session:
        await session.execute(text("INSERT INTO item (name) VALUES ('e')"))
    assert _names(_path(db)) == ["a", "b", "c", "e"]


async def test_a_rollback_in_a_transaction_still_undoes_it(db: Database) -> None:
    async with db.admin(write_lock=True) as session:
        await session.execute(text("DELETE FROM item"))
        await session.rollback()
    async with db.admin() as session:
        await session.execute(text("UPDATE item SET name = 'z' WHERE id = 1"))
        await session.rollback()
    # the next writes (pooled: on the same connections) commit only their own
    async with db.admin() as session:
        await session.execute(text("UPDATE item SET name = 'b1' WHERE id = 2"))
    async with db.admin(write_lock=True) as session:
        await session.execute(text("UPDATE item SET name = 'c1' WHERE id = 3"))
    assert _names(_path(db)) == ["a", "b1", "c1"]
