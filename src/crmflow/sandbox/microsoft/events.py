"""Outlook calendar rules: calendars, events, series, occurrences, exceptions, change journal.

Graph's behaviour (microsoft-graph.md §2, checklist 3-11):

* Every write gives the item a new ``changeKey`` and ``lastModifiedDateTime``;
  ``@odata.etag`` is ``W/"<changeKey>"``. A PATCH or DELETE whose ``If-Match``
  names another change key is 412 ``ErrorIrresolvableConflict`` (observed for
  messages and events; ``If-Match: *`` matches anything — RFC 9110 §13.1.1,
  Graph's behaviour unverified).
* ``/events`` lists single instances and series masters only; calendarView and
  ``/instances`` expand series into occurrences and exceptions whose ids differ
  from the master's, with ``seriesMasterId`` and ``originalStart``;
  ``/instances`` omits cancelled occurrences.
* A series master's ``start``/``end`` are its first occurrence's. PATCHing an
  occurrence turns it into an ``exception``; DELETE of an occurrence cancels it
  (``cancelledOccurrences`` on the master) and updates the master. Changing a
  master's recurrence or times drops its exceptions (Outlook does the same).
* ``transactionId`` is stored on create and immutable (400 ErrorInvalidRequest
  with the observed message); it is **not** a uniqueness lock.
* Deleted items are gone: GET is 404 ``ErrorItemNotFound``.

Each write is appended to the mailbox's change journal (``seq`` numbers),
which delta queries and change notifications read.

All methods must be called with the sandbox state lock held.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from crmflow.sandbox.microsoft import _ids
from crmflow.sandbox.microsoft.errors import (
    GraphError,
    invalid_request,
    irresolvable_conflict,
    item_not_found,
)
from crmflow.sandbox.microsoft.eventjson import (
    EVENT_PROPERTIES,
    NEVER,
    PASS_THROUGH,
    check_properties,
    default_props,
    is_midnight,
    normalize_location,
    normalize_pass_through,
    preview,
    render_body,
    render_time,
)
from crmflow.sandbox.microsoft.recurrence import (
    expand,
    normalize_recurrence,
    recurrence_zone,
)
from crmflow.sandbox.microsoft.timezones import (
    LATEST,
    LocalTime,
    format_utc,
    parse_date_time_zone,
    resolve_zone,
)

__all__ = [
    "Calendars",
    "ChangeRecord",
    "EventView",
    "ExceptionData",
    "RenderOptions",
    "StoredCalendar",
    "StoredEvent",
]

ChangeType = Literal["created", "updated", "deleted"]

#: "Your request can't be completed. ClientId/TransactionId is immutable and
#: cannot be updated." [OBS mguessan/davmail #484]
TRANSACTION_IMMUTABLE = "Your request can't be completed. ClientId/TransactionId is immutable and cannot be updated."
#: extended property ids: "{type} {guid} Name {name}", "{type} {guid} Id 0x…", "{type} 0x…"
_EXTENDED_ID = re.compile(
    r"^(String|Integer|Boolean|SystemTime|Binary|Double|Float|Long|Short|CLSID|Currency|ApplicationTime|Object)"
    r"\s+(\{[0-9A-Fa-f-]{36}\}\s+(Name\s+\S.*|Id\s+0x[0-9A-Fa-f]+)|0x[0-9A-Fa-f]+)$"
)


@dataclass
class StoredCalendar:
    """A calendar folder."""

    id: str
    name: str
    change_key: str
    is_default: bool = False
    color: str = "auto"


@dataclass
class ExceptionData:
    """A modified occurrence of a series."""

    #: the occurrence's original start (UTC)
    original_start: datetime
    id: str
    change_key: str
    created: datetime
    last_modified: datetime
    start: datetime
    end: datetime
    start_zone: str
    end_zone: str
    #: pass-through properties overriding the master's
    props: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoredEvent:
    """A single instance or a series master."""

    id: str
    calendar_id: str
    change_key: str
    created: datetime
    last_modified: datetime
    ical_uid: str
    #: UTC instants (all-day: midnight in ``start_zone``)
    start: datetime
    end: datetime
    start_zone: str
    end_zone: str
    is_all_day: bool
    props: dict[str, Any]
    organizer: dict[str, Any]
    recurrence: dict[str, Any] | None = None
    transaction_id: str | None = None
    #: singleValueExtendedProperties [{id, value}]
    extended: list[dict[str, str]] = field(default_factory=list)
    #: key: original start as format_utc()
    exceptions: dict[str, ExceptionData] = field(default_factory=dict)
    #: original starts (format_utc) of cancelled occurrences
    cancelled: list[str] = field(default_factory=list)
    is_cancelled: bool = False


@dataclass
class ChangeRecord:
    """One entry of the change journal."""

    seq: int
    #: id of the single event / series master (occurrences journal their master)
    event_id: str
    change_type: str
    at: datetime
    #: id of the changed occurrence/exception, when the change concerned one
    instance_id: str | None = None


@dataclass
class CalendarData:
    """Everything one mailbox's calendar persists."""

    calendars: dict[str, StoredCalendar] = field(default_factory=dict)
    events: dict[str, StoredEvent] = field(default_factory=dict)
    journal: list[ChangeRecord] = field(default_factory=list)
    seq: int = 0


