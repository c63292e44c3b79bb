"""The calendars of a Microsoft 365 / Outlook account (``GET /me/calendars``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from crmflow.domain.calendar_accounts import CalendarChoice
from crmflow.domain.secret import Secret
from crmflow.providers._http import errors_from_response, new_client, send_with_bearer


async def list_calendars(
    base_url: str,
    access_token: Callable[[], Awaitable[Secret]],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[CalendarChoice]:
    """Every calendar of the signed-in user, the default one first.

    ``base_url`` is the Graph root (``.../v1.0``).

    Raises:
        AuthError, RateLimited, TransientProviderError, ProviderError.
    """
    url: str | None = base_url.rstrip("/") + "/me/calendars"
    what = "Listing your Outlook calendars"
    out: list[CalendarChoice] = []
    params: dict[str, str | int] | None = {"$top": 100}
    async with new_client(transport) as client:
        while url:
            response = await send_with_bearer(
                transport, access_token, "GET", url, what, params=params, client=client
            )
            if response.status_code != 200:
                raise errors_from_response(response, what)
            body = response.json()
            for item in body.get("value", []):
                out.append(
                    CalendarChoice(
                        id=str(item["id"]),
                        name=str(item.get("name") or "Calendar"),
                        read_only=not item.get("canEdit", True),
                        primary=bool(item.get("isDefaultCalendar")),
                    )
                )
            # the next link carries the query already
            url, params = body.get("@odata.nextLink"), None
    return sorted(out, key=lambda c: (not c.primary, c.name.lower()))
