"""The task functions: one scheduled sync of one calendar or mailbox.

A task acts as the account's owner (their tenant context), through the same
services as the Sync buttons, so a scheduled run is logged, leased and
reported exactly like a manual one. It never raises for a sync that failed:
the outcome says how it went, and the failure is on the account (last error,
sync log) for the user to see.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.calendar_accounts import RunStatus, SyncRunInfo, SyncType
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


def _calendar_result(run: SyncRunInfo, *, recorded: bool = False) -> TaskResult:
    if run.status is RunStatus.FAILED:
        asked = [e.retry_after_s for e in run.errors if e.retry_after_s]
        return TaskResult(Outcome.FAILED, max(asked, default=None), recorded)
    return TaskResult(Outcome.OK, recorded=recorded)


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
        # what ``record`` wrote, once the transaction it wrote in committed
        landed: list[TaskResult] = []

        async def with_outcome(session: AsyncSession, run: SyncRunInfo) -> None:
            if record is None:
                return
            written = _calendar_result(run)
            await record(session, written)
            event.listen(
                session.sync_session,
                "after_commit",
                lambda _session: landed.append(written),
                once=True,
            )

        try:
            run = await self._calendar.sync(
                due.ctx,
                due.account_id,
                sync_type=SyncType.WEBHOOK if due.pushed else SyncType.SCHEDULED,
                with_outcome=with_outcome if record is not None else None,
            )
        except SyncInProgress:
            return TaskResult(Outcome.BUSY)
        except (NotFound, ValidationFailed):
            return TaskResult(Outcome.SKIPPED)
        except Exception:
            if not landed:
                raise  # the runner records it as a failure
            # a crash (a bug) after the run's outcome, a failure, and its
            # next due time were committed: recording it again would count
            # the failure twice
            _log.exception(
                "scheduled calendar sync of %s crashed; its failure is recorded",
                due.account_id,
            )
            return replace(landed[0], recorded=True)
        result = _calendar_result(run, recorded=bool(landed))
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

    async def sync_mailbox(self, due: DueAccount) -> TaskResult:
        """One scheduled sync of a mailbox."""
        try:
            result = await self._mail.sync(due.ctx, due.account_id)
        except MailSyncInProgress:
            return TaskResult(Outcome.BUSY)
        except (NotFound, ValidationFailed):
            return TaskResult(Outcome.SKIPPED)
        if result.error:
            return TaskResult(Outcome.FAILED, result.retry_after_s)
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
        return TaskResult(Outcome.OK)

    async def run(self, due: DueAccount, record: Record | None = None) -> TaskResult:
        """The scheduled sync of ``due``, whatever its kind.

        ``record``: the scheduler's bookkeeping of the outcome. A calendar run
        that starts awaits it in the transaction that records its outcome
        (one transaction fewer per run), and the result says ``recorded``;
        otherwise (a mailbox, a run that could not start) the caller records
        the outcome itself.
        """
        if due.kind is SyncKind.CALENDAR:
            result = await self.sync_calendar(due, record)
        else:
            result = await self.sync_mailbox(due)
        _log.info(
            "scheduled %s sync of account %s: %s",
            due.kind,
            due.account_id,
            result.outcome,
        )
        return result
