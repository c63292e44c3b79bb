"""An organization's own OAuth clients (``oauth_secrets``): admins only, the
secret encrypted and never returned, used for connects, falling back to the
configuration."""

from __future__ import annotations

from sqlalchemy import select

from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.sandbox.google.store import GoogleStore
from crmflow.store import models
from tests.servers.sandbox import GOOGLE_CLIENT, PUBLIC_BASE_URL, query_of

ORG_CLIENT = ("org-a.apps.googleusercontent.com", "GOCSPX-org-a-secret-42")
URL = "/api/organization/oauth-clients"


async def test_admin_sets_an_org_client_that_connects_and_never_shows_the_secret(
    web, flow, sandbox, tenants, admin_db
):
    alice = tenants.alice
    with sandbox.state.lock:
        sandbox.state.extension(GoogleStore).identity.register_client(
            client_id=ORG_CLIENT[0],
            client_secret=ORG_CLIENT[1],
            redirect_uris=[PUBLIC_BASE_URL + "/oauth/callback/google"],
        )
    put = await web.put(
        f"{URL}/google",
        headers=alice.headers,
        json={"client_id": ORG_CLIENT[0], "client_secret": ORG_CLIENT[1]},
    )
    assert put.status_code == 200, put.text
    assert put.json() == {
        "provider": "google",
        "source": "organization",
        "client_id": ORG_CLIENT[0],
        "has_secret": True,
    }
    listed = await web.get(URL, headers=alice.headers)
    assert ORG_CLIENT[1] not in listed.text
    assert {c["provider"]: c["source"] for c in listed.json()} == {
        "google": "organization",
        "microsoft": "configuration",
    }
    async with admin_db.admin() as session:
        stored = (await session.scalars(select(models.OAuthSecret))).one()
    assert stored.client_secret.startswith("v1:")
    assert ORG_CLIENT[1] not in stored.client_secret

    # connects of the organization use its own client, secret included
    started = await flow.integrations.start_connect(alice.ctx, IntegrationKind.GMAIL)
    assert query_of(started.authorization_url)["client_id"] == ORG_CLIENT[0]
    result = await flow.connect(
        alice.ctx, ProviderKey.GOOGLE, IntegrationKind.GMAIL, "alice@gmail.test"
    )
    assert result.integration.email == "alice@gmail.test"
    # another organization still uses the configuration's client
    bob = await flow.integrations.start_connect(tenants.bob.ctx, IntegrationKind.GMAIL)
    assert query_of(bob.authorization_url)["client_id"] == GOOGLE_CLIENT[0]


async def test_members_cannot_read_or_change_oauth_clients(web, tenants):
    h = tenants.amy.headers
    assert (await web.get(URL, headers=h)).status_code == 403
    put = await web.put(
        f"{URL}/google", headers=h, json={"client_id": "x", "client_secret": "y"}
    )
    assert put.status_code == 403
    assert "Only organization admins" in put.json()["detail"]
    assert (await web.delete(f"{URL}/google", headers=h)).status_code == 403


async def test_clearing_falls_back_to_the_configuration(web, flow, tenants):
    h = tenants.alice.headers
    await web.put(
        f"{URL}/microsoft", headers=h, json={"client_id": "mine", "client_secret": "s"}
    )
    cleared = await web.delete(f"{URL}/microsoft", headers=h)
    assert cleared.status_code == 200
    assert cleared.json()["source"] == "configuration"
    started = await flow.integrations.start_connect(
        tenants.alice.ctx, IntegrationKind.MAIL
    )
    assert query_of(started.authorization_url)["client_id"] != "mine"
    again = await web.delete(f"{URL}/microsoft", headers=h)
    assert again.status_code == 404
    assert not (
        await web.put(
            f"{URL}/imap", headers=h, json={"client_id": "a", "client_secret": "b"}
        )
    ).is_success
