"""Database engines, transactions, and the tenant scope of every transaction.

One :class:`Database` per URL. :meth:`Database.tenant` opens a transaction that
runs as a :class:`~crmflow.domain.tenancy.TenantContext`: on PostgreSQL it sets
``app.user_id`` / ``app.org_id`` with ``set_config(..., true)`` at the start of
the transaction (transaction-local, so pooled connections cannot leak a tenant),
which the row level security policies of ``store/rls.py`` read. Repositories add
the same predicates in SQL on both databases.

The admin database (the migration role's URL) is used only by the CLI for
migrations, provisioning and key rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool

from crmflow.domain.tenancy import TenantContext
from crmflow.store.sqlite_driver import async_creator

_SQLITE_BUSY_TIMEOUT_MS = 15_000  # writers wait this long for the file lock


def async_url(url: str) -> URL:
    """The URL with the async driver crmflow uses (aiosqlite, psycopg)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def sync_url(url: str) -> URL:
    """The URL with the synchronous driver (migrations, Alembic)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def ensure_sqlite_dir(url: str) -> None:
    """Create the directory of a SQLite database file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (
        None,
        "",
        ":memory:",
    ):
        Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)


def _sqlite_manual_transactions(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN would start the transaction late (only at the
    # first write); with it off, the "begin" listener below decides.
    dbapi_conn.isolation_level = None


def _sqlite_begin_immediate(conn: Connection) -> None:
    # Takes SQLite's write lock at the start of the transaction, so a second
    # process doing the same waits (busy_timeout) instead of both proceeding.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    # no busy_timeout here: the connection waits for locks in its own thread
    # (sqlite_driver.py), never in the event loop's
    cur.close()


#: settings of a transaction that row level security reads
_CONTEXT_KEYS = ("app.user_id", "app.org_id", "app.login_email", "app.token_hash")


def _set_tenant(session: Session, _tx: SessionTransaction, conn: Connection) -> None:
    """Set the row level security context at the start of each transaction."""
    if conn.dialect.name != "postgresql":
        return
    values: Mapping[str, str] = session.info.get("rls", {})
    if not values:
        return
    keys = [key for key in _CONTEXT_KEYS if key in values]
    if not keys:
        return
    # one statement for all of them: a transaction's first round trip is
    # this one, and every sync and webhook opens several transactions
    calls = ", ".join(f"set_config(:k{n}, :v{n}, true)" for n in range(len(keys)))
    params: dict[str, str] = {}
    for n, key in enumerate(keys):
        params[f"k{n}"], params[f"v{n}"] = key, values[key]
    conn.execute(text(f"SELECT {calls}"), params)


class _TenantSession(Session):
    """The sessions of :class:`Database`: each transaction sets its row level
    security context (:func:`_set_tenant`, from ``session.info["rls"]``).

    The listener is the class's, registered once, rather than added to each
    session: a sync run opens several, and each registration cost more than
    the rest of making the session (13 against 3 µs measured alone)."""


event.listen(_TenantSession, "after_begin", _set_tenant)


#: a pooled PostgreSQL connection unused for this long is pinged before use
PING_AFTER_IDLE_S = 10.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use when it sat idle for
    :data:`PING_AFTER_IDLE_S` (a server restart or a network cut may have
    closed it meanwhile); a dead one is replaced, and the transaction never
    sees it.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip per
    transaction, and a sync or a webhook opens several. A connection handed
    back a moment ago is as alive as the one just used, so only idle ones
    are pinged. (One that dies while in busy use fails its transaction, and
    SQLAlchemy then drops every connection of the pool opened before.)
    """
    dialect = engine.dialect

    def returned(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def taken(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            dialect.do_ping(dbapi)
        except Exception as exc:
            # the pool throws this connection away and takes another
            raise DisconnectionError("a pooled connection was closed") from exc

    # on the engine: the listeners apply to its pool, and to the one a
    # dispose() makes
    event.listen(engine.sync_engine, "checkin", returned)
    event.listen(engine.sync_engine, "checkout", taken)


class Database:
    """An async engine plus sessions bound to a tenant context."""

    def __init__(self, url: str, *, echo: bool = False, pooled: bool = False) -> None:
        """
        Args:
            pooled: on SQLite, keep connections open between sessions (a
                long-lived process on one event loop: ``crmflow serve``).
                Without it each session opens its own connection, which is
                never shared across event loops (tests, CLI), but costs a
                thread and the pragmas each time. PostgreSQL always pools.
        """
        ensure_sqlite_dir(url)
        aurl = async_url(url)
        self.dialect = aurl.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        #: write-locked transactions of this process queue here first (pooled
        #: SQLite only): they wait their turn in order instead of polling
        #: SQLite's lock with sleeps of up to 100 ms each
        self._write_gate: asyncio.Lock | None = None
        if self.dialect == "sqlite":
            # statements run in the event loop's thread; a wait for another
            # connection's lock in the connection's own (sqlite_driver.py)
            kwargs["async_creator"] = async_creator(
                aurl, wait_ms=_SQLITE_BUSY_TIMEOUT_MS
            )
            if pooled:
                kwargs.update(
                    poolclass=AsyncAdaptedQueuePool, pool_size=5, max_overflow=10
                )
                self._write_gate = asyncio.Lock()
            else:
                kwargs["poolclass"] = NullPool
        else:
            # up to 20 connections, all kept: a burst that needs more waits
            # for one instead of opening and closing extra ones (each a
            # server process and a SCRAM handshake, milliseconds of CPU on
            # both ends)
            # most recently used first: under light load the same few
            # connections stay warm, and the idle ones are the ones pinged
            kwargs.update(pool_size=20, max_overflow=0, pool_use_lifo=True)
        self.engine: AsyncEngine = create_async_engine(aurl, **kwargs)
        if self.dialect == "postgresql":
            _ping_when_idle(self.engine)
        self._locked_sessions = None
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            # A second engine whose transactions hold the database's write lock
            # from their first statement: cross-process single flight on SQLite.
            self._locked_engine: AsyncEngine = create_async_engine(aurl, **kwargs)
            event.listen(self._locked_engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(
                self._locked_engine.sync_engine, "connect", _sqlite_manual_transactions
            )
            event.listen(
                self._locked_engine.sync_engine, "begin", _sqlite_begin_immediate
            )
            self._locked_sessions = async_sessionmaker(
                self._locked_engine,
                expire_on_commit=False,
                sync_session_class=_TenantSession,
            )
        self._sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=_TenantSession
        )

    @property
    def is_postgres(self) -> bool:
        """Whether this is PostgreSQL (row level security is enforced)."""
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def _session(
        self, rls: Mapping[str, str], *, write_lock: bool = False
    ) -> AsyncIterator[AsyncSession]:
        maker = (
            self._locked_sessions
            if write_lock and self._locked_sessions
            else self._sessions
        )
        async with contextlib.AsyncExitStack() as stack:
            if write_lock and self._write_gate is not None:
                await stack.enter_async_context(self._write_gate)
            session = await stack.enter_async_context(maker())
            session.info["rls"] = dict(rls)
            await stack.enter_async_context(session.begin())
            yield session

    def tenant(self, ctx: TenantContext, *, write_lock: bool = False) -> Any:
        """A transaction acting as ``ctx``; commits on success, rolls back on error.

        ``write_lock=True`` serializes the transaction against every other
        write-locked one, across processes: on SQLite it starts with ``BEGIN
        IMMEDIATE`` (the database's write lock); on PostgreSQL it changes nothing
        and the caller locks the rows it needs (``SELECT ... FOR UPDATE``).

        Usage: ``async with db.tenant(ctx) as session: ...``
        """
        session = self._session(
            {"app.user_id": str(ctx.user_id), "app.org_id": str(ctx.organization_id)},
            write_lock=write_lock,
        )
        return _with_ctx(session, ctx)

    def as_user(self, user_id: uuid.UUID) -> Any:
        """A transaction acting as a user before an organization is chosen.

        Sees the user's own row and memberships only.
        """
        return self._session({"app.user_id": str(user_id)})

    def login_lookup(
        self, *, email: str | None = None, token_hash: str | None = None
    ) -> Any:
        """A transaction that may see exactly the user with ``email`` or the API
        token with ``token_hash``, for signing in; nothing else is visible."""
        rls: dict[str, str] = {}
        if email is not None:
            rls["app.login_email"] = email.strip().lower()
        if token_hash is not None:
            rls["app.token_hash"] = token_hash
        return self._session(rls)

    def admin(self, *, write_lock: bool = False) -> Any:
        """A transaction with no tenant context.

        On the migration role's URL this sees every row (provisioning, key
        rotation); on the application role's URL it sees nothing.
        ``write_lock`` as for :meth:`tenant`.
        """
        return self._session({}, write_lock=write_lock)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        if self._locked_sessions is not None:
            await self._locked_engine.dispose()


@asynccontextmanager
async def _with_ctx(inner: Any, ctx: TenantContext) -> AsyncIterator[AsyncSession]:
    async with inner as session:
        session.info["tenant"] = ctx
        yield session


def tenant_of(session: AsyncSession) -> TenantContext:
    """The tenant a session acts as.

    Raises:
        RuntimeError: the session was not opened with :meth:`Database.tenant`
            (a programming error: repositories must never run without a tenant).
    """
    ctx = session.info.get("tenant")
    if not isinstance(ctx, TenantContext):
        raise RuntimeError("repository used outside a tenant transaction")
    return ctx
