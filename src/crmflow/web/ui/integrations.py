"""Settings -> Integrations: connect, inspect and disconnect mail and calendar
accounts from the browser.

One card per integration (:data:`CARDS`): Gmail, Google Calendar, Outlook Mail,
Outlook Calendar (OAuth: Google and Microsoft), iCloud / IMAP mail and CalDAV
calendar (a password, checked by a real sign-in). A connected card shows the
account, its status ("Needs reconnect" when the grant or the password is gone),
the permissions granted in plain words, every feature (on, or off with what is
missing and a "Grant access" button: partial consent), when the access was
last renewed, and the integration event log (the audit trail) below the cards.

=================================================  ====================================
``GET  /settings/integrations``                    the cards and the event log
``POST /settings/integrations/connect/{card}``     OAuth: off to the consent page
``POST /settings/integrations/{id}/grant``         OAuth: ask for missing features
                                                   (form field ``feature``, any number)
``POST /settings/integrations/{id}/reconnect``     OAuth: consent again; password
                                                   integrations: to their form
``POST /settings/integrations/{id}/mail-protocol`` Gmail: the Gmail API or IMAP + SMTP
                                                   (form field ``protocol``: api|imap)
``GET  /settings/integrations/{id}/disconnect``    the confirmation step
``POST /settings/integrations/{id}/disconnect``    disconnects only with ``confirm=yes``
``GET|POST /settings/integrations/imap``           the IMAP/SMTP form (``?reconnect=id``)
``GET|POST /settings/integrations/caldav``         the CalDAV form (``?reconnect=id``)
=================================================  ====================================

Every POST needs the session's CSRF token; an integration id that is not the
signed-in user's own (another member's, another organization's, or gone) is
404 on every route, because the lookup goes through the user's own list. The
forms follow post/redirect/get; a failed sign-in shows the form again (422)
with the message next to it and the user's input kept, except the password,
which is never written into a page. OAuth provider failures keep the user on
this page with the message on the card.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from crmflow.connections import clients, credentials
from crmflow.connections.errors import ProviderNotConfigured
from crmflow.connections.mail_protocol import mail_protocol
from crmflow.connections.scopes import CATALOGUE, FeatureState
from crmflow.connections.scopes import label as scope_label
from crmflow.connections.service import MANAGE_ACCESS_URL, IntegrationView
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.errors import CrmflowError, NotFound, ValidationFailed
from crmflow.providers.base import (
    ConnectionCheckFailed,
    ProviderError,
    WrongCredentials,
)
from crmflow.providers.caldav import CALENDAR_PRESETS, CalendarPreset
from crmflow.providers.imap import MAIL_PRESETS, MailPreset, MailServer, Security
from crmflow.services.push import PushChannels
from crmflow.store.integrations import (
    IntegrationEvent,
    IntegrationEventInfo,
    IntegrationStatus,
)
from crmflow.web.api.integrations import IntegrationsDep
from crmflow.web.deps import ServicesDep
from crmflow.web.ui.csrf import csrf_token, require_csrf
from crmflow.web.ui.forms import FORM, text
from crmflow.web.ui.pages import flash, render
from crmflow.web.ui.session import Viewer, ViewerDep

router = APIRouter(include_in_schema=False)
Csrf = [Depends(require_csrf)]

#: the page (the OAuth callback lands here too: ``web/oauth.py`` AFTER_CONNECT)
PAGE = "/settings/integrations"
#: how many integration events the page shows
EVENT_LIMIT = 25
#: the form value of "enter the servers yourself"
CUSTOM = "custom"
#: the name of the password field (its value is never written into a page)
PASSWORD_FIELD = "password"  # noqa: S105 - a field name, not a password


# ------------------------------------------------------------------------ cards


@dataclass(frozen=True, slots=True)
class Card:
    """One integration a user can connect."""

    #: stable id in URLs and HTML (``google-calendar``)
    key: str
    title: str
    #: who provides it, in words
    vendor: str
    #: CSS brand class (``brand-google``) and its monogram
    brand: str
    monogram: str
    kind: IntegrationKind
    #: providers whose integrations of ``kind`` belong on this card
    providers: tuple[ProviderKey, ...]
    #: what connecting it does, in one sentence
    blurb: str
    #: the password form, for cards that connect without OAuth
    form: str | None = None

    @property
    def oauth(self) -> bool:
        return self.form is None


CARDS: tuple[Card, ...] = (
    Card(
        "gmail",
        "Gmail",
        "Google",
        "google",
        "G",
        IntegrationKind.GMAIL,
        (ProviderKey.GOOGLE,),
        "Send email from the CRM and import the conversations you have with "
        "your contacts.",
    ),
    Card(
        "google-calendar",
        "Google Calendar",
        "Google",
        "google",
        "G",
        IntegrationKind.CALENDAR,
        (ProviderKey.GOOGLE,),
        "Show your calendars in the CRM and keep appointments in sync both ways.",
    ),
    Card(
        "outlook-mail",
        "Outlook Mail",
        "Microsoft 365",
        "microsoft",
        "M",
        IntegrationKind.MAIL,
        (ProviderKey.MICROSOFT,),
        "Send email from the CRM and import the conversations you have with "
        "your contacts.",
    ),
    Card(
        "outlook-calendar",
        "Outlook Calendar",
        "Microsoft 365",
        "microsoft",
        "M",
        IntegrationKind.CALENDAR,
        (ProviderKey.MICROSOFT,),
        "Show your calendars in the CRM and keep appointments in sync both ways.",
    ),
    Card(
        "imap-mail",
        "iCloud / IMAP mail",
        "iCloud, Fastmail, Yahoo or any IMAP/SMTP server",
        "imap",
        "@",
        IntegrationKind.MAIL,
        (ProviderKey.APPLE, ProviderKey.IMAP),
        "Connect a mailbox with its (app-specific) password: crmflow signs in to "
        "the IMAP and the SMTP server before it keeps anything.",
        form="/settings/integrations/imap",
    ),
    Card(
        "caldav-calendar",
        "CalDAV calendar",
        "iCloud, Fastmail, Nextcloud or any CalDAV server",
        "caldav",
        "31",
        IntegrationKind.CALENDAR,
        (ProviderKey.APPLE, ProviderKey.CALDAV),
        "Connect a calendar account with its (app-specific) password: crmflow "
        "finds your calendars and shows them here.",
        form="/settings/integrations/caldav",
    ),
)

_PROVIDER_NAMES = {
    ProviderKey.GOOGLE: "Google",
    ProviderKey.MICROSOFT: "Microsoft",
    ProviderKey.APPLE: "iCloud",
    ProviderKey.IMAP: "IMAP/SMTP",
    ProviderKey.CALDAV: "CalDAV",
}

#: the audit trail's events, for a person
EVENT_WORDS: Mapping[IntegrationEvent, str] = {
    IntegrationEvent.CONNECTED: "Connected",
    IntegrationEvent.RECONNECTED: "Reconnected",
    IntegrationEvent.REFRESHED: "Access renewed",
    IntegrationEvent.REFRESH_FAILED: "Problem",
    IntegrationEvent.NEEDS_REAUTH: "Needs reconnect",
    IntegrationEvent.DISCONNECTED: "Disconnected",
}


#: OpenID Connect scopes any OAuth connection may hold (who the account is)
_IDENTITY_SCOPES = frozenset({"openid", "email", "profile", "offline_access"})
#: plain words for scopes providers add that crmflow does not ask for itself
_EXTRA_LABELS = {"profile": "see your basic profile (name and picture)"}


def card_of(provider: ProviderKey, kind: IntegrationKind) -> Card | None:
    """The card an integration of ``provider`` and ``kind`` is shown on."""
    return next((c for c in CARDS if c.kind is kind and provider in c.providers), None)


def integration_label(provider: ProviderKey, kind: IntegrationKind) -> str:
    """How people call an integration ("Google Calendar", "iCloud Mail")."""
    if provider is ProviderKey.APPLE:
        return "iCloud Mail" if kind is IntegrationKind.MAIL else "iCloud Calendar"
    card = card_of(provider, kind)
    if card is not None and card.oauth:
        return card.title
    return "IMAP/SMTP mail" if kind is IntegrationKind.MAIL else "CalDAV calendar"


def _sentence(words: str) -> str:
    return words[:1].upper() + words[1:]


@dataclass(frozen=True, slots=True)
class Connected:
    """One connected integration, as its card shows it (no secret in it)."""

    view: IntegrationView
    #: "Google Calendar", "iCloud Mail", "IMAP/SMTP mail"
    name: str
    #: ``connected`` / ``needs-reconnect`` / ``problem`` (the last use failed)
    state: str
    #: the granted OAuth permissions this kind uses, in plain words
    permissions: tuple[str, ...]
    #: further permissions of the same grant (other connections' scopes)
    shared_permissions: tuple[str, ...]
    #: OAuth features (``stay_connected`` last)
    features: tuple[FeatureState, ...]
    #: (what, where) of the servers of a password integration
    servers: tuple[tuple[str, str], ...]
    #: names of the calendars a CalDAV discovery found
    calendars: tuple[str, ...]
    username: str | None
    #: Gmail: ``api`` or ``imap`` (IMAP + SMTP with XOAUTH2); None otherwise
    mail_protocol: str | None = None

    @property
    def id(self) -> uuid.UUID:
        return self.view.info.id


def connected_of(view: IntegrationView) -> Connected:
    """What the card shows of ``view``."""
    info = view.info
    if view.reconnect_required:
        state = "needs-reconnect"
    elif info.status is IntegrationStatus.ERROR or info.last_error:
        state = "problem"
    else:
        state = "connected"
    permissions: list[str] = []
    shared: list[str] = []
    spec = CATALOGUE.get((info.provider, info.kind))
    relevant = set(_IDENTITY_SCOPES)
    if spec is not None:
        relevant |= {s.casefold() for s in spec.base_scopes} | {
            s.casefold() for f in spec.features for alt in f.any_of for s in alt
        }
    for scope in info.scopes:
        words = _sentence(_EXTRA_LABELS.get(scope.casefold()) or scope_label(scope))
        # Google grants per account: a token also carries what the user's
        # other Google connections were granted (include_granted_scopes).
        target = permissions if spec is None or scope.casefold() in relevant else shared
        if words not in permissions and words not in shared:
            target.append(words)
    settings: Mapping[str, Any] = info.settings
    servers: list[tuple[str, str]] = []
    for key, what in (("imap", "IMAP server"), ("smtp", "SMTP server")):
        raw = settings.get(key)
        if isinstance(raw, Mapping):
            security = {"tls": "TLS", "starttls": "STARTTLS", "none": "unencrypted"}
            servers.append(
                (
                    what,
                    f"{raw.get('host')}:{raw.get('port')} "
                    f"({security.get(str(raw.get('security')), '?')})",
                )
            )
    if info.kind is IntegrationKind.CALENDAR and settings.get("url"):
        servers.append(("Server", str(settings["url"])))
    calendars = tuple(
        str(c.get("name") or c.get("url") or "")
        for c in settings.get("calendars") or ()
        if isinstance(c, Mapping)
    )
    username = settings.get("username")
    return Connected(
        view=view,
        name=integration_label(info.provider, info.kind),
        state=state,
        permissions=tuple(permissions),
        shared_permissions=tuple(shared),
        features=view.features,
        servers=tuple(servers),
        calendars=calendars,
        username=str(username) if username else None,
        mail_protocol=(
            mail_protocol(info) if info.kind is IntegrationKind.GMAIL else None
        ),
    )


@dataclass(slots=True)
class CardView:
    """A card with what the signed-in user has connected on it."""

    card: Card
    connections: list[Connected] = field(default_factory=list)
    #: why it cannot be connected in this organization (no OAuth client)
    unavailable: str | None = None
    #: the failure of the last action on this card
    error: str | None = None
    #: the card the browser just came back to after a connect
    highlighted: bool = False

    @property
    def state(self) -> str:
        """``not-connected``, ``connected`` or ``needs-reconnect`` (the badge)."""
        if not self.connections:
            return "not-connected"
        if any(c.state == "needs-reconnect" for c in self.connections):
            return "needs-reconnect"
        return "connected"

    @property
    def status_text(self) -> str:
        return {
            "not-connected": "Not connected",
            "connected": "Connected",
            "needs-reconnect": "Needs reconnect",
        }[self.state]


@dataclass(frozen=True, slots=True)
class EventRow:
    """One line of the event log."""

    at: dt.datetime
    name: str
    what: str
    #: ``success`` / ``warning`` / ``neutral``: the badge colour
    tone: str
    detail: str | None


def _event_row(event: IntegrationEventInfo) -> EventRow:
    tone = {
        IntegrationEvent.CONNECTED: "success",
        IntegrationEvent.RECONNECTED: "success",
        IntegrationEvent.REFRESH_FAILED: "warning",
        IntegrationEvent.NEEDS_REAUTH: "warning",
    }.get(event.event, "neutral")
    return EventRow(
        at=event.created_at,
        name=integration_label(event.provider, event.kind),
        what=EVENT_WORDS.get(event.event, event.event.value),
        tone=tone,
        detail=event.detail,
    )


# ------------------------------------------------------------------ the page


def _base(request: Request, viewer: Viewer) -> dict[str, Any]:
    return {"viewer": viewer, "csrf_token": csrf_token(request), "nav": "settings"}


def unavailable_text(viewer: Viewer, provider: ProviderKey) -> str:
    """Why ``provider`` cannot be connected (no OAuth client), for this viewer."""
    name = _PROVIDER_NAMES[provider]
    org = viewer.organization.name
    if not viewer.ctx.is_admin:
        return (
            f"Not available yet: an administrator of {org} must set up {name} "
            "for crmflow first."
        )
    env = f"CRMFLOW_{provider.value.upper()}"
    return (
        f"{name} is not set up for {org} yet. Register your organization's "
        f"{name} OAuth client (PUT /api/organization/oauth-clients/"
        f"{provider.value}) or set {env}_CLIENT_ID and {env}_CLIENT_SECRET."
    )


async def _unavailable(
    integrations: IntegrationsDep, viewer: Viewer
) -> dict[ProviderKey, str]:
    """OAuth providers without a client in this organization, with the reason."""
    out: dict[ProviderKey, str] = {}
    for provider in (ProviderKey.GOOGLE, ProviderKey.MICROSOFT):
        try:
            await clients.credentials_for(integrations.deps, viewer.ctx, provider)
        except ProviderNotConfigured:
            out[provider] = unavailable_text(viewer, provider)
    return out


async def _integrations_page(
    request: Request,
    viewer: Viewer,
    integrations: IntegrationsDep,
    *,
    errors: Mapping[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    views = await integrations.list_integrations(viewer.ctx)
    events = await integrations.events(viewer.ctx, limit=EVENT_LIMIT)
    unavailable = await _unavailable(integrations, viewer)
    q = request.query_params
    just = None
    if q.get("integration") == "connected":
        just = (q.get("provider"), q.get("kind"))
    cards: list[CardView] = []
    for card in CARDS:
        shown = CardView(card, error=(errors or {}).get(card.key))
        shown.connections = [
            connected_of(v)
            for v in views
            if v.info.kind is card.kind and v.info.provider in card.providers
        ]
        if card.oauth:
            shown.unavailable = unavailable.get(card.providers[0])
        shown.highlighted = just == (card.providers[0].value, card.kind.value)
        cards.append(shown)
    return render(
        request,
        "integrations.html",
        {
            **_base(request, viewer),
            "cards": cards,
            "events": [_event_row(e) for e in events],
        },
        status_code=status_code,
    )


@router.get(PAGE)
async def integrations_page(
    request: Request, viewer: ViewerDep, integrations: IntegrationsDep
) -> Response:
    return await _integrations_page(request, viewer, integrations)


def _find(
    views: Sequence[IntegrationView], integration_id: uuid.UUID
) -> IntegrationView:
    """``integration_id`` among the signed-in user's own integrations.

    Raises:
        NotFound: unknown, gone, or someone else's (the same answer for all).
    """
    for view in views:
        if view.info.id == integration_id:
            return view
    raise NotFound(
        "This integration is not connected (any more). Open Settings -> "
        "Integrations to see what is connected."
    )


async def _own(
    integrations: IntegrationsDep, viewer: Viewer, integration_id: uuid.UUID
) -> IntegrationView:
    """The signed-in user's integration ``integration_id`` (see :func:`_find`)."""
    return _find(await integrations.list_integrations(viewer.ctx), integration_id)