@dataclass(frozen=True)
class RenderOptions:
    """How a response renders events."""

    #: ``Prefer: outlook.timezone`` (name as sent, zone); None = UTC
    zone: tuple[str, ZoneInfo] | None = None
    prefer_text_body: bool = False
    #: ``$select`` (None = all)
    select: frozenset[str] | None = None
    #: ``$expand=singleValueExtendedProperties($filter=id eq '…')`` ids (None = not expanded)
    expand_extended: frozenset[str] | None = None


@dataclass
class EventView:
    """An event as the API sees it: single, master, occurrence or exception."""

    event: StoredEvent
    kind: Literal["singleInstance", "seriesMaster", "occurrence", "exception"]
    original_start: datetime | None = None
    exception: ExceptionData | None = None

    @property
    def id(self) -> str:
        if self.exception is not None:
            return self.exception.id
        if self.original_start is not None:
            return _ids.occurrence_id(self.event.id, self.original_start)
        return self.event.id

    @property
    def change_key(self) -> str:
        if self.exception is not None:
            return self.exception.change_key
        return self.event.change_key

    @property
    def etag(self) -> str:
        return f'W/"{self.change_key}"'

    @property
    def start(self) -> datetime:
        if self.exception is not None:
            return self.exception.start
        if self.original_start is not None:
            return self.original_start
        return self.event.start

    @property
    def end(self) -> datetime:
        if self.exception is not None:
            return self.exception.end
        return self.start + (self.event.end - self.event.start)

    @property
    def last_modified(self) -> datetime:
        if self.exception is not None:
            return self.exception.last_modified
        return self.event.last_modified

    @property
    def series_master_id(self) -> str | None:
        return self.event.id if self.original_start is not None else None

    def prop(self, name: str) -> Any:
        """A pass-through property, exception overrides first."""
        if self.exception is not None and name in self.exception.props:
            return self.exception.props[name]
        return self.event.props.get(name)

    def render(
        self, base: str, owner_email: str, options: RenderOptions
    ) -> dict[str, Any]:
        """Return the Graph JSON of this event (see :mod:`.eventjson`)."""
        ev = self.event
        zone = options.zone
        start_zone = self.exception.start_zone if self.exception else ev.start_zone
        end_zone = self.exception.end_zone if self.exception else ev.end_zone
        start_wall = end_wall = None
        if ev.is_all_day:
            start_wall = self.start.astimezone(resolve_zone(ev.start_zone)).replace(
                tzinfo=None
            )
            end_wall = self.end.astimezone(resolve_zone(ev.end_zone)).replace(
                tzinfo=None
            )
        zone_name = zone[0] if zone else "UTC"
        zone_info = zone[1] if zone else None
        body = self.prop("body") or {"contentType": "text", "content": ""}
        ical = ev.ical_uid
        if self.original_start is not None:
            ical = _ids.ical_uid(_ids.ical_tail(ev.ical_uid), on=self.original_start)
        data: dict[str, Any] = {
            "@odata.etag": self.etag,
            "id": self.id,
            "createdDateTime": format_utc(
                self.exception.created if self.exception else ev.created
            ),
            "lastModifiedDateTime": format_utc(self.last_modified),
            "changeKey": self.change_key,
            "categories": list(self.prop("categories") or []),
            "transactionId": ev.transaction_id,
            "originalStartTimeZone": start_zone,
            "originalEndTimeZone": end_zone,
            "iCalUId": ical,
            "reminderMinutesBeforeStart": self.prop("reminderMinutesBeforeStart"),
            "isReminderOn": self.prop("isReminderOn"),
            "hasAttachments": False,
            "subject": self.prop("subject") or "",
            "bodyPreview": preview(body),
            "importance": self.prop("importance"),
            "sensitivity": self.prop("sensitivity"),
            "isAllDay": ev.is_all_day,
            "isCancelled": ev.is_cancelled,
            "isOrganizer": True,
            "responseRequested": self.prop("responseRequested"),
            "seriesMasterId": self.series_master_id,
            "showAs": self.prop("showAs"),
            "type": self.kind,
            "webLink": f"{base}/owa/?itemid={self.id}&exvsurl=1&path=/calendar/item",
            "onlineMeetingUrl": None,
            "isOnlineMeeting": self.prop("isOnlineMeeting"),
            "onlineMeetingProvider": self.prop("onlineMeetingProvider"),
            "allowNewTimeProposals": self.prop("allowNewTimeProposals"),
            "isDraft": False,
            "hideAttendees": self.prop("hideAttendees"),
            "responseStatus": {"response": "organizer", "time": NEVER},
            "body": render_body(body, options.prefer_text_body),
            "start": render_time(
                self.start, zone=zone_info, zone_name=zone_name, all_day_wall=start_wall
            ),
            "end": render_time(
                self.end, zone=zone_info, zone_name=zone_name, all_day_wall=end_wall
            ),
            "location": copy.deepcopy(
                self.prop("location") or normalize_location(None)
            ),
            "locations": copy.deepcopy(self.prop("locations") or []),
            "recurrence": copy.deepcopy(ev.recurrence)
            if self.kind == "seriesMaster"
            else None,
            "attendees": copy.deepcopy(self.prop("attendees") or []),
            "organizer": copy.deepcopy(ev.organizer),
            "onlineMeeting": None,
        }
        if self.original_start is not None:
            # "always UTC"; only on occurrences and exceptions
            data["originalStart"] = format_utc(self.original_start)
        if options.select is not None:
            keep = {"@odata.etag", "id"} | set(options.select)
            data = {k: v for k, v in data.items() if k in keep}
            if "cancelledOccurrences" in options.select and self.kind == "seriesMaster":
                data["cancelledOccurrences"] = [
                    f"OID.{ev.id}.{value[:10]}" for value in sorted(ev.cancelled)
                ]
        if options.expand_extended is not None:
            data["singleValueExtendedProperties"] = [
                dict(p)
                for p in ev.extended
                if not options.expand_extended or p["id"] in options.expand_extended
            ]
        return data


