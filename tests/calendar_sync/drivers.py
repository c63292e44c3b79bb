"""Provider drivers for the conformance tests of the calendar sync service.

A driver connects a CRM user's calendar account the way a person does (OAuth
against the sandbox, CalDAV discovery against Radicale) and then acts *as the
person in the provider's own app*: it creates, edits and deletes events, edits
or cancels one occurrence of a series, shifts or trims a series, and reads
back what the provider holds. Nothing here goes through crmflow's adapters:

* Google: the sandbox's control API writes (as in Google's own apps); reads go
  through the Calendar API with a token of their own (``singleEvents=true``
  for the provider's own expansion of series);
* Microsoft: the sandbox's out-of-band edits (as in Outlook); reads through
  Graph (``/me/events``, ``/instances``, ``/me/calendarView``) with a token of
  their own;
* CalDAV: plain WebDAV requests to Radicale with iCalendar written and read
  by the ``icalendar`` library; series are expanded here with ``dateutil``.

Every driver also tells which writes *crmflow* made since a mark (the sandbox
request log; a snapshot of the Radicale collection's ETags), so tests can
prove that a sync wrote nothing.

:func:`event_occurrences` expands an appointment (read as the sync reads
it) the same way :func:`ical_occurrences` expands a CalDAV resource, so both
sides of a pair can be compared occurrence by occurrence.
"""

from __future__ import annotations

import abc
import datetime as dt
import ssl
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
from dateutil.rrule import rrulestr
from defusedxml.ElementTree import fromstring
from icalendar import Calendar, Event, vRecur

from crmflow.bootstrap import Services
from crmflow.connections.credentials import connect_caldav
from crmflow.domain.calendar import CalendarEvent, EventStatus
from crmflow.domain.calendar_accounts import CalendarAccountInfo
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.providers.microsoft._calendar_mapping import UID_PROPERTY
from crmflow.sandbox.microsoft.store import MicrosoftStore
from crmflow.services.calendar_sync import CalendarSync
from tests.connections.conftest import Flow
from tests.servers.radicale import RadicaleServer
from tests.servers.sandbox import Sandbox

GOOGLE_SCOPE = "https://www.googleapis.com/auth/calendar"
GRAPH_SCOPES = ["openid", "offline_access", "User.Read", "Calendars.ReadWrite"]
#: the TLS settings of the drivers' requests, made once: httpx otherwise
#: builds them for every client (30 ms of CPU), and a driver opens a client
#: per request
_TLS = ssl.create_default_context()
#: Radicale accounts by slot (the seeded server has these two users)
DAV_USERS = ("alice", "bob")
_DAV = "{DAV:}"
_MKCALENDAR = """<?xml version="1.0" encoding="utf-8"?>
<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:set><d:prop>
    <d:displayname>{name}</d:displayname>
    <c:supported-calendar-component-set><c:comp name="VEVENT"/></c:supported-calendar-component-set>
  </d:prop></d:set>
</c:mkcalendar>"""
_PROPFIND = b"""<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"""


# ------------------------------------------------------------------ values


@dataclass(frozen=True, order=True)
class Occurrence:
    """One occurrence as a calendar shows it: start and end (an ISO date for
    all-day events, else the UTC instant in ISO 8601) and title."""

    start: str
    end: str
    title: str


@dataclass(frozen=True)
class Spec:
    """An event as a person types it into the provider's app.

    ``start``/``end`` are wall-clock times in ``zone`` (naive), or dates for an
    all-day event (exclusive end). ``zone`` is given to the provider verbatim
    (a Windows name for Outlook, say). ``rule`` is an RRULE value without the
    ``RRULE:`` prefix.
    """

    title: str
    start: dt.datetime | dt.date
    end: dt.datetime | dt.date
    zone: str = "Europe/Berlin"
    rule: str | None = None
    attendees: tuple[str, ...] = ()

    @property
    def all_day(self) -> bool:
        return not isinstance(self.start, dt.datetime)


@dataclass(frozen=True)
class Held:
    """An event's time span as the provider stores it."""

    all_day: bool
    #: dates (all-day) or aware UTC instants
    start: dt.date | dt.datetime
    end: dt.date | dt.datetime
    #: the zone name the provider reports (None: it keeps none)
    zone: str | None
    title: str


@dataclass
class Mailbox:
    """A CRM user's connected provider calendar."""

    ctx: TenantContext
    #: the provider account: an e-mail address, or the Radicale user
    login: str
    account: CalendarAccountInfo
    #: the provider's calendar id (Google, Graph) or collection URL (CalDAV)
    calendar: str
    token: str = ""


@dataclass(frozen=True)
class Window:
    """A stretch of time ``[start, end)`` in which series are compared."""

    start: dt.datetime
    end: dt.datetime


def utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def _wall_text(value: dt.datetime) -> str:
    return value.replace(tzinfo=None).isoformat(timespec="seconds")


# ------------------------------------------------------------------ expansion


@dataclass
class _Override:
    start: dt.date | dt.datetime
    end: dt.date | dt.datetime
    title: str
    cancelled: bool


def _key(value: dt.date | dt.datetime) -> str:
    if isinstance(value, dt.datetime):
        return utc(value)
    return value.isoformat()


def _occurrence(
    start: dt.date | dt.datetime, end: dt.date | dt.datetime, title: str
) -> Occurrence:
    return Occurrence(_key(start), _key(end), title)


def _in_window(start: dt.date | dt.datetime, window: Window) -> bool:
    if isinstance(start, dt.datetime):
        return window.start <= start < window.end
    return window.start.date() <= start < window.end.date()


