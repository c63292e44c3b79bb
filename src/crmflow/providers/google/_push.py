"""Google Calendar push: ``events.watch`` channels and ``channels.stop``
(google-apis.md section 4).

A channel asks Google to POST a bodyless notification to ``address`` whenever
the calendar's events change; the notification names the channel
(``X-Goog-Channel-ID``) and echoes its ``token`` (``X-Goog-Channel-Token``),
which is how the receiver knows it is genuine. Channels expire (about a week);
there is no renewal: a new channel with a new id replaces the old one, which
is then stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from crmflow.domain.secret import Secret
from crmflow.providers._http import send_with_bearer
from crmflow.providers.google._calendar import _error as _calendar_error

__all__ = ["WatchChannel", "stop_channel", "watch_events"]


@dataclass(frozen=True, slots=True)
class WatchChannel:
    """A channel Google accepted."""

    channel_id: str
    #: Google's id of the watched collection (needed to stop the channel)
    resource_id: str
    #: when Google stops sending (None: Google did not say)
    expires_at: dt.datetime | None


async def watch_events(
    root: str,
    calendar_id: str,
    access_token: Callable[[], Awaitable[Secret]],
    *,
    address: str,
    channel_id: str,
    channel_token: Secret,
    ttl_s: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> WatchChannel:
    """``events.watch`` on one calendar.

    Args:
        root: the Calendar API root (``.../calendar/v3/``).
        address: the HTTPS URL Google notifies.
        channel_id: a new id, unique within the project (at most 64 chars).
        channel_token: echoed in each notification (at most 256 chars).
        ttl_s: the lifetime asked for (Google may grant less).

    Raises:
        ProviderError (and subclasses): Google refused the channel.
    """
    what = "Google Calendar (watch)"
    url = f"{root}calendars/{quote(calendar_id, safe='')}/events/watch"
    response = await send_with_bearer(
        transport,
        access_token,
        "POST",
        url,
        what,
        json={
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": channel_token.reveal(),
            "params": {"ttl": str(ttl_s)},
        },
    )
    if response.status_code != 200:
        raise _calendar_error(response, what)
    body = response.json()
    expiration = body.get("expiration")
    expires_at = (
        dt.datetime.fromtimestamp(int(expiration) / 1000, dt.UTC)
        if expiration is not None
        else None
    )
    return WatchChannel(str(body["id"]), str(body["resourceId"]), expires_at)


async def stop_channel(
    root: str,
    access_token: Callable[[], Awaitable[Secret]],
    *,
    channel_id: str,
    resource_id: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bool:
    """``channels.stop``; False when Google no longer knows the channel.

    Raises:
        ProviderError (and subclasses): any other refusal.
    """
    what = "Google Calendar (stop channel)"
    response = await send_with_bearer(
        transport,
        access_token,
        "POST",
        f"{root}channels/stop",
        what,
        json={"id": channel_id, "resourceId": resource_id},
    )
    if response.status_code == 404:
        return False
    if response.status_code not in (200, 204):
        raise _calendar_error(response, what)
    return True
