"""Row level security: appointments are read by the whole organization but
changed only by their owner or an admin (PostgreSQL, app role, raw SQL)."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from crmflow.domain.appointments import timed_span
from crmflow.domain.crm import AppointmentDraft
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.store.db import Database
from crmflow.store.identity import provision_organization, provision_user
from crmflow.store.repositories import AppointmentRepository

pytestmark = pytest.mark.postgres


def _as(conn, user, org):
    conn.execute(
        "SELECT set_config('app.user_id', %s, true), set_config('app.org_id', %s, true)",
        (str(user), str(org)),
    )


async def test_only_owner_or_admin_changes_an_appointment(pg_database):
    admin_db = Database(pg_database.admin_url)
    try:
        org = await provision_organization(admin_db, "Org", "org")
        owner = await provision_user(
            admin_db, "owner@o.example.com", "password1", organization_id=org
        )
        other = await provision_user(
            admin_db, "other@o.example.com", "password1", organization_id=org
        )
        boss = await provision_user(
            admin_db,
            "boss@o.example.com",
            "password1",
            organization_id=org,
            role=Role.ADMIN,
        )
        async with admin_db.tenant(TenantContext(owner, org, Role.MEMBER)) as session:
            created = await AppointmentRepository(session).create(
                AppointmentDraft(
                    "Owner's",
                    timed_span(
                        dt.datetime(2026, 1, 1, 9), dt.datetime(2026, 1, 1, 10), "UTC"
                    ),
                )
            )
    finally:
        await admin_db.dispose()
    aid = created.id

    with psycopg.connect(pg_database.app_url) as conn:
        with conn.transaction():
            _as(conn, other, org)
            assert (
                conn.execute(
                    "SELECT count(*) FROM appointments WHERE id = %s", (aid,)
                ).fetchone()[0]
                == 1
            )
            assert (
                conn.execute(
                    "UPDATE appointments SET title = 'x' WHERE id = %s", (aid,)
                ).rowcount
                == 0
            )
            assert (
                conn.execute("DELETE FROM appointments WHERE id = %s", (aid,)).rowcount
                == 0
            )
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege),
                conn.transaction(),
            ):
                conn.execute(
                    "INSERT INTO appointments (id, organization_id, user_id, title, start_at, end_at, timezone, all_day, attendees, status, created_at, updated_at, version)"
                    " VALUES (%s, %s, %s, 'planted', now(), now() + interval '1 hour', 'UTC', false, '[]', 'confirmed', now(), now(), 1)",
                    (uuid.uuid4(), org, owner),
                )
        with conn.transaction():
            _as(conn, boss, org)
            assert (
                conn.execute(
                    "UPDATE appointments SET title = 'by admin' WHERE id = %s", (aid,)
                ).rowcount
                == 1
            )
        with conn.transaction():
            _as(conn, owner, org)
            assert (
                conn.execute(
                    "SELECT title FROM appointments WHERE id = %s", (aid,)
                ).fetchone()[0]
                == "by admin"
            )
            assert (
                conn.execute("DELETE FROM appointments WHERE id = %s", (aid,)).rowcount
                == 1
            )