def expand(
    *,
    title: str,
    start: dt.date | dt.datetime,
    end: dt.date | dt.datetime,
    zone: str | dt.tzinfo,
    rules: Sequence[str],
    exdates: Iterable[dt.date | dt.datetime],
    rdates: Iterable[dt.date | dt.datetime],
    overrides: Mapping[str, _Override],
    window: Window,
) -> list[Occurrence]:
    """The occurrences of a series (or a single event) starting in ``window``,
    each rule occurrence once.

    Timed series are expanded on the wall clock of ``zone`` (a 09:00 meeting
    stays at 09:00 across a daylight-saving change); ``exdates`` and the keys of
    ``overrides`` are dates (all-day) or instants. A date EXDATE of a timed
    series removes the occurrence on that local date.
    """
    length = end - start  # type: ignore[operator]
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    starts: list[dt.date | dt.datetime] = []
    if not rules:
        starts.append(start)
    for rule in rules:
        if isinstance(start, dt.datetime):
            first = start.astimezone(tz)
            text = rule
            if "UNTIL=" in rule and not _until_is_utc(rule):
                text = _until_as_utc(rule, tz)
            starts.extend(rrulestr(text, dtstart=first))
        else:
            naive = dt.datetime.combine(start, dt.time())
            starts.extend(d.date() for d in rrulestr(rule, dtstart=naive))
    starts.extend(rdates)
    gone = set()
    for value in exdates:
        if isinstance(start, dt.datetime) and not isinstance(value, dt.datetime):
            local = start.astimezone(tz).timetz().replace(tzinfo=None)
            value = dt.datetime.combine(value, local, tz)
        gone.add(_key(value))
    out: dict[str, Occurrence] = {}
    for begin in starts:
        key = _key(begin)
        if key in gone or key in out:
            continue
        override = overrides.get(key)
        if override is None:
            if _in_window(begin, window):
                out[key] = _occurrence(begin, begin + length, title)
        elif not override.cancelled and _in_window(override.start, window):
            out[key] = _occurrence(override.start, override.end, override.title)
    # an override whose original start the rule no longer gives (the series
    # was moved since) still shows at its own time, as Google and
    # recurring-ical-events show it; a cancellation of it hides nothing
    seen = {_key(begin) for begin in starts}
    for key, override in overrides.items():
        if key not in seen and not override.cancelled:
            if not _in_window(override.start, window):
                continue
            out[key] = _occurrence(override.start, override.end, override.title)
    return sorted(out.values())


def _until_is_utc(rule: str) -> bool:
    until = next(p for p in rule.split(";") if p.upper().startswith("UNTIL="))
    return until.upper().endswith("Z") or "T" not in until.upper()


def _until_as_utc(rule: str, tz: dt.tzinfo) -> str:
    parts = []
    for part in rule.split(";"):
        if part.upper().startswith("UNTIL="):
            local = dt.datetime.strptime(part[6:], "%Y%m%dT%H%M%S").replace(tzinfo=tz)
            part = "UNTIL=" + local.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        parts.append(part)
    return ";".join(parts)


def _rule_value(line: str) -> str:
    return line.partition(":")[2]


def _exdate_values(line: str, zone: str) -> list[dt.date | dt.datetime]:
    head, _, values = line.partition(":")
    params = dict(p.split("=", 1) for p in head.split(";")[1:] if "=" in p)
    where: dt.tzinfo = ZoneInfo(params.get("TZID", zone))
    out: list[dt.date | dt.datetime] = []
    for value in values.split(","):
        text = value.strip().upper()
        if len(text) == 8:
            out.append(dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])))
            continue
        tz = dt.UTC if text.endswith("Z") else where
        out.append(
            dt.datetime.strptime(text.rstrip("Z"), "%Y%m%dT%H%M%S").replace(tzinfo=tz)
        )
    return out


def event_occurrences(event: CalendarEvent, window: Window) -> list[Occurrence]:
    """The occurrences of a ``CalendarEvent`` (an appointment row read as the sync
    reads it) starting in ``window``. A cancelled event has none."""
    if event.status is EventStatus.CANCELLED:
        return []
    span = event.span
    if span.all_day:
        start: dt.date | dt.datetime = span.start_date
        end: dt.date | dt.datetime = span.end_date
    else:
        start, end = span.start_at, span.end_at
    rules, exdates, rdates = [], [], []
    for line in event.recurrence:
        name = line.split(":", 1)[0].split(";", 1)[0].upper()
        if name == "RRULE":
            rules.append(_rule_value(line))
        elif name == "EXDATE":
            exdates.extend(_exdate_values(line, span.timezone))
        elif name == "RDATE":
            rdates.extend(_exdate_values(line, span.timezone))
    overrides = {}
    for exception in event.exceptions:
        if exception.span is None:
            begin: dt.date | dt.datetime = exception.original_start
            finish = begin + (end - start)  # type: ignore[operator]
        elif exception.span.all_day:
            begin, finish = exception.span.start_date, exception.span.end_date
        else:
            begin, finish = exception.span.start_at, exception.span.end_at
        overrides[exception.key] = _Override(
            begin,
            finish,
            exception.title or event.title,
            exception.status is EventStatus.CANCELLED,
        )
    return expand(
        title=event.title,
        start=start,
        end=end,
        zone=span.timezone,
        rules=rules,
        exdates=exdates,
        rdates=rdates,
        overrides=overrides,
        window=window,
    )


def _ical_time(prop: Any) -> dt.date | dt.datetime:
    value = prop.dt
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value  # type: ignore[no-any-return]


def _ical_zone(prop: Any) -> dt.tzinfo:
    """The zone a series expands in: DTSTART's own (a VTIMEZONE's rules, too)."""
    value = prop.dt
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.tzinfo
    return dt.UTC


