"""Calendar events as the two-way sync sees them, and the port every side implements.

:class:`CalendarEvent` holds the **synced fields only** (title, description,
location, time span with its IANA zone, all-day, attendees, status, recurrence and
recurrence exceptions) plus its identity ``ical_uid``. Everything a side adds on
its own (etags, ``updated``/``lastModifiedDateTime``, ``DTSTAMP``, organizer
bookkeeping, reminders, colours) stays out, so :meth:`CalendarEvent.content_hash`
changes exactly when a synced field changes. This is the counterpart of
vdirsyncer's ignored properties (``vobject.hash_item``: volatile lines removed,
the rest sorted; see docs/sync.md).

:class:`CalendarProvider` is the port. Both sides of a sync pair implement it: the
provider adapters (Google, Microsoft Graph, CalDAV, and ``providers.memory``) and
the CRM appointments side (over the store). Its contract is centred on change
detection, after vdirsyncer's ``Storage``: list ``(remote_id, version)`` pairs,
fetch in bulk, conditional update/delete. Every method states what it returns,
what it raises (the ``ProviderError`` tree of ``crmflow.providers.base``; this
module names them but cannot import them, the domain layer sits below
providers), whether it is idempotent, and its version semantics.

Standard library only, no I/O.
"""

from __future__ import annotations

import abc
import datetime as dt
import enum
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crmflow.domain.appointments import (
    AppointmentStatus,
    ResponseStatus,
    TimeSpan,
    zone,
)
from crmflow.domain.crm import Attendee
from crmflow.errors import ValidationFailed

__all__ = [
    "Attendee",
    "CalendarEvent",
    "CalendarProvider",
    "Capability",
    "Changes",
    "EventStatus",
    "Listing",
    "Notify",
    "RecurrenceException",
    "RemoteEvent",
    "ResponseStatus",
    "Written",
]

#: an event's status; the same values as an appointment's (iCalendar STATUS), so
#: the CRM side maps it one to one
EventStatus = AppointmentStatus

