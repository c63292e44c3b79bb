"""OAuth client registrations: the organization's own (``oauth_secrets``), else
the deployment's configuration.

An organization's admins may register their own Google or Microsoft client
(for their own consent screen, their own quotas, a single-tenant Microsoft
app). The secret is encrypted by the vault, never returned by any endpoint and
never sent to a browser: admins see the client id and whether a secret is set.
When an organization has no registration for a provider, the configuration's
``CRMFLOW_<PROVIDER>_CLIENT_ID`` / ``_CLIENT_SECRET`` apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crmflow.connections._deps import Deps
from crmflow.connections.errors import ProviderNotConfigured
from crmflow.connections.scopes import OAUTH_PROVIDERS, is_oauth
from crmflow.domain.integrations import ProviderKey
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import NotFound, ValidationFailed
from crmflow.providers.base import OAuthClientCredentials
from crmflow.store.oauth_secrets import OAuthSecretStore

_NAMES = {ProviderKey.GOOGLE: "Google", ProviderKey.MICROSOFT: "Microsoft"}


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """Which OAuth client a provider uses in an organization (no secret)."""

    provider: ProviderKey
    #: ``organization``: set by an admin; ``configuration``: the deployment's;
    #: ``none``: the provider cannot be connected yet
    source: Literal["organization", "configuration", "none"]
    client_id: str | None
    has_secret: bool


def _check(provider: ProviderKey) -> None:
    if not is_oauth(provider):
        raise ValidationFailed(
            f"{provider.value} does not use OAuth; only google and microsoft have "
            "OAuth clients."
        )


def _configured(deps: Deps, provider: ProviderKey) -> tuple[str | None, Secret | None]:
    s = deps.settings
    if provider is ProviderKey.GOOGLE:
        return s.google_client_id, s.google_client_secret
    return s.microsoft_client_id, s.microsoft_client_secret


async def credentials_for(
    deps: Deps, ctx: TenantContext, provider: ProviderKey
) -> OAuthClientCredentials:
    """The client crmflow uses for ``provider`` on behalf of ``ctx``.

    Raises:
        ProviderNotConfigured: neither the organization nor the configuration
            has a client id and secret for ``provider``.
        ValidationFailed: ``provider`` does not use OAuth.
    """
    _check(provider)
    async with deps.db.tenant(ctx) as session:
        own = await OAuthSecretStore(session, deps.vault).load(provider)
    if own is not None:
        return OAuthClientCredentials(own.client_id, own.client_secret)
    client_id, secret = _configured(deps, provider)
    if not client_id or secret is None:
        name = _NAMES[provider]
        env = f"CRMFLOW_{provider.value.upper()}"
        raise ProviderNotConfigured(
            f"{name} is not set up for this organization yet: an administrator must "
            f"add {name}'s OAuth client id and secret (PUT "
            f"/api/organization/oauth-clients/{provider.value}) or set "
            f"{env}_CLIENT_ID and {env}_CLIENT_SECRET."
        )
    return OAuthClientCredentials(client_id, secret)


async def client_statuses(deps: Deps, ctx: TenantContext) -> list[ClientStatus]:
    """Every OAuth provider's client in the acting organization (admins only).

    Raises:
        PermissionDenied: the acting user is not an admin.
    """
    async with deps.db.tenant(ctx) as session:
        own = {c.provider: c for c in await OAuthSecretStore(session, deps.vault).all()}
    out: list[ClientStatus] = []
    for provider in OAUTH_PROVIDERS:
        if provider in own:
            out.append(
                ClientStatus(
                    provider,
                    "organization",
                    own[provider].client_id,
                    own[provider].has_secret,
                )
            )
            continue
        client_id, secret = _configured(deps, provider)
        if client_id:
            out.append(
                ClientStatus(provider, "configuration", client_id, secret is not None)
            )
        else:
            out.append(ClientStatus(provider, "none", None, False))
    return out


async def set_client(
    deps: Deps,
    ctx: TenantContext,
    provider: ProviderKey,
    client_id: str,
    client_secret: Secret,
) -> ClientStatus:
    """Register the organization's own client for ``provider`` (admins only).

    Raises:
        PermissionDenied: the acting user is not an admin.
        ValidationFailed: ``provider`` does not use OAuth, or an empty value.
    """
    _check(provider)
    if not client_id.strip() or not client_secret.reveal().strip():
        raise ValidationFailed("Give both the client id and the client secret.")
    async with deps.db.tenant(ctx) as session:
        info = await OAuthSecretStore(session, deps.vault).put(
            provider, client_id.strip(), client_secret
        )
    return ClientStatus(provider, "organization", info.client_id, True)


async def clear_client(
    deps: Deps, ctx: TenantContext, provider: ProviderKey
) -> ClientStatus:
    """Remove the organization's own client; the configuration applies again.

    Raises:
        PermissionDenied: the acting user is not an admin.
        NotFound: the organization has no own client for ``provider``.
    """
    _check(provider)
    async with deps.db.tenant(ctx) as session:
        removed = await OAuthSecretStore(session, deps.vault).clear(provider)
    if not removed:
        raise NotFound(
            f"This organization has no own {_NAMES[provider]} OAuth client to remove."
        )
    statuses = await client_statuses(deps, ctx)
    return next(s for s in statuses if s.provider is provider)
