"""The CRM side of a sync pair on both databases: what ``expect_creates``
looked up ahead is trusted only in the transaction that read it."""

from __future__ import annotations

from sqlalchemy import func, select

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
