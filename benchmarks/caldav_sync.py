"""Benchmark: crmflow's CalDAV sync against vdirsyncer and the server's floor.

Run from the repository root (it reuses the test suite's server helpers):
``.venv/bin/python -m benchmarks.caldav_sync [--events N] [--changes K]
[--repeat R] [--repeat-initial I] [--crm sqlite|memory] [--profile]``

Starts a Radicale on 127.0.0.1 (``tests/servers/radicale.py``), fills one
calendar with N events (default 1,000) through plain PUTs, then measures three
phases, each for three clients:

=========== =================================================================
phase       what changed on the server since the client's last sync
=========== =================================================================
initial     everything: the client has never synced (empty CRM side, fresh
            vdirsyncer folder)
incremental K events (default 10) rewritten with new content
no change   nothing
=========== =================================================================

* **crmflow**, ``--crm sqlite`` (the default): the product's path, one
  :meth:`CalendarSync.sync <crmflow.services.calendar_sync.CalendarSync.sync>`
  of a CalDAV calendar account on a fresh SQLite database per pair (migrated,
  a user, the integration made by ``connect_caldav`` against Radicale, the
  calendar added; none of that measured): lease, run log, the CRM
  appointments, the status store and the engine. ``--crm memory``: only
  :func:`crmflow.sync.sync_pair` with ``CalDAVCalendar`` (inside
  ``async with``, as the service does) against ``MemoryCalendar`` and
  ``InMemoryStatusRepository``, the adapter and engine alone.
* **vdirsyncer**: ``vdirsyncer sync`` of the same calendar to a local folder
  (``tests/servers/vdirsyncer.py``), timed as a subprocess, so its ~0.5 s of
  interpreter start-up and imports is included.
* **floor**: the least work Radicale must do for the phase, requested with raw
  httpx on an open client and not parsed beyond the hrefs the next request
  needs: initial = one ``calendar-query`` REPORT returning every event with its
  calendar data; incremental = one ``sync-collection`` REPORT plus one
  ``calendar-multiget`` of the changed events; no change = one
  ``sync-collection`` REPORT.

Each figure is the median of R repetitions (I for the initial phase, which is
slower), the three clients taking turns first. Requests and the server's own
time per client come from Radicale's log (every request is logged with its
duration), read between the client's start and end. The product's goal is
crmflow within 1.5x of the floor in every phase. A second table splits
instrumented crmflow runs (not the timed ones) into HTTP round trips, building
the httpx client, XML and iCalendar parsing, the CRM side, the status store,
the service's commits before each calendar call, the adapter time hidden
behind the run's reads (the change feed is requested before the engine starts
and answered while it reads the status and the CRM side; subtracted, so the
parts add up to the run), the engine and the rest of the service;
``--profile`` adds a cProfile of one crmflow run per phase. All
crmflow runs share one event loop (``asyncio.Runner``), as in a worker.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import cProfile
import datetime as dt
import io
import pstats
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from defusedxml.ElementTree import fromstring
from rich.console import Console
from rich.table import Table
from tests.servers.radicale import RadicaleServer, _running
from tests.servers.vdirsyncer import LOCAL, Vdirsyncer, VdirWriteKind
from tests.sync.caldav_helpers import USER, Collections

from crmflow.bootstrap import Services, start_services
from crmflow.config import load_settings
from crmflow.connections.credentials import connect_caldav
from crmflow.connections.service import Integrations
from crmflow.domain.appointments import all_day_span, timed_span
from crmflow.domain.calendar import Attendee, CalendarEvent
from crmflow.domain.calendar_accounts import RunStatus
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.providers.caldav import CalDAVCalendar
from crmflow.providers.caldav._ical import to_ical
from crmflow.providers.memory import MemoryCalendar
from crmflow.services import calendar_sync
from crmflow.services.calendar_sides import (
    CheckpointedCalendar,
    CrmCalendar,
    DbStatusRepository,
)
from crmflow.services.calendar_sync import CalendarSync
from crmflow.store.crypto import generate_key_entry
from crmflow.store.db import Database
from crmflow.store.identity import (
    enter_organization,
    provision_organization,
    provision_user,
)
from crmflow.store.migrate import upgrade
from crmflow.sync import SideName, WriteKind, sync_pair
from crmflow.sync.status import InMemoryStatusRepository

#: the product's goal: crmflow's time / the floor's time, in every phase
GOAL_RATIO = 1.5
#: the floor's requests carry this User-Agent (crmflow's are python-httpx's)
FLOOR_AGENT = "crmflow-benchmark-floor"
#: seconds an HTTP request of the benchmark may take
HTTP_TIMEOUT_S = 120.0

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"

_CALENDAR_QUERY = b"""<?xml version="1.0" encoding="utf-8"?>
<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><d:getetag/><c:calendar-data/></d:prop>
  <c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter>
