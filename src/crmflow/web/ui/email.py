"""Email in the browser: the inbox, conversations, writing mail, and turning
correspondents into contacts.

Every page acts through :class:`~crmflow.services.mail.MailService`, the same
service (and the same dependency) as ``/api/emails``, so the tenant rules are
the API's: another user's message, conversation or attachment is 404 on every
route.

=============================================  ========================================
``GET  /email``                                the inbox: ``account``, ``folder``
                                               (inbox / sent / all), ``unread=1``,
                                               ``q`` (search), ``page``
``POST /email/sync``                           sync every mailbox now (``next``)
``GET  /email/threads/{thread_id}``            a conversation, oldest first; marks it
                                               read; ``images=1`` shows remote images
``GET  /email/messages/{id}``                  on to the message in its conversation
``GET  /email/attachments/{id}``               an attachment, as a download
``GET  /email/compose``                        the form; ``reply_to`` / ``forward_of``
                                               (a message id), ``reply_all=1``, ``to``
``POST /email/compose``                        send (multipart: the form and files)
``POST /email/contacts``                       add a correspondent as a contact
                                               (``email``, ``name``, ``next``)
=============================================  ========================================

Received HTML is shown in two layers: :func:`crmflow.mail.html.sanitize_html`
removes everything that can run or load (script, event handlers,
``javascript:`` links, remote images unless asked for), and the result is put
into ``<iframe sandbox srcdoc=...>`` without ``allow-scripts``, so even HTML
the sanitizer missed cannot run script; the frame gets an opaque origin, so it
cannot read the page or its cookies either. Links open in a new tab
(``allow-popups``, escaping the sandbox so the linked site works normally).
Images sent inside the message (``cid:``) are embedded as ``data:`` URLs; remote
images are blocked until the person clicks "Show images", and the page's
Content-Security-Policy allows remote images only then.

Every POST needs the session's CSRF token. Forms follow post/redirect/get with
one-time messages; the compose form is shown again with the person's input and
what went wrong (422 for input to fix, the provider's status for a refusal),
and nothing is sent in that case.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from crmflow.connections.errors import ProviderNotConfigured
from crmflow.domain.crm import Contact, ContactDraft
from crmflow.domain.emails import normalize_email
from crmflow.domain.mail import (
    MAX_ATTACHMENTS_BYTES,
    Address,
    AttachmentInfo,
    Direction,
    EmailAccountInfo,
    MailFolder,
    MailSyncResult,
    MessageDetail,
    MessageSummary,
    OutgoingAttachment,
)
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import NotFound, ValidationFailed
from crmflow.mail.addresses import format_address, link_key
from crmflow.mail.compose import (
    forward_subject,
    forward_text,
    quote_text,
    reply_subject,
)
from crmflow.mail.html import html_to_text, plain_text, sanitize_html
from crmflow.providers.base import AuthError, ProviderError
from crmflow.services.mail import Draft, MailService, MailSyncInProgress
from crmflow.store.repositories import ContactRepository
from crmflow.web.api import email as email_api
from crmflow.web.api.email import MailDep
from crmflow.web.api.integrations import provider_error_status
from crmflow.web.deps import ServicesDep
from crmflow.web.ui.calendars import notify
from crmflow.web.ui.csrf import csrf_token, require_csrf
from crmflow.web.ui.forms import FORM, text
from crmflow.web.ui.pages import SECURITY_HEADERS, render, render_error
from crmflow.web.ui.session import Viewer, ViewerDep, safe_next

router = APIRouter(include_in_schema=False)
Csrf = [Depends(require_csrf)]

#: the inbox
PAGE = "/email"
THREADS = PAGE + "/threads"
COMPOSE = PAGE + "/compose"
#: where mailboxes are connected and reconnected
INTEGRATIONS = "/settings/integrations"
#: messages per inbox page
PAGE_SIZE = 50
#: search hits considered (best first) before the inbox filters apply
SEARCH_LIMIT = 200
#: the longest search text taken (as in the API)
QUERY_MAX = 500
#: the folder tabs of the inbox: (value, label); "all" is no folder filter
FOLDERS: tuple[tuple[str, str], ...] = (
    (MailFolder.INBOX.value, "Inbox"),
    (MailFolder.SENT.value, "Sent"),
    ("all", "All mail"),
)
#: images sent inside a message (``cid:``) up to this size are embedded into
#: the shown message; larger ones are only listed as attachments
INLINE_IMAGE_MAX = 2 * 1024 * 1024
#: ... and at most this much per conversation
INLINE_IMAGES_TOTAL = 8 * 1024 * 1024
#: the image types a sanitized message may embed (``crmflow.mail.html``)
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: the height of a message's frame (px): estimated from its text, within these
FRAME_MIN_HEIGHT = 160
FRAME_MAX_HEIGHT = 1400
#: the longest contact name (as in the API)
CONTACT_NAME_MAX = 200

#: what the message frame may do: open links in a new, normal tab. Never
#: ``allow-scripts`` (and so never ``allow-same-origin`` with it).
FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox"

#: the document around a message's sanitized HTML (``srcdoc``). The frame
#: inherits the page's Content-Security-Policy: no script, no ``<style>``;
#: style attributes are allowed on the conversation page only.
_FRAME_DOCUMENT = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="referrer" content="no-referrer"></head>'
    '<body style="margin:0;padding:0.25rem 0.1rem;color:#1c2430;'
    "font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;"
    'overflow-wrap:anywhere">{body}</body></html>'
)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _page(request: Request, viewer: Viewer) -> dict[str, Any]:
    """The context every email page shares."""
    return {"viewer": viewer, "csrf_token": csrf_token(request), "nav": "email"}


def thread_url(thread_id: str | None, message_id: uuid.UUID | None = None) -> str:
    """The page of a conversation (at one of its messages, if given)."""
    if thread_id is None:
        # every stored message has a thread; this only guards the type
        return f"{PAGE}/messages/{message_id}" if message_id else PAGE
    url = f"{THREADS}/{quote(thread_id, safe='')}"
    return url + (f"#message-{message_id}" if message_id else "")


def _plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else (words or word + 's')}"


def size_words(size: int) -> str:
    """``532 bytes``, ``12 KB``, ``3.4 MB``."""
    if size < 1024:
        return _plural(size, "byte")
    if size < 1024 * 1024:
        return f"{math.ceil(size / 1024)} KB"
    megabytes = size / 1_048_576
    return f"{megabytes:.0f} MB" if megabytes.is_integer() else f"{megabytes:.1f} MB"


def _name(address: Address) -> str:
    return address.name.strip() or address.email


def _names(addresses: Iterable[Address]) -> str:
    return ", ".join(_name(a) for a in addresses)


def _full(addresses: Iterable[Address]) -> str:
    return ", ".join(format_address(a) for a in addresses)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def full_date(value: dt.datetime | None) -> str:
    """``Wed 6 May 2026, 09:30 UTC`` (``no date`` for None)."""
    if value is None:
        return "no date"
    at = _utc(value)
    return f"{at:%a} {at.day} {at:%b %Y}, {at:%H:%M} UTC"


def short_date(value: dt.datetime | None, now: dt.datetime) -> str:
    """A list's date: ``09:30 UTC`` today, ``6 May`` this year, else ``6 May 2025``."""
    if value is None:
        return "–"
    at, today = _utc(value), _utc(now)
    if at.date() == today.date():
        return f"{at:%H:%M} UTC"
    if at.year == today.year:
        return f"{at.day} {at:%b}"
    return f"{at.day} {at:%b %Y}"


