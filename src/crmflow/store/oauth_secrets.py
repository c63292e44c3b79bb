"""An organization's own OAuth client registrations (``oauth_secrets``).

An organization may register its own Google or Microsoft OAuth client; when it
has none, the deployment's configuration (``CRMFLOW_GOOGLE_CLIENT_ID`` ...) is
used (``connections/clients.py`` decides). The client secret is vault
ciphertext bound to its row; it leaves this module only as a
:class:`~crmflow.domain.secret.Secret`, for the one call that sends it to the
provider, and never in :class:`OAuthClientInfo`.

Reading is for the service acting for any member (row level security allows
members to read, admins to write); changing needs an admin of the acting
organization.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.integrations import ProviderKey
from crmflow.domain.secret import Secret
from crmflow.errors import PermissionDenied
from crmflow.store import models
from crmflow.store.crypto import Vault, context_for
from crmflow.store.db import tenant_of

_TABLE = "oauth_secrets"


@dataclass(frozen=True, slots=True)
class OAuthClientInfo:
    """An organization's client registration as admins see it: no secret."""

    provider: ProviderKey
    client_id: str
    has_secret: bool
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class OAuthClientSecret:
    """An organization's client registration with its decrypted secret."""

    provider: ProviderKey
    client_id: str
    client_secret: Secret


class OAuthSecretStore:
    """The acting organization's OAuth client registrations."""

    def __init__(self, session: AsyncSession, vault: Vault) -> None:
        self._s = session
        self._vault = vault
        self._ctx = tenant_of(session)

    def _require_admin(self) -> None:
        if not self._ctx.is_admin:
            raise PermissionDenied(
                "Only organization admins can change OAuth client settings."
            )

    async def _row(self, provider: ProviderKey) -> models.OAuthSecret | None:
        row: models.OAuthSecret | None = await self._s.scalar(
            select(models.OAuthSecret).where(
                models.OAuthSecret.organization_id == self._ctx.organization_id,
                models.OAuthSecret.provider == provider.value,
            )
        )
        return row

    async def load(self, provider: ProviderKey) -> OAuthClientSecret | None:
        """The organization's registration for ``provider`` (None: use the config).

        Raises:
            TokenDecryptError: the keys cannot open the stored secret.
        """
        row = await self._row(provider)
        if row is None:
            return None
        secret = self._vault.open(
            row.client_secret, context_for(_TABLE, "client_secret", row.id)
        )
        return OAuthClientSecret(provider, row.client_id, secret)

    async def all(self) -> list[OAuthClientInfo]:
        """Every registration of the organization, without secrets (admins only).

        Raises:
            PermissionDenied: the acting user is not an admin.
        """
        self._require_admin()
        rows = await self._s.scalars(
            select(models.OAuthSecret)
            .where(models.OAuthSecret.organization_id == self._ctx.organization_id)
            .order_by(models.OAuthSecret.provider)
        )
        return [
            OAuthClientInfo(
                ProviderKey(r.provider),
                r.client_id,
                bool(r.client_secret),
                r.updated_at,
            )
            for r in rows
        ]

    async def put(
        self, provider: ProviderKey, client_id: str, client_secret: Secret
    ) -> OAuthClientInfo:
        """Set (or replace) the organization's registration for ``provider``.

        Raises:
            PermissionDenied: the acting user is not an admin.
        """
        self._require_admin()
        row = await self._row(provider)
        if row is None:
            row = models.OAuthSecret(
                id=uuid.uuid4(),
                organization_id=self._ctx.organization_id,
                provider=provider.value,
            )
            self._s.add(row)
        row.client_id = client_id
        row.client_secret = self._vault.seal(
            client_secret, context_for(_TABLE, "client_secret", row.id)
        )
        await self._s.flush()
        return OAuthClientInfo(provider, row.client_id, True, row.updated_at)

    async def clear(self, provider: ProviderKey) -> bool:
        """Remove the organization's registration (the configuration applies again).

        Returns:
            Whether there was one.

        Raises:
            PermissionDenied: the acting user is not an admin.
        """
        self._require_admin()
        row = await self._row(provider)
        if row is None:
            return False
        await self._s.delete(row)
        await self._s.flush()
        return True