</c:calendar-query>"""

_SYNC_COLLECTION = """<?xml version="1.0" encoding="utf-8"?>
<d:sync-collection xmlns:d="DAV:">
  <d:sync-token>{token}</d:sync-token>
  <d:sync-level>1</d:sync-level>
  <d:prop><d:getetag/></d:prop>
</d:sync-collection>"""

_MULTIGET = """<?xml version="1.0" encoding="utf-8"?>
<c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><d:getetag/><c:calendar-data/></d:prop>
  {hrefs}
</c:calendar-multiget>"""

_TOKEN_QUERY = b"""<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:"><d:prop><d:sync-token/></d:prop></d:propfind>"""

# Radicale's INFO lines: "<METHOD> request for '<path>' ... received from ..."
# and "<METHOD> response status for '<path>' ... in 0.002 seconds ..."
_REQUEST_LINE = re.compile(rb"\] \[INFO\] [A-Z]+ request for ")
_RESPONSE_TIME = re.compile(
    rb"\] \[INFO\] [A-Z]+ response status for .* in ([0-9.]+) seconds"
)


# ---------------------------------------------------------------- the calendar


def bench_event(i: int, revision: int = 0) -> CalendarEvent:
    """Event ``i``: mostly one-hour meetings in Berlin time with a description,
    a location and two attendees; every 10th all-day, every 25th weekly."""
    day = dt.date(2026, 1, 5) + dt.timedelta(days=i % 300)
    suffix = f" (rev {revision})" if revision else ""
    fields: dict[str, Any] = {
        "description": f"Account review {i}.\nAgenda: pipeline, renewals.{suffix}",
        "location": f"Room {i % 12 + 1}",
        "attendees": (
            Attendee(f"owner{i % 7}@crm.example", f"Owner {i % 7}"),
            Attendee(f"contact{i}@customer.example"),
        ),
    }
    if i % 25 == 0:
        fields["recurrence"] = ("RRULE:FREQ=WEEKLY;COUNT=10",)
    if i % 10 == 0:
        span = all_day_span(day, None, "Europe/Berlin")
    else:
        start = dt.datetime.combine(day, dt.time(8 + i % 9))
        span = timed_span(start, start + dt.timedelta(hours=1), "Europe/Berlin")
    return CalendarEvent(
        ical_uid=f"bench-{i:05d}@crmflow.test",
        title=f"Meeting {i}{suffix}",
        span=span,
        **fields,
    )


def href(url: str, i: int) -> str:
    return f"{url}bench-{i:05d}.ics"


def put_events(server: RadicaleServer, url: str, events: dict[int, bytes]) -> None:
    """PUT each event's calendar data (not measured)."""
    with httpx.Client(
        auth=(USER, server.users[USER]),
        headers={"Content-Type": "text/calendar; charset=utf-8"},
        timeout=HTTP_TIMEOUT_S,
    ) as client:
        for i, data in events.items():
            response = client.put(href(url, i), content=data)
            if response.status_code not in (201, 204):
                raise RuntimeError(f"PUT {i}: {response.status_code} {response.text}")


# ---------------------------------------------------------------- measuring


