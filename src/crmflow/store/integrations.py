"""Encrypted storage of a user's integration tokens (``user_integrations``).

Tokens go through the vault on the way in and out; a row's ``access_token`` and
``refresh_token`` columns hold only ciphertext bound to that row and column.
The connect flows, refresh and revoke that use this come with the connections
feature; this module is the storage contract they build on.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.errors import NotFound
from crmflow.store import models
from crmflow.store.crypto import Vault, context_for
from crmflow.store.db import tenant_of


@dataclass(frozen=True, slots=True)
class IntegrationTokens:
    """A connected account with its decrypted tokens (never logged: Secrets)."""

    id: uuid.UUID
    provider: ProviderKey
    kind: IntegrationKind
    email: str | None
    account_id: str | None
    access_token: Secret | None
    refresh_token: Secret | None
    expires_at: dt.datetime | None
    scopes: tuple[str, ...]


def _seal(
    vault: Vault, row_id: uuid.UUID, column: str, value: Secret | None
) -> str | None:
    if value is None:
        return None
    return vault.seal(value, context_for("user_integrations", column, row_id))


def _open(vault: Vault, row: models.UserIntegration, column: str) -> Secret | None:
    stored: str | None = getattr(row, column)
    if stored is None:
        return None
    return vault.open(stored, context_for("user_integrations", column, row.id))


class IntegrationStore:
    """The acting user's integrations, with tokens sealed by the vault."""

    def __init__(self, session: AsyncSession, vault: Vault) -> None:
        self._s = session
        self._vault = vault
        self._ctx = tenant_of(session)

    async def _row(
        self, provider: ProviderKey, kind: IntegrationKind
    ) -> models.UserIntegration | None:
        row: models.UserIntegration | None = await self._s.scalar(
            select(models.UserIntegration).where(
                models.UserIntegration.organization_id == self._ctx.organization_id,
                models.UserIntegration.user_id == self._ctx.user_id,
                models.UserIntegration.provider == provider.value,
                models.UserIntegration.kind == kind.value,
            )
        )
        return row

    async def save(
        self,
        provider: ProviderKey,
        kind: IntegrationKind,
        *,
        email: str | None,
        account_id: str | None,
        access_token: Secret | None,
        refresh_token: Secret | None,
        expires_at: dt.datetime | None,
        scopes: Sequence[str],
    ) -> uuid.UUID:
        """Insert or update the (user, provider, kind) integration in place.

        ``refresh_token=None`` keeps a stored refresh token (Google omits it on
        later grants).
        """
        row = await self._row(provider, kind)
        if row is None:
            row = models.UserIntegration(
                id=uuid.uuid4(),
                organization_id=self._ctx.organization_id,
                user_id=self._ctx.user_id,
                provider=provider.value,
                kind=kind.value,
            )
            self._s.add(row)
        row.email = email
        row.account_id = account_id
        row.access_token = _seal(self._vault, row.id, "access_token", access_token)
        if refresh_token is not None:
            row.refresh_token = _seal(
                self._vault, row.id, "refresh_token", refresh_token
            )
        row.expires_at = expires_at
        row.scopes = list(scopes)
        await self._s.flush()
        return row.id

    async def load(
        self, provider: ProviderKey, kind: IntegrationKind
    ) -> IntegrationTokens:
        """The integration with decrypted tokens.

        Raises:
            NotFound: the user has not connected it.
            TokenDecryptError: the keys cannot open the stored tokens.
        """
        row = await self._row(provider, kind)
        if row is None:
            raise NotFound(
                f"No {provider.value} {kind.value} integration is connected."
            )
        return IntegrationTokens(
            id=row.id,
            provider=ProviderKey(row.provider),
            kind=IntegrationKind(row.kind),
            email=row.email,
            account_id=row.account_id,
            access_token=_open(self._vault, row, "access_token"),
            refresh_token=_open(self._vault, row, "refresh_token"),
            expires_at=row.expires_at,
            scopes=tuple(row.scopes),
        )
