"""``/healthz`` and ``/readyz`` on both databases, and a readiness check that
fails without telling the caller anything about the database."""

from __future__ import annotations

from pathlib import Path

import httpx

from crmflow.bootstrap import Services
from crmflow.config import Settings
from crmflow.store.crypto import Vault
from crmflow.store.db import Database
from crmflow.web.app import create_app
from tests.servers.net import free_port


async def test_alive_and_ready(client: httpx.AsyncClient) -> None:
    alive = await client.get("/healthz")
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok"}}


async def _probe(settings: Settings, database_url: str) -> tuple[int, int, str]:
    """(healthz status, readyz status, readyz body) with ``database_url``."""
    assert settings.encryption_keys is not None
    services = Services(
        settings=settings,
        db=Database(database_url),
        vault=Vault.from_setting(settings.encryption_keys),
    )
    try:
        app = create_app(settings, services)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            alive = await client.get("/healthz")
            ready = await client.get("/readyz")
    finally:
        await services.db.dispose()
    return alive.status_code, ready.status_code, ready.text


async def test_not_ready_before_migrations(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "never-migrated.db"
    alive, ready, body = await _probe(settings, f"sqlite:///{empty}")
    assert (alive, ready) == (200, 503)
    assert '"status":"not ready"' in body
    assert "crmflow db upgrade" in body
    assert str(tmp_path) not in body


async def test_not_ready_when_the_database_is_down(settings: Settings) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://crmflow:hunter2-db-password@127.0.0.1:{port}/crmflow"
    alive, ready, body = await _probe(settings, url)
    assert (alive, ready) == (200, 503)
    assert "refused the check" in body or "no answer within" in body
    for secret in ("hunter2-db-password", str(port), "127.0.0.1", "crmflow:"):
        assert secret not in body