class Calendars:
    """Calendar rules over one mailbox's :class:`CalendarData`."""

    def __init__(self, data: CalendarData, owner: dict[str, Any]) -> None:
        self.data = data
        #: ``{"emailAddress": {"name", "address"}}`` of the mailbox owner
        self.owner = owner
        #: (master id, change key) -> a lazily advanced expansion of the series,
        #: so resolving many occurrence ids of one series (a delta page) is
        #: linear, not quadratic. Instances live for one request.
        self._expansions: dict[tuple[str, str], _Expansion] = {}

    # -- calendars -------------------------------------------------------------------

    def ensure_default(self) -> StoredCalendar:
        """The default calendar ("Calendar"), created on first use."""
        for cal in self.data.calendars.values():
            if cal.is_default:
                return cal
        cal = StoredCalendar(
            id=_ids.new_id(),
            name="Calendar",
            change_key=_ids.change_key(),
            is_default=True,
        )
        self.data.calendars[cal.id] = cal
        return cal

    def calendar(self, calendar_id: str | None) -> StoredCalendar:
        """Return a calendar by id; ``None`` means the default one.

        Raises:
            GraphError: 404 ErrorItemNotFound.
        """
        if calendar_id is None:
            return self.ensure_default()
        found = self.data.calendars.get(calendar_id)
        if found is None:
            raise item_not_found()
        return found

    def create_calendar(self, name: str) -> StoredCalendar:
        """Create a secondary calendar.

        Raises:
            GraphError: 409 ErrorFolderExists for a duplicate name.
        """
        if any(
            c.name.casefold() == name.casefold() for c in self.data.calendars.values()
        ):
            raise GraphError(
                409,
                "ErrorFolderExists",
                "A folder with the specified name already exists.",
            )
        cal = StoredCalendar(id=_ids.new_id(), name=name, change_key=_ids.change_key())
        self.data.calendars[cal.id] = cal
        return cal

    def render_calendar(self, cal: StoredCalendar) -> dict[str, Any]:
        """Graph JSON of a calendar."""
        return {
            "@odata.etag": f'W/"{cal.change_key}"',
            "id": cal.id,
            "name": cal.name,
            "color": cal.color,
            "hexColor": "",
            "isDefaultCalendar": cal.is_default,
            "changeKey": cal.change_key,
            "canShare": True,
            "canViewPrivateItems": True,
            "canEdit": True,
            "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
            "isTallyingResponses": True,
            "isRemovable": not cal.is_default,
            "owner": dict(self.owner["emailAddress"]),
        }

    # -- journal -------------------------------------------------------------------------

    def _journal(
        self,
        event_id: str,
        change: ChangeType,
        now: datetime,
        instance_id: str | None = None,
    ) -> int:
        self.data.seq += 1
        self.data.journal.append(
            ChangeRecord(
                seq=self.data.seq,
                event_id=event_id,
                change_type=change,
                at=now,
                instance_id=instance_id,
            )
        )
        # a bounded journal: old entries only matter to very old delta tokens
        if len(self.data.journal) > 5000:
            del self.data.journal[: len(self.data.journal) - 5000]
        return self.data.seq

    def changes_since(self, seq: int) -> list[ChangeRecord]:
        """Journal entries after ``seq``, oldest first."""
        return [c for c in self.data.journal if c.seq > seq]

    # -- lookup ----------------------------------------------------------------------------

    def view(self, item_id: str) -> EventView:
        """Return the single, master, occurrence or exception with ``item_id``.

        Raises:
            GraphError: 404 ErrorItemNotFound (unknown, deleted or cancelled).
        """
        found = self.data.events.get(item_id)
        if found is not None:
            return EventView(
                found, "seriesMaster" if found.recurrence else "singleInstance"
            )
        split = _ids.split_occurrence_id(item_id)
        if split is None:
            raise item_not_found()
        master_id, original = split
        master = self.data.events.get(master_id)
        if master is None or master.recurrence is None:
            raise item_not_found()
        key = format_utc(original)
        if key in master.cancelled:
            raise item_not_found()
        exception = master.exceptions.get(key)
        if exception is not None:
            return EventView(master, "exception", original, exception)
        if not self._generates(master, original):
            raise item_not_found()
        return EventView(master, "occurrence", original)

    def _generates(self, master: StoredEvent, original: datetime) -> bool:
        assert master.recurrence is not None  # noqa: S101 - caller checks
        key = (master.id, master.change_key)
        expansion = self._expansions.get(key)
        if expansion is None:
            expansion = _Expansion(
                expand(
                    master.recurrence,
                    start_time=self._start_time(master),
                    duration=master.end - master.start,
                    limit=_UNLIMITED,
                )
            )
            self._expansions[key] = expansion
        return expansion.contains(original)

    def _start_time(self, master: StoredEvent) -> time:
        assert master.recurrence is not None  # noqa: S101 - caller checks
        zone = recurrence_zone(master.recurrence)
        return master.start.astimezone(zone).time().replace(tzinfo=None)

    def _occurrence_starts(
        self,
        master: StoredEvent,
        window_start: datetime | None,
        window_end: datetime | None,
    ) -> Iterator[datetime]:
        assert master.recurrence is not None  # noqa: S101 - caller checks
        return expand(
            master.recurrence,
            start_time=self._start_time(master),
            window_start=window_start,
            window_end=window_end,
            duration=master.end - master.start,
        )

    # -- listing -----------------------------------------------------------------------------

    def masters_and_singles(self, calendar_id: str | None) -> list[EventView]:
        """``/events``: single instances and series masters, oldest first."""
        cal = self.calendar(calendar_id) if calendar_id is not None else None
        return [
            EventView(ev, "seriesMaster" if ev.recurrence else "singleInstance")
            for ev in self.data.events.values()
            if cal is None or ev.calendar_id == cal.id
        ]

    def instances(
        self, master: StoredEvent, window_start: datetime, window_end: datetime
    ) -> list[EventView]:
        """Occurrences and exceptions of ``master`` overlapping the window (cancelled omitted)."""
        out: list[EventView] = []
        if master.recurrence is None:
            return out
        seen: set[str] = set()
        try:
            horizon = window_end + (master.end - master.start) + timedelta(days=1)
        except OverflowError:
            horizon = LATEST
        for original in self._occurrence_starts(master, None, horizon):
            key = format_utc(original)
            if key in master.cancelled:
                continue
            exception = master.exceptions.get(key)
            view = EventView(
                master, "exception" if exception else "occurrence", original, exception
            )
            seen.add(key)
            if _overlaps(view.start, view.end, window_start, window_end):
                out.append(view)
        # exceptions moved far from their original slot
        for key, exception in master.exceptions.items():
            if key in seen or key in master.cancelled:
                continue
            view = EventView(master, "exception", exception.original_start, exception)
            if _overlaps(view.start, view.end, window_start, window_end):
                out.append(view)
        out.sort(key=lambda v: (v.start, v.id))
        return out

    def calendar_view(
        self, calendar_id: str | None, window_start: datetime, window_end: datetime
    ) -> list[EventView]:
        """calendarView: singles, occurrences and exceptions overlapping the window, by start."""
        cal = self.calendar(calendar_id)
        out: list[EventView] = []
        for ev in self.data.events.values():
            if ev.calendar_id != cal.id:
                continue
            if ev.recurrence is None:
                view = EventView(ev, "singleInstance")
                if _overlaps(view.start, view.end, window_start, window_end):
                    out.append(view)
            else:
                out.extend(self.instances(ev, window_start, window_end))
        out.sort(key=lambda v: (v.start, v.id))
        return out

    # -- writes ---------------------------------------------------------------------------------

    @staticmethod
    def check_if_match(if_match: str | None, current_change_key: str) -> None:
        """412 ErrorIrresolvableConflict unless ``If-Match`` is absent, ``*`` or the current etag."""
        if if_match is None or if_match.strip() == "*":
            return
        tags = [t.strip() for t in if_match.split(",")]
        wanted = {
            f'W/"{current_change_key}"',
            f'"{current_change_key}"',
            current_change_key,
        }
        if not any(tag in wanted for tag in tags):
            raise irresolvable_conflict()

    def create(
        self, body: dict[str, Any], *, calendar_id: str | None, now: datetime
    ) -> EventView:
        """POST an event (single or series master).

        Raises:
            GraphError: 400 for invalid properties, times or recurrence.
        """
        check_properties(body, EVENT_PROPERTIES, "microsoft.graph.event")
        cal = self.calendar(calendar_id)
        if "start" not in body or "end" not in body:
            raise invalid_request(
                "Your request can't be completed. The event must have a start and an end."
            )
        props = default_props()
        for name in PASS_THROUGH:
            if name in body:
                props[name] = normalize_pass_through(name, body[name])
        _sync_locations(props, body)
        transaction_id = body.get("transactionId")
        if transaction_id is not None and not isinstance(transaction_id, str):
            raise invalid_request(
                "Your request can't be completed. transactionId must be a string."
            )
        ev = StoredEvent(
            id=_ids.new_id(),
            calendar_id=cal.id,
            change_key=_ids.change_key(),
            created=now,
            last_modified=now,
            ical_uid=_ids.ical_uid(),
            start=now,
            end=now,
            start_zone="UTC",
            end_zone="UTC",
            is_all_day=bool(body.get("isAllDay", False)),
            props=props,
            organizer=copy.deepcopy(self.owner),
            transaction_id=transaction_id,
        )
        _apply_times(ev, body)
        if body.get("recurrence") is not None:
            _apply_recurrence(ev, body["recurrence"])
        if "singleValueExtendedProperties" in body:
            ev.extended = _merge_extended([], body["singleValueExtendedProperties"])
        self.data.events[ev.id] = ev
        self._journal(ev.id, "created", now)
        return EventView(ev, "seriesMaster" if ev.recurrence else "singleInstance")

    def update(
        self, item_id: str, body: dict[str, Any], *, if_match: str | None, now: datetime
    ) -> EventView:
        """PATCH a single, master, occurrence or exception.

        Raises:
            GraphError: 404, 412 (If-Match), 400 (invalid body; transactionId changed).
        """
        check_properties(body, EVENT_PROPERTIES, "microsoft.graph.event")
        view = self.view(item_id)
        self.check_if_match(if_match, view.change_key)
        ev = view.event
        if "transactionId" in body and body["transactionId"] != ev.transaction_id:
            raise invalid_request(TRANSACTION_IMMUTABLE)
        # Properties are validated while they are applied; a rejected PATCH
        # must leave the event (and its change key) exactly as it was.
        before = copy.deepcopy(ev)
        try:
            return self._apply_update(view, body, now)
        except GraphError:
            self.data.events[ev.id] = before
            raise

    def _apply_update(
        self, view: EventView, body: dict[str, Any], now: datetime
    ) -> EventView:
        ev = view.event
        if view.original_start is not None:
            return self._update_instance(view, body, now)
        times_changed = any(
            k in body for k in ("start", "end", "isAllDay", "recurrence")
        )
        for name in PASS_THROUGH:
            if name in body:
                ev.props[name] = normalize_pass_through(name, body[name])
        _sync_locations(ev.props, body)
        if "isAllDay" in body:
            if not isinstance(body["isAllDay"], bool):
                raise invalid_request(
                    "Your request can't be completed. isAllDay must be a boolean."
                )
            ev.is_all_day = body["isAllDay"]
        if times_changed:
            _apply_times(ev, body)
        if "recurrence" in body:
            if body["recurrence"] is None:
                ev.recurrence = None
            else:
                _apply_recurrence(ev, body["recurrence"])
        elif times_changed and ev.recurrence is not None:
            ev.recurrence["range"]["startDate"] = (
                ev.start.astimezone(recurrence_zone(ev.recurrence)).date().isoformat()
            )
            _apply_recurrence(ev, ev.recurrence)
        if times_changed and ev.recurrence is not None:
            ev.exceptions.clear()
            ev.cancelled.clear()
        if "singleValueExtendedProperties" in body:
            ev.extended = _merge_extended(
                ev.extended, body["singleValueExtendedProperties"]
            )
        ev.change_key = _ids.change_key()
        ev.last_modified = now
        self._journal(ev.id, "updated", now)
        return EventView(ev, "seriesMaster" if ev.recurrence else "singleInstance")

    def _update_instance(
        self, view: EventView, body: dict[str, Any], now: datetime
    ) -> EventView:
        master = view.event
        assert view.original_start is not None  # noqa: S101 - caller checks
        if "recurrence" in body and body["recurrence"] is not None:
            raise invalid_request(
                "Your request can't be completed. An occurrence cannot have a recurrence."
            )
        key = format_utc(view.original_start)
        exception = master.exceptions.get(key)
        if exception is None:
            exception = ExceptionData(
                original_start=view.original_start,
                id=view.id,
                change_key="",
                created=now,
                last_modified=now,
                start=view.start,
                end=view.end,
                start_zone=master.start_zone,
                end_zone=master.end_zone,
            )
        for name in PASS_THROUGH:
            if name in body:
                exception.props[name] = normalize_pass_through(name, body[name])
        if "start" in body or "end" in body:
            start = (
                parse_date_time_zone(body["start"], "start")
                if "start" in body
                else None
            )
            end = parse_date_time_zone(body["end"], "end") if "end" in body else None
            new_start = start.instant if start else exception.start
            new_end = end.instant if end else exception.end
            if new_end < new_start:
                raise invalid_request(
                    "Your request can't be completed. The end time is before the start time."
                )
            exception.start, exception.end = new_start, new_end
            if start:
                exception.start_zone = start.zone_name
            if end:
                exception.end_zone = end.zone_name
        exception.change_key = _ids.change_key()
        exception.last_modified = now
        master.exceptions[key] = exception
        self._journal(master.id, "updated", now, instance_id=exception.id)
        return EventView(master, "exception", view.original_start, exception)

    def delete(
        self, item_id: str, *, if_match: str | None, now: datetime
    ) -> tuple[str, ChangeType]:
        """DELETE an event, a whole series, or one occurrence.

        Returns:
            (id of the notified item, change type): a deleted occurrence notifies
            ``updated`` on its master (microsoft-graph-docs #5951).

        Raises:
            GraphError: 404, 412 (If-Match).
        """
        view = self.view(item_id)
        self.check_if_match(if_match, view.change_key)
        ev = view.event
        if view.original_start is None:
            del self.data.events[ev.id]
            self._journal(ev.id, "deleted", now)
            return ev.id, "deleted"
        key = format_utc(view.original_start)
        ev.exceptions.pop(key, None)
        if key not in ev.cancelled:
            ev.cancelled.append(key)
        ev.change_key = _ids.change_key()
        ev.last_modified = now
        self._journal(ev.id, "updated", now, instance_id=view.id)
        return ev.id, "updated"

    def touch(self, item_id: str, now: datetime) -> EventView:
        """Out-of-band edit: a new change key without other changes (Exchange does this on its own)."""
        view = self.view(item_id)
        if view.exception is not None:
            view.exception.change_key = _ids.change_key()
            view.exception.last_modified = now
        else:
            view.event.change_key = _ids.change_key()
            view.event.last_modified = now
        self._journal(view.event.id, "updated", now)
        return view


