"""crmflow and vdirsyncer sync the same Radicale calendar, interleaved.

Three parties share one CalDAV collection on a real Radicale
(``tests/servers/radicale.py``):

* crmflow, the product's path: a user's CalDAV integration connected with
  :func:`~crmflow.connections.credentials.connect_caldav` against Radicale, the
  collection added as a calendar account, and each run one
  :meth:`CalendarSync.sync <crmflow.services.calendar_sync.CalendarSync.sync>`
  on the test's database (SQLite and PostgreSQL). The test changes the CRM
  through :class:`~crmflow.store.repositories.AppointmentRepository`, as the
  CRM's own UI does, and reads the CRM back from the appointments table;
* vdirsyncer, an independent CalDAV client, syncs it with a folder of ``.ics``
  files (``tests/servers/vdirsyncer.py``), which the test edits as a local
  calendar app would (files written with icalendar, alarms and ``X-``
  properties included);
* the test reads the collection itself with one ``calendar-query`` REPORT.

Rounds: appointments made in the CRM reach the folder; files created, edited
and deleted in the folder reach the CRM (a deletion cancels the appointment,
the account's default); CRM edits and deletions reach the folder; an event
changed on both sides is first held as an open conflict by the account's
``manual`` strategy (nothing written) and then settled by the strategy the
test switches to (``crm_wins`` once, ``calendar_wins`` once) or, when crmflow
synced first, by vdirsyncer's ``b wins``; one round runs vdirsyncer and
crmflow at the same time. What each crmflow run wrote is read from the
outcome: appointment rows (new, new version, cancelled, gone) and Radicale's
ETags before and after, checked against the run's counters in the sync log.
After each settled round the CRM's appointments, Radicale and the folder hold
the same UIDs, each once, with the content the test expects (compared by
``CalendarEvent.content_hash`` after parsing with the adapter's iCalendar
mapping); at the end one more round writes nothing.

Every crmflow run but the conflict rounds uses the ``manual`` strategy and
must succeed with no conflict.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator, Set
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from defusedxml.ElementTree import fromstring
from icalendar import Alarm, Calendar, Event
from sqlalchemy import select

from crmflow.bootstrap import Services
from crmflow.config import Settings
from crmflow.connections.credentials import connect_caldav
from crmflow.connections.service import Integrations
from crmflow.domain.appointments import (
    AppointmentStatus,
    ResponseStatus,
    TimeSpan,
    all_day_span,
    timed_span,
)
from crmflow.domain.calendar import CalendarEvent
from crmflow.domain.calendar_accounts import (
    ConflictStatus,
    RunStatus,
    Strategy,
    SyncRunInfo,
)
from crmflow.domain.crm import AppointmentDraft, Attendee
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.providers.caldav._ical import from_ical
from crmflow.services.calendar_sync import CalendarSync
from crmflow.store import models
from crmflow.store.appointment_sync import event_of
from crmflow.store.repositories import AppointmentRepository
from crmflow.sync import WriteKind
from tests.conftest import Tenants
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
from tests.sync.caldav_helpers import USER, collections_of

pytestmark = pytest.mark.servers

#: what a crmflow run did to one event on one side
CREATED, UPDATED, DELETED = WriteKind.CREATE, WriteKind.UPDATE, WriteKind.DELETE
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


# ---------------------------------------------------------------- events


def berlin_span(day: int, hour: int) -> TimeSpan:
    """One hour on a day of June 2026, Berlin time."""
    return timed_span(
        dt.datetime(2026, 6, day, hour),
        dt.datetime(2026, 6, day, hour + 1),
        "Europe/Berlin",
    )


def event_of_draft(uid: str, draft: AppointmentDraft) -> CalendarEvent:
    """The calendar event an appointment made from ``draft`` stands for."""
    return CalendarEvent(
        ical_uid=uid,
        title=draft.title,
        span=draft.span,
        description=draft.description,
        location=draft.location,
        attendees=tuple(draft.attendees),
        recurrence=(f"RRULE:{draft.recurrence_rule}",) if draft.recurrence_rule else (),
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


@dataclass(frozen=True)
class Stored:
    """An appointment row as the test reads it back."""

    id: uuid.UUID
    version: int
    status: AppointmentStatus
    event: CalendarEvent


@dataclass(frozen=True)
class Writes:
    """What changed on each side during a crmflow run, per UID; a cancelled
    appointment counts as a deletion (the account's ``cancel`` delete mode)."""

    crm: dict[str, WriteKind]
    calendar: dict[str, WriteKind]


def _diff(
    before: dict[str, Any], after: dict[str, Any], gone: Set[str] = frozenset()
) -> dict[str, WriteKind]:
    out: dict[str, WriteKind] = {}
    for uid in before.keys() | after.keys():
        if uid not in after or uid in gone:
            out[uid] = DELETED
        elif uid not in before:
            out[uid] = CREATED
        elif before[uid] != after[uid]:
            out[uid] = UPDATED
    return out


@dataclass
class Scene:
    """The three parties, and what every one of them should hold."""

    services: Services
    ctx: TenantContext
    sync: CalendarSync
    account_id: uuid.UUID
    vdir: Vdirsyncer
    server: RadicaleServer
    url: str
    #: UID -> the event all three should hold once the round is synced
    expected: dict[str, CalendarEvent] = field(default_factory=dict)
    #: UIDs deleted in the folder: their appointments are kept, cancelled
    cancelled: set[str] = field(default_factory=set)

    # ------------------------------------------------------------ syncing

    async def set_strategy(self, strategy: Strategy) -> None:
        account = await self.sync.update_account(
            self.ctx, self.account_id, {"strategy": strategy.value}
        )
        assert account.strategy is strategy

    async def crm_sync_run(self) -> SyncRunInfo:
        """One crmflow run of the service; any failing event fails the test."""
        run = await self.sync.sync(self.ctx, self.account_id)
        assert run.status is RunStatus.SUCCESS, run.errors
        assert run.errors == ()
        return run

    async def crm_sync(self, *, conflicts: int = 0) -> Writes:
        """One crmflow run with nothing else writing; returns what it wrote,
        read from the appointments and Radicale, which must agree with the
        run's counters in the sync log."""
        crm_before = await self.crm_snapshot()
        server_before = await self.server_etags()
        run = await self.crm_sync_run()
        assert run.conflicts == conflicts
        writes = Writes(
            self.crm_writes(crm_before, await self.crm_snapshot()),
            _diff(server_before, await self.server_etags()),
        )
        kinds = [*writes.crm.values(), *writes.calendar.values()]
        assert (
            run.events_imported,
            run.events_exported,
            run.events_updated,
            run.events_deleted,
        ) == (
            list(writes.crm.values()).count(CREATED),
            list(writes.calendar.values()).count(CREATED),
            kinds.count(UPDATED),
            kinds.count(DELETED),
        ), (run, writes)
        logged = (await self.sync.runs(self.ctx, self.account_id, limit=1))[0]
        assert logged.id == run.id
        assert logged.status is RunStatus.SUCCESS
        return writes

    async def crm_sync_once_vdirsyncer_talks(self, since: int) -> SyncRunInfo:
        """A crmflow run started as soon as Radicale logs a request of
        vdirsyncer after byte ``since`` of its log: vdirsyncer spends about half
        a second starting up, and crmflow's run is short, so started together
        they would barely overlap."""
        deadline = time.monotonic() + VDIRSYNCER_FIRST_REQUEST_S
        while VDIRSYNCER_AGENT not in _log_after(self.server, since):
            assert time.monotonic() < deadline, "vdirsyncer sent no request"
            await asyncio.sleep(LOG_POLL_S)
        return await self.crm_sync_run()

    async def vdir_sync(self) -> VdirsyncerRun:
        """One vdirsyncer run; a non-zero exit fails the test."""
        return await self.vdir.sync_async()

    # ------------------------------------------------------------ the CRM side

    async def crm_rows(self) -> dict[str, Stored]:
        """The organization's appointments by UID, from the database."""
        async with self.services.db.tenant(self.ctx) as session:
            rows = await session.scalars(
                select(models.Appointment).where(
                    models.Appointment.organization_id == self.ctx.organization_id
                )
            )
            found = [
                (
                    row.ical_uid,
                    Stored(
                        row.id,
                        row.version,
                        AppointmentStatus(row.status),
                        event_of(row),
                    ),
                )
                for row in rows
            ]
        uids = [uid for uid, _ in found]
        assert len(uids) == len(set(uids)), f"duplicate UIDs in the CRM: {uids}"
        return dict(found)

    async def crm_snapshot(self) -> dict[str, tuple[int, AppointmentStatus]]:
        return {
            uid: (row.version, row.status)
            for uid, row in (await self.crm_rows()).items()
        }

    @staticmethod
    def crm_writes(
        before: dict[str, tuple[int, AppointmentStatus]],
        after: dict[str, tuple[int, AppointmentStatus]],
    ) -> dict[str, WriteKind]:
        cancelled = {
            uid
            for uid, (_, status) in after.items()
            if status is AppointmentStatus.CANCELLED
            and before.get(uid, (0, None))[1] is not AppointmentStatus.CANCELLED
        }
        return _diff(before, after, cancelled)

    async def crm_events(self) -> dict[str, CalendarEvent]:
        """The CRM's live (not cancelled) appointments by UID."""
        return {
            uid: row.event
            for uid, row in (await self.crm_rows()).items()
            if row.status is not AppointmentStatus.CANCELLED
        }

    async def crm_create(self, draft: AppointmentDraft) -> str:
        """Create an appointment as the CRM's UI does; returns its UID."""
        async with self.services.db.tenant(self.ctx) as session:
            made = await AppointmentRepository(session).create(draft)
        uid = next(
            uid for uid, row in (await self.crm_rows()).items() if row.id == made.id
        )
        event = event_of_draft(uid, draft)
        assert (await self.crm_events())[uid].content_hash() == event.content_hash()
        self.expected[uid] = event
        return uid

    async def crm_edit(self, uid: str, **changes: Any) -> CalendarEvent:
        """Change fields of the appointment (``AppointmentDraft`` names) as the
        CRM's UI does; returns the event it now stands for."""
        row = (await self.crm_rows())[uid]
        assert row.event.content_hash() == self.expected[uid].content_hash()
        async with self.services.db.tenant(self.ctx) as session:
            repository = AppointmentRepository(session)
            current = await repository.get(row.id)
            draft = AppointmentDraft(
                title=current.title,
                span=current.span,
                description=current.description,
                location=current.location,
                attendees=current.attendees,
                status=current.status,
                recurrence_rule=current.recurrence_rule,
            )
            await repository.update(
                row.id, replace(draft, **changes), expected_version=current.version
            )
        wanted = dict(changes)
        if "recurrence_rule" in wanted:
            rule = wanted.pop("recurrence_rule")
            wanted["recurrence"] = (f"RRULE:{rule}",) if rule else ()
        edited = (await self.crm_events())[uid]
        assert (
            edited.content_hash()
            == replace(self.expected[uid], **wanted).content_hash()
        )
        return edited

    async def crm_delete(self, uid: str) -> None:
        row = (await self.crm_rows())[uid]
        async with self.services.db.tenant(self.ctx) as session:
            await AppointmentRepository(session).delete(
                row.id, expected_version=row.version
            )
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
        """Delete the folder's file; the appointment of a deleted event is
        expected to be cancelled, not removed."""
        self.local_paths()[uid].unlink()
        del self.expected[uid]
        self.cancelled.add(uid)

    # ------------------------------------------------------------ reading back

    async def server_items(self) -> dict[str, tuple[str, CalendarEvent]]:
        """Radicale's events by UID, with their ETags: one ``calendar-query``
        REPORT."""
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
        items: dict[str, tuple[str, CalendarEvent]] = {}
        for item in fromstring(response.content).iter(f"{{{DAV}}}response"):
            data = item.find(f".//{{{CALDAV}}}calendar-data")
            if data is None or not data.text:
                continue
            event = parse(data.text)
            assert event.ical_uid not in items, f"{event.ical_uid} twice on Radicale"
            etag = item.findtext(f".//{{{DAV}}}getetag") or ""
            assert etag, f"{event.ical_uid} has no ETag"
            items[event.ical_uid] = (etag, event)
        return items

    async def server_events(self) -> dict[str, CalendarEvent]:
        return {uid: event for uid, (_, event) in (await self.server_items()).items()}

    async def server_etags(self) -> dict[str, str]:
        return {uid: etag for uid, (etag, _) in (await self.server_items()).items()}

    def local_events(self) -> dict[str, CalendarEvent]:
        return {
            uid: parse(path.read_bytes()) for uid, path in self.local_paths().items()
        }

    async def assert_server_as_expected(self) -> None:
        assert_same("Radicale", await self.server_events(), self.expected)

    async def assert_converged(self) -> None:
        """The CRM's live appointments, Radicale and the folder hold the
        expected events, each once; events deleted in the folder are cancelled
        appointments in the CRM."""
        assert_same("the CRM", await self.crm_events(), self.expected)
        rows = await self.crm_rows()
        assert {
            uid
            for uid, row in rows.items()
            if row.status is AppointmentStatus.CANCELLED
        } == self.cancelled
        await self.assert_server_as_expected()
        assert_same("the folder", self.local_events(), self.expected)
        # every open conflict is settled
        assert await self.sync.conflicts(self.ctx, account_id=self.account_id) == []


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
async def scene(
    vdirsyncer_command: list[str],
    radicale: RadicaleServer,
    collection_url: str,
    services: Services,
    settings: Settings,
    tenants: Tenants,
    tmp_path: Path,
) -> Scene:
    """A CRM user (alice of org A) with her Radicale account connected as a
    CalDAV integration and the fresh collection added as a calendar account
    (two-way, ``manual`` strategy, the service's defaults otherwise)."""
    ctx = tenants.alice.ctx
    connected = await connect_caldav(
        services,
        ctx,
        username=USER,
        password=Secret(radicale.users[USER]),
        url=radicale.url,
    )
    sync = CalendarSync(Integrations(services.db, services.vault, settings))
    account = await sync.add_account(ctx, connected.integration.id, collection_url)
    assert account.strategy is Strategy.MANUAL
    return Scene(
        services=services,
        ctx=ctx,
        sync=sync,
        account_id=account.id,
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
    # 1. the CRM's appointments reach Radicale, then the folder
    kickoff = await scene.crm_create(
        AppointmentDraft(
            title="Kickoff with Acme",
            span=berlin_span(1, 9),
            description="Agenda:\n1. scope\n2. timeline",
            location="Room 4",
            attendees=(
                Attendee("dana@acme.test", "Dana", ResponseStatus.ACCEPTED),
                Attendee("lee@acme.test"),
            ),
        )
    )
    offsite = await scene.crm_create(
        AppointmentDraft(
            title="Offsite",
            span=all_day_span(dt.date(2026, 6, 10), dt.date(2026, 6, 12), "UTC"),
        )
    )
    weekly = await scene.crm_create(
        AppointmentDraft(
            title="Pipeline review",
            span=berlin_span(1, 14),
            recurrence_rule="FREQ=WEEKLY;BYDAY=MO;COUNT=6",
        )
    )
    review = await scene.crm_create(
        AppointmentDraft(title="Contract review", span=berlin_span(2, 11))
    )
    assert await scene.crm_sync() == Writes(
        {}, dict.fromkeys([kickoff, offsite, weekly, review], CREATED)
    )
    await scene.vdir.discover_async()
    run = await scene.vdir_sync()
    assert run.writes == {VdirWrite(UPLOAD, uid, LOCAL) for uid in scene.expected}
    await scene.assert_converged()

    # 2. the folder creates, edits and deletes; the CRM follows (the deleted
    #    event's appointment is cancelled)
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
    scene.expected[kickoff] = scene.local_edit(
        kickoff, title="Kickoff with Acme (moved)", location="Room 7"
    )
    scene.local_delete(offsite)
    run = await scene.vdir_sync()
    assert run.writes == {
        VdirWrite(UPLOAD, "local-lunch", REMOTE),
        VdirWrite(UPLOAD, "local-holiday", REMOTE),
        VdirWrite(UPDATE, kickoff, REMOTE),
        VdirWrite(DELETE, offsite, REMOTE),
    }
    assert await scene.crm_sync() == Writes(
        {
            "local-lunch": CREATED,
            "local-holiday": CREATED,
            kickoff: UPDATED,
            offsite: DELETED,
        },
        {},
    )
    await scene.assert_converged()

    # 3. the CRM edits, deletes and creates; the folder follows
    scene.expected[weekly] = await scene.crm_edit(
        weekly,
        title="Pipeline review (longer series)",
        recurrence_rule="FREQ=WEEKLY;BYDAY=MO;COUNT=8",
    )
    await scene.crm_delete(review)
    demo = await scene.crm_create(
        AppointmentDraft(title="Product demo", span=berlin_span(5, 15))
    )
    assert await scene.crm_sync() == Writes(
        {}, {weekly: UPDATED, review: DELETED, demo: CREATED}
    )
    run = await scene.vdir_sync()
    assert run.writes == {
        VdirWrite(UPDATE, weekly, LOCAL),
        VdirWrite(DELETE, review, LOCAL),
        VdirWrite(UPLOAD, demo, LOCAL),
    }
    await scene.assert_converged()
    assert review not in await scene.crm_rows()

    # 4. both sides change one event; vdirsyncer uploads first, so crmflow sees
    #    the conflict: the manual strategy holds it open with both versions and
    #    writes nothing; switched to crm_wins, the CRM's version overwrites the
    #    folder's
    crm_version = await scene.crm_edit("local-lunch", title="Lunch with Dana (CRM)")
    laptop_version = scene.local_edit(
        "local-lunch", title="Lunch with Dana (laptop)", location="Café Nord"
    )
    run = await scene.vdir_sync()
    assert run.writes == {VdirWrite(UPDATE, "local-lunch", REMOTE)}
    assert await scene.crm_sync(conflicts=1) == Writes({}, {})
    [conflict] = await scene.sync.conflicts(scene.ctx, account_id=scene.account_id)
    assert conflict.ical_uid == "local-lunch"
    assert conflict.crm_event.content_hash() == crm_version.content_hash()
    assert conflict.calendar_event.content_hash() == laptop_version.content_hash()
    await scene.set_strategy(Strategy.CRM_WINS)
    assert await scene.crm_sync() == Writes({}, {"local-lunch": UPDATED})
    await scene.set_strategy(Strategy.MANUAL)
    settled = await scene.sync.conflict(scene.ctx, conflict.id)
    assert settled.status is ConflictStatus.RESOLVED
    scene.expected["local-lunch"] = crm_version
    run = await scene.vdir_sync()
    assert run.writes == {VdirWrite(UPDATE, "local-lunch", LOCAL)}
    await scene.assert_converged()
    assert scene.local_events()["local-lunch"].location == "Deli on 5th"

    # 5. the same with calendar_wins: the folder's version reaches the CRM
    crm_version = await scene.crm_edit(weekly, description="Bring the forecast")
    laptop_version = scene.local_edit(weekly, title="Pipeline review (laptop)")
    run = await scene.vdir_sync()
    assert run.writes == {VdirWrite(UPDATE, weekly, REMOTE)}
    assert await scene.crm_sync(conflicts=1) == Writes({}, {})
    [conflict] = await scene.sync.conflicts(scene.ctx, account_id=scene.account_id)
    assert conflict.ical_uid == weekly
    assert conflict.crm_event.content_hash() == crm_version.content_hash()
    assert conflict.calendar_event.content_hash() == laptop_version.content_hash()
    await scene.set_strategy(Strategy.CALENDAR_WINS)
    assert await scene.crm_sync() == Writes({weekly: UPDATED}, {})
    await scene.set_strategy(Strategy.MANUAL)
    settled = await scene.sync.conflict(scene.ctx, conflict.id)
    assert settled.status is ConflictStatus.RESOLVED
    scene.expected[weekly] = laptop_version
    run = await scene.vdir_sync()
    assert run.writes == frozenset()
    await scene.assert_converged()
    assert (await scene.crm_events())[weekly].description is None

    # 6. both sides change one event, crmflow syncs first: vdirsyncer sees the
    #    conflict and keeps the server's (the CRM's) version ("b wins")
    crm_version = await scene.crm_edit(demo, location="Showroom")
    assert await scene.crm_sync() == Writes({}, {demo: UPDATED})
    scene.local_edit(demo, title="Product demo (laptop)")
    run = await scene.vdir_sync()
    assert run.conflicts() == {demo}
    assert run.writes == {VdirWrite(UPDATE, demo, LOCAL)}
    scene.expected[demo] = crm_version
    assert await scene.crm_sync() == Writes({}, {})
    await scene.assert_converged()

    # 7. both sync at the same time, with changes on both sides (different
    #    events): each pushes its own changes whatever the other one does
    late = await scene.crm_create(
        AppointmentDraft(title="Late addition", span=berlin_span(8, 10))
    )
    scene.expected[kickoff] = await scene.crm_edit(
        kickoff, description="Agenda:\n1. scope\n2. budget"
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
    scene.expected[weekly] = scene.local_edit(weekly, location="Zoom")
    scene.local_delete("local-holiday")
    # only crmflow writes appointments: what changed there is its doing
    crm_before = await scene.crm_snapshot()
    server_before = await scene.server_etags()
    since = scene.server.log_file.stat().st_size
    async with asyncio.TaskGroup() as both:
        vdir_task = both.create_task(scene.vdir_sync())
        crm_task = both.create_task(scene.crm_sync_once_vdirsyncer_talks(since))
    run = vdir_task.result()
    crm_run = crm_task.result()
    crm_writes = scene.crm_writes(crm_before, await scene.crm_snapshot())
    assert run.returncode == 0
    assert {(w.kind, w.ident) for w in run.writes if w.storage == REMOTE} == {
        (UPLOAD, "local-standup"),
        (UPDATE, weekly),
        (DELETE, "local-holiday"),
    }
    # crmflow wrote to the CRM at most what vdirsyncer had uploaded by then ...
    assert (
        crm_writes.items()
        <= {
            "local-standup": CREATED,
            weekly: UPDATED,
            "local-holiday": DELETED,
        }.items()
    )
    # ... and to the calendar its own two changes (its counters less its CRM
    # writes), which are on Radicale next to vdirsyncer's
    kinds = list(crm_writes.values())
    assert crm_run.conflicts == 0
    assert crm_run.events_imported == kinds.count(CREATED)
    assert crm_run.events_exported == 1
    assert crm_run.events_updated - kinds.count(UPDATED) == 1
    assert crm_run.events_deleted == kinds.count(DELETED)
    assert _diff(server_before, await scene.server_etags()) == {
        late: CREATED,
        kickoff: UPDATED,
        "local-standup": CREATED,
        weekly: UPDATED,
        "local-holiday": DELETED,
    }
    await scene.assert_server_as_expected()

    # 8. one more round each: everything converges, and then stays put
    await scene.vdir_sync()
    await scene.crm_sync()
    await scene.vdir_sync()
    await scene.assert_converged()
    assert sorted(scene.expected) == sorted(
        [demo, kickoff, late, weekly, "local-lunch", "local-standup"]
    )
    assert scene.cancelled == {offsite, "local-holiday"}
    assert await scene.crm_sync() == Writes({}, {})
    assert (await scene.vdir_sync()).writes == frozenset()
