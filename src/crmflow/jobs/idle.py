"""IMAP IDLE listeners: new mail in an IMAP mailbox starts its sync at once.

:class:`IdleListeners` keeps one IDLE connection (RFC 2177) open per
connected IMAP mailbox (password accounts, Gmail over IMAP), up to
``limit`` of them; the others, and every mailbox whose server offers no IDLE,
are polled by the schedule as before. When the server reports a change the
mailbox is made due now (logged as a webhook run) and the runner is told
(:meth:`ScheduleStore.due_now`; the in-process runner's wake-up, or the
workers' ``NOTIFY``). An IDLE that ends quietly (every
:data:`IDLE_S`, below the 29 minutes servers allow) is simply begun again.

A connection that fails (a server down) is retried after a growing pause
(1, 2, 4 … seconds, at most :data:`RETRY_MAX_S`), never in a hot loop; a
refused sign-in (a changed password) waits :data:`RETRY_MAX_S` each time, so
the listener never gets the account locked; the scheduled sync reports the
failure to the user. Each connection compares INBOX with how the previous
one left it (UIDVALIDITY, UIDNEXT, EXISTS, HIGHESTMODSEQ), so mail that lands
between two IDLEs, or while the server was unreachable, starts a sync as soon
as the listener is back. Every
:data:`REFRESH_S` the set of mailboxes is read again: new ones get a
listener, removed or disconnected ones lose theirs.

Each waiting connection blocks one thread of the listeners' own pool (sized
``limit``), so the listeners never take the threads the syncs need.

Several processes may listen (``crmflow worker --imap-idle`` on PostgreSQL):
a listener starts only for a mailbox whose claim it got
(:class:`MailboxClaims`; the workers' are PostgreSQL advisory locks,
:class:`crmflow.jobs.queue.AdvisoryClaims`), so each mailbox has one
connection in the deployment and the mailboxes spread over the processes, up
to ``limit`` each. A process that stops or loses its database connection
frees its claims, and the others take the mailboxes at their next refresh.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from crmflow.errors import NotFound
from crmflow.jobs._cancel import cancel_and_wait
from crmflow.providers.base import AuthError
from crmflow.providers.imap import InboxState
from crmflow.services.mail import MailService
from crmflow.store.db import Database
from crmflow.store.schedule import DueAccount, ScheduleStore, SyncKind

_log = logging.getLogger(__name__)

#: one IDLE lasts at most this long before it is begun again (servers end
#: it after 29 minutes; RFC 2177 asks clients to re-issue it before 29)
IDLE_S = 25 * 60.0
#: the longest pause before a failed connection is tried again
RETRY_MAX_S = 300.0
#: how often the set of mailboxes is read again
REFRESH_S = 60.0
#: an IDLE that returns this fast without a change means the server has no IDLE
NO_IDLE_S = 1.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class MailboxClaims(Protocol):
    """Which process of the deployment listens to which mailbox."""

    async def take(self, account_id: uuid.UUID) -> bool:
        """Claim a mailbox for this process; False when another one has it."""
        ...

    async def release(self, account_id: uuid.UUID) -> None:
        """Give a claimed mailbox back (nothing when it was not claimed)."""
        ...

    async def kept(self) -> bool:
        """False once the claims taken were lost (a dropped connection):
        every listener must stop, as another process may now listen."""
        ...

    async def close(self) -> None:
        """Give every claim back."""
        ...


class OneProcess:
    """The claims of a deployment in which one process listens (the
    embedded default): every mailbox is this process's."""

    async def take(self, account_id: uuid.UUID) -> bool:
        return True

    async def release(self, account_id: uuid.UUID) -> None:
        return None

    async def kept(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class IdleListeners:
    """IDLE connections to the connected IMAP mailboxes (see the module)."""

    def __init__(
        self,
        schedule_db: Database,
        mail: MailService,
        *,
        limit: int,
        on_change: Callable[[], None] | None = None,
        claims: MailboxClaims | None = None,
        idle_s: float = IDLE_S,
        refresh_s: float = REFRESH_S,
        retry_max_s: float = RETRY_MAX_S,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        """
        Args:
            schedule_db: sees every tenant's mailboxes (as the scheduler's).
            limit: connections held at most (0: the listeners do nothing).
            on_change: called after a mailbox was made due (the in-process
                runner's wake-up).
            claims: shared with the deployment's other listening processes
                (None: this process listens alone).
        """
        self._db = schedule_db
        self._mail = mail
        self._limit = limit
        self._on_change = on_change
        self._claims: MailboxClaims = claims if claims is not None else OneProcess()
        self._idle_s = idle_s
        self._refresh_s = refresh_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        #: listeners being stopped (their connections log out)
        self._stopping: set[asyncio.Task[None]] = set()
        #: mailboxes that are not IMAP or whose server has no IDLE
        self._polled: set[uuid.UUID] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> set[uuid.UUID]:
        """The mailboxes with a listener now."""
        return {k for k, t in self._tasks.items() if not t.done()}

    def _stop_listener(self, account_id: uuid.UUID) -> None:
        gone = self._tasks.pop(account_id)
        gone.cancel()
        self._stopping.add(gone)
        gone.add_done_callback(self._stopping.discard)

    async def refresh(self) -> None:
        """Start listeners for new mailboxes, stop those of removed ones."""
        if not await self._claims.kept():
            _log.warning("IMAP IDLE claims were lost; listening again")
            for account_id in list(self._tasks):
                self._stop_listener(account_id)
        async with self._db.admin() as session:
            mailboxes = await ScheduleStore(session).mailboxes()
        wanted = {m.account_id: m for m in mailboxes}
        for account_id in list(self._tasks):
            if account_id not in wanted:
                self._stop_listener(account_id)
                await self._claims.release(account_id)
            elif self._tasks[account_id].done():  # polled, or gone meanwhile
                del self._tasks[account_id]
                await self._claims.release(account_id)
        self._polled &= set(wanted)
        for account_id, due in wanted.items():
            if account_id in self._tasks:
                continue
            if account_id in self._polled or len(self.listening) >= self._limit:
                continue
            if not await self._claims.take(account_id):
                continue  # another process listens
            self._tasks[account_id] = asyncio.create_task(
                self._listen(due), name=f"crmflow-idle-{account_id}"
            )

    async def _listen(self, due: DueAccount) -> None:
        failures = 0
        #: INBOX as the previous wait left it: the next connection compares
        #: (mail that landed between two IDLEs, or during an outage, counts)
        seen: InboxState | None = None
        assert self._pool is not None  # noqa: S101 - made by run_forever
        while True:
            try:
                mailbox = await self._mail.idle_mailbox(due.ctx, due.account_id)
                if mailbox is None:
                    self._polled.add(due.account_id)
                    return
                mailbox.expect_inbox(seen)
                began = time.monotonic()
                changed = await mailbox.wait_for_change(
                    self._idle_s, executor=self._pool
                )
                seen = mailbox.inbox_state
                if changed:
                    await self._changed(due.account_id)
            except NotFound:
                return  # removed: the next refresh forgets it
            except Exception as exc:
                # a provider failure, or the database briefly gone: never a
                # dead listener, never a hot loop
                failures += 1
                pause = (
                    self._retry_max_s  # a refused sign-in: no lock-out by retries
                    if isinstance(exc, AuthError)
                    else min(self._retry_max_s, 2.0 ** (failures - 1))
                )
                pause *= 0.5 + random.random() / 2  # noqa: S311 - jitter
                _log.warning(
                    "IMAP IDLE for email account %s failed (%s); retrying in %.0f s",
                    due.account_id,
                    type(exc).__name__,
                    pause,
                )
                await asyncio.sleep(pause)
                continue
            failures = 0
            if not changed and time.monotonic() - began < min(
                NO_IDLE_S, self._idle_s / 2
            ):
                _log.info(
                    "the server of email account %s offers no IDLE: it is polled",
                    due.account_id,
                )
                self._polled.add(due.account_id)
                return

    async def _changed(self, account_id: uuid.UUID) -> None:
        async with self._db.admin(write_lock=True) as session:
            await ScheduleStore(session).due_now(
                SyncKind.MAIL, account_id, self._clock()
            )
        if self._on_change is not None:
            self._on_change()

    async def run_forever(self) -> None:
        """Listen until cancelled, reading the mailboxes every ``refresh_s``."""
        if self._limit < 1:
            return
        self._pool = ThreadPoolExecutor(
            max_workers=self._limit, thread_name_prefix="crmflow-idle"
        )
        try:
            while True:
                try:
                    await self.refresh()
                except Exception:
                    _log.exception("reading the mailboxes for IDLE failed")
                await asyncio.sleep(self._refresh_s)
        finally:
            tasks = [*self._tasks.values(), *self._stopping]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.clear()
            try:
                await self._claims.close()
            except Exception:  # the claims end with their connection anyway
                _log.warning("giving back IMAP IDLE claims failed", exc_info=True)
            # each cancelled wait ends its IDLE within about half a second
            self._pool.shutdown(wait=False, cancel_futures=True)

    def start(self) -> None:
        """Run as a task of the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self.run_forever(), name="crmflow-idle")

    async def stop(self) -> None:
        """Stop every listener (their connections log out)."""
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        self._task = None