# RFC 5545 section 3.8.5: the recurrence properties of a VEVENT. EXRULE is
# deprecated (RFC 5545 appendix A.3) but still sent by some servers.
_RECURRENCE_LINE = re.compile(r"^(RRULE|EXRULE|RDATE|EXDATE)[:;]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RecurrenceException:
    """One occurrence of a series that differs from what the rule gives.

    Keyed by ``original_start``, the start the rule gives the occurrence
    (RFC 5545 RECURRENCE-ID, Google ``originalStartTime``, Graph
    ``originalStart``). An override field left ``None`` is taken from the series;
    a cancelled occurrence is ``status=CANCELLED`` with nothing else set.
    """

    #: the occurrence's start according to the rule: a ``date`` for all-day
    #: series, an aware instant otherwise
    original_start: dt.date | dt.datetime
    status: EventStatus = EventStatus.CONFIRMED
    title: str | None = None
    span: TimeSpan | None = None
    description: str | None = None
    location: str | None = None
    attendees: tuple[Attendee, ...] | None = None

    def __post_init__(self) -> None:
        start = self.original_start
        if isinstance(start, dt.datetime) and start.tzinfo is None:
            raise ValidationFailed(
                "A recurrence exception's original start must be an aware time."
            )
        if self.span is not None:
            _check_span(self.span)

    @property
    def key(self) -> str:
        """``original_start`` as text: the date, or the UTC instant in ISO 8601."""
        return _start_key(self.original_start)

    def repeats(self, series: CalendarEvent) -> bool:
        """Whether this override changes nothing of the occurrence ``series``
        gives: every field it sets equals the series' (as the content hash
        compares them), and it is not cancelled unless the series is."""
        return _canonical_exception(self, _canonical_master(series)) == {
            "start": self.key
        }


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    """An event's synced fields, as every side of a sync pair exchanges them.

    ``ical_uid`` is the event's identity across sides (the sync *ident*): Google
    ``iCalUID``, CalDAV ``UID``, the CRM appointment's stored UID; Graph adapters
    keep it in an extended property because Graph's ``iCalUId`` is read-only.
    It is not a synced field: it never enters :meth:`content_hash`.

    Raises:
        ValidationFailed: empty ``ical_uid``, a naive or empty time span, an
            unknown time zone, a line in ``recurrence`` that is not an RRULE,
            EXRULE, RDATE or EXDATE, exceptions without a recurrence, or two
            exceptions for the same original start.
    """

    ical_uid: str
    title: str
    #: aware UTC instants plus the IANA zone; all-day events use midnight of the
    #: first day and of the exclusive end day in that zone (``TimeSpan``)
    span: TimeSpan
    description: str | None = None
    location: str | None = None
    attendees: tuple[Attendee, ...] = ()
    status: EventStatus = EventStatus.CONFIRMED
    #: RFC 5545 recurrence lines, e.g. ``RRULE:FREQ=WEEKLY;BYDAY=MO``,
    #: ``EXDATE;TZID=Europe/Berlin:20260105T090000``; empty for a single event
    recurrence: tuple[str, ...] = ()
    #: overridden or cancelled occurrences, one per original start
    exceptions: tuple[RecurrenceException, ...] = ()

    def __post_init__(self) -> None:
        if not self.ical_uid:
            raise ValidationFailed("A calendar event needs an ical_uid.")
        _check_span(self.span)
        for line in self.recurrence:
            if "\n" in line or "\r" in line or not _RECURRENCE_LINE.match(line):
                raise ValidationFailed(
                    f"{line!r} is not an RRULE, EXRULE, RDATE or EXDATE line."
                )
        if self.exceptions and not self.recurrence:
            raise ValidationFailed("Only a recurring event can have exceptions.")
        keys = [exception.key for exception in self.exceptions]
        if len(set(keys)) != len(keys):
            raise ValidationFailed(
                "Two recurrence exceptions have the same original start."
            )

    def exception_at(
        self, original_start: dt.date | dt.datetime
    ) -> RecurrenceException | None:
        """The exception for the occurrence the rule starts at ``original_start``."""
        key = _start_key(original_start)
        return next((e for e in self.exceptions if e.key == key), None)

    def content_hash(self) -> str:
        """SHA-256 (hex) over the normalized synced fields.

        Equal for two events that differ only in what sides rewrite on their own:
        attendee order, e-mail letter case, surrounding or trailing whitespace,
        line endings, ``None`` versus empty text, the order of RRULE parts and of
        EXDATE/RDATE values, and exception fields that repeat the series. The
        ``ical_uid`` is left out (it is the identity, not content). All-day
        events hash their dates, not the zone, because providers keep no zone for
        them (Google ``start.date``).
        """
        document = json.dumps(
            _canonical_event(self),
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(document.encode()).hexdigest()


def _check_span(span: TimeSpan) -> None:
    if span.start_at.tzinfo is None or span.end_at.tzinfo is None:
        raise ValidationFailed("Event times must be aware instants (UTC).")
    if span.end_at <= span.start_at:
        raise ValidationFailed("The end must be after the start.")
    zone(span.timezone)  # raises ValidationFailed for a name that is not IANA


def _start_key(start: dt.date | dt.datetime) -> str:
    # datetime is a subclass of date: test it first
    if isinstance(start, dt.datetime):
        return start.astimezone(dt.UTC).isoformat()
    return start.isoformat()


# ------------------------------------------------------------------ normalization


def _text(value: str | None) -> str:
    """Multi-line text: unified line endings, no trailing blanks, stripped."""
    if value is None:
        return ""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def _line(value: str | None) -> str:
    """One-line text: runs of whitespace become one space, stripped."""
    return " ".join((value or "").split())


def _span(span: TimeSpan) -> dict[str, object]:
    if span.all_day:
        return {
            "all_day": True,
            "start": span.start_date.isoformat(),
            "end": span.end_date.isoformat(),
        }
    return {
        "all_day": False,
        "start": span.start_at.astimezone(dt.UTC).isoformat(),
        "end": span.end_at.astimezone(dt.UTC).isoformat(),
        "tz": span.timezone,
    }


def _attendees(attendees: tuple[Attendee, ...]) -> list[list[str]]:
    return sorted(
        [a.email.strip().lower(), _line(a.name), str(a.response_status)]
        for a in attendees
    )


def _recurrence_line(line: str) -> str:
    # RFC 5545 3.3.10: RRULE parts are unordered and case-insensitive; RDATE and
    # EXDATE values (3.8.5.1/2) form a set. Upper-casing also touches a TZID
    # parameter, harmlessly: this text is only hashed, never sent.
    name, _, value = line.strip().upper().partition(":")
    separator = ";" if name in ("RRULE", "EXRULE") else ","
    return name + ":" + separator.join(sorted(value.split(separator)))


def _canonical_exception(
    exception: RecurrenceException, master: dict[str, object]
) -> dict[str, object]:
    override: dict[str, object] = {"status": str(exception.status)}
    if exception.title is not None:
        override["title"] = _line(exception.title)
    if exception.span is not None:
        override["span"] = _span(exception.span)
    if exception.description is not None:
        override["description"] = _text(exception.description)
    if exception.location is not None:
        override["location"] = _line(exception.location)
    if exception.attendees is not None:
        override["attendees"] = _attendees(exception.attendees)
    # a field that repeats the series is the same as a field taken from it
    return {
        "start": exception.key,
        **{k: v for k, v in override.items() if master.get(k) != v},
    }


def _canonical_master(event: CalendarEvent) -> dict[str, object]:
    return {
        "title": _line(event.title),
        "description": _text(event.description),
        "location": _line(event.location),
        "span": _span(event.span),
        "attendees": _attendees(event.attendees),
        "status": str(event.status),
        "recurrence": sorted(_recurrence_line(line) for line in event.recurrence),
    }


def _canonical_event(event: CalendarEvent) -> dict[str, object]:
    master = _canonical_master(event)
    exceptions = sorted(
        (_canonical_exception(e, master) for e in event.exceptions),
        key=lambda e: str(e["start"]),
    )
    return {**master, "exceptions": exceptions}


# ------------------------------------------------------------------ port values


class Capability(enum.StrEnum):
    """What a side can do; the engine asks ``Capability.X in side.capabilities``."""

    #: writes are refused (``UnsupportedOperation``): a subscribed or shared
    #: calendar without write access, an import-only CRM side
    READ_ONLY = "read_only"
    #: :meth:`CalendarProvider.list_changes` works (Google ``syncToken``, Graph
    #: delta link, CalDAV ``sync-collection``, CRM row versions)
    INCREMENTAL = "incremental"
    #: ``create``/``update`` always return the new version (a CalDAV server
    #: without an ETag on PUT does not: RFC 4791 section 5.3.4)
    RETURNS_VERSION_ON_WRITE = "returns_version_on_write"
    #: an event whose status is cancelled stays an event of the side (CalDAV
    #: ``STATUS:CANCELLED``). Without it a cancelled event is a deleted one
    #: (Google) or cannot be written (Graph's ``isCancelled``), so the service
    #: syncs an appointment cancelled in the CRM as a deletion of its event
    CANCELLED_EVENTS = "cancelled_events"


class Notify(enum.StrEnum):
    """Whether a write may send mail to attendees (Google ``sendUpdates``)."""

    #: no invitations, updates or cancellations are sent: every sync write
    #: (sync-peers.md §8 case 26; Google ``sendUpdates=none``)
    NONE = "none"
    #: the provider mails attendees as if a person had made the change
    ALL = "all"


@dataclass(frozen=True, slots=True)
class Listing:
    """Everything a side holds now, and where its change feed continues."""

    #: remote id -> version (ETag, Graph ``changeKey``, CRM row version)
    items: Mapping[str, str]
    #: the cursor to pass to the next ``list_changes`` (None: not incremental)
    cursor: str | None = None
    #: how many items the side still holds but leaves out of ``items`` on
    #: purpose, to have their counterparts deleted (the CRM's appointments
    #: cancelled since the last sync, for calendars that keep no cancelled
    #: events): an empty listing whose withheld items are as many as were
    #: synced is not one that suddenly lists nothing
    withheld: int = 0


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed on a side since a cursor.

    An id appears in at most one of ``changed`` and ``deleted``: its state at the
    end of the page. A ``deleted`` id the caller never saw is harmless.
    """

    #: created or modified items: remote id -> current version
    changed: Mapping[str, str]
    #: items that no longer exist
    deleted: frozenset[str]
    #: the cursor to pass next time
    cursor: str


@dataclass(frozen=True, slots=True)
class RemoteEvent:
    """One item as fetched from a side."""

    remote_id: str
    #: the version that belongs to this content (use it as ``if_match``)
    version: str
    event: CalendarEvent
    #: when the side last changed the item (Google ``updated``, Graph
    #: ``lastModifiedDateTime``, CRM ``updated_at``); only the ``latest_wins``
    #: conflict policy reads it, nothing is synced from it
    updated_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a create."""

    remote_id: str
    #: the new version; None when the side does not say (then the engine reads it
    #: back on the next sync: sync-peers.md §8 case 15)
    version: str | None
    #: an item with the same idempotency key existed already; it is returned as
    #: it is, which may differ from the event passed in
    adopted: bool = False


# ------------------------------------------------------------------ the port


class CalendarProvider(abc.ABC):
    """One calendar of one account, as a side of a two-way sync pair.

    Implemented by every calendar adapter and by the CRM appointments side.

    Remote ids are opaque strings (Google event id, Graph event id, CalDAV href,
    CRM appointment id): any characters, compared exactly (letter case counts).
    Versions are opaque strings that change whenever the item changes and may
    change without a content change (the engine compares content hashes too).

    All writes are **sync writes**: they never mail attendees unless ``notify``
    says so, and the engine always says :attr:`Notify.NONE`. Adapters translate
    every library and HTTP error into the ``crmflow.providers.base`` tree:
    ``AuthError``, ``RateLimited``, ``TransientProviderError``,
    ``CursorExpired``, ``PreconditionFailed`` (``ItemNotFound``,
    ``ItemAlreadyExists``), ``UnsupportedOperation``. Any method may raise
    ``AuthError``, ``RateLimited`` or ``TransientProviderError``; they are not
    repeated below.
    """

    @property
    @abc.abstractmethod
    def capabilities(self) -> frozenset[Capability]:
        """What this side can do; constant for the object's lifetime."""

    @property
    def get_many_limit(self) -> int | None:
        """The most ids one :meth:`get_many` call accepts (None: any number).

        Graph ``$batch`` takes 20 requests, a CalDAV ``calendar-multiget`` as
        many hrefs as the server allows. Callers split larger requests.
        """
        return None

    @abc.abstractmethod
    async def list(self) -> Listing:
        """Every item of the calendar with its current version.

        Recurring series are one item (the master, exceptions inside it), not
        one per occurrence. Read-only; safe to repeat.

        Returns:
            The listing and, when the side is ``INCREMENTAL``, the cursor at which
            its change feed continues (taken atomically with the listing: Google's
            ``nextSyncToken`` after the last page).
        """

    @abc.abstractmethod
    async def list_changes(self, cursor: str) -> Changes:
        """What changed since ``cursor`` (from :meth:`list` or an earlier call).

        Safe to repeat with the same cursor: it reports the same or newer state.

        Raises:
            CursorExpired: the side forgot the cursor (Google 410
                ``fullSyncRequired``, Graph 410 ``SyncStateNotFound`` /
                ``resyncRequired``, CalDAV invalid sync-token). Call
                :meth:`list` instead.
            UnsupportedOperation: the side lacks ``INCREMENTAL``.
        """

    @abc.abstractmethod
    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        """Fetch several items with as few requests as the side allows.

        At most :attr:`get_many_limit` ids. Read-only, but a side may hand out a
        new version on a read (some CalDAV servers do): the returned version is
        the one that belongs to the returned content.

        Returns:
            The items that exist, in any order. Ids that do not exist (deleted
            since they were listed) are left out; that is not an error.
        """

    async def expect_creates(self, events: Sequence[CalendarEvent]) -> None:
        """A hint before the writes: :meth:`create` will be called for (some
        of) these events, in this run. A side that must look each new event
        up before creating it (the CRM side matches a shared meeting by UID)
        may do it for all of them at once here; the default does nothing.
        Nothing may be written, and the calls that follow must behave the
        same with or without the hint."""
        return None

    async def expect_changes(self, remote_ids: Sequence[str]) -> None:
        """A hint before the writes: :meth:`update` or :meth:`delete` will be
        called for (some of) these items, in this run. A side that reads each
        item before changing it (the CRM side checks the version and the
        owner) may read them all at once here; the default does nothing. The
        same rules as for :meth:`expect_creates` hold."""
        return None

    @abc.abstractmethod
    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        """Create ``event``; reading it back gives the same ``ical_uid`` and content hash.

        Idempotent per ``idempotency_key`` (at most 64 characters of
        ``[0-9a-f]``, stable across retries): when an item created with that key
        exists (the response of an earlier call was lost, or the worker died
        before recording it), no second item is made. The adapter returns the
        existing item with ``adopted=True`` (Google: an event id derived from the
        key, 409 -> read it; Graph: ``transactionId`` plus an extended property
        holding the key, looked up first; CalDAV: a resource name derived from the
        key with ``If-None-Match: *``, 412 -> read it), or raises
        ``ItemAlreadyExists`` when it cannot read it back (the engine then looks
        for it by ``ical_uid``).

        Returns:
            The new item's id and version (None unless the side has
            ``RETURNS_VERSION_ON_WRITE``).

        Raises:
            ItemAlreadyExists: see above; also when the side holds an item with
                the same ``ical_uid`` and keeps UIDs unique (CalDAV
                ``no-uid-conflict``, RFC 4791 section 5.3.2.1; the CRM side).
            UnsupportedOperation: the side is ``READ_ONLY``.
        """

    @abc.abstractmethod
    async def update(
        self, remote_id: str, event: CalendarEvent, *, if_match: str, notify: Notify
    ) -> str | None:
        """Replace the item's synced fields with ``event`` if it is still at ``if_match``.

        Never writes unconditionally: the precondition is the item's version
        (HTTP ``If-Match``, Graph ``changeKey`` check, CRM row version).
        Idempotent in effect: the same update twice leaves the same content (the
        second call fails its precondition when the first one succeeded).

        Returns:
            The new version, or None when the side does not say.

        Raises:
            PreconditionFailed: the item is no longer at ``if_match`` (412,
                Google ``conditionNotMet``, Graph ``ErrorIrresolvableConflict``).
            ItemNotFound: the item does not exist (any more).
            UnsupportedOperation: the side is ``READ_ONLY``.
        """

    @abc.abstractmethod
    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        """Delete the item if it is still at ``if_match``.

        Raises:
            PreconditionFailed: the item changed since ``if_match``; it is kept.
            ItemNotFound: the item is already gone (Google 404/410); callers that
                only want it gone treat this as success, as the engine does.
            UnsupportedOperation: the side is ``READ_ONLY``.
        """
