"""crmflow and vdirsyncer sync the same Radicale calendar, interleaved.

Three parties share one CalDAV collection on a real Radicale
(``tests/servers/radicale.py``):

* crmflow's engine (:func:`crmflow.sync.sync_pair`) syncs it, through
  :class:`~crmflow.providers.caldav.CalDAVCalendar`, with the CRM side of
  :func:`make_crm_side`; the test changes the CRM side through its port, as the
  CRM's own UI would;
* vdirsyncer, an independent CalDAV client, syncs it with a folder of ``.ics``
  files (``tests/servers/vdirsyncer.py``), which the test edits as a local
  calendar app would (files written with icalendar, alarms and ``X-``
  properties included);
* the test reads the collection itself with one ``calendar-query`` REPORT.

Rounds: events made in the CRM reach the folder; files created, edited and
deleted in the folder reach the CRM; CRM edits and deletions reach the folder;
an event changed on both sides is settled by the engine's conflict policy
(``crm_wins`` once, ``calendar_wins`` once) or, when crmflow synced first, by
vdirsyncer's ``b wins``; one round runs vdirsyncer and crmflow at the same time.
After each settled round the CRM side, Radicale and the folder hold the same
UIDs, each once, with the content the test expects (compared by
``CalendarEvent.content_hash`` after parsing with the adapter's iCalendar
mapping); at the end one more round writes nothing.

Every crmflow sync but the conflict rounds uses the ``manual`` policy, so an
unexpected conflict fails the test (``SyncConflict``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from defusedxml.ElementTree import fromstring
from icalendar import Alarm, Calendar, Event

from crmflow.domain.appointments import all_day_span, timed_span
from crmflow.domain.calendar import (
    Attendee,
    CalendarEvent,
    CalendarProvider,
    Notify,
    RemoteEvent,
    ResponseStatus,
)
from crmflow.providers.caldav import CalDAVCalendar
from crmflow.providers.caldav._ical import from_ical
from crmflow.providers.memory import MemoryCalendar
from crmflow.sync import (
    Branch,
    ConflictPolicy,
    SideName,
    SyncResult,
    WriteKind,
    sync_pair,
)
from crmflow.sync.status import InMemoryStatusRepository, SyncStatusRepository
from tests.servers.radicale import RadicaleServer
from tests.servers.vdirsyncer import (
    LOCAL,
    REMOTE,
    Vdirsyncer,
    VdirsyncerRun,
    VdirWrite,
    VdirWriteKind,
    Winner,
    require_vdirsyncer,
)
from tests.sync.caldav_helpers import USER, calendar, collections_of

pytestmark = pytest.mark.servers

CRM = SideName.CRM
CALENDAR = SideName.CALENDAR
UPLOAD, UPDATE, DELETE = (
    VdirWriteKind.UPLOAD,
    VdirWriteKind.UPDATE,
    VdirWriteKind.DELETE,
)

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
_CALENDAR_QUERY = b"""<?xml version="1.0" encoding="utf-8"?>
<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><d:getetag/><c:calendar-data/></d:prop>
  <c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter>