#: "no limit" for an expansion that is consumed lazily
_UNLIMITED = 10**9


class _Expansion:
    """Occurrence starts of one series, generated on demand and remembered."""

    def __init__(self, starts: Iterator[datetime]) -> None:
        self._starts = starts
        self._seen: set[datetime] = set()
        self._last: datetime | None = None
        self._done = False

    def contains(self, original: datetime) -> bool:
        """True when the series generates a start at ``original``."""
        while not self._done and (self._last is None or self._last < original):
            nxt = next(self._starts, None)
            if nxt is None:
                self._done = True
                break
            self._seen.add(nxt)
            self._last = nxt
        return original in self._seen


def _overlaps(
    start: datetime, end: datetime, window_start: datetime, window_end: datetime
) -> bool:
    if end <= start:
        return window_start <= start < window_end
    return start < window_end and end > window_start


def _sync_locations(props: dict[str, Any], body: dict[str, Any]) -> None:
    # "updating location replaces locations" and the two always correspond
    if "location" in body and "locations" not in body:
        loc = props["location"]
        props["locations"] = [copy.deepcopy(loc)] if loc.get("displayName") else []
    elif "locations" in body and "location" not in body:
        locs = props["locations"]
        props["location"] = copy.deepcopy(locs[0]) if locs else normalize_location(None)