def sync_summary(results: Sequence[MailSyncResult]) -> str:
    """The toast after syncs that worked: ``Synced 1 mailbox: 3 new, 0 updated``;
    removals are named only when there were any."""
    counts = [
        f"{sum(r.imported for r in results)} new",
        f"{sum(r.updated for r in results)} updated",
    ]
    removed = sum(r.removed for r in results)
    if removed:
        counts.append(f"{removed} removed")
    mailboxes = _plural(len(results), "mailbox", "mailboxes")
    return f"Synced {mailboxes}: " + ", ".join(counts)


def _needs_reconnect(message: str) -> bool:
    return "Settings -> Integrations" in message or "reconnect" in message.lower()


# ------------------------------------------------------------------ lists


@dataclass(frozen=True, slots=True)
class Row:
    """A message in a list (the inbox, a contact's mail)."""

    summary: MessageSummary
    url: str
    #: who it is from (received) or to (sent), in short
    who: str
    #: the same with the addresses, for the tooltip
    who_full: str
    when: str
    when_full: str
    #: the mailbox it is in (shown when the user has more than one)
    mailbox: str | None

    @property
    def unread(self) -> bool:
        return not self.summary.is_read

    @property
    def sent(self) -> bool:
        return self.summary.direction is Direction.OUTBOUND

    @property
    def subject(self) -> str:
        return self.summary.subject.strip() or "(no subject)"


