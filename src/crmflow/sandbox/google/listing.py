"""events.list, events.watch and events.instances: filtering, expansion, paging, sync.

Rules (events.list discovery; sync guide; google-apis.md §2.2-2.5, checklist
1-7, 13):

* Exactly one of ``nextPageToken`` / ``nextSyncToken`` per page; the sync token
  only on the last page; none for queries that cannot be continued
  incrementally ([OBS] ``orderBy=startTime``).
* ``syncToken`` refuses ``iCalUID``, ``orderBy``, ``privateExtendedProperty``,
  ``q``, ``sharedExtendedProperty``, ``timeMin``, ``timeMax``, ``updatedMin`` and
  ``showDeleted=false``; incremental results always include deletions.
* ``timeMin`` is an exclusive bound on the end (inclusive on ``instances``),
  ``timeMax`` an exclusive bound on the start; ``maxResults`` default 250, at most
  2500.
* ``singleEvents`` expands series into instances, overlaying exceptions;
  ``orderBy=startTime`` needs it.
* Paging is by the last key of the page (id, start time or update time), so
  inserts between pages never shift items; changes made while paging show up
  in the next incremental sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.sandbox.google import errors
from crmflow.sandbox.google.calendardata import (
    EventView,
    StoredCalendar,
    StoredEvent,
    b64_token,
    instance_end,
    read_b64_token,
)
from crmflow.sandbox.google.calendars import Calendars
from crmflow.sandbox.google.eventtime import (
    EventTime,
    TimeError,
    ms_of,
    parse_rfc3339,
    stored_event_time,
    zone,
)
from crmflow.sandbox.google.recurrence import EXPANSION_LIMIT, instance_suffix

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "EventLister",
    "ListQuery",
    "ListResult",
]

#: events.list / instances: "maxResults ... default 250"; "The page size can
#: never be larger than 2500 events"
DEFAULT_PAGE_SIZE = 250
MAX_PAGE_SIZE = 2500

#: parameters that may not be combined with syncToken (sync guide)
SYNC_INCOMPATIBLE = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)


@dataclass
class ListQuery:
    """events.list / events.watch / events.instances parameters, parsed."""

    max_results: int = DEFAULT_PAGE_SIZE
    page_token: str | None = None
    sync_token: str | None = None
    #: None = parameter absent
    show_deleted: bool | None = None
    single_events: bool = False
    time_min: datetime | None = None
    time_max: datetime | None = None
    updated_min: datetime | None = None
    order_by: str | None = None
    q: str | None = None
    ical_uid: str | None = None
    private_properties: list[str] = field(default_factory=list)
    shared_properties: list[str] = field(default_factory=list)
    event_types: list[str] | None = None
    time_zone: str | None = None
    max_attendees: int | None = None
    #: instances only: originalStart filter
    original_start: str | None = None
    #: names of parameters present (to reject sync-incompatible ones)
    present: frozenset[str] = frozenset()
    #: a short_page fault fired for this request
    short_page: bool = False


@dataclass
class ListResult:
    """One page."""

    items: list[dict[str, Any]]
    next_page_token: str | None
    next_sync_token: str | None
    tz_name: str


@dataclass(slots=True)
class _Row:
    key: tuple[Any, ...]
    start_ms: int
    end_ms: int
    view: EventView
    minimal: bool


class EventLister:
    """Listing over :class:`~crmflow.sandbox.google.calendars.Calendars`. Call with the state lock held."""

    def __init__(self, calendars: Calendars) -> None:
        self.calendars = calendars

    def list_events(self, cal: StoredCalendar, query: ListQuery) -> ListResult:
        """events.list (and the initial state of events.watch).

        Raises:
            GoogleApiError: 400 for sync-incompatible parameters with syncToken,
                showDeleted=false with syncToken, orderBy=startTime without
                singleEvents, an empty time range or a bad page token; 410
                fullSyncRequired / updatedMinTooLongAgo.
        """
        if query.sync_token is not None:
            for name in SYNC_INCOMPATIBLE:
                if name in query.present:
                    # The HTTP error for this combination is unverified (400 per
                    # third-party code); the message is the sandbox's own.
                    raise errors.invalid_value(
                        f"The {name} parameter cannot be combined with syncToken.",
                        flavor="classic",
                        location=name,
                    )
            if query.show_deleted is False:
                raise errors.invalid_value(
                    "showDeleted=false cannot be combined with syncToken.",
                    flavor="classic",
                    location="showDeleted",
                )
        if query.order_by == "startTime" and not query.single_events:
            raise errors.bad_request(
                "The requested ordering is not available for the particular query.",
                flavor="classic",
                location="orderBy",
                reason="badRequest",
            )
        if (
            query.time_min is not None
            and query.time_max is not None
            and query.time_max <= query.time_min
        ):
            raise errors.time_range_empty()
        since: int | None = None
        if query.sync_token is not None:
            since = self.calendars.read_sync_token(cal, query.sync_token)
        if (
            query.updated_min is not None
            and ms_of(query.updated_min) < cal.updated_min_floor_ms
        ):
            raise errors.updated_min_too_long_ago()
        high_water = cal.seq
        after: list[Any] | None = None
        if query.page_token is not None:
            data = _read_marker(query.page_token, query, need_high_water=True)
            high_water = int(data["h"])
            after = list(data["k"])
        tz = zone(query.time_zone) if query.time_zone else cal.tz()
        incremental = since is not None or query.updated_min is not None
        # With the default (id) order, events before the page marker need no
        # row at all: skip them early (the common paging case).
        after_id = (
            str(after[0])
            if after and query.order_by is None and not query.single_events
            else None
        )
        rows = list(
            self._rows(
                cal,
                query,
                since=since,
                incremental=incremental,
                tz=tz,
                after_id=after_id,
            )
        )
        page, more = _paginate(rows, after, query)
        items = [
            self.calendars.render(
                cal,
                row.view,
                tz=tz,
                minimal=row.minimal,
                max_attendees=query.max_attendees,
            )
            for row in page
        ]
        next_page = None
        next_sync = None
        if more is not None:
            next_page = b64_token({"k": list(more), "h": high_water})
        elif not (
            query.present
            & {
                "orderBy",
                "q",
                "iCalUID",
                "privateExtendedProperty",
                "sharedExtendedProperty",
                "updatedMin",
            }
        ):
            # Exactly one of nextPageToken / nextSyncToken; none for queries
            # that cannot be continued incrementally ([OBS] orderBy=startTime).
            next_sync = self.calendars.sync_token(cal, high_water)
        return ListResult(items, next_page, next_sync, tz.key)

    def list_instances(
        self, cal: StoredCalendar, event_id: str, query: ListQuery
    ) -> ListResult:
        """events.instances: instances of one series (timeMin inclusive against end)."""
        view = self.calendars.view(cal, event_id)
        master = view.event
        tz = zone(query.time_zone) if query.time_zone else cal.tz()
        after: list[Any] | None = None
        if query.page_token is not None:
            data = _read_marker(query.page_token, query, need_high_water=False)
            after = list(data["k"])
        if not master.is_series or view.original is not None:
            rows = [
                self._row(
                    cal,
                    EventView(master) if view.original is None else view,
                    tz,
                    query,
                    minimal=False,
                )
            ]
        else:
            rows = list(
                self._instance_rows(
                    cal,
                    master,
                    query,
                    tz,
                    show_deleted=bool(query.show_deleted),
                    incremental=False,
                    inclusive_min=True,
                )
            )
        if query.original_start is not None:
            rows = [r for r in rows if _original_matches(r, query.original_start, tz)]
        page, more = _paginate(rows, after, query)
        next_page = (
            b64_token({"k": list(more), "h": cal.seq}) if more is not None else None
        )
        items = [
            self.calendars.render(
                cal, r.view, tz=tz, minimal=r.minimal, max_attendees=query.max_attendees
            )
            for r in page
        ]
        return ListResult(items, next_page, None, tz.key)

    def _row(
        self,
        cal: StoredCalendar,
        view: EventView,
        tz: ZoneInfo,
        query: ListQuery,
        *,
        minimal: bool,
    ) -> _Row:
        ev = view.effective
        if view.original is not None and view.exception is None:
            cal_tz = cal.tz()
            start_ms = ms_of(view.original.start_in(cal_tz))
            end_ms = ms_of(instance_end(view.event, view.original).start_in(cal_tz))
            rid = f"{view.event.id}_{instance_suffix(view.original)}"
        else:
            start_ms, end_ms, rid = ev.start_ms, ev.end_ms, ev.id
        if query.order_by == "startTime":
            key: tuple[Any, ...] = (start_ms, rid)
        elif query.order_by == "updated":
            key = (ev.updated_ms, rid)
        else:
            key = (rid,)
        return _Row(key, start_ms, end_ms, view, minimal)

    def _rows(
        self,
        cal: StoredCalendar,
        query: ListQuery,
        *,
        since: int | None,
        incremental: bool,
        tz: ZoneInfo,
        after_id: str | None = None,
    ) -> Iterator[_Row]:
        show_deleted = bool(query.show_deleted)
        # Tombstones in incremental results carry details only with showDeleted
        # ("incremental sync requests with showDeleted set to false will not
        # return these details").
        minimal = not show_deleted
        if since is not None:
            candidates = [e for e in cal.events.values() if e.change_seq > since]
        elif query.updated_min is not None:
            floor = ms_of(query.updated_min)
            candidates = [e for e in cal.events.values() if e.updated_ms >= floor]
        else:
            candidates = list(cal.events.values())
        if after_id is not None:
            candidates = [e for e in candidates if e.id > after_id]
        candidate_ids = {e.id for e in candidates}
        filtered = bool(
            query.ical_uid
            or query.event_types
            or query.private_properties
            or query.shared_properties
            or query.q
        )
        for ev in candidates:
            if filtered and not self._matches_filters(ev, query):
                continue
            if query.single_events:
                if ev.is_series:
                    yield from self._instance_rows(
                        cal,
                        ev,
                        query,
                        tz,
                        show_deleted=show_deleted,
                        incremental=incremental,
                        inclusive_min=False,
                        changed_only=None if since is None else candidate_ids,
                    )
                    continue
                if ev.recurring_event_id is not None:
                    master = cal.events.get(ev.recurring_event_id)
                    if (
                        master is not None
                        and master.id in candidate_ids
                        and master.is_series
                    ):
                        continue  # produced by the master's expansion
                    if master is not None and not incremental:
                        continue  # full listings expand through the master
                if ev.cancelled and not (show_deleted or incremental):
                    continue
                row = self._row(
                    cal,
                    self.calendars.view(cal, ev.id)
                    if ev.recurring_event_id
                    else EventView(ev),
                    tz,
                    query,
                    minimal=minimal,
                )
            else:
                if ev.cancelled and not (show_deleted or incremental):
                    # "Cancelled instances of recurring events (but not the
                    # underlying recurring event) will still be included if
                    # showDeleted and singleEvents are both False."
                    master = cal.events.get(ev.recurring_event_id or "")
                    if (
                        ev.recurring_event_id is None
                        or master is None
                        or master.cancelled
                    ):
                        continue
                row = self._row(cal, EventView(ev), tz, query, minimal=minimal)
            if ev.is_series and not query.single_events:
                if not self._series_overlaps(cal, ev, query):
                    continue
            elif not _overlaps(row, query, inclusive_min=False):
                continue
            yield row

    def _series_overlaps(
        self, cal: StoredCalendar, master: StoredEvent, query: ListQuery
    ) -> bool:
        if query.time_min is None and query.time_max is None:
            return True
        series = self.calendars.series(cal, master)
        after = _earlier(query.time_min, series.duration)
        return any(
            True
            for _ in series.occurrences(
                starts_after=after, starts_before=query.time_max, limit=1
            )
        )

    def _instance_rows(
        self,
        cal: StoredCalendar,
        master: StoredEvent,
        query: ListQuery,
        tz: ZoneInfo,
        *,
        show_deleted: bool,
        incremental: bool,
        inclusive_min: bool,
        changed_only: set[str] | None = None,
    ) -> Iterator[_Row]:
        series = self.calendars.series(cal, master)
        exceptions = {
            e.id: e
            for e in cal.events.values()
            if e.recurring_event_id == master.id and e.original_start
        }
        after = _earlier(query.time_min, series.duration + timedelta(seconds=1))
        limit = EXPANSION_LIMIT if query.time_max is None else 100_000
        for original in series.occurrences(
            starts_after=after, starts_before=query.time_max, limit=limit
        ):
            full = EventTime(
                original.day, original.instant, master.body["start"].get("timeZone")
            )
            iid = f"{master.id}_{instance_suffix(original)}"
            exception = exceptions.pop(iid, None)
            view = EventView(master, full, exception)
            effective = view.effective
            if master.cancelled:
                if not (show_deleted or incremental):
                    return
            elif effective.cancelled and not (show_deleted or incremental):
                continue
            minimal = not show_deleted
            row = self._row(cal, view, tz, query, minimal=minimal)
            if _overlaps(row, query, inclusive_min=inclusive_min):
                yield row
        # Exceptions moved from outside the expanded window into it.
        for exception in exceptions.values():
            if exception.cancelled and not (show_deleted or incremental):
                continue
            assert exception.original_start is not None  # noqa: S101 - filtered above
            view = EventView(
                master, stored_event_time(exception.original_start), exception
            )
            row = self._row(cal, view, tz, query, minimal=not show_deleted)
            if _overlaps(row, query, inclusive_min=inclusive_min):
                yield row

    def _matches_filters(self, ev: StoredEvent, query: ListQuery) -> bool:
        if query.ical_uid is not None and ev.ical_uid != query.ical_uid:
            return False
        if query.event_types and ev.event_type not in query.event_types:
            return False
        ext = ev.body.get("extendedProperties") or {}
        # Discovery: repeated constraints "must all" match (the guide says OR;
        # google-apis.md §2.8 flags the conflict). The sandbox ANDs.
        for scope, constraints in (
            ("private", query.private_properties),
            ("shared", query.shared_properties),
        ):
            props = ext.get(scope) or {}
            for constraint in constraints:
                name, _, value = constraint.partition("=")
                if props.get(name) != value:
                    return False
        if query.q:
            haystack = " ".join(
                str(x)
                for x in (
                    ev.body.get("summary", ""),
                    ev.body.get("description", ""),
                    ev.body.get("location", ""),
                    ev.organizer.get("email", ""),
                    ev.organizer.get("displayName", ""),
                    *(a.get("email", "") for a in ev.body.get("attendees", [])),
                    *(a.get("displayName", "") for a in ev.body.get("attendees", [])),
                )
            ).lower()
            if not all(word in haystack for word in query.q.lower().split()):
                return False
        return True


def _earlier(bound: datetime | None, delta: timedelta) -> datetime | None:
    """``bound - delta``; None (no lower bound) when that precedes datetime.min."""
    if bound is None:
        return None
    try:
        return bound - delta
    except OverflowError:
        return None


def _read_marker(
    token: str, query: ListQuery, *, need_high_water: bool
) -> dict[str, Any]:
    """Decode a page token and check its marker fits the query's sort key.

    A token from another query (other ``orderBy``) or a forged one would
    otherwise compare unlike types while paging.

    Raises:
        GoogleApiError: 400 "Invalid page token value."
    """
    data = read_b64_token(token)
    if data is None or not _marker_fits(data, query, need_high_water=need_high_water):
        raise errors.invalid_value(
            "Invalid page token value.", flavor="classic", location="pageToken"
        )
    return data


def _marker_fits(
    data: dict[str, Any], query: ListQuery, *, need_high_water: bool
) -> bool:
    marker = data.get("k")
    if not isinstance(marker, list):
        return False
    # exactly int: a bool is no change number / timestamp
    if need_high_water and type(data.get("h")) is not int:
        return False
    if not marker:
        return True  # short_page fault: "before everything"
    if query.order_by in ("startTime", "updated"):
        return (
            len(marker) == 2 and type(marker[0]) is int and isinstance(marker[1], str)
        )
    return len(marker) == 1 and isinstance(marker[0], str)


def _paginate(
    rows: list[_Row], after: list[Any] | None, query: ListQuery
) -> tuple[list[_Row], tuple[Any, ...] | None]:
    rows.sort(key=lambda r: r.key)
    if after is not None:
        marker = tuple(after)
        rows = [r for r in rows if r.key > marker]
    size = min(query.max_results, MAX_PAGE_SIZE)
    if query.short_page and rows:
        # Fault: an empty page that still promises more (events.list maxResults doc).
        # The empty tuple sorts before every key.
        return [], tuple(after) if after is not None else ()
    page = rows[:size]
    more = page[-1].key if len(rows) > size else None
    return page, more


def _overlaps(row: _Row, query: ListQuery, *, inclusive_min: bool) -> bool:
    # events.list: timeMin is an exclusive bound on the event's end, timeMax an
    # exclusive bound on its start. events.instances: timeMin is inclusive.
    if query.time_min is not None:
        bound = ms_of(query.time_min)
        if row.end_ms < bound or (row.end_ms == bound and not inclusive_min):
            return False
    return not (query.time_max is not None and row.start_ms >= ms_of(query.time_max))


def _original_matches(row: _Row, original_start: str, tz: ZoneInfo) -> bool:
    view = row.view
    original = view.original
    if original is None:
        return False
    if original.day is not None:
        return original.day.isoformat() == original_start
    try:
        wanted = parse_rfc3339(original_start)
    except TimeError:
        return False
    actual = original.instant
    return wanted == actual
