"""What the benchmarks that run crmflow as an operator would share: the
sandbox, crmflow serve and workers as processes, a migrated database (SQLite
or a throwaway PostgreSQL cluster), users with connected Google calendars,
and reading figures from the database and /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

SCOPE = "https://www.googleapis.com/auth/calendar"
#: seconds to wait for servers, channels and the last appointments
WAIT_S = 120.0


def free_port() -> int:
    from tests.servers.net import free_port

    return free_port()


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "crmflow", *args],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


async def until_up(url: str) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[tuple[str, str]]:
    """(app URL, admin URL) of a migrated database."""
    if kind == "sqlite":
        from crmflow.store.migrate import upgrade

        url = f"sqlite:///{tmp}/crm.db"
        upgrade(url, url)
        yield url, url
        return
    from tests.servers.postgres import standalone_database

    with standalone_database() as pg:
        yield pg.app_url, pg.admin_url


def settings_of(env: dict[str, str]) -> Any:
    """The crmflow settings a process started with ``env`` would have."""
    from crmflow.config import load_settings

    return load_settings(
        **{
            k.removeprefix("CRMFLOW_").lower(): v
            for k, v in env.items()
            if k.startswith("CRMFLOW_")
        }
    )


async def provision(env: dict[str, str], google: str, calendars: int) -> list[str]:
    """Users with a connected Google calendar each; their sandbox emails."""
    from crmflow.bootstrap import start_services
    from crmflow.connections.service import Integrations
    from crmflow.domain.integrations import IntegrationKind, ProviderKey
    from crmflow.domain.secret import Secret
    from crmflow.domain.tenancy import Role
    from crmflow.services.calendar_sync import CalendarSync
    from crmflow.store.db import Database
    from crmflow.store.identity import (
        enter_organization,
        provision_organization,
        provision_user,
    )
    from crmflow.store.integrations import IntegrationStore

    settings = settings_of(env)
    admin = Database(settings.effective_admin_database_url)
    org = await provision_organization(admin, "Bench")
    emails = [f"rep{n:03d}@bench.test" for n in range(calendars)]
    users = [
        await provision_user(
            admin, email, "bench-pw-123456", organization_id=org, role=Role.MEMBER
        )
        for email in emails
    ]
    await admin.dispose()
    services = await start_services(settings)
    service = CalendarSync(Integrations(services.db, services.vault, settings))
    async with httpx.AsyncClient(base_url=google + "_sandbox/", timeout=30) as ctl:
        for email, user in zip(emails, users, strict=True):
            (await ctl.post("users", json={"email": email})).raise_for_status()
            token = (
                await ctl.post("tokens", json={"email": email, "scopes": [SCOPE]})
            ).json()["access_token"]
            ctx = await enter_organization(services.db, user, org)
            async with services.db.tenant(ctx) as session:
                integration = await IntegrationStore(session, services.vault).save(
                    ProviderKey.GOOGLE,
                    IntegrationKind.CALENDAR,
                    email=email,
                    account_id=email,
                    access_token=Secret(token),
                    refresh_token=None,
                    expires_at=None,
                    scopes=[SCOPE],
                )
            [primary] = [
                c for c in await service.calendars(ctx, integration) if c.primary
            ]
            await service.add_account(ctx, integration, primary.id)
    await services.close()
    return emails


async def scalar(admin_url: str, sql: str) -> int:
    from crmflow.store.db import Database

    db = Database(admin_url)
    try:
        async with db.admin() as session:
            return int((await session.execute(text(sql))).scalar_one())
    finally:
        await db.dispose()


async def column(admin_url: str, sql: str) -> list[int]:
    from crmflow.store.db import Database

    db = Database(admin_url)
    try:
        async with db.admin() as session:
            return [int(v) for v in (await session.execute(text(sql))).scalars()]
    finally:
        await db.dispose()


async def wait_for(admin_url: str, sql: str, at_least: int, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if await scalar(admin_url, sql) >= at_least:
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"timed out waiting for {what}")


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used so far (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Deployment:
    """A running deployment (see :func:`deployment`)."""

    google: str
    admin_url: str
    #: every crmflow process's environment
    env: dict[str, str]
    emails: list[str]
    #: sandbox, crmflow serve (if asked for), workers: stopped at the end
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tmp: Path = Path()

    def start_worker(self, name: str, concurrency: int = 4) -> subprocess.Popen[bytes]:
        """One more ``crmflow worker`` (stopped with the deployment)."""
        process = spawn(
            ["worker", "--concurrency", str(concurrency), "--name", name],
            self.env,
            self.tmp / f"{name}.log",
        )
        self.processes.append(process)
        return process


@contextlib.asynccontextmanager
async def deployment(
    kind: str,
    tmp: Path,
    calendars: int,
    *,
    workers: int = 0,
    serve: bool = True,
    env: dict[str, str | None] | None = None,
) -> AsyncIterator[Deployment]:
    """Sandbox, database, ``calendars`` provisioned users, crmflow serve
    (unless ``serve`` is False), and on PostgreSQL ``workers`` workers.

    The scheduled interval is an hour unless ``env`` says otherwise (a
    None value in ``env`` removes that variable).
    """
    from crmflow.sandbox.vendors import base_urls
    from crmflow.store.crypto import generate_key_entry

    processes: list[subprocess.Popen[bytes]] = []
    try:
        sandbox_port, web_port = free_port(), free_port()
        base = os.environ.copy()
        processes.append(
            spawn(
                ["sandbox", "serve", "--port", str(sandbox_port)],
                base,
                tmp / "sandbox.log",
            )
        )
        google = base_urls(f"http://127.0.0.1:{sandbox_port}/")["google"]
        await until_up(google + "_sandbox/")
        with database(kind, tmp) as (app_url, admin_url):
            full = {k: v for k, v in base.items() if not k.startswith("CRMFLOW_")}
            full |= {
                "CRMFLOW_DATABASE_URL": app_url,
                "CRMFLOW_ADMIN_DATABASE_URL": admin_url,
                "CRMFLOW_ENCRYPTION_KEYS": generate_key_entry("bench"),
                "CRMFLOW_SESSION_SECRET": "b" * 40,
                "CRMFLOW_DATA_DIR": str(tmp),
                "CRMFLOW_GOOGLE_API_URL": google,
                "CRMFLOW_GOOGLE_OAUTH2_URL": google,
                "CRMFLOW_GOOGLE_ACCOUNTS_URL": google,
                "CRMFLOW_WEBHOOK_BASE_URL": f"http://127.0.0.1:{web_port}",
                "CRMFLOW_SYNC_INTERVAL_S": "3600",
                "CRMFLOW_LOG_LEVEL": "WARNING",
            }
            for key, value in (env or {}).items():
                if value is None:
                    full.pop(key, None)
                else:
                    full[key] = value
            emails = await provision(full, google, calendars)
            running = Deployment(google, admin_url, full, emails, processes, tmp)
            if serve:
                processes.append(
                    spawn(["serve", "--port", str(web_port)], full, tmp / "serve.log")
                )
                await until_up(f"http://127.0.0.1:{web_port}/healthz")
            for n in range(workers if kind == "postgres" else 0):
                running.start_worker(f"worker-{n}")
            yield running
    finally:
        stop(processes)