def ical_occurrences(data: bytes, window: Window) -> list[Occurrence]:
    """The occurrences of every series in an iCalendar object, starting in
    ``window`` (the master's RRULE/EXDATE/RDATE plus RECURRENCE-ID overrides)."""
    calendar = Calendar.from_ical(data)
    by_uid: dict[str, list[Event]] = {}
    for component in calendar.walk("VEVENT"):
        by_uid.setdefault(str(component["UID"]), []).append(component)
    out: list[Occurrence] = []
    for components in by_uid.values():
        master = next(c for c in components if c.get("RECURRENCE-ID") is None)
        if str(master.get("STATUS", "")).upper() == "CANCELLED":
            continue
        start = _ical_time(master["DTSTART"])
        end = _ical_time(master["DTEND"])
        rules = [
            r.to_ical().decode()
            for r in _as_list(master.get("RRULE"))  # type: ignore[union-attr]
        ]
        exdates = [
            _ical_time(d) for prop in _as_list(master.get("EXDATE")) for d in prop.dts
        ]
        rdates = [
            _ical_time(d) for prop in _as_list(master.get("RDATE")) for d in prop.dts
        ]
        overrides = {}
        for other in components:
            if other is master:
                continue
            original = _ical_time(other["RECURRENCE-ID"])
            overrides[_key(original)] = _Override(
                _ical_time(other["DTSTART"]),
                _ical_time(other["DTEND"]),
                str(other.get("SUMMARY", master.get("SUMMARY", ""))),
                str(other.get("STATUS", "")).upper() == "CANCELLED",
            )
        out.extend(
            expand(
                title=str(master.get("SUMMARY", "")),
                start=start,
                end=end,
                zone=_ical_zone(master["DTSTART"]),
                rules=rules,
                exdates=exdates,
                rdates=rdates,
                overrides=overrides,
                window=window,
            )
        )
    return sorted(out)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------ drivers


@dataclass
class Context:
    """What every driver may use: the running servers and crmflow's service."""

    flow: Flow
    sandbox: Sandbox
    calendar_sync: CalendarSync
    services: Services
    radicale: RadicaleServer | None = None


class Driver(abc.ABC):
    """One provider, driven as a person uses it (see the module doc)."""

    name: str
    #: e-mail addresses of the provider accounts by slot (first, second person)
    logins: tuple[str, str]

    def __init__(self, context: Context) -> None:
        self.c = context

    # -- accounts

    @abc.abstractmethod
    async def connect(
        self, ctx: TenantContext, slot: int, *, login: str | None = None
    ) -> Mailbox:
        """Connect the slot's provider account for ``ctx``'s user and sync its
        main calendar (two-way, manual conflicts).

        ``login``: a provider account of its own instead of the slot's (Google
        and Graph; CalDAV makes a new calendar for every connect anyway, in the
        slot's account)."""

    async def close(self) -> None:  # noqa: B027 - an optional hook
        """Remove what the driver made outside the per-test sandbox reset."""

    # -- writes as the person

    @abc.abstractmethod
    async def create(self, mb: Mailbox, spec: Spec, *, same_as: str = "") -> str:
        """Create an event; returns the UID the CRM will know it by.

        ``same_as``: the meeting is one the provider already holds elsewhere
        under that UID (another person's copy of the same meeting).
        """

    @abc.abstractmethod
    async def retitle(self, mb: Mailbox, uid: str, title: str) -> None:
        """Rename the event (the whole series)."""

    @abc.abstractmethod
    async def edit_occurrence(
        self,
        mb: Mailbox,
        uid: str,
        original: dt.datetime,
        *,
        title: str,
        shift: dt.timedelta = dt.timedelta(0),
    ) -> None:
        """Change one occurrence (the one the rule starts at ``original``)."""

    @abc.abstractmethod
    async def cancel_occurrence(
        self, mb: Mailbox, uid: str, original: dt.datetime
    ) -> None:
        """Delete one occurrence only."""

    @abc.abstractmethod
    async def set_rule(self, mb: Mailbox, uid: str, rule: str | None) -> None:
        """Give the event this RRULE (None: make it a single event)."""

    @abc.abstractmethod
    async def shift(self, mb: Mailbox, uid: str, delta: dt.timedelta) -> None:
        """Move the event (every occurrence of a series) by ``delta``."""

    # -- reads

    @abc.abstractmethod
    async def occurrences(self, mb: Mailbox, window: Window) -> list[Occurrence]:
        """Every occurrence in the calendar starting in ``window``, as the
        provider itself lists them."""

    @abc.abstractmethod
    async def uids(self, mb: Mailbox) -> list[str]:
        """The UID of every item (event or series) the calendar holds, with
        repeats if the provider holds one twice."""

    @abc.abstractmethod
    async def held(self, mb: Mailbox, uid: str) -> Held:
        """The event's span as the provider stores it."""

    @abc.abstractmethod
    async def mark(self) -> Any:
        """A mark for :meth:`writes_since`."""

    @abc.abstractmethod
    async def writes_since(self, mark: Any) -> list[str]:
        """Writes crmflow made to any calendar of this provider since ``mark``."""


# ------------------------------------------------------------------ Google


