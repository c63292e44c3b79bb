"""One Outlook calendar over Microsoft Graph v1.0 as a ``CalendarProvider`` side.

Plain httpx. Facts relied on (microsoft-graph.md §2-§4):

* ``GET /me/calendars/{id}/events`` (``/me/calendar/events`` for the default
  calendar) lists series masters and single events, paged with ``$top`` and
  ``@odata.nextLink``. A single event's version is its ``@odata.etag``
  (``W/"<changeKey>"``); a series' version is the master's etag, ``|``, and a
  digest of its exception instances' ids and etags inside the window (an
  exception edited in Outlook need not change the master's change key). The
  etag part is what ``If-Match`` gets.
* Every request sends ``Prefer: outlook.timezone="UTC"``: times come back in UTC;
  the zone is taken from ``originalStartTimeZone``.
* **Change feed**: calendarView delta
  (``/me/calendar/calendarView/delta``, ``/me/calendars/{id}/calendarView/delta``)
  over a window (default: 90 days back to 730 days ahead, in whole UTC days),
  following ``@odata.nextLink`` to the ``@odata.deltaLink``. The cursor is that
  deltaLink, the window's start and the series seen in the window (JSON).
  Consequences of the window: a change to an event entirely outside it reaches
  the feed only in the form Graph reports it (``@removed``, below), and a series'
  exceptions and cancellations outside it are neither read nor compared. A
  cursor whose window start lies more than ``window_refresh`` (default 7 days)
  behind today's raises ``CursorExpired``, so a full listing renews the window.
* calendarView delta returns occurrences and exceptions, not masters: they are
  mapped to their ``seriesMasterId``, and each touched series is read again
  (master + ``/instances``) for its version, the one ``get_many`` returns.
  ``@removed`` entries name deleted items, occurrences that left the window,
  and (documented) events *outside* the window that changed. So they are
  checked against a listing of ``/events`` (ids only): an id still listed is
  a change, not a deletion; a series of the cursor no longer listed is
  deleted (Graph may report only its occurrences' ids). Graph gives no signal
  for a cancelled occurrence alone; its master's new change key shows up only
  when Graph re-reports the series. 410, or ``SyncStateNotFound`` /
  ``resyncRequired`` (any letter case) -> ``CursorExpired``.
* ``list`` runs the initial delta round first and lists ``/events`` after it.
  The round's state is taken at its first request, so a change made between
  the two is in the listing *and* in the next ``list_changes`` (reported twice,
  harmless: the engine compares versions); taking the cursor after the listing
  would lose such changes. The round also yields the exception etags for the
  series' versions.
* **Series**: exceptions are the ``exception`` instances of
  ``/events/{id}/instances`` inside the window (keyed by ``originalStart``);
  cancelled occurrences are the master's ``cancelledOccurrences`` (read with
  ``$select``), see ``_calendar_mapping``. Writes: the master first (POST or a
  conditional PATCH), then each exception's instance is PATCHed and each
  cancelled occurrence (EXDATE or cancelled exception) DELETEd, both with
  ``If-Match`` on the instance's etag read just before. A PATCH that leaves the
  series' timing alone omits ``start``/``end``/``recurrence``, which would make
  Outlook drop every exception; a changed timing, or an occurrence to restore
  (Graph cannot un-cancel one), sends them and the exceptions are written anew.
  Updates and deletes of a series read it first and compare its whole version
  with ``if_match`` (the exception part cannot be checked by the server).
  RDATE has no Graph counterpart: ``UnsupportedOperation`` before any write.
* Idempotent creates: the key goes into ``transactionId`` and a single-value
  extended property; before a POST the calendar is searched for that property
  (``$filter=singleValueExtendedProperties/Any(...)``) and a hit is adopted
  (sync-peers.md §8 case 21); the exceptions of an adopted series are completed.
* ``If-Match`` on PATCH/DELETE; 412 -> ``PreconditionFailed``; 404 ->
  ``ItemNotFound``.
* Errors: 401 -> ``AuthError``; 429 and 503 with ``Retry-After`` ->
  ``RateLimited``; other 5xx and network errors -> ``TransientProviderError``.

``notify`` has no Graph counterpart: Outlook sends meeting requests to the
attendees of an event the organizer creates or changes, whatever crmflow asks.

``get_many`` reads up to 20 ids (``get_many_limit``) in one JSON ``$batch``,
and the instances of the series among them in a second one; a throttled or
failed item fails the call like a single request would (``RateLimited`` with
the item's ``Retry-After``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from crmflow.domain.calendar import (
    CalendarEvent,
    CalendarProvider,
    Capability,
    Changes,
    EventStatus,
    Listing,
    Notify,
    RecurrenceException,
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
    ItemNotFound,
    PreconditionFailed,
    ProviderError,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.microsoft._calendar_mapping import (
    KEY_PROPERTY,
    PROPERTIES,
    TIMING_FIELDS,
    Original,
    Window,
    cancelled_originals,
    event_from_graph,
    event_to_graph,
    exception_to_graph,
    exceptions_digest,
    instance_original,
    occurrence_key,
    original_instant,
    parse_modified,
    timing_key,
)
from crmflow.providers.microsoft._http import error_code as _error_code
from crmflow.providers.microsoft._http import graph_error as _error
from crmflow.providers.microsoft._http import json_object, same_origin
from crmflow.providers.microsoft._http import sync_state_lost as _sync_state_lost

#: Graph's maximum ``$top`` for event lists
PAGE_SIZE = 1000
#: requests in one JSON ``$batch`` (Graph's maximum)
BATCH_LIMIT = 20
#: the default window of the change feed and of series expansion
WINDOW_PAST = dt.timedelta(days=90)
WINDOW_FUTURE = dt.timedelta(days=730)
#: how far the window may fall behind before a cursor is refused
WINDOW_REFRESH = dt.timedelta(days=7)
_KEY = re.compile(r"^[0-9a-f]{1,64}$")
_PREFER = 'outlook.timezone="UTC"'
_EXPAND = (
    "singleValueExtendedProperties($filter="
    + " or ".join(f"id eq '{p}'" for p in PROPERTIES)
    + ")"
)
#: what reading an event needs; ``cancelledOccurrences`` only comes on $select
_SELECT = ",".join(
    (
        "id",
        "type",
        "subject",
        "body",
        "location",
        "start",
        "end",
        "isAllDay",
        "originalStartTimeZone",
        "showAs",
        "isCancelled",
        "attendees",
        "recurrence",
        "iCalUId",
        "lastModifiedDateTime",
        "seriesMasterId",
        "cancelledOccurrences",
    )
)
_CURSOR_VERSION = 1

AccessToken = Callable[[], Awaitable[Secret]]
Clock = Callable[[], dt.datetime]
#: raw Graph JSON objects (the class below shadows ``list`` with its method)
_Items = list[dict[str, Any]]
#: the answers of a ``$batch``, each as a response of its own
_Answers = list[httpx.Response]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _etag(raw: Mapping[str, Any]) -> str:
    return str(raw.get("@odata.etag", ""))


def _series_version(master: Mapping[str, Any], instances: Iterable[Any]) -> str:
    return f"{_etag(master)}|{exceptions_digest(instances)}"


def _master_etag(version: str) -> str:
    return version.split("|", 1)[0]


def _query_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One event as read: its version, the master and, for a series, its
    instances inside ``window``."""

    version: str
    master: dict[str, Any]
    instances: _Items | None = None
    window: Window | None = None

    @property
    def is_series(self) -> bool:
        return self.master.get("type") == "seriesMaster"

    def event(self) -> CalendarEvent:
        """The event it holds.

        Raises:
            ValidationFailed: Graph's event cannot be represented.
        """
        return event_from_graph(self.master, self.instances, self.window)


