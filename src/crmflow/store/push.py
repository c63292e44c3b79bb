"""Push channels of synced calendars and mailboxes.

A channel is a Google ``events.watch`` channel (calendars) or a Graph
subscription (calendars and mailboxes). :class:`PushChannelStore` works in
the account owner's tenant context (creating, renewing, replacing and
listing an account's channels). :class:`PushInbox` answers the webhook
receiver, which has no tenant context: it finds a channel by the id the
provider sent, checks the token (Graph: ``clientState``) against the stored
SHA-256 in constant time, tells replays apart (Google: a message number not
above the last one seen; Graph: a change digest seen lately) and marks the
account due now with ``sync_pushed`` set, so the scheduler syncs it within
seconds and logs the run as a webhook run. It runs on a session that row
level security does not narrow (the owner role on PostgreSQL) and touches
nothing but channels and the accounts' schedule columns.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.secret import Secret
from crmflow.errors import NotFound
from crmflow.store import models
from crmflow.store.db import tenant_of
from crmflow.store.schedule import ScheduleStore, SyncKind

#: the resource id of a channel whose watch has not been answered yet: its
#: notifications are checked by channel id and token alone
PENDING = ""
#: change digests kept per Graph subscription for spotting replays
RECENT_KEPT = 256


def token_sha256(token: Secret) -> str:
    """The stored form of a channel token."""
    return hashlib.sha256(token.reveal().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A stored channel (no secret in it)."""

    id: uuid.UUID
    #: the calendar account, or None for a mailbox's channel
    calendar_account_id: uuid.UUID | None
    #: the email account, or None for a calendar's channel
    email_account_id: uuid.UUID | None
    provider: str
    channel_id: str
    resource_id: str
    expires_at: dt.datetime | None


def _info(row: models.PushChannel) -> ChannelInfo:
    return ChannelInfo(
        row.id,
        row.calendar_account_id,
        row.email_account_id,
        row.provider,
        row.channel_id,
        row.resource_id,
        row.expires_at,
    )


class PushChannelStore:
    """A user's channels (tenant context)."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session
        self._ctx = tenant_of(session)

    def _mine(self) -> list[ColumnElement[bool]]:
        return [
            models.PushChannel.user_id == self._ctx.user_id,
            models.PushChannel.organization_id == self._ctx.organization_id,
        ]

    async def of_account(
        self, account_id: uuid.UUID, *, mailbox: bool = False
    ) -> list[ChannelInfo]:
        """The calendar's (``mailbox``: the email account's) channels, newest first."""
        column = (
            models.PushChannel.email_account_id
            if mailbox
            else models.PushChannel.calendar_account_id
        )
        rows = await self._s.scalars(
            select(models.PushChannel)
            .where(column == account_id, *self._mine())
            .order_by(models.PushChannel.created_at.desc())
        )
        return [_info(r) for r in rows]

    async def add(
        self,
        account_id: uuid.UUID,
        provider: str,
        *,
        channel_id: str,
        resource_id: str,
        token: Secret,
        expires_at: dt.datetime | None,
        mailbox: bool = False,
    ) -> ChannelInfo:
        """Store a channel of a calendar account (``mailbox``: of an email account)."""
        row = models.PushChannel(
            id=uuid.uuid4(),
            organization_id=self._ctx.organization_id,
            user_id=self._ctx.user_id,
            calendar_account_id=None if mailbox else account_id,
            email_account_id=account_id if mailbox else None,
            provider=provider,
            channel_id=channel_id,
            resource_id=resource_id,
            token_sha256=token_sha256(token),
            expires_at=expires_at,
            last_message=0,
            recent="",
        )
        self._s.add(row)
        await self._s.flush()
        return _info(row)

    async def confirm(
        self,
        channel_row_id: uuid.UUID,
        resource_id: str | None,
        expires_at: dt.datetime | None,
    ) -> ChannelInfo:
        """Record what the provider answered to the watch of a pending channel
        (``resource_id`` None: unchanged)."""
        row = await self._s.scalar(
            select(models.PushChannel).where(
                models.PushChannel.id == channel_row_id, *self._mine()
            )
        )
        if row is None:
            raise NotFound("This push channel is gone.")
        if resource_id is not None:
            row.resource_id = resource_id
        row.expires_at = expires_at
        await self._s.flush()
        return _info(row)

    async def renewed(
        self, channel_row_id: uuid.UUID, expires_at: dt.datetime
    ) -> ChannelInfo:
        """Record a renewed channel's new end."""
        return await self.confirm(channel_row_id, None, expires_at)

    async def of_integration(self, integration_id: uuid.UUID) -> list[ChannelInfo]:
        """The channels of every calendar and mailbox synced through one
        integration, oldest first."""
        calendars = select(models.CalendarAccount.id).where(
            models.CalendarAccount.integration_id == integration_id
        )
        mailboxes = select(models.EmailAccount.id).where(
            models.EmailAccount.integration_id == integration_id
        )
        rows = await self._s.scalars(
            select(models.PushChannel)
            .where(
                or_(
                    models.PushChannel.calendar_account_id.in_(calendars),
                    models.PushChannel.email_account_id.in_(mailboxes),
                ),
                *self._mine(),
            )
            .order_by(models.PushChannel.created_at)
        )
        return [_info(r) for r in rows]

    async def remove(self, channel_row_id: uuid.UUID) -> None:
        await self._s.execute(
            delete(models.PushChannel).where(
                models.PushChannel.id == channel_row_id, *self._mine()
            )
        )


