"""UI routes: sign-in, Appointments and Settings (Email, Contacts and the
calendar pages have modules of their own).

Every page but ``/login`` needs a signed-in session (:mod:`.session`); every
POST carries the session's CSRF token (:mod:`.csrf`). Writes go through the
repositories inside ``services.db.tenant(ctx)``, exactly like the JSON API, so
the same tenant rules apply; a form is validated completely before its
transaction opens, and any error inside the transaction rolls it back, so bad
input never writes part of a row.

Forms follow post/redirect/get: success redirects (303) with a one-time message;
invalid input re-renders the form with the user's values and a message per
field (422). Errors the user cannot fix in the form (unknown or foreign ids,
missing permission) become the HTML error page of ``crmflow.web.errors``.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from crmflow.domain import crm
from crmflow.domain.appointments import AppointmentStatus
from crmflow.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from crmflow.store.identity import (
    authenticate_password,
    change_password,
    end_all_sessions,
    enter_organization,
    expiry_from_days,
)
from crmflow.store.repositories import (
    ApiTokenRepository,
    AppointmentRepository,
    MemberRepository,
)
from crmflow.web.deps import ServicesDep
from crmflow.web.ui.csrf import csrf_token, require_csrf, rotate_csrf_token
from crmflow.web.ui.forms import (
    FORM,
    STATUS_LABELS,
    TOKEN_NAME_MAX,
    AppointmentForm,
    text,
    timezone_choices,
)
from crmflow.web.ui.pages import flash, occurrence_start, render
from crmflow.web.ui.recurrence import describe_rule
from crmflow.web.ui.session import (
    EPOCH_KEY,
    HOME,
    USER_KEY,
    Viewer,
    ViewerDep,
    safe_next,
    sign_in,
    sign_out,
)
from crmflow.web.ui.throttle import LoginThrottle

router = APIRouter(include_in_schema=False)
Csrf = [Depends(require_csrf)]

#: the longest list of upcoming (or past) appointments shown on one page
LIST_LIMIT = 200
#: token lifetimes offered in Settings (days; "" = never expires)
LIFETIME_CHOICES: tuple[tuple[str, str], ...] = (
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "1 year"),
    ("", "Never"),
)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _page(request: Request, viewer: Viewer | None, nav: str | None) -> dict[str, Any]:
    """The context every page shares."""
    return {"viewer": viewer, "csrf_token": csrf_token(request), "nav": nav}


# ---------------------------------------------------------------------- sign-in


@router.get("/")
async def home() -> RedirectResponse:
    return _redirect(HOME)


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    if USER_KEY in request.session:
        return _redirect(safe_next(next))
    return render(
        request,
        "login.html",
        {
            **_page(request, None, None),
            "email": "",
            "next": safe_next(next),
            "error": None,
            "signed_out": request.query_params.get("signed_out") == "1",
        },
    )


@router.post("/login", dependencies=Csrf)
async def login(request: Request, services: ServicesDep) -> Response:
    form = await request.form()
    email, password = text(form, "email").strip(), text(form, "password")
    target = safe_next(text(form, "next"))
    error: str | None = None
    status_code = 422
    throttle: LoginThrottle = request.app.state.login_throttle
    keys = (
        f"email:{email.lower()}",
        f"ip:{request.client.host if request.client else '?'}",
    )
    wait_s = throttle.retry_after_s(keys)
    if wait_s is not None:
        minutes = max(1, math.ceil(wait_s / 60))
        error = (
            "Too many failed sign-ins for this address. Wait "
            f"{minutes} minute{'s' if minutes != 1 else ''} and try again, or ask an "
            "admin of your organization to reset your password."
        )
        status_code = 429
    elif not email or not password:
        error = "Enter your email address and your password."
    else:
        user = await authenticate_password(services.db, email, password)
        if user is None:
            throttle.failed(keys)
            error = (
                "The email address or the password is not correct. Check both and "
                "try again; an admin of your organization can reset your password."
            )
        else:
            throttle.succeeded(keys[:1])
            try:
                ctx = await enter_organization(services.db, user.id)
            except NotFound:
                error = (
                    "Your account is not a member of any organization yet; ask an "
                    "admin of your organization to add you."
                )
            else:
                sign_in(request, ctx, user.session_epoch)
                return _redirect(target)
    return render(
        request,
        "login.html",
        {
            **_page(request, None, None),
            "email": email,
            "next": target,
            "error": error,
            "signed_out": False,
        },
        status_code=status_code,
    )


@router.post("/logout", dependencies=Csrf)
async def logout(request: Request) -> RedirectResponse:
    sign_out(request)
    return _redirect("/login?signed_out=1")


# ------------------------------------------------------------------ appointments


async def _appointments_context(
    request: Request, viewer: Viewer, services: ServicesDep, show: str
) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    async with services.db.tenant(viewer.ctx) as session:
        repo = AppointmentRepository(session)
        if show == "past":
            # The repository lists earliest first; take the newest past ones.
            probe = await repo.list(end=now, limit=1)
            offset = max(0, probe.total - LIST_LIMIT)
            page = await repo.list(end=now, limit=LIST_LIMIT, offset=offset)
            items = [a for a in reversed(page.items) if a.span.end_at <= now]
            total = probe.total
            running: list[crm.Appointment] = []
            upcoming: dict[uuid.UUID, dt.date | dt.datetime] = {}
        else:
            # everything with an occurrence from now on; a series that began
            # earlier is shown apart, with when it meets next (a few of its
            # occurrences tell that, past those under way now, and cost less
            # to work out than a hundred)
            page = await repo.overlapping(
                start=now, limit=LIST_LIMIT, occurrences_listed=8
            )
            began = {a.id for a in page.items if a.occurrences and a.span.end_at <= now}
            items = [a for a in page.items if a.id not in began]
            # a cancelled series that began earlier is not shown at all
            running = [
                a
                for a in page.items
                if a.id in began and a.status is not AppointmentStatus.CANCELLED
            ]
            total = page.total - len(began)
            upcoming = {}
            for a in running:
                following = next((o for o in a.occurrences if o.start_at > now), None)
                if following is not None:
                    upcoming[a.id] = (
                        following.start_date
                        if following.all_day
                        else following.start_at
                    )
            running.sort(key=lambda a: (a.span.start_at, a.id))
        members = await MemberRepository(session).list()
    next_starts = {
        a.id: occurrence_start(a, upcoming[a.id]) for a in running if a.id in upcoming
    }
    return {
        **_page(request, viewer, "appointments"),
        "show": show,
        "appointments": items,
        "running": running,
        "next_starts": next_starts,
        "total": total,
        "limit": LIST_LIMIT,
        "owners": {m.user_id: m.display_name or m.email for m in members},
        "status_labels": STATUS_LABELS,
        "repeats": describe_rule,
        "now": now,
    }


def _form_context(form: AppointmentForm, *extra_zones: str) -> dict[str, Any]:
    return {
        "form": form,
        "timezones": timezone_choices(form.timezone, *extra_zones),
        "status_labels": STATUS_LABELS,
    }


@router.get("/appointments")
async def appointments_page(
    request: Request, viewer: ViewerDep, services: ServicesDep, show: str = "upcoming"
) -> Response:
    show = "past" if show == "past" else "upcoming"
    context = await _appointments_context(request, viewer, services, show)
    return render(
        request,
        "appointments.html",
        {**context, **_form_context(AppointmentForm()), "new_form": True},
    )


@router.post("/appointments", dependencies=Csrf)
async def create_appointment(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> Response:
    form = AppointmentForm.from_form(await request.form())
    draft = form.validate()
    if draft is not None:
        try:
            async with services.db.tenant(viewer.ctx) as session:
                created = await AppointmentRepository(session).create(draft)
        except ValidationFailed as exc:
            form.errors[FORM] = exc.message
        else:
            flash(request, f"Appointment “{created.title}” created.")
            return _redirect("/appointments")
    context = await _appointments_context(request, viewer, services, "upcoming")
    return render(
        request,
        "appointments.html",
        {**context, **_form_context(form), "new_form": False},
        status_code=422,
    )


def _require_writable(viewer: Viewer, appointment: crm.Appointment) -> None:
    # The repository enforces the same rule on write; checking before showing
    # the form spares the user filling in a form that cannot be saved.
    if appointment.owner_id != viewer.ctx.user_id and not viewer.ctx.is_admin:
        raise PermissionDenied(
            "Only the owner of this appointment or an organization admin can change it."
        )


def _edit_page(
    request: Request,
    viewer: Viewer,
    appointment: crm.Appointment,
    form: AppointmentForm,
    *,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "appointment_edit.html",
        {
            **_page(request, viewer, "appointments"),
            **_form_context(form, appointment.span.timezone),
            "appointment": appointment,
        },
        status_code=status_code,
    )


@router.get("/appointments/{appointment_id}/edit")
async def edit_appointment_page(
    appointment_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
) -> Response:
    async with services.db.tenant(viewer.ctx) as session:
        appointment = await AppointmentRepository(session).get(appointment_id)
    _require_writable(viewer, appointment)
    return _edit_page(
        request, viewer, appointment, AppointmentForm.from_appointment(appointment)
    )


@router.post("/appointments/{appointment_id}", dependencies=Csrf)
async def update_appointment(
    appointment_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
) -> Response:
    form = AppointmentForm.from_form(await request.form())
    async with services.db.tenant(viewer.ctx) as session:
        current = await AppointmentRepository(session).get(appointment_id)
    _require_writable(viewer, current)
    draft = form.validate(keep_from=current)
    if draft is not None:
        # Attendees and the recurrence rule were copied from ``current``: the
        # write must fail if the row changed since, even when the form sent no
        # version.
        expected = form.expected_version or current.version
        try:
            async with services.db.tenant(viewer.ctx) as session:
                saved = await AppointmentRepository(session).update(
                    appointment_id, draft, expected_version=expected
                )
        except Conflict:
            # Keep the user's input and base it on the current version: saving
            # again then replaces the other change knowingly.
            async with services.db.tenant(viewer.ctx) as session:
                current = await AppointmentRepository(session).get(appointment_id)
            form.version = str(current.version)
            form.errors[FORM] = (
                "Someone else changed this appointment while you were editing it. "
                "Your input is kept below: save again to replace their changes, or "
                "open the appointment again to see them."
            )
        except ValidationFailed as exc:
            form.errors[FORM] = exc.message
        else:
            flash(request, f"Appointment “{saved.title}” saved.")
            return _redirect("/appointments")
    return _edit_page(request, viewer, current, form, status_code=422)


@router.post("/appointments/{appointment_id}/delete", dependencies=Csrf)
async def delete_appointment(
    appointment_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
) -> RedirectResponse:
    version = text(await request.form(), "version")
    try:
        async with services.db.tenant(viewer.ctx) as session:
            repo = AppointmentRepository(session)
            title = (await repo.get(appointment_id)).title
            await repo.delete(
                appointment_id,
                expected_version=int(version) if version.isdigit() else None,
            )
    except Conflict:
        flash(
            request,
            "This appointment was changed by someone else just now, so it was not "
            "deleted. Check the change and delete it again if you still want to.",
            "error",
        )
    else:
        flash(request, f"Appointment “{title}” deleted.")
    return _redirect("/appointments")


# ---------------------------------------------------------------------- settings


async def _settings_page(
    request: Request,
    viewer: Viewer,
    services: ServicesDep,
    *,
    errors: dict[str, str] | None = None,
    label: str = "",
    lifetime: str = "90",
    new_token: str | None = None,
    status_code: int = 200,
) -> Response:
    async with services.db.tenant(viewer.ctx) as session:
        tokens = await ApiTokenRepository(session).list()
        members = await MemberRepository(session).list() if viewer.ctx.is_admin else []
    response = render(
        request,
        "settings.html",
        {
            **_page(request, viewer, "settings"),
            "tokens": tokens,
            "members": members,
            "errors": errors or {},
            "label": label,
            "lifetime": lifetime,
            "lifetime_choices": LIFETIME_CHOICES,
            "new_token": new_token,
        },
        status_code=status_code,
    )
    return response


@router.get("/settings")
async def settings_page(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> Response:
    return await _settings_page(request, viewer, services)


@router.post("/settings/organization", dependencies=Csrf)
async def switch_organization(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> RedirectResponse:
    raw = text(await request.form(), "organization_id")
    try:
        target = uuid.UUID(raw)
    except ValueError:
        raise NotFound("Choose one of your organizations from the list.") from None
    ctx = await enter_organization(services.db, viewer.user.id, target)
    sign_in(request, ctx, viewer.user.session_epoch)
    name = next(
        (o.name for o in viewer.organizations if o.id == ctx.organization_id),
        "the organization",
    )
    flash(request, f"You now work in {name}.")
    return _redirect("/settings")


@router.post("/settings/password", dependencies=Csrf)
async def change_own_password(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> Response:
    form = await request.form()
    current, new = text(form, "current_password"), text(form, "new_password")
    errors: dict[str, str] = {}
    if not current:
        errors["current"] = "Enter your current password."
    if new != text(form, "confirm_password"):
        errors["confirm"] = (
            "The two new passwords differ; type the same password in both fields."
        )
    if not errors:
        try:
            epoch = await change_password(services.db, viewer.user.id, current, new)
            # this session stays signed in; every other one ends
            request.session[EPOCH_KEY] = epoch
        except ValidationFailed as exc:
            key = "current" if "current" in exc.message else "new"
            errors[key] = exc.message
    if errors:
        return await _settings_page(
            request, viewer, services, errors=errors, status_code=422
        )
    rotate_csrf_token(request)
    flash(request, "Your password was changed.")
    return _redirect("/settings")


@router.post("/settings/sessions/end", dependencies=Csrf)
async def end_sessions(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> RedirectResponse:
    """Sign out everywhere, this browser included."""
    await end_all_sessions(services.db, viewer.user.id)
    sign_out(request)
    return _redirect("/login?signed_out=1")


@router.post("/settings/tokens", dependencies=Csrf)
async def create_token(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> Response:
    form = await request.form()
    name, expiry = text(form, "name").strip(), text(form, "expires_in_days")
    errors: dict[str, str] = {}
    if not name:
        errors["label"] = "Name the token after what uses it, e.g. 'reporting'."
    elif len(name) > TOKEN_NAME_MAX:
        errors["label"] = f"Shorten the name to {TOKEN_NAME_MAX} characters."
    if expiry not in {value for value, _ in LIFETIME_CHOICES}:
        errors["lifetime"] = "Choose how long the token stays valid."
    if not errors:
        try:
            expires_at = expiry_from_days(int(expiry) if expiry else None)
            async with services.db.tenant(viewer.ctx) as session:
                secret, _info = await ApiTokenRepository(session).create(
                    name, expires_at=expires_at
                )
        except ValidationFailed as exc:
            errors["label"] = exc.message
        else:
            # Rendered directly, never redirected: the plaintext must not pass
            # through the (signed, not encrypted) session cookie.
            return await _settings_page(
                request, viewer, services, new_token=secret.reveal()
            )
    return await _settings_page(
        request,
        viewer,
        services,
        errors=errors,
        label=name,
        lifetime=expiry,
        status_code=422,
    )


@router.post("/settings/tokens/{token_id}/revoke", dependencies=Csrf)
async def revoke_token(
    token_id: uuid.UUID, request: Request, viewer: ViewerDep, services: ServicesDep
) -> RedirectResponse:
    async with services.db.tenant(viewer.ctx) as session:
        await ApiTokenRepository(session).revoke(token_id)
    flash(request, "The API token was revoked; requests using it now fail.")
    return _redirect("/settings")
