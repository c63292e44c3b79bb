"""The connections service: the Python API the web layer and jobs use.

:class:`Integrations` mirrors the original design notes:

* :meth:`~Integrations.list_integrations` / :meth:`~Integrations.get_integration`
  — the acting user's integrations, each with its features (on, or off with the
  missing permissions in plain words: partial consent) and whether it needs
  the user to reconnect;
* :meth:`~Integrations.refresh_if_needed` — a usable access token
  (:mod:`.refresh`: single flight, 2 minutes ahead of expiry);
* :meth:`~Integrations.start_connect` / :meth:`~Integrations.complete_connect`
  (:mod:`.oauth`); :meth:`~Integrations.disconnect`; :meth:`~Integrations.events`
  (the audit trail); OAuth client registrations (:mod:`.clients`).

Every call acts as a :class:`~crmflow.domain.tenancy.TenantContext` and sees
only that user's integrations in that organization (``super_admin`` included):
another user's integration is "not found", never refreshed or disconnected.

``kind`` alone can name two integrations (Google and Microsoft calendars); the
calls take an optional provider and raise :class:`AmbiguousIntegration` (409)
when it is needed and missing.

Disconnecting (:meth:`Integrations.disconnect`):

1. revokes the grant at the provider: Google's ``/revoke`` with the refresh
   token. Google revokes the whole grant of crmflow's client for that Google
   account — Gmail and Calendar together — so while another of the user's
   Google integrations uses the same Google account, the revocation is left to
   the last one's disconnect (the other one would otherwise break). Microsoft
   has no endpoint that revokes one app's delegated grant: crmflow deletes its
   tokens, the last access token expires by itself within about 90 minutes,
   and the user can remove crmflow's permission in their Microsoft account
   (the event detail says where). A provider that cannot be reached does not
   stop the disconnect; the detail says so.
2. deletes the integration row and with it every secret (access and refresh
   token), in one transaction holding the refresh lock;
3. keeps dependent mail and calendar accounts, detached and marked
   disconnected (:mod:`crmflow.store.linked_accounts`): the mail and
   appointments they brought into the CRM stay; nothing syncs from them;
4. leaves a ``disconnected`` event naming what happened (the audit trail
   outlives the row).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from crmflow.config import Settings
from crmflow.connections import clients, mail_protocol, oauth
from crmflow.connections._adapters import oauth_adapter
from crmflow.connections._deps import Clock, Deps, Sleep, utcnow
from crmflow.connections.clients import ClientStatus
from crmflow.connections.errors import AmbiguousIntegration, ProviderNotConfigured
from crmflow.connections.oauth import ConnectResult, ConnectStart
from crmflow.connections.refresh import TokenRefresher
from crmflow.connections.scopes import (
    CATALOGUE,
    FeatureState,
    is_oauth,
    oauth_providers_for,
    spec_of,
)
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import NotFound
from crmflow.providers._retry import RetryPolicy, RetryTransport
from crmflow.providers.base import (
    ProviderError,
    RateLimited,
    RevokeOutcome,
    TransientProviderError,
)
from crmflow.store.crypto import Vault
from crmflow.store.db import Database
from crmflow.store.integrations import (
    IntegrationEventInfo,
    IntegrationInfo,
    IntegrationStatus,
    IntegrationStore,
    IntegrationTokens,
)
from crmflow.store.linked_accounts import DetachedAccounts, detach_accounts

#: where a person removes crmflow's access by hand
MANAGE_ACCESS_URL = {
    ProviderKey.GOOGLE: "https://myaccount.google.com/permissions",
    ProviderKey.MICROSOFT: "https://myapplications.microsoft.com (work or school "
    "accounts) or https://account.live.com/consent/Manage (personal accounts)",
}

_LABELS = {
    ProviderKey.IMAP: "IMAP/SMTP mail",
    ProviderKey.CALDAV: "CalDAV calendar",
    ProviderKey.APPLE: "iCloud",
}


@dataclass(frozen=True, slots=True)
class IntegrationView:
    """An integration as its user sees it: status, features, no secret."""

    info: IntegrationInfo
    #: "Gmail", "Outlook calendar", ...
    label: str
    #: whether it connects through OAuth (tokens, scopes, features)
    oauth: bool
    #: OAuth integrations: every feature, on or off with what is missing
    features: tuple[FeatureState, ...]
    #: the user must reconnect (status ``needs_reauth``): show "Reconnect"
    reconnect_required: bool
    #: what the user should know about the status, or None when all is well
    message: str | None


@dataclass(frozen=True, slots=True)
class DisconnectResult:
    """What a disconnect did."""

    provider: ProviderKey
    kind: IntegrationKind
    email: str | None
    #: ``revoked`` / ``already_invalid`` / ``unsupported`` (Microsoft), or
    #: ``kept`` (another integration shares the Google grant), ``failed``
    #: (the provider could not be reached), ``not_applicable`` (no OAuth)
    revocation: Literal[
        "revoked", "already_invalid", "unsupported", "kept", "failed", "not_applicable"
    ]
    detached: DetachedAccounts
    #: what happened, for a person (also the ``disconnected`` event's detail)
    message: str


def view_of(info: IntegrationInfo) -> IntegrationView:
    """The user's view of a stored integration (features for OAuth kinds)."""
    spec = CATALOGUE.get((info.provider, info.kind))
    label = spec.label if spec else _LABELS.get(info.provider, info.provider.value)
    features: tuple[FeatureState, ...] = ()
    if spec is not None:
        features = oauth.report_for(spec, info).features
    reconnect = info.status is IntegrationStatus.NEEDS_REAUTH
    message: str | None = None
    if reconnect:
        message = f"{label} needs you to reconnect" + (
            f": {info.last_error}" if info.last_error else "."
        )
    elif info.last_error:
        message = f"The last attempt to use {label} failed: {info.last_error}"
    return IntegrationView(
        info=info,
        label=label,
        oauth=spec is not None,
        features=features,
        reconnect_required=reconnect,
        message=message,
    )


