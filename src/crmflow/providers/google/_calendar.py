"""Google Calendar v3 as a ``CalendarProvider`` side (google-apis.md §2-§5).

One calendar of one account over plain httpx. Facts relied on:

* ``events.list`` pages with ``maxResults`` up to 2500; ``nextSyncToken`` comes on
  the last page only and is the cursor (§2.3, §2.4). Full listings leave
  ``showDeleted`` at its default (no tombstones); incremental ones always carry
  tombstones (``status: cancelled``) and are sent with the same parameters, since
  ``showDeleted=false`` with ``syncToken`` is refused. 410 -> ``CursorExpired``.
  Listings ask for a partial response (``fields``: :data:`LIST_FIELDS`), the
  parts of an event crmflow reads; a listed event's body serves one
  ``get_many`` and is then dropped, so an initial sync does not hold a whole
  calendar's JSON next to the events made of it.
* A recurring series is one item: the master plus its exception instances
  (``recurringEventId``), which full listings with ``singleEvents=false`` include,
  cancelled ones too. Its version is the master's etag, followed by a digest
  of the exceptions' etags when there are any (``<etag>|<digest>``); the etag
  part is what ``If-Match`` gets.
* Client-chosen event ids (base32hex, 5-1024) make inserts idempotent: 409
  ``duplicate`` -> read that id and adopt it (sync-peers.md §8 case 21).
* Updates are ``events.patch`` (:func:`event_patch_to_google`): the fields
  crmflow maps are replaced, the rest (reminders, colour, conference data,
  other extended properties) stays as the user set it.
* ``If-Match: <etag>`` on PATCH/PUT/DELETE; 412 ``conditionNotMet`` ->
  ``PreconditionFailed``; 404 / 410 ``deleted`` -> ``ItemNotFound`` (§3).
* Every write sends ``sendUpdates`` (``none`` for ``Notify.NONE``: case 26).
* Errors (§5.1): 401 -> ``AuthError``; 403 ``rateLimitExceeded`` /
  ``userRateLimitExceeded`` / ``quotaExceeded`` and 429 -> ``RateLimited`` with
  ``Retry-After``; 403 ``insufficientPermissions`` -> ``MissingScope``; 5xx and
  network errors -> ``TransientProviderError``.
"""

from __future__ import annotations

import hashlib
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
    EventStatus,
    Listing,
    Notify,
    RemoteEvent,
    Written,
)
from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.providers._http import (
    new_client,
    raise_for_conditional_write,
    send_with_bearer,
)
from crmflow.providers.base import (
    CursorExpired,
    ItemAlreadyExists,
    ItemNotFound,
    ProviderError,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.google._calendar_mapping import (
    event_from_google,
    event_patch_to_google,
    event_to_google,
    exception_to_google,
    exdate_keys,
    instance_suffix,
    occurrence_to_google,
    parse_updated,
    rule_gives,
)
from crmflow.providers.google._http import google_error

#: the scope calendar writes need
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.events"
#: Google's maximum page size for events.list
PAGE_SIZE = 2500
_KEY = re.compile(r"^[0-9a-f]{1,64}$")
_RATE_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}
)

#: event types that are appointments; working location, focus time, out of
#: office and birthday entries are Google's own and stay out of the sync
_SYNCED_TYPES = frozenset({"default", "fromGmail"})

AccessToken = Callable[[], Awaitable[Secret]]
#: raw Google JSON objects (the class below shadows ``list`` with its method)
_Items = list[dict[str, Any]]
#: a listed or read item: (version, master body, exception instance bodies)
_Entry = tuple[str, dict[str, Any], _Items]


def event_id_for(idempotency_key: str) -> str:
    """The client-chosen event id for an idempotency key (base32hex, 5-1024).

    Raises:
        ValidationFailed: the key is not 1-64 lowercase hex characters.
    """
    if not _KEY.match(idempotency_key):
        raise ValidationFailed("An idempotency key is 1-64 characters of [0-9a-f].")
    return "crm" + idempotency_key  # c, r, m and hex digits are all base32hex


