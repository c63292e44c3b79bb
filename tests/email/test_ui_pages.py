"""The Email and Contacts pages over HTTP (httpx against the app), on SQLite
and PostgreSQL, with a Gmail mailbox in the sandbox connected through the real
OAuth flow.

The inbox lists synced mail newest first with its unread state and filters;
a conversation shows received HTML only sanitized and inside a sandboxed frame
(no script survives, remote images wait for "Show images") and marks itself
read; attachments download with the API's headers; composing refuses bad input
without sending anything, and a reply lands in the same conversation; a
correspondent becomes a contact whose page lists the mail and meetings;
another user gets 404 everywhere; every POST needs the CSRF token.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
import uuid
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crmflow.bootstrap import Services
from crmflow.domain.appointments import timed_span
from crmflow.domain.crm import AppointmentDraft, Attendee, ContactDraft
from crmflow.domain.mail import MAX_ATTACHMENTS_BYTES, EmailAccountInfo, MailFolder
from crmflow.sandbox.google.demo import seed_demo_google
from crmflow.services.mail import MailService
from crmflow.store.repositories import AppointmentRepository, ContactRepository
from crmflow.web.ui import email as email_ui
from tests.conftest import DbUrls, sqlite_db_urls
from tests.connections.conftest import Flow, sign_in, web_client
from tests.email.conftest import connect_mailbox
from tests.servers.sandbox import Sandbox


@pytest.fixture
def db_urls(tmp_path: Path, sqlite_template: Path) -> DbUrls:
    """SQLite only: the pages call MailService, whose tests run on both databases
    (tests/email/test_*_service.py), and row level security is proven for every API
    route on PostgreSQL (tests/integration/test_api_isolation.py); the pages' own
    logic does not depend on the database."""
    return sqlite_db_urls(tmp_path, sqlite_template)


ALICE = "alice@gmail.test"
BOB = "bob@gmail.test"
SEND = "gmail.users.messages.send"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_FLASH = re.compile(r'<div class="flash[^"]*"[^>]*>(.*?)</div>')
_ROW = re.compile(
    r'<li class="(mail-row[^"]*)" data-message-id="([^"]+)"[^>]*>(.*?)</li>', re.S
)

HOSTILE_HTML = """
<p>Hello <b>Alice</b>, here is <a href="https://acme.example/offer">the offer</a>.</p>
<script>alert('script')</script>
<img src="x.png" onerror="alert('onerror')">
<a href="javascript:alert('link')">click me</a>
<a href="jav&#x09;ascript:alert('hidden')">hidden link</a>
<img src="https://tracker.example/pixel.gif" alt="pixel">
<svg onload="alert('svg')"><circle r="1"></circle></svg>
<iframe src="https://evil.example/frame"></iframe>
<div style="background:url(https://tracker.example/bg.png);color:red" onclick="alert('click')">styled</div>
<form action="https://evil.example/"><input name="q"><button>Go</button></form>
"""


@pytest.fixture
def app(app: FastAPI, mail: MailService) -> FastAPI:
    """The app with the tests' email service (the sandbox's clock)."""
    app.state.mail = mail
    return app


def words(fragment: str) -> str:
    """The text of an HTML fragment as a person reads it."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def notice(page: str, name: str) -> str:
    """The text of the notice with class ``name``."""
    found = re.search(
        rf'<div class="notice [^"]*\b{name}\b[^"]*"[^>]*>(.*?)</div>', page, re.S
    )
    assert found, f"no {name} notice"
    return words(found.group(1))


def flashes(page: str) -> list[str]:
    return [words(m) for m in _FLASH.findall(page)]


def rows(page: str) -> list[dict[str, Any]]:
    """The message rows of a list: id, unread, text."""
    return [
        {"id": i, "unread": " unread" in c, "sent": " sent" in c, "text": words(body)}
        for c, i, body in _ROW.findall(page)
    ]


class Frames(HTMLParser):
    """Every ``<iframe>`` and ``<script>`` of a page, with their attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.frames: list[dict[str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "iframe":
            self.frames.append(dict(attrs))
        elif tag == "script":
            self.scripts.append(dict(attrs))


class Document(HTMLParser):
    """What a browser would build from a frame's document: tags, attributes, URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend((tag, k, v or "") for k, v in attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def frames_of(page: str) -> Frames:
    parser = Frames()
    parser.feed(page)
    return parser


def document(srcdoc: str) -> Document:
    parser = Document()
    parser.feed(srcdoc)
    return parser