def message_rows(
    messages: Iterable[MessageSummary],
    accounts: Sequence[EmailAccountInfo],
    now: dt.datetime | None = None,
) -> list[Row]:
    """What a list shows of ``messages``."""
    now = now or dt.datetime.now(dt.UTC)
    mailboxes = {a.id: a.email_address for a in accounts}
    several = len(accounts) > 1
    rows = []
    for m in messages:
        if m.direction is Direction.OUTBOUND:
            recipients = m.to + m.cc
            who = "To: " + (_names(recipients) or "(no recipient)")
            who_full = "To: " + _full(recipients)
        else:
            who = _name(m.sender) if m.sender else "(unknown sender)"
            who_full = format_address(m.sender) if m.sender else who
        rows.append(
            Row(
                summary=m,
                url=thread_url(m.thread_id, m.id),
                who=who,
                who_full=who_full,
                when=short_date(m.date, now),
                when_full=full_date(m.date),
                mailbox=mailboxes.get(m.account_id) if several else None,
            )
        )
    return rows


def _uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        return None


def _page_number(raw: str) -> int:
    return int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


@dataclass(frozen=True, slots=True)
class InboxFilter:
    """What the inbox shows; every value as it goes into a link."""

    account: uuid.UUID | None
    folder: str
    unread: bool
    q: str
    page: int

    def query(self, **changes: Any) -> str:
        """The inbox URL with these filters (``changes`` replace some)."""
        values = dataclasses.replace(self, **changes)
        params: dict[str, str] = {}
        if values.account is not None:
            params["account"] = str(values.account)
        if values.folder != MailFolder.INBOX.value:
            params["folder"] = values.folder
        if values.unread:
            params["unread"] = "1"
        if values.q:
            params["q"] = values.q
        if values.page > 1:
            params["page"] = str(values.page)
        return PAGE + ("?" + urlencode(params) if params else "")

    @property
    def mail_folder(self) -> MailFolder | None:
        return None if self.folder == "all" else MailFolder(self.folder)


@router.get(PAGE)
async def inbox(
    request: Request,
    viewer: ViewerDep,
    mail: MailDep,
    account: str = "",
    folder: str = "",
    unread: str = "",
    q: str = "",
    page: str = "",
) -> Response:
    """The messages, newest first (search hits best first), a page at a time."""
    accounts = await mail.accounts(viewer.ctx)
    chosen = _uuid(account)
    filters = InboxFilter(
        account=chosen if any(a.id == chosen for a in accounts) else None,
        folder=folder if folder in {v for v, _ in FOLDERS} else MailFolder.INBOX.value,
        unread=unread in ("1", "on", "yes", "true"),
        q=" ".join(q.split())[:QUERY_MAX],
        page=_page_number(page),
    )
    offset = (filters.page - 1) * PAGE_SIZE
    items: list[MessageSummary] = []
    total = 0
    if accounts and filters.q:
        found = [
            m
            for m in await mail.search(viewer.ctx, filters.q, limit=SEARCH_LIMIT)
            if (filters.account is None or m.account_id == filters.account)
            and (filters.mail_folder is None or m.folder is filters.mail_folder)
            and (not filters.unread or not m.is_read)
        ]
        total, items = len(found), found[offset : offset + PAGE_SIZE]
    elif accounts:
        items, total = await mail.messages(
            viewer.ctx,
            account_id=filters.account,
            folder=filters.mail_folder,
            unread_only=filters.unread,
            limit=PAGE_SIZE,
            offset=offset,
        )
    return render(
        request,
        "email.html",
        {
            **_page(request, viewer),
            "accounts": accounts,
            "filters": filters,
            "folders": FOLDERS,
            "rows": message_rows(items, accounts),
            "total": total,
            "first": offset + 1,
            "last": offset + len(items),
            "newer": filters.query(page=filters.page - 1) if filters.page > 1 else None,
            "older": (
                filters.query(page=filters.page + 1)
                if offset + len(items) < total
                else None
            ),
            "here": filters.query(),
            "search_limit": SEARCH_LIMIT,
            "reconnect": _needs_reconnect,
        },
    )


# ------------------------------------------------------------------ syncing


@router.post(PAGE + "/sync", dependencies=Csrf)
async def sync_mail(
    request: Request, viewer: ViewerDep, mail: MailDep
) -> RedirectResponse:
    """Fetch new mail of every mailbox, one after the other; back to ``next``."""
    raw = text(await request.form(), "next")
    back = safe_next(raw) if raw else PAGE
    accounts = await mail.accounts(viewer.ctx)
    if not accounts:
        notify(
            request,
            "No mailbox is connected yet: connect one first.",
            "error",
            link=(INTEGRATIONS, "Open Settings → Integrations"),
        )
        return _redirect(back)
    results: list[MailSyncResult] = []
    busy: list[str] = []
    for account in accounts:
        try:
            results.append(await mail.sync(viewer.ctx, account.id))
        except MailSyncInProgress as exc:
            busy.append(f"{exc.message} Its new mail shows up when that sync ends.")
        except NotFound:
            continue  # disconnected between listing and syncing
    done = [r for r in results if r.error is None]
    if done:
        notify(request, sync_summary(done) + ".")
    for result in results:
        if result.error is not None:
            notify(
                request,
                result.error,
                "error",
                link=(INTEGRATIONS, "Open Settings → Integrations")
                if _needs_reconnect(result.error)
                else None,
            )
    for message in busy:
        notify(request, message, "error")
    return _redirect(back)