@dataclass
class Sample:
    """One measured run of one client."""

    seconds: float
    requests: int
    #: the time Radicale itself spent on the requests (its log)
    server_seconds: float


@dataclass
class Phase:
    name: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    #: a remark printed under the table (the size of the initial calendar data)
    note: str = ""

    def add(self, client: str, sample: Sample) -> None:
        self.samples.setdefault(client, []).append(sample)

    def median(self, client: str) -> float:
        return statistics.median(s.seconds for s in self.samples[client])

    def requests(self, client: str) -> int:
        """The most requests one run of ``client`` made."""
        return max(s.requests for s in self.samples[client])

    def server_median(self, client: str) -> float:
        return statistics.median(s.server_seconds for s in self.samples[client])


class Log:
    """Radicale's log, read between two offsets."""

    def __init__(self, server: RadicaleServer) -> None:
        self.path = server.log_file

    def offset(self) -> int:
        return self.path.stat().st_size

    def since(self, offset: int) -> tuple[int, float]:
        """(requests, server seconds) logged after ``offset``."""
        with self.path.open("rb") as log:
            log.seek(offset)
            text = log.read()
        requests = len(_REQUEST_LINE.findall(text))
        seconds = sum(float(m) for m in _RESPONSE_TIME.findall(text))
        return requests, seconds


@dataclass
class Timing:
    """What the block of :func:`measured` may say about its own duration."""

    #: seconds, when the block timed itself (None: the block's wall time counts)
    seconds: float | None = None


@contextmanager
def measured(log: Log, phase: Phase, client: str) -> Iterator[Timing]:
    """Time the block; add its sample (requests from Radicale's log)."""
    offset = log.offset()
    timing = Timing()
    started = time.perf_counter()
    yield timing
    elapsed = time.perf_counter() - started
    if timing.seconds is not None:
        elapsed = timing.seconds
    # Radicale writes the response line after the body went out: wait for it
    time.sleep(0.05)
    requests, server_seconds = log.since(offset)
    phase.add(client, Sample(elapsed, requests, server_seconds))


# ---------------------------------------------------------------- the clients


@dataclass(frozen=True)
class Outcome:
    """What one crmflow run wrote."""

    imported: int
    updated: int
    #: every write, on either side
    writes: int


class Crmflow(abc.ABC):
    """One crmflow pair: a CRM side (empty at first), its sync status and the
    Radicale calendar; :meth:`sync` runs one sync on the shared event loop."""

    #: what the CRM side is, for the breakdown table
    label: str

    def __init__(
        self, runner: asyncio.Runner, server: RadicaleServer, url: str
    ) -> None:
        self.runner = runner
        self.server = server
        self.url = url

    @abc.abstractmethod
    async def run(self) -> Outcome:
        """One sync."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what the pair holds."""

    async def timed(self) -> tuple[Outcome, float]:
        started = time.perf_counter()
        outcome = await self.run()
        return outcome, time.perf_counter() - started

    def sync(self, timing: Timing | None = None) -> Outcome:
        """One run; its time inside the event loop goes to ``timing``."""
        outcome, seconds = self.runner.run(self.timed())
        if timing is not None:
            timing.seconds = seconds
        return outcome


class MemoryPair(Crmflow):
    """The engine alone: ``sync_pair`` with ``MemoryCalendar`` as the CRM."""

    label = "MemoryCalendar"

    def __init__(
        self, runner: asyncio.Runner, server: RadicaleServer, url: str
    ) -> None:
        super().__init__(runner, server, url)
        self.crm = MemoryCalendar()
        self.status = InMemoryStatusRepository()

    async def run(self) -> Outcome:
        password = Secret(self.server.users[USER])
        async with CalDAVCalendar(self.url, USER, password) as caldav:
            result = await sync_pair(self.crm, caldav, self.status)
        assert result.errors == (), result.errors
        assert all(w.side is SideName.CRM for w in result.writes)
        kinds = [w.kind for w in result.writes]
        return Outcome(
            kinds.count(WriteKind.CREATE), kinds.count(WriteKind.UPDATE), len(kinds)
        )

    async def close(self) -> None:
        """Nothing to release."""