class GoogleDriver(Driver):
    name = "google"
    logins = ("alice@gmail.test", "amy@gmail.test")

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self._api = context.sandbox.google_url + "calendar/v3/calendars/"

    async def connect(
        self, ctx: TenantContext, slot: int, *, login: str | None = None
    ) -> Mailbox:
        email = login or self.logins[slot]
        await self.c.sandbox.add_user("google", email)
        connected = await self.c.flow.connect(
            ctx, ProviderKey.GOOGLE, IntegrationKind.CALENDAR, email
        )
        choices = await self.c.calendar_sync.calendars(ctx, connected.integration.id)
        primary = next(c for c in choices if c.primary)
        account = await self.c.calendar_sync.add_account(
            ctx, connected.integration.id, primary.id
        )
        response = await self.c.sandbox.control(
            "google", "POST", "tokens", json={"email": email, "scopes": [GOOGLE_SCOPE]}
        )
        return Mailbox(ctx, email, account, primary.id, response.json()["access_token"])

    async def set_zone(self, mb: Mailbox, zone: str) -> None:
        """The calendar's own zone (Google keeps none for all-day events)."""
        await self._control("PATCH", f"calendars/{mb.calendar}", {"timeZone": zone})

    async def _control(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        kwargs = {} if body is None else {"json": body}
        return await self.c.sandbox.control("google", method, path, **kwargs)

    def _events(self, mb: Mailbox) -> str:
        return f"calendars/{quote(mb.calendar, safe='@')}/events"

    @staticmethod
    def _time(value: dt.datetime | dt.date, zone: str) -> dict[str, str]:
        if isinstance(value, dt.datetime):
            return {"dateTime": _wall_text(value), "timeZone": zone}
        return {"date": value.isoformat()}

    async def create(self, mb: Mailbox, spec: Spec, *, same_as: str = "") -> str:
        uid = same_as or f"{uuid.uuid4().hex}@conformance.test"
        body: dict[str, Any] = {
            "iCalUID": uid,
            "summary": spec.title,
            "start": self._time(spec.start, spec.zone),
            "end": self._time(spec.end, spec.zone),
            "attendees": [
                {"email": a, "responseStatus": "needsAction"} for a in spec.attendees
            ],
        }
        if spec.rule:
            body["recurrence"] = [f"RRULE:{spec.rule}"]
        await self._control("POST", self._events(mb), body)
        return uid

    async def _stored(self, mb: Mailbox) -> list[dict[str, Any]]:
        response = await self._control("GET", self._events(mb))
        return list(response.json()["items"])

    async def _master(self, mb: Mailbox, uid: str) -> dict[str, Any]:
        [master] = [
            e
            for e in await self._stored(mb)
            if e["iCalUID"] == uid
            and "recurringEventId" not in e
            and e.get("status") != "cancelled"
        ]
        return master

    async def _patch(self, mb: Mailbox, event_id: str, body: dict[str, Any]) -> None:
        await self._control("PATCH", f"{self._events(mb)}/{event_id}", body)

    async def retitle(self, mb: Mailbox, uid: str, title: str) -> None:
        master = await self._master(mb, uid)
        await self._patch(mb, master["id"], {"summary": title})

    @staticmethod
    def _instance(master: dict[str, Any], original: dt.datetime) -> str:
        return f"{master['id']}_{original.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"

    async def edit_occurrence(
        self,
        mb: Mailbox,
        uid: str,
        original: dt.datetime,
        *,
        title: str,
        shift: dt.timedelta = dt.timedelta(0),
    ) -> None:
        master = await self._master(mb, uid)
        zone = master["start"]["timeZone"]
        length = dt.datetime.fromisoformat(
            master["end"]["dateTime"]
        ) - dt.datetime.fromisoformat(master["start"]["dateTime"])
        begin = (original + shift).astimezone(ZoneInfo(zone))
        await self._patch(
            mb,
            self._instance(master, original),
            {
                "summary": title,
                "start": {"dateTime": begin.isoformat(), "timeZone": zone},
                "end": {"dateTime": (begin + length).isoformat(), "timeZone": zone},
            },
        )

    async def cancel_occurrence(
        self, mb: Mailbox, uid: str, original: dt.datetime
    ) -> None:
        master = await self._master(mb, uid)
        await self._control(
            "DELETE", f"{self._events(mb)}/{self._instance(master, original)}"
        )

    async def set_rule(self, mb: Mailbox, uid: str, rule: str | None) -> None:
        master = await self._master(mb, uid)
        await self._patch(
            mb, master["id"], {"recurrence": [f"RRULE:{rule}"] if rule else []}
        )

    async def shift(self, mb: Mailbox, uid: str, delta: dt.timedelta) -> None:
        master = await self._master(mb, uid)
        body = {}
        for name in ("start", "end"):
            moved = dict(master[name])
            if "date" in moved:
                moved["date"] = (
                    dt.date.fromisoformat(moved["date"]) + delta
                ).isoformat()
            else:
                moved["dateTime"] = (
                    dt.datetime.fromisoformat(moved["dateTime"]) + delta
                ).isoformat()
            body[name] = moved
        await self._patch(mb, master["id"], body)

    async def _api_get(
        self, mb: Mailbox, path: str, params: dict[str, str]
    ) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30, verify=_TLS) as client:
            response = await client.get(
                self._api + quote(mb.calendar, safe="@") + path,
                params=params,
                headers={"Authorization": f"Bearer {mb.token}"},
            )
        assert response.status_code == 200, response.text
        return dict(response.json())

    @staticmethod
    def _when(raw: Mapping[str, Any]) -> dt.date | dt.datetime:
        if "date" in raw:
            return dt.date.fromisoformat(raw["date"])
        return dt.datetime.fromisoformat(raw["dateTime"]).astimezone(dt.UTC)

    async def occurrences(self, mb: Mailbox, window: Window) -> list[Occurrence]:
        body = await self._api_get(
            mb,
            "/events",
            {
                "singleEvents": "true",
                "timeMin": window.start.isoformat(),
                "timeMax": window.end.isoformat(),
                "maxResults": "2500",
            },
        )
        out = []
        for item in body.get("items", []):
            if item.get("status") == "cancelled":
                continue
            start, end = self._when(item["start"]), self._when(item["end"])
            if _in_window(start, window):
                out.append(_occurrence(start, end, item.get("summary", "")))
        return sorted(out)

    async def uids(self, mb: Mailbox) -> list[str]:
        return sorted(
            e["iCalUID"]
            for e in await self._stored(mb)
            if "recurringEventId" not in e and e.get("status") != "cancelled"
        )

    async def held(self, mb: Mailbox, uid: str) -> Held:
        master = await self._master(mb, uid)
        return Held(
            "date" in master["start"],
            self._when(master["start"]),
            self._when(master["end"]),
            master["start"].get("timeZone"),
            master.get("summary", ""),
        )

    async def mark(self) -> int:
        return len(await self.c.sandbox.requests())

    async def writes_since(self, mark: Any) -> list[str]:
        return [
            f"{e['method']} {e['path']}"
            for e in (await self.c.sandbox.requests())[mark:]
            if e["method"] != "GET" and "/calendar/" in e["path"]
        ]