def _connect_failed(exc: CrmflowError) -> tuple[str, int]:
    """The message and status of a connect that could not start."""
    if isinstance(exc, ProviderNotConfigured):
        return exc.message, 409
    if isinstance(exc, ConnectionCheckFailed):
        return exc.message, 422  # a sign-in check failed; nothing changed
    if isinstance(exc, ProviderError) and exc.retryable:
        return (
            "The provider's sign-in service is not answering right now; nothing "
            "was changed. Try again in a few minutes.",
            503,
        )
    if isinstance(exc, ProviderError):
        return exc.message, 502
    return exc.message, 422


async def _failed_on_card(
    request: Request,
    viewer: Viewer,
    integrations: IntegrationsDep,
    card: Card,
    exc: CrmflowError,
) -> Response:
    """The page again, with what went wrong on ``card``."""
    message, status_code = _connect_failed(exc)
    return await _integrations_page(
        request,
        viewer,
        integrations,
        errors={card.key: message},
        status_code=status_code,
    )


async def _to_provider(
    request: Request,
    viewer: Viewer,
    integrations: IntegrationsDep,
    card: Card,
    provider: ProviderKey,
    features: list[str] | None,
) -> Response:
    """Start a connect and send the browser to the provider's consent page."""
    try:
        started = await integrations.start_connect(
            viewer.ctx, card.kind, provider, features=features
        )
    except (ValidationFailed, ProviderError, ProviderNotConfigured) as exc:
        return await _failed_on_card(request, viewer, integrations, card, exc)
    return RedirectResponse(started.authorization_url, status_code=303)


