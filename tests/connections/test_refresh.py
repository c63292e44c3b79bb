"""Server-side token refresh against the sandbox, on simulated time.

crmflow's clock is the sandbox's clock, so advancing sandbox time expires
crmflow's tokens exactly as the provider sees them. Every count of refresh
requests comes from the sandbox's request log.
"""

from __future__ import annotations

import asyncio

import pytest

from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.errors import NotFound
from crmflow.providers.base import AuthError, TransientProviderError
from crmflow.store.db import Database
from crmflow.store.integrations import (
    IntegrationEvent,
    IntegrationStatus,
    IntegrationStore,
)
from tests.servers.sandbox import (
    GOOGLE_CLIENT,
    GOOGLE_TOKEN_LIFETIME_S,
    MICROSOFT_TOKEN_LIFETIME_S,
    PUBLIC_BASE_URL,
)

G, M = ProviderKey.GOOGLE, ProviderKey.MICROSOFT
CAL = IntegrationKind.CALENDAR
#: (provider, token endpoint's method id in the request log, token lifetime)
PROVIDERS = [
    pytest.param(G, "oauth.token", GOOGLE_TOKEN_LIFETIME_S, id="google"),
    pytest.param(M, "identity.token", MICROSOFT_TOKEN_LIFETIME_S, id="microsoft"),
]
EMAIL = {G: "alice@gmail.test", M: "alice@contoso.test"}


async def _tokens(services, ctx, provider, kind=CAL):
    async with services.db.tenant(ctx) as session:
        return await IntegrationStore(session, services.vault).load(provider, kind)


async def _events(integrations, ctx) -> list[str]:
    return [e.event.value for e in await integrations.events(ctx)]


@pytest.mark.parametrize(("provider", "token_call", "lifetime_s"), PROVIDERS)
async def test_refreshes_two_minutes_before_expiry(
    flow, sandbox, tenants, services, provider, token_call, lifetime_s
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, provider, CAL, EMAIL[provider])
    before = await _tokens(services, ctx, provider)
    requests_after_connect = len(await sandbox.requests(token_call))

    # 2 min 1 s before expiry: still fresh, nothing is sent
    await sandbox.advance_clock(lifetime_s - 121)
    token = await flow.integrations.refresh_if_needed(ctx, CAL, provider)
    assert token == before.access_token
    assert len(await sandbox.requests(token_call)) == requests_after_connect

    # inside the 2-minute margin: one refresh
    await sandbox.advance_clock(2)
    token = await flow.integrations.refresh_if_needed(ctx, CAL, provider)
    after = await _tokens(services, ctx, provider)
    assert token != before.access_token
    assert token == after.access_token
    assert len(await sandbox.requests(token_call)) == requests_after_connect + 1
    assert after.expires_at > before.expires_at
    view = await flow.integrations.get_integration(ctx, CAL, provider)
    assert view.info.last_refreshed_at is not None
    assert await _events(flow.integrations, ctx) == ["refreshed", "connected"]
    # and the new token is good at the provider
    assert await flow.integrations.refresh_if_needed(ctx, CAL, provider) == token


@pytest.mark.parametrize(("provider", "token_call", "lifetime_s"), PROVIDERS)
async def test_twenty_concurrent_callers_in_two_workers_send_one_refresh(
    flow, sandbox, tenants, services, settings, pauses, provider, token_call, lifetime_s
):
    """10 callers in this process and 10 in a second "worker" (its own engine,
    connection pool and in-process state): only the database lock joins them."""
    ctx = tenants.alice.ctx
    await flow.connect(ctx, provider, CAL, EMAIL[provider])
    await sandbox.advance_clock(lifetime_s)  # expired
    before = len(await sandbox.requests(token_call))
    other_db = Database(settings.effective_database_url)
    try:
        worker = Integrations(
            other_db,
            services.vault,
            settings,
            clock=sandbox.state.clock.now,
            sleep=pauses,
        )
        callers = [
            (flow.integrations if i % 2 else worker).refresh_if_needed(
                ctx, CAL, provider
            )
            for i in range(20)
        ]
        tokens = await asyncio.gather(*callers)
    finally:
        await other_db.dispose()
    assert len(await sandbox.requests(token_call)) == before + 1
    assert len({t.reveal() for t in tokens}) == 1
    assert tokens[0] == (await _tokens(services, ctx, provider)).access_token
    assert (await _events(flow.integrations, ctx)).count("refreshed") == 1


async def test_microsoft_rotated_refresh_token_is_stored_with_the_access_token(
    flow, sandbox, tenants, services
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, M, CAL, EMAIL[M])
    first = await _tokens(services, ctx, M)
    await flow.integrations.refresh_if_needed(ctx, CAL, M, force=True)
    second = await _tokens(services, ctx, M)
    assert second.refresh_token != first.refresh_token  # rotated and stored
    assert second.access_token != first.access_token
    # the stored (rotated) one is what the next refresh spends
    await flow.integrations.refresh_if_needed(ctx, CAL, M, force=True)
    third = await _tokens(services, ctx, M)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)
    assert third.status is IntegrationStatus.CONNECTED


