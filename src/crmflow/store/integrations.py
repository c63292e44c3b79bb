"""A user's integrations: encrypted tokens and passwords, status, audit events,
and the OAuth flows that create them.

Secrets go through the vault on the way in and out: ``access_token``,
``refresh_token`` and ``password`` hold only ciphertext bound to their row and
column. Records handed out (:class:`IntegrationInfo`) carry no secret at all;
:meth:`IntegrationStore.load` returns the decrypted tokens as
:class:`~crmflow.domain.secret.Secret` objects for the one caller that sends them.

Every change of state leaves an :class:`IntegrationEventInfo` row (connected,
reconnected, refreshed, refresh_failed, needs_reauth, disconnected) that the user
can read.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.errors import NotFound, TokenDecryptError, ValidationFailed
from crmflow.store import models
from crmflow.store.crypto import Vault, context_for
from crmflow.store.db import tenant_of
from crmflow.store.prebuilt import owned, owner, param


class IntegrationStatus(enum.StrEnum):
    """Whether an integration works."""

    #: tokens or password accepted the last time they were used
    CONNECTED = "connected"
    #: the grant or password is gone: only the user reconnecting fixes it
    NEEDS_REAUTH = "needs_reauth"
    #: the last use failed for a passing reason (network, 5xx); retried
    ERROR = "error"


class IntegrationEvent(enum.StrEnum):
    """What happened to an integration (the audit trail)."""

    CONNECTED = "connected"
    RECONNECTED = "reconnected"
    REFRESHED = "refreshed"
    REFRESH_FAILED = "refresh_failed"
    NEEDS_REAUTH = "needs_reauth"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class IntegrationInfo:
    """An integration as users and the API see it: no secrets."""

    id: uuid.UUID
    user_id: uuid.UUID
    provider: ProviderKey
    kind: IntegrationKind
    email: str | None
    account_id: str | None
    scopes: tuple[str, ...]
    status: IntegrationStatus
    last_error: str | None
    expires_at: dt.datetime | None
    last_refreshed_at: dt.datetime | None
    connected_at: dt.datetime
    updated_at: dt.datetime
    #: non-secret connection parameters (IMAP/SMTP hosts, CalDAV URLs, user name)
    settings: Mapping[str, Any]
    has_refresh_token: bool
    has_password: bool


@dataclass(frozen=True, slots=True)
class IntegrationTokens:
    """A connected account with its decrypted tokens (Secrets: never shown)."""

    id: uuid.UUID
    provider: ProviderKey
    kind: IntegrationKind
    email: str | None
    account_id: str | None
    access_token: Secret | None
    refresh_token: Secret | None
    expires_at: dt.datetime | None
    scopes: tuple[str, ...]
    status: IntegrationStatus
    #: what went wrong last (shown to the user), if anything
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class IntegrationEventInfo:
    id: uuid.UUID
    integration_id: uuid.UUID | None
    provider: ProviderKey
    kind: IntegrationKind
    event: IntegrationEvent
    detail: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class OAuthFlowInfo:
    """A started authorization, as the callback needs it."""

    id: uuid.UUID
    provider: ProviderKey
    kind: IntegrationKind
    code_verifier: Secret
    redirect_uri: str
    scopes: tuple[str, ...]


_TABLE = "user_integrations"


def _seal(
    vault: Vault, table: str, row_id: uuid.UUID, column: str, value: Secret
) -> str:
    return vault.seal(value, context_for(table, column, row_id))


def _open(vault: Vault, table: str, row: Any, column: str) -> Secret | None:
    stored: str | None = getattr(row, column)
    if stored is None:
        return None
    return vault.open(stored, context_for(table, column, row.id))


def _info(row: models.UserIntegration) -> IntegrationInfo:
    return IntegrationInfo(
        id=row.id,
        user_id=row.user_id,
        provider=ProviderKey(row.provider),
        kind=IntegrationKind(row.kind),
        email=row.email,
        account_id=row.account_id,
        scopes=tuple(row.scopes),
        status=IntegrationStatus(row.status),
        last_error=row.last_error,
        expires_at=row.expires_at,
        last_refreshed_at=row.last_refreshed_at,
        connected_at=row.connected_at,
        updated_at=row.updated_at,
        settings=dict(row.settings or {}),
        has_refresh_token=row.refresh_token is not None,
        has_password=row.password is not None,
    )


class IntegrationStore:
    """The acting user's integrations in the acting organization.

    Every query is scoped to the acting user (``super_admin`` included: other
    members' integrations are never listed here, so nobody can refresh or
    disconnect someone else's account through this class).
    """

    def __init__(self, session: AsyncSession, vault: Vault) -> None:
        self._s = session
        self._vault = vault
        self._ctx = tenant_of(session)

    # ----------------------------------------------------------------- reading

    def _scoped(self) -> Any:
        return select(models.UserIntegration).where(
            models.UserIntegration.organization_id == self._ctx.organization_id,
            models.UserIntegration.user_id == self._ctx.user_id,
        )

    async def _row_by_key(
        self, provider: ProviderKey, kind: IntegrationKind, *, for_update: bool = False
    ) -> models.UserIntegration | None:
        stmt = self._scoped().where(
            models.UserIntegration.provider == provider.value,
            models.UserIntegration.kind == kind.value,
        )
        if for_update:
            # PostgreSQL: a row lock held until commit makes concurrent refreshers
            # of this integration wait (single flight). SQLite ignores FOR UPDATE;
            # there the caller's write-locked transaction does the same.
            stmt = stmt.with_for_update()
        row: models.UserIntegration | None = await self._s.scalar(stmt)
        return row

    async def _row(
        self, integration_id: uuid.UUID, *, for_update: bool = False
    ) -> models.UserIntegration:
        row: models.UserIntegration | None = await self._s.scalar(
            _ROW_FOR_UPDATE if for_update else _ROW,
            {"integration": integration_id, **owner(self._ctx)},
        )
        if row is None:
            raise NotFound("Integration not found.")
        return row

    async def all(self) -> list[IntegrationInfo]:
        """The user's integrations, by provider and kind."""
        rows = await self._s.scalars(
            self._scoped().order_by(
                models.UserIntegration.provider, models.UserIntegration.kind
            )
        )
        return [_info(r) for r in rows]

    async def get(self, integration_id: uuid.UUID) -> IntegrationInfo:
        """Raises NotFound for unknown ids and other users' integrations."""
        return _info(await self._row(integration_id))

    async def get_with_tokens(
        self, integration_id: uuid.UUID
    ) -> tuple[IntegrationInfo, IntegrationTokens]:
        """:meth:`get` and the decrypted tokens of :meth:`load`, from one read.

        Raises:
            NotFound: as :meth:`get`.
            TokenDecryptError: the keys cannot open the stored tokens.
        """
        row = await self._row(integration_id)
        return _info(row), self._tokens(row)

    async def get_with_secrets(
        self, integration_id: uuid.UUID
    ) -> tuple[IntegrationInfo, IntegrationTokens | None, Secret | None]:
        """:meth:`get`, the decrypted tokens of :meth:`load` and the password
        of :meth:`load_password`, from one read (a sync run's first step).

        The tokens are None when the keys cannot open them (the run's first
        request reports that); the password is None when the connection has
        none (an OAuth one).

        Raises:
            NotFound: as :meth:`get`.
            TokenDecryptError: the keys cannot open the stored password.
        """
        row = await self._row(integration_id)
        try:
            tokens: IntegrationTokens | None = self._tokens(row)
        except TokenDecryptError:
            tokens = None
        return _info(row), tokens, _open(self._vault, _TABLE, row, "password")

    async def find(
        self, provider: ProviderKey, kind: IntegrationKind
    ) -> IntegrationInfo | None:
        row = await self._row_by_key(provider, kind)
        return None if row is None else _info(row)

    async def load(
        self, provider: ProviderKey, kind: IntegrationKind, *, for_update: bool = False
    ) -> IntegrationTokens:
        """The integration with decrypted tokens.

        ``for_update=True`` also locks the row until the transaction ends
        (PostgreSQL), for a single-flight token refresh.

        Raises:
            NotFound: the user has not connected it.
            TokenDecryptError: the keys cannot open the stored tokens.
        """
        row = await self._row_by_key(provider, kind, for_update=for_update)
        if row is None:
            raise NotFound(
                f"No {provider.value} {kind.value} integration is connected."
            )
        return self._tokens(row)

    def _tokens(self, row: models.UserIntegration) -> IntegrationTokens:
        return IntegrationTokens(
            id=row.id,
            provider=ProviderKey(row.provider),
            kind=IntegrationKind(row.kind),
            email=row.email,
            account_id=row.account_id,
            access_token=_open(self._vault, _TABLE, row, "access_token"),
            refresh_token=_open(self._vault, _TABLE, row, "refresh_token"),
            expires_at=row.expires_at,
            scopes=tuple(row.scopes),
            status=IntegrationStatus(row.status),
            last_error=row.last_error,
        )

    async def load_password(self, integration_id: uuid.UUID) -> Secret:
        """The decrypted password of a credential connection.

        Raises:
            NotFound: unknown integration, or it has no password.
        """
        row = await self._row(integration_id)
        password = _open(self._vault, _TABLE, row, "password")
        if password is None:
            raise NotFound("This integration has no stored password.")
        return password

    # ----------------------------------------------------------------- writing

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
        """Insert or update the (user, provider, kind) OAuth integration in place.

        ``refresh_token=None`` keeps a stored refresh token (Google omits it on
        later grants). The integration becomes ``connected``; a ``connected`` or
        ``reconnected`` event is recorded.
        """
        row = await self._row_by_key(provider, kind)
        event = IntegrationEvent.RECONNECTED
        if row is None:
            row = self._new_row(provider, kind)
            event = IntegrationEvent.CONNECTED
        row.email = email
        row.account_id = account_id
        row.access_token = (
            None
            if access_token is None
            else _seal(self._vault, _TABLE, row.id, "access_token", access_token)
        )
        if refresh_token is not None:
            row.refresh_token = _seal(
                self._vault, _TABLE, row.id, "refresh_token", refresh_token
            )
        row.expires_at = expires_at
        row.scopes = list(scopes)
        row.status = IntegrationStatus.CONNECTED.value
        row.last_error = None
        await self._s.flush()
        await self._event(row, event, f"Connected as {email}." if email else None)
        return row.id

    async def save_credentials(
        self,
        provider: ProviderKey,
        kind: IntegrationKind,
        *,
        email: str,
        username: str,
        password: Secret,
        settings: Mapping[str, Any],
    ) -> uuid.UUID:
        """Insert or update a credential (IMAP/SMTP, CalDAV) integration in place.

        Call this only after the credentials were verified by a real login.
        ``settings`` must hold no secret (it is stored in plaintext).
        """
        row = await self._row_by_key(provider, kind)
        event = IntegrationEvent.RECONNECTED
        if row is None:
            row = self._new_row(provider, kind)
            event = IntegrationEvent.CONNECTED
        row.email = email
        row.account_id = username
        row.password = _seal(self._vault, _TABLE, row.id, "password", password)
        row.access_token = None
        row.refresh_token = None
        row.expires_at = None
        row.scopes = []
        row.settings = {**settings, "username": username}
        row.status = IntegrationStatus.CONNECTED.value
        row.last_error = None
        await self._s.flush()
        await self._event(row, event, f"Connected as {username}.")
        return row.id

    async def update_settings(
        self, integration_id: uuid.UUID, changes: Mapping[str, Any]
    ) -> IntegrationInfo:
        """Merge ``changes`` into the integration's (non-secret) settings."""
        row = await self._row(integration_id, for_update=True)
        row.settings = {**(row.settings or {}), **changes}
        await self._s.flush()
        return _info(row)

    def _new_row(
        self, provider: ProviderKey, kind: IntegrationKind
    ) -> models.UserIntegration:
        row = models.UserIntegration(
            id=uuid.uuid4(),
            organization_id=self._ctx.organization_id,
            user_id=self._ctx.user_id,
            provider=provider.value,
            kind=kind.value,
            scopes=[],
            settings={},
        )
        self._s.add(row)
        return row

    async def mark_refreshed(
        self,
        integration_id: uuid.UUID,
        *,
        access_token: Secret,
        refresh_token: Secret | None,
        expires_at: dt.datetime | None,
        scopes: Sequence[str] | None = None,
    ) -> None:
        """Store a refreshed access token (and a rotated refresh token) atomically."""
        row = await self._row(integration_id)
        row.access_token = _seal(
            self._vault, _TABLE, row.id, "access_token", access_token
        )
        if refresh_token is not None:
            row.refresh_token = _seal(
                self._vault, _TABLE, row.id, "refresh_token", refresh_token
            )
        row.expires_at = expires_at
        if scopes is not None:
            row.scopes = list(scopes)
        row.status = IntegrationStatus.CONNECTED.value
        row.last_error = None
        row.last_refreshed_at = models.utcnow()
        await self._s.flush()
        await self._event(row, IntegrationEvent.REFRESHED, None)

    async def mark_needs_reauth(self, integration_id: uuid.UUID, message: str) -> None:
        """The grant or password is gone; the user must reconnect."""
        row = await self._row(integration_id)
        already = row.status == IntegrationStatus.NEEDS_REAUTH.value
        row.status = IntegrationStatus.NEEDS_REAUTH.value
        row.last_error = message
        await self._s.flush()
        if not already:
            await self._event(row, IntegrationEvent.NEEDS_REAUTH, message)

    async def mark_error(self, integration_id: uuid.UUID, message: str) -> None:
        """A passing failure (network, 5xx); the status is unchanged otherwise."""
        row = await self._row(integration_id)
        row.last_error = message
        await self._s.flush()
        await self._event(row, IntegrationEvent.REFRESH_FAILED, message)

    async def delete(
        self, integration_id: uuid.UUID, detail: str | None = None
    ) -> IntegrationInfo:
        """Remove the integration and its secrets; a ``disconnected`` event stays."""
        row = await self._row(integration_id)
        info = _info(row)
        await self._event(row, IntegrationEvent.DISCONNECTED, detail)
        await self._s.delete(row)
        await self._s.flush()
        return info

    # ------------------------------------------------------------------ events

    async def _event(
        self, row: models.UserIntegration, event: IntegrationEvent, detail: str | None
    ) -> None:
        self._s.add(
            models.IntegrationEvent(
                organization_id=row.organization_id,
                user_id=row.user_id,
                integration_id=row.id,
                provider=row.provider,
                kind=row.kind,
                event=event.value,
                detail=detail,
            )
        )
        await self._s.flush()

    async def events(self, *, limit: int = 50) -> list[IntegrationEventInfo]:
        """The user's most recent integration events, newest first."""
        rows = await self._s.scalars(
            select(models.IntegrationEvent)
            .where(
                models.IntegrationEvent.organization_id == self._ctx.organization_id,
                models.IntegrationEvent.user_id == self._ctx.user_id,
            )
            .order_by(
                models.IntegrationEvent.created_at.desc(), models.IntegrationEvent.id
            )
            .limit(limit)
        )
        return [
            IntegrationEventInfo(
                id=r.id,
                integration_id=r.integration_id,
                provider=ProviderKey(r.provider),
                kind=IntegrationKind(r.kind),
                event=IntegrationEvent(r.event),
                detail=r.detail,
                created_at=r.created_at,
            )
            for r in rows
        ]

    # -------------------------------------------------------------- OAuth flows

    async def create_flow(
        self,
        provider: ProviderKey,
        kind: IntegrationKind,
        *,
        state: str,
        code_verifier: Secret,
        redirect_uri: str,
        scopes: Sequence[str],
        ttl: dt.timedelta,
    ) -> None:
        """Remember a started authorization until its callback (or ``ttl``)."""
        flow_id = uuid.uuid4()
        self._s.add(
            models.OAuthFlow(
                id=flow_id,
                organization_id=self._ctx.organization_id,
                user_id=self._ctx.user_id,
                provider=provider.value,
                kind=kind.value,
                state=state,
                code_verifier=_seal(
                    self._vault, "oauth_flows", flow_id, "code_verifier", code_verifier
                ),
                redirect_uri=redirect_uri,
                scopes=list(scopes),
                expires_at=models.utcnow() + ttl,
            )
        )
        await self._s.flush()

    async def consume_flow(self, provider: ProviderKey, state: str) -> OAuthFlowInfo:
        """Take a started authorization by its ``state``; it can be used once.

        Raises:
            ValidationFailed: unknown state (forged, or another user's), already
                used, expired, or started for another provider.
        """
        row: models.OAuthFlow | None = await self._s.scalar(
            select(models.OAuthFlow)
            .where(
                models.OAuthFlow.organization_id == self._ctx.organization_id,
                models.OAuthFlow.user_id == self._ctx.user_id,
                models.OAuthFlow.state == state,
            )
            .with_for_update()
        )
        restart = "Start connecting again from Settings -> Integrations."
        if row is None or row.provider != provider.value:
            raise ValidationFailed(
                f"This sign-in response does not belong to you. {restart}"
            )
        if row.consumed_at is not None:
            raise ValidationFailed(f"This sign-in response was already used. {restart}")
        if row.expires_at <= models.utcnow():
            raise ValidationFailed(f"This sign-in took too long and expired. {restart}")
        row.consumed_at = models.utcnow()
        await self._s.flush()
        verifier = _open(self._vault, "oauth_flows", row, "code_verifier")
        assert verifier is not None  # noqa: S101 - the column is NOT NULL
        return OAuthFlowInfo(
            id=row.id,
            provider=ProviderKey(row.provider),
            kind=IntegrationKind(row.kind),
            code_verifier=verifier,
            redirect_uri=row.redirect_uri,
            scopes=tuple(row.scopes),
        )


#: ``{"integration", "org", "user"}``: one of the user's integrations (a sync
#: run's first read, see crmflow.store.prebuilt)
_ROW = select(models.UserIntegration).where(
    models.UserIntegration.id == param("integration", models.UserIntegration.id),
    *owned(models.UserIntegration),
)
_ROW_FOR_UPDATE = _ROW.with_for_update()
