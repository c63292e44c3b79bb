"""Tokens at rest: never plaintext in the database's bytes or in logs; key
checks at start-up; rotation re-encrypts everything and can resume."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select

from crmflow.bootstrap import start_services
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.errors import ConfigError, CryptoError
from crmflow.store import keys as keys_module
from crmflow.store import models
from crmflow.store.crypto import Vault, generate_key_entry, key_id_of, parse_key_ring
from crmflow.store.integrations import IntegrationStore
from crmflow.store.keys import rotate

ACCESS = "ya29.KNOWN-ACCESS-TOKEN-3b9f1c"
REFRESH = "1//KNOWN-REFRESH-TOKEN-77aa02"


async def _save(
    services, ctx, provider=ProviderKey.GOOGLE, kind=IntegrationKind.CALENDAR
):
    async with services.db.tenant(ctx) as session:
        return await IntegrationStore(session, services.vault).save(
            provider,
            kind,
            email="alice@gmail.example.com",
            account_id="1234",
            access_token=Secret(ACCESS),
            refresh_token=Secret(REFRESH),
            expires_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            scopes=["https://www.googleapis.com/auth/calendar"],
        )


def _database_bytes(db_urls, request) -> bytes:
    """Every byte the database holds on disk."""
    if db_urls.backend == "sqlite":
        path = Path(db_urls.app_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    cluster = request.getfixturevalue("pg_cluster")
    with psycopg.connect(cluster.superuser_url(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    return b"".join(p.read_bytes() for p in cluster.data_dir.rglob("*") if p.is_file())


async def test_tokens_never_reach_disk_or_logs_in_plaintext(
    services, tenants, db_urls, request, caplog
):
    caplog.set_level(logging.DEBUG)
    # echo every SQL statement with its parameters into the captured log
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    await _save(services, tenants.alice.ctx)
    async with services.db.tenant(tenants.alice.ctx) as session:
        loaded = await IntegrationStore(session, services.vault).load(
            ProviderKey.GOOGLE, IntegrationKind.CALENDAR
        )
    assert loaded.access_token == Secret(ACCESS)
    assert loaded.refresh_token == Secret(REFRESH)
    assert ACCESS not in repr(loaded)

    raw = _database_bytes(db_urls, request)
    assert b"KNOWN-ACCESS-TOKEN" not in raw
    assert b"KNOWN-REFRESH-TOKEN" not in raw
    # the row is really there, as ciphertext
    assert b"alice@gmail.example.com" in raw
    assert "INSERT INTO user_integrations" in caplog.text
    assert "KNOWN-ACCESS-TOKEN" not in caplog.text
    assert "KNOWN-REFRESH-TOKEN" not in caplog.text


async def test_reconnect_updates_in_place_and_keeps_refresh_token(
    services, tenants, admin_db
):
    first = await _save(services, tenants.alice.ctx)
    async with services.db.tenant(tenants.alice.ctx) as session:
        store = IntegrationStore(session, services.vault)
        again = await store.save(
            ProviderKey.GOOGLE,
            IntegrationKind.CALENDAR,
            email="alice@gmail.example.com",
            account_id="1234",
            access_token=Secret("new-access"),
            refresh_token=None,
            expires_at=None,
            scopes=[],
        )
        loaded = await store.load(ProviderKey.GOOGLE, IntegrationKind.CALENDAR)
    assert again == first
    assert loaded.access_token == Secret("new-access")
    assert loaded.refresh_token == Secret(REFRESH)
    async with admin_db.admin() as session:
        assert len(list(await session.scalars(select(models.UserIntegration)))) == 1


async def test_start_up_refuses_missing_and_wrong_keys(settings, services, tenants):
    await _save(services, tenants.alice.ctx)
    with pytest.raises(ConfigError, match="CRMFLOW_ENCRYPTION_KEYS"):
        await start_services(settings.model_copy(update={"encryption_keys": None}))
    # same key id, different key material: caught at start-up, not at first use
    wrong = settings.model_copy(
        update={"encryption_keys": Secret(generate_key_entry("test1"))}
    )
    with pytest.raises(CryptoError, match="key 'test1' is not the key"):
        await start_services(wrong)


async def test_rotation_re_encrypts_everything_and_resumes(
    settings, services, tenants, admin_db, monkeypatch, key_ring
):
    await _save(services, tenants.alice.ctx)
    await _save(services, tenants.amy.ctx)
    await _save(services, tenants.bob.ctx, ProviderKey.MICROSOFT, IntegrationKind.MAIL)
    new_ring = f"{key_ring},{generate_key_entry('test2')}"
    vault = Vault(parse_key_ring(new_ring))

    # crash after the first batch of one row ...
    monkeypatch.setattr(keys_module, "_BATCH_ROWS", 1)
    calls = []

    def crash_after_first(n):
        calls.append(n)
        if len(calls) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await rotate(admin_db, vault, crash_after_first)
    async with admin_db.admin() as session:
        rows = list(await session.scalars(select(models.UserIntegration)))
    kids = sorted(key_id_of(r.access_token) for r in rows) + sorted(
        key_id_of(r.refresh_token) for r in rows
    )
    assert kids.count("test2") == 1, kids

    # ... and the rerun finishes the rest
    report = await rotate(admin_db, vault)
    assert (report.rotated, report.total) == (5, 6)
    async with admin_db.admin() as session:
        rows = list(await session.scalars(select(models.UserIntegration)))
    assert {key_id_of(r.access_token) for r in rows} == {"test2"}
    assert {key_id_of(r.refresh_token) for r in rows} == {"test2"}

    # the old key can now go: a ring with only the new key opens everything
    only_new = settings.model_copy(
        update={"encryption_keys": Secret(new_ring.split(",")[1])}
    )
    fresh = await start_services(only_new)
    try:
        async with fresh.db.tenant(tenants.bob.ctx) as session:
            loaded = await IntegrationStore(session, fresh.vault).load(
                ProviderKey.MICROSOFT, IntegrationKind.MAIL
            )
        assert loaded.refresh_token == Secret(REFRESH)
    finally:
        await fresh.close()