def _error(response: httpx.Response, what: str) -> ProviderError:
    """A non-2xx Calendar response as a provider error (the generic cases)."""
    return google_error(
        response,
        what,
        product="Google Calendar",
        scopes=[CALENDAR_SCOPE],
        rate_reasons=_RATE_REASONS,
    )


def _master_etag(version: str) -> str:
    return version.split("|", 1)[0]


#: the parts of an ``events.list`` page the adapter reads (a partial
#: response): an event's resource carries as much again that crmflow never
#: reads (links, creator, organizer, reminders, ...), which would be
#: transferred, parsed and held for every event of a listing
LIST_FIELDS = (
    "items(id,etag,status,iCalUID,summary,description,location,start,end,"
    "attendees,recurrence,recurringEventId,originalStartTime,updated,eventType,"
    "extendedProperties),nextPageToken,nextSyncToken,timeZone"
)


def _version(master: Mapping[str, Any], exceptions: Sequence[Mapping[str, Any]]) -> str:
    etag = str(master.get("etag", ""))
    if not exceptions:
        return etag
    digest = hashlib.sha256(
        "\n".join(sorted(f"{e.get('id')} {e.get('etag')}" for e in exceptions)).encode()
    ).hexdigest()[:32]
    return f"{etag}|{digest}"


