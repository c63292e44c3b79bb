"""Calendar sync in the browser: connect a calendar, choose what syncs, sync,
read the sync log and settle conflicts.

Every page acts through :class:`~crmflow.services.calendar_sync.CalendarSync`
(the same service, and the same dependency, as ``/api/calendar-accounts``), so
the tenant rules are the API's: another user's calendar account, integration
or conflict is 404 on every route.

=================================================  =====================================
``GET  /calendars``                                Manage calendars: settings per calendar
``POST /calendars/sync``                           sync every enabled calendar (``next``)
``GET  /calendars/connect``                        Connect calendar: Google / Outlook /
                                                   CalDAV, and the calendars of accounts
                                                   connected already
``GET  /calendars/connect/{provider}/done``        where the OAuth callback returns to
``GET|POST /calendars/connect/caldav``             the CalDAV sign-in form
``GET|POST /calendars/choose/{integration_id}``    which calendars of an account to sync
``GET  /calendars/welcome?account=...``            the success screen, with "Sync now"
``GET  /calendars/log?account=``                   the sync log, newest first
``GET  /calendars/conflicts?account=``             open conflicts, both versions
``POST /calendars/conflicts/{id}/resolve``         ``keep=crm|calendar``
``POST /calendars/{id}``                           change a calendar's settings
``POST /calendars/{id}/sync``                      sync one (``confirm_mass_delete=yes``)
``GET|POST /calendars/{id}/remove``                stop syncing (asks first)
=================================================  =====================================

Google and Outlook connect through ``POST /oauth/connect/{provider}/calendar``
(:mod:`crmflow.web.oauth`) with ``next`` set to the ``.../done`` route, which
forwards to the calendar choice. Every POST needs the session's CSRF token.
Forms follow post/redirect/get; the outcome of a sync or a choice is a one-time
message (a "toast") on the next page, with a button or link when the user can
act on it (confirm a mass deletion, reconnect, review conflicts). Sync buttons
are plain forms; ``app.js`` only adds a spinner while the request runs.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from crmflow.connections import clients, credentials
from crmflow.connections.errors import ProviderNotConfigured
from crmflow.connections.service import IntegrationView
from crmflow.domain.calendar_accounts import (
    CalendarAccountInfo,
    CalendarChoice,
    ConflictStatus,
    DeleteMode,
    Direction,
    ExportScope,
    Resolution,
    RunStatus,
    Strategy,
    SyncRunInfo,
)
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.errors import Conflict, NotFound, ValidationFailed
from crmflow.providers.base import (
    AuthError,
    ConnectionCheckFailed,
    ProviderError,
    WrongCredentials,
)
from crmflow.services.calendar_sync import SyncInProgress
from crmflow.web.api.calendar_accounts import CalendarSyncDep
from crmflow.web.api.integrations import IntegrationsDep
from crmflow.web.deps import ServicesDep
from crmflow.web.ui import calendar_views as views
from crmflow.web.ui.csrf import csrf_token, require_csrf
from crmflow.web.ui.forms import FORM, text
from crmflow.web.ui.integrations import (
    CUSTOM,
    PASSWORD_FIELD,
    CalendarForm,
    Card,
    card_of,
    check_caldav_form,
    integration_label,
    unavailable_text,
)
from crmflow.web.ui.pages import FLASH_KEY, render
from crmflow.web.ui.session import Viewer, ViewerDep, safe_next

router = APIRouter(include_in_schema=False)
Csrf = [Depends(require_csrf)]

#: the Manage calendars page
PAGE = "/calendars"
CONNECT = PAGE + "/connect"
CONFLICTS = PAGE + "/conflicts"
LOG = PAGE + "/log"
#: where the Integrations settings live (reconnecting is done there)
INTEGRATIONS = "/settings/integrations"
#: runs shown on the sync log page
LOG_LIMIT = 100
#: the providers connected with OAuth from the Connect calendar page
OAUTH_PROVIDERS = (ProviderKey.GOOGLE, ProviderKey.MICROSOFT)
#: providers whose calendar integrations can be synced
CALENDAR_PROVIDERS = frozenset(
    {ProviderKey.GOOGLE, ProviderKey.MICROSOFT, ProviderKey.CALDAV, ProviderKey.APPLE}
)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _page(request: Request, viewer: Viewer) -> dict[str, Any]:
    """The context every calendar page shares."""
    return {"viewer": viewer, "csrf_token": csrf_token(request), "nav": "calendars"}


def _conflict_count(accounts: Iterable[CalendarAccountInfo]) -> int:
    return sum(a.open_conflicts for a in accounts)


def notify(
    request: Request,
    message: str,
    kind: str = "success",
    *,
    link: tuple[str, str] | None = None,
    post: tuple[str, str, Mapping[str, str]] | None = None,
) -> None:
    """Show ``message`` once on the next page, like :func:`.pages.flash`, with
    an optional way to act on it.

    Args:
        link: ``(path, words)``: a link after the message.
        post: ``(path, words, hidden fields)``: a button posting a form (with
            the CSRF token) after the message.
    """
    entry: dict[str, Any] = {"kind": kind, "text": message}
    if link is not None:
        entry["link"], entry["link_text"] = link
    if post is not None:
        entry["post"], entry["button"] = post[0], post[1]
        entry["fields"] = dict(post[2])
    pending = request.session.get(FLASH_KEY)
    request.session[FLASH_KEY] = [
        *(pending if isinstance(pending, list) else []),
        entry,
    ]


_E = TypeVar("_E", bound=enum.Enum)


def _choice(enum_type: type[_E], raw: str, what: str) -> _E:
    """``raw`` as a member of ``enum_type``.

    Raises:
        ValidationFailed: not one of the offered values (a form we never sent).
    """
    try:
        return enum_type(raw)
    except ValueError:
        raise ValidationFailed(f"Choose one of the offered {what}.") from None


# ------------------------------------------------------------ integrations


@dataclass(frozen=True, slots=True)
class Offer:
    """A connected calendar account and the calendars it offers for syncing."""

    view: IntegrationView
    #: "Google Calendar", "CalDAV calendar"
    name: str
    card: Card | None
    calendars: tuple[CalendarChoice, ...] = ()
    #: ids of its calendars synced already
    synced: frozenset[str] = frozenset()
    #: why the calendars cannot be listed, for a person
    error: str | None = None
    #: the error is fixed by reconnecting in Settings -> Integrations
    reconnect: bool = False

    @property
    def id(self) -> uuid.UUID:
        return self.view.info.id


async def _calendar_integrations(
    integrations: IntegrationsDep, viewer: Viewer
) -> list[IntegrationView]:
    return [
        v
        for v in await integrations.list_integrations(viewer.ctx)
        if v.info.kind is IntegrationKind.CALENDAR
        and v.info.provider in CALENDAR_PROVIDERS
    ]


def _own_integration(
    views_: Sequence[IntegrationView], integration_id: uuid.UUID
) -> IntegrationView:
    """The signed-in user's calendar integration ``integration_id``.

    Raises:
        NotFound: unknown, not a calendar, or someone else's (one answer for all).
    """
    for view in views_:
        if view.info.id == integration_id:
            return view
    raise NotFound(
        "This calendar account is not connected (any more). Open Connect "
        "calendar to see what is connected."
    )


async def _offer(
    service: CalendarSyncDep,
    viewer: Viewer,
    view: IntegrationView,
    accounts: Sequence[CalendarAccountInfo],
) -> Offer:
    """The calendars ``view`` offers, or why they cannot be listed."""
    info = view.info
    name = integration_label(info.provider, info.kind)
    card = card_of(info.provider, info.kind)
    if view.reconnect_required:
        return Offer(
            view,
            name,
            card,
            error=view.message or f"{name} needs you to reconnect it.",
            reconnect=True,
        )
    try:
        found = await service.calendars(viewer.ctx, info.id)
    except AuthError:
        return Offer(
            view,
            name,
            card,
            error=f"{name} no longer accepts crmflow's access; reconnect it to "
            "see its calendars.",
            reconnect=True,
        )
    except ProviderError as exc:
        message = (
            f"{name} is not answering right now; try again in a few minutes."
            if exc.retryable
            else f"{name} refused to list the calendars: {exc.message}"
        )
        return Offer(view, name, card, error=message)
    synced = frozenset(
        a.external_calendar_id for a in accounts if a.integration_id == info.id
    )
    return Offer(view, name, card, calendars=tuple(found), synced=synced)


# ------------------------------------------------------------ connect calendar


@dataclass(frozen=True, slots=True)
class ProviderOption:
    """One of Google / Outlook / CalDAV on the Connect calendar page."""

    key: str
    title: str
    vendor: str
    card: Card
    #: the OAuth start (``/oauth/connect/...``); None: a credentials form
    oauth_action: str | None
    #: where the OAuth callback returns to, or the credentials form's page
    target: str
    #: why it cannot be connected here (no OAuth client configured)
    unavailable: str | None
    #: the user's connected accounts of this provider
    connected: tuple[Offer, ...] = field(default_factory=tuple)


async def _unavailable(
    integrations: IntegrationsDep, viewer: Viewer, provider: ProviderKey
) -> str | None:
    try:
        await clients.credentials_for(integrations.deps, viewer.ctx, provider)
    except ProviderNotConfigured:
        return unavailable_text(viewer, provider)
    return None


def _card(provider: ProviderKey) -> Card:
    card = card_of(provider, IntegrationKind.CALENDAR)
    if card is None:  # pragma: no cover - every calendar provider has a card
        raise NotFound("This kind of calendar cannot be connected here.")
    return card


@router.get(CONNECT)
async def connect_page(
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
    service: CalendarSyncDep,
) -> Response:
    """Connect calendar: the providers, and the calendars of connected accounts."""
    accounts = await service.accounts(viewer.ctx)
    offers = [
        await _offer(service, viewer, v, accounts)
        for v in await _calendar_integrations(integrations, viewer)
    ]
    options: list[ProviderOption] = []
    for provider, title, vendor in (
        (ProviderKey.GOOGLE, "Google Calendar", "Google"),
        (ProviderKey.MICROSOFT, "Outlook Calendar", "Microsoft 365"),
    ):
        options.append(
            ProviderOption(
                key=provider.value,
                title=title,
                vendor=vendor,
                card=_card(provider),
                oauth_action=f"/oauth/connect/{provider.value}/calendar",
                target=f"{CONNECT}/{provider.value}/done",
                unavailable=await _unavailable(integrations, viewer, provider),
                connected=tuple(o for o in offers if o.view.info.provider is provider),
            )
        )
    options.append(
        ProviderOption(
            key="caldav",
            title="CalDAV calendar",
            vendor="iCloud, Fastmail, Nextcloud or any CalDAV server",
            card=_card(ProviderKey.CALDAV),
            oauth_action=None,
            target=f"{CONNECT}/caldav",
            unavailable=None,
            connected=tuple(
                o
                for o in offers
                if o.view.info.provider in (ProviderKey.CALDAV, ProviderKey.APPLE)
            ),
        )
    )
    return render(
        request,
        "calendar_connect.html",
        {
            **_page(request, viewer),
            "options": options,
            "offers": offers,
            "directions": views.DIRECTIONS,
            "strategies": views.STRATEGIES,
            "conflict_count": _conflict_count(accounts),
        },
    )


@router.get(CONNECT + "/{provider}/done")
async def connect_done(
    provider: str, viewer: ViewerDep, integrations: IntegrationsDep
) -> RedirectResponse:
    """Where the OAuth callback sends the browser: on to the calendar choice of
    the account just connected, or back to Connect calendar (cancelled)."""
    key = next((p for p in OAUTH_PROVIDERS if p.value == provider), None)
    if key is None:
        raise NotFound("There is no such calendar provider; choose one on the page.")
    for view in await _calendar_integrations(integrations, viewer):
        if view.info.provider is key and not view.reconnect_required:
            return _redirect(f"{PAGE}/choose/{view.info.id}")
    return _redirect(CONNECT)


# ------------------------------------------------------------ CalDAV form


def _caldav_page(
    request: Request, viewer: Viewer, form: CalendarForm, *, status_code: int = 200
) -> Response:
    return render(
        request,
        "calendar_caldav.html",
        {
            **_page(request, viewer),
            "form": form,
            "presets": form.PRESETS,
            "custom": CUSTOM,
        },
        status_code=status_code,
    )


@router.get(CONNECT + "/caldav")
async def caldav_form(
    request: Request, viewer: ViewerDep, preset: str | None = None
) -> Response:
    """The CalDAV sign-in form (the same fields as in Settings -> Integrations)."""
    form = CalendarForm()
    if preset == CUSTOM or any(p.key == preset for p in form.PRESETS):
        form.preset = str(preset)
    return _caldav_page(request, viewer, form)


@router.post(CONNECT + "/caldav", dependencies=Csrf)
async def caldav_connect(
    request: Request, viewer: ViewerDep, services: ServicesDep
) -> Response:
    """Sign in (CalDAV discovery); keep the account and go on to the calendar
    choice, or show the form again with what went wrong (422)."""
    raw = await request.form()
    form = CalendarForm.from_form(raw)
    password = check_caldav_form(form, raw)
    if password is not None:
        preset = form.chosen
        try:
            connected = await credentials.connect_caldav(
                services,
                viewer.ctx,
                username=form.username,
                password=password,
                preset=preset.key if preset else None,
                url=form.url if preset is None or preset.url is None else None,
                email=form.email or None,
            )
        except (ConnectionCheckFailed, ValidationFailed) as exc:
            form.errors[FORM] = f"Nothing was connected. {exc.message}"
            if isinstance(exc, WrongCredentials):
                form.errors[PASSWORD_FIELD] = (
                    "The server refused this user name or password; enter the "
                    "password again (for iCloud: an app-specific password)."
                )
        else:
            info = connected.integration
            notify(
                request,
                f"Connected {integration_label(info.provider, info.kind)} as "
                f"{info.email}. Now choose the calendars to sync.",
            )
            return _redirect(f"{PAGE}/choose/{info.id}")
    if FORM not in form.errors:
        form.errors[FORM] = (
            "Nothing was connected: please correct the "
            + ("field" if len(form.errors) == 1 else "fields")
            + " marked below."
        )
    return _caldav_page(request, viewer, form, status_code=422)


# ------------------------------------------------------------ choose calendars


def _choose_page(
    request: Request,
    viewer: Viewer,
    offer: Offer,
    accounts: Sequence[CalendarAccountInfo],
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "calendar_choose.html",
        {
            **_page(request, viewer),
            "offer": offer,
            "error": error,
            "directions": views.DIRECTIONS,
            "strategies": views.STRATEGIES,
            "conflict_count": _conflict_count(accounts),
        },
        status_code=status_code,
    )


@router.get(PAGE + "/choose/{integration_id}")
async def choose_page(
    integration_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
    service: CalendarSyncDep,
) -> Response:
    """Which calendars of a connected account to sync (its main one preselected)."""
    view = _own_integration(
        await _calendar_integrations(integrations, viewer), integration_id
    )
    accounts = await service.accounts(viewer.ctx)
    offer = await _offer(service, viewer, view, accounts)
    return _choose_page(request, viewer, offer, accounts)


@router.post(PAGE + "/choose/{integration_id}", dependencies=Csrf)
async def choose(
    integration_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
    service: CalendarSyncDep,
) -> Response:
    """Start syncing the ticked calendars (form field ``calendar``, any number)
    with the chosen ``direction`` and ``strategy``; on to the success screen."""
    view = _own_integration(
        await _calendar_integrations(integrations, viewer), integration_id
    )
    form = await request.form()
    direction = _choice(Direction, text(form, "direction"), "directions")
    strategy = _choice(Strategy, text(form, "strategy"), "conflict strategies")
    wanted = list(dict.fromkeys(str(c) for c in form.getlist("calendar") if c))
    accounts = await service.accounts(viewer.ctx)
    if not wanted:
        offer = await _offer(service, viewer, view, accounts)
        return _choose_page(
            request,
            viewer,
            offer,
            accounts,
            error="Tick at least one calendar to sync.",
            status_code=422,
        )
    added: list[CalendarAccountInfo] = []
    skipped: list[str] = []
    try:
        for calendar_id in wanted:
            try:
                added.append(
                    await service.add_account(
                        viewer.ctx,
                        integration_id,
                        calendar_id,
                        direction=direction,
                        strategy=strategy,
                    )
                )
            except Conflict as exc:
                skipped.append(exc.message)
    except (ProviderError, NotFound) as exc:
        offer = await _offer(service, viewer, view, accounts)
        message = (
            "That calendar is no longer in this account; choose one of the "
            "listed calendars."
            if isinstance(exc, NotFound)
            else exc.message
        )
        if added:
            message = (
                "Started syncing "
                + ", ".join(f"“{a.name}”" for a in added)
                + f", but not the rest: {message}"
            )
        return _choose_page(
            request, viewer, offer, accounts, error=message, status_code=422
        )
    for message in skipped:
        notify(request, message, "error")
    if not added:
        return _redirect(PAGE)
    query = urlencode([("account", str(a.id)) for a in added])
    return _redirect(f"{PAGE}/welcome?{query}")


@router.get(PAGE + "/welcome")
async def welcome_page(
    request: Request, viewer: ViewerDep, service: CalendarSyncDep
) -> Response:
    """The success screen: what two-way sync does, in plain words, and Sync now."""
    wanted: set[uuid.UUID] = set()
    for raw in request.query_params.getlist("account"):
        try:
            wanted.add(uuid.UUID(raw))
        except ValueError:
            continue
    accounts = await service.accounts(viewer.ctx)
    added = [views.account_row(a) for a in accounts if a.id in wanted]
    if not added:
        return _redirect(PAGE)
    exporting = [
        a
        for a in accounts
        if a.export_scope is ExportScope.OWN
        and a.direction is not Direction.IMPORT_ONLY
    ]
    directions = {r.info.direction for r in added}
    return render(
        request,
        "calendar_welcome.html",
        {
            **_page(request, viewer),
            "added": added,
            "exporting": exporting,
            "imports": directions != {Direction.EXPORT_ONLY},
            "exports": directions != {Direction.IMPORT_ONLY},
            "two_way": Direction.TWO_WAY in directions,
            "manual": any(r.info.strategy is Strategy.MANUAL for r in added),
            "cancels": any(r.info.delete_mode is DeleteMode.CANCEL for r in added),
            "strategies": views.STRATEGIES,
            "conflict_count": _conflict_count(accounts),
        },
    )


# ------------------------------------------------------------ syncing


def _report(
    request: Request,
    runs: Sequence[SyncRunInfo],
    names: Mapping[uuid.UUID, str],
    back: str,
    busy: Sequence[str] = (),
) -> None:
    """The toasts after syncing: one summary of the runs that did not fail as a
    whole, and one message per failure with what the user can do about it
    (``back``: where a confirmed re-run returns to)."""
    done = [r for r in runs if r.status is not RunStatus.FAILED]
    if done:
        conflicts = sum(r.conflicts for r in done)
        notify(
            request,
            views.sync_summary(done) + ".",
            link=(CONFLICTS, "Review the conflicts") if conflicts else None,
        )
    for run in runs:
        name = (
            names.get(run.calendar_account_id, "A calendar")
            if run.calendar_account_id is not None
            else "A calendar"
        )
        if run.status is RunStatus.FAILED:
            error = run.errors[0] if run.errors else None
            message = error.message if error else "The sync failed."
            if error is not None and error.code == "mass_delete":
                notify(
                    request,
                    f"“{name}”: {message}",
                    "error",
                    post=(
                        f"{PAGE}/{run.calendar_account_id}/sync",
                        "Confirm the deletions and sync",
                        {"confirm_mass_delete": "yes", "next": back},
                    ),
                )
            elif error is not None and error.code == "reconnect":
                notify(
                    request,
                    f"“{name}”: {message}",
                    "error",
                    link=(INTEGRATIONS, "Open Settings → Integrations"),
                )
            else:
                notify(request, f"“{name}”: {message}", "error")
        elif run.status is RunStatus.PARTIAL:
            count = len(run.errors)
            notify(
                request,
                f"“{name}”: {count} event{'' if count == 1 else 's'} could not be "
                f"synced; the next sync tries again. {run.errors[0].message}",
                "error",
                link=(f"{LOG}?account={run.calendar_account_id}", "See the sync log"),
            )
    for message in busy:
        notify(request, message, "error")


@router.post(PAGE + "/sync", dependencies=Csrf)
async def sync_all(
    request: Request, viewer: ViewerDep, service: CalendarSyncDep
) -> RedirectResponse:
    """Sync every enabled calendar, one after the other; back to ``next``.

    Calendars are synced one by one here (what ``CalendarSync.sync_all`` does)
    so that one calendar already being synced elsewhere does not hide the
    results of the others.
    """
    back = safe_next(text(await request.form(), "next"))
    accounts = await service.accounts(viewer.ctx)
    names = {a.id: a.name for a in accounts}
    enabled = [a for a in accounts if a.is_enabled and a.integration_id is not None]
    if not accounts:
        notify(
            request,
            "No calendar is synced yet: connect one first.",
            "error",
            link=(CONNECT, "Connect calendar"),
        )
        return _redirect(back)
    if not enabled:
        notify(
            request,
            "All your calendars are paused or disconnected, so nothing was synced.",
            "error",
            link=(PAGE, "Manage calendars"),
        )
        return _redirect(back)
    runs: list[SyncRunInfo] = []
    busy: list[str] = []
    for account in enabled:
        try:
            runs.append(await service.sync(viewer.ctx, account.id))
        except SyncInProgress as exc:
            busy.append(exc.message)
        except (NotFound, ValidationFailed) as exc:
            # removed or paused between listing and syncing
            busy.append(exc.message)
    _report(request, runs, names, back, busy)
    return _redirect(back)


# ------------------------------------------------------------ sync log


@router.get(LOG)
async def log_page(
    request: Request,
    viewer: ViewerDep,
    service: CalendarSyncDep,
    account: uuid.UUID | None = None,
) -> Response:
    """The runs, newest first (``account``: one calendar's)."""
    accounts = await service.accounts(viewer.ctx)
    names = {a.id: a.name for a in accounts}
    if account is not None and account not in names:
        raise NotFound("This calendar is not synced (any more).")
    runs = await service.runs(viewer.ctx, account, limit=LOG_LIMIT)
    return render(
        request,
        "calendar_log.html",
        {
            **_page(request, viewer),
            "runs": [views.run_row(r, names) for r in runs],
            "accounts": accounts,
            "account": account,
            "limit": LOG_LIMIT,
            "conflict_count": _conflict_count(accounts),
        },
    )


# ------------------------------------------------------------ conflicts


@router.get(CONFLICTS)
async def conflicts_page(
    request: Request,
    viewer: ViewerDep,
    service: CalendarSyncDep,
    account: uuid.UUID | None = None,
) -> Response:
    """Open conflicts: both versions side by side, and the two buttons."""
    accounts = await service.accounts(viewer.ctx)
    by_id = {a.id: a for a in accounts}
    if account is not None and account not in by_id:
        raise NotFound("This calendar is not synced (any more).")
    found = await service.conflicts(
        viewer.ctx, status=ConflictStatus.OPEN, account_id=account
    )
    return render(
        request,
        "calendar_conflicts.html",
        {
            **_page(request, viewer),
            "conflicts": [
                views.conflict_view(c, by_id.get(c.calendar_account_id)) for c in found
            ],
            "account": by_id.get(account) if account else None,
            "conflict_count": _conflict_count(accounts),
        },
    )


def _seen(value: dt.datetime) -> str:
    """The version of a conflict the page showed: a new version of either side
    re-opens the conflict with a new ``created_at`` (``record_conflicts``)."""
    return value.isoformat()


@router.post(CONFLICTS + "/{conflict_id}/resolve", dependencies=Csrf)
async def resolve(
    conflict_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    service: CalendarSyncDep,
) -> RedirectResponse:
    """Keep one version (``keep=crm|calendar``): the calendar is synced at once
    to apply it. ``seen`` is the version the page showed; if the conflict has
    changed since, nothing is chosen and the new versions are shown."""
    form = await request.form()
    keep = text(form, "keep")
    if keep not in ("crm", "calendar"):
        raise ValidationFailed("Choose “Keep CRM” or “Keep calendar”.")
    resolution = Resolution.KEEP_CRM if keep == "crm" else Resolution.KEEP_CALENDAR
    conflict = await service.conflict(viewer.ctx, conflict_id)
    title = conflict.crm_event.title or conflict.calendar_event.title
    if conflict.status is not ConflictStatus.OPEN:
        notify(request, f"The conflict about “{title}” was settled already.")
        return _redirect(CONFLICTS)
    if text(form, "seen") != _seen(conflict.created_at):
        notify(
            request,
            f"“{title}” changed again since the page was shown, so nothing was "
            "chosen. Look at both versions again and choose.",
            "error",
        )
        return _redirect(CONFLICTS)
    try:
        resolved, run = await service.resolve(viewer.ctx, conflict_id, resolution)
    except SyncInProgress:
        notify(
            request,
            f"Your choice for “{title}” is saved. The calendar is being synced "
            "right now; that sync or the next one applies it.",
        )
        return _redirect(CONFLICTS)
    except ValidationFailed as exc:
        notify(request, exc.message, "error")
        return _redirect(CONFLICTS)
    if resolved.status is ConflictStatus.RESOLVED:
        kept = "the CRM's" if resolution is Resolution.KEEP_CRM else "the calendar's"
        other = (
            "the calendar has it now"
            if resolution is Resolution.KEEP_CRM
            else "the appointment has it now"
        )
        notify(request, f"Kept {kept} version of “{title}”: {other}.")
    elif run.status is RunStatus.FAILED:
        message = run.errors[0].message if run.errors else "The sync failed."
        notify(
            request,
            f"Your choice for “{title}” is saved, but the sync that applies it "
            f"failed: {message}",
            "error",
        )
    else:
        notify(
            request,
            f"“{title}” was changed again in the CRM or in the calendar while you "
            "chose, so nothing was overwritten. Both new versions are shown: "
            "choose again.",
            "error",
        )
    return _redirect(CONFLICTS)


# ------------------------------------------------------------ manage calendars


@router.get(PAGE)
async def manage_page(
    request: Request, viewer: ViewerDep, service: CalendarSyncDep
) -> Response:
    """Every synced calendar with its state and settings."""
    accounts = await service.accounts(viewer.ctx)
    return render(
        request,
        "calendars.html",
        {
            **_page(request, viewer),
            "rows": [views.account_row(a) for a in accounts],
            "directions": views.DIRECTIONS,
            "strategies": views.STRATEGIES,
            "export_scopes": views.EXPORT_SCOPES,
            "delete_modes": views.DELETE_MODES,
            "conflict_count": _conflict_count(accounts),
        },
    )


@router.post(PAGE + "/{account_id}/sync", dependencies=Csrf)
async def sync_one(
    account_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    service: CalendarSyncDep,
) -> RedirectResponse:
    """Sync one calendar now; ``confirm_mass_delete=yes`` carries out the
    deletions a previous run stopped at. Back to ``next`` (default: Manage)."""
    form = await request.form()
    back = safe_next(text(form, "next") or PAGE)
    account = await service.account(viewer.ctx, account_id)
    try:
        run = await service.sync(
            viewer.ctx,
            account_id,
            confirm_mass_delete=text(form, "confirm_mass_delete") == "yes",
        )
    except (SyncInProgress, ValidationFailed) as exc:
        notify(request, exc.message, "error")
        return _redirect(back)
    _report(request, [run], {account.id: account.name}, back)
    return _redirect(back)


@router.post(PAGE + "/{account_id}", dependencies=Csrf)
async def update_settings(
    account_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    service: CalendarSyncDep,
) -> RedirectResponse:
    """Save direction, conflict strategy, export scope, delete mode and
    whether the calendar syncs at all (the ``enabled`` checkbox)."""
    account = await service.account(viewer.ctx, account_id)
    form = await request.form()
    changes: dict[str, Any] = {
        "direction": _choice(Direction, text(form, "direction"), "directions").value,
        "strategy": _choice(
            Strategy, text(form, "strategy"), "conflict strategies"
        ).value,
        "export_scope": _choice(
            ExportScope, text(form, "export_scope"), "export choices"
        ).value,
        "delete_mode": _choice(
            DeleteMode, text(form, "delete_mode"), "deletion choices"
        ).value,
    }
    if account.integration_id is not None:
        # An unticked checkbox is not sent at all: absent means paused.
        changes["is_enabled"] = text(form, "enabled") == "yes"
    try:
        saved = await service.update_account(viewer.ctx, account_id, changes)
    except ValidationFailed as exc:
        notify(request, exc.message, "error")
    else:
        state = (
            ""
            if saved.is_enabled
            else " It is paused: nothing syncs until you switch it on again."
        )
        notify(request, f"Saved the settings of “{saved.name}”.{state}")
    return _redirect(f"{PAGE}#account-{account_id}")


def _remove_page(
    request: Request, viewer: Viewer, account: CalendarAccountInfo
) -> Response:
    return render(
        request,
        "calendar_remove.html",
        {
            **_page(request, viewer),
            "row": views.account_row(account),
            "conflict_count": account.open_conflicts,
        },
    )


@router.get(PAGE + "/{account_id}/remove")
async def confirm_remove(
    account_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    service: CalendarSyncDep,
) -> Response:
    """The confirmation step of "Stop syncing"."""
    return _remove_page(request, viewer, await service.account(viewer.ctx, account_id))


@router.post(PAGE + "/{account_id}/remove", dependencies=Csrf)
async def remove(
    account_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    service: CalendarSyncDep,
) -> Response:
    """Stop syncing once confirmed (``confirm=yes``); otherwise ask first."""
    account = await service.account(viewer.ctx, account_id)
    if text(await request.form(), "confirm") != "yes":
        return _remove_page(request, viewer, account)
    await service.remove_account(viewer.ctx, account_id)
    notify(
        request,
        f"Stopped syncing “{account.name}”. Its appointments stay in the CRM and "
        "its events stay in the calendar.",
    )
    return _redirect(PAGE)
