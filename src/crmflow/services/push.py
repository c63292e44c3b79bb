"""Push notifications for synced Google calendars: watch channels and the
webhook receiver.

* :meth:`CalendarPush.ensure` gives a synced Google calendar a live
  ``events.watch`` channel addressed to ``<webhook base>/webhooks/google/calendar``
  (``Settings.webhook_base``; no base, no push). A channel that ends within
  :data:`RENEW_BEFORE` is replaced: a new channel with a new id and a new
  random token, then the old one is stopped (Google has no renewal; both are
  briefly live, and the receiver accepts either). The scheduled sync calls it
  after each run, so channels are created and renewed without a job of their
  own, and the schedule keeps polling beside push (Google drops a few
  notifications by its own account).
* :meth:`CalendarPush.receive` checks one notification
  (:class:`~crmflow.store.push.PushInbox`): an unknown channel, a wrong token
  or resource is rejected with 404 and does nothing; ``sync`` is the
  handshake; a message number seen before is a replay; anything else marks
  the calendar due now, and the scheduler (in-process or a worker) syncs it
  within seconds. The answer is immediate: no sync runs in the request.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid
from collections.abc import Callable

from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.metrics import WEBHOOK_DELIVERIES
from crmflow.providers import google
from crmflow.providers.base import ProviderError
from crmflow.store.calendar_accounts import CalendarAccountStore
from crmflow.store.db import Database
from crmflow.store.integrations import IntegrationStore
from crmflow.store.push import (
    PENDING,
    ChannelInfo,
    Delivery,
    PushChannelStore,
    PushInbox,
)

_log = logging.getLogger(__name__)

#: where Google delivers calendar notifications, under the webhook base
GOOGLE_CALENDAR_PATH = "/webhooks/google/calendar"
#: a channel ending sooner than this is replaced
RENEW_BEFORE = dt.timedelta(days=1)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CalendarPush:
    """Watch channels of the acting user's Google calendars."""

    def __init__(
        self,
        integrations: Integrations,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._integrations = integrations
        self._deps = integrations.deps
        self._clock = clock

    def _root(self) -> str:
        return str(self._deps.settings.google_api_url).rstrip("/") + "/calendar/v3/"

    async def ensure(
        self, ctx: TenantContext, account_id: uuid.UUID
    ) -> ChannelInfo | None:
        """A live channel on the calendar, made or replaced when needed.

        Returns None when push is off (no webhook base), or the calendar is
        not a connected, enabled Google calendar.

        Raises:
            NotFound: unknown account (or another user's).
            ProviderError: Google refused the watch (nothing is stored then).
        """
        base = self._deps.settings.webhook_base
        if base is None:
            return None
        async with self._deps.db.tenant(ctx) as session:
            account = await CalendarAccountStore(session).get(account_id)
            if not account.is_enabled or account.integration_id is None:
                return None
            info = await IntegrationStore(session, self._deps.vault).get(
                account.integration_id
            )
            channels = await PushChannelStore(session).of_account(account_id)
        if info.provider is not ProviderKey.GOOGLE:
            return None
        now = self._clock()
        live = [
            c
            for c in channels
            if c.expires_at is None or c.expires_at > now + RENEW_BEFORE
        ]
        if live:
            return live[0]
        token = Secret(secrets.token_urlsafe(32))
        access = self._integrations.token_source(
            ctx, IntegrationKind.CALENDAR, ProviderKey.GOOGLE
        )
        # stored before the watch: Google may send the channel's first
        # message before it answers the watch request
        async with self._deps.db.tenant(ctx) as session:
            pending = await PushChannelStore(session).add(
                account_id,
                ProviderKey.GOOGLE.value,
                channel_id=uuid.uuid4().hex,
                resource_id=PENDING,
                token=token,
                expires_at=None,
            )
        try:
            watched = await google.watch_events(
                self._root(),
                account.external_calendar_id,
                access,
                address=base + GOOGLE_CALENDAR_PATH,
                channel_id=pending.channel_id,
                channel_token=token,
                ttl_s=self._deps.settings.push_channel_ttl_s,
                transport=self._integrations.api_transport,
            )
        except BaseException:
            async with self._deps.db.tenant(ctx) as session:
                await PushChannelStore(session).remove(pending.id)
            raise
        async with self._deps.db.tenant(ctx) as session:
            created = await PushChannelStore(session).confirm(
                pending.id, watched.resource_id, watched.expires_at
            )
        for old in channels:
            try:
                await google.stop_channel(
                    self._root(),
                    access,
                    channel_id=old.channel_id,
                    resource_id=old.resource_id,
                    transport=self._integrations.api_transport,
                )
            except ProviderError as exc:
                # it ends by itself when it expires; its notifications are
                # rejected once its row is gone
                _log.warning("could not stop push channel %s: %s", old.id, exc)
            async with self._deps.db.tenant(ctx) as session:
                await PushChannelStore(session).remove(old.id)
        _log.info("push channel %s watches calendar account %s", created.id, account_id)
        return created


async def receive_google_calendar(
    system_db: Database,
    *,
    channel_id: str | None,
    token: str | None,
    resource_id: str | None,
    resource_state: str | None,
    message_number: str | None,
    now: dt.datetime | None = None,
) -> Delivery:
    """Check and act on one Google Calendar notification (see the module).

    ``system_db`` must see every tenant's channels (the owner role's database
    on PostgreSQL).
    """
    if not channel_id or not message_number or not message_number.isdigit():
        result = Delivery.UNKNOWN
    else:
        async with system_db.admin() as session:
            result = await PushInbox(session).receive(
                ProviderKey.GOOGLE.value,
                channel_id=channel_id,
                token=token,
                resource_id=resource_id,
                message_number=int(message_number),
                handshake=resource_state == "sync",
                now=now or _utcnow(),
            )
    WEBHOOK_DELIVERIES.labels("google", result.value).inc()
    return result
