"""Kinds, scopes and features: what each OAuth integration asks for, and what a
(partial) grant lets crmflow do.

Each OAuth kind (:data:`CATALOGUE`) has *base* scopes (who the account is,
offline access) and *features*; a feature names the scopes it needs, as one or
more alternatives (Gmail's ``gmail.modify`` also allows reading, so "Import
email" works with ``gmail.readonly`` *or* ``gmail.modify``). A connect asks for
the base scopes plus the first alternative of each feature wanted — only the
scopes the enabled features need (issue 5; Google's incremental authorization:
google-apis.md section 1.7).

An *optional* feature (Gmail's "Read and send through IMAP and SMTP", which
needs full mailbox access) is asked for only when named: a connect with no
feature list leaves it out, and its being off is no gap in the grant.

People may grant less than asked: Google's consent page lets them untick
scopes, Microsoft's lets admins and users decline. :func:`analyse` compares the
granted scopes with each feature and returns, per feature, whether it is on and
which permissions are missing, in plain words, so the UI can show "Grant
access" next to it. A narrower grant is never an error.

Scope comparison is case-insensitive on the canonical form the provider
reports (Google: ``email`` is reported as ``.../auth/userinfo.email``; Graph
permission names are case-insensitive).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.errors import ValidationFailed

_G = "https://www.googleapis.com/auth/"
GMAIL_SEND = _G + "gmail.send"
GMAIL_READONLY = _G + "gmail.readonly"
GMAIL_MODIFY = _G + "gmail.modify"
GMAIL_FULL = "https://mail.google.com/"
CALENDAR = _G + "calendar"
CALENDAR_EVENTS = _G + "calendar.events"
CALENDAR_READONLY = _G + "calendar.readonly"
GOOGLE_EMAIL = _G + "userinfo.email"
OPENID = "openid"
OFFLINE_ACCESS = "offline_access"

#: every scope crmflow asks for, in plain words (what the consent page says)
SCOPE_LABELS: dict[str, str] = {
    GMAIL_SEND: "send email on your behalf",
    GMAIL_READONLY: "read your email",
    GMAIL_MODIFY: "read and change your email (labels, read state)",
    GMAIL_FULL: "full access to your mailbox",
    CALENDAR: "see, edit, share and delete all your calendars",
    CALENDAR_EVENTS: "view and edit events on all your calendars",
    CALENDAR_READONLY: "see your calendars and their events",
    GOOGLE_EMAIL: "see your email address",
    OPENID: "sign you in",
    "email": "see your email address",
    OFFLINE_ACCESS: "stay connected when you are not signed in (offline access)",
    "User.Read": "read your profile",
    "Mail.Send": "send email as you",
    "Mail.Read": "read your email",
    "Mail.ReadWrite": "read and change your email",
    "Calendars.ReadWrite": "read and change your calendars",
}

#: the pseudo-feature every kind has: a refresh token
STAY_CONNECTED = "stay_connected"
#: Gmail over IMAP + SMTP with XOAUTH2 (needs full mailbox access)
IMAP_SMTP = "imap_smtp"


@dataclass(frozen=True, slots=True)
class Feature:
    """Something crmflow does with a connected account."""

    #: stable key used by the API (``send_email``)
    key: str
    #: what it does, for a person
    label: str
    #: alternatives: the feature works when every scope of one of them was
    #: granted; the first one is what a connect asks for
    any_of: tuple[frozenset[str], ...]
    #: asked for only when named; off is normal (see the module docstring)
    optional: bool = False

    @property
    def requested(self) -> frozenset[str]:
        """The scopes a connect asks for to turn this feature on."""
        return self.any_of[0]


@dataclass(frozen=True, slots=True)
class KindSpec:
    """One OAuth integration kind of one provider."""

    provider: ProviderKey
    kind: IntegrationKind
    #: how people call it ("Gmail", "Outlook calendar")
    label: str
    #: always requested: who the account is, offline access
    base_scopes: tuple[str, ...]
    features: tuple[Feature, ...]

    def feature(self, key: str) -> Feature:
        """The feature ``key``.

        Raises:
            ValidationFailed: naming the features this kind has.
        """
        for feature in self.features:
            if feature.key == key:
                return feature
        known = ", ".join(f.key for f in self.features)
        raise ValidationFailed(
            f"{self.label} has no feature '{key}'; choose from: {known}."
        )


def _f(
    key: str, label: str, *alternatives: Iterable[str], optional: bool = False
) -> Feature:
    return Feature(key, label, tuple(frozenset(a) for a in alternatives), optional)


_GOOGLE_BASE = (OPENID, GOOGLE_EMAIL)
_MICROSOFT_BASE = (OFFLINE_ACCESS, OPENID, "email", "User.Read")

CATALOGUE: dict[tuple[ProviderKey, IntegrationKind], KindSpec] = {
    (ProviderKey.GOOGLE, IntegrationKind.GMAIL): KindSpec(
        ProviderKey.GOOGLE,
        IntegrationKind.GMAIL,
        "Gmail",
        _GOOGLE_BASE,
        (
            _f("send_email", "Send email from the CRM", [GMAIL_SEND]),
            _f(
                "read_email",
                "Import the email you send and receive",
                [GMAIL_READONLY],
                [GMAIL_MODIFY],
                [GMAIL_FULL],
            ),
            _f(
                "organize_email",
                "Mark email as read and label it",
                [GMAIL_MODIFY],
                [GMAIL_FULL],
            ),
            _f(
                IMAP_SMTP,
                "Read and send through IMAP and SMTP instead of the Gmail API",
                [GMAIL_FULL],
                optional=True,
            ),
        ),
    ),
    (ProviderKey.GOOGLE, IntegrationKind.CALENDAR): KindSpec(
        ProviderKey.GOOGLE,
        IntegrationKind.CALENDAR,
        "Google Calendar",
        _GOOGLE_BASE,
        (
            _f(
                "read_calendar",
                "Show your calendars and events",
                [CALENDAR_READONLY],
                [CALENDAR],
            ),
            _f(
                "sync_events",
                "Create, change and delete events (two-way sync)",
                [CALENDAR_EVENTS],
                [CALENDAR],
            ),
            _f(
                "manage_calendars",
                "Create the CRM calendar and change calendar settings",
                [CALENDAR],
            ),
        ),
    ),
    (ProviderKey.MICROSOFT, IntegrationKind.MAIL): KindSpec(
        ProviderKey.MICROSOFT,
        IntegrationKind.MAIL,
        "Outlook mail",
        _MICROSOFT_BASE,
        (
            _f("send_email", "Send email from the CRM", ["Mail.Send"]),
            _f(
                "read_email",
                "Import the email you send and receive",
                ["Mail.Read"],
                ["Mail.ReadWrite"],
            ),
            _f(
                "organize_email",
                "Mark email as read (and save sent mail as drafts first)",
                ["Mail.ReadWrite"],
            ),
        ),
    ),
    (ProviderKey.MICROSOFT, IntegrationKind.CALENDAR): KindSpec(
        ProviderKey.MICROSOFT,
        IntegrationKind.CALENDAR,
        "Outlook calendar",
        _MICROSOFT_BASE,
        (
            _f(
                "read_calendar",
                "Show your calendars and events",
                ["Calendars.ReadWrite"],
            ),
            _f(
                "sync_events",
                "Create, change and delete events (two-way sync)",
                ["Calendars.ReadWrite"],
            ),
        ),
    ),
}

OAUTH_PROVIDERS = (ProviderKey.GOOGLE, ProviderKey.MICROSOFT)


def is_oauth(provider: ProviderKey) -> bool:
    """Whether ``provider`` connects through OAuth (Google, Microsoft)."""
    return provider in OAUTH_PROVIDERS


def spec_of(provider: ProviderKey, kind: IntegrationKind) -> KindSpec:
    """The catalogue entry of ``(provider, kind)``.

    Raises:
        ValidationFailed: not an OAuth kind (``google``/``mail``, ``imap`` ...),
            naming the valid combinations.
    """
    found = CATALOGUE.get((provider, kind))
    if found is None:
        valid = ", ".join(f"{p.value} {k.value}" for p, k in CATALOGUE)
        raise ValidationFailed(
            f"There is no {provider.value} '{kind.value}' OAuth connection; "
            f"choose one of: {valid}."
        )
    return found


def oauth_providers_for(kind: IntegrationKind) -> tuple[ProviderKey, ...]:
    """The OAuth providers that offer ``kind`` (``calendar``: Google and Microsoft)."""
    return tuple(p for p, k in CATALOGUE if k == kind)


def label(scope: str) -> str:
    """A scope in plain words (the scope itself when unknown)."""
    folded = scope.casefold()
    for known, text in SCOPE_LABELS.items():
        if known.casefold() == folded:
            return text
    return scope


def _fold(scopes: Iterable[str]) -> set[str]:
    return {s.casefold() for s in scopes}


def requested_scopes(
    spec: KindSpec, features: Sequence[str] | None = None, *, keep: Iterable[str] = ()
) -> tuple[str, ...]:
    """The scopes a connect asks for: base scopes, the wanted features' first
    alternatives (every feature but the optional ones when ``features`` is
    None), and ``keep``.

    ``keep`` carries scopes granted before, for providers whose new token holds
    only what was asked for (Microsoft); Google keeps them through
    ``include_granted_scopes``.

    Raises:
        ValidationFailed: an unknown feature key.
    """
    wanted = (
        tuple(f for f in spec.features if not f.optional)
        if features is None
        else tuple(spec.feature(k) for k in features if k != STAY_CONNECTED)
    )
    ordered: list[str] = list(spec.base_scopes)
    for feature in wanted:
        ordered += sorted(feature.requested)
    ordered += list(keep)
    out: dict[str, str] = {}
    for scope in ordered:
        out.setdefault(scope.casefold(), scope)
    return tuple(out.values())


@dataclass(frozen=True, slots=True)
class FeatureState:
    """One feature of a connected integration."""

    key: str
    label: str
    enabled: bool
    #: scopes to grant to turn it on (the first alternative's missing ones)
    missing_scopes: tuple[str, ...]
    #: the same, in plain words
    missing: tuple[str, ...]
    #: why it is off and what to do; None when on
    message: str | None
    #: asked for only when wanted; off is no gap in the grant
    optional: bool = False


@dataclass(frozen=True, slots=True)
class ConsentReport:
    """What a grant allows, feature by feature."""

    features: tuple[FeatureState, ...]
    #: requested scopes that were not granted (empty: nothing declined)
    not_granted: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Whether every feature (but the optional ones) is on."""
        return not self.disabled

    @property
    def disabled(self) -> tuple[FeatureState, ...]:
        """The features that are off (optional ones are not counted)."""
        return tuple(f for f in self.features if not f.enabled and not f.optional)

    def summary(self) -> str | None:
        """One sentence for a person about what is off, or None when all is on."""
        off = self.disabled
        if not off:
            return None
        missing = sorted({m for f in off for m in f.missing})
        return (
            "Connected, but some features are off because access was not granted: "
            + "; ".join(f.label for f in off)
            + ". Missing: "
            + ", ".join(missing)
            + ". Use 'Grant access' to turn them on."
        )


