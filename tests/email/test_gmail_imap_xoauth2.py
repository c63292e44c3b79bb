"""Gmail through IMAP and SMTP with OAuth (SASL XOAUTH2), on SQLite and PostgreSQL.

The Gmail connection is made through the sandbox's real OAuth flow; "Gmail's"
IMAP server is the test Dovecot and its SMTP server the aiosmtpd that delivers
into Dovecot. Both check each access token the way Gmail does: Dovecot's own
``oauth2`` passdb and the SMTP server ask the sandbox's Google ``tokeninfo``
endpoint, and accept a token only when it is live, names the user and carries
``https://mail.google.com/``. So every sign-in below is proven by the servers
(Dovecot's log, the SMTP server's record, the sandbox's request log), and no
password exists anywhere.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from crmflow.config import Settings
from crmflow.connections import scopes as sc
from crmflow.connections.service import Integrations
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.mail import Address, EmailAccountInfo, MailFolder
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import ValidationFailed
from crmflow.providers.base import WrongCredentials
from crmflow.sandbox.google.demo import seed_demo_google
from crmflow.services.mail import Draft, MailService
from tests.connections.conftest import Flow, query_of, sign_in
from tests.servers.dovecot import DovecotServer
from tests.servers.sandbox import Sandbox
from tests.servers.smtp_delivery import DeliveryServer

pytestmark = pytest.mark.servers

FEATURES = ["read_email", "send_email", "organize_email", sc.IMAP_SMTP]


@pytest.fixture
def settings(
    settings: Settings, dovecot: DovecotServer, delivery: DeliveryServer
) -> Settings:
    """Gmail's IMAP and SMTP servers are the test servers (trusted by CA file)."""
    return settings.model_copy(
        update={
            "extra_ca_file": dovecot.cert.cert_file,
            "google_imap_url": f"imaps://{dovecot.host}:{dovecot.imaps_port}",
            "google_smtp_url": f"smtp://{delivery.host}:{delivery.starttls_port}",
        }
    )


def _address() -> str:
    return f"{uuid.uuid4().hex[:10]}@gmail.test"


def _inbound(sender: str, to: str, subject: str, message_id: str) -> bytes:
    return (
        f"From: Jane Doe <{sender}>\nTo: {to}\nSubject: {subject}\n"
        f"Date: Fri, 20 Nov 2026 10:00:00 +0000\nMessage-ID: {message_id}\n"
        "Content-Type: text/plain; charset=utf-8\n\nHello over IMAP.\n"
    ).encode()


async def _connect(
    flow: Flow,
    mail: MailService,
    dovecot: DovecotServer,
    ctx: TenantContext,
    address: str,
    features: list[str] = FEATURES,
) -> EmailAccountInfo:
    """Connect ``address``'s Gmail through OAuth; its Dovecot mailbox exists
    (the password is never used: sign-in is by token)."""
    dovecot.add_users({address: f"unused-{uuid.uuid4()}"})
    await flow.connect(
        ctx, ProviderKey.GOOGLE, IntegrationKind.GMAIL, address, features=features
    )
    return next(a for a in await mail.accounts(ctx) if a.email_address == address)


async def _tokeninfo_calls(sandbox: Sandbox) -> int:
    return len(await sandbox.requests("oauth.tokeninfo"))