@router.post(PAGE + "/connect/{card_key}", dependencies=Csrf)
async def connect(
    card_key: str, request: Request, viewer: ViewerDep, integrations: IntegrationsDep
) -> Response:
    """Connect: off to Google's or Microsoft's consent page (every feature)."""
    card = next((c for c in CARDS if c.key == card_key), None)
    if card is None:
        raise NotFound("There is no such integration; choose one on the page.")
    if not card.oauth:
        assert card.form is not None  # noqa: S101 - cards without OAuth have a form
        return RedirectResponse(card.form, status_code=303)
    return await _to_provider(
        request, viewer, integrations, card, card.providers[0], None
    )


def _card_of_view(view: IntegrationView) -> Card:
    card = card_of(view.info.provider, view.info.kind)
    if card is None:  # pragma: no cover - every stored kind has a card
        raise NotFound("This integration cannot be managed here.")
    return card


@router.post(PAGE + "/{integration_id}/grant", dependencies=Csrf)
async def grant_access(
    integration_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
) -> Response:
    """Grant access: ask the provider for the features that are off."""
    view = await _own(integrations, viewer, integration_id)
    card = _card_of_view(view)
    if not view.oauth:
        raise NotFound("This integration signs in with a password; it has no grants.")
    missing = [f.key for f in view.features if not f.enabled]
    wanted = [str(f) for f in (await request.form()).getlist("feature")]
    # optional features only when named: "Grant access" alone asks for gaps
    optional = {f.key for f in view.features if f.optional}
    features = (
        [f for f in wanted if f in missing]
        if wanted
        else [f for f in missing if f not in optional]
    )
    if not features:
        flash(request, f"{card.title} already has every permission it asks for.")
        return RedirectResponse(PAGE, status_code=303)
    return await _to_provider(
        request, viewer, integrations, card, view.info.provider, features
    )


