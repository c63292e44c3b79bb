"""Connecting an OAuth integration: authorization code flow with PKCE.

:func:`start_connect` picks the scopes (base scopes plus the wanted features,
:mod:`.scopes`), makes a ``state`` (256 random bits) and a PKCE
``code_verifier`` (RFC 7636: 64 random bytes, base64url), remembers both
server-side in ``oauth_flows`` — bound to the acting user and organization,
valid for ``oauth_flow_ttl_s``, usable once, the verifier encrypted — and
returns the provider's authorization URL.

:func:`complete_connect` runs when the browser comes back to
``/oauth/callback/{provider}``: it takes the flow by ``state`` *as the signed-in
user* (another user's state, a replayed one, an expired one or one started for
another provider are refused: the CSRF defence of RFC 6749 section 10.12),
redeems the code with the flow's own redirect URI and verifier (the provider
refuses a code from another sign-in: PKCE, and a redirect URI that differs),
reads who the account is, and stores one ``user_integrations`` row per (user,
provider, kind) — reconnecting updates it in place, keeping the stored refresh
token when the provider sends none.

Redirect URIs come from configuration only: the deployment's own
(``public_base_url`` + ``/oauth/callback/{provider}``) and
``CRMFLOW_OAUTH_EXTRA_REDIRECT_URIS`` (development front ends on localhost); a
connect naming any other URI is refused before anything is stored.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from dataclasses import dataclass

from crmflow.connections import clients
from crmflow.connections._adapters import oauth_adapter
from crmflow.connections._deps import Deps
from crmflow.connections.errors import ConnectCancelled
from crmflow.connections.scopes import (
    ConsentReport,
    KindSpec,
    analyse,
    requested_scopes,
    spec_of,
)
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import ValidationFailed
from crmflow.store.integrations import IntegrationInfo, IntegrationStore
from crmflow.store.linked_accounts import DetachedAccounts, detach_accounts

#: 256 bits of state (RFC 6749 section 10.10: "infeasible to guess")
_STATE_BYTES = 32
#: 64 bytes -> an 86-character verifier (RFC 7636 section 4.1: 43 to 128)
_VERIFIER_BYTES = 64


@dataclass(frozen=True, slots=True)
class ConnectStart:
    """A started connect: send the person to ``authorization_url``."""

    authorization_url: str
    provider: ProviderKey
    kind: IntegrationKind
    #: the scopes asked for
    scopes: tuple[str, ...]
    redirect_uri: str
    #: after this instant the callback is refused
    expires_at: dt.datetime
    #: whether an integration of this kind exists already (``prompt=consent``)
    reconnect: bool


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """A completed connect."""

    integration: IntegrationInfo
    report: ConsentReport
    #: whether it replaced an existing integration of the same kind
    reconnected: bool
    #: accounts detached because the reconnect switched to another account
    detached: DetachedAccounts | None


def _verifier() -> Secret:
    raw = secrets.token_bytes(_VERIFIER_BYTES)
    return Secret(base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii"))


def check_redirect_uri(deps: Deps, provider: ProviderKey, wanted: str | None) -> str:
    """The redirect URI a connect uses: ``wanted`` if configured, else the default.

    Raises:
        ValidationFailed: ``wanted`` is not one of the configured URIs.
    """
    allowed = deps.settings.oauth_redirect_uris(provider.value)
    if wanted is None:
        return allowed[0]
    if wanted not in allowed:
        raise ValidationFailed(
            f"The redirect URI {wanted!r} is not configured for {provider.value}; "
            f"use {allowed[0]!r} or ask an administrator to add it to "
            "CRMFLOW_OAUTH_EXTRA_REDIRECT_URIS (and to the provider's app)."
        )
    return wanted


async def start_connect(
    deps: Deps,
    ctx: TenantContext,
    provider: ProviderKey,
    kind: IntegrationKind,
    *,
    features: list[str] | None = None,
    redirect_uri: str | None = None,
    login_hint: str | None = None,
) -> ConnectStart:
    """Start connecting (or reconnecting, or granting more access to) ``kind``.

    Args:
        features: feature keys to ask access for (:mod:`.scopes`); None asks
            for every feature of the kind. "Grant access" for one feature
            passes just that one: Google adds it to the earlier grant
            (``include_granted_scopes``), Microsoft gets the earlier scopes
            asked again.
        redirect_uri: one of the configured redirect URIs (default: the
            deployment's own).
        login_hint: the account to preselect at the provider (default: the
            connected account's address when reconnecting).

    Raises:
        ValidationFailed: unknown provider/kind combination or feature, or an
            unconfigured redirect URI.
        ProviderNotConfigured: no OAuth client for ``provider``.
    """
    spec = spec_of(provider, kind)
    uri = check_redirect_uri(deps, provider, redirect_uri)
    credentials = await clients.credentials_for(deps, ctx, provider)
    adapter = oauth_adapter(deps, provider, credentials)
    state = secrets.token_urlsafe(_STATE_BYTES)
    verifier = _verifier()
    ttl = dt.timedelta(seconds=deps.settings.oauth_flow_ttl_s)
    async with deps.db.tenant(ctx) as session:
        store = IntegrationStore(session, deps.vault)
        mine = [i for i in await store.all() if i.provider is provider]
        existing = next((i for i in mine if i.kind is kind), None)
        keep = (
            existing.scopes
            if existing is not None and provider is ProviderKey.MICROSOFT
            else ()
        )
        scopes = requested_scopes(spec, features, keep=keep)
        # prompt=consent when reconnecting; for Google also when another kind is
        # connected already: the grant exists, and without a forced consent
        # Google would send no refresh token for this one (google-apis.md 1.2).
        force = existing is not None or (provider is ProviderKey.GOOGLE and bool(mine))
        url = adapter.authorization_url(
            redirect_uri=uri,
            scopes=scopes,
            state=state,
            code_verifier=verifier,
            login_hint=login_hint or (existing.email if existing else None),
            force_consent=force,
        )
        await store.create_flow(
            provider,
            kind,
            state=state,
            code_verifier=verifier,
            redirect_uri=uri,
            scopes=scopes,
            ttl=ttl,
        )
    return ConnectStart(
        authorization_url=url,
        provider=provider,
        kind=kind,
        scopes=scopes,
        redirect_uri=uri,
        expires_at=deps.clock() + ttl,
        reconnect=existing is not None,
    )


_DECLINED = {
    "access_denied": "You cancelled the sign-in",
    "consent_required": "The permissions were not granted",
    "interaction_required": "The provider needs you to sign in again",
    "login_required": "The provider needs you to sign in again",
}


async def complete_connect(
    deps: Deps,
    ctx: TenantContext,
    provider: ProviderKey,
    *,
    state: str,
    code: str | None,
    error: str | None = None,
) -> ConnectResult:
    """Finish a connect with the provider's answer to the browser.

    The flow is consumed first, in its own transaction, so a ``state`` works
    once even when the rest fails.

    Raises:
        ValidationFailed: the state is unknown, another user's, used, expired
            or for another provider; or there is no code.
        ConnectCancelled: the person declined at the provider (``error``).
        GrantRejected: the provider refused the code (used, expired, PKCE).
        ProviderError: the provider refused otherwise (redirect URI mismatch,
            client rejected) or failed (retryable ones: try again).
        ProviderNotConfigured: the provider's OAuth client is gone.
    """
    async with deps.db.tenant(ctx) as session:
        flow = await IntegrationStore(session, deps.vault).consume_flow(provider, state)
    spec = spec_of(provider, flow.kind)
    if error:
        what = _DECLINED.get(error, f"{spec.label} refused the sign-in ({error[:40]})")
        raise ConnectCancelled(
            f"{what}; nothing was changed. Start connecting {spec.label} again when "
            "you are ready."
        )
    if not code:
        raise ValidationFailed(
            f"{spec.label} sent no authorization code. Start connecting again."
        )
    credentials = await clients.credentials_for(deps, ctx, provider)
    adapter = oauth_adapter(deps, provider, credentials)
    grant = await adapter.exchange_code(
        code=code, redirect_uri=flow.redirect_uri, code_verifier=flow.code_verifier
    )
    account = await adapter.fetch_account(grant)
    granted = grant.scopes if grant.scopes is not None else flow.scopes
    expires_at = (
        deps.clock() + dt.timedelta(seconds=grant.expires_in_s)
        if grant.expires_in_s is not None
        else None
    )
    detached: DetachedAccounts | None = None
    # The refresh lock: a refresh running right now cannot overwrite these tokens.
    async with deps.db.tenant(ctx, write_lock=True) as session:
        store = IntegrationStore(session, deps.vault)
        existing = await store.find(provider, flow.kind)
        if existing is not None:
            await store.load(provider, flow.kind, for_update=True)
            switched = (
                existing.account_id is not None
                and account.account_id is not None
                and existing.account_id != account.account_id
            )
            if switched:
                # Another account under the same kind: what hung off the old one
                # (mail, calendars) must not sync against the new one, and its
                # refresh token must not survive if the provider sent none.
                detached = await detach_accounts(session, existing.id)
                await store.delete(
                    existing.id,
                    f"Replaced by another account ({account.email or 'unknown'}).",
                )
        integration_id = await store.save(
            provider,
            flow.kind,
            email=account.email,
            account_id=account.account_id,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            expires_at=expires_at,
            scopes=granted,
        )
        info = await store.get(integration_id)
    return ConnectResult(
        integration=info,
        report=report_for(spec, info, requested=flow.scopes),
        reconnected=existing is not None,
        detached=detached,
    )


def report_for(
    spec: KindSpec, info: IntegrationInfo, requested: tuple[str, ...] = ()
) -> ConsentReport:
    """The feature report of a stored integration."""
    return analyse(
        spec,
        info.scopes,
        has_refresh_token=info.has_refresh_token,
        requested=requested,
    )
