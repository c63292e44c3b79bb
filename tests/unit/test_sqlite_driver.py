"""SQLite connections that run statements in the event loop's thread and wait
for another connection's lock in their own (``crmflow.store.sqlite_driver``),
through the engines ``Database`` makes.

Trips are counted where aiosqlite queues work for a connection's thread; the
outcomes (rows, counts, what another connection sees) are read back from the
database file. The lock is held by a plain sqlite3 connection of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from crmflow.store.db import Database
from crmflow.store.sqlite_driver import async_creator


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


async def test_a_read_makes_no_trip_and_brings_all_its_rows(
    served: Database, trips: Counter[str]
) -> None:
    async with served.admin() as session:
        result = await session.execute(text("SELECT id, name FROM item ORDER BY id"))
        rows = [tuple(row) for row in result]
        assert list(result.keys()) == ["id", "name"]
    assert rows == [(1, "a"), (2, "b"), (3, "c")]
    assert sum(trips.values()) == 0, trips


async def test_a_write_locked_transaction_makes_no_trip(
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
    assert sum(trips.values()) == 0, trips
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
    db: Database,
) -> None:
    async def add_one_then_a_duplicate() -> None:
        async with db.admin(write_lock=True) as session:
            await session.execute(text("INSERT INTO item (name) VALUES ('e')"))
            await session.execute(text("INSERT INTO item (name) VALUES ('a')"))

    with pytest.raises(IntegrityError):
        await add_one_then_a_duplicate()
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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (another process, say) holding the write lock."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE item SET name = 'held' WHERE id = 1")
        yield holder
    finally:
        holder.close()


async def test_a_write_waits_for_another_connections_lock_without_stopping_the_loop(
    db: Database, trips: Counter[str]
) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async def locked_write() -> None:
        async with db.admin(write_lock=True) as session:
            await session.execute(text("INSERT INTO item (name) VALUES ('w1')"))

    async def plain_write() -> None:
        async with db.admin() as session:
            await session.execute(text("INSERT INTO item (name) VALUES ('w2')"))

    ticking = asyncio.create_task(tick())
    try:
        with _locked(_path(db)) as holder:
            writes = [asyncio.create_task(w()) for w in (locked_write, plain_write)]
            await asyncio.sleep(0.3)
            # the loop went on meanwhile (reads too: WAL), the writes wait
            assert ticks >= 10
            async with db.admin() as session:
                assert await session.scalar(text("SELECT count(*) FROM item")) == 3
            assert not any(w.done() for w in writes)
            holder.execute("COMMIT")
            await asyncio.wait_for(asyncio.gather(*writes), 10)
    finally:
        ticking.cancel()
    # each waited in its connection's thread, once
    assert trips["_waiting"] == 2
    assert sorted(_names(_path(db))) == ["b", "c", "held", "w1", "w2"]


@contextlib.asynccontextmanager
async def _connection(tmp_path: Path, *, wait_ms: int) -> AsyncIterator[Any]:
    """One driver connection to a fresh database file, outside any engine."""
    await _database(tmp_path, pooled=False)  # the file and its table
    connection = await async_creator(
        make_url(f"sqlite+aiosqlite:///{tmp_path / 't.db'}"), wait_ms=wait_ms
    )()
    try:
        yield connection
    finally:
        await connection.close()


async def test_a_write_waits_no_longer_than_asked(tmp_path: Path) -> None:
    async with _connection(tmp_path, wait_ms=200) as connection:
        with _locked(tmp_path / "t.db"):
            cursor = connection.cursor()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await cursor.execute("INSERT INTO item (name) VALUES ('late')")
            # refused at once in the loop's thread, then waited in its own:
            # the connection says "no waiting" to anyone else using it here
            busy = connection._conn.execute("PRAGMA busy_timeout").fetchone()
            assert busy == (0,)
    assert _names(tmp_path / "t.db") == ["a", "b", "c"]


@pytest.mark.parametrize("caller_leaves", [False, True], ids=["waits", "goes away"])
async def test_calls_after_one_that_waits_follow_it(
    tmp_path: Path, caller_leaves: bool
) -> None:
    async with _connection(tmp_path, wait_ms=10_000) as connection:
        with _locked(tmp_path / "t.db") as holder:
            first = asyncio.create_task(
                connection.cursor().execute("INSERT INTO item (name) VALUES ('w')")
            )
            await asyncio.sleep(0.05)  # waiting for the lock, in the thread
            if caller_leaves:
                # the write still runs there once the lock is free: what
                # comes next on the connection must not run beside it
                first.cancel()
            counted = asyncio.create_task(
                connection.cursor().execute("SELECT count(*) FROM item")
            )
            await asyncio.sleep(0.05)
            assert not counted.done()  # in turn behind the write
            holder.execute("COMMIT")
            if not caller_leaves:
                await asyncio.wait_for(first, 10)
            after = await asyncio.wait_for(counted, 10)
        # it saw the write that came before it
        assert await after.fetchall() == [(4,)]
        # and the connection waits for no lock in the loop's thread again
        assert connection._conn.execute("PRAGMA busy_timeout").fetchone() == (0,)


async def test_a_rollback_behind_a_begin_still_waiting_undoes_it(
    tmp_path: Path,
) -> None:
    async with _connection(tmp_path, wait_ms=10_000) as connection:
        with _locked(tmp_path / "t.db") as holder:
            begin = asyncio.create_task(connection.cursor().execute("BEGIN IMMEDIATE"))
            await asyncio.sleep(0.05)  # waiting for the lock, in the thread
            begin.cancel()  # its caller gives up and rolls back
            rollback = asyncio.create_task(connection.rollback())
            await asyncio.sleep(0.05)
            holder.execute("COMMIT")
            await asyncio.wait_for(rollback, 10)
            # whatever comes next runs after the BEGIN
            await asyncio.wait_for(connection.cursor().execute("SELECT 1"), 10)
        # the BEGIN ran once the lock was free, and the rollback after it:
        # nobody holds the lock now
        assert not connection._conn.in_transaction
        other = sqlite3.connect(tmp_path / "t.db", timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()


async def test_a_transaction_that_read_before_another_committed_fails_at_once(
    tmp_path: Path, trips: Counter[str]
) -> None:
    await _database(tmp_path, pooled=False)
    connection = await async_creator(
        make_url(f"sqlite+aiosqlite:///{tmp_path / 't.db'}"), wait_ms=10_000
    )()
    trips.clear()
    try:
        await connection.cursor().execute("BEGIN")
        await connection.cursor().execute("SELECT count(*) FROM item")
        with _locked(tmp_path / "t.db") as holder:
            holder.execute("COMMIT")
        # waiting would not help (its snapshot is older than that commit)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await connection.cursor().execute("INSERT INTO item (name) VALUES ('x')")
        assert trips["_waiting"] == 0
        await connection.rollback()
    finally:
        await connection.close()