@dataclass(frozen=True, slots=True)
class _Cursor:
    """Where the change feed continues: the deltaLink, the start of its window,
    and the series masters that had occurrences in the window."""

    link: str
    start: dt.datetime
    series: tuple[str, ...]

    def dump(self) -> str:
        return json.dumps(
            {
                "v": _CURSOR_VERSION,
                "link": self.link,
                "start": self.start.isoformat(),
                "series": list(self.series),
            },
            separators=(",", ":"),
        )

    @classmethod
    def load(cls, text: str) -> _Cursor | None:
        """The cursor ``text`` holds (None: not a cursor of this adapter)."""
        try:
            data = json.loads(text)
            if data["v"] != _CURSOR_VERSION:
                return None
            start = dt.datetime.fromisoformat(data["start"])
            series = tuple(str(s) for s in data["series"])
            link = str(data["link"])
        except (ValueError, TypeError, KeyError):
            return None
        if start.tzinfo is None:
            return None
        return cls(link, start, series)


class GraphCalendar(CalendarProvider):
    """One Outlook calendar (``calendar_id``, None: the default one) as a sync side.

    ``base_url`` is the Graph root (production ``https://graph.microsoft.com/v1.0``;
    sandbox ``{base}/v1.0``). ``access_token`` is awaited before every request.
    ``transport`` replaces httpx's network (tests). ``read_only`` marks a
    calendar the account may only read: every write raises
    ``UnsupportedOperation``. ``window_past``/``window_future`` bound the
    change feed and the expansion of series around today (``clock``, UTC
    days); ``window_refresh`` is how far the window of a stored cursor may lag.
    """

    def __init__(
        self,
        base_url: str,
        calendar_id: str | None,
        access_token: AccessToken,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = PAGE_SIZE,
        read_only: bool = False,
        window_past: dt.timedelta = WINDOW_PAST,
        window_future: dt.timedelta = WINDOW_FUTURE,
        window_refresh: dt.timedelta = WINDOW_REFRESH,
        clock: Clock = _now,
    ) -> None:
        root = base_url.rstrip("/")
        if calendar_id is None:
            calendar = root + "/me/calendar"
        else:
            calendar = root + f"/me/calendars/{quote(calendar_id, safe='')}"
        self._root = root
        self._events_url = calendar + "/events"
        self._delta_url = calendar + "/calendarView/delta"
        self._item_root = root + "/me/events/"
        self._access_token = access_token
        self._transport = transport
        self._page_size = page_size
        self._read_only = read_only
        self._past = window_past
        self._future = window_future
        self._refresh = window_refresh
        self._clock = clock

    # ------------------------------------------------------------ port: reading

    @property
    def capabilities(self) -> frozenset[Capability]:
        found = {Capability.INCREMENTAL, Capability.RETURNS_VERSION_ON_WRITE}
        if self._read_only:
            found.add(Capability.READ_ONLY)
        return frozenset(found)

    async def list(self) -> Listing:
        what = "Listing the Outlook calendar"
        window = self._window()
        # the delta round before the listing: a change in between shows in both,
        # none is lost (module docstring)
        items, link = await self._delta(
            self._delta_url,
            {
                "startDateTime": _query_time(window.start),
                "endDateTime": _query_time(window.end),
            },
            what,
            initial=True,
        )
        # occurrences and exceptions by series: the exceptions' etags go into
        # the series' versions, and a series seen here goes into the cursor
        instances: dict[str, _Items] = {}
        for item in items:
            master = item.get("seriesMasterId")
            if master and "@removed" not in item:
                instances.setdefault(str(master), []).append(item)
        versions: dict[str, str] = {}
        series: list[str] = []
        for raw in await self._listed(what):
            rid = str(raw["id"])
            if raw.get("type") == "seriesMaster":
                versions[rid] = _series_version(raw, instances.get(rid, ()))
                if rid in instances:
                    series.append(rid)
            else:
                versions[rid] = _etag(raw)
        cursor = _Cursor(link, window.start, tuple(sorted(series)))
        return Listing(versions, cursor.dump())

    async def list_changes(self, cursor: str) -> Changes:
        what = "Reading Outlook calendar changes"
        state = self._cursor(cursor)
        items, link = await self._delta(state.link, None, what, initial=False)
        changed: dict[str, str] = {}
        touched: set[str] = set()
        removed: set[str] = set()
        for item in items:
            rid = str(item.get("id"))
            master = item.get("seriesMasterId")
            if "@removed" in item:
                removed.add(rid)
            elif master:
                touched.add(str(master))
            elif item.get("type") == "seriesMaster":
                touched.add(rid)
            else:
                changed[rid] = _etag(item)
        series = set(state.series)
        deleted: set[str] = set()
        if removed:
            deleted = await self._check_removed(
                removed - touched - set(changed), series, changed, touched, what
            )
        reread = sorted(touched - deleted)
        for start in range(0, len(reread), BATCH_LIMIT):
            chunk = reread[start : start + BATCH_LIMIT]
            entries = await self._read_many(chunk)
            for rid in chunk:
                entry = entries.get(rid)
                if entry is None:
                    deleted.add(rid)
                    continue
                changed[rid] = entry.version
                if entry.is_series:
                    series.add(rid)
                else:
                    series.discard(rid)
        for rid in deleted:
            changed.pop(rid, None)
            series.discard(rid)
        new = _Cursor(link, state.start, tuple(sorted(series)))
        return Changes(changed, frozenset(deleted), new.dump())

    @property
    def get_many_limit(self) -> int:
        return BATCH_LIMIT

    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        ids = list(dict.fromkeys(remote_ids))
        out: list[RemoteEvent] = []
        for start in range(0, len(ids), BATCH_LIMIT):
            chunk = ids[start : start + BATCH_LIMIT]
            entries = await self._read_many(chunk)
            out.extend(_remote(rid, entries[rid]) for rid in chunk if rid in entries)
        return out

    def _window(self) -> Window:
        """Today's window (whole UTC days, so it is stable within a day)."""
        today = self._clock().astimezone(dt.UTC)
        midnight = today.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(midnight - self._past, midnight + self._future)

    # ------------------------------------------------------------ port: writing

    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        self._writable()
        if not _KEY.match(idempotency_key):
            raise ValidationFailed("An idempotency key is 1-64 characters of [0-9a-f].")
        body = event_to_graph(event)  # refuses RDATE & co. before any request
        cancelled_originals(event)  # refuses unreadable EXDATE values, too
        what = "Creating an Outlook calendar event"
        found = await self._pages(
            self._events_url,
            {
                "$filter": "singleValueExtendedProperties/Any(ep: ep/id eq "
                f"'{KEY_PROPERTY}' and ep/value eq '{idempotency_key}')",
                "$select": "id",
            },
            what,
        )
        if found:
            return await self._adopt(found[0], event, what)
        body["transactionId"] = idempotency_key
        body["singleValueExtendedProperties"].append(
            {"id": KEY_PROPERTY, "value": idempotency_key}
        )
        response = await self._send("POST", self._events_url, what, json=body)
        if response.status_code != 201:
            raise _error(response, what)
        created = response.json()
        rid = str(created["id"])
        if not event.recurrence:
            return Written(rid, _etag(created))
        if not _has_details(event):
            return Written(rid, _series_version(created, ()))
        await self._write_details(rid, event, None)
        return Written(rid, await self._version_after_write(rid, what))

    async def update(
        self, remote_id: str, event: CalendarEvent, *, if_match: str, notify: Notify
    ) -> str | None:
        self._writable()
        body = event_to_graph(event)
        cancelled_originals(event)
        what = "Updating an Outlook calendar event"
        if event.recurrence or "|" in if_match:
            return await self._update_series(remote_id, event, body, if_match, what)
        response = await self._patch(remote_id, body, if_match, what)
        return _etag(response.json()) or None

    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        self._writable()
        what = "Deleting an Outlook calendar event"
        if "|" in if_match:
            await self._check_version(remote_id, if_match, what)
        response = await self._send(
            "DELETE",
            self._item_url(remote_id),
            what,
            headers={"If-Match": _master_etag(if_match)},
        )
        self._raise_for_write(response, what)

    # ------------------------------------------------------------ change feed

    def _cursor(self, text: str) -> _Cursor:
        """The stored cursor, if it is still usable.

        Raises:
            CursorExpired: not a cursor of this calendar, or its window has
                fallen behind by more than ``window_refresh``.
        """
        state = _Cursor.load(text)
        if state is None or not self._own(state.link):
            raise CursorExpired(
                "This is not a change-feed position of this Outlook calendar; "
                "a full sync is needed."
            )
        if self._window().start - state.start > self._refresh:
            raise CursorExpired(
                "The Outlook change feed's time window has fallen behind; a full "
                "sync renews it."
            )
        return state

    def _own(self, link: str) -> bool:
        """Whether ``link`` points at this Graph root (the bearer token goes
        with it, so a stored or received link must not lead elsewhere)."""
        return same_origin(self._root, link)

    async def _delta(
        self,
        url: str,
        params: Mapping[str, str] | None,
        what: str,
        *,
        initial: bool,
    ) -> tuple[_Items, str]:
        """Every item of a delta round, following ``@odata.nextLink``, and the
        round's ``@odata.deltaLink``.

        Raises:
            CursorExpired: Graph forgot the token (a stored link, not ``initial``).
            TransientProviderError: a fresh round lost its state (try again).
        """
        items: _Items = []
        headers = {"Prefer": f"{_PREFER}, odata.maxpagesize={self._page_size}"}
        async with new_client(self._transport) as client:
            while True:
                response = await self._send(
                    "GET", url, what, params=params, headers=headers, client=client
                )
                if _sync_state_lost(response):
                    if initial:
                        raise TransientProviderError(
                            f"{what}: Graph lost a fresh change round; retrying later."
                        )
                    raise CursorExpired(
                        f"{what}: Graph forgot the change-feed position; "
                        "a full sync is needed."
                    )
                page = self._page(response, what)
                items.extend(page.get("value") or ())
                link = page.get("@odata.nextLink") or page.get("@odata.deltaLink")
                if not link or not self._own(str(link)):
                    raise ProviderError(f"{what}: Graph sent no usable delta link.")
                if page.get("@odata.deltaLink"):
                    return items, str(link)
                url, params = str(link), None

    async def _check_removed(
        self,
        removed: set[str],
        series: set[str],
        changed: dict[str, str],
        touched: set[str],
        what: str,
    ) -> set[str]:
        """Sort ``@removed`` ids out against a listing of ``/events``.

        An id still listed changed (outside the window): a single event goes
        into ``changed``, a series into ``touched``. Returns the deleted ids: the
        removed ids not listed (occurrence ids among them are harmless) and the
        series of the cursor that are no longer listed.
        """
        alive = {str(raw["id"]): raw for raw in await self._listed(what)}
        deleted = {s for s in series if s not in alive}
        for rid in removed:
            raw = alive.get(rid)
            if raw is None:
                deleted.add(rid)
            elif raw.get("type") == "seriesMaster":
                touched.add(rid)
            else:
                changed[rid] = _etag(raw)
        return deleted

    async def _listed(self, what: str) -> _Items:
        """Ids, types and etags of every master and single event."""
        return await self._pages(
            self._events_url, {"$top": self._page_size, "$select": "id,type"}, what
        )

    # ------------------------------------------------------------ reading one item

    async def _read(self, remote_id: str) -> _Entry | None:
        """GET one event (and the instances of a series); None if it is gone or
        is not a listed item (an occurrence, an id of another mailbox)."""
        what = "Reading an Outlook calendar event"
        response = await self._send(
            "GET",
            self._item_url(remote_id),
            what,
            params={"$select": _SELECT, "$expand": _EXPAND},
        )
        if response.status_code == 404 or _error_code(response) == (
            "ErrorInvalidIdMalformed"
        ):
            return None
        if response.status_code != 200:
            raise _error(response, what)
        master = response.json()
        kind = master.get("type")
        if kind not in (None, "singleInstance", "seriesMaster"):
            return None  # an occurrence or exception, not a listed item
        if kind != "seriesMaster":
            return _Entry(_etag(master), master)
        window = self._window()
        try:
            instances = await self._instances(remote_id, window)
        except ItemNotFound:
            return None  # deleted between the two requests
        return _Entry(_series_version(master, instances), master, instances, window)

    async def _read_many(self, remote_ids: Sequence[str]) -> dict[str, _Entry]:
        """What :meth:`_read` gives for each id, in two ``$batch`` requests: the
        masters, then the instances of the series among them (further pages
        of a long series one by one). Left out: ids that are gone or are not
        listed items."""
        if len(remote_ids) == 1:
            entry = await self._read(remote_ids[0])
            return {} if entry is None else {remote_ids[0]: entry}
        what = "Reading Outlook calendar events"
        masters: dict[str, dict[str, Any]] = {}
        answers = await self._batch(
            [
                self._relative(rid, "", {"$select": _SELECT, "$expand": _EXPAND})
                for rid in remote_ids
            ],
            what,
        )
        for rid, answer in zip(remote_ids, answers, strict=True):
            if answer.status_code == 404 or _error_code(answer) == (
                "ErrorInvalidIdMalformed"
            ):
                continue
            master = self._page(answer, what)
            if master.get("type") in (None, "singleInstance", "seriesMaster"):
                masters[rid] = master
        entries = {
            rid: _Entry(_etag(master), master)
            for rid, master in masters.items()
            if master.get("type") != "seriesMaster"
        }
        series = [rid for rid in masters if rid not in entries]
        if series:
            entries |= await self._read_series(series, masters, what)
        return entries

    async def _read_series(
        self, series: Sequence[str], masters: Mapping[str, dict[str, Any]], what: str
    ) -> dict[str, _Entry]:
        """The instances of several series in one ``$batch`` (series gone
        meanwhile are left out)."""
        window = self._window()
        query = {
            "startDateTime": _query_time(window.start),
            "endDateTime": _query_time(window.end),
            "$top": str(self._page_size),
        }
        answers = await self._batch(
            [self._relative(rid, "/instances", query) for rid in series], what
        )
        out: dict[str, _Entry] = {}
        for rid, answer in zip(series, answers, strict=True):
            if answer.status_code == 404:
                continue
            page = self._page(answer, what)
            instances: _Items = list(page.get("value") or ())
            link = page.get("@odata.nextLink")
            if link:
                if not self._own(str(link)):
                    raise ProviderError(f"{what}: Graph sent a foreign next link.")
                instances += await self._pages(str(link), {}, what)
            master = masters[rid]
            version = _series_version(master, instances)
            out[rid] = _Entry(version, master, instances, window)
        return out

    def _relative(self, remote_id: str, suffix: str, query: Mapping[str, str]) -> str:
        """An item URL relative to the Graph root, as ``$batch`` wants it."""
        return f"/me/events/{quote(remote_id, safe='')}{suffix}?{urlencode(query)}"

    async def _batch(self, urls: Sequence[str], what: str) -> _Answers:
        """GET each of ``urls`` in one JSON ``$batch``; the answers in order, each
        as a response (status, headers, body) for the usual error mapping.

        Raises:
            ProviderError: the batch itself failed (mapped by status).
            TransientProviderError: an answer is missing or unreadable.
        """
        payload = {
            "requests": [
                {
                    "id": str(number),
                    "method": "GET",
                    "url": url,
                    "headers": {"Prefer": _PREFER},
                }
                for number, url in enumerate(urls)
            ]
        }
        response = await self._send("POST", self._root + "/$batch", what, json=payload)
        answers: dict[str, httpx.Response] = {}
        for item in self._page(response, what).get("responses") or ():
            if isinstance(item, dict) and isinstance(item.get("status"), int):
                answers[str(item.get("id"))] = httpx.Response(
                    item["status"],
                    headers=item.get("headers") or {},
                    json=item.get("body"),
                )
        try:
            return [answers[str(number)] for number in range(len(urls))]
        except KeyError:
            raise TransientProviderError(
                f"{what}: Graph's batch answer misses a request; retrying later."
            ) from None

    async def _instances(self, remote_id: str, window: Window) -> _Items:
        """The occurrences and exceptions of a series overlapping ``window``.

        Raises:
            ItemNotFound: the series is gone.
        """
        return await self._pages(
            self._item_url(remote_id) + "/instances",
            {
                "startDateTime": _query_time(window.start),
                "endDateTime": _query_time(window.end),
                "$top": self._page_size,
            },
            "Reading the occurrences of an Outlook series",
            missing=ItemNotFound,
        )

    async def _check_version(self, remote_id: str, if_match: str, what: str) -> _Entry:
        """Read the item and compare its whole version with ``if_match``.

        Raises:
            ItemNotFound: the item is gone.
            PreconditionFailed: it changed (also only in an exception).
        """
        current = await self._read(remote_id)
        if current is None:
            raise ItemNotFound(f"{what}: the event no longer exists in Outlook.")
        if current.version != if_match:
            raise PreconditionFailed(f"{what}: the event changed in Outlook meanwhile.")
        return current

    async def _version_after_write(self, remote_id: str, what: str) -> str:
        entry = await self._read(remote_id)
        if entry is None:
            raise ItemNotFound(f"{what}: the event vanished while it was written.")
        return entry.version

    # ------------------------------------------------------------ writing series

    async def _adopt(
        self, found: Mapping[str, Any], event: CalendarEvent, what: str
    ) -> Written:
        """The item an earlier create with the same key made; a series gets the
        exceptions that create may not have written before it was cut short."""
        rid = str(found["id"])
        current = await self._read(rid)
        if current is None:
            return Written(rid, _etag(found) or None, adopted=True)
        if current.is_series and _has_details(event):
            await self._write_details(rid, event, _current_event(current))
            return Written(
                rid, await self._version_after_write(rid, what), adopted=True
            )
        return Written(rid, current.version, adopted=True)

    async def _update_series(
        self,
        remote_id: str,
        event: CalendarEvent,
        body: dict[str, Any],
        if_match: str,
        what: str,
    ) -> str:
        """Update a series (or turn an event into or out of one)."""
        current = await self._check_version(remote_id, if_match, what)
        before = _current_event(current) if current.is_series else None
        keep = (
            bool(event.recurrence)
            and before is not None
            and timing_key(before) == timing_key(event)
            and not _restores(before, event)
        )
        if keep:
            # leaving the timing out keeps the exceptions Outlook holds
            body = {k: v for k, v in body.items() if k not in TIMING_FIELDS}
        response = await self._patch(remote_id, body, _master_etag(if_match), what)
        if not event.recurrence:
            return _etag(response.json())
        await self._write_details(remote_id, event, before if keep else None)
        return await self._version_after_write(remote_id, what)

    async def _write_details(
        self, remote_id: str, event: CalendarEvent, current: CalendarEvent | None
    ) -> None:
        """Make the series' instances hold ``event``'s exceptions and cancellations.

        ``current`` is what the series holds now (None: a fresh series, without
        exceptions). Overrides are PATCHed, overrides ``event`` no longer has are
        PATCHed back to the series, cancellations DELETEd. An original start
        that is no occurrence of the series is skipped: Outlook cannot hold it,
        and the next read shows what Outlook holds.
        """
        patches, deletes = _instance_writes(event, current)
        if not patches and not deletes:
            return
        wanted = {**{k: o for k, (o, _) in patches.items()}, **deletes}
        instances = await self._instances(
            remote_id, _covering(self._window(), wanted.values(), event)
        )
        by_key: dict[str, str] = {}
        for item in instances:
            original = instance_original(item, event.span)
            if original is not None:
                by_key[occurrence_key(original)] = str(item["id"])
        for key in sorted(patches):
            if key in by_key:
                await self._write_instance("PATCH", by_key[key], patches[key][1])
        for key in sorted(deletes):
            if key in by_key:
                await self._write_instance("DELETE", by_key[key], None)

    async def _write_instance(
        self, method: str, instance_id: str, body: dict[str, Any] | None
    ) -> None:
        """PATCH or DELETE one instance, conditional on its etag read just before
        (an occurrence's etag may change with every write to its series).

        An instance that is gone is skipped (cancelled meanwhile: the next read
        shows it).

        Raises:
            PreconditionFailed: the instance changed between the read and the write.
        """
        what = "Writing an occurrence of an Outlook series"
        url = self._item_url(instance_id)
        fresh = await self._send("GET", url, what, params={"$select": "id"})
        if fresh.status_code == 404:
            return
        if fresh.status_code != 200:
            raise _error(fresh, what)
        response = await self._send(
            method,
            url,
            what,
            json=body,
            headers={"If-Match": _etag(fresh.json())},
        )
        if response.status_code == 404:
            return
        self._raise_for_write(response, what)

    # ------------------------------------------------------------ helpers

    def _writable(self) -> None:
        if self._read_only:
            raise UnsupportedOperation(
                "This Outlook calendar is read-only for crmflow."
            )

    def _item_url(self, remote_id: str) -> str:
        return self._item_root + quote(remote_id, safe="")

    async def _patch(
        self, remote_id: str, body: dict[str, Any], if_match: str, what: str
    ) -> httpx.Response:
        response = await self._send(
            "PATCH",
            self._item_url(remote_id),
            what,
            json=body,
            headers={"If-Match": if_match},
        )
        self._raise_for_write(response, what)
        return response

    @staticmethod
    def _raise_for_write(response: httpx.Response, what: str) -> None:
        raise_for_conditional_write(response, what, "in Outlook", _error)

    @staticmethod
    def _page(response: httpx.Response, what: str) -> dict[str, Any]:
        """A 200 page's JSON object (see :func:`._http.json_object`)."""
        return json_object(response, what)

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

    async def _pages(
        self,
        url: str,
        params: Mapping[str, str | int],
        what: str,
        *,
        missing: type[ProviderError] | None = None,
    ) -> _Items:
        """Every item of a list query, following ``@odata.nextLink``.

        Raises:
            ``missing``: the first page is a 404 (when given).
        """
        items: _Items = []
        query: Mapping[str, str | int] | None = params
        async with new_client(self._transport) as client:
            while True:
                response = await self._send(
                    "GET", url, what, params=query, client=client
                )
                if missing is not None and response.status_code == 404:
                    raise missing(f"{what}: the event no longer exists in Outlook.")
                page = self._page(response, what)
                items.extend(page.get("value") or ())
                link = page.get("@odata.nextLink")
                if not link:
                    return items
                if not self._own(str(link)):
                    raise ProviderError(f"{what}: Graph sent a foreign next link.")
                url, query = str(link), None


