"""Graph change-notification subscriptions (microsoft-graph.md section 5).

A subscription asks Graph to POST ``{"value": [...]}`` to ``notification_url``
whenever items of ``resource`` change; each item echoes the subscription's
``clientState``, which is how the receiver knows it is genuine. Before
answering the creation, Graph checks the URL itself (the validation
handshake: the receiver echoes ``validationToken``), so the receiver must be
reachable while :func:`create_subscription` runs. Lifecycle notifications
(``reauthorizationRequired``, ``subscriptionRemoved``, ``missed``) go to
``lifecycle_url``. Subscriptions on Outlook items end after at most 10,070
minutes (:data:`MAX_LIFETIME`); ``PATCH`` renews one in place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from crmflow.domain.secret import Secret
from crmflow.providers._http import send_with_bearer
from crmflow.providers.base import ProviderError
from crmflow.providers.microsoft._http import error_message, graph_error

__all__ = [
    "MAX_LIFETIME",
    "GraphSubscription",
    "create_subscription",
    "delete_subscription",
    "lifetime_end",
    "renew_subscription",
]

#: Graph refuses an Outlook subscription ending later than this from now
#: (documented as 10,080 minutes; the service answers "can only be 10070")
MAX_LIFETIME = dt.timedelta(minutes=10_070)
#: asked for a little under the limit: the two clocks differ
_MARGIN = dt.timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class GraphSubscription:
    """A subscription Graph accepted."""

    id: str
    expires_at: dt.datetime


def lifetime_end(now: dt.datetime, ttl: dt.timedelta) -> dt.datetime:
    """The expiry to ask for: ``ttl`` from ``now``, within Graph's limit."""
    return now + min(ttl, MAX_LIFETIME - _MARGIN)


def _instant(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _parsed(response: httpx.Response, what: str) -> GraphSubscription:
    try:
        body: Any = response.json()
        raw = str(body["expirationDateTime"]).replace("Z", "+00:00")
        expires = dt.datetime.fromisoformat(raw)
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return GraphSubscription(str(body["id"]), expires.astimezone(dt.UTC))
    except (KeyError, TypeError, ValueError):
        raise ProviderError(
            f"{what}: Microsoft Graph answered with an unreadable subscription."
        ) from None


def _refused(response: httpx.Response, what: str) -> ProviderError:
    if response.status_code == 400:
        # a failed validation handshake lands here: say so, it is the
        # deployment's webhook URL that needs fixing
        detail = error_message(response) or "bad request"
        return ProviderError(f"{what}: Microsoft Graph refused it: {detail}")
    return graph_error(response, what)


async def create_subscription(
    root: str,
    access_token: Callable[[], Awaitable[Secret]],
    *,
    resource: str,
    change_types: str,
    notification_url: str,
    lifecycle_url: str,
    client_state: Secret,
    expires_at: dt.datetime,
    transport: httpx.AsyncBaseTransport | None = None,
) -> GraphSubscription:
    """``POST /subscriptions``.

    Args:
        root: the Graph root (``.../v1.0``).
        resource: e.g. ``me/calendars/{id}/events`` or ``me/messages``.
        change_types: e.g. ``created,updated,deleted``.
        client_state: echoed in every notification (at most 128 characters).
        expires_at: within :data:`MAX_LIFETIME` of now (:func:`lifetime_end`).

    Raises:
        ProviderError (and subclasses): Graph refused, e.g. because the
            notification URL failed the validation handshake.
    """
    what = "Microsoft Graph (subscribe)"
    response = await send_with_bearer(
        transport,
        access_token,
        "POST",
        root.rstrip("/") + "/subscriptions",
        what,
        json={
            "changeType": change_types,
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "resource": resource,
            "expirationDateTime": _instant(expires_at),
            "clientState": client_state.reveal(),
            "latestSupportedTlsVersion": "v1_2",
        },
    )
    if response.status_code not in (200, 201):
        raise _refused(response, what)
    return _parsed(response, what)


async def renew_subscription(
    root: str,
    access_token: Callable[[], Awaitable[Secret]],
    subscription_id: str,
    *,
    expires_at: dt.datetime,
    transport: httpx.AsyncBaseTransport | None = None,
) -> GraphSubscription | None:
    """``PATCH /subscriptions/{id}`` with a new expiry (which also
    reauthorizes it); None when Graph no longer has the subscription.

    Raises:
        ProviderError (and subclasses): any other refusal.
    """
    what = "Microsoft Graph (renew subscription)"
    response = await send_with_bearer(
        transport,
        access_token,
        "PATCH",
        f"{root.rstrip('/')}/subscriptions/{subscription_id}",
        what,
        json={"expirationDateTime": _instant(expires_at)},
    )
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise _refused(response, what)
    return _parsed(response, what)


async def delete_subscription(
    root: str,
    access_token: Callable[[], Awaitable[Secret]],
    subscription_id: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bool:
    """``DELETE /subscriptions/{id}``; False when Graph no longer has it.

    Raises:
        ProviderError (and subclasses): any other refusal.
    """
    what = "Microsoft Graph (delete subscription)"
    response = await send_with_bearer(
        transport,
        access_token,
        "DELETE",
        f"{root.rstrip('/')}/subscriptions/{subscription_id}",
        what,
    )
    if response.status_code == 404:
        return False
    if response.status_code not in (200, 204):
        raise graph_error(response, what)
    return True
