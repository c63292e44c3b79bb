"""Change-notification subscriptions: validation, matching, delivery with retries, lifecycle events.

Graph's behaviour (change-notifications-delivery-webhooks.md,
subscription-post-subscriptions.md, change-notifications-lifecycle-events.md;
microsoft-graph.md §5, checklist 16-19):

* ``POST /subscriptions`` first validates ``notificationUrl`` (and
  ``lifecycleNotificationUrl``): a POST to ``<url>?validationToken=<token>``
  with ``Content-Type: text/plain; charset=utf-8``; the endpoint must answer
  ``200``, ``text/plain``, the **URL-decoded** token, within 10 s — otherwise
  the creation fails with 400 (observed messages: "Subscription validation
  request failed. Notification endpoint must respond with 200 OK to validation
  request.", "… Response must exactly match validationToken query parameter.",
  "Subscription validation request timed out."). Tokens here contain spaces and
  colons like real ones, so an encoded echo fails.
* ``expirationDateTime`` beyond now + 10,070 minutes is 400 ``ExtensionError``
  "Subscription expiration can only be 10070 minutes in the future."; at most
  1000 subscriptions per mailbox; ``clientState`` ≤ 128 characters; delegated
  tokens subscribe to the signed-in user's mailbox only.
* Notifications: ``{"value": [{subscriptionId, subscriptionExpirationDateTime,
  changeType, resource, resourceData {@odata.type, @odata.id, @odata.etag, id},
  clientState, tenantId}]}``; one POST may carry notifications of several
  subscriptions with the same URL. The receiver must answer 2xx within 3 s,
  otherwise Graph retries "for up to 4 hours" and then drops them. The event
  form (``Users/{id}/Events/{id}``, ``#Microsoft.Graph.Event``) follows the
  documented message form and an observed payload.
* Lifecycle notifications go to ``lifecycleNotificationUrl``:
  ``reauthorizationRequired`` (before expiry, or when access is revoked),
  ``subscriptionRemoved``, ``missed``.

The delivery loop (:class:`Dispatcher`) runs on the app's event loop; the
rules below run under the state lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from crmflow.sandbox.microsoft.errors import GraphError, access_denied, bad_request
from crmflow.sandbox.microsoft.timezones import format_offset, format_utc, parse_instant

if TYPE_CHECKING:
    from crmflow.sandbox.microsoft.store import MicrosoftStore
    from crmflow.sandbox.state import SandboxState

__all__ = [
    "CHANGE_TYPES",
    "Dispatcher",
    "LifecycleEvent",
    "Subscription",
    "SubscriptionData",
    "Subscriptions",
    "check_url",
    "validate_endpoint",
]

_LOG = logging.getLogger(__name__)

CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
LifecycleEvent = str
#: "1000 active subscriptions per mailbox across all apps"
MAX_PER_MAILBOX = 1000
MAX_CLIENT_STATE = 128


@dataclass
class Subscription:
    """An active subscription."""

    id: str
    email: str
    client_id: str
    #: as given by the client ("me/events")
    resource: str
    #: "events" or "messages"
    kind: str
    #: calendar id or mail folder id the resource is limited to (None = all)
    container: str | None
    change_types: list[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    created: datetime
    tls: str = "v1_2"
    reauthorization_sent: bool = False


@dataclass
class SubscriptionData:
    """Everything persisted about subscriptions."""

    subscriptions: dict[str, Subscription] = field(default_factory=dict)


@dataclass
class Outgoing:
    """A notification waiting for delivery (runtime only)."""

    url: str
    item: dict[str, Any]
    subscription_id: str
    lifecycle: bool
    attempts: int = 0
    #: time.monotonic() of the next attempt
    due: float = 0.0
    #: the store's data object when queued; a reset replaces it, and
    #: notifications of the forgotten world are dropped
    world: object = None


@dataclass
class Target:
    """What a subscription resource points at."""

    kind: str
    container: str | None
    #: the mailbox the resource names (None = the signed-in user)
    user_key: str | None


def parse_resource(resource: str) -> tuple[str | None, str]:
    """Split ``users/{x}/…`` or ``me/…`` into (user key or None for me, rest)."""
    path = resource.strip().lstrip("/")
    parts = path.split("/")
    if parts and parts[0].casefold() == "me":
        return None, "/".join(parts[1:])
    if len(parts) >= 2 and parts[0].casefold() == "users":
        return parts[1], "/".join(parts[2:])
    if parts and parts[0].casefold().startswith("users("):
        inner = parts[0][6:].rstrip(")").strip("'")
        return inner, "/".join(parts[1:])
    raise bad_request(f"Resource '{resource}' is not supported.", code="ExtensionError")


class Subscriptions:
    """Subscription rules over :class:`SubscriptionData`."""

    def __init__(self, data: SubscriptionData) -> None:
        self.data = data

    def create(
        self,
        body: dict[str, Any],
        *,
        email: str,
        client_id: str,
        resolve_user: Any,
        resolve_container: Any,
        max_minutes: int,
        allow_http: bool,
        now: datetime,
    ) -> Subscription:
        """Validate a POST body (not the endpoints) and return the unsaved subscription.

        ``resolve_user(key) -> email | None`` and ``resolve_container(kind,
        text) -> id`` map the resource's parts.

        Raises:
            GraphError: 400 (invalid body, expiry, clientState, resource), 403
                (another user's mailbox).
        """
        for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if not body.get(name):
                raise bad_request(
                    f"The property '{name}' is required.", code="InvalidRequest"
                )
        change_types = [
            c.strip() for c in str(body["changeType"]).split(",") if c.strip()
        ]
        if not change_types or any(c not in CHANGE_TYPES for c in change_types):
            raise bad_request(
                f"Unsupported changeType '{body['changeType']}'.", code="InvalidRequest"
            )
        url = str(body["notificationUrl"])
        lifecycle = body.get("lifecycleNotificationUrl")
        for target in (url, lifecycle):
            if target is not None:
                check_url(str(target), allow_http)
        state_value = body.get("clientState")
        if state_value is not None and (
            not isinstance(state_value, str) or len(state_value) > MAX_CLIENT_STATE
        ):
            raise bad_request(
                "clientState must be a string of at most 128 characters.",
                code="InvalidRequest",
            )
        expiration = self.check_expiration(
            str(body["expirationDateTime"]), max_minutes, now
        )
        resource = str(body["resource"])
        user_key, rest = parse_resource(resource)
        if user_key is not None:
            owner = resolve_user(user_key)
            if owner != email:
                # "Delegated permissions can subscribe only to the signed-in user's own mailbox."
                raise access_denied()
        target = _target(rest, resource)
        container = (
            resolve_container(target.kind, target.container)
            if target.container
            else None
        )
        mine = [s for s in self.data.subscriptions.values() if s.email == email]
        if len(mine) >= MAX_PER_MAILBOX:
            raise GraphError(
                403,
                "ExtensionError",
                "The maximum number of subscriptions for this mailbox has been reached.",
            )
        return Subscription(
            id=str(uuid.uuid4()),
            email=email,
            client_id=client_id,
            resource=resource,
            kind=target.kind,
            container=container,
            change_types=change_types,
            notification_url=url,
            lifecycle_url=str(lifecycle) if lifecycle else None,
            client_state=state_value,
            expiration=expiration,
            created=now,
            tls=str(body.get("latestSupportedTlsVersion") or "v1_2"),
        )

    @staticmethod
    def check_expiration(raw: str, max_minutes: int, now: datetime) -> datetime:
        """Parse and bound ``expirationDateTime``.

        Raises:
            GraphError: 400 ExtensionError beyond ``max_minutes`` or in the past.
        """
        expiration = parse_instant(raw, "expirationDateTime")
        if expiration > now + timedelta(minutes=max_minutes):
            raise bad_request(
                f"Subscription expiration can only be {max_minutes} minutes in the future.",
                code="ExtensionError",
            )
        if expiration <= now:
            raise bad_request(
                "Subscription expiration must be in the future.", code="ExtensionError"
            )
        return expiration

    def get(self, subscription_id: str, client_id: str) -> Subscription:
        """The app's subscription.

        Raises:
            GraphError: 404 ResourceNotFound.
        """
        found = self.data.subscriptions.get(subscription_id)
        if found is None or found.client_id != client_id:
            raise GraphError(404, "ResourceNotFound", "The object was not found.")
        return found

    def matching(
        self, email: str, kind: str, container: str | None, change: str
    ) -> list[Subscription]:
        """Subscriptions that receive a ``change`` of a ``kind`` item in ``container``."""
        return [
            s
            for s in self.data.subscriptions.values()
            if s.email == email
            and s.kind == kind
            and change in s.change_types
            and (s.container is None or s.container == container)
        ]

    @staticmethod
    def render(sub: Subscription, *, creator_id: str) -> dict[str, Any]:
        """Graph JSON of a subscription."""
        return {
            "id": sub.id,
            "resource": sub.resource,
            "applicationId": sub.client_id,
            "changeType": ",".join(sub.change_types),
            "clientState": sub.client_state,
            "notificationUrl": sub.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": sub.lifecycle_url,
            "expirationDateTime": format_utc(sub.expiration),
            "creatorId": creator_id,
            "includeResourceData": None,
            "latestSupportedTlsVersion": sub.tls,
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


def check_url(url: str, allow_http: bool) -> None:
    """400 ValidationError unless ``url`` is an absolute https (or allowed http) URL."""
    parts = urlsplit(url)
    if (
        parts.scheme == "https" or (allow_http and parts.scheme == "http")
    ) and parts.hostname:
        return
    raise bad_request(
        f"The notification URL '{url}' is not valid: it must be an absolute https URL.",
        code="ValidationError",
    )


def _target(rest: str, resource: str) -> Target:
    parts = [p for p in rest.split("/") if p]
    low = [p.casefold() for p in parts]
    if low == ["events"] or low == ["calendar", "events"]:
        return Target("events", None, None)
    if len(parts) == 3 and low[0] == "calendars" and low[2] == "events":
        return Target("events", parts[1], None)
    if low == ["messages"]:
        return Target("messages", None, None)
    if len(parts) == 3 and low[0] == "mailfolders" and low[2] == "messages":
        return Target("messages", parts[1], None)
    if len(parts) == 2 and low[0].startswith("mailfolders(") and low[1] == "messages":
        return Target("messages", parts[0][12:].rstrip(")").strip("'"), None)
    raise bad_request(f"Resource '{resource}' is not supported.", code="ExtensionError")


# -- validation handshake -------------------------------------------------------------------


def validation_token() -> str:
    """An opaque token shaped like Graph's (spaces and colons: must be URL-decoded)."""
    return (
        "Validation: Testing client application reachability for subscription "
        f"Request-Id: {uuid.uuid4()} {secrets.token_hex(4)}"
    )


async def validate_endpoint(
    client: httpx.AsyncClient, url: str, timeout_s: float
) -> None:
    """Run the validation handshake against ``url``.

    Raises:
        GraphError: 400 ValidationError / InvalidRequest (timed out).
    """
    token = validation_token()
    sep = "&" if "?" in url else "?"
    target = f"{url}{sep}validationToken={quote(token, safe='')}"
    try:
        response = await client.post(
            target,
            content=b"",
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=timeout_s,
        )
    except httpx.TimeoutException as exc:
        raise bad_request(
            "Subscription validation request timed out.", code="InvalidRequest"
        ) from exc
    except httpx.HTTPError as exc:
        raise bad_request(
            "Subscription validation request failed. Notification endpoint must respond "
            "with 200 OK to validation request.",
            code="ValidationError",
        ) from exc
    if response.status_code != 200:
        raise bad_request(
            "Subscription validation request failed. Notification endpoint must respond "
            "with 200 OK to validation request.",
            code="ValidationError",
        )
    content_type = response.headers.get("content-type", "")
    if response.text != token or not content_type.lower().startswith("text/plain"):
        raise bad_request(
            "Subscription validation request failed. Response must exactly match "
            "validationToken query parameter.",
            code="ValidationError",
        )


# -- notifications ------------------------------------------------------------------------------


def change_item(
    sub: Subscription,
    *,
    change: str,
    item_id: str,
    etag: str,
    user_id: str,
    tenant_id: str,
) -> dict[str, Any]:
    """One ``changeNotification`` for an event or message."""
    segment, odata_type = (
        ("Events", "#Microsoft.Graph.Event")
        if sub.kind == "events"
        else ("Messages", "#Microsoft.Graph.Message")
    )
    resource = f"Users/{user_id}/{segment}/{item_id}"
    item: dict[str, Any] = {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": format_offset(sub.expiration),
        "changeType": change,
        "resource": resource,
        "resourceData": {
            "@odata.type": odata_type,
            "@odata.id": resource,
            "@odata.etag": etag,
            "id": item_id,
        },
        "clientState": sub.client_state,
        "tenantId": tenant_id,
    }
    return item


def lifecycle_item(sub: Subscription, event: str, tenant_id: str) -> dict[str, Any]:
    """One lifecycle notification (no resource data)."""
    return {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": format_offset(sub.expiration),
        "tenantId": tenant_id,
        "clientState": sub.client_state,
        "lifecycleEvent": event,
    }


class Dispatcher:
    """Delivers queued notifications with retries; sweeps expiring subscriptions.

    One per app, running on the app's event loop (started by the lifespan or
    lazily on the first request).
    """

    def __init__(self, state: SandboxState, store: MicrosoftStore) -> None:
        self.state = state
        self.store = store
        self.queue: list[Outgoing] = []
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The outgoing HTTP client (validation and notifications)."""
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    def enqueue(
        self, url: str, item: dict[str, Any], subscription_id: str, *, lifecycle: bool
    ) -> None:
        """Queue one notification item (thread-safe under the state lock)."""
        with self.state.lock:
            self.queue.append(
                Outgoing(
                    url,
                    item,
                    subscription_id,
                    lifecycle,
                    due=time.monotonic(),
                    world=self.store.data,
                )
            )

    def ensure_started(self) -> None:
        """Start the loop on the running event loop, if not running."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the loop and close the client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # pragma: no cover - keep delivering after a bug
                _LOG.exception("notification dispatch failed")
            await asyncio.sleep(self.store.settings.dispatch_interval_s)

    async def tick(self) -> None:
        """Sweep subscriptions, then deliver everything due (one POST per URL)."""
        now_mono = time.monotonic()
        with self.state.lock:
            self._sweep()
            live = [o for o in self.queue if o.world is self.store.data]
            due = [o for o in live if o.due <= now_mono]
            self.queue = [o for o in live if o.due > now_mono]
        by_url: dict[str, list[Outgoing]] = {}
        for item in due:
            by_url.setdefault(item.url, []).append(item)
        if by_url:
            await asyncio.gather(
                *(self._post(url, items) for url, items in by_url.items())
            )

    def _sweep(self) -> None:
        now = self.state.clock.now()
        settings = self.store.settings
        subs = self.store.data.subscriptions.subscriptions
        for sub in list(subs.values()):
            if sub.expiration <= now:
                del subs[sub.id]
                self.state.mark_dirty()
                continue
            notice = timedelta(seconds=settings.reauthorization_notice_s)
            if (
                sub.lifecycle_url
                and not sub.reauthorization_sent
                and sub.expiration - now <= notice
            ):
                sub.reauthorization_sent = True
                self.queue.append(
                    Outgoing(
                        sub.lifecycle_url,
                        lifecycle_item(
                            sub,
                            "reauthorizationRequired",
                            self.store.tenant_of(sub.email),
                        ),
                        sub.id,
                        True,
                        due=time.monotonic(),
                        world=self.store.data,
                    )
                )
                self.state.mark_dirty()

    async def _post(self, url: str, items: list[Outgoing]) -> None:
        settings = self.store.settings
        body = json.dumps(
            {"value": [o.item for o in items]}, separators=(",", ":")
        ).encode()
        ok = False
        try:
            response = await self.client.post(
                url,
                content=body,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=settings.notification_timeout_s,
            )
            ok = 200 <= response.status_code < 300
        except httpx.HTTPError:
            ok = False
        if ok:
            return
        retry: list[Outgoing] = []
        missed: list[str] = []
        for item in items:
            item.attempts += 1
            if item.attempts >= settings.notification_max_attempts:
                if not item.lifecycle:
                    missed.append(item.subscription_id)
                continue
            item.due = time.monotonic() + settings.notification_retry_base_s * (
                2 ** (item.attempts - 1)
            )
            retry.append(item)
        with self.state.lock:
            self.queue.extend(o for o in retry if o.world is self.store.data)
            for sub_id in dict.fromkeys(missed):
                sub = self.store.data.subscriptions.subscriptions.get(sub_id)
                if sub is not None and sub.lifecycle_url:
                    self.queue.append(
                        Outgoing(
                            sub.lifecycle_url,
                            lifecycle_item(
                                sub, "missed", self.store.tenant_of(sub.email)
                            ),
                            sub.id,
                            True,
                            due=time.monotonic(),
                            world=self.store.data,
                        )
                    )