# ------------------------------------------------------------------ Microsoft


class GraphDriver(Driver):
    name = "microsoft"
    logins = ("alice@contoso.test", "amy@contoso.test")

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self._graph = context.sandbox.microsoft_url + "/v1.0"
        #: UID -> Graph event id, for the events this driver made
        self._ids: dict[str, str] = {}

    async def connect(
        self, ctx: TenantContext, slot: int, *, login: str | None = None
    ) -> Mailbox:
        email = login or self.logins[slot]
        connected = await self.c.flow.connect(
            ctx, ProviderKey.MICROSOFT, IntegrationKind.CALENDAR, email
        )
        choices = await self.c.calendar_sync.calendars(ctx, connected.integration.id)
        primary = next(c for c in choices if c.primary)
        account = await self.c.calendar_sync.add_account(
            ctx, connected.integration.id, primary.id
        )
        response = await self.c.sandbox.control(
            "microsoft", "POST", "tokens", json={"email": email, "scopes": GRAPH_SCOPES}
        )
        return Mailbox(ctx, email, account, primary.id, response.json()["access_token"])

    async def _outlook(
        self, mb: Mailbox, method: str, path: str = "", body: Any = None
    ) -> httpx.Response:
        kwargs = {} if body is None else {"json": body}
        return await self.c.sandbox.control(
            "microsoft", method, f"users/{mb.login}/events{path}", **kwargs
        )

    async def _get(
        self, mb: Mailbox, path: str, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30, verify=_TLS) as client:
            response = await client.get(
                self._graph + path,
                params=params,
                headers={
                    "Authorization": f"Bearer {mb.token}",
                    "Prefer": 'outlook.timezone="UTC"',
                },
            )
        assert response.status_code == 200, response.text
        return dict(response.json())

    @staticmethod
    def _time(value: dt.datetime | dt.date, zone: str) -> dict[str, str]:
        if isinstance(value, dt.datetime):
            return {"dateTime": _wall_text(value), "timeZone": zone}
        return {"dateTime": f"{value.isoformat()}T00:00:00", "timeZone": zone}

    @staticmethod
    def _pattern(rule: str, start: dt.date | dt.datetime, zone: str) -> dict[str, Any]:
        """The Outlook pattern of the weekly rules these tests use."""
        parts = dict(p.split("=", 1) for p in rule.split(";"))
        assert parts["FREQ"] == "WEEKLY", rule
        days = {
            "MO": "monday",
            "TU": "tuesday",
            "WE": "wednesday",
            "TH": "thursday",
            "FR": "friday",
            "SA": "saturday",
            "SU": "sunday",
        }
        day = start.date() if isinstance(start, dt.datetime) else start
        byday = parts.get("BYDAY") or list(days)[day.weekday()]
        rng: dict[str, Any] = {"startDate": day.isoformat(), "recurrenceTimeZone": zone}
        if "COUNT" in parts:
            rng |= {"type": "numbered", "numberOfOccurrences": int(parts["COUNT"])}
        elif "UNTIL" in parts:
            until = parts["UNTIL"]
            rng |= {
                "type": "endDate",
                "endDate": f"{until[:4]}-{until[4:6]}-{until[6:8]}",
            }
        else:
            rng["type"] = "noEnd"
        return {
            "pattern": {
                "type": "weekly",
                "interval": int(parts.get("INTERVAL", "1")),
                "daysOfWeek": [days[d] for d in byday.split(",")],
                "firstDayOfWeek": "monday",
            },
            "range": rng,
        }

    async def create(self, mb: Mailbox, spec: Spec, *, same_as: str = "") -> str:
        body: dict[str, Any] = {
            "subject": spec.title,
            "isAllDay": spec.all_day,
            "start": self._time(spec.start, spec.zone),
            "end": self._time(spec.end, spec.zone),
            "attendees": [
                {"type": "required", "emailAddress": {"address": a}}
                for a in spec.attendees
            ],
        }
        if spec.rule:
            body["recurrence"] = self._pattern(spec.rule, spec.start, spec.zone)
        created = (await self._outlook(mb, "POST", body=body)).json()
        event_id = created["id"]
        if same_as:
            # Exchange gives every copy of a meeting the meeting's global object
            # id as iCalUId; the sandbox makes a new one per event, so the copy
            # is given the first copy's here
            self._set(mb, event_id, ical_uid=same_as)
        uid = same_as or (await self._get(mb, f"/me/events/{event_id}"))["iCalUId"]
        self._ids[uid + "\n" + mb.login] = event_id
        return str(uid)

    def _set(self, mb: Mailbox, event_id: str, **fields: str) -> None:
        """Change a stored event behind the API (what Exchange does on its own)."""
        state = self.c.sandbox.state
        with state.lock:
            store = state.extension(MicrosoftStore)
            stored = store.calendars(mb.login).data.events[event_id]
            for name, value in fields.items():
                setattr(stored, name, value)
            state.mark_dirty()

    def set_custom_zone(self, mb: Mailbox, uid: str, name: str) -> None:
        """Outlook desktop's custom zones read back as a name Graph cannot
        resolve (``tzone://Microsoft/Custom``); the API refuses to take one."""
        event_id = self._ids[uid + "\n" + mb.login]
        self._set(mb, event_id, start_zone=name, end_zone=name)

    async def _event_id(self, mb: Mailbox, uid: str) -> str:
        known = self._ids.get(uid + "\n" + mb.login)
        if known is not None:
            return known
        for item in await self._events(mb):
            if self._uid_of(item) == uid:
                return str(item["id"])
        raise AssertionError(f"no Outlook event {uid}")

    @staticmethod
    def _uid_of(item: Mapping[str, Any]) -> str:
        for prop in item.get("singleValueExtendedProperties") or ():
            if prop["id"].lower() == UID_PROPERTY.lower():
                return str(prop["value"])
        return str(item["iCalUId"])

    async def _events(self, mb: Mailbox) -> list[dict[str, Any]]:
        body = await self._get(
            mb,
            "/me/events",
            {
                "$top": "1000",
                "$expand": (
                    f"singleValueExtendedProperties($filter=id eq '{UID_PROPERTY}')"
                ),
            },
        )
        return list(body["value"])

    async def retitle(self, mb: Mailbox, uid: str, title: str) -> None:
        await self._outlook(
            mb, "PATCH", f"/{await self._event_id(mb, uid)}", {"subject": title}
        )

    async def _instance_id(self, mb: Mailbox, uid: str, original: dt.datetime) -> str:
        master = await self._event_id(mb, uid)
        low = original - dt.timedelta(days=1)
        body = await self._get(
            mb,
            f"/me/events/{master}/instances",
            {
                "startDateTime": low.isoformat(),
                "endDateTime": (original + dt.timedelta(days=1)).isoformat(),
            },
        )
        for item in body["value"]:
            if _parse_graph(item["originalStart"]) == original.astimezone(dt.UTC):
                return str(item["id"])
        raise AssertionError(f"no occurrence of {uid} at {original}")

    async def edit_occurrence(
        self,
        mb: Mailbox,
        uid: str,
        original: dt.datetime,
        *,
        title: str,
        shift: dt.timedelta = dt.timedelta(0),
    ) -> None:
        instance = await self._instance_id(mb, uid, original)
        item = await self._get(mb, f"/me/events/{instance}")
        begin = _parse_graph(item["start"]["dateTime"]) + shift
        finish = _parse_graph(item["end"]["dateTime"]) + shift
        await self._outlook(
            mb,
            "PATCH",
            f"/{instance}",
            {
                "subject": title,
                "start": {"dateTime": _wall_text(begin), "timeZone": "UTC"},
                "end": {"dateTime": _wall_text(finish), "timeZone": "UTC"},
            },
        )

    async def cancel_occurrence(
        self, mb: Mailbox, uid: str, original: dt.datetime
    ) -> None:
        instance = await self._instance_id(mb, uid, original)
        await self._outlook(mb, "DELETE", f"/{instance}")

    async def set_rule(self, mb: Mailbox, uid: str, rule: str | None) -> None:
        event_id = await self._event_id(mb, uid)
        item = await self._get(mb, f"/me/events/{event_id}")
        zone = item["originalStartTimeZone"]
        start = _parse_graph(item["start"]["dateTime"]).astimezone(ZoneInfo(zone))
        recurrence = self._pattern(rule, start, zone) if rule else None
        await self._outlook(mb, "PATCH", f"/{event_id}", {"recurrence": recurrence})

    async def shift(self, mb: Mailbox, uid: str, delta: dt.timedelta) -> None:
        event_id = await self._event_id(mb, uid)
        item = await self._get(mb, f"/me/events/{event_id}")
        body = {
            name: {
                "dateTime": _wall_text(_parse_graph(item[name]["dateTime"]) + delta),
                "timeZone": "UTC",
            }
            for name in ("start", "end")
        }
        await self._outlook(mb, "PATCH", f"/{event_id}", body)

    async def occurrences(self, mb: Mailbox, window: Window) -> list[Occurrence]:
        body = await self._get(
            mb,
            "/me/calendarView",
            {
                "startDateTime": window.start.isoformat(),
                "endDateTime": window.end.isoformat(),
                "$top": "1000",
            },
        )
        out = []
        for item in body["value"]:
            if item.get("isCancelled"):
                continue
            if item.get("isAllDay"):
                start: dt.date | dt.datetime = dt.date.fromisoformat(
                    item["start"]["dateTime"][:10]
                )
                end: dt.date | dt.datetime = dt.date.fromisoformat(
                    item["end"]["dateTime"][:10]
                )
            else:
                start = _parse_graph(item["start"]["dateTime"])
                end = _parse_graph(item["end"]["dateTime"])
            if _in_window(start, window):
                out.append(_occurrence(start, end, item.get("subject", "")))
        return sorted(out)

    async def uids(self, mb: Mailbox) -> list[str]:
        return sorted(self._uid_of(item) for item in await self._events(mb))

    async def held(self, mb: Mailbox, uid: str) -> Held:
        item = await self._get(mb, f"/me/events/{await self._event_id(mb, uid)}")
        if item["isAllDay"]:
            return Held(
                True,
                dt.date.fromisoformat(item["start"]["dateTime"][:10]),
                dt.date.fromisoformat(item["end"]["dateTime"][:10]),
                item.get("originalStartTimeZone"),
                item.get("subject", ""),
            )
        return Held(
            False,
            _parse_graph(item["start"]["dateTime"]),
            _parse_graph(item["end"]["dateTime"]),
            item.get("originalStartTimeZone"),
            item.get("subject", ""),
        )

    async def mark(self) -> int:
        return len(await self.c.sandbox.requests())

    async def writes_since(self, mark: Any) -> list[str]:
        # crmflow reads in bulk with POST $batch (GETs inside); anything else
        # but GET on the Graph API is a write
        return [
            f"{e['method']} {e['path']}"
            for e in (await self.c.sandbox.requests())[mark:]
            if "/v1.0/" in e["path"]
            and e["method"] != "GET"
            and not e["path"].endswith("/$batch")
        ]


