"""aiosqlite connections that run a statement in one trip to their thread.

aiosqlite keeps each sqlite3 connection in a thread of its own and hands it
every call through a queue; the answer comes back through the event loop (a
wake-up, a future, a task switch). SQLAlchemy's adapter makes four such trips
per statement (open a cursor, execute, fetch the rows, close the cursor), and
the pool rolls back every connection it gets back, in a transaction or not. In
``crmflow serve`` on SQLite, where the web app, the scheduler and every sync
share one event loop, those trips were a large share of a sync run's cost.

:class:`OneTripConnection` is an aiosqlite connection whose cursors execute a
statement, fetch all its rows and close in one trip, then answer
``description``, ``rowcount``, ``lastrowid`` and the fetches from what that
trip brought back; ``commit`` and ``rollback`` make no trip when no
transaction is open. Everything SQLAlchemy's aiosqlite dialect does besides is
unchanged (the same module, errors and thread). Result rows are always
fetched whole, as the adapter's ordinary cursors do already; crmflow uses no
server-side cursors.

It relies on three internals of aiosqlite 0.22 (``Connection._execute``,
``_conn`` and ``_thread``), which is why that dependency is pinned to its minor
version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL

#: rows, description, rowcount, lastrowid of one executed statement
_Outcome = tuple[list[Any], Any, int, int | None]


def _execute(connection: sqlite3.Connection, sql: str, parameters: Any) -> _Outcome:
    # Runs in the connection's thread.
    cursor = connection.cursor()
    try:
        cursor.execute(sql, () if parameters is None else parameters)
        rows = cursor.fetchall() if cursor.description else []
        return rows, cursor.description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _execute_many(
    connection: sqlite3.Connection, sql: str, parameters: Sequence[Any]
) -> _Outcome:
    # Runs in the connection's thread.
    cursor = connection.cursor()
    try:
        cursor.executemany(sql, parameters)
        return [], cursor.description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor:
    """The part of an aiosqlite cursor that SQLAlchemy's adapter uses.

    ``execute`` and ``executemany`` make one trip each; the rest answers from
    the last statement's outcome without one.
    """

    __slots__ = (
        "_connection",
        "_rows",
        "arraysize",
        "description",
        "lastrowid",
        "rowcount",
    )

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> OneTripCursor:
        self._keep(await self._connection.run(_execute, sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> OneTripCursor:
        self._keep(await self._connection.run(_execute_many, sql, parameters))
        return self

    def _keep(self, outcome: _Outcome) -> None:
        self._rows, self.description, self.rowcount, self.lastrowid = outcome

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        # the sqlite3 cursor was closed in the trip that used it
        self._rows = []


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection with one trip per statement (module docstring)."""

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        # aiosqlite's own makes a trip to open a sqlite3 cursor; this one is
        # opened in the trip that executes the statement
        return OneTripCursor(self)

    async def run(self, function: Callable[..., _Outcome], *arguments: Any) -> _Outcome:
        """``function(sqlite3_connection, *arguments)`` in the connection's
        thread, in turn with every other call on this connection."""
        outcome: _Outcome = await self._execute(  # type: ignore[no-untyped-call]
            function, self._conn, *arguments
        )
        return outcome

    async def commit(self) -> None:
        # in_transaction only reads SQLite's autocommit flag: safe from this
        # thread while the connection's own thread has nothing of ours to run
        if self._conn.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        if self._conn.in_transaction:
            await super().rollback()


def async_creator(url: URL) -> Callable[[], OneTripConnection]:
    """A connection factory for ``create_async_engine(async_creator=...)``
    that opens ``url`` (a ``sqlite+aiosqlite`` URL) as SQLAlchemy's aiosqlite
    dialect would, with :class:`OneTripConnection`."""
    arguments, options = SQLiteDialect_aiosqlite().create_connect_args(url)

    def connect() -> OneTripConnection:
        connection = OneTripConnection(
            partial(sqlite3.connect, *arguments, **options), iter_chunk_size=64
        )
        # as SQLAlchemy's dialect does: a connection nobody closed must not
        # keep the process from exiting
        connection._thread.daemon = True
        return connection

    return connect
