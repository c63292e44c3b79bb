"""The embedded default: SQLite in a data directory, demo organization and users,
and the Google/Microsoft sandbox mounted at ``/sandbox`` with seeded accounts.

``crmflow demo`` keeps its generated secrets in ``<data dir>/demo-secrets.env``
(mode 0600) so sessions and stored tokens survive restarts, and the sandbox's
state in ``<data dir>/sandbox-state.sqlite3``. Seeding runs once; a second start
reuses the data.
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
from crmflow.sandbox.google.demo import seed_demo_google
from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.microsoft.seed import seed_demo_microsoft
from crmflow.sandbox.microsoft.store import MicrosoftStore
from crmflow.sandbox.state import SandboxConfig, SandboxState
from crmflow.sandbox.vendors import SandboxApp, create_vendor_app
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
SANDBOX_STATE_FILE = "sandbox-state.sqlite3"
#: where the demo mounts the provider sandbox inside crmflow
SANDBOX_PREFIX = "/sandbox"
#: the demo's OAuth clients, registered in the sandbox at start-up
GOOGLE_DEMO_CLIENT_ID = "crmflow-demo.apps.googleusercontent.com"
MICROSOFT_DEMO_CLIENT_ID = "0d3c5a1e-6f0b-4c8e-9d67-2b1f0c4e7a59"


@dataclass(frozen=True, slots=True)
class DemoLogin:
    email: str
    password: str
    role: Role


DEMO_LOGINS = (
    DemoLogin("alice@demo.crmflow.test", "alice-demo-pw", Role.ADMIN),
    DemoLogin("bob@demo.crmflow.test", "bob-demo-pw", Role.MEMBER),
)


def demo_settings(
    data_dir: Path, *, host: str = "127.0.0.1", port: int = 8000, **overrides: object
) -> Settings:
    """Settings for the demo: environment first, generated secrets otherwise.

    Providers point at the sandbox mounted in the app itself, reached at
    ``http://host:port/sandbox/`` unless CRMFLOW_PUBLIC_BASE_URL says otherwise.
    """
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
    for name in ("CRMFLOW_GOOGLE_CLIENT_SECRET", "CRMFLOW_MICROSOFT_CLIENT_SECRET"):
        if name not in stored:
            stored[name] = secrets.token_urlsafe(32)
            changed = True
    if changed:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in sorted(stored.items())))
    public = os.environ.get("CRMFLOW_PUBLIC_BASE_URL") or f"http://{host}:{port}"
    sandbox = public.rstrip("/") + SANDBOX_PREFIX
    defaults: dict[str, object] = {
        "data_dir": data_dir,
        "sandbox_enabled": True,
        "host": host,
        "port": port,
        "public_base_url": public,
        "google_client_id": GOOGLE_DEMO_CLIENT_ID,
        "google_accounts_url": sandbox + "/google",
        "google_oauth2_url": sandbox + "/google",
        "google_api_url": sandbox + "/google",
        "microsoft_client_id": MICROSOFT_DEMO_CLIENT_ID,
        "microsoft_login_url": sandbox + "/microsoft",
        "microsoft_graph_url": sandbox + "/microsoft",
    }
    if not os.environ.get("CRMFLOW_WEBHOOK_BASE_URL"):
        # the demo's sandbox notifies plain http on its own server, so
        # calendar changes arrive by push as in production
        defaults["webhook_base_url"] = public
    for name in (
        "CRMFLOW_ENCRYPTION_KEYS",
        "CRMFLOW_SESSION_SECRET",
        "CRMFLOW_GOOGLE_CLIENT_SECRET",
        "CRMFLOW_MICROSOFT_CLIENT_SECRET",
    ):
        if not os.environ.get(name):
            defaults[name.removeprefix("CRMFLOW_").lower()] = stored[name]
    defaults.update({k: v for k, v in overrides.items() if v is not None})
    return load_settings(**defaults)


def start_sandbox(settings: Settings) -> SandboxApp:
    """The provider sandbox for the demo: persisted, seeded, clients registered.

    Every demo login gets a Google and a Microsoft account with the same address
    (calendars and mailboxes seeded once); the demo's OAuth clients are
    registered with crmflow's callback URLs.
    """
    state = SandboxState(
        persist_path=settings.data_dir / SANDBOX_STATE_FILE,
        config=SandboxConfig(allow_http_webhooks=True),
    )
    for login in DEMO_LOGINS:
        seed_demo_google(state, login.email)
        seed_demo_microsoft(state, login.email)
    google_secret = settings.google_client_secret
    microsoft_secret = settings.microsoft_client_secret
    with state.lock:
        state.extension(GoogleStore).identity.register_client(
            client_id=settings.google_client_id,
            client_secret=google_secret.reveal() if google_secret else None,
            redirect_uris=[settings.oauth_redirect_uri("google")],
            name="crmflow demo",
        )
        state.extension(MicrosoftStore).identity.register_app(
            client_id=settings.microsoft_client_id,
            client_secret=microsoft_secret.reveal() if microsoft_secret else None,
            redirect_uris=[settings.oauth_redirect_uri("microsoft")],
            name="crmflow demo",
        )
    state.flush()
    root = str(settings.public_base_url).rstrip("/") + SANDBOX_PREFIX + "/"
    return create_vendor_app(state, root)


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
        # the correspondent of the seeded sandbox Gmail threads: once the demo
        # login connects Gmail, her contact page lists that mail
        await contacts.create(
            crm.ContactDraft(
                "Jane Doe", ("jane.doe@acme.example",), company="Acme Corp"
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
