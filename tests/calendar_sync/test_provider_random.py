"""Conformance case 27 against each adapter: random edits on both sides
and random faults, through the service, then convergence.

The engine's property-based model (``tests/sync/test_state_machine.py``)
explores many more sequences with in-memory sides; here Hypothesis draws a
few sequences (``EXAMPLES``, plus one fixed one) against Google (sandbox),
Graph (sandbox) and CalDAV (a real Radicale) on SQLite and PostgreSQL, each
in an organization and provider account of its own, and shrinks a failing
one towards fewer faults and simpler changes. Every choice of a sequence
comes from the random source Hypothesis gives it, a fixed number of draws
per change and per sync, so a replay asks the same questions; its simplest
sequence (Hypothesis tries it first) is CRM creates with no fault. A replay
may still meet the faults in another order: a sync's writes go out in UID
order, and UIDs are new on every run (Graph makes its own), so a failure
that depends on which write met which fault can come back as Hypothesis's
``FlakyFailure``, which still shows the original error. Creates, edits and deletions are made in
the CRM and in the provider's own app between syncs, and the provider may
drop the account's change-feed cursor (410 Gone, Graph's syncStateNotFound,
CalDAV's DAV:valid-sync-token); every provider request of those syncs may
fail (500, 429, a timeout, or a reply lost after the provider carried the
request out), and a conditional write may meet an edit someone made in the
provider's app a moment before (a real 412). Once the faults stop and a sync
completes, both sides hold the same events with the same titles, each UID
once, and the next sync writes nothing.

Crash points (crmflow killed in the middle of a run) are in
``test_provider_crash.py``.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crmflow.bootstrap import Services
from crmflow.domain.calendar_accounts import RunStatus
from crmflow.domain.tenancy import Role
from crmflow.services.calendar_sync import CalendarSync
from crmflow.store.db import Database
from crmflow.store.identity import provision_organization
from tests.calendar_sync import test_provider_conformance as conformance
from tests.calendar_sync import test_provider_core_cases as core
from tests.calendar_sync.drivers import CalDAVDriver, Driver, GraphDriver, Mailbox
from tests.calendar_sync.test_provider_conformance import appointments, quiet_sync
from tests.calendar_sync.test_provider_core_cases import (
    OverNetwork,
    Through,
    account_row,
    crm_meeting,
    delete_event,
    delete_in_crm,
    edit_in_crm,
    expire_cursor,
    run,
    spec,
    titles,
)
from tests.conftest import make_actor

driver = conformance.driver
through = core.through

#: edits of one random sequence (a sync after every second one), and the
#: share of failing provider requests
STEPS = 14
FAULT_RATE = 0.3
#: requests of one sync that may fail (later ones go through)
REQUESTS_DRAWN = 24
#: sequences Hypothesis draws per adapter and database, its simplest (no
#: fault, CRM creates only) first; each costs 2-20 s of real servers
EXAMPLES = 2
#: numbers the sequences of this process: each gets an organization and a
#: provider account of its own
_sequences = itertools.count()


def _conditional_write(request: httpx.Request) -> bool:
    return request.method in ("PUT", "PATCH", "DELETE") and bool(
        request.headers.get("if-match")
    )


#: the faults one request may meet (a conditional write: all of them)
_FAULTS = ("500", "429", "timeout", "lost", "concurrent edit")


def pick(u: float, choices: Sequence[str]) -> str:
    """The choice a draw ``u`` in [0, 1) falls on."""
    return choices[min(int(u * len(choices)), len(choices) - 1)]


class Flaky(OverNetwork):
    """crmflow's provider traffic over the network, a share of it failing:
    a 500, a 429 with a short Retry-After, a timeout before the request is
    sent, the reply lost after the provider carried the request out, or (for
    a write with ``If-Match``) the event edited in the provider's app just
    before the write arrives, which the provider answers with its own 412.
    Token requests go through (their retries are the connections').

    Whether and how the n-th request of a sync fails is drawn before the
    sync (:meth:`draw`), ``REQUESTS_DRAWN`` draws whatever the sync then
    does: a sequence run again asks its random source the same questions,
    which Hypothesis needs to replay and shrink it. A draw below
    ``1 - FAULT_RATE`` (twice the rate for a conditional write) is no fault,
    so 0, the simplest draw, is none."""

    def __init__(self) -> None:
        super().__init__()
        self.on = True
        self.injected: list[str] = []
        #: writes the provider refused with 412 after an injected edit
        self.refused = 0
        self._draws: list[float] = []

    def draw(self, rand: random.Random) -> None:
        """Draw the faults of the next sync's requests."""
        self._draws = [rand.random() for _ in range(REQUESTS_DRAWN)]

    def _fault(self, request: httpx.Request) -> str | None:
        if not self.on or "token" in request.url.path or not self._draws:
            return None
        u = self._draws.pop(0)
        conditional = _conditional_write(request)
        # writes are few: they fail twice as often, so every kind of fault
        # meets some
        rate = FAULT_RATE * (2 if conditional else 1)
        if u < 1 - rate:
            return None
        kinds = _FAULTS if conditional else _FAULTS[:-1]
        return pick((u - (1 - rate)) / rate, kinds)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        kind = self._fault(request)
        if kind is None:
            return await self.real.handle_async_request(request)
        self.injected.append(f"{kind} {request.method}")
        if kind == "concurrent edit":
            await self._edit_at_provider(
                request, f"edited meanwhile {len(self.injected)}"
            )
            response = await self.real.handle_async_request(request)
            self.refused += response.status_code == 412
            return response
        if kind == "500":
            return httpx.Response(500, request=request)
        if kind == "429":
            return httpx.Response(429, headers={"Retry-After": "0.1"}, request=request)
        if kind == "timeout":
            raise httpx.ReadTimeout("no answer", request=request)
        response = await self.real.handle_async_request(request)
        await response.aread()
        raise httpx.ReadError("connection reset", request=request)

    async def _send(
        self,
        request: httpx.Request,
        method: str,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A request of the provider's own app to ``request``'s resource,
        with the same credentials."""
        edit = httpx.Request(
            method,
            request.url.copy_with(query=None),
            headers={"Authorization": request.headers["authorization"]}
            | (headers or {}),
            **kwargs,
        )
        response = await self.real.handle_async_request(edit)
        await response.aread()
        return response

    async def _edit_at_provider(self, request: httpx.Request, title: str) -> None:
        """Retitle the event ``request`` writes, as its owner does in the
        provider's app (unconditionally, so its ETag moves on)."""
        if request.url.path.endswith(".ics"):  # CalDAV: the resource itself
            current = await self._send(request, "GET")
            if current.status_code != 200:
                return  # gone already: the write meets a 404 or 412 anyway
            body = re.sub(
                r"^SUMMARY[;:].*$", f"SUMMARY:{title}", current.text, flags=re.M
            )
            response = await self._send(
                request,
                "PUT",
                content=body.encode(),
                headers={"Content-Type": "text/calendar; charset=utf-8"},
            )
        else:  # Google's summary, Graph's subject: a PATCH of the same event
            field = "summary" if "/calendar/v3/" in request.url.path else "subject"
            response = await self._send(request, "PATCH", json={field: title})
        assert response.status_code in (200, 201, 204, 404, 410), response.text


async def crm_titles(services: Services, mb: Mailbox) -> dict[str, str]:
    """``{UID: title}`` of the appointments that are not cancelled."""
    rows = await appointments(services, mb.ctx)
    return {uid: r.title for uid, r in rows.items() if r.status != "cancelled"}


async def drop_cursor(services: Services, driver: Driver, mb: Mailbox) -> bool:
    """The provider forgets the account's change-feed cursor, if it issued
    one since it last forgot (False: there was none)."""
    if isinstance(driver, GraphDriver):
        response = await driver.c.sandbox.control(
            "microsoft", "POST", "delta/expire", json={"email": mb.login}
        )
        return bool(response.json()["expired"])
    if isinstance(driver, CalDAVDriver) and not (
        (await account_row(services, mb)).sync_cursor
    ):
        return False
    await expire_cursor(services, driver, mb)
    return True


def by_title(titles: dict[str, str]) -> list[str]:
    """The UIDs of ``{UID: title}`` in the order of their titles: the same
    order when a sequence is run again (UIDs are new every time, titles are
    the sequence's own), so the same choices pick the same events."""
    return sorted(titles, key=lambda uid: (titles[uid], uid))


#: what :class:`RandomEdits` may do, the simplest first
_CHANGES = (
    "crm create",
    "calendar create",
    "crm edit",
    "calendar edit",
    "crm delete",
    "calendar delete",
    "cursor lost",
)


class RandomEdits:
    """Random creates, edits and deletions in the CRM and in the provider's
    own app, and change-feed cursors the provider forgets: what happens to a
    calendar between two syncs."""

    def __init__(
        self, rand: random.Random, services: Services, driver: Driver, mb: Mailbox
    ) -> None:
        self.rand = rand
        self.services = services
        self.driver = driver
        self.mb = mb
        self.made = 0
        self.log: list[str] = []

    async def one(self, step: int) -> None:
        """One random change (``step`` makes its titles unique). Two draws
        each, whatever the calendar holds (see :class:`Flaky`): the change,
        and the event it applies to."""
        rand, services, driver, mb = self.rand, self.services, self.driver, self.mb
        action, u = pick(rand.random(), _CHANGES), rand.random()
        crm = await crm_titles(services, mb)
        held = await driver.uids(mb)
        if action.endswith("delete") and min(len(crm), len(held)) <= 2:
            action = action.replace("delete", "create")  # keep a few events
        if action == "crm create":
            self.made += 1
            await crm_meeting(
                services, mb, f"CRM {self.made}", days=self.made % 5, hour=8
            )
        elif action == "calendar create":
            self.made += 1
            await driver.create(
                mb, spec(f"Calendar {self.made}", days=self.made % 5, hour=14)
            )
        elif action == "crm edit" and crm:
            await edit_in_crm(services, mb, pick(u, by_title(crm)), f"crm edit {step}")
        elif action == "calendar edit" and held:
            uid = pick(u, by_title(await titles(driver, mb)))
            await driver.retitle(mb, uid, f"calendar edit {step}")
        elif action == "crm delete":
            await delete_in_crm(services, mb, pick(u, by_title(crm)))
        elif action == "calendar delete":
            await delete_event(driver, mb, pick(u, by_title(await titles(driver, mb))))
        elif action == "cursor lost" and not await drop_cursor(services, driver, mb):
            action += " (none held)"
        self.log.append(action)


@settings(
    max_examples=EXAMPLES,
    # the same sequences on every run, none remembered between runs
    derandomize=True,
    database=None,
    deadline=None,
    # the servers and the database are the test's; each sequence makes its
    # own organization and provider account on them
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rand=st.randoms(use_true_random=False))
# besides those Hypothesis draws: a fixed sequence that meets faults of every
# kind on some adapter (and several on each)
@example(rand=random.Random(1))
async def test_case27_random_edits_and_faults_converge(
    driver: Driver,
    rand: random.Random,
    admin_db: Database,
    services: Services,
    through: Through,
    calendar_sync: CalendarSync,
) -> None:
    n = next(_sequences)
    org = await provision_organization(admin_db, f"Case 27 {n}", f"case27-{n}")
    rep = await make_actor(admin_db, services, org, f"rep{n}@case27.test", Role.ADMIN)
    login = f"case27-{n}-{driver.logins[0]}"
    mb = await driver.connect(rep.ctx, 0, login=login)
    # who wins when both sides changed: the CRM, so that the end is known
    await calendar_sync.update_account(mb.ctx, mb.account.id, {"strategy": "crm_wins"})
    for k in range(3):
        await crm_meeting(services, mb, f"Seed {k}", days=k)
    await run(calendar_sync, mb)
    flaky = Flaky()
    service = through(flaky)
    edits = RandomEdits(rand, services, driver, mb)
    log = edits.log
    try:
        for step in range(STEPS):
            await edits.one(step)
            if step % 2:
                log.append("sync")
                flaky.draw(rand)
                await run(service, mb)

        # the faults stop: a sync completes, and then there is nothing to do
        flaky.on = False
        done = await run(service, mb)
        for _ in range(2):  # a run may leave a retried event for the next
            if done.status is RunStatus.SUCCESS:
                break
            done = await run(service, mb)
        assert done.status is RunStatus.SUCCESS, (done.errors, log, flaky.injected)
    finally:
        await flaky.aclose()
    if type(rand) is random.Random:  # the fixed sequence: it meets faults
        assert flaky.injected, "no fault was injected: the sequence tests nothing"
    # an edit made just before a conditional write makes the provider refuse
    # it (unless the write meets a 404 because the event is gone already)
    edited = sum(f.startswith("concurrent edit") for f in flaky.injected)
    assert flaky.refused <= edited, flaky.injected
    assert flaky.refused or not edited, flaky.injected
    held = await driver.uids(mb)
    assert len(held) == len(set(held)), ("a UID twice at the provider", log)
    assert await titles(driver, mb) == await crm_titles(services, mb), (
        log,
        flaky.injected,
    )
    await quiet_sync(driver, calendar_sync, services, mb)