@router.post(PAGE + "/{integration_id}/mail-protocol", dependencies=Csrf)
async def set_mail_protocol(
    integration_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
) -> Response:
    """Gmail: read and send through the Gmail API or through IMAP + SMTP."""
    view = await _own(integrations, viewer, integration_id)
    card = _card_of_view(view)
    protocol = text(await request.form(), "protocol")
    try:
        await integrations.set_mail_protocol(viewer.ctx, view.info.id, protocol)
    except (ValidationFailed, ProviderError) as exc:
        return await _failed_on_card(request, viewer, integrations, card, exc)
    flash(
        request,
        "Gmail now reads and sends through IMAP and SMTP (signed in with OAuth)."
        if protocol == "imap"
        else "Gmail now reads and sends through the Gmail API.",
    )
    return RedirectResponse(PAGE, status_code=303)


@router.post(PAGE + "/{integration_id}/reconnect", dependencies=Csrf)
async def reconnect(
    integration_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
) -> Response:
    """Reconnect: consent again (OAuth), or enter the password again."""
    view = await _own(integrations, viewer, integration_id)
    card = _card_of_view(view)
    if card.form is not None:
        return RedirectResponse(
            f"{card.form}?reconnect={view.info.id}", status_code=303
        )
    return await _to_provider(
        request, viewer, integrations, card, view.info.provider, None
    )