class ServicePair(Crmflow):
    """The product's path: ``CalendarSync.sync`` of a CalDAV calendar account
    on its own SQLite database."""

    label = "SQLite appointments"
    services: Services
    service: CalendarSync
    ctx: TenantContext

    async def open(self, folder: Path) -> None:
        """On the migrated database ``folder/crm.db``: a user, the CalDAV
        integration (discovery against Radicale) and the calendar account."""
        url = f"sqlite:///{folder / 'crm.db'}"
        settings = load_settings(
            database_url=url,
            encryption_keys=generate_key_entry("bench"),
            session_secret="b" * 40,
            data_dir=folder,
        )
        admin = Database(url)
        try:
            org = await provision_organization(admin, "Bench")
            user = await provision_user(
                admin,
                "rep@bench.test",
                "bench-pw-123456",
                organization_id=org,
                role=Role.ADMIN,
            )
        finally:
            await admin.dispose()
        self.services = await start_services(settings)
        self.ctx = await enter_organization(self.services.db, user, org)
        connected = await connect_caldav(
            self.services,
            self.ctx,
            username=USER,
            password=Secret(self.server.users[USER]),
            url=self.server.url,
        )
        self.service = CalendarSync(
            Integrations(self.services.db, self.services.vault, settings)
        )
        account = await self.service.add_account(
            self.ctx, connected.integration.id, self.url
        )
        self.account_id = account.id

    async def run(self) -> Outcome:
        run = await self.service.sync(self.ctx, self.account_id)
        assert run.status is RunStatus.SUCCESS, run.errors
        writes = (
            run.events_imported
            + run.events_exported
            + run.events_updated
            + run.events_deleted
        )
        return Outcome(run.events_imported, run.events_updated, writes)

    async def close(self) -> None:
        await self.services.close()


class Pairs:
    """Makes crmflow pairs of one kind; closes them at the end."""

    def __init__(
        self,
        kind: str,
        runner: asyncio.Runner,
        server: RadicaleServer,
        url: str,
        work: Path,
    ) -> None:
        self.kind = kind
        self.runner = runner
        self.server = server
        self.url = url
        self.work = work
        self.made: list[Crmflow] = []
        self._template: Path | None = None

    def template(self) -> Path:
        """A migrated SQLite database, copied for each pair."""
        if self._template is None:
            self._template = self.work / "template.db"
            upgrade(f"sqlite:///{self._template}")
        return self._template

    def new(self) -> Crmflow:
        pair: Crmflow
        if self.kind == "memory":
            pair = MemoryPair(self.runner, self.server, self.url)
        else:
            service = ServicePair(self.runner, self.server, self.url)
            folder = self.work / f"crm-{len(self.made) + 1}"
            folder.mkdir(parents=True)
            shutil.copyfile(self.template(), folder / "crm.db")
            self.runner.run(service.open(folder))
            pair = service
        self.made.append(pair)
        return pair

    def close(self) -> None:
        for pair in self.made:
            self.runner.run(pair.close())


class Floor:
    """The server's floor: raw requests on an open httpx client."""

    def __init__(self, server: RadicaleServer, url: str) -> None:
        self.url = url
        self.client = httpx.Client(
            auth=(USER, server.users[USER]),
            headers={"User-Agent": FLOOR_AGENT},
            timeout=HTTP_TIMEOUT_S,
        )

    def close(self) -> None:
        self.client.close()

    def _report(self, body: bytes, depth: str) -> bytes:
        response = self.client.request(
            "REPORT",
            self.url,
            content=body,
            headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
        )
        if response.status_code != 207:
            raise RuntimeError(f"REPORT: {response.status_code} {response.text[:500]}")
        return response.content

    def token(self) -> str:
        """The collection's current sync-token (not measured)."""
        response = self.client.request(
            "PROPFIND",
            self.url,
            content=_TOKEN_QUERY,
            headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
        )
        element = fromstring(response.content).find(f".//{{{DAV}}}sync-token")
        assert element is not None
        assert element.text
        return element.text

    def calendar_query(self) -> bytes:
        return self._report(_CALENDAR_QUERY, "1")

    def sync_collection(self, token: str) -> bytes:
        return self._report(_SYNC_COLLECTION.format(token=token).encode(), "0")

    def multiget(self, hrefs: list[str]) -> bytes:
        body = _MULTIGET.format(
            hrefs="\n  ".join(f"<d:href>{h}</d:href>" for h in hrefs)
        )
        return self._report(body.encode(), "1")


