"""One Outlook calendar over Microsoft Graph v1.0 as a ``CalendarProvider`` side.

Plain httpx. Facts relied on:

* ``GET /me/calendars/{id}/events`` (``/me/calendar/events`` for the default
  calendar) lists series masters and single events, paged with ``$top`` and
  ``@odata.nextLink``. The version is ``@odata.etag`` (``W/"<changeKey>"``).
* Every request sends ``Prefer: outlook.timezone="UTC"``: times come back in UTC;
  the zone is taken from ``originalStartTimeZone``.
* Idempotent creates: the key goes into ``transactionId`` and a single-value
  extended property; before a POST the calendar is searched for that property
  (``$filter=singleValueExtendedProperties/Any(...)``) and a hit is adopted
  (sync-peers.md §8 case 21).
* ``If-Match`` on PATCH/DELETE; 412 -> ``PreconditionFailed``; 404 ->
  ``ItemNotFound``.
* Errors: 401 -> ``AuthError``; 429 and 503 with ``Retry-After`` ->
  ``RateLimited``; other 5xx and network errors -> ``TransientProviderError``.

``notify`` has no Graph counterpart: Outlook sends meeting requests to the
attendees of an event the organizer creates or changes, whatever crmflow asks.

Not done yet: the change feed (``/me/calendarView/delta``), so the side does not
declare ``INCREMENTAL``; ``$batch`` reads; series with EXDATE/RDATE or
exceptions (``UnsupportedOperation`` on write).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from crmflow.domain.calendar import (
    CalendarEvent,
    CalendarProvider,
    Capability,
    Changes,
    Listing,
    Notify,
    RemoteEvent,
    Written,
)
from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.providers._http import (
    errors_from_response,
    new_client,
    raise_for_conditional_write,
    retry_after_s,
    send_with_bearer,
)
from crmflow.providers.base import (
    AuthError,
    ProviderError,
    RateLimited,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.microsoft._calendar_mapping import (
    KEY_PROPERTY,
    PROPERTIES,
    event_from_graph,
    event_to_graph,
    parse_modified,
)

#: Graph's maximum ``$top`` for event lists
PAGE_SIZE = 1000
_KEY = re.compile(r"^[0-9a-f]{1,64}$")
_PREFER = 'outlook.timezone="UTC"'
_EXPAND = (
    "singleValueExtendedProperties($filter="
    + " or ".join(f"id eq '{p}'" for p in PROPERTIES)
    + ")"
)

AccessToken = Callable[[], Awaitable[Secret]]
#: raw Graph JSON objects (the class below shadows ``list`` with its method)
_Items = list[dict[str, Any]]


def _error_code(response: httpx.Response) -> str | None:
    """The ``error.code`` of a Graph error body (None if there is none)."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code")) if isinstance(error, dict) else None


def _error(response: httpx.Response, what: str) -> ProviderError:
    """A non-2xx Graph response as a provider error (the generic cases)."""
    status = response.status_code
    if status == 429 or (status == 503 and response.headers.get("Retry-After")):
        return RateLimited(
            retry_after_s(response), f"{what}: Microsoft Graph asks to slow down."
        )
    if status == 401:
        return AuthError(
            f"{what}: Microsoft no longer accepts this connection; reconnect it."
        )
    if status >= 500:
        return TransientProviderError(
            f"{what}: Microsoft Graph answered {status}; retrying later."
        )
    return errors_from_response(response, what)