def _apply_times(ev: StoredEvent, body: dict[str, Any]) -> None:
    start = parse_date_time_zone(body["start"], "start") if "start" in body else None
    end = parse_date_time_zone(body["end"], "end") if "end" in body else None
    if start is None:
        start = _current(ev.start, ev.start_zone)
    if end is None:
        end = _current(ev.end, ev.end_zone)
    if ev.is_all_day:
        # "start and end time must be set to midnight and be in the same time zone"
        if (
            not (is_midnight(start.wall) and is_midnight(end.wall))
            or start.zone_name.casefold() != end.zone_name.casefold()
        ):
            raise invalid_request(
                "Your request can't be completed. An all-day event must start and end at "
                "midnight in the same time zone."
            )
        if end.wall <= start.wall:
            raise invalid_request(
                "Your request can't be completed. An all-day event must last at least one day."
            )
    if end.instant < start.instant:
        raise invalid_request(
            "Your request can't be completed. The end time is before the start time."
        )
    ev.start, ev.end = start.instant, end.instant
    ev.start_zone, ev.end_zone = start.zone_name, end.zone_name


def _current(instant: datetime, zone_name: str) -> LocalTime:
    zone = resolve_zone(zone_name)
    return LocalTime(
        instant.astimezone(zone).replace(tzinfo=None), zone_name, zone, date_only=False
    )


