"""The calendars of a Google account (``calendarList.list``), to choose from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from crmflow.domain.calendar_accounts import CalendarChoice
from crmflow.domain.secret import Secret
from crmflow.providers._http import errors_from_response, new_client, send_with_bearer

#: roles that may change events (``calendarList`` ``accessRole``)
_WRITERS = frozenset({"owner", "writer"})


async def list_calendars(
    base_url: str,
    access_token: Callable[[], Awaitable[Secret]],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[CalendarChoice]:
    """Every calendar on the user's calendar list, the primary one first.

    ``base_url`` is the Calendar API root (``.../calendar/v3/``).

    Raises:
        AuthError, RateLimited, TransientProviderError, ProviderError.
    """
    url = base_url.rstrip("/") + "/users/me/calendarList"
    what = "Listing your Google calendars"
    out: list[CalendarChoice] = []
    page: str | None = None
    async with new_client(transport) as client:
        while True:
            params: dict[str, str | int] = {"maxResults": 250}
            if page:
                params["pageToken"] = page
            response = await send_with_bearer(
                transport, access_token, "GET", url, what, params=params, client=client
            )
            if response.status_code != 200:
                raise errors_from_response(response, what)
            body = response.json()
            for item in body.get("items", []):
                out.append(
                    CalendarChoice(
                        id=str(item["id"]),
                        name=str(
                            item.get("summaryOverride")
                            or item.get("summary")
                            or item["id"]
                        ),
                        read_only=item.get("accessRole") not in _WRITERS,
                        primary=bool(item.get("primary")),
                    )
                )
            page = body.get("nextPageToken")
            if not page:
                break
    return sorted(out, key=lambda c: (not c.primary, c.name.lower()))
