"""Every API endpoint is tenant-scoped: user B gets 404 for user A's objects.

The routes are enumerated from the app's OpenAPI document, so an endpoint added later is covered
automatically; a path parameter this test does not know fails the test, forcing
whoever adds it to say whose object it names.
"""

from __future__ import annotations

import datetime as dt
import re

from crmflow.domain.appointments import timed_span
from crmflow.domain.calendar import CalendarEvent, RemoteEvent
from crmflow.domain.calendar_accounts import (
    DeleteMode,
    Direction,
    ExportScope,
    Strategy,
)
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.mail import Address, IncomingAttachment, IncomingMessage, MailFolder
from crmflow.domain.secret import Secret
from crmflow.store.blobs import BlobStore
from crmflow.store.calendar_accounts import CalendarAccountStore
from crmflow.store.integrations import IntegrationStore
from crmflow.store.mail import MailStore
from crmflow.web.app import create_app

SECRET_MAIL = IncomingMessage(
    provider_id="m1",
    folder=MailFolder.INBOX,
    thread_id="t1",
    message_id="<secret@a.example.com>",
    in_reply_to=None,
    references=(),
    subject="Secret offer",
    sender=Address("secret@a.example.com"),
    to=(Address("alice@gmail.example.com"),),
    cc=(),
    bcc=(),
    date=dt.datetime(2026, 5, 4, 9, tzinfo=dt.UTC),
    text="the price is 42",
    html=None,
    is_read=False,
    attachments=(IncomingAttachment("offer.pdf", "application/pdf", 4, data=b"%PDF"),),
)

APPOINTMENT = {
    "title": "Secret deal",
    "start": "2026-05-04T10:00:00Z",
    "end": "2026-05-04T11:00:00Z",
}
CONTACT = {"name": "Secret contact", "email_addresses": ["secret@a.example.com"]}
#: a valid body per (method, path) so that a 404 can only come from isolation
BODIES = {
    ("PUT", "/api/appointments/{appointment_id}"): {**APPOINTMENT, "title": "Hijacked"},
    ("PATCH", "/api/appointments/{appointment_id}"): {"title": "Hijacked"},
    ("PUT", "/api/contacts/{contact_id}"): {"name": "Hijacked"},
    ("PATCH", "/api/contacts/{contact_id}"): {"name": "Hijacked"},
    ("PATCH", "/api/members/{user_id}"): {"role": "member"},
    ("PATCH", "/api/calendar-accounts/{account_id}"): {"strategy": "crm_wins"},
    ("POST", "/api/calendar-conflicts/{conflict_id}/resolve"): {"keep": "crm"},
    ("PATCH", "/api/emails/{message_id}"): {"is_read": True},
}

#: endpoints whose path names no stored object but the caller's own namespace:
#: starting one's own connect, finishing it (the state is checked as the
#: caller: tests/connections), setting one's own organization's OAuth client
OWN_NAMESPACE = {
    ("POST", "/api/integrations/{kind}/connect"),
    ("POST", "/api/integrations/callback/{provider}"),
    ("PUT", "/api/organization/oauth-clients/{provider}"),
}


#: collection-looking paths that name an object in their query instead (their
#: isolation is tested where the object exists: tests/calendar_sync/test_api.py)
NEEDS_AN_ID_IN_THE_QUERY = {"/api/calendar-accounts/choices"}
#: collections that need a query to list anything
QUERIES = {"/api/emails/search": {"q": "secret"}}


def api_routes(settings):
    """(path, {METHODS}) of every API endpoint."""
    paths = create_app(settings).openapi()["paths"]
    return [
        (path, {m.upper() for m in ops})
        for path, ops in paths.items()
        if path.startswith("/api/")
    ]


async def _objects_of_alice(client, tenants):
    h = tenants.alice.headers
    appointment = (
        await client.post("/api/appointments", json=APPOINTMENT, headers=h)
    ).json()
    contact = (await client.post("/api/contacts", json=CONTACT, headers=h)).json()
    token = (
        await client.post("/api/tokens", json={"name": "alice script"}, headers=h)
    ).json()
    return {
        "appointment_id": appointment["id"],
        "contact_id": contact["id"],
        "token_id": token["id"],
        "user_id": str(tenants.amy.ctx.user_id),
    }


