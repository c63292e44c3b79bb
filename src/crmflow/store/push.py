"""Push channels of synced calendars.

:class:`PushChannelStore` works in the account owner's tenant context
(creating, replacing and listing a calendar's channels). :class:`PushInbox`
answers the webhook receiver, which has no tenant context: it finds a
channel by the id the provider sent, checks the token against the stored
SHA-256 in constant time, records the message number (a number not above the
last one seen is a replay) and marks the calendar due now, so the scheduler
syncs it within seconds. It runs on a session that row level security does
not narrow (the owner role on PostgreSQL) and touches nothing but channels
and the account's ``next_sync_at``.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.secret import Secret
from crmflow.errors import NotFound
from crmflow.store import models
from crmflow.store.db import tenant_of

#: the resource id of a channel whose watch has not been answered yet: its
#: notifications are checked by channel id and token alone
PENDING = ""


def token_sha256(token: Secret) -> str:
    """The stored form of a channel token."""
    return hashlib.sha256(token.reveal().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A stored channel (no secret in it)."""

    id: uuid.UUID
    calendar_account_id: uuid.UUID
    provider: str
    channel_id: str
    resource_id: str
    expires_at: dt.datetime | None


def _info(row: models.PushChannel) -> ChannelInfo:
    return ChannelInfo(
        row.id,
        row.calendar_account_id,
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

    async def of_account(self, account_id: uuid.UUID) -> list[ChannelInfo]:
        """The calendar's channels, newest first."""
        rows = await self._s.scalars(
            select(models.PushChannel)
            .where(models.PushChannel.calendar_account_id == account_id, *self._mine())
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
    ) -> ChannelInfo:
        row = models.PushChannel(
            id=uuid.uuid4(),
            organization_id=self._ctx.organization_id,
            user_id=self._ctx.user_id,
            calendar_account_id=account_id,
            provider=provider,
            channel_id=channel_id,
            resource_id=resource_id,
            token_sha256=token_sha256(token),
            expires_at=expires_at,
            last_message=0,
        )
        self._s.add(row)
        await self._s.flush()
        return _info(row)

    async def confirm(
        self,
        channel_row_id: uuid.UUID,
        resource_id: str,
        expires_at: dt.datetime | None,
    ) -> ChannelInfo:
        """Record what the provider answered to the watch of a pending channel."""
        row = await self._s.scalar(
            select(models.PushChannel).where(
                models.PushChannel.id == channel_row_id, *self._mine()
            )
        )
        if row is None:
            raise NotFound("This push channel is gone.")
        row.resource_id = resource_id
        row.expires_at = expires_at
        await self._s.flush()
        return _info(row)

    async def remove(self, channel_row_id: uuid.UUID) -> None:
        await self._s.execute(
            delete(models.PushChannel).where(
                models.PushChannel.id == channel_row_id, *self._mine()
            )
        )


class Delivery(enum.StrEnum):
    """What the receiver made of a notification."""

    #: a change: the calendar is due now
    ACCEPTED = "accepted"
    #: the channel's first message (``sync``): nothing to do
    HANDSHAKE = "handshake"
    #: a message number seen already: nothing to do
    REPLAYED = "replayed"
    #: no such channel, a wrong token or resource: rejected, nothing done
    UNKNOWN = "unknown"


class PushInbox:
    """Notifications in (an unscoped session: see the module)."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

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
        """Check one notification and act on it (see :class:`Delivery`)."""
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
            or (row.resource_id != PENDING and resource_id != row.resource_id)
        ):
            return Delivery.UNKNOWN
        if message_number <= row.last_message:
            return Delivery.REPLAYED
        row.last_message = message_number
        if handshake:
            return Delivery.HANDSHAKE
        await self._s.execute(
            update(models.CalendarAccount)
            .where(models.CalendarAccount.id == row.calendar_account_id)
            .values(next_sync_at=now)
        )
        return Delivery.ACCEPTED