</c:calendar-query>"""

#: how vdirsyncer's requests show in Radicale's log (``... using 'vdirsyncer/0.21.0'``)
VDIRSYNCER_AGENT = b"using 'vdirsyncer/"
#: how long vdirsyncer may take to send its first request, in seconds
VDIRSYNCER_FIRST_REQUEST_S = 60.0
#: pause between two looks at Radicale's log, in seconds
LOG_POLL_S = 0.005

#: what the folder's calendar app puts in its files besides the event
LAPTOP_PRODID = "-//Laptop Calendar 4.2//EN"

#: iCalendar property per ``CalendarEvent`` field a person edits in the folder
_PROPERTY = {"title": "SUMMARY", "location": "LOCATION", "description": "DESCRIPTION"}


def make_crm_side() -> tuple[CalendarProvider, SyncStatusRepository]:
    """The CRM side of the pair and its sync status.

    In memory for now; the CRM appointments over the store (the same
    ``CalendarProvider`` port) and the database status repository replace them.
    """
    return MemoryCalendar(), InMemoryStatusRepository()


# ---------------------------------------------------------------- events


def berlin(uid: str, title: str, day: int, hour: int, **fields: Any) -> CalendarEvent:
    """A one-hour event in June 2026, Berlin time."""
    return CalendarEvent(
        ical_uid=uid,
        title=title,
        span=timed_span(
            dt.datetime(2026, 6, day, hour),
            dt.datetime(2026, 6, day, hour + 1),
            "Europe/Berlin",
        ),
        **fields,
    )


def local_ics(event: CalendarEvent) -> bytes:
    """``event`` as the folder's calendar app saves it: written with icalendar
    directly (not crmflow's mapping), with a reminder and an ``X-`` property
    crmflow does not sync."""
    cal = Calendar()
    cal.add("PRODID", LAPTOP_PRODID)
    cal.add("VERSION", "2.0")
    vevent = Event()
    vevent.add("UID", event.ical_uid)
    vevent.add("DTSTAMP", dt.datetime.now(dt.UTC))
    vevent.add("SEQUENCE", 0)
    vevent.add("SUMMARY", event.title)
    span = event.span
    if span.all_day:
        vevent.add("DTSTART", span.start_date)
        vevent.add("DTEND", span.end_date)
    else:
        tz = ZoneInfo(span.timezone)
        vevent.add("DTSTART", span.start_at.astimezone(tz))
        vevent.add("DTEND", span.end_at.astimezone(tz))
    if event.location:
        vevent.add("LOCATION", event.location)
    if event.description:
        vevent.add("DESCRIPTION", event.description)
    vevent.add("X-LAPTOP-COLOR", "teal")
    alarm = Alarm()
    alarm.add("ACTION", "DISPLAY")
    alarm.add("DESCRIPTION", "Reminder")
    alarm.add("TRIGGER", dt.timedelta(minutes=-15))
    vevent.add_component(alarm)
    cal.add_component(vevent)
    cal.add_missing_timezones()
    data: bytes = cal.to_ical()
    return data


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` as editors do (temp file, then rename); vdirsyncer
    skips ``.tmp`` files."""
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def parse(data: bytes | str) -> CalendarEvent:
    return from_ical(data).event


# ---------------------------------------------------------------- the scene


@dataclass
class Scene:
    """The three parties, and what every one of them should hold."""

    crm: CalendarProvider
    status: SyncStatusRepository
    caldav: CalDAVCalendar
    vdir: Vdirsyncer
    server: RadicaleServer
    url: str
    #: UID -> the event all three should hold once the round is synced
    expected: dict[str, CalendarEvent] = field(default_factory=dict)

    # ------------------------------------------------------------ syncing

    async def crm_sync(
        self, conflicts: ConflictPolicy = ConflictPolicy.MANUAL
    ) -> SyncResult:
        """One crmflow run; any failing ident fails the test."""
        return await sync_pair(self.crm, self.caldav, self.status, conflicts=conflicts)

    async def vdir_sync(self) -> VdirsyncerRun:
        """One vdirsyncer run; a non-zero exit fails the test."""
        return await self.vdir.sync_async()

    async def crm_sync_once_vdirsyncer_talks(self, since: int) -> SyncResult:
        """A crmflow run started as soon as Radicale logs a request of
        vdirsyncer after byte ``since`` of its log: vdirsyncer spends about half
        a second starting up, and crmflow's run is short, so started together
        they would barely overlap."""
        deadline = time.monotonic() + VDIRSYNCER_FIRST_REQUEST_S
        while VDIRSYNCER_AGENT not in _log_after(self.server, since):
            assert time.monotonic() < deadline, "vdirsyncer sent no request"
            await asyncio.sleep(LOG_POLL_S)
        return await self.crm_sync()

    # ------------------------------------------------------------ the CRM side

    async def crm_items(self) -> dict[str, RemoteEvent]:
        """The CRM side's events by UID, read through the port."""
        listing = await self.crm.list()
        ids = sorted(listing.items)
        limit = self.crm.get_many_limit or max(len(ids), 1)
        found: list[RemoteEvent] = []
        for start in range(0, len(ids), limit):
            found.extend(await self.crm.get_many(ids[start : start + limit]))
        uids = [item.event.ical_uid for item in found]
        assert len(uids) == len(set(uids)), f"duplicate UIDs in the CRM: {uids}"
        return {item.event.ical_uid: item for item in found}

    async def crm_create(self, event: CalendarEvent) -> None:
        await self.crm.create(
            event, idempotency_key=uuid.uuid4().hex, notify=Notify.NONE
        )
        self.expected[event.ical_uid] = event

    async def crm_edit(self, uid: str, **changes: Any) -> CalendarEvent:
        """Change synced fields of the CRM's event; returns the new event."""
        item = (await self.crm_items())[uid]
        assert item.event.content_hash() == self.expected[uid].content_hash()
        edited = replace(item.event, **changes)
        await self.crm.update(
            item.remote_id, edited, if_match=item.version, notify=Notify.NONE
        )
        return edited

    async def crm_delete(self, uid: str) -> None:
        item = (await self.crm_items())[uid]
        await self.crm.delete(item.remote_id, if_match=item.version, notify=Notify.NONE)
        del self.expected[uid]

    # ------------------------------------------------------------ the folder

    def local_paths(self) -> dict[str, Path]:
        """The folder's files by the UID they hold."""
        paths: dict[str, Path] = {}
        for path in self.vdir.ics_files():
            uid = parse(path.read_bytes()).ical_uid
            assert uid not in paths, f"{uid} twice in the folder"
            paths[uid] = path
        return paths

    def local_create(self, event: CalendarEvent) -> None:
        path = self.vdir.folder / f"{event.ical_uid}.ics"
        assert not path.exists()
        write_atomically(path, local_ics(event))
        self.expected[event.ical_uid] = event

    def local_edit(self, uid: str, **changes: Any) -> CalendarEvent:
        """Change text fields of the folder's file in place, keeping whatever
        else it holds; returns the event as it now reads."""
        path = self.local_paths()[uid]
        cal = Calendar.from_ical(path.read_bytes())
        for vevent in cal.walk("VEVENT"):
            if vevent.get("RECURRENCE-ID") is not None:
                continue
            for name, value in changes.items():
                vevent.pop(_PROPERTY[name], None)
                if value is not None:
                    vevent.add(_PROPERTY[name], value)
            sequence = int(vevent.pop("SEQUENCE", 0)) + 1
            vevent.add("SEQUENCE", sequence)
            vevent.pop("DTSTAMP", None)
            vevent.add("DTSTAMP", dt.datetime.now(dt.UTC))
        write_atomically(path, cal.to_ical())
        edited = parse(path.read_bytes())
        assert (
            edited.content_hash()
            == replace(self.expected[uid], **changes).content_hash()
        )
        return edited

    def local_delete(self, uid: str) -> None:
        self.local_paths()[uid].unlink()
        del self.expected[uid]

    # ------------------------------------------------------------ reading back

    async def server_events(self) -> dict[str, CalendarEvent]:
        """Radicale's events by UID: one ``calendar-query`` REPORT."""
        async with httpx.AsyncClient(
            auth=(USER, self.server.users[USER]), timeout=30
        ) as client:
            response = await client.request(
                "REPORT",
                self.url,
                content=_CALENDAR_QUERY,
                headers={"Depth": "1", "Content-Type": "application/xml"},
            )
        assert response.status_code == 207, response.text
        events: dict[str, CalendarEvent] = {}
        for item in fromstring(response.content).iter(f"{{{DAV}}}response"):
            data = item.find(f".//{{{CALDAV}}}calendar-data")
            if data is None or not data.text:
                continue
            event = parse(data.text)
            assert event.ical_uid not in events, f"{event.ical_uid} twice on Radicale"
            events[event.ical_uid] = event
        return events

    def local_events(self) -> dict[str, CalendarEvent]:
        return {
            uid: parse(path.read_bytes()) for uid, path in self.local_paths().items()
        }

    async def assert_server_as_expected(self) -> None:
        assert_same("Radicale", await self.server_events(), self.expected)

    async def assert_converged(self) -> None:
        """CRM, Radicale and the folder hold the expected events, each once."""
        crm = {uid: item.event for uid, item in (await self.crm_items()).items()}
        assert_same("the CRM", crm, self.expected)
        await self.assert_server_as_expected()
        assert_same("the folder", self.local_events(), self.expected)


def _log_after(server: RadicaleServer, offset: int) -> bytes:
    """Radicale's log from byte ``offset`` on."""
    with server.log_file.open("rb") as log:
        log.seek(offset)
        return log.read()


def assert_same(
    where: str, actual: dict[str, CalendarEvent], expected: dict[str, CalendarEvent]
) -> None:
    """Same UIDs, same content hash per UID (titles shown when they differ)."""
    hashes = {uid: event.content_hash() for uid, event in actual.items()}
    wanted = {uid: event.content_hash() for uid, event in expected.items()}
    titles = {uid: event.title for uid, event in actual.items()}
    wanted_titles = {uid: event.title for uid, event in expected.items()}
    assert hashes == wanted, f"{where}: {titles} != expected {wanted_titles}"


def crm_log(
    result: SyncResult,
) -> dict[str, tuple[Branch, tuple[tuple[SideName, WriteKind], ...]]]:
    """What a crmflow run did, per UID: the branch and the writes."""
    assert result.errors == ()
    assert result.conflicts == ()
    return {
        entry.ident: (entry.branch, tuple((w.side, w.kind) for w in entry.writes))
        for entry in result.log
    }


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def vdirsyncer_command() -> list[str]:
    return require_vdirsyncer()


@pytest.fixture
def collection_url(radicale: RadicaleServer) -> Iterator[str]:
    """A fresh, empty calendar of alice, deleted afterwards."""
    with collections_of(radicale) as made:
        yield made.new()


@pytest.fixture
def scene(
    vdirsyncer_command: list[str],
    radicale: RadicaleServer,
    collection_url: str,
    tmp_path: Path,
) -> Scene:
    crm, status = make_crm_side()
    return Scene(
        crm=crm,
        status=status,
        caldav=calendar(radicale, collection_url),
        vdir=Vdirsyncer(
            tmp_path / "vdirsyncer",
            collection_url,
            USER,
            radicale.users[USER],
            winner=Winner.SERVER,
            command=vdirsyncer_command,
        ),
        server=radicale,
        url=collection_url,
    )


# ---------------------------------------------------------------- the scenario


async def test_crmflow_and_vdirsyncer_converge_on_one_radicale_calendar(
    scene: Scene,
) -> None:
    # 1. the CRM's events reach Radicale, then the folder
    await scene.crm_create(
        berlin(
            "crm-kickoff@crmflow.test",
            "Kickoff with Acme",
            1,
            9,
            description="Agenda:\n1. scope\n2. timeline",
            location="Room 4",
            attendees=(
                Attendee("dana@acme.test", "Dana", ResponseStatus.ACCEPTED),
                Attendee("lee@acme.test"),
            ),
        )
    )
    await scene.crm_create(
        CalendarEvent(
            ical_uid="crm-offsite",
            title="Offsite",
            span=all_day_span(dt.date(2026, 6, 10), dt.date(2026, 6, 12), "UTC"),
        )
    )
    await scene.crm_create(
        berlin(
            "crm-weekly",
            "Pipeline review",
            1,
            14,
            recurrence=("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6",),
        )
    )
    await scene.crm_create(berlin("crm-review", "Contract review", 2, 11))
    assert crm_log(await scene.crm_sync()) == dict.fromkeys(
        scene.expected, (Branch.CREATED, ((CALENDAR, WriteKind.CREATE),))
    )
    await scene.vdir.discover_async()
    run = await scene.vdir_sync()
    assert run.writes == {VdirWrite(UPLOAD, uid, LOCAL) for uid in scene.expected}
    await scene.assert_converged()

    # 2. the folder creates, edits and deletes; the CRM follows
    scene.local_create(
        CalendarEvent(
            ical_uid="local-lunch",
            title="Lunch with Dana",
            span=timed_span(
                dt.datetime(2026, 6, 3, 12),
                dt.datetime(2026, 6, 3, 13),
                "America/New_York",
            ),
            location="Deli on 5th",
        )
    )
    scene.local_create(
        CalendarEvent(
            ical_uid="local-holiday",
            title="Public holiday",
            span=all_day_span(dt.date(2026, 6, 4), None, "UTC"),
        )
    )
    kickoff = scene.local_edit(
        "crm-kickoff@crmflow.test", title="Kickoff with Acme (moved)", location="Room 7"
    )
    scene.expected["crm-kickoff@crmflow.test"] = kickoff
    scene.local_delete("crm-offsite")
    run = await scene.vdir_sync()
    assert run.writes == {
        VdirWrite(UPLOAD, "local-lunch", REMOTE),
        VdirWrite(UPLOAD, "local-holiday", REMOTE),
        VdirWrite(UPDATE, "crm-kickoff@crmflow.test", REMOTE),
        VdirWrite(DELETE, "crm-offsite", REMOTE),
    }
    assert crm_log(await scene.crm_sync()) == {
        "local-lunch": (Branch.CREATED, ((CRM, WriteKind.CREATE),)),
        "local-holiday": (Branch.CREATED, ((CRM, WriteKind.CREATE),)),
        "crm-kickoff@crmflow.test": (Branch.UPDATED, ((CRM, WriteKind.UPDATE),)),
        "crm-offsite": (Branch.DELETED, ((CRM, WriteKind.DELETE),)),
    }
    await scene.assert_converged()

    # 3. the CRM edits, deletes and creates; the folder follows
    scene.expected["crm-weekly"] = await scene.crm_edit(
        "crm-weekly",
        title="Pipeline review (longer series)",
        recurrence=("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=8",),
    )
    await scene.crm_delete("crm-review")
    await scene.crm_create(berlin("crm-demo", "Product demo", 5, 15))
    assert crm_log(await scene.crm_sync()) == {
        "crm-weekly": (Branch.UPDATED, ((CALENDAR, WriteKind.UPDATE),)),
        "crm-review": (Branch.DELETED, ((CALENDAR, WriteKind.DELETE),)),
        "crm-demo": (Branch.CREATED, ((CALENDAR, WriteKind.CREATE),)),
    }
    run = await scene.vdir_sync()
    assert run.writes == {
        VdirWrite(UPDATE, "crm-weekly", LOCAL),
        VdirWrite(DELETE, "crm-review", LOCAL),
        VdirWrite(UPLOAD, "crm-demo", LOCAL),
    }
    await scene.assert_converged()

    # 4. both sides change one event; vdirsyncer uploads first, so crmflow sees
    #    the conflict, and crm_wins overwrites the folder's version
    crm_version = await scene.crm_edit("local-lunch", title="Lunch with Dana (CRM)")
    scene.local_edit(
        "local-lunch", title="Lunch with Dana (laptop)", location="Café Nord"
    )
    run = await scene.vdir_sync()
    assert run.writes == {VdirWrite(UPDATE, "local-lunch", REMOTE)}
    result = await scene.crm_sync(ConflictPolicy.CRM_WINS)
    assert crm_log(result) == {
        "local-lunch": (Branch.CONFLICT, ((CALENDAR, WriteKind.UPDATE),))
    }
    assert result.log[0].policy is ConflictPolicy.CRM_WINS
    scene.expected["local-lunch"] = crm_version
    run = await scene.vdir_sync()
    assert run.writes == {VdirWrite(UPDATE, "local-lunch", LOCAL)}
    await scene.assert_converged()
    assert scene.local_events()["local-lunch"].location == "Deli on 5th"

    # 5. the same with calendar_wins: the folder's version reaches the CRM
    await scene.crm_edit("crm-weekly", description="Bring the forecast")
    laptop_version = scene.local_edit("crm-weekly", title="Pipeline review (laptop)")
    run = await scene.vdir_sync()
    assert run.writes == {VdirWrite(UPDATE, "crm-weekly", REMOTE)}
    result = await scene.crm_sync(ConflictPolicy.CALENDAR_WINS)
    assert crm_log(result) == {
        "crm-weekly": (Branch.CONFLICT, ((CRM, WriteKind.UPDATE),))
    }
    assert result.log[0].policy is ConflictPolicy.CALENDAR_WINS
    scene.expected["crm-weekly"] = laptop_version
    run = await scene.vdir_sync()
    assert run.writes == frozenset()
    await scene.assert_converged()
    assert (await scene.crm_items())["crm-weekly"].event.description is None

    # 6. both sides change one event, crmflow syncs first: vdirsyncer sees the
    #    conflict and keeps the server's (the CRM's) version ("b wins")
    crm_version = await scene.crm_edit("crm-demo", location="Showroom")
    assert crm_log(await scene.crm_sync()) == {
        "crm-demo": (Branch.UPDATED, ((CALENDAR, WriteKind.UPDATE),))
    }
    scene.local_edit("crm-demo", title="Product demo (laptop)")
    run = await scene.vdir_sync()
    assert run.conflicts() == {"crm-demo"}
    assert run.writes == {VdirWrite(UPDATE, "crm-demo", LOCAL)}
    scene.expected["crm-demo"] = crm_version
    assert crm_log(await scene.crm_sync()) == {}
    await scene.assert_converged()

    # 7. both sync at the same time, with changes on both sides (different
    #    events): each pushes its own changes whatever the other one does
    await scene.crm_create(berlin("crm-late", "Late addition", 8, 10))
    scene.expected["crm-kickoff@crmflow.test"] = await scene.crm_edit(
        "crm-kickoff@crmflow.test", description="Agenda:\n1. scope\n2. budget"
    )
    scene.local_create(
        CalendarEvent(
            ical_uid="local-standup",
            title="Standup",
            span=timed_span(
                dt.datetime(2026, 6, 9, 8, 30),
                dt.datetime(2026, 6, 9, 8, 45),
                "Europe/Berlin",
            ),
        )
    )
    scene.expected["crm-weekly"] = scene.local_edit("crm-weekly", location="Zoom")
    scene.local_delete("local-holiday")
    since = scene.server.log_file.stat().st_size
    async with asyncio.TaskGroup() as both:
        vdir_task = both.create_task(scene.vdir_sync())
        crm_task = both.create_task(scene.crm_sync_once_vdirsyncer_talks(since))
    run, result = vdir_task.result(), crm_task.result()
    assert run.returncode == 0
    assert result.errors == ()
    assert result.conflicts == ()
    assert {(w.kind, w.ident) for w in run.writes if w.storage == REMOTE} == {
        (UPLOAD, "local-standup"),
        (UPDATE, "crm-weekly"),
        (DELETE, "local-holiday"),
    }
    calendar_writes = {
        entry.ident
        for entry in result.log
        if any(w.side is CALENDAR for w in entry.writes)
    }
    assert calendar_writes == {"crm-late", "crm-kickoff@crmflow.test"}
    await scene.assert_server_as_expected()

    # 8. one more round each: everything converges, and then stays put
    await scene.vdir_sync()
    await scene.crm_sync()
    await scene.vdir_sync()
    await scene.assert_converged()
    assert sorted(scene.expected) == [
        "crm-demo",
        "crm-kickoff@crmflow.test",
        "crm-late",
        "crm-weekly",
        "local-lunch",
        "local-standup",
    ]
    assert (await scene.crm_sync()).writes == ()
    assert (await scene.vdir_sync()).writes == frozenset()
