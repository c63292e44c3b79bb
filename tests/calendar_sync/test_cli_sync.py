"""``crmflow sync calendar`` as a separate process on the test database, against
the sandbox: it syncs the user's calendars, prints the summary and exits 0, or
1 when a run failed."""

from __future__ import annotations

import asyncio
import os
import sys

from crmflow.config import Settings
from crmflow.services.calendar_sync import CalendarSync
from tests.calendar_sync.conftest import GoogleAccount
from tests.servers.sandbox import Sandbox


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    values = {
        "DATABASE_URL": settings.effective_database_url,
        "ADMIN_DATABASE_URL": settings.effective_admin_database_url,
        "ENCRYPTION_KEYS": settings.encryption_keys.reveal()
        if settings.encryption_keys
        else "",
        "SESSION_SECRET": settings.session_secret.reveal()
        if settings.session_secret
        else "",
        "DATA_DIR": str(settings.data_dir),
        "GOOGLE_API_URL": str(settings.google_api_url),
        "GOOGLE_OAUTH2_URL": str(settings.google_oauth2_url),
        "GOOGLE_ACCOUNTS_URL": str(settings.google_accounts_url),
        "GOOGLE_CLIENT_ID": settings.google_client_id or "",
        "GOOGLE_CLIENT_SECRET": settings.google_client_secret.reveal()
        if settings.google_client_secret
        else "",
    }
    env.update({f"CRMFLOW_{k}": v for k, v in values.items()})
    env["COLUMNS"] = "200"  # a wide terminal: names are not folded
    return env


async def _crmflow(settings: Settings, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crmflow",
        *args,
        env=_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_sync_calendar_command(
    google: GoogleAccount,
    calendar_sync: CalendarSync,
    settings: Settings,
    sandbox: Sandbox,
    tenants,
):
    code, out, err = await _crmflow(
        settings, "sync", "calendar", "--user", tenants.alice.email
    )
    assert code == 0, err
    assert "success" in out
    [run] = await calendar_sync.runs(google.ctx)
    assert run.events_imported == 4
    assert google.account.name in out

    unknown = await _crmflow(settings, "sync", "calendar", "--user", "nobody@x.test")
    assert unknown[0] == 2
    assert "No active user" in unknown[2]

    await sandbox.control(
        "google", "POST", "grants/revoke", json={"email": "alice@gmail.test"}
    )
    await sandbox.control(
        "google", "POST", "tokens/expire", json={"email": "alice@gmail.test"}
    )
    failed = await _crmflow(
        settings, "sync", "calendar", "--user", tenants.alice.email, "--full"
    )
    assert failed[0] == 1
    assert "reconnect" in failed[2].lower()