class GraphCalendar(CalendarProvider):
    """One Outlook calendar (``calendar_id``, None: the default one) as a sync side.

    ``base_url`` is the Graph root (production ``https://graph.microsoft.com/v1.0``;
    sandbox ``{base}/v1.0``). ``access_token`` is awaited before every request.
    ``transport`` replaces httpx's network (tests).
    """

    def __init__(
        self,
        base_url: str,
        calendar_id: str | None,
        access_token: AccessToken,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        root = base_url.rstrip("/")
        if calendar_id is None:
            self._events_url = root + "/me/calendar/events"
        else:
            self._events_url = (
                root + f"/me/calendars/{quote(calendar_id, safe='')}/events"
            )
        self._item_root = root + "/me/events/"
        self._access_token = access_token
        self._transport = transport
        self._page_size = page_size

    # ------------------------------------------------------------ port: reading

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.RETURNS_VERSION_ON_WRITE})

    async def list(self) -> Listing:
        items = await self._pages(
            {"$top": self._page_size, "$select": "id"}, "Listing the Outlook calendar"
        )
        return Listing({str(i["id"]): str(i.get("@odata.etag", "")) for i in items})

    async def list_changes(self, cursor: str) -> Changes:
        raise UnsupportedOperation(
            "The Outlook calendar adapter has no change feed yet; list it in full."
        )

    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        out: list[RemoteEvent] = []
        what = "Reading an Outlook calendar event"
        async with new_client(self._transport) as client:
            for rid in dict.fromkeys(remote_ids):
                response = await self._send(
                    "GET",
                    self._item_url(rid),
                    what,
                    params={"$expand": _EXPAND},
                    client=client,
                )
                if response.status_code == 404 or _error_code(response) == (
                    "ErrorInvalidIdMalformed"
                ):
                    continue  # gone, or not an id of this mailbox
                if response.status_code != 200:
                    raise _error(response, what)
                raw = response.json()
                if raw.get("type") not in (None, "singleInstance", "seriesMaster"):
                    continue  # an occurrence or exception, not a listed item
                try:
                    event = event_from_graph(raw)
                except ValidationFailed as exc:
                    raise ProviderError(
                        f"The Outlook calendar event {rid} cannot be read: {exc}"
                    ) from None
                out.append(
                    RemoteEvent(
                        rid,
                        str(raw.get("@odata.etag", "")),
                        event,
                        parse_modified(raw.get("lastModifiedDateTime")),
                    )
                )
        return out

    # ------------------------------------------------------------ port: writing

    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        if not _KEY.match(idempotency_key):
            raise ValidationFailed("An idempotency key is 1-64 characters of [0-9a-f].")
        body = event_to_graph(event)
        what = "Creating an Outlook calendar event"
        found = await self._pages(
            {
                "$filter": "singleValueExtendedProperties/Any(ep: ep/id eq "
                f"'{KEY_PROPERTY}' and ep/value eq '{idempotency_key}')",
                "$select": "id",
            },
            what,
        )
        if found:
            first = found[0]
            return Written(
                str(first["id"]), str(first.get("@odata.etag", "")), adopted=True
            )
        body["transactionId"] = idempotency_key
        body["singleValueExtendedProperties"].append(
            {"id": KEY_PROPERTY, "value": idempotency_key}
        )
        response = await self._send("POST", self._events_url, what, json=body)
        if response.status_code != 201:
            raise _error(response, what)
        created = response.json()
        return Written(str(created["id"]), str(created.get("@odata.etag", "")))

    async def update(
        self, remote_id: str, event: CalendarEvent, *, if_match: str, notify: Notify
    ) -> str | None:
        what = "Updating an Outlook calendar event"
        response = await self._send(
            "PATCH",
            self._item_url(remote_id),
            what,
            json=event_to_graph(event),
            headers={"If-Match": if_match},
        )
        self._raise_for_write(response, what)
        return str(response.json().get("@odata.etag", "")) or None

    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        what = "Deleting an Outlook calendar event"
        response = await self._send(
            "DELETE",
            self._item_url(remote_id),
            what,
            headers={"If-Match": if_match},
        )
        self._raise_for_write(response, what)

    # ------------------------------------------------------------ helpers

    def _item_url(self, remote_id: str) -> str:
        return self._item_root + quote(remote_id, safe="")

    @staticmethod
    def _raise_for_write(response: httpx.Response, what: str) -> None:
        raise_for_conditional_write(response, what, "in Outlook", _error)

    async def _send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        return await send_with_bearer(
            self._transport,
            self._access_token,
            method,
            url,
            what,
            params=params,
            json=json,
            headers={"Prefer": _PREFER, **(headers or {})},
            client=client,
        )

    async def _pages(self, params: Mapping[str, str | int], what: str) -> _Items:
        """Every item of an events query, following ``@odata.nextLink``."""
        items: _Items = []
        url: str = self._events_url
        query: Mapping[str, str | int] | None = params
        async with new_client(self._transport) as client:
            while True:
                response = await self._send(
                    "GET", url, what, params=query, client=client
                )
                if response.status_code != 200:
                    raise _error(response, what)
                try:
                    page = response.json()
                    items.extend(page.get("value") or ())
                except (ValueError, AttributeError):
                    raise TransientProviderError(
                        f"{what}: Graph sent an unreadable page; retrying later."
                    ) from None
                link = page.get("@odata.nextLink")
                if not link:
                    return items
                url, query = str(link), None


__all__ = ["GraphCalendar"]