async def _integration_of_alice(client, tenants, services):
    """Alice's Gmail integration and her organization's own Google client."""
    async with services.db.tenant(tenants.alice.ctx) as session:
        calendar_integration = await IntegrationStore(session, services.vault).save(
            ProviderKey.GOOGLE,
            IntegrationKind.CALENDAR,
            email="alice@gmail.example.com",
            account_id="1234",
            access_token=Secret("ya29.alice-cal"),
            refresh_token=Secret("1//alice-cal"),
            expires_at=None,
            scopes=[],
        )
        store = CalendarAccountStore(session)
        account = await store.create(
            integration_id=calendar_integration,
            provider=ProviderKey.GOOGLE,
            external_calendar_id="alice@gmail.example.com",
            name="Alice's calendar",
            direction=Direction.TWO_WAY,
            strategy=Strategy.MANUAL,
            export_scope=ExportScope.OWN,
            delete_mode=DeleteMode.CANCEL,
        )
        start = dt.datetime(2026, 5, 4, 10, tzinfo=dt.UTC)
        event = CalendarEvent(
            "uid-secret",
            "Secret deal",
            timed_span(start, start + dt.timedelta(hours=1), "UTC"),
        )
        await store.record_conflicts(
            account.id,
            [
                (
                    RemoteEvent("a1", "1", event),
                    RemoteEvent("e1", "etag", event),
                )
            ],
            start,
        )
        [conflict] = await store.conflicts()
    async with services.db.tenant(tenants.alice.ctx) as session:
        gmail = await IntegrationStore(session, services.vault).save(
            ProviderKey.GOOGLE,
            IntegrationKind.GMAIL,
            email="alice@gmail.example.com",
            account_id="1234",
            access_token=Secret("ya29.alice"),
            refresh_token=Secret("1//alice"),
            expires_at=None,
            scopes=[],
        )
        mail = MailStore(session, BlobStore(services.settings.effective_blob_dir))
        mailbox = await mail.ensure_account(
            gmail, "google", "alice@gmail.example.com", None, start
        )
        stored = await mail.store(mailbox, SECRET_MAIL)
        message = await mail.get(stored.id)
    put = await client.put(
        "/api/organization/oauth-clients/google",
        json={"client_id": "alice-org", "client_secret": "s3cret"},
        headers=tenants.alice.headers,
    )
    assert put.status_code == 200, put.text
    return {
        "kind": "gmail",
        "provider": "google",
        "account_id": str(account.id),
        "conflict_id": str(conflict.id),
        "email_account_id": str(mailbox.id),
        "message_id": str(message.summary.id),
        "thread_id": str(message.summary.thread_id),
        "attachment_id": str(message.attachments[0].id),
    }


async def test_every_object_endpoint_hides_other_tenants(
    client, tenants, settings, services
):
    ids = await _objects_of_alice(client, tenants)
    ids |= await _integration_of_alice(client, tenants, services)
    checked = []
    for template, methods in api_routes(settings):
        params = re.findall(r"{(\w+)}", template)
        if not params:
            continue
        unknown = set(params) - ids.keys()
        assert not unknown, f"{template}: teach this test whose object {unknown} is"
        path = template
        for name in params:
            path = path.replace("{" + name + "}", ids[name])
        for method in sorted(methods):
            if (method, template) in OWN_NAMESPACE:
                continue
            body = BODIES.get((method, template))
            resp = await client.request(
                method, path, json=body, headers=tenants.bob.headers
            )
            assert resp.status_code == 404, (
                f"{method} {template} -> {resp.status_code} {resp.text}"
            )
            checked.append((method, template))
    # the enumeration really ran over the object endpoints
    assert len(checked) >= 11, checked
    # and nothing of alice's changed
    h = tenants.alice.headers
    assert (
        await client.get(f"/api/appointments/{ids['appointment_id']}", headers=h)
    ).json()["title"] == "Secret deal"
    assert (await client.get(f"/api/contacts/{ids['contact_id']}", headers=h)).json()[
        "name"
    ] == "Secret contact"
    assert ids["token_id"] in [
        t["id"] for t in (await client.get("/api/tokens", headers=h)).json()
    ]
    members = (await client.get("/api/members", headers=h)).json()
    assert {m["email"] for m in members} == {"alice@a.test", "amy@a.test"}
    assert (await client.get("/api/integrations/gmail", headers=h)).status_code == 200
    clients = (await client.get("/api/organization/oauth-clients", headers=h)).json()
    assert clients[0]["client_id"] == "alice-org"
    mail = (await client.get(f"/api/emails/{ids['message_id']}", headers=h)).json()
    assert mail["subject"] == "Secret offer"
    assert mail["is_read"] is False
    download = await client.get(
        f"/api/email-attachments/{ids['attachment_id']}", headers=h
    )
    assert download.content == b"%PDF"
    assert download.headers["content-disposition"].startswith("attachment;")
    # bob's own lists and searches do not show alice's mail either
    b = tenants.bob.headers
    assert (await client.get("/api/emails", headers=b)).json()["total"] == 0
    found = await client.get("/api/emails/search", params={"q": "secret"}, headers=b)
    assert found.json() == []


async def test_collections_show_only_own_tenant(client, tenants, settings):
    ids = await _objects_of_alice(client, tenants)
    secret_values = set(ids.values()) | {
        "alice@a.test",
        "amy@a.test",
        "Secret deal",
        "Secret contact",
    }
    listed = 0
    for template, methods in api_routes(settings):
        if "GET" not in methods or "{" in template:
            continue
        if template in NEEDS_AN_ID_IN_THE_QUERY:
            continue
        resp = await client.get(
            template, params=QUERIES.get(template), headers=tenants.bob.headers
        )
        assert resp.status_code == 200, template
        leaked = [v for v in secret_values if v in resp.text]
        assert not leaked, f"GET {template} leaks {leaked}"
        listed += 1
    assert listed >= 6


async def test_personal_rows_are_private_within_an_organization(client, tenants):
    """Amy (same organization) sees alice's appointments but not her API tokens."""
    ids = await _objects_of_alice(client, tenants)
    assert (
        await client.get(
            f"/api/appointments/{ids['appointment_id']}", headers=tenants.amy.headers
        )
    ).status_code == 200
    assert (
        await client.delete(
            f"/api/tokens/{ids['token_id']}", headers=tenants.amy.headers
        )
    ).status_code == 404
    assert (
        ids["token_id"]
        not in (await client.get("/api/tokens", headers=tenants.amy.headers)).text
    )