class Delivery(enum.StrEnum):
    """What the receiver made of a notification."""

    #: a change: the account is due now
    ACCEPTED = "accepted"
    #: the channel's first message (Google's ``sync``): nothing to do
    HANDSHAKE = "handshake"
    #: seen already (a message number or a change digest): nothing to do
    REPLAYED = "replayed"
    #: a Graph lifecycle notification, acted on (see :meth:`PushInbox.lifecycle`)
    LIFECYCLE = "lifecycle"
    #: no such channel, a wrong token or resource: rejected, nothing done
    UNKNOWN = "unknown"


class GraphLifecycle(enum.StrEnum):
    """Graph's lifecycle events (microsoft-graph.md section 5.5)."""

    #: the subscription needs a PATCH (it is about to end, or access changed)
    REAUTHORIZATION_REQUIRED = "reauthorizationRequired"
    #: Graph dropped the subscription: make a new one, then resync
    SUBSCRIPTION_REMOVED = "subscriptionRemoved"
    #: notifications were lost: resync
    MISSED = "missed"


class PushInbox:
    """Notifications in (an unscoped session: see the module)."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def genuine(self, provider: str, claims: list[tuple[str, str]]) -> set[str]:
        """Which of ``(channel id, token)`` claims name a channel with that
        token (a read, no lock: receivers take the write lock only for
        notifications that pass this; :meth:`receive` and the others check
        again under it)."""
        ids = sorted({channel for channel, _token in claims})
        if not ids:
            return set()
        rows = await self._s.execute(
            select(
                models.PushChannel.channel_id, models.PushChannel.token_sha256
            ).where(
                models.PushChannel.provider == provider,
                models.PushChannel.channel_id.in_(ids),
            )
        )
        stored: dict[str, str] = {row[0]: row[1] for row in rows.all()}
        return {
            channel
            for channel, token in claims
            if channel in stored
            and hmac.compare_digest(
                hashlib.sha256(token.encode()).hexdigest(), stored[channel]
            )
        }

    async def _genuine(
        self, provider: str, channel_id: str, token: str | None
    ) -> models.PushChannel | None:
        """The channel, locked, if ``token`` is its token; else None."""
        row = await self._s.scalar(
            select(models.PushChannel)
            .where(
                models.PushChannel.channel_id == channel_id,
                models.PushChannel.provider == provider,
            )
            .with_for_update()
        )
        given = hashlib.sha256((token or "").encode()).hexdigest()
        if (
            row is None
            or token is None
            or not hmac.compare_digest(given, row.token_sha256)
        ):
            return None
        return row

    async def _due_now(self, row: models.PushChannel, now: dt.datetime) -> None:
        schedule = ScheduleStore(self._s)
        if row.calendar_account_id is not None:
            await schedule.due_now(SyncKind.CALENDAR, row.calendar_account_id, now)
        elif row.email_account_id is not None:
            await schedule.due_now(SyncKind.MAIL, row.email_account_id, now)

    async def receive(
        self,
        provider: str,
        *,
        channel_id: str,
        token: str | None,
        resource_id: str | None,
        message_number: int,
        handshake: bool,
        now: dt.datetime,
    ) -> Delivery:
        """Check one Google notification and act on it (see :class:`Delivery`)."""
        row = await self._genuine(provider, channel_id, token)
        if row is None or (
            row.resource_id != PENDING and resource_id != row.resource_id
        ):
            return Delivery.UNKNOWN
        if message_number <= row.last_message:
            return Delivery.REPLAYED
        row.last_message = message_number
        if handshake:
            return Delivery.HANDSHAKE
        await self._due_now(row, now)
        return Delivery.ACCEPTED

    async def change(
        self,
        provider: str,
        *,
        subscription_id: str,
        client_state: str | None,
        digest: str | None,
        now: dt.datetime,
    ) -> Delivery:
        """Check one Graph change notification and act on it.

        ``digest`` identifies the change (the item and its version): one seen
        among the latest :data:`RECENT_KEPT` is a replay. None (a change
        without a version) is always acted on.
        """
        row = await self._genuine(provider, subscription_id, client_state)
        if row is None:
            return Delivery.UNKNOWN
        if digest is not None:
            recent = row.recent.split()
            if digest in recent:
                return Delivery.REPLAYED
            row.recent = " ".join([*recent[-(RECENT_KEPT - 1) :], digest])
        await self._due_now(row, now)
        return Delivery.ACCEPTED

    async def lifecycle(
        self,
        provider: str,
        *,
        subscription_id: str,
        client_state: str | None,
        event: str,
        now: dt.datetime,
    ) -> Delivery:
        """Check one Graph lifecycle notification and act on it.

        Every event makes the account due now, and its run deals with the
        rest: ``reauthorizationRequired`` marks the subscription as ending
        (the run renews it), ``subscriptionRemoved`` forgets it (the run
        makes a new one), ``missed`` needs nothing more (the run is the
        delta resync). An event Graph may add later is treated as ``missed``.
        """
        row = await self._genuine(provider, subscription_id, client_state)
        if row is None:
            return Delivery.UNKNOWN
        await self._due_now(row, now)
        if event == GraphLifecycle.REAUTHORIZATION_REQUIRED:
            row.expires_at = now
        elif event == GraphLifecycle.SUBSCRIPTION_REMOVED:
            await self._s.delete(row)
        return Delivery.LIFECYCLE
