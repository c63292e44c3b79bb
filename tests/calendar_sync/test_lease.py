"""One sync at a time per calendar account, however long a run takes.

A run holds the account's lease (``sync_lease_until``, ``LEASE`` = 15
minutes). A run that goes on longer renews it as it goes, so no second run
starts beside it; and a run whose lease was taken over all the same (its
process stalled past the lease) stops before saving more, leaving the other
run's lease alone. Provider requests here take six minutes each on the
sandbox's clock, which is the service's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import func, select

from crmflow.bootstrap import Services
from crmflow.domain.appointments import timed_span
from crmflow.domain.calendar_accounts import RunStatus
from crmflow.domain.crm import AppointmentDraft
from crmflow.services.calendar_sync import LEASE
from crmflow.store import models
from tests.calendar_sync import test_provider_core_cases as core
from tests.calendar_sync.conftest import GoogleAccount
from tests.calendar_sync.test_provider_conformance import create_appointment
from tests.calendar_sync.test_provider_core_cases import OverNetwork, Through
from tests.servers.sandbox import Sandbox

through = core.through

#: how long each provider request takes on the sandbox's clock
REQUEST = dt.timedelta(minutes=6)


class SlowProvider(OverNetwork):
    """Provider traffic over the network, each request (but token requests)
    taking :data:`REQUEST` of the sandbox's time; ``before(n)`` runs before
    the n-th is sent."""

    def __init__(
        self, sandbox: Sandbox, before: Callable[[int], Awaitable[None]]
    ) -> None:
        super().__init__()
        self.sandbox = sandbox
        self.before = before
        self.seen = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "token" not in request.url.path:
            self.seen += 1
            self.sandbox.state.clock.advance(REQUEST.total_seconds())
            await self.before(self.seen)
        return await self.real.handle_async_request(request)


async def _lease(services: Services, google: GoogleAccount) -> dt.datetime | None:
    async with services.db.tenant(google.ctx) as session:
        row = await session.get_one(models.CalendarAccount, google.account.id)
        return row.sync_lease_until


async def _set_lease(
    services: Services, google: GoogleAccount, until: dt.datetime
) -> None:
    async with services.db.tenant(google.ctx) as session:
        row = await session.get_one(models.CalendarAccount, google.account.id)
        row.sync_lease_until = until


async def _crm_meetings(services: Services, google: GoogleAccount, n: int) -> None:
    """``n`` appointments to export: a provider write each."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=3)
    for k in range(n):
        at = start + dt.timedelta(hours=k)
        await create_appointment(
            services,
            google.ctx,
            AppointmentDraft(
                title=f"Export {k}",
                span=timed_span(at, at + dt.timedelta(minutes=30), "UTC"),
            ),
        )


async def _count(services: Services, google: GoogleAccount, model: type) -> int:
    async with services.db.tenant(google.ctx) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


async def test_a_run_longer_than_its_lease_keeps_it(
    google: GoogleAccount, through: Through, services: Services, sandbox: Sandbox
) -> None:
    await _crm_meetings(services, google, 3)
    seen: list[tuple[dt.datetime, dt.datetime | None]] = []

    async def look(n: int) -> None:
        seen.append((sandbox.state.clock.now(), await _lease(services, google)))

    slow = SlowProvider(sandbox, look)
    started = sandbox.state.clock.now()
    try:
        run = await through(slow).sync(google.ctx, google.account.id)
    finally:
        await slow.aclose()

    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.events_exported == 3
    assert sandbox.state.clock.now() - started > 1.5 * LEASE
    # at every request the lease was still ahead of the clock: no other run
    # could have started
    assert len(seen) == slow.seen >= 4
    assert all(until is not None and _aware(until) > now for now, until in seen), seen
    assert await _lease(services, google) is None  # given back at the end


async def test_a_run_whose_lease_was_taken_over_stops_without_saving(
    google: GoogleAccount, through: Through, services: Services, sandbox: Sandbox
) -> None:
    await _crm_meetings(services, google, 1)
    other = sandbox.state.clock.now() + 2 * LEASE

    async def take_over(n: int) -> None:
        # this run's lease ran out while it stalled: another run took it
        if n == 1:
            await _set_lease(services, google, other)

    slow = SlowProvider(sandbox, take_over)
    try:
        run = await through(slow).sync(google.ctx, google.account.id)
    finally:
        await slow.aclose()

    assert run.status is RunStatus.FAILED
    assert "another sync" in run.errors[0].message, run.errors
    # the other run's lease is left alone, and nothing of this run was saved:
    # no mapping, none of the calendar's events imported
    held = await _lease(services, google)
    assert held is not None
    assert _aware(held) == other
    assert await _count(services, google, models.CalendarEventMapping) == 0
    assert await _count(services, google, models.Appointment) == 1
    assert slow.seen == 1  # it stopped before its write after the listing
