"""The CRM side of a sync pair on both databases: its listing names each
appointment as ``str(uuid)`` does, what ``expect_creates`` looked up ahead
is trusted only in the transaction that read it, ``expect_changes`` saves
a query per update, and many new rows go out a slice at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from crmflow.bootstrap import Services
from crmflow.domain.calendar import Notify
from crmflow.services.calendar_sides import CrmCalendar
from crmflow.store import appointment_sync as store
from crmflow.store import models
from crmflow.store.appointment_sync import SyncSession
from tests.calendar_sync.conftest import GoogleAccount, google
from tests.sync.helpers import event

__all__ = ["google"]


async def _with_uid(services: Services, account: GoogleAccount, uid: str) -> int:
    async with services.db.tenant(account.ctx) as session:
        a = models.Appointment
        return int(
            await session.scalar(select(func.count()).where(a.ical_uid == uid)) or 0
        )


async def test_a_uid_imported_by_another_run_after_the_look_ahead_is_adopted(
    services: Services, google: GoogleAccount
) -> None:
    shared = event("shared-meeting@org.test", "Shared")
    uow = SyncSession(services.db, google.ctx)
    crm = CrmCalendar(uow, google.account.id, export_own=True, cancel=True)
    await crm.expect_creates([shared])  # not there yet
    await uow.commit()  # the run commits before a calendar write

    # meanwhile another run of the organization imports the same meeting
    other = SyncSession(services.db, google.ctx)
    made = store.insert_event(other, shared)
    await other.commit()

    written = await crm.create(shared, idempotency_key="a" * 40, notify=Notify.NONE)
    await uow.commit()
    assert (written.remote_id, written.adopted) == (str(made), True)
    assert await _with_uid(services, google, shared.ical_uid) == 1


async def test_the_look_ahead_answers_in_its_own_transaction(
    services: Services, google: GoogleAccount
) -> None:
    first, second = event("new-1@org.test"), event("new-2@org.test", hour=11)
    uow = SyncSession(services.db, google.ctx)
    crm = CrmCalendar(uow, google.account.id, export_own=True, cancel=True)
    await crm.expect_creates([first, second])
    for n, item in enumerate((first, second)):
        written = await crm.create(
            item, idempotency_key=f"{n}" * 40, notify=Notify.NONE
        )
        assert not written.adopted
    await uow.commit()
    for item in (first, second):
        assert await _with_uid(services, google, item.ical_uid) == 1


async def test_the_listing_names_appointments_as_the_mappings_do(
    services: Services, google: GoogleAccount
) -> None:
    # the database makes the ids' text (8-4-4-4-12, lower case); a mapping
    # records str(uuid.UUID): any other spelling would make every synced
    # appointment look new
    uow = SyncSession(services.db, google.ctx)
    made = [
        store.insert_event(uow, event(f"listed-{n}@org.test", hour=9 + n))
        for n in range(3)
    ]
    await uow.commit()
    crm = CrmCalendar(uow, google.account.id, export_own=True, cancel=True)
    listing = await crm.list()
    await uow.commit()
    assert listing.items == {str(appointment): "1" for appointment in made}
    fetched = await crm.get_many(list(listing.items))
    await uow.commit()
    assert {item.remote_id for item in fetched} == set(listing.items)


@contextmanager
def _statements() -> Iterator[list[tuple[str, int]]]:
    """The SQL statements every engine sends meanwhile, each with how many
    parameter rows it carried."""
    seen: list[tuple[str, int]] = []

    def record(*args: Any) -> None:
        params, many = args[3], args[5]
        seen.append((" ".join(str(args[2]).split()), len(params) if many else 1))

    sa_event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa_event.remove(Engine, "before_cursor_execute", record)


async def test_updates_read_ahead_need_no_query_each(
    services: Services, google: GoogleAccount
) -> None:
    uow = SyncSession(services.db, google.ctx)
    made = [
        str(store.insert_event(uow, event(f"ahead-{n}@org.test", hour=9 + n)))
        for n in range(3)
    ]
    await uow.commit()
    crm = CrmCalendar(uow, google.account.id, export_own=True, cancel=True)
    await crm.expect_changes([*made, "not-an-id"])
    with _statements() as seen:
        versions = [
            await crm.update(
                remote_id,
                event(f"ahead-{n}@org.test", f"Moved {n}", hour=14 + n),
                if_match="1",
                notify=Notify.NONE,
            )
            for n, remote_id in enumerate(made[:2])
        ]
        await crm.delete(made[2], if_match="1", notify=Notify.NONE)
    await uow.commit()
    assert versions == ["2", "2"]
    sent = [sql for sql, _rows in seen]
    reads = [s for s in sent if s.startswith("SELECT")]
    assert reads == [], [s[:60] for s in sent]
    assert len([s for s in sent if s.startswith("UPDATE appointments")]) == 3
    async with services.db.tenant(google.ctx) as session:
        a = models.Appointment
        rows = (
            await session.execute(
                select(a.ical_uid, a.title, a.status, a.version).order_by(a.ical_uid)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("ahead-0@org.test", "Moved 0", "confirmed", 2),
        ("ahead-1@org.test", "Moved 1", "confirmed", 2),
        ("ahead-2@org.test", "Meeting", "cancelled", 2),
    ]


def _row_counts(statements: list[tuple[str, int]], table: str) -> list[int]:
    return [rows for sql, rows in statements if sql.startswith(f"INSERT INTO {table} ")]


async def test_many_creates_reach_the_database_a_slice_at_a_time(
    services: Services, google: GoogleAccount, monkeypatch: Any
) -> None:
    # an initial import queues thousands: they are written every INSERT_ROWS,
    # not held until the end of the run as one statement's parameters
    monkeypatch.setattr(store, "INSERT_ROWS", 3)
    made = [event(f"slice-{n}@org.test", hour=8 + n) for n in range(7)]
    uow = SyncSession(services.db, google.ctx)
    crm = CrmCalendar(uow, google.account.id, export_own=True, cancel=True)
    await crm.expect_creates(made)
    with _statements() as seen:
        for n, item in enumerate(made):
            await crm.create(item, idempotency_key=f"{n}" * 40, notify=Notify.NONE)
            # written as soon as a slice is full
            assert uow.queued == (n + 1) % 3
        await uow.commit()
    assert _row_counts(seen, "appointments") == [3, 3, 1]
    for item in made:
        assert await _with_uid(services, google, item.ical_uid) == 1


async def test_many_status_rows_are_written_a_slice_at_a_time(
    services: Services, google: GoogleAccount, monkeypatch: Any
) -> None:
    monkeypatch.setattr(store, "INSERT_ROWS", 3)
    rows = [
        store.MappingState(
            f"status-{n}@org.test", f"crm-{n}", "1", "a" * 64, f"ev{n}", '"1"', "b" * 64
        )
        for n in range(7)
    ]
    uow = SyncSession(services.db, google.ctx)
    with _statements() as seen:
        await store.save_mappings(
            await uow.session(),
            google.account.id,
            removed=[],
            written=rows,
            cursor=None,
            synced_at=models.utcnow(),
        )
        await uow.commit()
    assert _row_counts(seen, "calendar_event_mappings") == [3, 3, 1]
    async with services.db.tenant(google.ctx) as session:
        loaded, _cursor = await store.load_mappings(session, google.account.id)
    assert sorted(state[0] for state in loaded) == sorted(r.ical_uid for r in rows)
