"""Contacts in the browser: the organization's people, and for each one the
signed-in user's mail with them and the meetings they attend.

======================================  ==========================================
``GET  /contacts``                      the list (``q``: name, company or address;
                                        ``page``) and the "New contact" form
``POST /contacts``                      create one; on to its page
``GET  /contacts/{id}``                 the contact: details, "Email" (the
                                        user's own messages with them) and
                                        "Appointments" (meetings they attend)
``GET  /contacts/{id}/edit``            the edit form
``POST /contacts/{id}``                 save (``version``: the one edited)
======================================  ==========================================

Contacts belong to the organization, like in the API (any member may change
them; another organization's contact is 404). The mail on a contact's page is
the signed-in user's only: :meth:`MailService.contact_activity` reads the
user's own mailboxes. Writes go through the repository inside
``services.db.tenant(ctx)``; every POST needs the CSRF token; forms follow
post/redirect/get and come back with the input and a message per field (422).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from crmflow.domain import crm
from crmflow.domain.emails import normalize_email
from crmflow.errors import Conflict, ValidationFailed
from crmflow.store.repositories import ContactRepository, MemberRepository
from crmflow.web.api.email import MailDep
from crmflow.web.deps import ServicesDep
from crmflow.web.ui.csrf import csrf_token, require_csrf
from crmflow.web.ui.email import message_rows
from crmflow.web.ui.forms import FORM, STATUS_LABELS, text
from crmflow.web.ui.pages import flash, render
from crmflow.web.ui.session import Viewer, ViewerDep

router = APIRouter(include_in_schema=False)
Csrf = [Depends(require_csrf)]

PAGE = "/contacts"
#: contacts per page of the list
PAGE_SIZE = 50
#: messages and appointments shown on a contact's page
ACTIVITY_LIMIT = 50
#: field limits (as in the API's ContactIn)
NAME_MAX = 200
COMPANY_MAX = 200
PHONE_MAX = 50
NOTES_MAX = 20_000
ADDRESSES_MAX = 50

_SEPARATORS = re.compile(r"[\s,;]+")


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _page(request: Request, viewer: Viewer) -> dict[str, Any]:
    """The context every contact page shares."""
    return {"viewer": viewer, "csrf_token": csrf_token(request), "nav": "contacts"}


@dataclass
class ContactForm:
    """The contact form as typed (re-shown as it was when something is wrong)."""

    name: str = ""
    #: the addresses, separated by commas, spaces or line breaks
    addresses: str = ""
    company: str = ""
    phone: str = ""
    notes: str = ""
    version: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> ContactForm:
        return cls(
            name=text(form, "name"),
            addresses=text(form, "email_addresses"),
            company=text(form, "company"),
            phone=text(form, "phone"),
            notes=text(form, "notes"),
            version=text(form, "version"),
        )

    @classmethod
    def from_contact(cls, contact: crm.Contact) -> ContactForm:
        return cls(
            name=contact.name,
            addresses="\n".join(contact.email_addresses),
            company=contact.company or "",
            phone=contact.phone or "",
            notes=contact.notes or "",
            version=str(contact.version),
        )

    def validate(self) -> crm.ContactDraft | None:
        """The draft, or None with :attr:`errors` saying what to fix."""
        self.errors.clear()
        name = " ".join(self.name.split())
        if not name:
            self.errors["name"] = "Enter the contact's name."
        elif len(name) > NAME_MAX:
            self.errors["name"] = f"Shorten the name to {NAME_MAX} characters."
        addresses: list[str] = []
        for raw in _SEPARATORS.split(self.addresses.strip()):
            if not raw:
                continue
            try:
                normalize_email(raw)
            except ValidationFailed:
                self.errors["email_addresses"] = (
                    f"“{raw}” is not an email address; write addresses like "
                    "jane@example.com, separated by commas or line breaks."
                )
                break
            if raw.lower() not in (a.lower() for a in addresses):
                addresses.append(raw)
        if len(addresses) > ADDRESSES_MAX:
            self.errors["email_addresses"] = (
                f"A contact can have at most {ADDRESSES_MAX} email addresses."
            )
        company, phone = " ".join(self.company.split()), " ".join(self.phone.split())
        if len(company) > COMPANY_MAX:
            self.errors["company"] = f"Shorten the company to {COMPANY_MAX} characters."
        if len(phone) > PHONE_MAX:
            self.errors["phone"] = (
                f"Shorten the phone number to {PHONE_MAX} characters."
            )
        notes = self.notes.replace("\r\n", "\n").strip()
        if len(notes) > NOTES_MAX:
            self.errors["notes"] = f"Shorten the notes to {NOTES_MAX} characters."
        if self.errors:
            return None
        return crm.ContactDraft(
            name=name,
            email_addresses=tuple(addresses),
            company=company or None,
            phone=phone or None,
            notes=notes or None,
        )


def _page_number(raw: str) -> int:
    return int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


def _list_url(q: str, page: int) -> str:
    params = {k: v for k, v in (("q", q), ("page", str(page))) if v and v != "1"}
    return PAGE + ("?" + urlencode(params) if params else "")


async def _list_page(
    request: Request,
    viewer: Viewer,
    services: ServicesDep,
    form: ContactForm,
    *,
    q: str = "",
    page: int = 1,
    status_code: int = 200,
) -> Response:
    offset = (page - 1) * PAGE_SIZE
    async with services.db.tenant(viewer.ctx) as session:
        found = await ContactRepository(session).list(
            q=q or None, limit=PAGE_SIZE, offset=offset
        )
    shown = len(found.items)
    return render(
        request,
        "contacts.html",
        {
            **_page(request, viewer),
            "contacts": found.items,
            "total": found.total,
            "q": q,
            "first": offset + 1,
            "last": offset + shown,
            "previous": _list_url(q, page - 1) if page > 1 else None,
            "next": _list_url(q, page + 1) if offset + shown < found.total else None,
            "form": form,
        },
        status_code=status_code,
    )


@router.get(PAGE)
async def contacts_page(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    q: str = "",
    page: str = "",
) -> Response:
    """The organization's contacts by name; ``q`` finds name, company or address."""
    return await _list_page(
        request,
        viewer,
        services,
        ContactForm(),
        q=" ".join(q.split())[:NAME_MAX],
        page=_page_number(page),
    )


