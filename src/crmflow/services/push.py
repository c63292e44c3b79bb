"""Push notifications for synced calendars and mailboxes: Google watch
channels, Graph subscriptions and the webhook receivers.

* :meth:`PushChannels.ensure` gives a synced Google calendar a live
  ``events.watch`` channel addressed to ``<webhook base>/webhooks/google/calendar``
  and a synced Outlook calendar a Graph subscription on its events;
  :meth:`PushChannels.ensure_mailbox` gives an Outlook mailbox a Graph
  subscription on its messages (``Settings.webhook_base``; no base, no push).
  A Google channel that ends within :data:`RENEW_BEFORE` is replaced: a new
  channel with a new id and a new random token, then the old one is stopped
  (Google has no renewal; both are briefly live, and the receiver accepts
  either). A Graph subscription that ends within :data:`RENEW_BEFORE` is
  renewed in place (``PATCH``); one Graph no longer has is made again. The
  scheduled sync calls these after each run, so channels are created and
  renewed without a job of their own, and the schedule keeps polling beside
  push (both providers drop a few notifications by their own account).
* The receivers check each notification
  (:class:`~crmflow.store.push.PushInbox`): an unknown channel, a wrong token
  or resource is rejected and does nothing; Google's ``sync`` is the
  handshake; a message number (Google) or change (Graph) seen before is a
  replay; anything else marks the account due now, and the scheduler
  (in-process or a worker) syncs it within seconds. Graph's lifecycle events
  make the account due as well, and its run renews or recreates the
  subscription. The answer is immediate: no sync runs in the request.
* :meth:`PushChannels.release` stops an account's channels at the provider
  before the account is removed; :meth:`PushChannels.disconnect` stops the
  channels of every calendar and mailbox of an integration, while its tokens
  still work, then disconnects it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crmflow.connections.service import DisconnectResult, Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.mail import EmailAccountInfo
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import CrmflowError
from crmflow.metrics import WEBHOOK_DELIVERIES
from crmflow.providers import google, microsoft
from crmflow.store.calendar_accounts import CalendarAccountStore
from crmflow.store.db import Database
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
#: where Graph delivers change and lifecycle notifications, under the
#: webhook base (Graph allows one URL for both)
MICROSOFT_PATH = "/webhooks/microsoft"
#: a channel ending sooner than this is replaced (Google) or renewed (Graph)
RENEW_BEFORE = dt.timedelta(days=1)
#: how long a Google channel found live answers :meth:`PushChannels.ensure`
#: from memory before it is read again
LIVE_KNOWN_FOR = dt.timedelta(minutes=10)
#: what a Graph subscription asks to be told about
GRAPH_CHANGES = "created,updated,deleted"
#: the mailbox-wide Graph resource (every folder, Inbox and Sent Items too)
GRAPH_MESSAGES = "me/messages"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def graph_events_resource(calendar_id: str) -> str:
    """The Graph subscription resource of one calendar's events."""
    return f"me/calendars/{calendar_id}/events"


AccessToken = Callable[[], Awaitable[Secret]]