def _disconnect_page(
    request: Request,
    viewer: Viewer,
    view: IntegrationView,
    views: Sequence[IntegrationView],
) -> Response:
    info = view.info
    shared = [
        v
        for v in views
        if v.info.provider is ProviderKey.GOOGLE
        and v.info.id != info.id
        and v.info.account_id is not None
        and v.info.account_id == info.account_id
    ]
    return render(
        request,
        "integration_disconnect.html",
        {
            **_base(request, viewer),
            "connected": connected_of(view),
            "card": _card_of_view(view),
            "provider": info.provider.value,
            "manage_access": MANAGE_ACCESS_URL.get(info.provider, ""),
            "shares_grant_with": (
                integration_label(shared[0].info.provider, shared[0].info.kind)
                if shared and info.provider is ProviderKey.GOOGLE
                else None
            ),
        },
    )


@router.get(PAGE + "/{integration_id}/disconnect")
async def confirm_disconnect(
    integration_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
) -> Response:
    """The confirmation step: what disconnecting does, and the button."""
    views = await integrations.list_integrations(viewer.ctx)
    return _disconnect_page(request, viewer, _find(views, integration_id), views)


@router.post(PAGE + "/{integration_id}/disconnect", dependencies=Csrf)
async def disconnect(
    integration_id: uuid.UUID,
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
) -> Response:
    """Disconnect, once confirmed (``confirm=yes``); otherwise ask first."""
    views = await integrations.list_integrations(viewer.ctx)
    view = _find(views, integration_id)
    if text(await request.form(), "confirm") != "yes":
        return _disconnect_page(request, viewer, view, views)
    result = await PushChannels(integrations).disconnect(
        viewer.ctx, view.info.kind, view.info.provider
    )
    flash(request, result.message)
    return RedirectResponse(PAGE, status_code=303)


