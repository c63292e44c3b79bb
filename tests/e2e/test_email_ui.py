"""Email in a real browser (Debian's Chromium via Playwright).

The live server is the one of ``test_integrations_ui.py``: the Google sandbox
mounted inside crmflow at ``/sandbox``, crmflow's Google URLs pointing at it.
Before the person connects, a client writes to their Gmail address (an HTML
message with a tracking pixel), and a colleague's Gmail account is created
through the sandbox's control API.

One journey: sign in -> Email (nothing connected yet) -> Settings ->
Integrations -> Connect Gmail -> the sandbox's consent page -> Email -> Sync
mail -> the toast and the unread message -> Compose: send to the colleague with
an attachment -> the conversation shows the sent message, and it is in the
colleague's Gmail inbox -> open the client's message (the pixel is blocked,
nothing loads from the tracker) -> Reply -> the reply is in the same
conversation, in the CRM and at Gmail -> add the client as a contact: her
page lists the conversation. No console errors, no request leaves
the site. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from crmflow.sandbox.state import SandboxState
from tests.e2e import test_integrations_ui as with_sandbox
from tests.e2e.conftest import LiveSite, PageLog

pytestmark = pytest.mark.browser

# The live server with the sandbox mounted, and its sandbox state.
live_site = with_sandbox.live_site
sandbox_state = with_sandbox.sandbox_state

GOOGLE_ACCOUNT = with_sandbox.GOOGLE_ACCOUNT
#: the colleague who receives the mail Ann sends (a second sandbox Gmail user)
COLLEAGUE = "ben.baker@gmail.test"
TRACKER = "images.tracker.example"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_SCREENSHOT_BYTES = 10_000
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"


def _control(site: LiveSite) -> str:
    return f"{site.base_url}/sandbox/google/_sandbox"


def _mailbox(site: LiveSite, email: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{_control(site)}/mailboxes/{email}")
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


def _screenshot(page: Page, path: Path) -> None:
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > MIN_SCREENSHOT_BYTES


def test_connect_gmail_sync_send_and_reply(
    page: Page,
    live_site: LiveSite,
    page_log: PageLog,
    sandbox_state: SandboxState,
    artifacts_dir: Path,
) -> None:
    errors: list[tuple[str, str]] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append((str(message.location.get("url")), message.text))

    page.on("console", on_console)
    control = _control(live_site)
    delivered = httpx.post(
        f"{control}/mailboxes/{GOOGLE_ACCOUNT}/messages",
        json={
            "from": "Jane Doe <jane.doe@acme.example>",
            "to": GOOGLE_ACCOUNT,
            "subject": "Pricing question",
            "text": "Hi Ann, could you send me the price list? Jane",
            "html": (
                "<p>Hi Ann,</p><p>could you send me the <b>price list</b>?</p>"
                f'<p>Our meetings: <a href="{live_site.base_url}/appointments">'
                "the list</a></p>"
                f'<img src="https://{TRACKER}/open.gif" alt="" width="1" height="1">'
                "<p>Jane</p>"
            ),
        },
    )
    assert delivered.status_code == 201, delivered.text
    created = httpx.post(
        f"{control}/users", json={"email": COLLEAGUE, "name": "Ben Baker"}
    )
    assert created.status_code < 400, created.text

    # Sign in -> Email: nothing connected yet, the way to Settings.
    page.goto("/email")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Femail$"))
    page.get_by_label("Email address").fill(live_site.email)
    page.get_by_label("Password").fill(live_site.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/email$"))
    main_nav = page.get_by_role("navigation", name="Main")
    expect(main_nav.get_by_role("link")).to_have_text(
        ["Appointments", "Calendars", "Email", "Contacts", "Settings"]
    )
    expect(page.get_by_role("heading", level=2)).to_have_text(
        "No mailbox connected yet"
    )
    page.get_by_role("link", name="Settings → Integrations").click()

    # Connect Gmail through the sandbox's consent page.
    expect(page).to_have_url(re.compile(r"/settings/integrations$"))
    page.locator("#gmail").get_by_role("button", name="Connect Gmail").click()
    expect(page).to_have_url(re.compile(r"/sandbox/google/o/oauth2/v2/auth\?"))
    page.get_by_label(re.compile(re.escape(GOOGLE_ACCOUNT))).check()
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(re.compile(r"/settings/integrations\?"))
    expect(page.locator(".flash-success")).to_contain_text("Connected Gmail")

    # Email -> Sync mail: the client's message, unread.
    main_nav.get_by_role("link", name="Email").click()
    expect(page).to_have_url(re.compile(r"/email$"))
    page.get_by_role("button", name="Sync mail").click()
    expect(page.locator(".flash-success")).to_have_text(
        "Synced 1 mailbox: 1 new, 0 updated."
    )
    question = page.locator(".mail-row", has_text="Pricing question")
    expect(question).to_have_count(1)
    expect(question).to_have_class(re.compile(r"\bunread\b"))
    expect(question).to_contain_text("Jane Doe")
    _screenshot(page, artifacts_dir / "email-inbox.png")

    # Compose: to the colleague, with an attachment.
    page.get_by_role("link", name="Compose").click()
    expect(page).to_have_url(re.compile(r"/email/compose$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("New message")
    form = page.locator("#compose-form")
    expect(form.get_by_label("From", exact=True)).to_have_text(GOOGLE_ACCOUNT)
    form.get_by_label("To", exact=True).fill(f"Ben Baker <{COLLEAGUE}>")
    form.get_by_label("Subject").fill("Price list 2026")
    form.get_by_label("Message", exact=True).fill(
        "Hi Ben,\n\nhere is the new price list.\n\nAnn"
    )
    form.get_by_label("Attachments").set_input_files(
        files=[{"name": "price-list.pdf", "mimeType": "application/pdf", "buffer": PDF}]
    )
    _screenshot(page, artifacts_dir / "email-compose.png")
    form.get_by_role("button", name="Send").click()

    # The conversation shows it; Gmail delivered it to the colleague's inbox.
    expect(page).to_have_url(re.compile(r"/email/threads/[^#]+#message-[0-9a-f-]{36}$"))
    expect(page.locator(".flash-success")).to_have_text("Message sent to Ben Baker.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Price list 2026")
    sent = page.locator("article.mail-message")
    expect(sent).to_have_count(1)
    expect(sent).to_contain_text(f"Ben Baker <{COLLEAGUE}>")
    expect(sent.locator(".mail-plain")).to_contain_text("here is the new price list.")
    expect(sent.get_by_role("link", name=re.compile("price-list.pdf"))).to_be_visible()
    [arrived] = [
        m for m in _mailbox(live_site, COLLEAGUE) if m["subject"] == "Price list 2026"
    ]
    assert "INBOX" in arrived["labelIds"]
    assert "UNREAD" in arrived["labelIds"]

    # The client's message: shown in a sandboxed frame, the pixel blocked.
    main_nav.get_by_role("link", name="Email").click()
    page.locator(".mail-row", has_text="Pricing question").get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/email/threads/"))
    thread_url = page.url.split("#", 1)[0]
    expect(page.get_by_role("heading", level=1)).to_have_text("Pricing question")
    expect(page.locator(".images-bar")).to_contain_text(
        "1 remote image was blocked. Show images"
    )
    frame = page.locator("iframe.mail-frame")
    expect(frame).to_have_attribute(
        "sandbox", "allow-popups allow-popups-to-escape-sandbox"
    )
    body = page.frame_locator("iframe.mail-frame").locator("body")
    expect(body).to_contain_text("could you send me the price list?")
    expect(body.locator("b")).to_have_text("price list")
    expect(body.locator("img")).not_to_have_attribute("src", re.compile(TRACKER))
    # a link in the message opens in a new tab, outside the sandbox
    with page.expect_popup() as opened:
        body.get_by_role("link", name="the list").click()
    popup = opened.value
    expect(popup).to_have_url(re.compile(r"/appointments$"))
    expect(popup.get_by_role("heading", level=1)).to_have_text("Appointments")
    popup.close()
    people = page.locator(".mail-people")
    expect(people).to_contain_text("Jane Doe <jane.doe@acme.example>")
    _screenshot(page, artifacts_dir / "email-thread.png")

    # Reply: pre-filled, sent, in the same conversation.
    page.locator("article.mail-message").get_by_role("link", name="Reply").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Reply")
    form = page.locator("#compose-form")
    expect(form.get_by_label("To", exact=True)).to_have_value(
        "Jane Doe <jane.doe@acme.example>"
    )
    expect(form.get_by_label("Subject")).to_have_value("Re: Pricing question")
    message = form.get_by_label("Message", exact=True)
    expect(message).to_have_value(
        re.compile(r"Jane Doe <jane.doe@acme.example> wrote:")
    )
    quoted = message.input_value()
    message.fill("Hi Jane, it is on its way.\n\nAnn" + quoted)
    form.get_by_role("button", name="Send").click()

    expect(page).to_have_url(re.compile(re.escape(thread_url) + r"#message-"))
    expect(page.locator(".flash-success")).to_have_text("Message sent to Jane Doe.")
    messages = page.locator("article.mail-message")
    expect(messages).to_have_count(2)
    expect(messages.nth(1)).to_contain_text("Hi Jane, it is on its way.")
    expect(messages.nth(1).locator(".badge", has_text="Sent")).to_have_count(1)
    box = {m["subject"]: m for m in _mailbox(live_site, GOOGLE_ACCOUNT)}
    assert (
        box["Re: Pricing question"]["threadId"] == box["Pricing question"]["threadId"]
    )
    assert "SENT" in box["Re: Pricing question"]["labelIds"]

    expect(page.frame_locator("iframe.mail-frame").locator("body")).to_contain_text(
        "could you send me the price list?"
    )
    _screenshot(page, artifacts_dir / "email-thread-replied.png")

    # Jane becomes a contact; her page lists the conversation.
    page.locator(".mail-people").get_by_role(
        "button", name=re.compile("Add as contact")
    ).click()
    toast = page.locator(".flash-success")
    expect(toast).to_have_text("Added Jane Doe as a contact. Open the contact")
    toast.get_by_role("link", name="Open the contact").click()
    expect(page).to_have_url(re.compile(r"/contacts/[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Jane Doe")
    expect(page.locator(".contact-addresses")).to_have_text("jane.doe@acme.example")
    mails = page.locator("#contact-messages .mail-row")
    expect(mails).to_have_count(2)
    expect(mails.first).to_contain_text("Re: Pricing question")
    _screenshot(page, artifacts_dir / "contact-page.png")

    # The client's message is read now.
    main_nav.get_by_role("link", name="Email").click()
    question = page.locator(".mail-row", has_text="Pricing question")
    expect(question).not_to_have_class(re.compile(r"\bunread\b"))
    page.set_viewport_size({"width": 390, "height": 844})
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the inbox scrolls sideways at 390 px ({width} px wide)"

    assert page_log.foreign_requests == []
    assert not [r for r in page_log.foreign_requests if TRACKER in r]
    # The sandbox's consent page declares no icon, so Chromium asks for
    # /favicon.ico, which crmflow does not serve; nothing else may fail.
    favicon = (live_site.base_url + "/favicon.ico", "Failed to load resource")
    assert [e for e in errors if (e[0], e[1][: len(favicon[1])]) != favicon] == []