@router.post(PAGE, dependencies=Csrf)
async def create_contact(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> Response:
    form = ContactForm.from_form(await request.form())
    draft = form.validate()
    if draft is not None:
        try:
            async with services.db.tenant(viewer.ctx) as session:
                created = await ContactRepository(session).create(draft)
        except ValidationFailed as exc:
            form.errors[FORM] = exc.message
        else:
            flash(request, f"Contact “{created.name}” created.")
            return _redirect(f"{PAGE}/{created.id}")
    return await _list_page(request, viewer, services, form, status_code=422)


@router.get(PAGE + "/{contact_id}")
async def contact_page(
    contact_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    mail: MailDep,
) -> Response:
    """The contact, the user's mail with them and the meetings they attend."""
    activity = await mail.contact_activity(viewer.ctx, contact_id, limit=ACTIVITY_LIMIT)
    accounts = await mail.accounts(viewer.ctx)
    async with services.db.tenant(viewer.ctx) as session:
        members = await MemberRepository(session).list()
    contact = activity.contact
    return render(
        request,
        "contact.html",
        {
            **_page(request, viewer),
            "contact": contact,
            "rows": message_rows(activity.messages, accounts),
            "appointments": activity.appointments,
            "has_mailbox": bool(accounts),
            "limit": ACTIVITY_LIMIT,
            "owners": {m.user_id: m.display_name or m.email for m in members},
            "status_labels": STATUS_LABELS,
            "compose": (
                "/email/compose?" + urlencode({"to": contact.email_addresses[0]})
                if contact.email_addresses and accounts
                else None
            ),
        },
    )


def _edit_page(
    request: Request,
    viewer: Viewer,
    contact: crm.Contact,
    form: ContactForm,
    *,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "contact_edit.html",
        {**_page(request, viewer), "contact": contact, "form": form},
        status_code=status_code,
    )


@router.get(PAGE + "/{contact_id}/edit")
async def edit_contact_page(
    contact_id: uuid.UUID, request: Request, viewer: ViewerDep, services: ServicesDep
) -> Response:
    async with services.db.tenant(viewer.ctx) as session:
        contact = await ContactRepository(session).get(contact_id)
    return _edit_page(request, viewer, contact, ContactForm.from_contact(contact))


@router.post(PAGE + "/{contact_id}", dependencies=Csrf)
async def update_contact(
    contact_id: uuid.UUID, request: Request, viewer: ViewerDep, services: ServicesDep
) -> Response:
    form = ContactForm.from_form(await request.form())
    async with services.db.tenant(viewer.ctx) as session:
        current = await ContactRepository(session).get(contact_id)
    draft = form.validate()
    if draft is not None:
        expected = int(form.version) if form.version.isdigit() else current.version
        try:
            async with services.db.tenant(viewer.ctx) as session:
                saved = await ContactRepository(session).update(
                    contact_id, draft, expected_version=expected
                )
        except Conflict:
            async with services.db.tenant(viewer.ctx) as session:
                current = await ContactRepository(session).get(contact_id)
            form.version = str(current.version)
            form.errors[FORM] = (
                "Someone else changed this contact while you were editing it. "
                "Your input is kept below: save again to replace their changes, or "
                "open the contact again to see them."
            )
        except ValidationFailed as exc:
            form.errors[FORM] = exc.message
        else:
            flash(request, f"Contact “{saved.name}” saved.")
            return _redirect(f"{PAGE}/{contact_id}")
    return _edit_page(request, viewer, current, form, status_code=422)