#: Microsoft Graph's limit of concurrent requests per mailbox and app
GRAPH_REQUESTS_PER_MAILBOX = 4


class Integrations:
    """The connections service of one process (hold one per process: it owns
    the in-process single-flight state of token refreshes)."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        sleep: Sleep | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """
        Args:
            clock: the current instant (tests pass the sandbox's clock).
            sleep: the back-off pause (tests pass one that returns at once).
            transport: an ``httpx.AsyncBaseTransport`` for provider calls.
        """
        self.deps = Deps(
            db=db,
            vault=vault,
            settings=settings,
            clock=clock,
            sleep=sleep or asyncio.sleep,
            transport=transport,
        )
        self._refresher = TokenRefresher(self.deps)
        #: what provider API calls go through: the deployment's retry policy
        #: (Retry-After, back-off, attempts; Graph: 4 requests per mailbox)
        self.api_transport = RetryTransport(
            transport,
            RetryPolicy(
                max_attempts=settings.http_max_attempts,
                max_delay_s=settings.http_max_delay_s,
                per_user_limits={
                    str(settings.microsoft_graph_url).rstrip("/") + "/": (
                        GRAPH_REQUESTS_PER_MAILBOX
                    )
                },
            ),
            sleep=self.deps.sleep,
        )

    # ------------------------------------------------------------------ reading

    async def _all(self, ctx: TenantContext) -> list[IntegrationInfo]:
        async with self.deps.db.tenant(ctx) as session:
            return await IntegrationStore(session, self.deps.vault).all()

    async def _resolve(
        self,
        ctx: TenantContext,
        kind: IntegrationKind,
        provider: ProviderKey | None,
    ) -> IntegrationInfo:
        mine = [i for i in await self._all(ctx) if i.kind is kind]
        if provider is not None:
            found = next((i for i in mine if i.provider is provider), None)
            if found is None:
                raise NotFound(
                    f"You have no {provider.value} {kind.value} integration connected."
                )
            return found
        if not mine:
            raise NotFound(f"You have no {kind.value} integration connected.")
        if len(mine) > 1:
            names = " and ".join(sorted(i.provider.value for i in mine))
            raise AmbiguousIntegration(
                f"You have more than one {kind.value} integration ({names}); say "
                f"which one with provider="
                + "|".join(sorted(i.provider.value for i in mine))
                + "."
            )
        return mine[0]

    async def list_integrations(self, ctx: TenantContext) -> list[IntegrationView]:
        """The acting user's integrations, by provider and kind."""
        return [view_of(i) for i in await self._all(ctx)]

    async def get_integration(
        self,
        ctx: TenantContext,
        kind: IntegrationKind,
        provider: ProviderKey | None = None,
    ) -> IntegrationView:
        """One integration of the acting user.

        Raises:
            NotFound: none of that kind (and provider).
            AmbiguousIntegration: several of that kind and no provider given.
        """
        return view_of(await self._resolve(ctx, kind, provider))

    async def events(
        self, ctx: TenantContext, *, limit: int = 50
    ) -> list[IntegrationEventInfo]:
        """The acting user's integration events, newest first (the audit trail)."""
        async with self.deps.db.tenant(ctx) as session:
            return await IntegrationStore(session, self.deps.vault).events(limit=limit)

    # ---------------------------------------------------------------- refreshing

    async def refresh_if_needed(
        self,
        ctx: TenantContext,
        kind: IntegrationKind,
        provider: ProviderKey | None = None,
        *,
        force: bool = False,
    ) -> Secret:
        """A usable access token for the acting user's integration of ``kind``.

        Refreshes first when the token expires within ``token_refresh_margin_s``
        (or ``force``); concurrent callers share one refresh.

        Raises:
            NotFound, AmbiguousIntegration: see :meth:`get_integration`.
            ValidationFailed: the integration does not use OAuth.
            AuthError: the user must reconnect (status ``needs_reauth``).
            TransientProviderError, RateLimited: try again later.
            ProviderError: the provider refused for another reason.
        """
        info = await self._resolve(ctx, kind, provider)
        spec_of(info.provider, info.kind)  # OAuth integrations only
        return await self._refresher.access_token(
            ctx, info.provider, info.kind, force=force
        )

    def token_source(
        self,
        ctx: TenantContext,
        kind: IntegrationKind,
        provider: ProviderKey,
        *,
        loaded: IntegrationTokens | None = None,
    ) -> Callable[[], Awaitable[Secret]]:
        """What provider adapters call for a token before each request, so a
        long sync outlives a token: refreshed as :meth:`refresh_if_needed`
        does. One source keeps a fresh token in memory until it comes within
        ``token_refresh_margin_s`` of its end, so the requests of one run do
        not read the database each (sources are made per run or call).

        ``loaded``: the integration's tokens as the caller just read them (in
        a transaction of its own): the first request uses that access token
        when it is fresh, without reading it again (and the later ones while
        it stays fresh, when its lifetime is known).

        Raises (when called): as :meth:`refresh_if_needed`. With ``loaded``,
        ``ValidationFailed`` at once for an integration without OAuth.
        """
        kept: tuple[Secret, dt.datetime] | None = None
        first: Secret | None = None
        if loaded is not None and (loaded.provider, loaded.kind) == (provider, kind):
            spec_of(provider, kind)  # OAuth integrations only
            usable = self._refresher.usable(loaded)
            if usable is not None:
                secret, until = usable
                if until is None:
                    first = secret
                else:
                    kept = (secret, until)

        async def token() -> Secret:
            nonlocal kept, first
            if first is not None:
                secret, first = first, None
                return secret
            if kept is not None and self.deps.clock() < kept[1]:
                return kept[0]
            spec_of(provider, kind)  # OAuth integrations only
            secret, fresh_until = await self._refresher.access_token_until(
                ctx, provider, kind
            )
            kept = None if fresh_until is None else (secret, fresh_until)
            return secret

        return token

    # ------------------------------------------------------------ mail protocol

    async def set_mail_protocol(
        self, ctx: TenantContext, integration_id: uuid.UUID, protocol: str
    ) -> IntegrationView:
        """Read and send a Gmail connection's mail through the Gmail API
        (``api``) or through IMAP + SMTP with XOAUTH2 (``imap``); see
        :mod:`.mail_protocol`.

        Raises:
            NotFound: no such integration of the acting user.
            ValidationFailed, AuthError, ConnectionCheckFailed: see
                :func:`.mail_protocol.set_mail_protocol`.
        """
        async with self.deps.db.tenant(ctx) as session:
            info = await IntegrationStore(session, self.deps.vault).get(integration_id)
        stored = await mail_protocol.set_mail_protocol(
            self.deps,
            ctx,
            info,
            protocol,
            self.token_source(ctx, info.kind, info.provider),
        )
        return view_of(stored)

    # ---------------------------------------------------------------- connecting

    async def start_connect(
        self,
        ctx: TenantContext,
        kind: IntegrationKind,
        provider: ProviderKey | None = None,
        *,
        features: list[str] | None = None,
        redirect_uri: str | None = None,
        login_hint: str | None = None,
    ) -> ConnectStart:
        """Start an OAuth connect (see :func:`crmflow.connections.oauth.start_connect`).

        ``provider`` may be left out when only one OAuth provider offers
        ``kind`` (``gmail``: Google; ``mail``: Microsoft).

        Raises:
            AmbiguousIntegration: ``calendar`` without a provider.
        """
        if provider is None:
            candidates = oauth_providers_for(kind)
            if len(candidates) != 1:
                names = "|".join(p.value for p in candidates)
                raise AmbiguousIntegration(
                    f"Both {' and '.join(p.value for p in candidates)} offer "
                    f"'{kind.value}'; say which one with provider={names}."
                )
            provider = candidates[0]
        return await oauth.start_connect(
            self.deps,
            ctx,
            provider,
            kind,
            features=features,
            redirect_uri=redirect_uri,
            login_hint=login_hint,
        )

    async def complete_connect(
        self,
        ctx: TenantContext,
        provider: ProviderKey,
        *,
        state: str,
        code: str | None,
        error: str | None = None,
    ) -> ConnectResult:
        """Finish an OAuth connect (see :func:`crmflow.connections.oauth.complete_connect`)."""
        return await oauth.complete_connect(
            self.deps, ctx, provider, state=state, code=code, error=error
        )

    # -------------------------------------------------------------- disconnecting

    async def disconnect(
        self,
        ctx: TenantContext,
        kind: IntegrationKind,
        provider: ProviderKey | None = None,
    ) -> DisconnectResult:
        """Revoke at the provider, delete the secrets, detach dependent accounts,
        keep an audit entry (see the module docstring).

        Raises:
            NotFound, AmbiguousIntegration: see :meth:`get_integration`.
        """
        info = await self._resolve(ctx, kind, provider)
        revocation, note = await self._revoke(ctx, info)
        async with self.deps.db.tenant(ctx, write_lock=True) as session:
            store = IntegrationStore(session, self.deps.vault)
            # lock the row: a refresh in flight finishes before the delete
            await store.load(info.provider, info.kind, for_update=True)
            detached = await detach_accounts(session, info.id)
            parts = [f"Disconnected {view_of(info).label}"]
            if info.email:
                parts[0] += f" ({info.email})"
            parts[0] += "; crmflow deleted its tokens."
            if note:
                parts.append(note)
            if detached.email_accounts or detached.calendar_accounts:
                parts.append(
                    f"{detached.email_accounts} mail and {detached.calendar_accounts} "
                    "calendar account(s) were kept, detached: their mail and "
                    "appointments stay in the CRM, nothing syncs from them."
                )
            message = " ".join(parts)
            await store.delete(info.id, message)
        return DisconnectResult(
            provider=info.provider,
            kind=info.kind,
            email=info.email,
            revocation=revocation,
            detached=detached,
            message=message,
        )

    async def _revoke(
        self, ctx: TenantContext, info: IntegrationInfo
    ) -> tuple[
        Literal[
            "revoked",
            "already_invalid",
            "unsupported",
            "kept",
            "failed",
            "not_applicable",
        ],
        str | None,
    ]:
        if not is_oauth(info.provider):
            return "not_applicable", None
        where = MANAGE_ACCESS_URL[info.provider]
        if info.provider is ProviderKey.GOOGLE:
            sharing = [
                i
                for i in await self._all(ctx)
                if i.provider is ProviderKey.GOOGLE
                and i.id != info.id
                and i.account_id is not None
                and i.account_id == info.account_id
            ]
            if sharing:
                other = view_of(sharing[0]).label
                return "kept", (
                    f"Google's access grant was not revoked because your {other} "
                    "connection uses the same Google account and the same grant; "
                    "it is revoked when that one is disconnected too."
                )
        async with self.deps.db.tenant(ctx) as session:
            tokens = await IntegrationStore(session, self.deps.vault).load(
                info.provider, info.kind
            )
        token = tokens.refresh_token or tokens.access_token
        if token is None:
            return "already_invalid", None
        name = info.provider.value.title()
        try:
            credentials = await clients.credentials_for(self.deps, ctx, info.provider)
            adapter = oauth_adapter(self.deps, info.provider, credentials)
            outcome = await adapter.revoke(token)
        except (TransientProviderError, RateLimited):
            return "failed", _revoke_failed(name, f"{name} could not be reached", where)
        except (ProviderError, ProviderNotConfigured) as exc:
            return "failed", _revoke_failed(name, exc.message.rstrip("."), where)
        if outcome is RevokeOutcome.UNSUPPORTED:
            return "unsupported", (
                "Microsoft offers apps no way to revoke their own access: the last "
                "access token stops working within about 90 minutes. To remove "
                f"crmflow's permission entirely, go to {where}."
            )
        if outcome is RevokeOutcome.ALREADY_INVALID:
            return "already_invalid", f"{name} had already ended crmflow's access."
        return "revoked", f"Access was revoked at {name}."

    # ------------------------------------------------------------- OAuth clients

    async def oauth_clients(self, ctx: TenantContext) -> list[ClientStatus]:
        """The organization's OAuth clients per provider (admins only)."""
        return await clients.client_statuses(self.deps, ctx)

    async def set_oauth_client(
        self,
        ctx: TenantContext,
        provider: ProviderKey,
        client_id: str,
        client_secret: Secret,
    ) -> ClientStatus:
        """Register the organization's own OAuth client (admins only)."""
        return await clients.set_client(
            self.deps, ctx, provider, client_id, client_secret
        )

    async def clear_oauth_client(
        self, ctx: TenantContext, provider: ProviderKey
    ) -> ClientStatus:
        """Remove the organization's own OAuth client (admins only)."""
        return await clients.clear_client(self.deps, ctx, provider)


def _revoke_failed(name: str, reason: str, where: str) -> str:
    return (
        f"crmflow could not revoke its access at {name} ({reason}); its tokens are "
        f"deleted all the same. To be sure, remove crmflow's access at {where}."
    )