def analyse(
    spec: KindSpec,
    granted: Iterable[str],
    *,
    has_refresh_token: bool,
    requested: Iterable[str] = (),
) -> ConsentReport:
    """Compare a grant with the kind's features (partial consent, issue 5).

    Args:
        spec: the integration's kind.
        granted: the granted scopes (canonical form).
        has_refresh_token: whether crmflow holds a refresh token (Microsoft does
            not list ``offline_access`` among granted scopes; Google grants
            offline access through ``access_type``, not a scope).
        requested: what the connect asked for, to report what was declined.
    """
    have = _fold(granted)
    states: list[FeatureState] = []
    for feature in spec.features:
        if any(_fold(alt) <= have for alt in feature.any_of):
            states.append(
                FeatureState(
                    feature.key, feature.label, True, (), (), None, feature.optional
                )
            )
            continue
        missing = tuple(
            sorted(s for s in feature.requested if s.casefold() not in have)
        )
        words = tuple(label(s) for s in missing)
        states.append(
            FeatureState(
                feature.key,
                feature.label,
                False,
                missing,
                words,
                ("Optional, off" if feature.optional else "Off")
                + f": '{feature.label}' needs permission to "
                + " and ".join(words)
                + ". Use 'Grant access' to allow it.",
                feature.optional,
            )
        )
    if has_refresh_token:
        states.append(
            FeatureState(
                STAY_CONNECTED,
                "Keep working while you are signed out",
                True,
                (),
                (),
                None,
            )
        )
    else:
        missing = (OFFLINE_ACCESS,) if spec.provider is ProviderKey.MICROSOFT else ()
        states.append(
            FeatureState(
                STAY_CONNECTED,
                "Keep working while you are signed out",
                False,
                missing,
                (label(OFFLINE_ACCESS),),
                f"Off: {spec.label} gave crmflow no refresh token, so the connection "
                "stops working within about an hour. Use 'Grant access' to "
                "reconnect with offline access.",
            )
        )
    declined = tuple(
        s
        for s in requested
        if s.casefold() not in have
        and not (s.casefold() == OFFLINE_ACCESS and has_refresh_token)
    )
    return ConsentReport(tuple(states), declined)