def _apply_recurrence(ev: StoredEvent, raw: object) -> None:
    start_zone = resolve_zone(ev.start_zone)
    recurrence = normalize_recurrence(
        raw,
        default_zone=ev.start_zone,
        start_date=ev.start.astimezone(start_zone).date(),
    )
    ev.recurrence = recurrence
    if recurrence is None:
        return
    # The master's start/end are those of the first occurrence.
    zone = recurrence_zone(recurrence)
    start_time = ev.start.astimezone(zone).time().replace(tzinfo=None)
    duration = ev.end - ev.start
    first = next(expand(recurrence, start_time=start_time, limit=1), None)
    if first is None:
        raise invalid_request(
            "Your request can't be completed. The recurrence has no occurrences."
        )
    # EWS ResponseCode ErrorOccurrenceTimeSpanTooBig: "the time allotment for
    # a given occurrence overlaps with another occurrence of the same
    # recurring item" (Graph surfaces the same code). Checked over the first
    # OVERLAP_CHECK occurrences, which covers every gap a pattern repeats.
    previous: datetime | None = None
    for start in expand(recurrence, start_time=start_time, limit=OVERLAP_CHECK):
        if previous is not None and start - previous < duration:
            raise GraphError(
                400,
                "ErrorOccurrenceTimeSpanTooBig",
                "Your request can't be completed. The duration of an occurrence "
                "overlaps the next occurrence of the recurring item.",
            )
        previous = start
    ev.start, ev.end = first, first + duration


#: occurrences compared for ErrorOccurrenceTimeSpanTooBig (a year of weekly
#: multi-day patterns, several years of monthly ones)
OVERLAP_CHECK = 60


def _merge_extended(current: list[dict[str, str]], raw: object) -> list[dict[str, str]]:
    """Set/replace singleValueExtendedProperties by id (the ``Name`` part is case-sensitive)."""
    if not isinstance(raw, list):
        raise GraphError(
            400,
            "RequestBodyRead",
            "Property 'singleValueExtendedProperties' must be a collection.",
        )
    merged = {p["id"]: p for p in current}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise GraphError(
                400, "RequestBodyRead", "An extended property needs an id."
            )
        prop_id = " ".join(str(item["id"]).split())
        if not _EXTENDED_ID.match(prop_id):
            raise GraphError(
                400,
                "ErrorInvalidProperty",
                f"The extended property id '{item['id']}' is not valid.",
            )
        value = item.get("value")
        if value is None:
            merged.pop(prop_id, None)
            continue
        merged[prop_id] = {"id": prop_id, "value": str(value)}
    return list(merged.values())