# ------------------------------------------------------------ password forms


def _port(raw: str, what: str, errors: dict[str, str], key: str) -> int | None:
    value = raw.strip()
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        example = 993 if what == "IMAP" else 587
        errors[key] = (
            f"Enter the {what} port as a number from 1 to 65535, e.g. {example}."
        )
        return None
    return int(value)


def _security(raw: str, errors: dict[str, str], key: str) -> Security | None:
    try:
        return Security(raw)
    except ValueError:
        errors[key] = "Choose TLS, STARTTLS or no encryption."
        return None


def _host(raw: str, what: str, errors: dict[str, str], key: str) -> str | None:
    value = raw.strip()
    if not value:
        errors[key] = f"Enter the {what} server's host name, e.g. mail.example.com."
        return None
    if len(value) > 253 or any(c.isspace() for c in value) or "/" in value:
        errors[key] = (
            f"Enter only the {what} server's host name, e.g. mail.example.com."
        )
        return None
    return value


#: security modes offered in the forms
SECURITY_CHOICES: tuple[tuple[str, str], ...] = (
    (Security.TLS.value, "TLS"),
    (Security.STARTTLS.value, "STARTTLS"),
    (Security.NONE.value, "None (local only)"),
)


@dataclass
class MailForm:
    """The IMAP/SMTP form as typed (never the password)."""

    KIND: ClassVar[IntegrationKind] = IntegrationKind.MAIL
    PRESETS: ClassVar[tuple[MailPreset, ...]] = MAIL_PRESETS
    TEMPLATE: ClassVar[str] = "integration_mail.html"

    preset: str = "icloud"
    email: str = ""
    username: str = ""
    imap_host: str = ""
    imap_port: str = "993"
    imap_security: str = Security.TLS.value
    smtp_host: str = ""
    smtp_port: str = "587"
    smtp_security: str = Security.STARTTLS.value
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> MailForm:
        return cls(
            preset=text(form, "preset"),
            email=text(form, "email").strip(),
            username=text(form, "username").strip(),
            imap_host=text(form, "imap_host").strip(),
            imap_port=text(form, "imap_port").strip(),
            imap_security=text(form, "imap_security"),
            smtp_host=text(form, "smtp_host").strip(),
            smtp_port=text(form, "smtp_port").strip(),
            smtp_security=text(form, "smtp_security"),
        )

    @classmethod
    def from_view(cls, view: IntegrationView) -> MailForm:
        """The form of a stored integration (to enter its password again)."""
        settings: Mapping[str, Any] = view.info.settings
        form = cls(
            preset=str(settings.get("preset") or CUSTOM),
            email=view.info.email or "",
            username=str(settings.get("username") or ""),
        )
        for name in ("imap", "smtp"):
            raw = settings.get(name)
            if form.preset == CUSTOM and isinstance(raw, Mapping):
                setattr(form, f"{name}_host", str(raw.get("host") or ""))
                setattr(form, f"{name}_port", str(raw.get("port") or ""))
                setattr(form, f"{name}_security", str(raw.get("security") or ""))
        return form

    @property
    def chosen(self) -> MailPreset | None:
        return next((p for p in MAIL_PRESETS if p.key == self.preset), None)

    def servers(self) -> tuple[MailServer, MailServer] | None:
        """Check the own-server fields (recording errors); the servers when valid."""
        errors = self.errors
        imap_host = _host(self.imap_host, "IMAP", errors, "imap_host")
        imap_port = _port(self.imap_port, "IMAP", errors, "imap_port")
        imap_security = _security(self.imap_security, errors, "imap_security")
        smtp_host = _host(self.smtp_host, "SMTP", errors, "smtp_host")
        smtp_port = _port(self.smtp_port, "SMTP", errors, "smtp_port")
        smtp_security = _security(self.smtp_security, errors, "smtp_security")
        if (
            imap_host is None
            or imap_port is None
            or imap_security is None
            or smtp_host is None
            or smtp_port is None
            or smtp_security is None
        ):
            return None
        return (
            MailServer(imap_host, imap_port, imap_security),
            MailServer(smtp_host, smtp_port, smtp_security),
        )