def changed_hrefs(sync_report: bytes) -> list[str]:
    """The hrefs a sync-collection answer reports as changed (not deleted)."""
    hrefs = []
    for response in fromstring(sync_report).iter(f"{{{DAV}}}response"):
        href_element = response.find(f"{{{DAV}}}href")
        if href_element is None or not href_element.text:
            continue
        if response.find(f"{{{DAV}}}propstat") is not None:
            hrefs.append(href_element.text)
    return hrefs


def count_responses(report: bytes) -> int:
    return sum(1 for _ in fromstring(report).iter(f"{{{DAV}}}response"))


# ---------------------------------------------------------------- where time goes


class Stopwatch:
    """Seconds spent per named part of a crmflow run (a part entered again
    inside itself is counted once)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._open: set[str] = set()

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        if name in self._open:
            yield
            return
        self._open.add(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self._open.discard(name)
            elapsed = time.perf_counter() - started
            self.totals[name] = self.totals.get(name, 0.0) + elapsed


_PORT = ("list", "list_changes", "get_many", "create", "update", "delete")

#: (class, methods, part) timed by :func:`instrumented`
_TIMED: list[tuple[type, tuple[str, ...], str]] = [
    (CalDAVCalendar, _PORT, "caldav"),
    (CalDAVCalendar, ("_request",), "request"),
    (CheckpointedCalendar, _PORT, "checkpointed"),
    (CheckpointedCalendar, ("_checkpoint",), "checkpoint"),
    (CrmCalendar, _PORT, "crm"),
    (MemoryCalendar, _PORT, "crm"),
    (DbStatusRepository, ("load", "commit"), "status"),
    (InMemoryStatusRepository, ("load", "commit"), "status"),
]


def _timed(original: Any, watch: Stopwatch, part: str) -> Any:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        with watch.part(part):
            return await original(*args, **kwargs)

    return timed


@contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name = value`` while the block runs (instrumentation for this
    benchmark only; an own attribute is restored, an inherited one removed
    again)."""
    own = name in vars(owner)
    saved = vars(owner).get(name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, saved)
        else:
            delattr(owner, name)