def _remote(remote_id: str, entry: _Entry) -> RemoteEvent:
    """An entry as the port returns it.

    Raises:
        ProviderError: Graph's event cannot be represented.
    """
    try:
        event = entry.event()
    except ValidationFailed as exc:
        raise ProviderError(
            f"The Outlook calendar event {remote_id} cannot be read: {exc}"
        ) from None
    modified = parse_modified(entry.master.get("lastModifiedDateTime"))
    return RemoteEvent(remote_id, entry.version, event, modified)


def _has_details(event: CalendarEvent) -> bool:
    """Whether a series has exceptions or EXDATEs to write on its instances."""
    return bool(event.exceptions) or len(event.recurrence) > 1


def _current_event(entry: _Entry) -> CalendarEvent:
    """The event an entry holds, for deciding writes.

    Raises:
        ProviderError: Graph's event cannot be represented.
    """
    try:
        return entry.event()
    except ValidationFailed as exc:
        raise ProviderError(
            f"An Outlook calendar event cannot be read: {exc}"
        ) from None


def _restores(before: CalendarEvent, event: CalendarEvent) -> bool:
    """Whether ``event`` brings back an occurrence ``before`` has cancelled
    (Graph cannot: only rebuilding the series does)."""
    return bool(set(cancelled_originals(before)) - set(cancelled_originals(event)))