@dataclass
class CalendarForm:
    """The CalDAV form as typed (never the password)."""

    KIND: ClassVar[IntegrationKind] = IntegrationKind.CALENDAR
    PRESETS: ClassVar[tuple[CalendarPreset, ...]] = CALENDAR_PRESETS
    TEMPLATE: ClassVar[str] = "integration_caldav.html"

    preset: str = "icloud"
    url: str = ""
    username: str = ""
    email: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> CalendarForm:
        return cls(
            preset=text(form, "preset"),
            url=text(form, "url").strip(),
            username=text(form, "username").strip(),
            email=text(form, "email").strip(),
        )

    @classmethod
    def from_view(cls, view: IntegrationView) -> CalendarForm:
        settings: Mapping[str, Any] = view.info.settings
        preset = str(settings.get("preset") or CUSTOM)
        found = next((p for p in CALENDAR_PRESETS if p.key == preset), None)
        return cls(
            preset=preset,
            url=""
            if found is not None and found.url
            else str(settings.get("url") or ""),
            username=str(settings.get("username") or ""),
            email=view.info.email or "",
        )

    @property
    def chosen(self) -> CalendarPreset | None:
        return next((p for p in CALENDAR_PRESETS if p.key == self.preset), None)


def check_caldav_form(form: CalendarForm, raw: Mapping[str, Any]) -> Secret | None:
    """Check a CalDAV sign-in form, recording what is wrong in ``form.errors``;
    the password when the form is complete (nothing is checked with the server
    here)."""
    errors = form.errors
    preset = form.chosen
    if preset is None and form.preset != CUSTOM:
        errors["preset"] = "Choose your calendar provider, or 'Other CalDAV server'."
    needs_url = preset is None or preset.url is None
    if needs_url and not form.url:
        errors["url"] = "Enter your server's address, e.g. https://cloud.example.com."
    elif len(form.url) > 2000:
        errors["url"] = "This address is too long; check it."
    if not form.username:
        errors["username"] = "Enter the user name you sign in with."
    elif len(form.username) > 320:
        errors["username"] = "The user name is too long; check it."
    if form.email and ("@" not in form.email or len(form.email) > 320):
        errors["email"] = f"{form.email!r} is not an email address; check it."
    password = _password(raw, errors)
    return None if errors else password


def _password(form: Mapping[str, Any], errors: dict[str, str]) -> Secret | None:
    value = text(form, PASSWORD_FIELD)
    if not value:
        errors[PASSWORD_FIELD] = (
            "Enter the password; for iCloud and most big providers that is an "
            "app-specific password."
        )
        return None
    if len(value) > credentials.MAX_PASSWORD_LENGTH:
        errors[PASSWORD_FIELD] = "This password is too long; check what you pasted."
        return None
    return Secret(value)


def _check_failed(
    exc: ConnectionCheckFailed | ValidationFailed, errors: dict[str, str]
) -> None:
    errors[FORM] = f"Nothing was connected. {exc.message}"
    if isinstance(exc, WrongCredentials):
        errors[PASSWORD_FIELD] = (
            "The server refused this user name or password; enter the password "
            "again (for iCloud: an app-specific password)."
        )


async def _reconnecting(
    integrations: IntegrationsDep,
    viewer: Viewer,
    reconnect: uuid.UUID | None,
    kind: IntegrationKind,
) -> IntegrationView | None:
    if reconnect is None:
        return None
    view = await _own(integrations, viewer, reconnect)
    if view.oauth or view.info.kind is not kind:
        raise NotFound("This integration is not connected with this form.")
    return view


def _form_page(
    request: Request,
    viewer: Viewer,
    form: MailForm | CalendarForm,
    *,
    status_code: int = 200,
    reconnecting: bool = False,
) -> Response:
    """The IMAP/SMTP or the CalDAV form page, whichever ``form`` is."""
    context: dict[str, Any] = {
        **_base(request, viewer),
        "form": form,
        "presets": form.PRESETS,
        "custom": CUSTOM,
        "reconnecting": reconnecting,
    }
    if isinstance(form, MailForm):
        context["security_choices"] = SECURITY_CHOICES
    return render(request, form.TEMPLATE, context, status_code=status_code)


_PasswordForm = TypeVar("_PasswordForm", MailForm, CalendarForm)


