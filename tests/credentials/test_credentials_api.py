"""Connecting password accounts through the API and the service, on SQLite and
PostgreSQL: verified before stored, sealed by the vault, never echoed or
logged, private to their owner, re-checked on demand.
"""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

import psycopg
import pytest

from crmflow.connections.credentials import verify_stored
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.errors import NotFound
from crmflow.providers.base import HostUnreachable, WrongCredentials
from crmflow.store.integrations import (
    IntegrationEvent,
    IntegrationStatus,
    IntegrationStore,
)

pytestmark = pytest.mark.servers

ALICE_MAIL = "alice@example.test"


def _mail_body(dovecot, smtp_server, password=None, **overrides):
    body = {
        "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port, "security": "tls"},
        "smtp": {
            "host": "127.0.0.1",
            "port": smtp_server.starttls_port,
            "security": "starttls",
        },
        "email": ALICE_MAIL,
        "password": password or dovecot.users[ALICE_MAIL],
    }
    return {**body, **overrides}


def _dav_body(radicale, password=None, **overrides):
    body = {
        "url": radicale.url,
        "username": "alice",
        "password": password or radicale.users["alice"],
    }
    return {**body, **overrides}


def _database_bytes(db_urls, request) -> bytes:
    """Every byte the database holds on disk (after a checkpoint)."""
    if db_urls.backend == "sqlite":
        path = Path(db_urls.app_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    cluster = request.getfixturevalue("pg_cluster")
    with psycopg.connect(cluster.superuser_url(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    return b"".join(p.read_bytes() for p in cluster.data_dir.rglob("*") if p.is_file())


async def _integrations(services, actor):
    async with services.db.tenant(actor.ctx) as session:
        return await IntegrationStore(session, services.vault).all()


async def test_connect_mail_stores_the_verified_password_sealed(
    client, tenants, services, dovecot, smtp_server, db_urls, request, caplog
):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # SQL with parameters
    password = dovecot.users[ALICE_MAIL]

    resp = await client.post(
        "/api/integrations/imap",
        json=_mail_body(dovecot, smtp_server),
        headers=tenants.alice.headers,
    )

    assert resp.status_code == 201, resp.text
    out = resp.json()
    assert password not in resp.text
    assert (out["provider"], out["kind"], out["status"]) == (
        "imap",
        "mail",
        "connected",
    )
    assert (out["email"], out["username"]) == (ALICE_MAIL, ALICE_MAIL)
    assert out["settings"]["imap"] == {
        "host": "127.0.0.1",
        "port": dovecot.imaps_port,
        "security": "tls",
    }
    assert out["settings"]["smtp"]["security"] == "starttls"
    assert "IDLE" in out["settings"]["imap_capabilities"]
    # the servers really saw the sign-ins
    assert f"Login: user=<{ALICE_MAIL}>" in dovecot.log()
    assert smtp_server.attempts_of(ALICE_MAIL)[-1].accepted
    # the vault gives the password back to the service ...
    async with services.db.tenant(tenants.alice.ctx) as session:
        stored = await IntegrationStore(session, services.vault).load_password(
            uuid.UUID(out["id"])
        )
    assert stored == Secret(password)
    # ... but it is nowhere in plaintext: not on disk, not in the logs
    raw = _database_bytes(db_urls, request)
    assert ALICE_MAIL.encode() in raw  # the row is there
    assert password.encode() not in raw
    assert "INSERT INTO user_integrations" in caplog.text
    assert password not in caplog.text
    sasl = base64.b64encode(f"\0{ALICE_MAIL}\0{password}".encode()).decode()
    assert sasl not in caplog.text
    assert password not in dovecot.log()


async def test_connect_calendar_returns_the_discovered_calendars(
    client, tenants, services, radicale, db_urls, request, caplog
):
    caplog.set_level(logging.DEBUG)
    password = radicale.users["alice"]

    resp = await client.post(
        "/api/integrations/caldav",
        json=_dav_body(radicale),
        headers=tenants.alice.headers,
    )

    assert resp.status_code == 201, resp.text
    out = resp.json()
    assert password not in resp.text
    assert (out["provider"], out["kind"], out["username"]) == (
        "caldav",
        "calendar",
        "alice",
    )
    assert [(c["name"], c["components"]) for c in out["calendars"]] == [
        ("Office", ["VEVENT"])
    ]
    assert out["calendars"][0]["sync_token"]
    assert out["settings"]["principal_url"] == radicale.url + "alice/"
    assert [c["url"] for c in out["settings"]["calendars"]] == [
        radicale.url + "alice/office/"
    ]
    raw = _database_bytes(db_urls, request)
    basic = base64.b64encode(f"alice:{password}".encode())
    assert password.encode() not in raw
    assert basic not in raw
    assert password not in caplog.text
    assert basic.decode() not in caplog.text


async def test_each_failure_is_a_distinct_422_and_nothing_is_stored(
    client, tenants, services, dovecot, smtp_server, radicale, html_server, closed_port
):
    h = tenants.alice.headers
    cases = {
        "WrongCredentials": (
            "/api/integrations/imap",
            _mail_body(dovecot, smtp_server, password="wrong-pw-0a1"),
        ),
        "TlsFailure": (
            "/api/integrations/imap",
            _mail_body(
                dovecot,
                smtp_server,
                imap={
                    "host": "127.0.0.1",
                    "port": dovecot.imap_port,
                    "security": "tls",
                },
            ),
        ),
        "HostUnreachable": (
            "/api/integrations/caldav",
            _dav_body(radicale, url=f"http://127.0.0.1:{closed_port}/"),
        ),
        "NotAServer": (
            "/api/integrations/caldav",
            _dav_body(radicale, url=html_server.url),
        ),
        "ValidationFailed": (
            "/api/integrations/imap",
            _mail_body(
                dovecot,
                smtp_server,
                smtp={"host": "smtp.example.com", "port": 25, "security": "none"},
            ),
        ),
    }
    details = set()
    for error, (path, body) in cases.items():
        resp = await client.post(path, json=body, headers=h)
        assert resp.status_code == 422, (error, resp.text)
        assert resp.json()["error"] == error, resp.text
        assert "wrong-pw-0a1" not in resp.text
        details.add(resp.json()["detail"])
    assert len(details) == len(cases)  # a different message for each
    # the wrong password was refused by the IMAP server; SMTP was not tried
    assert "Password mismatch" in dovecot.log()
    assert await _integrations(services, tenants.alice) == []


async def test_smtp_failure_after_imap_success_stores_nothing(
    client, tenants, services, dovecot, smtp_server
):
    body = _mail_body(
        dovecot,
        smtp_server,
        smtp={"host": "127.0.0.1", "port": smtp_server.plain_port, "security": "tls"},
    )
    resp = await client.post(
        "/api/integrations/imap", json=body, headers=tenants.alice.headers
    )
    assert resp.status_code == 422
    assert resp.json()["error"] == "TlsFailure"
    assert "SMTP server" in resp.json()["detail"]
    assert await _integrations(services, tenants.alice) == []


async def test_validation_errors_do_not_echo_the_password(client, tenants):
    secret = "do-not-echo-me-77"
    resp = await client.post(
        "/api/integrations/imap",
        json={"password": secret, "imap": {"host": "x", "port": 0}},
        headers=tenants.alice.headers,
    )
    assert resp.status_code == 422
    assert secret not in resp.text
    assert {tuple(e["loc"]) for e in resp.json()["detail"]} >= {
        ("body", "email"),
        ("body", "imap", "port"),
    }


async def test_presets(client, tenants):
    resp = await client.get("/api/integrations/presets", headers=tenants.bob.headers)
    assert resp.status_code == 200
    out = resp.json()
    mail = {p["key"]: p for p in out["mail"]}
    assert set(mail) == {"icloud", "gmail", "outlook", "fastmail", "yahoo"}
    assert mail["icloud"]["provider"] == "apple"
    assert mail["icloud"]["imap"] == {
        "host": "imap.mail.me.com",
        "port": 993,
        "security": "tls",
    }
    assert mail["icloud"]["smtp"] == {
        "host": "smtp.mail.me.com",
        "port": 587,
        "security": "starttls",
    }
    assert all(p["app_password_required"] for p in out["mail"])
    calendars = {p["key"]: p for p in out["calendar"]}
    assert calendars["icloud"]["url"] == "https://caldav.icloud.com/"
    assert calendars["nextcloud"]["url"] is None
    assert (await client.get("/api/integrations/presets")).status_code == 401


async def test_a_credential_integration_is_private_to_its_owner(
    client, tenants, services, radicale, admin_db
):
    resp = await client.post(
        "/api/integrations/caldav",
        json=_dav_body(radicale),
        headers=tenants.alice.headers,
    )
    integration_id = uuid.UUID(resp.json()["id"])

    for other in (tenants.amy, tenants.bob):  # same organization, other organization
        assert await _integrations(services, other) == []
        async with services.db.tenant(other.ctx) as session:
            store = IntegrationStore(session, services.vault)
            with pytest.raises(NotFound):
                await store.get(integration_id)
            with pytest.raises(NotFound):
                await store.load_password(integration_id)
        with pytest.raises(NotFound):
            await verify_stored(services, other.ctx, integration_id)

    # bob connecting his own account leaves alice's untouched
    resp = await client.post(
        "/api/integrations/caldav",
        json=_dav_body(radicale, username="bob", password=radicale.users["bob"]),
        headers=tenants.bob.headers,
    )
    assert resp.status_code == 201
    assert resp.json()["id"] != str(integration_id)
    alice_rows = await _integrations(services, tenants.alice)
    assert [(i.id, i.account_id) for i in alice_rows] == [(integration_id, "alice")]


async def test_verify_stored_marks_a_refused_password_and_recovers(
    client, tenants, services, radicale
):
    ctx = tenants.alice.ctx
    resp = await client.post(
        "/api/integrations/caldav",
        json=_dav_body(radicale),
        headers=tenants.alice.headers,
    )
    integration_id = uuid.UUID(resp.json()["id"])
    assert (await verify_stored(services, ctx, integration_id)).status == (
        IntegrationStatus.CONNECTED
    )

    # the password was changed at the provider: what is stored no longer works
    async with services.db.tenant(ctx) as session:
        store = IntegrationStore(session, services.vault)
        info = await store.get(integration_id)
        await store.save_credentials(
            ProviderKey.CALDAV,
            IntegrationKind.CALENDAR,
            email=info.email or "",
            username="alice",
            password=Secret("an-old-password"),
            settings={k: v for k, v in info.settings.items() if k != "username"},
        )
    with pytest.raises(WrongCredentials):
        await verify_stored(services, ctx, integration_id)
    async with services.db.tenant(ctx) as session:
        store = IntegrationStore(session, services.vault)
        info = await store.get(integration_id)
        events = [e.event for e in await store.events()]
    assert info.status is IntegrationStatus.NEEDS_REAUTH
    assert "HTTP 401" in (info.last_error or "")
    assert IntegrationEvent.NEEDS_REAUTH in events

    # the user enters the right password again
    resp = await client.post(
        "/api/integrations/caldav",
        json=_dav_body(radicale),
        headers=tenants.alice.headers,
    )
    assert resp.json()["id"] == str(integration_id)
    assert resp.json()["status"] == "connected"
    assert (await verify_stored(services, ctx, integration_id)).last_error is None


async def test_verify_stored_mail_and_a_passing_failure(
    client, tenants, services, dovecot, smtp_server, closed_port
):
    ctx = tenants.alice.ctx
    resp = await client.post(
        "/api/integrations/imap",
        json=_mail_body(dovecot, smtp_server),
        headers=tenants.alice.headers,
    )
    integration_id = uuid.UUID(resp.json()["id"])
    logins = dovecot.log().count(f"Login: user=<{ALICE_MAIL}>")

    info = await verify_stored(services, ctx, integration_id)

    assert info.status is IntegrationStatus.CONNECTED
    assert dovecot.log().count(f"Login: user=<{ALICE_MAIL}>") == logins + 1

    # the server is down: an error is recorded, the password is not blamed
    async with services.db.tenant(ctx) as session:
        store = IntegrationStore(session, services.vault)
        info = await store.get(integration_id)
        settings = {k: v for k, v in info.settings.items() if k != "username"}
        settings["imap"] = {**settings["imap"], "port": closed_port}
        await store.save_credentials(
            ProviderKey.IMAP,
            IntegrationKind.MAIL,
            email=ALICE_MAIL,
            username=ALICE_MAIL,
            password=Secret(dovecot.users[ALICE_MAIL]),
            settings=settings,
        )
    with pytest.raises(HostUnreachable):
        await verify_stored(services, ctx, integration_id)
    async with services.db.tenant(ctx) as session:
        info = await IntegrationStore(session, services.vault).get(integration_id)
    assert info.status is IntegrationStatus.CONNECTED
    assert "connection was refused" in (info.last_error or "")