async def test_google_refresh_without_refresh_token_keeps_the_old_one(
    flow, tenants, services
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, G, CAL, EMAIL[G])
    first = await _tokens(services, ctx, G)
    await flow.integrations.refresh_if_needed(ctx, CAL, G, force=True)
    second = await _tokens(services, ctx, G)
    assert second.access_token != first.access_token
    assert second.refresh_token == first.refresh_token


async def test_revoked_google_grant_needs_reauth_without_a_retry_storm(
    flow, sandbox, tenants, services
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, G, CAL, EMAIL[G])
    await sandbox.control("google", "POST", "grants/revoke", json={"email": EMAIL[G]})
    before = len(await sandbox.requests("oauth.token"))
    results = await asyncio.gather(
        *(
            flow.integrations.refresh_if_needed(ctx, CAL, G, force=True)
            for _ in range(20)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(r, AuthError) for r in results)
    assert "Reconnect" in str(results[0])
    assert len(await sandbox.requests("oauth.token")) == before + 1
    view = await flow.integrations.get_integration(ctx, CAL, G)
    assert view.info.status is IntegrationStatus.NEEDS_REAUTH
    assert view.reconnect_required
    assert "invalid_grant" in view.info.last_error
    # later calls fail at once, without asking Google again
    with pytest.raises(AuthError, match="reconnect"):
        await flow.integrations.refresh_if_needed(ctx, CAL, G)
    assert len(await sandbox.requests("oauth.token")) == before + 1
    events = await _events(flow.integrations, ctx)
    assert events == ["needs_reauth", "connected"]
    # reconnecting repairs it
    await flow.connect(ctx, G, CAL, EMAIL[G])
    assert await flow.integrations.refresh_if_needed(ctx, CAL, G, force=True)
    view = await flow.integrations.get_integration(ctx, CAL, G)
    assert view.info.status is IntegrationStatus.CONNECTED
    assert view.info.last_error is None


async def test_expired_google_refresh_token_needs_reauth(flow, sandbox, tenants):
    """A consent screen in "Testing" gets refresh tokens that die after 7 days
    (google-apis.md section 1.5); time passes on the sandbox clock."""
    ctx = tenants.alice.ctx
    await sandbox.control(
        "google",
        "POST",
        "clients",
        json={
            "client_id": GOOGLE_CLIENT[0],
            "client_secret": GOOGLE_CLIENT[1],
            "redirect_uris": [PUBLIC_BASE_URL + "/oauth/callback/google"],
            "testing": True,
        },
    )
    await flow.connect(ctx, G, CAL, EMAIL[G])
    await sandbox.advance_clock(7 * 24 * 3600 + 60)
    with pytest.raises(AuthError, match="invalid_grant"):
        await flow.integrations.refresh_if_needed(ctx, CAL, G)
    view = await flow.integrations.get_integration(ctx, CAL, G)
    assert view.info.status is IntegrationStatus.NEEDS_REAUTH


#: AADSTS codes of a dead grant and the words the user reads
DEAD_GRANTS = (
    (70008, "expired after a period of inactivity"),
    (700082, "expired after 90 days without use"),
    (50173, "revoked, for example after a password change"),
)


async def test_dead_microsoft_grants_need_reauth(flow, sandbox, tenants):
    ctx = tenants.alice.ctx
    for code, words in DEAD_GRANTS:
        await flow.connect(ctx, M, CAL, EMAIL[M])  # (re)connect
        await sandbox.control(
            "microsoft",
            "POST",
            "tokens/expire",
            json={"email": EMAIL[M], "kind": "refresh", "code": code},
        )
        with pytest.raises(AuthError, match=f"AADSTS{code}"):
            await flow.integrations.refresh_if_needed(ctx, CAL, M, force=True)
        view = await flow.integrations.get_integration(ctx, CAL, M)
        assert view.info.status is IntegrationStatus.NEEDS_REAUTH
        assert words in view.info.last_error
        assert f"AADSTS{code}" in view.message


async def test_transient_failures_are_retried_with_backoff(
    flow, sandbox, tenants, services, pauses
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, G, CAL, EMAIL[G])
    for fault in ("backend_error", "unavailable", "drop_connection"):
        before = await _tokens(services, ctx, G)
        calls = len(await sandbox.requests("oauth.token"))
        pauses.taken.clear()
        await sandbox.add_fault(
            "google", kind=fault, api="oauth", method="oauth.token", count=2
        )
        token = await flow.integrations.refresh_if_needed(ctx, CAL, G, force=True)
        assert token != before.access_token, fault
        assert len(await sandbox.requests("oauth.token")) == calls + 3, fault
        assert len(pauses.taken) == 2, fault
        assert pauses.taken[0] <= pauses.taken[1], fault  # exponential back-off
        view = await flow.integrations.get_integration(ctx, CAL, G)
        assert view.info.status is IntegrationStatus.CONNECTED


async def test_giving_up_on_a_down_provider_keeps_the_status(
    flow, sandbox, tenants, services, pauses, settings
):
    ctx = tenants.alice.ctx
    await flow.connect(ctx, G, CAL, EMAIL[G])
    calls = len(await sandbox.requests("oauth.token"))
    await sandbox.add_fault(
        "google", kind="unavailable", api="oauth", method="oauth.token"
    )
    with pytest.raises(TransientProviderError, match="unavailable"):
        await flow.integrations.refresh_if_needed(ctx, CAL, G, force=True)
    attempts = settings.token_refresh_attempts
    assert len(await sandbox.requests("oauth.token")) == calls + attempts
    assert len(pauses.taken) == attempts - 1
    view = await flow.integrations.get_integration(ctx, CAL, G)
    assert view.info.status is IntegrationStatus.CONNECTED
    assert "unavailable" in view.info.last_error
    events = await flow.integrations.events(ctx)
    assert events[0].event is IntegrationEvent.REFRESH_FAILED
    # the provider is back: the next call works and clears the error
    await sandbox.control("google", "DELETE", "faults")
    assert isinstance(
        await flow.integrations.refresh_if_needed(ctx, CAL, G, force=True), Secret
    )
    view = await flow.integrations.get_integration(ctx, CAL, G)
    assert view.info.last_error is None


@pytest.mark.parametrize(("provider", "token_call", "lifetime_s"), PROVIDERS)
async def test_a_token_source_starts_from_the_tokens_its_caller_read(
    flow, sandbox, tenants, services, provider, token_call, lifetime_s
):
    """A sync reads its integration with the tokens in its first transaction
    and hands them to the source: a fresh token is used as read, one within
    the margin is refreshed as usual, and tokens of another integration are
    ignored."""
    ctx = tenants.alice.ctx
    await flow.connect(ctx, provider, CAL, EMAIL[provider])
    loaded = await _tokens(services, ctx, provider)
    # meanwhile the stored grant is marked broken: a source that read the
    # database would refuse, one that starts from what was read does not
    async with services.db.tenant(ctx) as session:
        await IntegrationStore(session, services.vault).mark_needs_reauth(
            loaded.id, "revoked"
        )
    source = flow.integrations.token_source(ctx, CAL, provider, loaded=loaded)
    assert await source() == loaded.access_token
    other = G if provider is M else M
    mismatched = flow.integrations.token_source(ctx, CAL, other, loaded=loaded)
    with pytest.raises(NotFound):
        await mismatched()  # read from the database: none of that provider

    async with services.db.tenant(ctx) as session:
        await IntegrationStore(session, services.vault).mark_refreshed(
            loaded.id,
            access_token=loaded.access_token,
            refresh_token=None,
            expires_at=loaded.expires_at,
        )
    refreshes = len(await sandbox.requests(token_call))
    await sandbox.advance_clock(lifetime_s - 60)  # within the margin now
    source = flow.integrations.token_source(ctx, CAL, provider, loaded=loaded)
    refreshed = await source()
    assert refreshed != loaded.access_token
    assert len(await sandbox.requests(token_call)) == refreshes + 1


@pytest.mark.parametrize(("provider", "token_call", "lifetime_s"), PROVIDERS)
async def test_a_token_source_keeps_its_fresh_token_until_the_margin(
    flow, sandbox, tenants, services, provider, token_call, lifetime_s
):
    """The requests of one run do not read the database for each token: a
    source hands out the token it holds while that one is fresh, and looks
    again (refreshing when needed) once it is within the margin."""
    ctx = tenants.alice.ctx
    await flow.connect(ctx, provider, CAL, EMAIL[provider])
    source = flow.integrations.token_source(ctx, CAL, provider)
    held = await source()
    assert held == (await _tokens(services, ctx, provider)).access_token
    refreshes = len(await sandbox.requests(token_call))

    # ten minutes on another caller refreshes: the database has a newer
    # token, the source keeps its own while it is fresh
    await sandbox.advance_clock(600)
    newer = await flow.integrations.refresh_if_needed(ctx, CAL, provider, force=True)
    assert newer != held
    assert await source() == held
    await sandbox.advance_clock(lifetime_s - 600 - 121)
    assert await source() == held

    # within two minutes of its end the source looks again: the newer token
    # is fresh, so nothing more is sent to the provider
    await sandbox.advance_clock(2)
    assert await source() == newer
    assert len(await sandbox.requests(token_call)) == refreshes + 1