async def test_gmail_reads_and_sends_through_imap_and_smtp_with_oauth(
    flow: Flow,
    integrations: Integrations,
    mail: MailService,
    dovecot: DovecotServer,
    delivery: DeliveryServer,
    sandbox: Sandbox,
    tenants,
) -> None:
    alice, bob = tenants.alice.ctx, tenants.bob.ctx
    a_address, b_address = _address(), _address()
    a = await _connect(flow, mail, dovecot, alice, a_address)
    b = await _connect(flow, mail, dovecot, bob, b_address)
    for ctx, account in ((alice, a), (bob, b)):
        view = await integrations.set_mail_protocol(ctx, account.integration_id, "imap")
        assert view.info.settings["mail_protocol"] == "imap"
        assert "IDLE" in view.info.settings["imap_capabilities"]
    # the switch signed in for real, with the token and nothing else
    log = dovecot.log()
    assert f"user=<{a_address}>, method=XOAUTH2" in log
    assert delivery.oauth_attempts.count((a_address, True)) == 1
    assert (a_address, True) not in delivery.attempts  # no password AUTH

    dovecot.deliver(
        a_address,
        "jane.doe@acme.example",
        _inbound("jane.doe@acme.example", a_address, "Hello", "<in-1@acme.example>"),
    )
    before = await _tokeninfo_calls(sandbox)
    result = await mail.sync(alice, a.id)
    assert (result.imported, result.error) == (1, None)
    (inbound,) = (await mail.messages(alice))[0]
    assert inbound.subject == "Hello"
    assert await _tokeninfo_calls(sandbox) > before  # Dovecot checked the token

    sent = await mail.send(
        alice,
        Draft(a.id, to=(Address(b_address, "Bob"),), subject="Offer", text="Attached."),
    )
    assert sent.summary.folder is MailFolder.SENT
    (transaction,) = delivery.transactions_from(a_address)
    assert transaction.rcpt_tos == (b_address,)
    assert delivery.oauth_attempts[-1] == (a_address, True)
    # Gmail files the Sent copy itself: crmflow APPENDs none
    assert "Sent" not in dovecot.doveadm("mailbox", "list", "-u", a_address)

    got = await mail.sync(bob, b.id)
    assert (got.imported, got.error) == (1, None)
    (received,) = (await mail.messages(bob))[0]
    assert received.subject == "Offer"
    assert received.sender is not None
    assert received.sender.email == a_address

    # an hour and a half later the access token has expired: the next sync
    # refreshes it first, and Dovecot accepts the new one
    await sandbox.advance_clock(90 * 60)
    refreshes = len(await sandbox.requests("oauth.token"))
    again = await mail.sync(alice, a.id)
    assert (again.imported, again.error) == (0, None)
    assert len(await sandbox.requests("oauth.token")) == refreshes + 1


