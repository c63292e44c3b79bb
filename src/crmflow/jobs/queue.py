r"""``crmflow worker``: scheduled syncs as jobs of a procrastinate queue on PostgreSQL.

Any number of worker processes, on any number of machines, share one queue
in the database (procrastinate's tables, created by ``crmflow db upgrade``):

* ``crmflow.enqueue_due_syncs``, a periodic job every
  :data:`ENQUEUE_EVERY_S` seconds (procrastinate defers each period once,
  whichever worker gets there first), claims the due accounts
  (:meth:`~crmflow.jobs.runner.SyncScheduler.claim_due`: a conditional
  UPDATE per account, so an account is never claimed twice) and defers one
  ``crmflow.sync_account`` job each;
* ``crmflow.sync_account`` runs one claimed account's sync as its owner and
  records the outcome, which sets its next sync. The job's ``lock`` is the
  account, so two jobs of one account never run at the same time on any
  worker; its ``queueing_lock`` is the account too, so a burst of requests
  for one account leaves one job waiting, not many.

* ``crmflow.cleanup``, hourly, removes expired OAuth flows and attachment
  files no message names (:mod:`crmflow.store.cleanup`).
* Push notifications do not wait for the next period: the receiver's
  transaction ends with ``NOTIFY crmflow_due``, every worker ``LISTEN``\ s on
  it (:func:`listen_for_pushes`), and the first to claim the account defers
  its job at once; procrastinate's own notifications then start it on a
  free worker within milliseconds.

A failed sync is an outcome recorded on the account (the schedule retries it
with a back-off), not a failed job; a job fails only on a crash, which is
logged and backed off the same way. Jobs carry ids only, never personal data
or secrets. Workers connect with the owner role's URL
(``CRMFLOW_ADMIN_DATABASE_URL``): the schedule spans every tenant, while each
sync runs as its user under row level security through the app role's URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import procrastinate
import psycopg
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url

from crmflow.bootstrap import Services
from crmflow.connections.service import Integrations
from crmflow.domain.tenancy import Role
from crmflow.jobs._cancel import cancel_and_wait
from crmflow.jobs.idle import IdleListeners
from crmflow.jobs.runner import SyncScheduler, sync_scheduler
from crmflow.services.mail import MailService
from crmflow.store.schedule import DUE_CHANNEL, DueAccount, SyncKind

_log = logging.getLogger(__name__)

#: how often the due accounts are enqueued, in seconds
ENQUEUE_EVERY_S = 5
#: accounts claimed per enqueue run, at most
ENQUEUE_LIMIT = 500
#: the pause before listening again after the connection was lost, in seconds
RELISTEN_S = 5.0
#: the key of the scheduler in each job's context
_SCHEDULER = "crmflow.scheduler"

#: the task names (stable: queued jobs name their task)
SYNC_ACCOUNT = "crmflow.sync_account"
ENQUEUE_DUE = "crmflow.enqueue_due_syncs"
CLEANUP = "crmflow.cleanup"


def lock_of(kind: SyncKind, account_id: uuid.UUID) -> str:
    """The procrastinate lock (and queueing lock) of one account's syncs."""
    return f"crmflow-sync:{kind.value}:{account_id}"


def _scheduler(context: procrastinate.JobContext) -> SyncScheduler:
    found = context.additional_context.get(_SCHEDULER)
    if not isinstance(found, SyncScheduler):  # pragma: no cover - set by run_worker
        raise RuntimeError("the worker was started without a sync scheduler")
    return found


def _register(app: procrastinate.App) -> None:
    """Declare crmflow's jobs on ``app``."""

    @app.task(name=SYNC_ACCOUNT, pass_context=True)
    async def sync_account(
        context: procrastinate.JobContext,
        *,
        kind: str,
        account_id: str,
        user_id: str,
        organization_id: str,
        role: str,
        failures: int,
        pushed: bool = False,
    ) -> str:
        """Run one claimed account's scheduled sync; its outcome."""
        due = DueAccount(
            SyncKind(kind),
            uuid.UUID(account_id),
            uuid.UUID(user_id),
            uuid.UUID(organization_id),
            Role(role),
            failures,
            pushed,
        )
        return (await _scheduler(context).run_claimed(due)).value

    @app.periodic(cron=f"* * * * * */{ENQUEUE_EVERY_S}", periodic_id="due")
    @app.task(name=ENQUEUE_DUE, pass_context=True, queueing_lock=ENQUEUE_DUE)
    async def enqueue_due_syncs(
        context: procrastinate.JobContext, timestamp: int
    ) -> int:
        """Claim the due accounts and queue a sync job for each; how many."""
        scheduler = _scheduler(context)
        await scheduler.sweep_tokens()
        queued = await enqueue_due(app, scheduler)
        if queued:
            _log.info("queued %d scheduled syncs", queued)
        return queued


def _register_cleanup(app: procrastinate.App) -> None:
    @app.periodic(cron="17 * * * *", periodic_id="cleanup")
    @app.task(name=CLEANUP, pass_context=True, queueing_lock=CLEANUP)
    async def cleanup(context: procrastinate.JobContext, timestamp: int) -> str:
        """Housekeeping: expired OAuth flows, unnamed attachment files."""
        done = await _scheduler(context).cleanup(force=True)
        return f"{done.oauth_flows} flows, {done.blobs} files" if done else "nothing"


async def defer_sync(app: procrastinate.App, due: DueAccount) -> bool:
    """Queue one claimed account's sync (False: one is waiting already)."""
    key = lock_of(due.kind, due.account_id)
    try:
        await (
            app.tasks[SYNC_ACCOUNT]
            .configure(lock=key, queueing_lock=key)
            .defer_async(
                kind=due.kind.value,
                account_id=str(due.account_id),
                user_id=str(due.user_id),
                organization_id=str(due.organization_id),
                role=due.role.value,
                failures=due.failures,
                pushed=due.pushed,
            )
        )
    except AlreadyEnqueued:
        return False
    return True