@contextmanager
def instrumented(watch: Stopwatch) -> Iterator[None]:
    """Time the adapter and its requests, the CRM side, the status store, the
    service's calendar calls, the engine run and every ``httpx.AsyncClient``
    made, while the block runs."""
    client_init = httpx.AsyncClient.__init__

    def init(client: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        with watch.part("client setup"):
            client_init(client, *args, **kwargs)

    # the service calls the engine through its module's name for it
    async def engine_run(*args: Any, **kwargs: Any) -> Any:
        with watch.part("engine run"):
            return await sync_pair(*args, **kwargs)

    with ExitStack() as stack:
        for cls, names, part in _TIMED:
            for name in names:
                timed = _timed(getattr(cls, name), watch, part)
                stack.enter_context(patched(cls, name, timed))
        stack.enter_context(patched(httpx.AsyncClient, "__init__", init))
        stack.enter_context(patched(calendar_sync, "sync_pair", engine_run))
        yield


@dataclass
class Breakdown:
    """Where one crmflow run's time went, in seconds."""

    phase: str
    total: float
    parts: dict[str, float]

    @classmethod
    def of(cls, phase: str, total: float, watch: Stopwatch, crm: str) -> Breakdown:
        t = watch.totals
        setup = t.get("client setup", 0.0)
        request = t.get("request", 0.0)
        caldav = t.get("caldav", 0.0)
        commits = t.get("checkpoint", 0.0)
        # how long the engine waited in the service's calendar calls (a
        # commit, then the adapter); the memory pair calls the adapter itself
        calendar = t.get("checkpointed", caldav)
        # adapter time the engine did not wait for: the service requests the
        # change feed before the engine starts, and the provider answers it
        # while the run reads its status and the CRM side
        ahead = max(0.0, caldav - (calendar - commits))
        store = t.get("crm", 0.0)
        status = t.get("status", 0.0)
        # the memory pair runs the engine directly: all of its time
        engine = t.get("engine run", total)
        return cls(
            phase,
            total,
            {
                "HTTP round trips": request - setup,
                "httpx client setup": setup,
                "XML + iCalendar parsing": caldav - request,
                f"CRM side ({crm})": store,
                "status load + commit": status,
                "service: commits before calendar calls": commits,
                "minus: adapter time hidden behind the reads": -ahead,
                "engine (plan, hashes, bookkeeping)": engine
                - calendar
                - store
                - status,
                "service: lease, run log, reads, final commit": total - engine,
            },
        )


def _median_breakdown(rows: list[Breakdown]) -> Breakdown:
    return Breakdown(
        rows[0].phase,
        statistics.median(row.total for row in rows),
        {
            part: statistics.median(row.parts[part] for row in rows)
            for part in rows[0].parts
        },
    )


def breakdown(pair: Crmflow, phase: str) -> Breakdown:
    """One instrumented crmflow run of ``pair`` (not one of the timed runs)."""
    watch = Stopwatch()
    with instrumented(watch):
        _, total = pair.runner.run(pair.timed())
    return Breakdown.of(phase, total, watch, pair.label)


def breakdown_table(rows: list[Breakdown]) -> Table:
    out = Table(
        title="Where a crmflow run spends its time (instrumented runs, "
        "median seconds per part)"
    )
    out.add_column("part")
    for row in rows:
        out.add_column(row.phase, justify="right")
    for part in rows[0].parts:
        out.add_row(part, *(f"{row.parts[part]:.3f}" for row in rows))
    out.add_row("total", *(f"{row.total:.3f}" for row in rows), style="bold")
    return out


# ---------------------------------------------------------------- phases


@dataclass
class Bench:
    server: RadicaleServer
    url: str
    events: int
    changes: int
    repeat: int
    repeat_initial: int
    work: Path
    pairs: Pairs
    log: Log = field(init=False)
    floor: Floor = field(init=False)

    def __post_init__(self) -> None:
        self.log = Log(self.server)
        self.floor = Floor(self.server, self.url)
        self._folders = 0

    def vdirsyncer(self) -> Vdirsyncer:
        """A fresh vdirsyncer pair with an empty folder (discovered, not synced)."""
        self._folders += 1
        vdir = Vdirsyncer(
            self.work / f"vdirsyncer-{self._folders}",
            self.url,
            USER,
            self.server.users[USER],
        )
        vdir.discover()
        return vdir

    @staticmethod
    def turns(rep: int, runs: dict[str, Callable[[], None]]) -> None:
        """Run the clients in a different order each repetition."""
        names = list(runs)
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name]()

    def initial(self) -> tuple[Phase, Crmflow, Vdirsyncer]:
        phase = Phase("initial")
        # warm-up, not measured: Radicale's item cache and the OS's file cache;
        # crmflow's lazy imports and zone caches (a worker process is warm)
        self.floor.calendar_query()
        self.pairs.new().sync()
        pairs: list[Crmflow] = []
        folders: list[Vdirsyncer] = []

        def crmflow() -> None:
            pair = self.pairs.new()
            with measured(self.log, phase, "crmflow") as timing:
                outcome = pair.sync(timing)
            assert outcome.imported == self.events, outcome
            pairs.append(pair)

        def vdirsyncer() -> None:
            vdir = self.vdirsyncer()
            with measured(self.log, phase, "vdirsyncer"):
                run = vdir.sync()
            assert len(vdir.ics_files()) == self.events, run.output[-2000:]
            folders.append(vdir)

        def floor() -> None:
            with measured(self.log, phase, "floor"):
                report = self.floor.calendar_query()
            assert count_responses(report) == self.events
            phase.note = f"calendar data: {len(report) / 1e6:.1f} MB"

        for rep in range(self.repeat_initial):
            self.turns(
                rep, {"crmflow": crmflow, "vdirsyncer": vdirsyncer, "floor": floor}
            )
        for extra in folders[:-1]:
            shutil.rmtree(extra.base, ignore_errors=True)
        return phase, pairs[-1], folders[-1]

    def incremental(self, pair: Crmflow, vdir: Vdirsyncer) -> Phase:
        phase = Phase("incremental")
        for rep in range(self.repeat):
            token = self.floor.token()
            first = (rep * self.changes * 7) % self.events
            changed = [(first + k * 7) % self.events for k in range(self.changes)]
            put_events(
                self.server,
                self.url,
                {i: to_ical(bench_event(i, revision=rep + 1)) for i in changed},
            )

            def crmflow() -> None:
                with measured(self.log, phase, "crmflow") as timing:
                    outcome = pair.sync(timing)
                assert outcome.updated == self.changes, outcome

            def vdirsyncer() -> None:
                with measured(self.log, phase, "vdirsyncer"):
                    run = vdir.sync()
                updates = [w for w in run.writes if w.storage == LOCAL]
                assert len(updates) == self.changes, run.output[-2000:]
                assert all(w.kind is VdirWriteKind.UPDATE for w in updates)

            def floor(token: str = token) -> None:
                with measured(self.log, phase, "floor"):
                    report = self.floor.sync_collection(token)
                    data = self.floor.multiget(changed_hrefs(report))
                assert count_responses(data) == self.changes

            self.turns(
                rep, {"crmflow": crmflow, "vdirsyncer": vdirsyncer, "floor": floor}
            )
        return phase

    def no_change(self, pair: Crmflow, vdir: Vdirsyncer) -> Phase:
        phase = Phase("no change")
        token = self.floor.token()

        def crmflow() -> None:
            with measured(self.log, phase, "crmflow") as timing:
                outcome = pair.sync(timing)
            assert outcome.writes == 0, outcome

        def vdirsyncer() -> None:
            with measured(self.log, phase, "vdirsyncer"):
                run = vdir.sync()
            assert run.writes == frozenset(), run.output[-2000:]

        def floor() -> None:
            with measured(self.log, phase, "floor"):
                report = self.floor.sync_collection(token)
            assert changed_hrefs(report) == []

        for rep in range(self.repeat):
            self.turns(
                rep, {"crmflow": crmflow, "vdirsyncer": vdirsyncer, "floor": floor}
            )
        return phase

    def breakdowns(self, pair: Crmflow) -> list[Breakdown]:
        """Instrumented crmflow runs per phase (after the timed ones), each
        part's median over the repetitions."""
        runs = max(1, self.repeat_initial)
        initial = [breakdown(self.pairs.new(), "initial") for _ in range(runs)]
        incremental = []
        for rep in range(runs):
            changed = [
                (rep * self.changes + k) % self.events for k in range(self.changes)
            ]
            put_events(
                self.server,
                self.url,
                {i: to_ical(bench_event(i, revision=50 + rep)) for i in changed},
            )
            incremental.append(breakdown(pair, "incremental"))
        breakdown(pair, "no change")  # reads back its own writes to the CRM side
        no_change = [breakdown(pair, "no change") for _ in range(runs)]
        return [_median_breakdown(rows) for rows in (initial, incremental, no_change)]

    def profile(self, pair: Crmflow) -> str:
        """cProfile of one crmflow run per phase, the top functions of each."""
        out = io.StringIO()

        def run(title: str, make: Callable[[], object]) -> None:
            profiler = cProfile.Profile()
            profiler.enable()
            make()
            profiler.disable()
            out.write(f"\n=== crmflow, {title} ===\n")
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("cumulative").print_stats(25)
            stats.sort_stats("tottime").print_stats(15)

        fresh = self.pairs.new()
        run("initial", fresh.sync)
        changed = list(range(3, 3 + self.changes))
        put_events(
            self.server,
            self.url,
            {i: to_ical(bench_event(i, revision=99)) for i in changed},
        )
        run("incremental", pair.sync)
        run("no change", pair.sync)
        return out.getvalue()