# ------------------------------------------------------------------ a thread


@dataclass(frozen=True, slots=True)
class AttachmentView:
    """An attachment as a conversation lists it."""

    info: AttachmentInfo
    url: str
    name: str
    size: str


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message of a conversation, ready to show."""

    detail: MessageDetail
    sender: str
    to: str
    cc: str
    bcc: str
    when: str
    #: the mailbox it is in (shown when the user has more than one)
    mailbox: str | None
    #: the sanitized HTML as the frame's whole document; None: no HTML part
    srcdoc: str | None
    frame_height: int
    #: the plain text, shown when there is no HTML part
    text: str | None
    blocked_images: int
    attachments: tuple[AttachmentView, ...]
    #: it was unread when the page was opened
    was_unread: bool
    #: "Reply all" would reach someone besides the one replied to
    several: bool

    @property
    def id(self) -> uuid.UUID:
        return self.detail.summary.id

    @property
    def sent(self) -> bool:
        return self.detail.summary.direction is Direction.OUTBOUND

    @property
    def subject(self) -> str:
        return self.detail.summary.subject.strip() or "(no subject)"


@dataclass(frozen=True, slots=True)
class Person:
    """Someone the user corresponds with, and their contact if there is one."""

    address: Address
    contact: Contact | None

    @property
    def label(self) -> str:
        return format_address(self.address)


def _content_id(value: str | None) -> str:
    return (value or "").strip().strip("<>").strip()


async def _inline_images(
    mail: MailService,
    ctx: TenantContext,
    details: Sequence[MessageDetail],
) -> dict[uuid.UUID, dict[str, str]]:
    """The ``cid:`` images the messages show, as ``data:`` URLs by Content-ID.

    Only images the HTML refers to, of the types a message may embed, within
    :data:`INLINE_IMAGE_MAX` each and :data:`INLINE_IMAGES_TOTAL` in all; an
    image that cannot be fetched is left out (the message shows its alt text).
    """
    found: dict[uuid.UUID, dict[str, str]] = {}
    budget = INLINE_IMAGES_TOTAL
    for detail in details:
        html = (detail.body_html or "").lower()
        urls: dict[str, str] = {}
        for a in detail.attachments:
            cid = _content_id(a.content_id)
            kind = a.content_type.split(";", 1)[0].strip().lower()
            if (
                not cid
                or kind not in INLINE_IMAGE_TYPES
                or a.size > min(INLINE_IMAGE_MAX, budget)
                or f"cid:{cid.lower()}" not in html
            ):
                continue
            try:
                download = await mail.attachment(ctx, a.id)
                data = b"".join(download.chunks)
            except (ProviderError, NotFound, ValidationFailed, ProviderNotConfigured):
                continue
            budget -= len(data)
            urls[cid] = f"data:{kind};base64," + base64.b64encode(data).decode()
        found[detail.summary.id] = urls
    return found


_SHOWN_IMAGE = re.compile(r"<img\s[^>]*\bsrc=", re.IGNORECASE)


def _frame_height(html: str) -> int:
    """A frame height (px) that fits most messages without scrolling: their
    lines of text (wrapped at ~95 characters) plus room for images."""
    lines = sum(
        max(1, math.ceil(len(line) / 95)) for line in html_to_text(html).split("\n")
    )
    images = len(_SHOWN_IMAGE.findall(html))
    height = 48 + 27 * lines + 160 * images
    return max(FRAME_MIN_HEIGHT, min(FRAME_MAX_HEIGHT, height))


def _message_view(
    detail: MessageDetail,
    *,
    show_images: bool,
    images: Mapping[str, str],
    mailbox: str | None,
    was_unread: bool,
    own: frozenset[str],
) -> MessageView:
    summary = detail.summary
    srcdoc: str | None = None
    height = FRAME_MIN_HEIGHT
    body_text: str | None = None
    blocked = 0
    shown: set[str] = set()
    if detail.body_html and detail.body_html.strip():
        clean = sanitize_html(
            detail.body_html, allow_remote_images=show_images, cid_url=images.get
        )
        srcdoc = _FRAME_DOCUMENT.format(body=clean.html)
        height = _frame_height(clean.html)
        blocked = clean.blocked_images
        shown = {c.lower() for c in clean.content_ids}
    else:
        body_text = plain_text(detail.body_text, None)
    attachments = tuple(
        AttachmentView(
            info=a,
            url=f"{PAGE}/attachments/{a.id}",
            name=a.filename or "attachment",
            size=size_words(a.size),
        )
        for a in detail.attachments
        if not (a.inline and _content_id(a.content_id).lower() in shown)
    )
    everyone = [*summary.to, *summary.cc]
    if summary.sender is not None:
        everyone.append(summary.sender)
    others = {k for k in (link_key(a.email) for a in everyone) if k} - own
    return MessageView(
        detail=detail,
        sender=format_address(summary.sender) if summary.sender else "(unknown)",
        to=_full(summary.to),
        cc=_full(summary.cc),
        bcc=_full(detail.bcc),
        when=full_date(summary.date),
        mailbox=mailbox,
        srcdoc=srcdoc,
        frame_height=height,
        text=body_text,
        blocked_images=blocked,
        attachments=attachments,
        was_unread=was_unread,
        several=len(others) > 1,
    )


def own_addresses(
    viewer: Viewer, accounts: Iterable[EmailAccountInfo]
) -> frozenset[str]:
    """The link keys of the user's own addresses (their mailboxes, their login)."""
    keys = {link_key(a.email_address) for a in accounts}
    keys.add(link_key(viewer.user.email))
    return frozenset(k for k in keys if k)


