"""aiosqlite connections that run statements in the event loop's own thread.

aiosqlite keeps each sqlite3 connection in a thread of its own and hands it
every call through a queue; the answer comes back through the event loop (a
wake-up, a future, a task switch). SQLAlchemy's adapter makes four such trips
per statement (open a cursor, execute, fetch the rows, close the cursor), and
the pool rolls back every connection it gets back, in a transaction or not.
In ``crmflow serve`` on SQLite, where the web app, the scheduler and every
sync share one event loop, a trip cost about 0.8 ms (0.3 ms until the thread
took it, 0.3 ms of SQLite, 0.2 ms until the loop resumed the caller), and a
write-locked transaction held SQLite's one write lock for all of its trips:
at 100 push notifications a second the lock was held 90 % of the time, and
every write queued for it.

:class:`InlineConnection` is an aiosqlite connection that runs each statement
(execute, fetch every row, close the sqlite3 cursor), commit and rollback
right where it is awaited, in the event loop's thread: a statement on a local
SQLite file takes tens to hundreds of microseconds, less than the trip.
Its cursors answer ``description``, ``rowcount``, ``lastrowid`` and the
fetches from what the statement brought back; ``commit`` and ``rollback`` do
nothing when no transaction is open. Everything else SQLAlchemy's aiosqlite
dialect does is unchanged (the same module, errors and connect/close in the
thread). Result rows are always fetched whole, as the adapter's ordinary
cursors do already; crmflow uses no server-side cursors.

What must never happen in the loop's thread is waiting for SQLite's write
lock while another connection holds it (another process, or a connection of
this one outside its write gate): that would stop the whole process, and the
holder with it. So the connection's busy timeout is 0 (SQLite answers "database
is locked" at once, having done nothing), and a statement that gets that
answer runs again in the connection's own thread with the busy timeout the
database asked for, where waiting holds up only its caller. Calls made while
one waits there follow it through the thread, in order.

A statement slow by itself (a listing of many thousands of rows, an INSERT of
a thousand) holds the loop for its milliseconds, as the GIL mostly did anyway
while the thread turned its rows into Python objects. So does a commit's
flush of the write-ahead log to disk (SQLite's default ``synchronous=FULL``,
kept: a few tenths of a millisecond here), and every 1,000 pages or so (4 MB
written) the commit that copies the log into the database file (a few ms).

It relies on three internals of aiosqlite 0.22 (``Connection._execute``,
``_conn`` and ``_thread``), which is why that dependency is pinned to its minor
version.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL

T = TypeVar("T")

#: rows, description, rowcount, lastrowid of one executed statement
_Outcome = tuple[list[Any], Any, int, int | None]


def _execute(connection: sqlite3.Connection, sql: str, parameters: Any) -> _Outcome:
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
    cursor = connection.cursor()
    try:
        cursor.executemany(sql, parameters)
        return [], cursor.description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _commit(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.commit()


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.rollback()


#: "another connection holds the lock" (or is recovering the WAL): waiting
#: helps. Not SQLITE_BUSY_SNAPSHOT: a transaction that read before another
#: committed can never write, however long it waits.
_WAIT_HELPS = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_BUSY_RECOVERY})


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock."""
    return getattr(exc, "sqlite_errorcode", None) in _WAIT_HELPS


def _waiting(
    connection: sqlite3.Connection,
    wait_ms: int,
    done: threading.Event,
    function: Callable[..., T],
    *arguments: Any,
) -> T:
    # Runs in the connection's thread: the one place that waits for a lock.
    try:
        connection.execute(f"PRAGMA busy_timeout={wait_ms}")
        try:
            return function(connection, *arguments)
        finally:
            connection.execute("PRAGMA busy_timeout=0")
    finally:
        done.set()


class InlineCursor:
    """The part of an aiosqlite cursor that SQLAlchemy's adapter uses.

    ``execute`` and ``executemany`` run the statement; the rest answers from
    its outcome.
    """

    __slots__ = (
        "_connection",
        "_rows",
        "arraysize",
        "description",
        "lastrowid",
        "rowcount",
    )

    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        self._keep(await self._connection.run(_execute, sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> InlineCursor:
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
        # the sqlite3 cursor was closed by the statement that used it
        self._rows = []


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs statements in the event loop's
    thread, and waits for locks in its own (module docstring)."""

    def __init__(
        self, connector: Callable[[], sqlite3.Connection], *, wait_ms: int
    ) -> None:
        """
        Args:
            connector: opens the sqlite3 connection with a busy timeout of 0.
            wait_ms: how long a statement waits for another connection's lock
                (in the connection's thread) before "database is locked".
        """
        super().__init__(connector, iter_chunk_size=64)
        self._wait_ms = wait_ms
        #: set once the last call handed to the thread has run there (not
        #: when its caller stopped waiting: a cancelled caller's call still
        #: runs); until then later calls follow it through the thread
        self._thread_done: threading.Event | None = None

    def cursor(self) -> InlineCursor:  # type: ignore[override]
        # aiosqlite's own makes a trip to open a sqlite3 cursor; this one is
        # opened by the statement that uses it
        return InlineCursor(self)

    async def run(self, function: Callable[..., T], *arguments: Any) -> T:
        """``function(sqlite3_connection, *arguments)``: here, or in the
        connection's thread once it must wait for a lock."""
        if not self._behind_thread():
            connection = self._conn
            changes = connection.total_changes
            try:
                return function(connection, *arguments)
            except sqlite3.OperationalError as exc:
                # run again only what did nothing (an executemany outside a
                # transaction may have written rows before it was refused)
                if not _busy(exc) or connection.total_changes != changes:
                    raise
        # the thread runs its calls in order: this one's end is the last's
        done = self._thread_done = threading.Event()
        outcome: T = await self._execute(  # type: ignore[no-untyped-call]
            _waiting, self._conn, self._wait_ms, done, function, *arguments
        )
        return outcome

    def _behind_thread(self) -> bool:
        """Whether a call handed to the thread has not run yet."""
        return self._thread_done is not None and not self._thread_done.is_set()

    async def commit(self) -> None:
        # behind a call still to run in the thread (a BEGIN waiting for the
        # lock), whether a transaction is open is known only after it
        if self._behind_thread() or self._conn.in_transaction:
            await self.run(_commit)

    async def rollback(self) -> None:
        if self._behind_thread() or self._conn.in_transaction:
            await self.run(_rollback)


def async_creator(url: URL, *, wait_ms: int) -> Callable[[], InlineConnection]:
    """A connection factory for ``create_async_engine(async_creator=...)``
    that opens ``url`` (a ``sqlite+aiosqlite`` URL) as SQLAlchemy's aiosqlite
    dialect would, with :class:`InlineConnection`; a statement waits up to
    ``wait_ms`` for another connection's lock."""
    arguments, options = SQLiteDialect_aiosqlite().create_connect_args(url)
    # never wait in the event loop's thread (InlineConnection waits in its own)
    options = {**options, "timeout": 0}

    def connect() -> InlineConnection:
        connection = InlineConnection(
            partial(sqlite3.connect, *arguments, **options), wait_ms=wait_ms
        )
        # as SQLAlchemy's dialect does: a connection nobody closed must not
        # keep the process from exiting
        connection._thread.daemon = True
        return connection

    return connect
