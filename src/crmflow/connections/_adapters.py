"""The OAuth adapter of a provider, built from the settings' base URLs."""

from __future__ import annotations

from crmflow.connections._deps import Deps
from crmflow.domain.integrations import ProviderKey
from crmflow.errors import ValidationFailed
from crmflow.providers.base import OAuthClientCredentials, OAuthProvider
from crmflow.providers.google import GoogleEndpoints, GoogleOAuth
from crmflow.providers.microsoft import MicrosoftEndpoints, MicrosoftOAuth


def oauth_adapter(
    deps: Deps, provider: ProviderKey, credentials: OAuthClientCredentials
) -> OAuthProvider:
    """The adapter for ``provider`` (production hosts or the sandbox's).

    Raises:
        ValidationFailed: ``provider`` does not use OAuth.
    """
    s = deps.settings
    if provider is ProviderKey.GOOGLE:
        return GoogleOAuth(
            credentials,
            GoogleEndpoints(
                accounts_url=str(s.google_accounts_url),
                oauth2_url=str(s.google_oauth2_url),
                api_url=str(s.google_api_url),
            ),
            transport=deps.transport,
        )
    if provider is ProviderKey.MICROSOFT:
        return MicrosoftOAuth(
            credentials,
            MicrosoftEndpoints(
                login_url=str(s.microsoft_login_url),
                graph_url=str(s.microsoft_graph_url),
                tenant=s.microsoft_tenant,
            ),
            transport=deps.transport,
        )
    raise ValidationFailed(f"{provider.value} does not use OAuth.")