def conninfo(url: str) -> str:
    """A libpq connection string from a crmflow database URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError("the job queue needs PostgreSQL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def queue_app(admin_url: str) -> procrastinate.App:
    """The procrastinate app on the owner role's database, with crmflow's jobs."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo(admin_url)),
        # a worker that stopped abruptly leaves its periodic defers to others;
        # older missed periods are not caught up (the schedule catches up)
        periodic_defaults={"max_delay": 60},
    )
    _register(app)
    _register_cleanup(app)
    return app


#: the first key of crmflow's IMAP IDLE advisory locks ("IMAP"): the second
#: is taken from the mailbox's id
IDLE_LOCK_SPACE = 0x494D4150


def _idle_lock_key(account_id: uuid.UUID) -> int:
    return int.from_bytes(account_id.bytes[:4], "big", signed=True)


class AdvisoryClaims:
    """IMAP IDLE claims as PostgreSQL session advisory locks
    (``pg_try_advisory_lock``), all on one connection of this process: a
    worker that stops or loses that connection frees its mailboxes for the
    others (see :mod:`crmflow.jobs.idle`).

    Two ids that share a key (the first 4 bytes) are simply listened to by
    the same worker: the locks are re-entrant within the connection.
    """

    def __init__(self, url: str) -> None:
        self._conninfo = conninfo(url)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._held: set[uuid.UUID] = set()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True
            )
        return self._conn

    async def take(self, account_id: uuid.UUID) -> bool:
        if account_id in self._held:
            return True  # once: a second lock would outlive the release
        conn = await self._connection()
        cursor = await conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)",
            (IDLE_LOCK_SPACE, _idle_lock_key(account_id)),
        )
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return False
        self._held.add(account_id)
        return True

    async def release(self, account_id: uuid.UUID) -> None:
        if account_id not in self._held:
            return
        self._held.discard(account_id)
        if self._conn is not None and not self._conn.closed:
            await self._conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)",
                (IDLE_LOCK_SPACE, _idle_lock_key(account_id)),
            )

    async def kept(self) -> bool:
        if not self._held:
            return True
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                await conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                pass
        # the locks went with the connection
        self._held.clear()
        await self._drop()
        return False

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def close(self) -> None:
        self._held.clear()
        await self._drop()


async def enqueue_due(app: procrastinate.App, scheduler: SyncScheduler) -> int:
    """Claim what is due now and queue a sync job each; how many."""
    queued = 0
    for due in await scheduler.claim_due(limit=ENQUEUE_LIMIT):
        queued += await defer_sync(app, due)
    return queued


async def listen_for_pushes(
    url: str, app: procrastinate.App, scheduler: SyncScheduler
) -> None:
    """Queue pushed accounts as soon as the receiver says so (runs until
    cancelled; a lost connection is opened again after :data:`RELISTEN_S`).

    A burst of notifications is folded: while one claim runs, the ones that
    arrive only ask for one more.
    """
    wanted = asyncio.Event()

    async def claimer() -> None:
        while True:
            await wanted.wait()
            wanted.clear()
            try:
                queued = await enqueue_due(app, scheduler)
            except Exception:
                _log.exception(
                    "queueing pushed accounts failed; the schedule catches up"
                )
            else:
                if queued:
                    _log.info("queued %d pushed syncs", queued)

    task = asyncio.create_task(claimer(), name="crmflow-push-claimer")
    try:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    conninfo(url), autocommit=True
                ) as conn:
                    # what was pushed while no one listened is the periodic
                    # enqueue's, a few seconds later
                    await conn.execute(f"LISTEN {DUE_CHANNEL}")
                    async for _notice in conn.notifies():
                        wanted.set()
            except Exception as exc:  # never a dead listener: the next try
                _log.warning(
                    "listening for push notifications failed (%s); retrying in %.0f s",
                    type(exc).__name__,
                    RELISTEN_S,
                )
            await asyncio.sleep(RELISTEN_S)
    finally:
        await cancel_and_wait(task)


async def run_worker(
    services: Services,
    integrations: Integrations,
    *,
    concurrency: int,
    name: str | None = None,
    imap_idle: bool = False,
) -> None:
    """Process queue jobs until SIGINT / SIGTERM (graceful: running jobs end).

    ``imap_idle``: also hold IMAP IDLE connections (:mod:`crmflow.jobs.idle`),
    up to ``CRMFLOW_IMAP_IDLE_MAX``; the workers given it share the
    mailboxes (:class:`AdvisoryClaims`), one connection per mailbox.
    """
    settings = services.settings
    scheduler = sync_scheduler(services, integrations)
    app = queue_app(settings.effective_admin_database_url)
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "additional_context": {_SCHEDULER: scheduler},
        "install_signal_handlers": True,
        # finished jobs are kept for the failed ones only: the sync log and
        # the accounts keep the history users see
        "delete_jobs": "successful",
    }
    if name:
        options["name"] = name
    async with app.open_async():
        listener = asyncio.create_task(
            listen_for_pushes(settings.effective_admin_database_url, app, scheduler),
            name="crmflow-push-listener",
        )
        idle = IdleListeners(
            services.system_db,
            MailService(integrations),
            limit=settings.imap_idle_max if imap_idle else 0,
            claims=AdvisoryClaims(settings.effective_admin_database_url),
        )
        idle.start()
        try:
            await app.run_worker_async(**options)
        finally:
            await idle.stop()
            await cancel_and_wait(listener)
