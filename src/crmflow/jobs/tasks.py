"""The task functions: one scheduled sync of one calendar or mailbox.

A task acts as the account's owner (their tenant context), through the same
services as the Sync buttons, so a scheduled run is logged, leased and
reported exactly like a manual one. It never raises for a sync that failed:
the outcome says how it went, and the failure is on the account (last error,
sync log) for the user to see.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.calendar_accounts import RunStatus, SyncRunInfo, SyncType
from crmflow.domain.mail import MailSyncResult
from crmflow.errors import CrmflowError, NotFound, ValidationFailed
from crmflow.services.calendar_sync import CalendarSync, SyncInProgress
from crmflow.services.mail import MailService, MailSyncInProgress
from crmflow.services.push import PushChannels
from crmflow.store.schedule import DueAccount, SyncKind

_log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """How a scheduled sync went."""

    #: it ran and worked (a partly synced calendar counts: its failures are
    #: retried by the next run and listed in the sync log)
    OK = "ok"
    #: it ran and failed; the account says why
    FAILED = "failed"
    #: another sync of the account was running (a manual one): left to it
    BUSY = "busy"
    #: the account is gone, paused or disconnected: nothing to do
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A scheduled sync's outcome, and the provider's wish after a rate limit."""

    outcome: Outcome
    #: the provider's ``Retry-After`` in seconds (a rate-limited failure):
    #: the schedule waits at least this long before the next try
    retry_after_s: float | None = None
    #: the scheduler's ``record`` landed with the run's outcome
    recorded: bool = False


#: the scheduler's bookkeeping of a run's outcome, in a given transaction
Record = Callable[[AsyncSession, TaskResult], Awaitable[None]]


def _calendar_result(run: SyncRunInfo) -> TaskResult:
    if run.status is RunStatus.FAILED:
        asked = [e.retry_after_s for e in run.errors if e.retry_after_s]
        return TaskResult(Outcome.FAILED, max(asked, default=None))
    return TaskResult(Outcome.OK)


def _mail_result(result: MailSyncResult) -> TaskResult:
    if result.error:
        return TaskResult(Outcome.FAILED, result.retry_after_s)
    return TaskResult(Outcome.OK)


class _Landing:
    """The scheduler's ``record`` of a run's outcome, written in the
    transaction that records the outcome, and what it wrote once that
    transaction committed (``landed``)."""

    def __init__(self, record: Record) -> None:
        self._record = record
        self.landed: TaskResult | None = None

    async def write(self, session: AsyncSession, result: TaskResult) -> None:
        await self._record(session, result)
        event.listen(
            session.sync_session,
            "after_commit",
            lambda _session: self._committed(result),
            once=True,
        )

    def _committed(self, result: TaskResult) -> None:
        self.landed = dataclasses.replace(result, recorded=True)

    def crashed(self, due: DueAccount) -> TaskResult | None:
        """The result of a run that raised (a bug, not a provider failure),
        or None: the caller lets the exception go on, and the runner records
        a failure.

        If a failure was committed with the run's outcome, that is the
        result: recording the crash again would count the failure twice. A
        success committed before the crash (a bug after the outcome) gives
        None, so the crash backs off like a failure.
        """
        if self.landed is None or self.landed.outcome is not Outcome.FAILED:
            return None
        _log.exception(
            "scheduled %s sync of %s crashed; its failure is recorded",
            due.kind,
            due.account_id,
        )
        return self.landed

    def result(self, result: TaskResult) -> TaskResult:
        """``result`` of a run that returned, marked recorded when it was."""
        return self.landed if self.landed is not None else result


class SyncTasks:
    """Runs scheduled syncs through the calendar and mail services."""

    def __init__(
        self,
        calendar: CalendarSync,
        mail: MailService,
        push: PushChannels | None = None,
    ) -> None:
        """``push``: give synced calendars and Outlook mailboxes live push
        channels after each successful run."""
        self._calendar = calendar
        self._mail = mail
        self._push = push

    async def sync_calendar(
        self, due: DueAccount, record: Record | None = None
    ) -> TaskResult:
        """One scheduled run of a calendar account; ``record`` as for
        :meth:`run`."""
        landing = _Landing(record) if record is not None else None

        async def with_outcome(session: AsyncSession, run: SyncRunInfo) -> None:
            if landing is not None:
                await landing.write(session, _calendar_result(run))

        try:
            run = await self._calendar.sync(
                due.ctx,
                due.account_id,
                sync_type=SyncType.WEBHOOK if due.pushed else SyncType.SCHEDULED,
                with_outcome=with_outcome if landing is not None else None,
            )
        except SyncInProgress:
            return TaskResult(Outcome.BUSY)
        except (NotFound, ValidationFailed):
            return TaskResult(Outcome.SKIPPED)
        except Exception:
            recorded = landing.crashed(due) if landing is not None else None
            if recorded is None:
                raise
            return recorded
        result = _calendar_result(run)
        if landing is not None:
            result = landing.result(result)
        if result.outcome is Outcome.FAILED:
            return result
        if self._push is not None:
            try:
                await self._push.ensure(due.ctx, due.account_id)
            except CrmflowError as exc:
                # push is an extra: the schedule keeps the calendar in sync
                _log.warning(
                    "no push channel for calendar account %s: %s", due.account_id, exc
                )
        return result

    async def sync_mailbox(
        self, due: DueAccount, record: Record | None = None
    ) -> TaskResult:
        """One scheduled sync of a mailbox; ``record`` as for :meth:`run`."""
        landing = _Landing(record) if record is not None else None

        async def with_outcome(session: AsyncSession, synced: MailSyncResult) -> None:
            if landing is not None:
                await landing.write(session, _mail_result(synced))

        try:
            synced = await self._mail.sync(
                due.ctx,
                due.account_id,
                with_outcome=with_outcome if landing is not None else None,
            )
        except MailSyncInProgress:
            return TaskResult(Outcome.BUSY)
        except (NotFound, ValidationFailed):
            return TaskResult(Outcome.SKIPPED)
        except Exception:
            recorded = landing.crashed(due) if landing is not None else None
            if recorded is None:
                raise
            return recorded
        result = _mail_result(synced)
        if landing is not None:
            result = landing.result(result)
        if result.outcome is Outcome.FAILED:
            return result
        if self._push is not None:
            try:
                account = await self._mail.account(due.ctx, due.account_id)
                await self._push.ensure_mailbox(due.ctx, account)
            except CrmflowError as exc:
                # push is an extra: the schedule keeps the mailbox in sync
                _log.warning(
                    "no push subscription for email account %s: %s",
                    due.account_id,
                    exc,
                )
        return result

    async def run(self, due: DueAccount, record: Record | None = None) -> TaskResult:
        """The scheduled sync of ``due``, whatever its kind.

        ``record``: the scheduler's bookkeeping of the outcome. A run that
        starts awaits it in the transaction that records its outcome (one
        transaction fewer per run), and the result says ``recorded`` once
        that committed; otherwise (a run that could not start, one that
        crashed before) the caller records the outcome itself.
        """
        if due.kind is SyncKind.CALENDAR:
            result = await self.sync_calendar(due, record)
        else:
            result = await self.sync_mailbox(due, record)
        _log.info(
            "scheduled %s sync of account %s: %s",
            due.kind,
            due.account_id,
            result.outcome,
        )
        return result