async def _initial_form(
    form_type: type[_PasswordForm],
    integrations: IntegrationsDep,
    viewer: Viewer,
    reconnect: uuid.UUID | None,
    preset: str | None,
) -> tuple[_PasswordForm, bool]:
    """The form to show first, and whether it reconnects: filled in from the
    stored integration ``reconnect``, else empty with ``preset`` chosen when it
    is one of the form's presets (or the own-server choice)."""
    view = await _reconnecting(integrations, viewer, reconnect, form_type.KIND)
    if view is not None:
        return form_type.from_view(view), True
    form = form_type()
    if preset == CUSTOM or any(p.key == preset for p in form_type.PRESETS):
        form.preset = str(preset)
    return form, False


def _summarise(errors: dict[str, str]) -> None:
    """Add the form-wide message that points to the fields marked below."""
    if errors and FORM not in errors:
        errors[FORM] = (
            "Nothing was connected: please correct the "
            + ("field" if len(errors) == 1 else "fields")
            + " marked below."
        )


@router.get(PAGE + "/imap")
async def mail_form(
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
    reconnect: uuid.UUID | None = None,
    preset: str | None = None,
) -> Response:
    """The IMAP/SMTP form (``reconnect``: filled in from a stored integration)."""
    form, reconnecting = await _initial_form(
        MailForm, integrations, viewer, reconnect, preset
    )
    return _form_page(request, viewer, form, reconnecting=reconnecting)


@router.post(PAGE + "/imap", dependencies=Csrf)
async def connect_mail(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
) -> Response:
    """Sign in to the IMAP and SMTP server; keep the integration if both work."""
    raw = await request.form()
    form = MailForm.from_form(raw)
    errors = form.errors
    preset = form.chosen
    if preset is None and form.preset != CUSTOM:
        errors["preset"] = "Choose your mail provider, or 'Other mail server'."
    if not form.email:
        errors["email"] = "Enter the email address you send mail from."
    elif len(form.email) > 320 or "@" not in form.email:
        errors["email"] = f"{form.email!r} is not an email address; check it."
    if len(form.username) > 320:
        errors["username"] = "The user name is too long; check it."
    servers = form.servers() if form.preset == CUSTOM else None
    password = _password(raw, errors)
    if not errors and password is not None:
        try:
            info = await credentials.connect_imap(
                services,
                viewer.ctx,
                email=form.email,
                password=password,
                username=form.username or None,
                preset=preset.key if preset else None,
                imap_server=servers[0] if servers else None,
                smtp_server=servers[1] if servers else None,
            )
        except (ConnectionCheckFailed, ValidationFailed) as exc:
            _check_failed(exc, errors)
        else:
            name = integration_label(info.provider, info.kind)
            imap = info.settings.get("imap") or {}
            smtp = info.settings.get("smtp") or {}
            flash(
                request,
                f"Connected {name} as {info.email}: crmflow signed in to "
                f"{imap.get('host')} (IMAP) and {smtp.get('host')} (SMTP).",
            )
            return RedirectResponse(PAGE, status_code=303)
    _summarise(errors)
    return _form_page(request, viewer, form, status_code=422)


@router.get(PAGE + "/caldav")
async def calendar_form(
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
    reconnect: uuid.UUID | None = None,
    preset: str | None = None,
) -> Response:
    """The CalDAV form (``reconnect``: filled in from a stored integration)."""
    form, reconnecting = await _initial_form(
        CalendarForm, integrations, viewer, reconnect, preset
    )
    return _form_page(request, viewer, form, reconnecting=reconnecting)


@router.post(PAGE + "/caldav", dependencies=Csrf)
async def connect_calendar(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
) -> Response:
    """Run CalDAV discovery (it signs in); keep the integration if it works."""
    raw = await request.form()
    form = CalendarForm.from_form(raw)
    errors = form.errors
    password = check_caldav_form(form, raw)
    preset = form.chosen
    needs_url = preset is None or preset.url is None
    if not errors and password is not None:
        try:
            connected = await credentials.connect_caldav(
                services,
                viewer.ctx,
                username=form.username,
                password=password,
                preset=preset.key if preset else None,
                url=form.url if needs_url else None,
                email=form.email or None,
            )
        except (ConnectionCheckFailed, ValidationFailed) as exc:
            _check_failed(exc, errors)
        else:
            info = connected.integration
            names = [c.name or c.url for c in connected.calendars]
            found = (
                f"found {len(names)} calendar{'' if len(names) == 1 else 's'}: "
                + ", ".join(names)
                if names
                else "found no calendar that holds events yet"
            )
            flash(
                request,
                f"Connected {integration_label(info.provider, info.kind)} as "
                f"{info.email}; {found}.",
            )
            return RedirectResponse(PAGE, status_code=303)
    _summarise(errors)
    return _form_page(request, viewer, form, status_code=422)