async def find_contact(repo: ContactRepository, address: str) -> Contact | None:
    """The organization's contact with ``address`` (by link key: ``+tags`` and
    case do not matter), or None."""
    key = link_key(address)
    if key is None:
        return None
    for probe in dict.fromkeys((key, address.strip().lower())):
        page = await repo.list(q=probe, limit=50)
        for contact in page.items:
            if any(link_key(e) == key for e in contact.email_addresses):
                return contact
    return None


async def _people(
    services: ServicesDep,
    ctx: TenantContext,
    details: Sequence[MessageDetail],
    own: frozenset[str],
) -> list[Person]:
    """Everyone in the conversation but the user, each with their contact."""
    seen: dict[str, Address] = {}
    for detail in details:
        s = detail.summary
        for address in (*([s.sender] if s.sender else []), *s.to, *s.cc, *detail.bcc):
            key = link_key(address.email)
            if key is None or key in own:
                continue
            if key not in seen or (address.name and not seen[key].name):
                seen[key] = address
    people: list[Person] = []
    async with services.db.tenant(ctx) as session:
        repo = ContactRepository(session)
        for address in seen.values():
            people.append(Person(address, await find_contact(repo, address.email)))
    return people


def _csp(show_images: bool) -> str:
    """The conversation page's Content-Security-Policy: the site's, plus style
    attributes (mail is laid out with them; ``<style>`` stays blocked) and,
    once the person asked for them, remote images."""
    directives: dict[str, str] = {}
    for part in SECURITY_HEADERS["Content-Security-Policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        if name:
            directives[name] = value
    directives["style-src-attr"] = "'unsafe-inline'"
    if show_images:
        directives["img-src"] = directives.get("img-src", "'self'") + " https: http:"
    return "; ".join(f"{k} {v}".strip() for k, v in directives.items())


@router.get(PAGE + "/messages/{message_id}")
async def message_page(
    message_id: uuid.UUID, viewer: ViewerDep, mail: MailDep
) -> RedirectResponse:
    """A message, shown in its conversation."""
    detail = await mail.message(viewer.ctx, message_id)
    if detail.summary.thread_id is None:
        raise NotFound("This message is not in a conversation that can be shown.")
    return _redirect(thread_url(detail.summary.thread_id, message_id))


@router.get(THREADS + "/{thread_id:path}")
async def thread_page(
    thread_id: str,
    request: Request,
    viewer: ViewerDep,
    mail: MailDep,
    services: ServicesDep,
    images: str = "",
) -> Response:
    """A conversation, oldest first. Opening it marks it read, in the mailbox
    too; when the mailbox refuses, the page says so and shows it anyway."""
    ctx = viewer.ctx
    details = await mail.thread(ctx, thread_id)
    accounts = await mail.accounts(ctx)
    unread = {d.summary.id for d in details if not d.summary.is_read}
    problem: str | None = None
    reconnect = False
    for detail in details:
        if detail.summary.id not in unread:
            continue
        try:
            await mail.mark_read(ctx, detail.summary.id)
        except NotFound:
            continue
        except (ProviderError, ValidationFailed, ProviderNotConfigured) as exc:
            reconnect = isinstance(exc, AuthError) or _needs_reconnect(exc.message)
            problem = (
                "This conversation could not be marked as read in your mailbox, "
                f"so it stays unread there: {exc.message}"
            )
            break  # the mailbox refuses: do not ask again for every message
    show_images = images == "1"
    mailboxes = {a.id: a.email_address for a in accounts}
    own = own_addresses(viewer, accounts)
    inline = await _inline_images(mail, ctx, details)
    messages = [
        _message_view(
            d,
            show_images=show_images,
            images=inline.get(d.summary.id, {}),
            mailbox=mailboxes.get(d.summary.account_id) if len(accounts) > 1 else None,
            was_unread=d.summary.id in unread,
            own=own,
        )
        for d in details
    ]
    blocked = sum(m.blocked_images for m in messages)
    url = thread_url(thread_id)
    response = render(
        request,
        "email_thread.html",
        {
            **_page(request, viewer),
            "thread_id": thread_id,
            "url": url,
            "subject": messages[0].subject,
            "messages": messages,
            "latest": messages[-1],
            "people": await _people(services, ctx, details, own),
            "blocked": blocked,
            "show_images": show_images,
            "problem": problem,
            "reconnect": reconnect,
            "frame_sandbox": FRAME_SANDBOX,
        },
    )
    response.headers["Content-Security-Policy"] = _csp(show_images)
    return response


@router.get(PAGE + "/attachments/{attachment_id}")
async def attachment(
    attachment_id: uuid.UUID, request: Request, viewer: ViewerDep, mail: MailDep
) -> Response:
    """The attachment as a download, with the API's headers (never shown as a
    page of this site: ``attachment``, ``nosniff``, a sandboxing CSP)."""
    try:
        return await email_api.download_attachment(attachment_id, viewer.ctx, mail)
    except (ProviderError, ProviderNotConfigured) as exc:
        words = (
            "The mailbox is not answering right now; try again in a few minutes."
            if isinstance(exc, ProviderError) and exc.retryable
            else f"The mailbox did not hand out the attachment: {exc.message}"
        )
        return render_error(
            request,
            provider_error_status(exc),
            "The attachment could not be downloaded",
            words,
        )


# ------------------------------------------------------------------ contacts


@router.post(PAGE + "/contacts", dependencies=Csrf)
async def add_contact(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> RedirectResponse:
    """Add a correspondent as a contact of the organization; back to ``next``."""
    form = await request.form()
    raw = text(form, "next")
    back = safe_next(raw) if raw else PAGE
    address = text(form, "email").strip()
    name = " ".join(text(form, "name").split())[:CONTACT_NAME_MAX]
    try:
        normalize_email(address)
    except ValidationFailed as exc:
        notify(request, exc.message, "error")
        return _redirect(back)
    async with services.db.tenant(viewer.ctx) as session:
        repo = ContactRepository(session)
        existing = await find_contact(repo, address)
        created = (
            None
            if existing is not None
            else await repo.create(
                ContactDraft(name=name or address, email_addresses=(address,))
            )
        )
    if created is None:
        assert existing is not None  # noqa: S101 - one of the two is set
        notify(
            request,
            f"{address} is a contact already: {existing.name}.",
            link=(f"/contacts/{existing.id}", "Open the contact"),
        )
    else:
        notify(
            request,
            f"Added {created.name} as a contact.",
            link=(f"/contacts/{created.id}", "Open the contact"),
        )
    return _redirect(back)


# ------------------------------------------------------------------ composing


@dataclass(frozen=True, slots=True)
class Original:
    """The message a draft replies to or forwards, as the form shows it."""

    detail: MessageDetail
    forward: bool
    url: str
    sender: str
    attachments: tuple[AttachmentView, ...]


@dataclass
class ComposeForm:
    """The compose form as typed (re-shown as it was when something is wrong)."""

    account: str = ""
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    reply_to: str = ""
    forward_of: str = ""
    #: field name -> message; :data:`FORM` for the whole form
    errors: dict[str, str] = field(default_factory=dict)
    #: the failure is fixed by reconnecting the mailbox in Settings
    reconnect: bool = False
    #: files were attached (a browser cannot keep them when the form is re-shown)
    had_files: bool = False

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> ComposeForm:
        return cls(
            account=text(form, "account"),
            to=text(form, "to"),
            cc=text(form, "cc"),
            bcc=text(form, "bcc"),
            subject=text(form, "subject"),
            body=text(form, "body"),
            reply_to=text(form, "reply_to"),
            forward_of=text(form, "forward_of"),
        )


_LABELS = {"to": "To", "cc": "Cc", "bcc": "Bcc"}


def parse_addresses(raw: str, field_name: str) -> tuple[Address, ...]:
    """The addresses of a To / Cc / Bcc field (``Name <a@b.c>, d@e.f``).

    Raises:
        ValidationFailed: a line break, or something that is not an address.
    """
    label = _LABELS[field_name]
    if any(c in raw for c in "\r\n\x00"):
        raise ValidationFailed(
            f"Put the {label} addresses on one line, separated by commas."
        )
    if not raw.strip():
        return ()
    found: list[Address] = []
    for name, email in getaddresses([raw]):
        name, email = " ".join(name.split()), email.strip()
        if not name and not email:
            continue
        try:
            normalize_email(email)
            Address(email, name).check(f"{label} address")
        except ValidationFailed:
            shown = email or name
            raise ValidationFailed(
                f"“{shown}” is not an email address. Separate addresses with "
                "commas, e.g. Jane Doe <jane@example.com>, bob@example.com."
            ) from None
        found.append(Address(email, name))
    if not found:
        raise ValidationFailed(
            f"No address could be read in {label}. Separate addresses with commas, "
            "e.g. Jane Doe <jane@example.com>, bob@example.com."
        )
    return tuple(found)


def _sendable(accounts: Iterable[EmailAccountInfo]) -> list[EmailAccountInfo]:
    return [a for a in accounts if a.integration_id is not None]


async def _original(
    mail: MailService, ctx: TenantContext, form: ComposeForm
) -> Original | None:
    """The message ``form`` replies to or forwards (raises NotFound: unknown,
    or another user's)."""
    raw = form.reply_to or form.forward_of
    if not raw:
        return None
    message_id = _uuid(raw)
    if message_id is None:
        raise NotFound("The message to reply to or forward does not exist (any more).")
    detail = await mail.message(ctx, message_id)
    s = detail.summary
    return Original(
        detail=detail,
        forward=not form.reply_to,
        url=thread_url(s.thread_id, s.id),
        sender=format_address(s.sender) if s.sender else "(unknown)",
        attachments=tuple(
            AttachmentView(
                a,
                f"{PAGE}/attachments/{a.id}",
                a.filename or "attachment",
                size_words(a.size),
            )
            for a in detail.attachments
        ),
    )


def _compose_page(
    request: Request,
    viewer: Viewer,
    form: ComposeForm,
    accounts: Sequence[EmailAccountInfo],
    original: Original | None,
    *,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "email_compose.html",
        {
            **_page(request, viewer),
            "form": form,
            "accounts": _sendable(accounts),
            "original": original,
            "limit": size_words(MAX_ATTACHMENTS_BYTES),
        },
        status_code=status_code,
    )


def _prefill(
    original: Original,
    accounts: Sequence[EmailAccountInfo],
    own: frozenset[str],
    *,
    reply_all: bool,
) -> ComposeForm:
    """The form of a reply (to the sender; ``reply_all``: everyone else in Cc)
    or a forward, with the original quoted below."""
    detail = original.detail
    s = detail.summary
    body = plain_text(detail.body_text, detail.body_html)
    account = next(
        (a for a in _sendable(accounts) if a.id == s.account_id),
        None,
    )
    form = ComposeForm(account=str(account.id) if account else "")
    if original.forward:
        form.forward_of = str(s.id)
        form.subject = forward_subject(s.subject)
        form.body = "\n\n" + forward_text(
            body, sender=s.sender, date=s.date, subject=s.subject, to=s.to, cc=s.cc
        )
        return form
    form.reply_to = str(s.id)
    form.subject = reply_subject(s.subject)
    form.body = "\n\n" + quote_text(body, sender=s.sender, date=s.date)
    if s.direction is Direction.OUTBOUND or s.sender is None:
        to = list(s.to)
    else:
        to = [s.sender]
    taken = {link_key(a.email) for a in to}
    cc: list[Address] = []
    if reply_all:
        for a in (*s.to, *s.cc):
            key = link_key(a.email)
            if key and key not in own and key not in taken:
                taken.add(key)
                cc.append(a)
    form.to = ", ".join(format_address(a) for a in to)
    form.cc = ", ".join(format_address(a) for a in cc)
    return form


@router.get(COMPOSE)
async def compose_page(
    request: Request,
    viewer: ViewerDep,
    mail: MailDep,
    reply_to: str = "",
    forward_of: str = "",
    reply_all: str = "",
    to: str = "",
) -> Response:
    """The compose form: empty (``to`` pre-filled), a reply or a forward."""
    accounts = await mail.accounts(viewer.ctx)
    probe = ComposeForm(reply_to=reply_to, forward_of="" if reply_to else forward_of)
    original = await _original(mail, viewer.ctx, probe)
    if original is not None:
        form = _prefill(
            original,
            accounts,
            own_addresses(viewer, accounts),
            reply_all=reply_all == "1",
        )
    else:
        sendable = _sendable(accounts)
        form = ComposeForm(
            account=str(sendable[0].id) if sendable else "",
            to=" ".join(to.split())[:2000],
        )
    return _compose_page(request, viewer, form, accounts, original)


async def _files(uploads: Sequence[UploadFile]) -> tuple[OutgoingAttachment, ...]:
    """The chosen files.

    Raises:
        ValidationFailed: over :data:`MAX_ATTACHMENTS_BYTES` (checked by the
            sizes the upload reported before anything is read, and while reading).
    """

    def too_big(total: int) -> ValidationFailed:
        return ValidationFailed(
            f"The attachments add up to {total / 1_048_576:.1f} MB; at most "
            f"{MAX_ATTACHMENTS_BYTES // 1_048_576} MB can be sent. Share large "
            "files as a link instead."
        )

    reported = sum(u.size or 0 for u in uploads)
    if reported > MAX_ATTACHMENTS_BYTES:
        raise too_big(reported)
    files: list[OutgoingAttachment] = []
    total = 0
    for upload in uploads:
        data = await upload.read()
        total += len(data)
        if total > MAX_ATTACHMENTS_BYTES:
            raise too_big(total)
        files.append(
            OutgoingAttachment(
                upload.filename or "attachment",
                upload.content_type or "application/octet-stream",
                data,
            )
        )
    return tuple(files)


async def _draft(
    form: ComposeForm,
    accounts: Sequence[EmailAccountInfo],
    uploads: Sequence[UploadFile],
) -> Draft | None:
    """The draft, or None with ``form.errors`` saying what to fix."""
    account = next(
        (a for a in _sendable(accounts) if str(a.id) == form.account.strip()), None
    )
    if account is None:
        form.errors["account"] = "Choose the mailbox to send from."
    groups: dict[str, tuple[Address, ...]] = {}
    for name in ("to", "cc", "bcc"):
        try:
            groups[name] = parse_addresses(getattr(form, name), name)
        except ValidationFailed as exc:
            form.errors[name] = exc.message
    if not form.errors and not any(groups.values()):
        form.errors["to"] = "Add at least one recipient."
    try:
        files = await _files(uploads)
    except ValidationFailed as exc:
        form.errors["attachments"] = exc.message
        files = ()
    if form.errors or account is None:
        return None
    return Draft(
        account_id=account.id,
        to=groups["to"],
        cc=groups["cc"],
        bcc=groups["bcc"],
        subject=form.subject,
        text=form.body.replace("\r\n", "\n"),
        attachments=files,
        reply_to=_uuid(form.reply_to) if form.reply_to else None,
        forward_of=_uuid(form.forward_of) if form.forward_of else None,
    )


def _send_failed(exc: Exception, account: EmailAccountInfo | None) -> str:
    where = account.email_address if account else "Your mailbox"
    if isinstance(exc, AuthError):
        return (
            f"{where} no longer accepts crmflow's access, so nothing was sent. "
            "Reconnect it in Settings → Integrations, then send again."
        )
    if isinstance(exc, ProviderError) and exc.retryable:
        return (
            f"{where} is not answering right now, so nothing was sent. Try again "
            "in a few minutes."
        )
    if isinstance(exc, ProviderNotConfigured):
        return exc.message
    message = exc.message if isinstance(exc, ProviderError) else str(exc)
    return f"{where} refused the message, so nothing was sent: {message}"


@router.post(COMPOSE, dependencies=Csrf)
async def send(request: Request, viewer: ViewerDep, mail: MailDep) -> Response:
    """Send from the chosen mailbox; on to the conversation with the sent
    message, or the form again with what went wrong (nothing sent)."""
    raw = await request.form()
    try:
        return await _send(request, viewer, mail, raw)
    finally:
        await raw.close()  # the uploaded files' temporary files


async def _send(
    request: Request, viewer: Viewer, mail: MailService, raw: FormData
) -> Response:
    form = ComposeForm.from_form(raw)
    uploads = [
        u
        for u in raw.getlist("attachments")
        if isinstance(u, UploadFile) and (u.filename or u.size)
    ]
    form.had_files = bool(uploads)
    accounts = await mail.accounts(viewer.ctx)
    if form.reply_to and form.forward_of:
        form.forward_of = ""  # the form never sends both; keep the reply
        form.errors[FORM] = "A message is either a reply or a forward, not both."
    original = await _original(mail, viewer.ctx, form)
    draft = await _draft(form, accounts, uploads)
    status_code = 422
    if draft is not None:
        account = next((a for a in accounts if a.id == draft.account_id), None)
        try:
            sent = await mail.send(viewer.ctx, draft)
        except ValidationFailed as exc:
            form.errors[FORM] = exc.message
        except (ProviderError, ProviderNotConfigured) as exc:
            form.errors[FORM] = _send_failed(exc, account)
            form.reconnect = isinstance(exc, AuthError)
            status_code = provider_error_status(exc)
        else:
            recipients = _names(sent.summary.to + sent.summary.cc + sent.bcc)
            notify(
                request,
                f"Message sent to {recipients}." if recipients else "Message sent.",
            )
            return _redirect(thread_url(sent.summary.thread_id, sent.summary.id))
    return _compose_page(
        request, viewer, form, accounts, original, status_code=status_code
    )