class GoogleCalendar(CalendarProvider):
    """One Google calendar (``calendar_id``, e.g. ``primary``) as a sync side.

    ``base_url`` is the Calendar API root (production
    ``https://www.googleapis.com/calendar/v3/``; sandbox ``B + "calendar/v3/"``).
    ``access_token`` is awaited before every request, so the caller may refresh
    tokens behind it. ``transport`` replaces httpx's network (tests).
    ``read_only`` marks a calendar the account may only read (``accessRole``
    ``reader``, a subscription): every write raises ``UnsupportedOperation``.
    """

    def __init__(
        self,
        base_url: str,
        calendar_id: str,
        access_token: AccessToken,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = PAGE_SIZE,
        read_only: bool = False,
    ) -> None:
        self._events_url = (
            base_url.rstrip("/") + f"/calendars/{quote(calendar_id, safe='')}/events"
        )
        self._access_token = access_token
        self._transport = transport
        self._page_size = page_size
        self._read_only = read_only
        #: bodies seen in listings: remote id -> (version, master, exceptions)
        self._cache: dict[str, _Entry] = {}
        self._zone: str | None = None

    # ------------------------------------------------------------ port: reading

    @property
    def capabilities(self) -> frozenset[Capability]:
        found = {Capability.INCREMENTAL, Capability.RETURNS_VERSION_ON_WRITE}
        if self._read_only:
            found.add(Capability.READ_ONLY)
        return frozenset(found)

    async def list(self) -> Listing:
        pages, cursor = await self._pages({}, "Listing the Google calendar")
        self._cache.clear()
        items = self._group(pages, deleted=set())
        return Listing({rid: entry[0] for rid, entry in items.items()}, cursor)

    async def list_changes(self, cursor: str) -> Changes:
        pages, new_cursor = await self._pages(
            {"syncToken": cursor}, "Reading Google calendar changes"
        )
        deleted: set[str] = set()
        touched_series: set[str] = set()
        for item in pages:
            if item.get("recurringEventId"):
                touched_series.add(str(item["recurringEventId"]))
            elif item.get("status") == "cancelled":
                deleted.add(str(item["id"]))
        changed: dict[str, str] = {}
        for rid, entry in self._group(pages, deleted=deleted).items():
            if entry[1].get("recurrence"):
                # the page holds only the changed exceptions: read it whole
                touched_series.add(rid)
            else:
                changed[rid] = entry[0]
        for rid in sorted(touched_series - deleted):
            read = await self._read(rid)
            if read is None:
                deleted.add(rid)
            else:
                changed[rid] = read[0]
        for rid in deleted:
            changed.pop(rid, None)
            self._cache.pop(rid, None)
        return Changes(changed, frozenset(deleted), new_cursor)

    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        out: list[RemoteEvent] = []
        for rid in dict.fromkeys(remote_ids):
            # served once: the listing's copy is not kept with the event made
            # of it (a whole calendar's JSON, on an initial sync), and a
            # second read (after a 412) reads the event afresh
            entry = self._cache.pop(rid, None)
            if entry is None:
                entry = await self._read(rid)
            if entry is None:
                continue
            version, master, exceptions = entry
            try:
                event = event_from_google(master, exceptions, default_zone=self._zone)
            except ValidationFailed as exc:
                raise ProviderError(
                    f"The Google calendar event {rid} cannot be read: {exc}"
                ) from None
            out.append(
                RemoteEvent(rid, version, event, parse_updated(master.get("updated")))
            )
        return out

    # ------------------------------------------------------------ port: writing

    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        self._writable()
        event_id = event_id_for(idempotency_key)
        body = {**event_to_google(event), "id": event_id}
        what = "Creating a Google calendar event"
        response = await self._send(
            "POST", self._events_url, what, params=self._notify(notify), json=body
        )
        if response.status_code == 409:
            entry = await self._read(event_id)
            if entry is not None:
                return Written(event_id, entry[0], adopted=True)
            # Google keeps a deleted event (its tombstone) with its id and
            # iCalUID, and refuses a new event carrying either: bring the
            # deleted one back with this content instead
            restored = await self._restore(event, notify)
            if restored is not None:
                return restored
            raise ItemAlreadyExists(
                f"{what}: Google holds an event with this id or iCalUID."
            )
        if response.status_code not in (200, 201):
            raise _error(response, what)
        created = response.json()
        self._cache.pop(event_id, None)
        if event.exceptions:
            await self._write_exceptions(event_id, event, notify)
            entry = await self._read(event_id)
            if entry is None:
                raise ItemNotFound(f"{what}: the event vanished while writing it.")
            return Written(event_id, entry[0])
        return Written(event_id, _version(created, []))

    async def _restore(self, event: CalendarEvent, notify: Notify) -> Written | None:
        """Overwrite the deleted event that holds ``event``'s iCalUID with
        ``event`` (conditional on the tombstone's etag); None when there is no
        deleted event with that UID."""
        what = "Restoring a deleted Google calendar event"
        # one page: a UID names one event and its exceptions
        listed = await self._send(
            "GET",
            self._events_url,
            what,
            params={
                "iCalUID": event.ical_uid,
                "showDeleted": "true",
                "maxResults": self._page_size,
            },
        )
        if listed.status_code != 200:
            raise _error(listed, what)
        items = list(listed.json().get("items") or ())
        tombstones = [
            i
            for i in items
            if i.get("status") == "cancelled" and not i.get("recurringEventId")
        ]
        if len(tombstones) != 1:
            return None
        remote_id = str(tombstones[0]["id"])
        response = await self._send(
            "PUT",
            self._event_url(remote_id),
            what,
            params=self._notify(notify),
            json={
                **event_to_google(event),
                "status": event_to_google(event).get("status", "confirmed"),
            },
            headers={"If-Match": str(tombstones[0].get("etag", "*"))},
        )
        self._raise_for_write(response, what)
        self._cache.pop(remote_id, None)
        if event.exceptions:
            await self._write_exceptions(remote_id, event, notify)
        entry = await self._read(remote_id)
        if entry is None:
            raise ItemNotFound(f"{what}: the event vanished while writing it.")
        return Written(remote_id, entry[0])

    async def update(
        self, remote_id: str, event: CalendarEvent, *, if_match: str, notify: Notify
    ) -> str | None:
        self._writable()
        what = "Updating a Google calendar event"
        self._cache.pop(remote_id, None)
        response = await self._send(
            "PATCH",
            self._event_url(remote_id),
            what,
            params=self._notify(notify),
            json=event_patch_to_google(event),
            headers={"If-Match": _master_etag(if_match)},
        )
        await self._check_write(remote_id, response, what)
        updated = response.json()
        if event.exceptions or "|" in if_match:
            await self._write_exceptions(remote_id, event, notify)
            entry = await self._read(remote_id)
            if entry is not None and await self._revert_dropped(
                remote_id, event, entry, notify
            ):
                entry = await self._read(remote_id)
            return None if entry is None else entry[0]
        return _version(updated, [])

    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        self._writable()
        what = "Deleting a Google calendar event"
        self._cache.pop(remote_id, None)
        response = await self._send(
            "DELETE",
            self._event_url(remote_id),
            what,
            params=self._notify(notify),
            headers={"If-Match": _master_etag(if_match)},
        )
        await self._check_write(remote_id, response, what)

    # ------------------------------------------------------------ helpers

    def _writable(self) -> None:
        if self._read_only:
            raise UnsupportedOperation("This Google calendar is read-only for crmflow.")

    @staticmethod
    def _notify(notify: Notify) -> dict[str, str]:
        return {"sendUpdates": "none" if notify is Notify.NONE else "all"}

    def _event_url(self, remote_id: str) -> str:
        return f"{self._events_url}/{quote(remote_id, safe='')}"

    async def _check_write(
        self, remote_id: str, response: httpx.Response, what: str
    ) -> None:
        """Like :meth:`_raise_for_write`; a 412 on a deleted event (Google keeps
        its tombstone, whose etag changed) is ``ItemNotFound``."""
        if response.status_code == 412 and await self._read(remote_id) is None:
            raise ItemNotFound(f"{what}: the event no longer exists at Google.")
        self._raise_for_write(response, what)

    @staticmethod
    def _raise_for_write(response: httpx.Response, what: str) -> None:
        raise_for_conditional_write(response, what, "at Google", _error)

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
            headers=headers,
            client=client,
        )

    async def _pages(self, query: Mapping[str, str], what: str) -> tuple[_Items, str]:
        """Every item of an events.list query, following ``nextPageToken``."""
        items: _Items = []
        params: dict[str, str | int] = {
            "maxResults": self._page_size,
            "singleEvents": "false",
            "fields": LIST_FIELDS,
            **query,
        }
        async with new_client(self._transport) as client:
            while True:
                response = await self._send(
                    "GET", self._events_url, what, params=params, client=client
                )
                if response.status_code == 410:
                    raise CursorExpired(
                        f"{what}: Google forgot the sync position; a full sync is needed."
                    )
                if response.status_code != 200:
                    raise _error(response, what)
                try:
                    page = response.json()
                    items.extend(page.get("items") or ())
                except ValueError:
                    raise TransientProviderError(
                        f"{what}: Google sent an unreadable page; retrying later."
                    ) from None
                if page.get("timeZone"):
                    self._zone = str(page["timeZone"])
                if page.get("nextPageToken"):
                    params["pageToken"] = str(page["nextPageToken"])
                    continue
                token = page.get("nextSyncToken")
                if not token:
                    raise ProviderError(f"{what}: Google sent no sync token.")
                return items, str(token)

    def _group(
        self, items: Sequence[dict[str, Any]], *, deleted: set[str]
    ) -> dict[str, _Entry]:
        """Masters with their exceptions, versioned and cached (tombstones skipped)."""
        masters: dict[str, dict[str, Any]] = {}
        exceptions: dict[str, _Items] = {}
        for item in items:
            parent = item.get("recurringEventId")
            if parent:
                exceptions.setdefault(str(parent), []).append(item)
            elif item.get("status") == "cancelled":
                continue  # a tombstone (change feed) or a deleted event
            elif item.get("eventType", "default") in _SYNCED_TYPES:
                masters[str(item["id"])] = item
        out: dict[str, _Entry] = {}
        for rid, master in masters.items():
            if rid in deleted:
                continue
            mine = exceptions.get(rid, []) if master.get("recurrence") else []
            entry = (_version(master, mine), master, mine)
            out[rid] = self._cache[rid] = entry
        return out

    async def _read(self, remote_id: str) -> _Entry | None:
        """GET one event (and its exceptions if it is a series); None if gone."""
        what = "Reading a Google calendar event"
        response = await self._send("GET", self._event_url(remote_id), what)
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise _error(response, what)
        master = response.json()
        if master.get("status") == "cancelled" or master.get("recurringEventId"):
            return None  # a tombstone ("get always returns them") or an instance
        if not master.get("recurrence"):
            entry: _Entry = (_version(master, []), master, [])
        else:
            entry = await self._read_series(master)
        self._cache[remote_id] = entry
        return entry

    async def _read_series(self, master: dict[str, Any]) -> _Entry:
        """A series with its exceptions: ``events.list?iCalUID=`` gives both."""
        remote_id = str(master["id"])
        what = "Reading a recurring Google calendar event"
        params: dict[str, str | int] = {
            "iCalUID": str(master.get("iCalUID", "")),
            "maxResults": self._page_size,
            "singleEvents": "false",
        }
        items: _Items = []
        async with new_client(self._transport) as client:
            while True:
                response = await self._send(
                    "GET", self._events_url, what, params=params, client=client
                )
                if response.status_code != 200:
                    raise _error(response, what)
                page = response.json()
                items.extend(page.get("items") or ())
                if not page.get("nextPageToken"):
                    break
                params["pageToken"] = str(page["nextPageToken"])
        mine = [i for i in items if i.get("recurringEventId") == remote_id]
        return (_version(master, mine), master, mine)

    async def _revert_dropped(
        self, remote_id: str, event: CalendarEvent, entry: _Entry, notify: Notify
    ) -> bool:
        """Undo each exception Google still holds that ``event`` no longer
        has (a rule changed in the CRM drops them; Google keeps exceptions
        across a recurrence change): PATCHed back to the series where the rule
        still gives that occurrence, cancelled where it does not (a moved
        occurrence would otherwise stay as a stray). Occurrences the event
        removes with EXDATE stay as they are. Returns whether it wrote."""
        _, master, instances = entry
        current = event_from_google(master, instances, default_zone=self._zone)
        wanted = {e.key for e in event.exceptions} | exdate_keys(event)
        what = "Undoing an exception of a recurring Google calendar event"
        wrote = False
        for exception in current.exceptions:
            if exception.key in wanted:
                continue
            original = exception.original_start
            if rule_gives(event, original):
                body = occurrence_to_google(original, event)
            elif exception.status is EventStatus.CANCELLED:
                continue
            else:
                body = {"status": "cancelled"}
            response = await self._send(
                "PATCH",
                self._event_url(f"{remote_id}_{instance_suffix(original)}"),
                what,
                params=self._notify(notify),
                json=body,
            )
            if response.status_code in (404, 410):
                continue  # Google dropped it with the old rule
            self._raise_for_write(response, what)
            wrote = True
        return wrote

    async def _write_exceptions(
        self, remote_id: str, event: CalendarEvent, notify: Notify
    ) -> None:
        """PATCH each exception's instance (``<id>_<original start>``)."""
        what = "Writing an exception of a recurring Google calendar event"
        for exception in event.exceptions:
            instance = f"{remote_id}_{instance_suffix(exception.original_start)}"
            response = await self._send(
                "PATCH",
                self._event_url(instance),
                what,
                params=self._notify(notify),
                json=exception_to_google(exception, event),
            )
            self._raise_for_write(response, what)


__all__ = ["CALENDAR_SCOPE", "GoogleCalendar", "event_id_for"]
