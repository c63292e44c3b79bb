"""Conformance case 19 on the databases: every status row and cursor the
engine can hand over is stored in ``calendar_event_mappings`` and the
account's cursor columns and read back exactly, on SQLite and PostgreSQL
(the engine-level property test, ``tests/sync/test_status.py``, covers the
same for the in-memory status)."""

from __future__ import annotations

import datetime as dt

import pytest

from crmflow.bootstrap import Services
from crmflow.services.calendar_sides import DbStatusRepository
from crmflow.store.appointment_sync import SyncSession
from crmflow.sync.status import SideCursor, StatusRow, StatusSnapshot
from tests.calendar_sync.conftest import GoogleAccount, google

__all__ = ["google"]

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)

#: rows as other clients and providers shape them: odd and long UIDs, no
#: version after a write (case 15), non-ASCII, the longest each column holds
ROWS = (
    StatusRow("plain@crm.test", "crm-1", "3", "a" * 64, "ev1", '"etag-1"', "b" * 64),
    StatusRow("no versions", "crm-2", None, "c" * 64, "ev2", None, "d" * 64),
    StatusRow(
        "Ümlaut ☃ 😀 / ? # & %20",
        "crm-3",
        "",
        "",
        "https://dav.example/cal/%C3%9C.ics",
        'W/"weak"',
        "",
    ),
    StatusRow(
        "u" * 1024, "c" * 64, "v" * 64, "h" * 64, "e" * 1024, "t" * 500, "x" * 64
    ),
    StatusRow("UPPER@Case.TEST", "crm-5", "1", "e" * 64, "EV5", "1", "f" * 64),
    StatusRow("upper@case.test", "crm-6", "1", "e" * 64, "ev5", "1", "f" * 64),
)


async def _round_trip(
    services: Services, account: GoogleAccount, snapshot: StatusSnapshot
) -> StatusSnapshot:
    """Commit ``snapshot`` over what is stored, then read it back afresh."""
    uow = SyncSession(services.db, account.ctx)
    repo = DbStatusRepository(uow, account.account.id, synced_at=NOW)
    await repo.load()
    await repo.commit(snapshot)
    reader_uow = SyncSession(services.db, account.ctx)
    back = await DbStatusRepository(
        reader_uow, account.account.id, synced_at=NOW
    ).load()
    await reader_uow.commit()
    return back


@pytest.mark.parametrize(
    "cursor",
    [
        None,
        SideCursor("sync-token-1", {}),
        SideCursor("x" * 4000, {"ev1": '"etag-1"', "Ü ☃": None, "e" * 1024: "t"}),
    ],
    ids=["no cursor", "token", "long token and listing"],
)
async def test_case19_every_row_and_cursor_round_trips_exactly(
    services: Services, google: GoogleAccount, cursor: SideCursor | None
) -> None:
    snapshot = StatusSnapshot(rows={r.ident: r for r in ROWS}, cursor_b=cursor)
    assert await _round_trip(services, google, snapshot) == snapshot

    # a later commit that changes, drops and adds rows, and moves an
    # external id from one UID to another, is read back exactly too
    moved = {
        "plain@crm.test": StatusRow(
            "plain@crm.test", "crm-1", "4", "a" * 64, "ev2", '"etag-2"', "b" * 64
        ),
        "new@crm.test": StatusRow(
            "new@crm.test", "crm-7", None, "g" * 64, "ev1", None, "g" * 64
        ),
        ROWS[2].ident: ROWS[2],
    }
    later = StatusSnapshot(rows=moved, cursor_b=SideCursor("sync-token-2", {}))
    assert await _round_trip(services, google, later) == later
    assert await _round_trip(services, google, StatusSnapshot()) == StatusSnapshot()