async def _mailbox(sandbox: Sandbox, email: str) -> list[dict[str, Any]]:
    box = (await sandbox.control("google", "GET", f"mailboxes/{email}")).json()
    return list(box["messages"])


async def _deliver(sandbox: Sandbox, email: str, **fields: Any) -> None:
    await sandbox.control("google", "POST", f"mailboxes/{email}/messages", json=fields)


async def _connected(
    flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> EmailAccountInfo:
    seed_demo_google(sandbox.state, ALICE)
    return await connect_mailbox(flow, mail, tenants.alice.ctx, ALICE)


async def _synced(
    web: httpx.AsyncClient, flow: Flow, sandbox: Sandbox, mail: MailService, tenants
) -> tuple[str, EmailAccountInfo]:
    """Alice signed in, her demo mailbox connected and synced through the page."""
    token = await sign_in(web, tenants.alice)
    account = await _connected(flow, sandbox, mail, tenants)
    response = await web.post("/email/sync", data={"csrf_token": token})
    assert response.status_code == 303
    return token, account


async def _find(mail: MailService, ctx, subject: str, *, inbound: bool = True):  # type: ignore[no-untyped-def]
    page, _ = await mail.messages(ctx, folder=None, limit=200)
    return next(
        m
        for m in page
        if m.subject == subject and (m.direction.value == "inbound") is inbound
    )


# ------------------------------------------------------------------ the inbox


async def test_the_inbox_lists_synced_mail_newest_first_with_unread_state(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    token = await sign_in(web, tenants.alice)
    account = await _connected(flow, sandbox, mail, tenants)
    in_sandbox = await _mailbox(sandbox, ALICE)

    response = await web.post(
        "/email/sync", data={"csrf_token": token, "next": "/email?folder=all"}
    )

    assert response.headers["location"] == "/email?folder=all"
    page = (await web.get("/email?folder=all")).text
    assert flashes(page) == [f"Synced 1 mailbox: {len(in_sandbox)} new, 0 updated."]
    assert 'aria-current="page">Email</a>' in page
    listed = rows(page)
    assert len(listed) == len(in_sandbox) == 5
    dates = re.findall(r'<time datetime="([^"]+)"', page)
    assert dates == sorted(dates, reverse=True)  # newest first
    contract = next(r for r in listed if "Contract draft v2" in r["text"])
    assert contract["unread"]
    assert "Unread: Legal Team Contract draft v2" in contract["text"]
    assert "Has attachments" in contract["text"]
    proposal = next(r for r in listed if r["text"].startswith("Jane Doe Proposal"))
    assert not proposal["unread"]
    assert "Unread" not in proposal["text"]
    sent = [r for r in listed if r["sent"]]
    assert len(sent) == 1
    assert sent[0]["text"].startswith("To: Jane Doe Re: Proposal for Q3")

    # the filters: folder, unread only, mailbox, search
    inbox = rows((await web.get("/email")).text)
    assert len(inbox) == 4
    assert not any(r["sent"] for r in inbox)
    only_sent = rows((await web.get("/email?folder=sent")).text)
    assert [r["id"] for r in only_sent] == [sent[0]["id"]]
    unread = rows((await web.get("/email?unread=1")).text)
    assert len(unread) == 3
    assert all(r["unread"] for r in unread)
    mine = rows((await web.get(f"/email?account={account.id}&folder=all")).text)
    assert len(mine) == 5
    found = await web.get("/email", params={"q": "framework contract"})
    assert [r["id"] for r in rows(found.text)] == [contract["id"]]
    assert "1 message match “framework contract”" in words(found.text)
    nothing = (await web.get("/email", params={"q": "zebra"})).text
    assert "No message matches “zebra”" in words(nothing)


async def test_the_inbox_pages(web, flow, sandbox, mail, tenants, monkeypatch):
    monkeypatch.setattr(email_ui, "PAGE_SIZE", 2)
    await _synced(web, flow, sandbox, mail, tenants)

    first = (await web.get("/email?folder=all")).text
    second = (await web.get("/email?folder=all&page=2")).text
    third = (await web.get("/email?folder=all&page=3")).text

    assert "Showing 1–2 of 5." in words(first)
    assert 'href="/email?folder=all&amp;page=2" rel="next">Older' in first
    assert 'rel="prev"' not in first
    assert "Showing 3–4 of 5." in words(second)
    assert 'href="/email?folder=all" rel="prev">← Newer' in second
    assert "Showing 5–5 of 5." in words(third)
    assert 'rel="next"' not in third
    ids = [r["id"] for p in (first, second, third) for r in rows(p)]
    assert len(set(ids)) == 5


async def test_without_a_mailbox_the_pages_point_to_the_integrations(
    web, tenants, services
):
    token = await sign_in(web, tenants.alice)

    inbox = (await web.get("/email")).text
    compose = (await web.get("/email/compose")).text
    await web.post("/email/sync", data={"csrf_token": token})
    after = (await web.get("/email")).text

    assert "No mailbox connected yet" in inbox
    assert 'href="/settings/integrations">Settings → Integrations</a>' in inbox
    assert "Sync mail" not in inbox
    assert "No mailbox to send from" in compose
    assert 'action="/email/compose"' not in compose
    assert flashes(after) == [
        "No mailbox is connected yet: connect one first. Open Settings → Integrations"
    ]


async def test_a_failed_sync_says_what_to_do(web, flow, sandbox, mail, tenants):
    token = await sign_in(web, tenants.alice)
    await _connected(flow, sandbox, mail, tenants)
    await sandbox.control("google", "POST", "grants/revoke", json={"email": ALICE})
    await sandbox.control("google", "POST", "tokens/expire", json={"email": ALICE})

    await web.post("/email/sync", data={"csrf_token": token})

    page = (await web.get("/email")).text
    [message] = flashes(page)
    assert message.startswith(f"{ALICE}:")
    assert "Settings -> Integrations" in message
    assert 'class="flash-action" href="/settings/integrations"' in page
    # the mailbox remembers the problem until a sync works again
    assert "mail-account-problem" in page


# ------------------------------------------------------------------ a thread


async def test_hostile_html_runs_no_script_and_remote_images_wait(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    token = await sign_in(web, tenants.alice)
    await _connected(flow, sandbox, mail, tenants)
    await _deliver(
        sandbox,
        ALICE,
        **{
            "from": "Mallory <mallory@evil.example>",
            "to": ALICE,
            "subject": "Offer inside",
            "text": "See the HTML part.",
            "html": HOSTILE_HTML,
        },
    )
    await web.post("/email/sync", data={"csrf_token": token})
    message = await _find(mail, tenants.alice.ctx, "Offer inside")
    url = email_ui.thread_url(message.thread_id)

    response = await web.get(url)

    assert response.status_code == 200
    page = response.text
    found = frames_of(page)
    assert all((s.get("src") or "").startswith("/static/") for s in found.scripts), (
        "the page runs no inline script"
    )
    [frame] = found.frames
    sandbox_attr = frame.get("sandbox")
    assert sandbox_attr is not None
    assert "allow-scripts" not in sandbox_attr
    assert "allow-same-origin" not in sandbox_attr
    srcdoc = frame["srcdoc"] or ""
    inner = document(srcdoc)
    assert "script" not in inner.tags
    assert not {"svg", "iframe", "form", "input", "style"} & set(inner.tags)
    assert not [a for a in inner.attributes if a[1].startswith("on")]
    assert "alert" not in srcdoc
    assert "javascript" not in srcdoc.lower()
    assert "tracker.example" not in srcdoc  # the remote image is blocked
    links = [v for t, k, v in inner.attributes if t == "a" and k == "href"]
    assert links == ["https://acme.example/offer"]
    assert "Hello" in words(srcdoc)
    assert notice(page, "images-bar").startswith(
        "1 remote image was blocked. Show images"
    )
    assert f'href="{url}?images=1">Show images</a>' in page
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";")[0]
    assert "https:" not in policy

    shown = await web.get(url + "?images=1")

    [frame] = frames_of(shown.text).frames
    srcdoc = frame["srcdoc"] or ""
    assert 'src="https://tracker.example/pixel.gif"' in srcdoc
    assert "alert" not in srcdoc
    assert "bg.png" not in srcdoc  # never from CSS
    assert "script" not in document(srcdoc).tags
    assert (
        "img-src 'self' data: https: http:" in shown.headers["content-security-policy"]
    )
    assert "Remote images are shown" in shown.text


async def test_images_sent_inside_the_message_are_shown_without_asking(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    token = await sign_in(web, tenants.alice)
    await _connected(flow, sandbox, mail, tenants)
    logo = PNG_SIGNATURE + b"not really a picture"
    msg = EmailMessage()
    msg["From"] = "Design Team <design@acme.example>"
    msg["To"] = ALICE
    msg["Subject"] = "Our new logo"
    msg.set_content("Our new logo is attached.")
    msg.add_alternative(
        '<p>Our new logo:</p><img src="cid:logo@acme.example" alt="logo">',
        subtype="html",
    )
    html_part = msg.get_payload()[1]  # type: ignore[index]
    html_part.add_related(logo, "image", "png", cid="<logo@acme.example>")
    msg.add_attachment(b"a,b\n", maintype="text", subtype="csv", filename="sizes.csv")
    raw = base64.urlsafe_b64encode(msg.as_bytes()).decode()
    await _deliver(sandbox, ALICE, raw=raw)
    await web.post("/email/sync", data={"csrf_token": token})
    message = await _find(mail, tenants.alice.ctx, "Our new logo")

    page = (await web.get(email_ui.thread_url(message.thread_id))).text

    [frame] = frames_of(page).frames
    inner = document(frame["srcdoc"] or "")
    sources = [v for t, k, v in inner.attributes if t == "img" and k == "src"]
    assert sources == ["data:image/png;base64," + base64.b64encode(logo).decode()]
    assert "images-bar" not in page  # nothing was blocked
    assert "sizes.csv" in page  # a real attachment is listed ...
    listed = page[page.index('class="attachment-list"') :]
    assert listed.split("</ul>")[0].count("<li>") == 1  # ... the logo is in the text


async def test_opening_a_thread_marks_it_read_in_the_crm_and_the_mailbox(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    await _synced(web, flow, sandbox, mail, tenants)
    ctx = tenants.alice.ctx
    contract = await _find(mail, ctx, "Contract draft v2")
    assert not contract.is_read

    page = (await web.get(email_ui.thread_url(contract.thread_id))).text

    assert "Contract draft v2" in page
    article = page[page.index(f'id="message-{contract.id}"') :]
    assert "New" in words(article[: article.index("</header>")])
    assert "Legal Team &lt;legal@acme.example&gt;" in article
    assert "Attached is the second draft" in article  # plain text, no frame
    assert "<iframe" not in article
    detail = await mail.message(ctx, contract.id)
    assert detail.summary.is_read
    [stored] = [
        m
        for m in await _mailbox(sandbox, ALICE)
        if m["id"] == detail.provider_message_id
    ]
    assert "UNREAD" not in stored["labelIds"]
    listed = {r["id"]: r for r in rows((await web.get("/email")).text)}
    assert not listed[str(contract.id)]["unread"]
    # opened again: nothing is new any more
    again = (await web.get(email_ui.thread_url(contract.thread_id))).text
    assert ">New</span>" not in again


async def test_a_mailbox_that_refuses_the_read_flag_still_shows_the_thread(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    await _synced(web, flow, sandbox, mail, tenants)
    newsletter = await _find(
        mail, tenants.alice.ctx, "This week in CRM: 5 tips for better follow-ups"
    )
    await sandbox.add_fault(
        "google", kind="backend_error", method="gmail.users.messages.modify"
    )

    response = await web.get(email_ui.thread_url(newsletter.thread_id))

    assert response.status_code == 200
    assert "Follow up within 24 hours" in response.text
    assert notice(response.text, "mail-read-problem").startswith(
        "This conversation could not be marked as read in your mailbox"
    )
    assert not (await mail.message(tenants.alice.ctx, newsletter.id)).summary.is_read


async def test_attachments_download_with_the_api_headers(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    await _synced(web, flow, sandbox, mail, tenants)
    ctx = tenants.alice.ctx
    contract = await _find(mail, ctx, "Contract draft v2")
    [pdf] = (await mail.message(ctx, contract.id)).attachments
    page = (await web.get(email_ui.thread_url(contract.thread_id))).text
    assert f'href="/email/attachments/{pdf.id}" download="contract-v2.pdf"' in page

    response = await web.get(f"/email/attachments/{pdf.id}")

    assert response.status_code == 200
    expected = b"".join((await mail.attachment(ctx, pdf.id)).chunks)
    assert response.content == expected
    assert response.content.startswith(b"%PDF")
    assert len(response.content) == pdf.size
    headers = response.headers
    assert headers["content-disposition"].startswith(
        'attachment; filename="contract-v2.pdf"'
    )
    assert headers["content-type"] == "application/octet-stream"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "sandbox; default-src 'none'"


# ------------------------------------------------------------------ composing


async def test_header_injection_and_bad_input_are_refused_and_nothing_is_sent(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    token, account = await _synced(web, flow, sandbox, mail, tenants)
    _, before = await mail.messages(tenants.alice.ctx, folder=None)
    base = {
        "csrf_token": token,
        "account": str(account.id),
        "to": "Jane Doe <jane.doe@acme.example>",
        "subject": "Pricing",
        "body": "Hello Jane,\nthe prices are attached.",
    }
    cases = [
        (
            {"subject": "Hi\r\nBcc: victim@example.com"},
            "The subject must not contain line breaks",
        ),
        ({"to": "", "cc": "", "bcc": ""}, "Add at least one recipient."),
        ({"to": "jane.doe@acme.example, not an address"}, "is not an email address"),
        ({"cc": "x@example.com\r\nBcc: victim@example.com"}, "on one line"),
        ({"account": str(uuid.uuid4())}, "Choose the mailbox to send from."),
    ]
    for change, message in cases:
        response = await web.post("/email/compose", data={**base, **change})
        assert response.status_code == 422, change
        assert message in words(response.text), change
        assert 'class="form-alert"' in response.text
        # the input is kept
        assert "Hello Jane,\nthe prices are attached.</textarea>" in response.text
        if "to" not in change:
            assert 'value="Jane Doe &lt;jane.doe@acme.example&gt;"' in response.text

    too_big = await web.post(
        "/email/compose",
        data=base,
        files=[("attachments", ("big.bin", b"x" * (MAX_ATTACHMENTS_BYTES + 1)))],
    )
    assert too_big.status_code == 422
    assert "at most 25 MB can be sent" in words(too_big.text)
    assert "Choose the files again" in too_big.text

    assert await sandbox.requests(SEND) == []
    assert (await mail.messages(tenants.alice.ctx, folder=None))[1] == before


async def test_a_refusing_mailbox_shows_the_form_again_with_what_to_do(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    token, account = await _synced(web, flow, sandbox, mail, tenants)
    data = {
        "csrf_token": token,
        "account": str(account.id),
        "to": "jane.doe@acme.example",
        "subject": "Pricing",
        "body": "Hello Jane",
    }
    await sandbox.add_fault("google", kind="backend_error", method=SEND, count=1)

    busy = await web.post("/email/compose", data=data)

    assert busy.status_code == 503
    assert f"{ALICE} is not answering right now, so nothing was sent." in words(
        busy.text
    )
    assert "Hello Jane</textarea>" in busy.text

    await sandbox.control("google", "POST", "grants/revoke", json={"email": ALICE})
    await sandbox.control("google", "POST", "tokens/expire", json={"email": ALICE})
    refused = await web.post("/email/compose", data=data)

    assert refused.status_code == 409
    alert = words(
        re.search(r'class="form-alert"[^>]*>(.*?)</div>', refused.text, re.S).group(1)
    )  # type: ignore[union-attr]
    assert alert == (
        f"{ALICE} no longer accepts crmflow's access, so nothing was sent. "
        "Reconnect it in Settings → Integrations, then send again. "
        "Open Settings → Integrations"
    )
    assert 'value="jane.doe@acme.example"' in refused.text
    assert [c for c in await sandbox.requests(SEND) if c["status"] == 200] == []
    _, total = await mail.messages(tenants.alice.ctx, folder=MailFolder.SENT)
    assert total == 1  # only the demo's own sent message


async def test_compose_and_send_with_an_attachment(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    token, account = await _synced(web, flow, sandbox, mail, tenants)
    await sandbox.add_user("google", BOB)
    form = (await web.get("/email/compose")).text
    assert f'<option value="{account.id}" selected>{ALICE}</option>' in form
    assert 'enctype="multipart/form-data"' in form

    response = await web.post(
        "/email/compose",
        data={
            "csrf_token": token,
            "account": str(account.id),
            "to": f"Bob Baker <{BOB}>",
            "subject": "Price list 2026",
            "body": "Hi Bob,\n\nthe price list is attached.\n\nAlice",
        },
        files=[("attachments", ("prices.csv", b"item,price\nwidget,10\n", "text/csv"))],
    )

    assert response.status_code == 303, response.text
    target = response.headers["location"]
    assert target.startswith("/email/threads/")
    page = (await web.get(target)).text
    assert flashes(page) == ["Message sent to Bob Baker."]
    assert "Price list 2026" in page
    assert "the price list is attached." in page
    assert "prices.csv" in page
    [call] = await sandbox.requests(SEND)
    assert call["status"] == 200
    [delivered] = [
        m for m in await _mailbox(sandbox, BOB) if m["subject"] == "Price list 2026"
    ]
    assert "INBOX" in delivered["labelIds"]
    link = re.search(r'href="(/email/attachments/[^"]+)" download="prices.csv"', page)
    assert link
    assert (await web.get(link.group(1))).content == b"item,price\nwidget,10\n"


async def test_a_reply_is_prefilled_and_lands_in_the_same_thread(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    token, account = await _synced(web, flow, sandbox, mail, tenants)
    ctx = tenants.alice.ctx
    follow_up = await _find(mail, ctx, "Re: Proposal for Q3")
    url = email_ui.thread_url(follow_up.thread_id)
    thread = (await web.get(url)).text
    assert len(re.findall(r'<article class="card mail-message', thread)) == 3
    assert f'href="/email/compose?reply_to={follow_up.id}">Reply</a>' in thread

    form = (await web.get(f"/email/compose?reply_to={follow_up.id}")).text

    assert (
        'name="to" type="text" value="Jane Doe &lt;jane.doe@acme.example&gt;"' in form
    )
    assert 'value="Re: Proposal for Q3"' in form
    textarea = re.search(r'name="body"[^>]*>\n(.*?)</textarea>', form, re.S)
    assert textarea  # (a browser drops the newline right after the tag)
    body = html.unescape(textarea.group(1))
    assert body.startswith("\n\nOn ")  # room to write above the quote
    assert "Jane Doe <jane.doe@acme.example> wrote:" in body
    assert "> Great, looking forward to it." in body
    hidden = re.search(r'name="reply_to" value="([^"]*)"', form)
    assert hidden
    assert hidden.group(1) == str(follow_up.id)

    response = await web.post(
        "/email/compose",
        data={
            "csrf_token": token,
            "account": str(account.id),
            "to": "Jane Doe <jane.doe@acme.example>",
            "subject": "Re: Proposal for Q3",
            "body": "Wednesday works for me.\n\n" + body,
            "reply_to": str(follow_up.id),
            "forward_of": "",
        },
    )

    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith(url + "#message-")
    page = (await web.get(url)).text
    assert flashes(page) == ["Message sent to Jane Doe."]
    assert len(re.findall(r'<article class="card mail-message', page)) == 4
    assert "Wednesday works for me." in page
    [call] = await sandbox.requests(SEND)
    assert call["status"] == 200


async def test_reply_all_copies_everyone_but_the_user(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    token = await sign_in(web, tenants.alice)
    await _connected(flow, sandbox, mail, tenants)
    await _deliver(
        sandbox,
        ALICE,
        **{
            "from": "Jane Doe <jane.doe@acme.example>",
            "to": [f"Alice <{ALICE}>", "Ken Ito <ken@acme.example>"],
            "cc": "Legal Team <legal@acme.example>",
            "subject": "Kick-off",
            "text": "Shall we meet on Monday?",
        },
    )
    await web.post("/email/sync", data={"csrf_token": token})
    message = await _find(mail, tenants.alice.ctx, "Kick-off")
    thread = (await web.get(email_ui.thread_url(message.thread_id))).text
    assert f'href="/email/compose?reply_to={message.id}&amp;reply_all=1"' in thread

    form = (await web.get(f"/email/compose?reply_to={message.id}&reply_all=1")).text

    fields = dict(re.findall(r'name="(to|cc|bcc)" type="text" value="([^"]*)"', form))
    assert html.unescape(fields["to"]) == "Jane Doe <jane.doe@acme.example>"
    assert html.unescape(fields["cc"]) == (
        "Ken Ito <ken@acme.example>, Legal Team <legal@acme.example>"
    )
    assert fields["bcc"] == ""
    # a plain reply goes to the sender only
    plain = (await web.get(f"/email/compose?reply_to={message.id}")).text
    assert 'name="cc" type="text" value=""' in plain


async def test_a_forward_takes_the_attachments_along(
    web, flow, sandbox: Sandbox, mail: MailService, tenants
):
    token, account = await _synced(web, flow, sandbox, mail, tenants)
    contract = await _find(mail, tenants.alice.ctx, "Contract draft v2")

    form = (await web.get(f"/email/compose?forward_of={contract.id}")).text

    assert 'value="Fwd: Contract draft v2"' in form
    assert "The original's attachment goes along: contract-v2.pdf" in words(form)
    assert "---------- Forwarded message ----------" in form
    response = await web.post(
        "/email/compose",
        data={
            "csrf_token": token,
            "account": str(account.id),
            "to": "counsel@lawfirm.example",
            "subject": "Fwd: Contract draft v2",
            "body": "Please review.",
            "forward_of": str(contract.id),
        },
    )
    assert response.status_code == 303, response.text
    page = (await web.get(response.headers["location"])).text
    sent = page[page.index("mail-sent") :]
    assert "contract-v2.pdf" in sent


# ------------------------------------------------------------------ contacts


async def test_add_as_contact_and_the_contact_page_lists_mail_and_meetings(
    web, flow, sandbox: Sandbox, mail: MailService, services: Services, tenants
):
    token, _ = await _synced(web, flow, sandbox, mail, tenants)
    ctx = tenants.alice.ctx
    follow_up = await _find(mail, ctx, "Re: Proposal for Q3")
    url = email_ui.thread_url(follow_up.thread_id)
    page = (await web.get(url)).text
    people = words(page[page.index("People in this conversation") :])
    assert "Jane Doe <jane.doe@acme.example> Add as contact" in people
    assert ALICE not in people  # the user's own address is not offered

    response = await web.post(
        "/email/contacts",
        data={
            "csrf_token": token,
            "email": "jane.doe@acme.example",
            "name": "Jane Doe",
            "next": url,
        },
    )

    assert response.status_code == 303
    assert response.headers["location"] == url
    after = (await web.get(url)).text
    async with services.db.tenant(ctx) as session:
        [contact] = (await ContactRepository(session).list()).items
    assert contact.name == "Jane Doe"
    assert contact.email_addresses == ("jane.doe@acme.example",)
    assert flashes(after) == ["Added Jane Doe as a contact. Open the contact"]
    assert f'class="flash-action" href="/contacts/{contact.id}"' in after
    assert f'href="/contacts/{contact.id}">Open contact' in after
    # a second click does not duplicate her
    await web.post(
        "/email/contacts",
        data={"csrf_token": token, "email": "Jane.Doe@acme.example", "next": url},
    )
    assert flashes((await web.get(url)).text) == [
        "Jane.Doe@acme.example is a contact already: Jane Doe. Open the contact"
    ]

    async with services.db.tenant(ctx) as session:
        start = sandbox.state.clock.now().replace(microsecond=0)
        await AppointmentRepository(session).create(
            AppointmentDraft(
                title="Pricing call with ACME",
                span=timed_span(start, start + dt.timedelta(hours=1), "Europe/Zurich"),
                attendees=(Attendee("jane.doe@acme.example", "Jane Doe"),),
            )
        )
    contact_page = (await web.get(f"/contacts/{contact.id}")).text

    assert 'aria-current="page">Contacts</a>' in contact_page
    email_section = contact_page[
        contact_page.index('id="contact-email"') : contact_page.index(
            'id="contact-appointments"'
        )
    ]
    listed = rows(email_section)
    assert len(listed) == 3  # the proposal, Alice's answer, the follow-up
    assert email_ui.thread_url(follow_up.thread_id, follow_up.id) in email_section
    appointments = contact_page[contact_page.index('id="contact-appointments"') :]
    assert "Pricing call with ACME" in appointments
    assert "Write email" in contact_page


async def test_contacts_list_create_search_and_edit(web, tenants, services: Services):
    token = await sign_in(web, tenants.alice)

    bad = await web.post(
        "/contacts",
        data={
            "csrf_token": token,
            "name": "Kenji Tanaka",
            "email_addresses": "k.tanaka@sakura.example, not-an-address",
            "company": "Sakura Trading",
        },
    )
    assert bad.status_code == 422
    assert "“not-an-address” is not an email address" in words(bad.text)
    assert 'value="Kenji Tanaka"' in bad.text
    assert "k.tanaka@sakura.example, not-an-address</textarea>" in bad.text
    assert (
        await web.post("/contacts", data={"csrf_token": token, "name": " "})
    ).status_code == 422

    created = await web.post(
        "/contacts",
        data={
            "csrf_token": token,
            "name": "Kenji Tanaka",
            "email_addresses": "k.tanaka@sakura.example\nkenji@sakura.example",
            "company": "Sakura Trading",
            "phone": "+81 3 1234 5678",
        },
    )
    assert created.status_code == 303
    path = created.headers["location"]
    page = (await web.get(path)).text
    assert flashes(page) == ["Contact “Kenji Tanaka” created."]
    assert "k.tanaka@sakura.example, kenji@sakura.example" in page
    assert "Sakura Trading" in page
    assert "+81 3 1234 5678" in page

    listing = (await web.get("/contacts", params={"q": "sakura"})).text
    assert "Kenji Tanaka" in listing
    assert "No contact matches" in (await web.get("/contacts?q=zebra")).text

    edit = (await web.get(path + "/edit")).text
    version = re.search(r'name="version" value="(\d+)"', edit)
    assert version
    saved = await web.post(
        path,
        data={
            "csrf_token": token,
            "name": "Kenji Tanaka",
            "email_addresses": "kenji@sakura.example",
            "company": "Sakura Trading KK",
            "version": version.group(1),
        },
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == path
    page = (await web.get(path)).text
    assert "Sakura Trading KK" in page
    assert "k.tanaka@sakura.example" not in page
    stale = await web.post(
        path,
        data={"csrf_token": token, "name": "Old", "version": version.group(1)},
    )
    assert stale.status_code == 422
    assert "Someone else changed this contact" in stale.text
    assert 'value="Old"' in stale.text


# ------------------------------------------------------------------ isolation


async def test_other_users_get_404_for_threads_attachments_and_contacts(
    app: FastAPI, web, flow, sandbox: Sandbox, mail: MailService, services, tenants
):
    _, account = await _synced(web, flow, sandbox, mail, tenants)
    ctx = tenants.alice.ctx
    contract = await _find(mail, ctx, "Contract draft v2")
    [pdf] = (await mail.message(ctx, contract.id)).attachments
    async with services.db.tenant(ctx) as session:
        contact = await ContactRepository(session).create(
            ContactDraft("Legal Team", ("legal@acme.example",))
        )
    for other in (tenants.amy, tenants.bob):  # same organization; another one
        async with web_client(app) as browser:
            other_token = await sign_in(browser, other)
            for path in (
                email_ui.thread_url(contract.thread_id),
                f"/email/messages/{contract.id}",
                f"/email/attachments/{pdf.id}",
                f"/email/compose?reply_to={contract.id}",
                f"/email/compose?forward_of={contract.id}",
            ):
                response = await browser.get(path)
                assert response.status_code == 404, (other.email, path)
                assert "contract-v2.pdf" not in response.text
            inbox = (await browser.get("/email")).text
            assert "Contract draft v2" not in inbox
            assert str(account.id) not in inbox
            sent = await browser.post(
                "/email/compose",
                data={
                    "csrf_token": other_token,
                    "account": str(account.id),
                    "to": "x@example.com",
                    "subject": "via alice",
                    "body": "x",
                    "forward_of": str(contract.id),
                },
            )
            assert sent.status_code == 404, other.email
            contact_page = await browser.get(f"/contacts/{contact.id}")
            if other is tenants.bob:
                assert contact_page.status_code == 404
                assert (
                    await browser.get(f"/contacts/{contact.id}/edit")
                ).status_code == 404
                changed = await browser.post(
                    f"/contacts/{contact.id}",
                    data={"csrf_token": other_token, "name": "Hijacked"},
                )
                assert changed.status_code == 404
            else:
                # contacts are the organization's; the mail is alice's alone
                assert contact_page.status_code == 200
                assert "Legal Team" in contact_page.text
                assert "Contract draft v2" not in contact_page.text
    assert await sandbox.requests(SEND) == []
    async with services.db.tenant(ctx) as session:
        assert (await ContactRepository(session).get(contact.id)).name == "Legal Team"


async def test_every_post_needs_the_csrf_token(
    web, flow, sandbox: Sandbox, mail: MailService, services, tenants
):
    token, account = await _synced(web, flow, sandbox, mail, tenants)
    ctx = tenants.alice.ctx
    contract = await _find(mail, ctx, "Contract draft v2")
    async with services.db.tenant(ctx) as session:
        contact = await ContactRepository(session).create(ContactDraft("Kept"))
    runs_before = (await mail.account(ctx, account.id)).last_synced_at
    posts = {
        "/email/sync": {"next": "/email"},
        "/email/compose": {
            "account": str(account.id),
            "to": "x@example.com",
            "subject": "forged",
            "body": "x",
        },
        "/email/contacts": {"email": "legal@acme.example", "name": "Legal"},
        "/contacts": {"name": "Forged"},
        f"/contacts/{contact.id}": {"name": "Forged"},
    }
    for path, data in posts.items():
        for sent in (data, {**data, "csrf_token": "forged-" + token[:10]}):
            response = await web.post(path, data=sent)
            assert response.status_code == 403, path
            assert "This form has expired" in response.text
    # nothing happened
    assert await sandbox.requests(SEND) == []
    assert (await mail.account(ctx, account.id)).last_synced_at == runs_before
    async with services.db.tenant(ctx) as session:
        assert [c.name for c in (await ContactRepository(session).list()).items] == [
            "Kept"
        ]
    assert not (await mail.message(ctx, contract.id)).summary.is_read