class PushChannels:
    """Push channels of the acting user's calendars and mailboxes."""

    def __init__(
        self,
        integrations: Integrations,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._integrations = integrations
        self._deps = integrations.deps
        self._clock = clock
        #: calendar account -> (its live Google channel, when that was read)
        self._google_live: dict[uuid.UUID, tuple[ChannelInfo, dt.datetime]] = {}

    def _google_root(self) -> str:
        return str(self._deps.settings.google_api_url).rstrip("/") + "/calendar/v3/"

    def _graph_root(self) -> str:
        return str(self._deps.settings.microsoft_graph_url).rstrip("/") + "/v1.0"

    def _live(self, channels: list[ChannelInfo]) -> list[ChannelInfo]:
        now = self._clock()
        return [
            c
            for c in channels
            if c.expires_at is None or c.expires_at > now + RENEW_BEFORE
        ]

    async def ensure(
        self, ctx: TenantContext, account_id: uuid.UUID
    ) -> ChannelInfo | None:
        """A live channel on the calendar, made, renewed or replaced when needed.

        Returns None when push is off (no webhook base), or the calendar is
        not a connected, enabled Google or Outlook calendar.

        A Google channel this object found or made live is taken from memory
        for :data:`LIVE_KNOWN_FOR` while it has more than
        :data:`RENEW_BEFORE` to go: the scheduler calls this after every run
        of the account, and the read is a transaction per run. (A channel
        stopped by another process meanwhile, e.g. a disconnection made
        through the web app, is noticed when that time is up; the schedule
        keeps the calendar in sync meanwhile. Graph subscriptions are read
        every time: a lifecycle notification may delete one.)

        Raises:
            NotFound: unknown account (or another user's).
            ProviderError: the provider refused (nothing is stored then).
        """
        base = self._deps.settings.webhook_base
        if base is None:
            return None
        known = self._google_live.get(account_id)
        if known is not None:
            channel, read_at = known
            if self._clock() - read_at < LIVE_KNOWN_FOR and self._live([channel]):
                return channel
            del self._google_live[account_id]
        read_at = self._clock()
        async with self._deps.db.tenant(ctx) as session:
            account = await CalendarAccountStore(session).get(account_id, counts=False)
            if not account.is_enabled or account.integration_id is None:
                return None
            channels = await PushChannelStore(session).of_account(account_id)
        # the account's provider is its integration's (set when it was added)
        if account.provider is ProviderKey.MICROSOFT:
            return await self._ensure_graph(
                ctx,
                account_id,
                channels,
                access=self._integrations.token_source(
                    ctx, IntegrationKind.CALENDAR, ProviderKey.MICROSOFT
                ),
                resource=graph_events_resource(account.external_calendar_id),
                mailbox=False,
                base=base,
            )
        if account.provider is not ProviderKey.GOOGLE:
            return None
        if live := self._live(channels):
            channel = live[0]
        else:
            channel = await self._replace_google(
                ctx, account_id, account.external_calendar_id, channels, base
            )
        self._google_live[account_id] = (channel, read_at)
        return channel

    async def ensure_mailbox(
        self, ctx: TenantContext, account: EmailAccountInfo
    ) -> ChannelInfo | None:
        """A live Graph subscription on an Outlook mailbox's messages.

        Returns None when push is off or the mailbox is not an Outlook one
        (Gmail's push goes through Cloud Pub/Sub, which crmflow does not use;
        IMAP mailboxes are polled).

        Raises:
            ProviderError: Graph refused (nothing is stored then).
        """
        base = self._deps.settings.webhook_base
        if (
            base is None
            or account.provider != ProviderKey.MICROSOFT.value
            or account.integration_id is None
        ):
            return None
        async with self._deps.db.tenant(ctx) as session:
            channels = await PushChannelStore(session).of_account(
                account.id, mailbox=True
            )
        return await self._ensure_graph(
            ctx,
            account.id,
            channels,
            access=self._integrations.token_source(
                ctx, IntegrationKind.MAIL, ProviderKey.MICROSOFT
            ),
            resource=GRAPH_MESSAGES,
            mailbox=True,
            base=base,
        )

    async def _replace_google(
        self,
        ctx: TenantContext,
        account_id: uuid.UUID,
        calendar_id: str,
        channels: list[ChannelInfo],
        base: str,
    ) -> ChannelInfo:
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
                self._google_root(),
                calendar_id,
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
        await self._stop(ctx, channels, access)
        _log.info("push channel %s watches calendar account %s", created.id, account_id)
        return created

    async def _ensure_graph(
        self,
        ctx: TenantContext,
        account_id: uuid.UUID,
        channels: list[ChannelInfo],
        *,
        access: AccessToken,
        resource: str,
        mailbox: bool,
        base: str,
    ) -> ChannelInfo:
        if live := self._live(channels):
            return live[0]
        ttl = dt.timedelta(seconds=self._deps.settings.push_channel_ttl_s)
        until = microsoft.lifetime_end(self._clock(), ttl)
        root = self._graph_root()
        transport = self._integrations.api_transport
        for channel in channels:
            renewed = await microsoft.renew_subscription(
                root, access, channel.channel_id, expires_at=until, transport=transport
            )
            async with self._deps.db.tenant(ctx) as session:
                store = PushChannelStore(session)
                if renewed is not None:
                    done = await store.renewed(channel.id, renewed.expires_at)
                    others = [c for c in channels if c.id != channel.id]
                    break
                await store.remove(channel.id)
        else:
            client_state = Secret(secrets.token_urlsafe(48))
            made = await microsoft.create_subscription(
                root,
                access,
                resource=resource,
                change_types=GRAPH_CHANGES,
                notification_url=base + MICROSOFT_PATH,
                lifecycle_url=base + MICROSOFT_PATH,
                client_state=client_state,
                expires_at=until,
                transport=transport,
            )
            try:
                async with self._deps.db.tenant(ctx) as session:
                    done = await PushChannelStore(session).add(
                        account_id,
                        ProviderKey.MICROSOFT.value,
                        channel_id=made.id,
                        resource_id="messages" if mailbox else "events",
                        token=client_state,
                        expires_at=made.expires_at,
                        mailbox=mailbox,
                    )
            except BaseException:
                # not stored: its notifications would be refused, so drop it
                await self._delete_graph(access, made.id)
                raise
            others = []
        await self._stop(ctx, others, access)
        _log.info(
            "graph subscription %s on %s account %s",
            done.id,
            "email" if mailbox else "calendar",
            account_id,
        )
        return done

    async def _delete_graph(self, access: AccessToken, subscription_id: str) -> None:
        try:
            await microsoft.delete_subscription(
                self._graph_root(),
                access,
                subscription_id,
                transport=self._integrations.api_transport,
            )
        except CrmflowError as exc:
            # it lapses at its end; its notifications are refused meanwhile
            _log.warning("could not delete graph subscription: %s", exc)

    async def _stop(
        self, ctx: TenantContext, channels: Iterable[ChannelInfo], access: AccessToken
    ) -> None:
        """Stop ``channels`` at the provider and forget them."""
        for old in channels:
            if old.calendar_account_id is not None:
                known = self._google_live.get(old.calendar_account_id)
                if known is not None and known[0].id == old.id:
                    del self._google_live[old.calendar_account_id]
            if old.provider == ProviderKey.MICROSOFT.value:
                await self._delete_graph(access, old.channel_id)
            elif old.resource_id != PENDING:
                try:
                    await google.stop_channel(
                        self._google_root(),
                        access,
                        channel_id=old.channel_id,
                        resource_id=old.resource_id,
                        transport=self._integrations.api_transport,
                    )
                except CrmflowError as exc:
                    # it ends by itself when it expires; its notifications
                    # are rejected once its row is gone
                    _log.warning("could not stop push channel %s: %s", old.id, exc)
            async with self._deps.db.tenant(ctx) as session:
                await PushChannelStore(session).remove(old.id)

    async def release(
        self, ctx: TenantContext, account_id: uuid.UUID, *, mailbox: bool = False
    ) -> int:
        """Stop every channel of an account (before it is removed); how many.

        Best effort: a provider that refuses is logged, and the channel
        lapses at its end anyway (its notifications are refused once the
        row is gone).
        """
        async with self._deps.db.tenant(ctx) as session:
            channels = await PushChannelStore(session).of_account(
                account_id, mailbox=mailbox
            )
        kind = IntegrationKind.MAIL if mailbox else IntegrationKind.CALENDAR
        for channel in channels:
            access = self._integrations.token_source(
                ctx, kind, ProviderKey(channel.provider)
            )
            await self._stop(ctx, [channel], access)
        return len(channels)

    async def disconnect(
        self,
        ctx: TenantContext,
        kind: IntegrationKind,
        provider: ProviderKey | None = None,
    ) -> DisconnectResult:
        """Disconnect an integration (:meth:`Integrations.disconnect`) after
        stopping the push channels of its calendars and mailboxes.

        The channels go first: once the grant is revoked crmflow can no
        longer ask Google or Graph to stop them, and a Graph subscription
        would keep sending notifications for up to three days. Stopping is
        best effort, as for :meth:`release`; the rows go either way.

        Raises:
            NotFound, AmbiguousIntegration: as :meth:`Integrations.disconnect`.
        """
        view = await self._integrations.get_integration(ctx, kind, provider)
        info = view.info
        async with self._deps.db.tenant(ctx) as session:
            channels = await PushChannelStore(session).of_integration(info.id)
        if channels:
            access = self._integrations.token_source(ctx, info.kind, info.provider)
            await self._stop(ctx, channels, access)
        return await self._integrations.disconnect(ctx, kind, info.provider)


#: how long a channel found genuine answers the receivers' first check from
#: memory, in seconds
KNOWN_FOR_S = 300.0
#: channels remembered, at most (the one remembered longest ago is forgotten
#: first)
KNOWN_MAX = 10_000


class KnownChannels:
    """The receivers' first check of a notification, answered from memory for
    the channels that passed it lately.

    The first check keeps forged traffic away from the write lock (it is a
    read); the receiver checks every notification again under the lock
    (:class:`~crmflow.store.push.PushInbox`) before acting on it. So a channel
    remembered here after it was stopped costs one write transaction that
    finds it gone, and is refused there, for at most :data:`KNOWN_FOR_S`
    seconds. Only a channel with the token that passed is remembered (as its
    SHA-256, as stored); any other claim is read from the database each
    time, as without this memory. One per process: the web app keeps it.
    """

    def __init__(
        self,
        *,
        known_for_s: float = KNOWN_FOR_S,
        most: int = KNOWN_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._known_for_s = known_for_s
        self._most = most
        self._clock = clock
        #: (provider, channel id) -> (token SHA-256, remembered until)
        self._known: dict[tuple[str, str], tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._known)

    async def genuine(
        self, system_db: Database, provider: ProviderKey, claims: list[tuple[str, str]]
    ) -> set[str]:
        """Which ``(channel id, token)`` claims name a channel of ours with
        that token, as :meth:`PushInbox.genuine` says (one read for the claims
        not remembered, none when all are)."""
        now = self._clock()
        passed: set[str] = set()
        unsure: list[tuple[str, str, str]] = []
        for channel, token in claims:
            digest = hashlib.sha256(token.encode()).hexdigest()
            known = self._known.get((provider.value, channel))
            if (
                known is not None
                and known[1] > now
                and hmac.compare_digest(known[0], digest)
            ):
                passed.add(channel)
            else:
                unsure.append((channel, token, digest))
        if not unsure:
            return passed
        async with system_db.admin() as session:
            found = await PushInbox(session).genuine(
                provider.value, [(channel, token) for channel, token, _ in unsure]
            )
        until = now + self._known_for_s
        for channel, _token, digest in unsure:
            if channel not in found:
                continue
            key = (provider.value, channel)
            self._known.pop(key, None)  # to the end: the oldest go first
            self._known[key] = (digest, until)
        while len(self._known) > self._most:
            del self._known[next(iter(self._known))]
        return passed | found


async def receive_google_calendar(
    system_db: Database,
    *,
    channel_id: str | None,
    token: str | None,
    resource_id: str | None,
    resource_state: str | None,
    message_number: str | None,
    known: KnownChannels | None = None,
    now: dt.datetime | None = None,
) -> Delivery:
    """Check and act on one Google Calendar notification (see the module).

    ``system_db`` must see every tenant's channels (the owner role's database
    on PostgreSQL). ``known`` answers the first check of the channel from
    memory where it can (without it, each notification reads the channel).
    """
    if (
        not channel_id
        or not message_number
        or not message_number.isdigit()
        # on PostgreSQL the write lock holds nothing up and the channel is
        # checked again under its row lock: a first read of it would be one
        # transaction per notification too many
        or not (
            system_db.is_postgres
            or await _any_genuine(
                system_db, ProviderKey.GOOGLE, [(channel_id, token or "")], known
            )
        )
    ):
        result = Delivery.UNKNOWN
    else:
        async with system_db.admin(write_lock=True) as session:
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


#: the longest validation token echoed (Graph's are about 200 characters)
MAX_VALIDATION_TOKEN = 2048
#: notifications read from one Graph POST, at most (Graph sends far fewer)
MAX_ITEMS = 1000


async def _any_genuine(
    system_db: Database,
    provider: ProviderKey,
    claims: list[tuple[str, str]],
    known: KnownChannels | None,
) -> set[str]:
    """The claimed channels worth the write lock: a read without it refuses
    forged traffic first, so that never queues behind (or holds up) the
    syncs, nor locks a genuine channel's row (a Graph POST may carry up to
    :data:`MAX_ITEMS` forged items)."""
    if known is not None:
        return await known.genuine(system_db, provider, claims)
    async with system_db.admin() as session:
        return await PushInbox(session).genuine(provider.value, claims)


@dataclass(frozen=True, slots=True)
class GraphBatch:
    """What the receiver made of one Graph POST: one result per item."""

    results: tuple[Delivery, ...]

    @property
    def acted(self) -> bool:
        """Whether an account was made due."""
        return any(r in (Delivery.ACCEPTED, Delivery.LIFECYCLE) for r in self.results)

    @property
    def genuine(self) -> bool:
        """Whether any item came from a subscription of ours."""
        return any(r is not Delivery.UNKNOWN for r in self.results)


class MalformedNotification(ValueError):
    """A POST that is not a Graph notification collection."""


def _items(body: Any) -> list[Mapping[str, Any]]:
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(value, list) or not value:
        raise MalformedNotification('expected {"value": [...]}')
    if len(value) > MAX_ITEMS:
        raise MalformedNotification(f"at most {MAX_ITEMS} notifications per POST")
    if not all(isinstance(item, dict) for item in value):
        raise MalformedNotification("every notification must be an object")
    return value


def change_digest(item: Mapping[str, Any]) -> str | None:
    """What identifies one change: the subscription, the kind of change, the
    item and its version (its ``@odata.etag``); None without a version (two
    changes of the item could not be told apart)."""
    data = item.get("resourceData")
    data = data if isinstance(data, dict) else {}
    if not data.get("@odata.etag"):
        return None
    key = "|".join(
        str(part)
        for part in (
            item.get("subscriptionId"),
            item.get("changeType"),
            data.get("id") or item.get("resource"),
            data.get("@odata.etag"),
        )
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def receive_graph(
    system_db: Database,
    body: Any,
    *,
    known: KnownChannels | None = None,
    now: dt.datetime | None = None,
) -> GraphBatch:
    """Check and act on one Graph POST of change and lifecycle notifications.

    Each item stands alone: one of an unknown subscription or with a wrong
    ``clientState`` is counted as unknown and does nothing, while the
    genuine items of the same POST are acted on. ``known`` as for
    :func:`receive_google_calendar`.

    Raises:
        MalformedNotification: the body is not a notification collection.
    """
    items = _items(body)
    at = now or _utcnow()
    claims = [
        (str(item.get("subscriptionId")), str(item.get("clientState")))
        for item in items
        if isinstance(item.get("subscriptionId"), str)
        and isinstance(item.get("clientState"), str)
    ]
    genuine = await _any_genuine(system_db, ProviderKey.MICROSOFT, claims, known)
    results: list[Delivery] = [Delivery.UNKNOWN] * len(items)
    # the write lock only for the items that passed; in subscription order,
    # so two POSTs lock the same rows in the same order on PostgreSQL
    todo = sorted(
        (
            (str(item["subscriptionId"]), n)
            for n, item in enumerate(items)
            if item.get("subscriptionId") in genuine
        ),
    )
    if todo:
        async with system_db.admin(write_lock=True) as session:
            inbox = PushInbox(session)
            for subscription, n in todo:
                item = items[n]
                state = str(item["clientState"])
                if isinstance(event := item.get("lifecycleEvent"), str):
                    results[n] = await inbox.lifecycle(
                        ProviderKey.MICROSOFT.value,
                        subscription_id=subscription,
                        client_state=state,
                        event=event,
                        now=at,
                    )
                else:
                    results[n] = await inbox.change(
                        ProviderKey.MICROSOFT.value,
                        subscription_id=subscription,
                        client_state=state,
                        digest=change_digest(item),
                        now=at,
                    )
    for result in results:
        WEBHOOK_DELIVERIES.labels("microsoft", result.value).inc()
    return GraphBatch(tuple(results))