def _instance_writes(
    event: CalendarEvent, current: CalendarEvent | None
) -> tuple[dict[str, tuple[Original, dict[str, Any]]], dict[str, Original]]:
    """(PATCH bodies, DELETEs) by occurrence key that turn ``current`` into ``event``."""
    cancels = cancelled_originals(event)
    done = cancelled_originals(current) if current is not None else {}
    wanted = {e.key for e in event.exceptions}
    patches: dict[str, tuple[Original, dict[str, Any]]] = {}
    for old in current.exceptions if current is not None else ():
        if old.status is EventStatus.CANCELLED or old.key in wanted | set(cancels):
            continue
        # an override ``event`` no longer has: back to the series' values
        revert = RecurrenceException(old.original_start, event.status)
        patches[old.key] = (old.original_start, exception_to_graph(revert, event))
    for new in event.exceptions:
        if new.status is EventStatus.CANCELLED or new.key in cancels:
            continue
        if current is not None and current.exception_at(new.original_start) == new:
            continue  # Outlook holds it already
        patches[new.key] = (new.original_start, exception_to_graph(new, event))
    deletes = {k: o for k, o in cancels.items() if k not in done}
    return patches, deletes


def _covering(
    window: Window, originals: Iterable[Original], event: CalendarEvent
) -> Window:
    """``window`` widened to hold the occurrences at ``originals``."""
    length = event.span.end_at - event.span.start_at
    day = dt.timedelta(days=1)
    starts = [original_instant(o, event.span) for o in originals]
    return Window(
        min([window.start, *(s - day for s in starts)]),
        max([window.end, *(s + length + day for s in starts)]),
    )


__all__ = ["GraphCalendar"]
