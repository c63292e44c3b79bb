"""Credential connections: IMAP/SMTP mail and CalDAV calendars with a password.

Public surface:

* :func:`connect_imap`: sign in to the IMAP *and* the SMTP server, then store
  the integration (provider ``apple`` for the iCloud preset, ``imap``
  otherwise; kind ``mail``).
* :func:`connect_caldav`: run CalDAV discovery (which signs in), then store
  the integration (``apple`` for the iCloud preset, ``caldav`` otherwise;
  kind ``calendar``) and return the calendars found.
* :func:`list_presets`: the mail and calendar presets.
* :func:`verify_stored`: sign in again with the stored password; a refused
  password marks the integration ``needs_reauth``.

Rules: the password is stored only after a real sign-in accepted it
(``IntegrationStore.save_credentials``, which seals it with the vault); the
network calls happen outside any database transaction (a slow server never
holds a row lock or SQLite's write lock); ``settings`` hold only non-secret
parameters (hosts, ports, security mode, URLs, calendar list). A user has one
integration per (provider, kind): connecting again replaces it in place.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crmflow.domain.emails import normalize_email
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import NotFound, ValidationFailed
from crmflow.providers import caldav, imap
from crmflow.providers.base import ConnectionCheckFailed, WrongCredentials
from crmflow.store.integrations import (
    IntegrationInfo,
    IntegrationStatus,
    IntegrationStore,
)

if TYPE_CHECKING:
    from crmflow.bootstrap import Services

_log = logging.getLogger(__name__)

#: longest accepted password, in characters (app passwords are 16-32)
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Presets:
    """Everything a user can pick from instead of typing servers."""

    #: IMAP/SMTP providers (iCloud, Gmail, Outlook.com, Fastmail, Yahoo)
    mail: tuple[imap.MailPreset, ...]
    #: CalDAV providers (iCloud, Fastmail, Nextcloud)
    calendar: tuple[caldav.CalendarPreset, ...]


@dataclass(frozen=True, slots=True)
class CalDAVConnection:
    """A stored CalDAV integration and what discovery found."""

    #: the stored integration (no secret in it)
    integration: IntegrationInfo
    #: the event calendars found, with their ctag / sync-token where offered
    calendars: tuple[caldav.DiscoveredCalendar, ...]


def list_presets() -> Presets:
    """The mail (IMAP/SMTP) and calendar (CalDAV) presets."""
    return Presets(mail=imap.MAIL_PRESETS, calendar=caldav.CALENDAR_PRESETS)


def _check_password(password: Secret) -> None:
    value = password.reveal()
    if not value:
        raise ValidationFailed("Enter the password (or app-specific password).")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"The password is longer than {MAX_PASSWORD_LENGTH} characters; check it."
        )


def _username(username: str | None, fallback: str) -> str:
    value = (username or "").strip() or fallback
    if len(value) > 320 or any(not ch.isprintable() for ch in value):
        raise ValidationFailed("The user name is too long or holds invalid characters.")
    return value


def _server_settings(server: imap.MailServer) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "security": server.security.value}


def _server_from(settings: Mapping[str, Any], key: str) -> imap.MailServer:
    raw = settings.get(key)
    if not isinstance(raw, Mapping):
        raise ValidationFailed(
            f"This integration has no stored {key.upper()} server; connect it again."
        )
    return imap.MailServer(
        str(raw["host"]), int(raw["port"]), imap.Security(raw["security"])
    )


def _mail_servers(
    preset: str | None,
    imap_server: imap.MailServer | None,
    smtp_server: imap.MailServer | None,
) -> tuple[imap.MailPreset | None, imap.MailServer, imap.MailServer]:
    if preset is not None:
        found = imap.mail_preset(preset)
        if found is None:
            keys = ", ".join(p.key for p in imap.MAIL_PRESETS)
            raise ValidationFailed(
                f"Unknown mail preset {preset!r}; choose one of {keys}."
            )
        if imap_server is not None or smtp_server is not None:
            raise ValidationFailed(
                "Choose a preset or enter the IMAP and SMTP servers, not both."
            )
        return found, found.imap, found.smtp
    if imap_server is None or smtp_server is None:
        raise ValidationFailed(
            "Choose a preset, or enter both the IMAP and the SMTP server."
        )
    return None, imap_server, smtp_server


async def _verify_mail(
    services: Services,
    imap_server: imap.MailServer,
    smtp_server: imap.MailServer,
    username: str,
    password: Secret,
    timeout_s: float,
) -> imap.ImapLogin:
    # both before any sign-in: no IMAP login for a form the SMTP part fails
    imap.check_transport(imap_server, "IMAP")
    imap.check_transport(smtp_server, "SMTP")
    ca_file = services.settings.extra_ca_file
    login = await imap.verify_imap(
        imap_server, username, password, extra_ca_file=ca_file, timeout_s=timeout_s
    )
    await imap.verify_smtp(
        smtp_server, username, password, extra_ca_file=ca_file, timeout_s=timeout_s
    )
    return login


async def connect_imap(
    services: Services,
    ctx: TenantContext,
    *,
    email: str,
    password: Secret,
    username: str | None = None,
    preset: str | None = None,
    imap_server: imap.MailServer | None = None,
    smtp_server: imap.MailServer | None = None,
    timeout_s: float = imap.DEFAULT_TIMEOUT_S,
) -> IntegrationInfo:
    """Verify IMAP and SMTP sign-in, then store the mail integration.

    Args:
        email: the address mail is sent from.
        password: the (app-specific) password; used for IMAP and SMTP.
        username: the sign-in name; defaults to ``email``.
        preset: a :data:`~crmflow.providers.imap.MAIL_PRESETS` key, or None
            with both ``imap_server`` and ``smtp_server``.

    Returns:
        The stored integration (no secret in it).

    Raises:
        ValidationFailed: bad input (unknown preset, preset and servers both
            given, unencrypted connection to a remote host, ...).
        ConnectionCheckFailed: the IMAP or SMTP sign-in failed; the subclass
            (``WrongCredentials``, ``TlsFailure``, ``HostUnreachable``,
            ``NotAServer``) says why, the message names the server. Nothing
            is stored then.
    """
    address = normalize_email(email)
    login_name = _username(username, address)
    _check_password(password)
    found, imap_server, smtp_server = _mail_servers(preset, imap_server, smtp_server)
    login = await _verify_mail(
        services, imap_server, smtp_server, login_name, password, timeout_s
    )
    provider = found.provider if found else ProviderKey.IMAP
    settings = {
        "preset": found.key if found else None,
        "imap": _server_settings(imap_server),
        "smtp": _server_settings(smtp_server),
        "imap_capabilities": sorted(login.capabilities),
    }
    async with services.db.tenant(ctx) as session:
        store = IntegrationStore(session, services.vault)
        integration_id = await store.save_credentials(
            provider,
            IntegrationKind.MAIL,
            email=address,
            username=login_name,
            password=password,
            settings=settings,
        )
        info = await store.get(integration_id)
    _log.info("mail integration %s connected (%s)", integration_id, provider.value)
    return info


def _calendar_settings(account: caldav.CalDAVAccount) -> list[dict[str, Any]]:
    return [
        {
            "url": c.url,
            "name": c.name,
            "components": list(c.components),
            "color": c.color,
        }
        for c in account.calendars
    ]


async def connect_caldav(
    services: Services,
    ctx: TenantContext,
    *,
    username: str,
    password: Secret,
    preset: str | None = None,
    url: str | None = None,
    email: str | None = None,
    timeout_s: float = caldav.DEFAULT_TIMEOUT_S,
) -> CalDAVConnection:
    """Discover the CalDAV account (signing in), then store the integration.

    Args:
        username: the sign-in name.
        password: the (app-specific) password.
        preset: a :data:`~crmflow.providers.caldav.CALENDAR_PRESETS` key;
            Nextcloud also needs ``url`` (the server's address).
        url: the server address, when there is no preset with a fixed one.
        email: the account's address; defaults to what the server reports
            (RFC 6638), else ``username``.

    Returns:
        The stored integration and the event calendars found.

    Raises:
        ValidationFailed: bad input (unknown preset, no or malformed address,
            ``http://`` to a remote host).
        ConnectionCheckFailed: discovery failed; ``WrongCredentials``,
            ``TlsFailure``, ``HostUnreachable`` or ``NotAServer`` says why.
            Nothing is stored then.
    """
    found: caldav.CalendarPreset | None = None
    if preset is not None:
        found = caldav.calendar_preset(preset)
        if found is None:
            keys = ", ".join(p.key for p in caldav.CALENDAR_PRESETS)
            raise ValidationFailed(
                f"Unknown calendar preset {preset!r}; choose one of {keys}."
            )
    start = caldav.start_url(found, url)
    login_name = _username(username, "")
    if not login_name:
        raise ValidationFailed("Enter the user name.")
    _check_password(password)
    account = await caldav.discover(
        start,
        login_name,
        password,
        extra_ca_file=services.settings.extra_ca_file,
        timeout_s=timeout_s,
    )
    address = (email or "").strip() or account.email or login_name
    if "@" in address:
        address = normalize_email(address)
    provider = found.provider if found else ProviderKey.CALDAV
    settings = {
        "preset": found.key if found else None,
        "url": start,
        "principal_url": account.principal_url,
        "calendar_home_urls": list(account.home_set_urls),
        "calendars": _calendar_settings(account),
    }
    async with services.db.tenant(ctx) as session:
        store = IntegrationStore(session, services.vault)
        integration_id = await store.save_credentials(
            provider,
            IntegrationKind.CALENDAR,
            email=address,
            username=login_name,
            password=password,
            settings=settings,
        )
        info = await store.get(integration_id)
    _log.info(
        "calendar integration %s connected (%s, %d calendars)",
        integration_id,
        provider.value,
        len(account.calendars),
    )
    return CalDAVConnection(integration=info, calendars=account.calendars)


async def _sign_in_again(
    services: Services, info: IntegrationInfo, password: Secret, timeout_s: float
) -> dict[str, Any]:
    """Sign in with stored settings; returns the settings to keep."""
    settings = dict(info.settings)
    username = str(settings.get("username") or info.account_id or "")
    if info.kind is IntegrationKind.MAIL:
        login = await _verify_mail(
            services,
            _server_from(settings, "imap"),
            _server_from(settings, "smtp"),
            username,
            password,
            timeout_s,
        )
        settings["imap_capabilities"] = sorted(login.capabilities)
        return settings
    if info.kind is IntegrationKind.CALENDAR:
        start = str(settings.get("url") or "")
        account = await caldav.discover(
            start,
            username,
            password,
            extra_ca_file=services.settings.extra_ca_file,
            timeout_s=timeout_s,
        )
        settings["principal_url"] = account.principal_url
        settings["calendar_home_urls"] = list(account.home_set_urls)
        settings["calendars"] = _calendar_settings(account)
        return settings
    raise NotFound("This integration does not sign in with a password.")


async def verify_stored(
    services: Services,
    ctx: TenantContext,
    integration_id: uuid.UUID,
    *,
    timeout_s: float = imap.DEFAULT_TIMEOUT_S,
) -> IntegrationInfo:
    """Sign in again with the stored password of the acting user's integration.

    A refused password marks the integration ``needs_reauth`` (the user must
    enter a new one); any other failure records an error and leaves the status
    alone (the server may be back later). A success on an integration that was
    not ``connected`` stores it as ``connected`` again (a ``reconnected``
    event).

    Returns:
        The integration after the check.

    Raises:
        NotFound: unknown id, another user's integration (same message: ids of
            others cannot be probed), or not a password integration.
        ConnectionCheckFailed: the sign-in failed (after recording it).
    """
    async with services.db.tenant(ctx) as session:
        store = IntegrationStore(session, services.vault)
        info = await store.get(integration_id)
        if not info.has_password:
            raise NotFound("This integration does not sign in with a password.")
        password = await store.load_password(integration_id)
    try:
        settings = await _sign_in_again(services, info, password, timeout_s)
    except WrongCredentials as exc:
        async with services.db.tenant(ctx) as session:
            store = IntegrationStore(session, services.vault)
            await store.mark_needs_reauth(integration_id, exc.message)
        _log.info("integration %s needs a new password", integration_id)
        raise
    except ConnectionCheckFailed as exc:
        async with services.db.tenant(ctx) as session:
            await IntegrationStore(session, services.vault).mark_error(
                integration_id, exc.message
            )
        _log.info("integration %s check failed: %s", integration_id, type(exc).__name__)
        raise
    async with services.db.tenant(ctx) as session:
        store = IntegrationStore(session, services.vault)
        if info.status is not IntegrationStatus.CONNECTED:
            await store.save_credentials(
                info.provider,
                info.kind,
                email=info.email or str(settings.get("username") or ""),
                username=str(settings.pop("username", None) or info.account_id or ""),
                password=password,
                settings=settings,
            )
        return await store.get(integration_id)