async def test_switching_needs_full_mailbox_access_and_accepted_tokens(
    flow: Flow,
    integrations: Integrations,
    mail: MailService,
    dovecot: DovecotServer,
    sandbox: Sandbox,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    address = _address()
    account = await _connect(flow, mail, dovecot, ctx, address, features=FEATURES[:3])
    assert account.integration_id is not None
    with pytest.raises(ValidationFailed, match="Grant access") as refused:
        await integrations.set_mail_protocol(ctx, account.integration_id, "imap")
    assert "Read and send through IMAP and SMTP" in refused.value.message
    view = await integrations.get_integration(ctx, IntegrationKind.GMAIL)
    assert "mail_protocol" not in view.info.settings
    (optional,) = [f for f in view.features if f.key == sc.IMAP_SMTP]
    assert optional.optional
    assert not optional.enabled

    # "Grant access" for the optional feature, then the switch works
    await flow.connect(
        ctx, ProviderKey.GOOGLE, IntegrationKind.GMAIL, address, features=[sc.IMAP_SMTP]
    )
    await integrations.set_mail_protocol(ctx, account.integration_id, "imap")

    # the person revokes crmflow's access at Google: Dovecot refuses the
    # (unexpired) token, and the sync says to connect again
    token = await integrations.refresh_if_needed(ctx, IntegrationKind.GMAIL)
    async with httpx.AsyncClient() as http:
        revoked = await http.post(
            sandbox.google_url + "revoke", data={"token": token.reveal()}
        )
    assert revoked.status_code == 200
    result = await mail.sync(ctx, account.id)
    assert result.error is not None
    assert "refused the account's OAuth access" in result.error
    assert "connect the account again" in result.error
    assert token.reveal() not in result.error

    # switching again is checked again: refused, nothing changes
    await integrations.set_mail_protocol(ctx, account.integration_id, "api")
    with pytest.raises(WrongCredentials, match="OAuth access"):
        await integrations.set_mail_protocol(ctx, account.integration_id, "imap")
    view = await integrations.get_integration(ctx, IntegrationKind.GMAIL)
    assert view.info.settings["mail_protocol"] == "api"


async def test_a_switch_reimports_without_duplicates(
    flow: Flow,
    integrations: Integrations,
    mail: MailService,
    dovecot: DovecotServer,
    sandbox: Sandbox,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    address = _address()
    seed_demo_google(sandbox.state, address)
    account = await _connect(flow, mail, dovecot, ctx, address)
    first = await mail.sync(ctx, account.id)
    assert first.error is None
    assert first.imported > 0
    page, total = await mail.messages(ctx, limit=200)
    known = await mail.message(ctx, page[0].id)
    assert known.message_id
    # the same message, as Gmail's IMAP server shows it
    dovecot.deliver(
        address,
        "jane.doe@acme.example",
        _inbound(
            "jane.doe@acme.example", address, known.summary.subject, known.message_id
        ),
    )
    assert account.integration_id is not None
    await integrations.set_mail_protocol(ctx, account.integration_id, "imap")
    after = await mail.sync(ctx, account.id)
    assert (after.imported, after.updated, after.error) == (0, 1, None)
    assert (await mail.messages(ctx, limit=200))[1] == total
    # and back: the Gmail API cursor is not reused, the window is read again
    await integrations.set_mail_protocol(ctx, account.integration_id, "api")
    back = await mail.sync(ctx, account.id)
    assert (back.imported, back.error) == (0, None)
    assert back.updated == total


async def test_api_and_settings_page(
    flow: Flow,
    mail: MailService,
    dovecot: DovecotServer,
    web: httpx.AsyncClient,
    tenants,
) -> None:
    alice = tenants.alice
    address = _address()
    await _connect(flow, mail, dovecot, alice.ctx, address)
    url = "/api/integrations/gmail/mail-protocol"
    bad = await web.put(url, json={"protocol": "pop3"}, headers=alice.headers)
    assert bad.status_code == 422
    nobody = await web.put(url, json={"protocol": "imap"}, headers=tenants.bob.headers)
    assert nobody.status_code == 404
    done = await web.put(url, json={"protocol": "imap"}, headers=alice.headers)
    assert done.status_code == 200, done.text
    assert done.json()["mail_protocol"] == "imap"
    listed = (await web.get("/api/integrations/gmail", headers=alice.headers)).json()
    assert listed["mail_protocol"] == "imap"
    features = {f["key"]: f for f in listed["features"]}
    assert features[sc.IMAP_SMTP]["enabled"]
    assert features[sc.IMAP_SMTP]["optional"]


async def test_settings_page_switches_and_grant_access_skips_the_optional_feature(
    flow: Flow,
    mail: MailService,
    dovecot: DovecotServer,
    web: httpx.AsyncClient,
    tenants,
) -> None:
    alice = tenants.alice
    token = await sign_in(web, alice)
    address = _address()
    await _connect(flow, mail, dovecot, alice.ctx, address, features=FEATURES[:3])
    page = (await web.get("/settings/integrations")).text
    assert 'data-feature="imap_smtp"' in page
    assert "feature-optional" in page
    assert 'name="protocol" value="api" checked' in page
    gmail_id = (await web.get("/api/integrations/gmail", headers=alice.headers)).json()[
        "id"
    ]
    # every non-optional feature is on: "Grant access" alone asks for nothing
    nothing = await web.post(
        f"/settings/integrations/{gmail_id}/grant", data={"csrf_token": token}
    )
    assert nothing.status_code == 303
    assert nothing.headers["location"] == "/settings/integrations"
    # naming it asks Google for full mailbox access
    asked = await web.post(
        f"/settings/integrations/{gmail_id}/grant",
        data={"csrf_token": token, "feature": sc.IMAP_SMTP},
    )
    assert asked.status_code == 303
    assert sc.GMAIL_FULL in query_of(asked.headers["location"])["scope"].split()

    refused = await web.post(
        f"/settings/integrations/{gmail_id}/mail-protocol",
        data={"csrf_token": token, "protocol": "imap"},
    )
    assert refused.status_code == 422
    assert "needs full access to your mailbox" in refused.text

    await flow.connect(
        alice.ctx,
        ProviderKey.GOOGLE,
        IntegrationKind.GMAIL,
        address,
        features=[sc.IMAP_SMTP],
    )
    switched = await web.post(
        f"/settings/integrations/{gmail_id}/mail-protocol",
        data={"csrf_token": token, "protocol": "imap"},
    )
    assert switched.status_code == 303
    page = (await web.get("/settings/integrations")).text
    assert "Gmail now reads and sends through IMAP and SMTP" in page
    assert 'name="protocol" value="imap" checked' in page
