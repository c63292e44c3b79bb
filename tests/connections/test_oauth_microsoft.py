"""Connecting Microsoft 365 over real HTTP: the identity platform's consent page,
the browser's redirect back, the stored row; tenant, partial consent (including
a grant without offline access), reconnecting, and refused codes (AADSTS)."""

from __future__ import annotations

import datetime as dt

import pytest

from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.providers.base import GrantRejected
from crmflow.sandbox.microsoft.store import MicrosoftStore
from crmflow.store.integrations import IntegrationStatus, IntegrationStore
from tests.connections.conftest import Flow, sign_in
from tests.servers.sandbox import (
    MICROSOFT_CLIENT,
    MICROSOFT_TOKEN_LIFETIME_S,
    PUBLIC_BASE_URL,
    query_of,
)

M = ProviderKey.MICROSOFT
MAIL = IntegrationKind.MAIL
CAL = IntegrationKind.CALENDAR


async def test_connect_outlook_mail_through_the_browser(
    web, flow, sandbox, tenants, services
):
    alice = tenants.alice
    await sign_in(web, alice)
    await sandbox.add_user("microsoft", "alice@contoso.test")
    started = await web.post("/api/integrations/mail/connect", headers=alice.headers)
    assert started.status_code == 200, started.text
    url = started.json()["authorization_url"]
    assert url.startswith(sandbox.microsoft_url + "/common/oauth2/v2.0/authorize?")
    params = query_of(url)
    assert params["client_id"] == MICROSOFT_CLIENT[0]
    assert params["redirect_uri"] == PUBLIC_BASE_URL + "/oauth/callback/microsoft"
    assert params["response_mode"] == "query"
    assert params["code_challenge_method"] == "S256"
    assert set(params["scope"].split()) == {
        "offline_access",
        "openid",
        "email",
        "User.Read",
        "Mail.Send",
        "Mail.Read",
        "Mail.ReadWrite",
    }
    assert "prompt" not in params

    back = await sandbox.consent(url, "alice@contoso.test")
    response = await web.get(back.removeprefix(PUBLIC_BASE_URL))
    assert response.status_code == 303
    assert response.headers["location"].endswith("provider=microsoft&kind=mail")

    async with services.db.tenant(alice.ctx) as session:
        store = IntegrationStore(session, services.vault)
        tokens = await store.load(M, MAIL)
        info = await store.get(tokens.id)
    assert info.email == "alice@contoso.test"
    assert info.account_id  # the Graph user id
    assert info.status is IntegrationStatus.CONNECTED
    assert {"Mail.Send", "Mail.Read", "User.Read"} <= set(info.scopes)
    lifetime = info.expires_at - sandbox.state.clock.now()
    assert dt.timedelta(seconds=MICROSOFT_TOKEN_LIFETIME_S - 60) < lifetime
    assert lifetime <= dt.timedelta(seconds=MICROSOFT_TOKEN_LIFETIME_S)
    identity = sandbox.state.extension(MicrosoftStore).data.identity
    assert tokens.refresh_token.reveal() in identity.refresh_tokens
    calls = [e["apiMethod"] for e in await sandbox.requests()]
    assert calls == [
        "identity.authorize",
        "identity.consent",
        "identity.token",
        "graph.me.get",
    ]


async def test_tenant_comes_from_configuration(
    services, settings, sandbox, tenants, pauses
):
    organizations = settings.model_copy(update={"microsoft_tenant": "organizations"})
    integrations = Integrations(
        services.db,
        services.vault,
        organizations,
        clock=sandbox.state.clock.now,
        sleep=pauses,
    )
    flow = Flow(sandbox, integrations)
    result = await flow.connect(tenants.alice.ctx, M, CAL, "alice@contoso.test")
    assert result.integration.email == "alice@contoso.test"
    token_calls = await sandbox.requests("identity.token")
    assert token_calls[0]["path"].endswith("/organizations/oauth2/v2.0/token")


async def test_partial_consent_and_grant_access_keep_earlier_scopes(
    flow, sandbox, tenants
):
    ctx = tenants.alice.ctx
    result = await flow.connect(
        ctx, M, MAIL, "alice@contoso.test", untick=("Mail.Send",)
    )
    features = {f.key: f for f in result.report.features}
    assert features["read_email"].enabled
    assert not features["send_email"].enabled
    assert features["send_email"].missing == ("send email as you",)
    assert result.report.not_granted == ("Mail.Send",)

    more = await flow.integrations.start_connect(ctx, MAIL, features=["send_email"])
    asked = set(query_of(more.authorization_url)["scope"].split())
    # Microsoft's new token holds what is asked for: the earlier scopes go along
    assert {"Mail.Send", "Mail.Read", "offline_access"} <= asked
    assert query_of(more.authorization_url)["prompt"] == "consent"
    again = await flow.connect(ctx, M, MAIL, "alice@contoso.test")
    assert again.report.complete


async def test_grant_without_offline_access_is_connected_but_says_so(
    flow, sandbox, tenants
):
    result = await flow.connect(
        tenants.alice.ctx, M, CAL, "alice@contoso.test", untick=("offline_access",)
    )
    assert result.integration.status is IntegrationStatus.CONNECTED
    assert not result.integration.has_refresh_token
    stay = next(f for f in result.report.features if f.key == "stay_connected")
    assert not stay.enabled
    assert stay.missing_scopes == ("offline_access",)
    assert "no refresh token" in stay.message
    assert all(f.enabled for f in result.report.features if f is not stay)


async def test_grant_without_user_read_names_the_account_from_the_id_token(
    flow, sandbox, tenants
):
    result = await flow.connect(
        tenants.alice.ctx, M, MAIL, "alice@contoso.test", untick=("User.Read",)
    )
    assert result.integration.email == "alice@contoso.test"
    assert result.integration.account_id
    assert await sandbox.requests("identity.token")
    assert await sandbox.requests("graph.me.get") == []


async def test_reconnect_forces_consent_and_updates_in_place(flow, tenants):
    ctx = tenants.alice.ctx
    first = await flow.connect(ctx, M, MAIL, "alice@contoso.test")
    started = await flow.integrations.start_connect(ctx, MAIL)
    assert query_of(started.authorization_url)["prompt"] == "consent"
    assert query_of(started.authorization_url)["login_hint"] == "alice@contoso.test"
    again = await flow.connect(ctx, M, MAIL, "alice@contoso.test")
    assert again.integration.id == first.integration.id
    assert again.reconnected


async def test_replayed_code_and_foreign_verifier_are_refused(flow, sandbox, tenants):
    ctx = tenants.alice.ctx
    await sandbox.add_user("microsoft", "alice@contoso.test")
    one = await flow.integrations.start_connect(ctx, MAIL)
    two = await flow.integrations.start_connect(ctx, MAIL)
    three = await flow.integrations.start_connect(ctx, MAIL)
    back = query_of(await sandbox.consent(one.authorization_url, "alice@contoso.test"))
    # another sign-in's verifier: AADSTS50148
    with pytest.raises(GrantRejected, match="PKCE") as refused:
        await flow.integrations.complete_connect(
            ctx, M, state=query_of(two.authorization_url)["state"], code=back["code"]
        )
    assert 50148 in refused.value.codes
    await flow.integrations.complete_connect(
        ctx, M, state=back["state"], code=back["code"]
    )
    # the code again, under a fresh state: AADSTS54005
    with pytest.raises(GrantRejected, match="already used"):
        await flow.integrations.complete_connect(
            ctx, M, state=query_of(three.authorization_url)["state"], code=back["code"]
        )