# ---------------------------------------------------------------- report


def table(phases: list[Phase], events: int, changes: int, crm_side: str) -> Table:
    out = Table(
        title=f"CalDAV sync of {events} events on Radicale, crmflow's CRM side: "
        f"{crm_side} (median seconds; goal: crmflow <= {GOAL_RATIO}x floor)"
    )
    for column in (
        "phase",
        "crmflow s",
        "vdirsyncer s",
        "floor s",
        "crmflow / floor",
        "vdirsyncer / floor",
        "requests c / v / f",
        "server s c / v / f",
    ):
        out.add_column(column, justify="left" if column == "phase" else "right")
    for phase in phases:
        crm, vdir, floor = (phase.median(c) for c in ("crmflow", "vdirsyncer", "floor"))
        ratio = crm / floor
        style = "green" if ratio <= GOAL_RATIO else "red"
        name = phase.name
        if phase.name == "incremental":
            name += f" ({changes} changed)"
        out.add_row(
            name,
            f"{crm:.3f}",
            f"{vdir:.3f}",
            f"{floor:.4f}",
            f"[{style}]{ratio:.1f}x[/{style}]",
            f"{vdir / floor:.1f}x",
            " / ".join(
                str(phase.requests(c)) for c in ("crmflow", "vdirsyncer", "floor")
            ),
            " / ".join(
                f"{phase.server_median(c):.3f}"
                for c in ("crmflow", "vdirsyncer", "floor")
            ),
        )
    return out


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5, help="incremental, no change")
    parser.add_argument("--repeat-initial", type=int, default=3)
    parser.add_argument(
        "--crm",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="the CRM side: the calendar sync service over SQLite, or the "
        "engine with MemoryCalendar",
    )
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    console = Console()
    if console.width < 150:
        console = Console(width=150)

    work = Path(tempfile.mkdtemp(prefix="crmflow-bench-caldav-"))
    try:
        with _running(None) as server, asyncio.Runner() as runner:
            collections = Collections(server)
            url = collections.new()
            started = time.perf_counter()
            put_events(
                server, url, {i: to_ical(bench_event(i)) for i in range(args.events)}
            )
            console.print(
                f"Radicale {server.url}: {args.events} events PUT in "
                f"{time.perf_counter() - started:.1f} s"
            )
            pairs = Pairs(args.crm, runner, server, url, work)
            bench = Bench(
                server,
                url,
                args.events,
                args.changes,
                args.repeat,
                args.repeat_initial,
                work,
                pairs,
            )
            try:
                initial, pair, vdir = bench.initial()
                phases = [
                    initial,
                    bench.incremental(pair, vdir),
                    bench.no_change(pair, vdir),
                ]
                side = "MemoryCalendar" if args.crm == "memory" else "SQLite service"
                console.print(table(phases, args.events, args.changes, side))
                console.print(
                    f"floor's initial calendar-query: {initial.note}; "
                    "requests and server time from Radicale's log; "
                    "vdirsyncer includes its interpreter start-up"
                )
                console.print(breakdown_table(bench.breakdowns(pair)))
                if args.profile:
                    console.print(bench.profile(pair), markup=False, highlight=False)
            finally:
                bench.floor.close()
                pairs.close()
                collections.remove_all()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
