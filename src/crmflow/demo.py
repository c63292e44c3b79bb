"""The embedded default: SQLite in a data directory, demo organization and users.

``crmflow demo`` keeps its generated secrets in ``<data dir>/demo-secrets.env``
(mode 0600) so sessions and stored tokens survive restarts. Seeding runs once; a
second start reuses the data.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from crmflow.config import Settings, load_settings
from crmflow.domain import crm
from crmflow.domain.appointments import all_day_span, timed_span
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.store.crypto import generate_key_entry
from crmflow.store.db import Database
from crmflow.store.identity import (
    find_organization,
    provision_organization,
    provision_user,
)
from crmflow.store.repositories import AppointmentRepository, ContactRepository

DEMO_ORG_SLUG = "demo-sales"
SECRETS_FILE = "demo-secrets.env"


@dataclass(frozen=True, slots=True)
class DemoLogin:
    email: str
    password: str
    role: Role


DEMO_LOGINS = (
    DemoLogin("alice@demo.crmflow.test", "alice-demo-pw", Role.ADMIN),
    DemoLogin("bob@demo.crmflow.test", "bob-demo-pw", Role.MEMBER),
)


def demo_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for the demo: environment first, generated secrets otherwise."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRETS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        for line in path.read_text("utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                stored[key.strip()] = value.strip()
    changed = False
    if "CRMFLOW_ENCRYPTION_KEYS" not in stored:
        stored["CRMFLOW_ENCRYPTION_KEYS"] = generate_key_entry("demo1")
        changed = True
    if "CRMFLOW_SESSION_SECRET" not in stored:
        stored["CRMFLOW_SESSION_SECRET"] = secrets.token_urlsafe(48)
        changed = True
    if changed:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in sorted(stored.items())))
    defaults: dict[str, object] = {"data_dir": data_dir, "sandbox_enabled": True}
    if not os.environ.get("CRMFLOW_ENCRYPTION_KEYS"):
        defaults["encryption_keys"] = stored["CRMFLOW_ENCRYPTION_KEYS"]
    if not os.environ.get("CRMFLOW_SESSION_SECRET"):
        defaults["session_secret"] = stored["CRMFLOW_SESSION_SECRET"]
    defaults.update({k: v for k, v in overrides.items() if v is not None})
    return load_settings(**defaults)


async def seed(admin: Database, now: dt.datetime | None = None) -> bool:
    """Create the demo organization, users and sample CRM data once.

    Returns:
        True when it seeded, False when the demo organization already existed.
    """
    if await find_organization(admin, DEMO_ORG_SLUG) is not None:
        return False
    org_id = await provision_organization(admin, "Demo Sales", DEMO_ORG_SLUG)
    user_ids = [
        await provision_user(
            admin,
            login.email,
            login.password,
            display_name=login.email.split("@")[0].title(),
            organization_id=org_id,
            role=login.role,
        )
        for login in DEMO_LOGINS
    ]
    alice = TenantContext(user_ids[0], org_id, Role.ADMIN)
    bob = TenantContext(user_ids[1], org_id, Role.MEMBER)
    today = (now or dt.datetime.now(dt.UTC)).date()

    def at(days: int, hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime.combine(
            today + dt.timedelta(days=days), dt.time(hour, minute)
        )

    async with admin.tenant(alice) as session:
        contacts = ContactRepository(session)
        await contacts.create(
            crm.ContactDraft(
                "Dana Whitfield",
                ("dana@northwind.example",),
                company="Northwind Traders",
                phone="+1 555 0100",
            )
        )
        await contacts.create(
            crm.ContactDraft(
                "Kenji Sato", ("kenji.sato@example.jp",), company="Sato Holdings"
            )
        )
        repo = AppointmentRepository(session)
        await repo.create(
            crm.AppointmentDraft(
                "Pipeline review",
                timed_span(at(1, 9, 30), at(1, 10, 30), "Europe/Berlin"),
                location="Room 4",
                description="Weekly review of open deals.",
                recurrence_rule="FREQ=WEEKLY;BYDAY="
                + ("MO", "TU", "WE", "TH", "FR", "SA", "SU")[
                    (today + dt.timedelta(days=1)).weekday()
                ],
            )
        )
        await repo.create(
            crm.AppointmentDraft(
                "Northwind renewal call",
                timed_span(at(2, 16), at(2, 16, 45), "America/New_York"),
                attendees=(crm.Attendee("dana@northwind.example", "Dana Whitfield"),),
            )
        )
        await repo.create(
            crm.AppointmentDraft(
                "Trade fair",
                all_day_span(
                    today + dt.timedelta(days=5),
                    today + dt.timedelta(days=7),
                    "Europe/Berlin",
                ),
                location="Messe Hamburg",
            )
        )
    async with admin.tenant(bob) as session:
        await AppointmentRepository(session).create(
            crm.AppointmentDraft(
                "Intro with Sato Holdings",
                timed_span(at(3, 9), at(3, 10), "Asia/Tokyo"),
                attendees=(crm.Attendee("kenji.sato@example.jp", "Kenji Sato"),),
            )
        )
    return True