def _parse_graph(value: str) -> dt.datetime:
    text = value.rstrip("Z")
    if "." in text:
        head, _, fraction = text.partition(".")
        text = f"{head}.{fraction[:6]}"
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# ------------------------------------------------------------------ CalDAV


@dataclass
class _Collection:
    url: str
    user: str


class CalDAVDriver(Driver):
    name = "caldav"
    logins = DAV_USERS  # type: ignore[assignment]

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        assert context.radicale is not None
        self.server: RadicaleServer = context.radicale
        self._made: list[_Collection] = []
        #: UID -> resource URL, for the events this driver made
        self._hrefs: dict[str, str] = {}

    def _auth(self, user: str) -> tuple[str, str]:
        return (user, self.server.users[user])

    async def _request(
        self, user: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response:
        async with httpx.AsyncClient(
            auth=self._auth(user), timeout=30, verify=_TLS
        ) as client:
            return await client.request(method, url, **kwargs)

    async def connect(
        self, ctx: TenantContext, slot: int, *, login: str | None = None
    ) -> Mailbox:
        user = self.logins[slot]
        name = f"conformance-{uuid.uuid4().hex[:12]}"
        url = f"{self.server.url}{user}/{name}/"
        made = await self._request(
            user,
            "MKCALENDAR",
            url,
            content=_MKCALENDAR.format(name=name).encode(),
        )
        assert made.status_code == 201, made.text
        self._made.append(_Collection(url, user))
        connected = await connect_caldav(
            self.c.services,
            ctx,
            username=user,
            password=Secret(self.server.users[user]),
            url=self.server.url,
            email=f"{user}@dav.test",
        )
        account = await self.c.calendar_sync.add_account(
            ctx, connected.integration.id, url
        )
        return Mailbox(ctx, user, account, url)

    async def close(self) -> None:
        for collection in self._made:
            await self._request(collection.user, "DELETE", collection.url)

    # -- iCalendar, written as a calendar app does

    def _time(self, value: dt.datetime | dt.date, zone: str) -> dt.date | dt.datetime:
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=ZoneInfo(zone))
        return value

    async def create(self, mb: Mailbox, spec: Spec, *, same_as: str = "") -> str:
        uid = same_as or f"{uuid.uuid4().hex}@conformance.test"
        event = Event()
        event.add("UID", uid)
        event.add("DTSTAMP", dt.datetime.now(dt.UTC))
        event.add("SUMMARY", spec.title)
        event.add("DTSTART", self._time(spec.start, spec.zone))
        event.add("DTEND", self._time(spec.end, spec.zone))
        for address in spec.attendees:
            event.add(
                "ATTENDEE", f"mailto:{address}", parameters={"PARTSTAT": "NEEDS-ACTION"}
            )
        if spec.rule:
            event.add("RRULE", _recur(spec.rule))
        calendar = _vcalendar([event])
        calendar.add_missing_timezones()
        href = f"{mb.calendar}{uuid.uuid4().hex}.ics"
        await self._put(mb, href, calendar.to_ical(), create=True)
        self._hrefs[uid + "\n" + mb.calendar] = href
        return uid

    async def create_raw(self, mb: Mailbox, uid: str, data: bytes) -> None:
        """PUT calendar data as another client wrote it (custom zones, say)."""
        href = f"{mb.calendar}{uuid.uuid4().hex}.ics"
        await self._put(mb, href, data, create=True)
        self._hrefs[uid + "\n" + mb.calendar] = href

    async def _put(
        self,
        mb: Mailbox,
        href: str,
        data: bytes,
        *,
        create: bool = False,
        etag: str = "",
    ) -> None:
        headers = {"Content-Type": "text/calendar; charset=utf-8"}
        if create:
            headers["If-None-Match"] = "*"
        elif etag:
            headers["If-Match"] = etag
        response = await self._request(
            mb.login, "PUT", href, content=data, headers=headers
        )
        assert response.status_code in (201, 204), response.text

    async def _href(self, mb: Mailbox, uid: str) -> str:
        known = self._hrefs.get(uid + "\n" + mb.calendar)
        if known is not None:
            return known
        for href in await self._members(mb):
            data, _ = await self._read(mb, href)
            if uid in {str(c["UID"]) for c in Calendar.from_ical(data).walk("VEVENT")}:
                return href
        raise AssertionError(f"no CalDAV resource {uid}")

    async def _members(self, mb: Mailbox) -> dict[str, str]:
        """``{resource URL: ETag}`` of the mailbox's collection."""
        return await self._listing(_Collection(mb.calendar, mb.login))

    async def _listing(self, collection: _Collection) -> dict[str, str]:
        response = await self._request(
            collection.user,
            "PROPFIND",
            collection.url,
            content=_PROPFIND,
            headers={"Depth": "1", "Content-Type": "application/xml"},
        )
        assert response.status_code == 207, response.text
        root = fromstring(response.content)
        out = {}
        base = httpx.URL(collection.url)
        for item in root.iter(f"{_DAV}response"):
            href = item.findtext(f"{_DAV}href") or ""
            etag = item.findtext(f".//{_DAV}getetag")
            if href.endswith(".ics") and etag:
                out[str(base.join(href))] = etag
        return out

    async def _read(self, mb: Mailbox, href: str) -> tuple[bytes, str]:
        response = await self._request(mb.login, "GET", href)
        assert response.status_code == 200, response.text
        return response.content, response.headers["ETag"]

    async def _edit(self, mb: Mailbox, uid: str, change: Any) -> None:
        href = await self._href(mb, uid)
        data, etag = await self._read(mb, href)
        calendar = Calendar.from_ical(data)
        events = list(calendar.walk("VEVENT"))
        master = next(c for c in events if c.get("RECURRENCE-ID") is None)
        change(calendar, master, events)
        for event in calendar.walk("VEVENT"):
            event.pop("DTSTAMP", None)
            event.add("DTSTAMP", dt.datetime.now(dt.UTC))
            sequence = int(event.get("SEQUENCE", 0)) + 1
            event.pop("SEQUENCE", None)
            event.add("SEQUENCE", sequence)
        await self._put(mb, href, calendar.to_ical(), etag=etag)

    async def retitle(self, mb: Mailbox, uid: str, title: str) -> None:
        def change(calendar: Calendar, master: Event, events: list[Event]) -> None:
            master.pop("SUMMARY")
            master.add("SUMMARY", title)

        await self._edit(mb, uid, change)

    async def edit_occurrence(
        self,
        mb: Mailbox,
        uid: str,
        original: dt.datetime,
        *,
        title: str,
        shift: dt.timedelta = dt.timedelta(0),
    ) -> None:
        def change(calendar: Calendar, master: Event, events: list[Event]) -> None:
            start = master["DTSTART"].dt
            length = master["DTEND"].dt - start
            local = original.astimezone(start.tzinfo)
            override = Event()
            override.add("UID", uid)
            override.add("RECURRENCE-ID", local)
            override.add("SUMMARY", title)
            override.add("DTSTART", local + shift)
            override.add("DTEND", local + shift + length)
            calendar.add_component(override)

        await self._edit(mb, uid, change)

    async def cancel_occurrence(
        self, mb: Mailbox, uid: str, original: dt.datetime
    ) -> None:
        # what Thunderbird and Apple Calendar do: an EXDATE on the master
        def change(calendar: Calendar, master: Event, events: list[Event]) -> None:
            master.add("EXDATE", original.astimezone(master["DTSTART"].dt.tzinfo))

        await self._edit(mb, uid, change)

    async def set_rule(self, mb: Mailbox, uid: str, rule: str | None) -> None:
        def change(calendar: Calendar, master: Event, events: list[Event]) -> None:
            master.pop("RRULE", None)
            if rule:
                master.add("RRULE", _recur(rule))
            else:
                for other in events:
                    if other is not master:
                        calendar.subcomponents.remove(other)
                master.pop("EXDATE", None)

        await self._edit(mb, uid, change)

    async def shift(self, mb: Mailbox, uid: str, delta: dt.timedelta) -> None:
        def change(calendar: Calendar, master: Event, events: list[Event]) -> None:
            for name in ("DTSTART", "DTEND"):
                value = master[name].dt
                master.pop(name)
                master.add(name, value + delta)
            # the overrides and EXDATEs belonged to the old times: Thunderbird
            # moves them along with the series
            for other in events:
                if other is master:
                    continue
                for name in ("RECURRENCE-ID", "DTSTART", "DTEND"):
                    value = other[name].dt
                    other.pop(name)
                    other.add(name, value + delta)
            exdates = [
                d.dt + delta
                for prop in _as_list(master.get("EXDATE"))
                for d in prop.dts
            ]
            master.pop("EXDATE", None)
            for value in exdates:
                master.add("EXDATE", value)

        await self._edit(mb, uid, change)

    async def occurrences(self, mb: Mailbox, window: Window) -> list[Occurrence]:
        out: list[Occurrence] = []
        for href in await self._members(mb):
            data, _ = await self._read(mb, href)
            out.extend(ical_occurrences(data, window))
        return sorted(out)

    async def uids(self, mb: Mailbox) -> list[str]:
        out = []
        for href in await self._members(mb):
            data, _ = await self._read(mb, href)
            masters = {str(c["UID"]) for c in Calendar.from_ical(data).walk("VEVENT")}
            out.extend(masters)
        return sorted(out)

    async def raw(self, mb: Mailbox, uid: str) -> bytes:
        """The calendar data the server holds for ``uid``."""
        data, _ = await self._read(mb, await self._href(mb, uid))
        return data

    async def held(self, mb: Mailbox, uid: str) -> Held:
        data, _ = await self._read(mb, await self._href(mb, uid))
        master = next(
            c
            for c in Calendar.from_ical(data).walk("VEVENT")
            if c.get("RECURRENCE-ID") is None
        )
        start, end = master["DTSTART"], master["DTEND"]
        if not isinstance(start.dt, dt.datetime):
            return Held(True, start.dt, end.dt, None, str(master["SUMMARY"]))
        return Held(
            False,
            _ical_time(start).astimezone(dt.UTC),
            _ical_time(end).astimezone(dt.UTC),
            start.params.get("TZID"),
            str(master["SUMMARY"]),
        )

    async def mark(self) -> dict[str, str]:
        """``{resource URL: ETag}`` of every collection connected so far."""
        out: dict[str, str] = {}
        for collection in self._made:
            out |= await self._listing(collection)
        return out

    async def writes_since(self, mark: Any) -> list[str]:
        now = await self.mark()
        changed = sorted(set(now.items()) ^ set(mark.items()))
        return [f"{href} {etag}" for href, etag in changed]


def _recur(rule: str) -> Any:
    return vRecur.from_ical(rule)


def _vcalendar(events: Iterable[Any]) -> Calendar:
    calendar = Calendar()
    calendar.add("PRODID", "-//conformance tests//a calendar app//EN")
    calendar.add("VERSION", "2.0")
    for event in events:
        calendar.add_component(event)
    return calendar


__all__ = [
    "CalDAVDriver",
    "Context",
    "Driver",
    "GoogleDriver",
    "GraphDriver",
    "Held",
    "Mailbox",
    "Occurrence",
    "Spec",
    "Window",
    "event_occurrences",
    "ical_occurrences",
]
