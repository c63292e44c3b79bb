"""Server-side token refresh: single flight, ahead of expiry, with back-off.

An access token counts as stale ``token_refresh_margin_s`` (default 120 s)
before it expires, by crmflow's injectable clock. Refreshing is single-flight
at two levels, because a refresh token spent twice can be revoked by the
provider, and Microsoft rotates refresh tokens on every use
(microsoft-graph.md section 1.4):

* **in the process**: one :class:`asyncio.Task` per integration; every caller
  that finds the token stale while a refresh runs awaits that same task, and
  gets its token or its error (so a failing provider sees one flight, not one
  per caller);
* **across processes**: the flight runs in a write-locked transaction
  (``db.tenant(ctx, write_lock=True)``: ``BEGIN IMMEDIATE`` on SQLite) and
  loads the row ``FOR UPDATE`` (a row lock on PostgreSQL), then *re-reads*:
  when another worker refreshed while this one waited, its token is used and
  no request is sent. The new access token and a rotated refresh token are
  written in that same transaction, so they are stored atomically or not at
  all. Google's refresh responses carry no refresh token: the stored one is
  kept.

The trade-off: the provider call happens while the lock is held (on SQLite
that is the database's write lock), bounded by the HTTP timeouts. Holding it
is the point — the second refresher must wait for the first one's result.

Outcomes:

* ``invalid_grant`` / revoked / AADSTS70008, 700082, 50173 ...
  (:class:`~crmflow.providers.base.GrantRejected`): the integration becomes
  ``needs_reauth`` with the reason recorded (and a ``needs_reauth`` event), the
  caller gets :class:`~crmflow.providers.base.AuthError`, and later calls fail
  at once without asking the provider again (no retry storm) until the user
  reconnects.
* network errors, 5xx, 429: retried ``token_refresh_attempts`` times with
  exponential back-off and jitter (honouring a short ``Retry-After``); the
  status stays as it was; when every attempt fails the error is recorded
  (``refresh_failed`` event) and the retryable error raised.
* a refused client id/secret (:class:`~crmflow.providers.base.ClientRejected`):
  recorded, not retried, status unchanged — reconnecting would not help, an
  administrator must fix the client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from crmflow.connections import clients
from crmflow.connections._adapters import oauth_adapter
from crmflow.connections._deps import Deps
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.domain.secret import Secret
from crmflow.domain.tenancy import TenantContext
from crmflow.metrics import TOKEN_REFRESH_FAILURES
from crmflow.providers.base import (
    AuthError,
    OAuthClientCredentials,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from crmflow.store.integrations import (
    IntegrationStatus,
    IntegrationStore,
    IntegrationTokens,
)

#: never wait longer than this for a provider's Retry-After inside a request,
#: in seconds; beyond it the error goes to the caller (jobs retry later)
MAX_RETRY_AFTER_S = 10.0
_RANDOM = secrets.SystemRandom()


@dataclass(frozen=True, slots=True)
class _Retry:
    """A failed attempt worth repeating."""

    error: TransientProviderError | RateLimited


def _reauth_error(tokens: IntegrationTokens, reason: str | None) -> AuthError:
    what = f"{tokens.provider.value} {tokens.kind.value}"
    return AuthError(
        f"The {what} connection needs you to reconnect"
        + (f": {reason}" if reason else ".")
        + ("" if reason and "Reconnect" in reason else " Use 'Reconnect'.")
    )


class TokenRefresher:
    """Usable access tokens for a process's requests and jobs."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._flights: dict[uuid.UUID, asyncio.Task[Secret]] = {}

    def _fresh(self, tokens: IntegrationTokens) -> bool:
        if tokens.access_token is None:
            return False
        if tokens.expires_at is None:
            return True  # the provider gave no lifetime: use it until refused
        margin = dt.timedelta(seconds=self._deps.settings.token_refresh_margin_s)
        return tokens.expires_at - margin > self._deps.clock()

    def usable(
        self, tokens: IntegrationTokens
    ) -> tuple[Secret, dt.datetime | None] | None:
        """The access token of ``tokens`` as :meth:`access_token_until` would
        hand it out without a refresh, or None when it would not (missing,
        about to end, or the integration needs the user to reconnect)."""
        if tokens.status is IntegrationStatus.NEEDS_REAUTH or not self._fresh(tokens):
            return None
        assert tokens.access_token is not None  # noqa: S101 - _fresh checked it
        if tokens.expires_at is None:
            return tokens.access_token, None
        margin = dt.timedelta(seconds=self._deps.settings.token_refresh_margin_s)
        return tokens.access_token, tokens.expires_at - margin

    async def _load(
        self, ctx: TenantContext, provider: ProviderKey, kind: IntegrationKind
    ) -> tuple[IntegrationTokens, str | None]:
        async with self._deps.db.tenant(ctx) as session:
            tokens = await IntegrationStore(session, self._deps.vault).load(
                provider, kind
            )
        return tokens, tokens.last_error

    async def access_token(
        self,
        ctx: TenantContext,
        provider: ProviderKey,
        kind: IntegrationKind,
        *,
        force: bool = False,
    ) -> Secret:
        """A usable access token, refreshed first when stale (or ``force``).

        Raises:
            NotFound: no such integration for the acting user.
            AuthError: the integration needs the user to reconnect.
            TransientProviderError, RateLimited: the provider is unavailable;
                the status is unchanged (retry later).
            ProviderError: the provider refused for another reason (recorded).
        """
        return (await self.access_token_until(ctx, provider, kind, force=force))[0]

    async def access_token_until(
        self,
        ctx: TenantContext,
        provider: ProviderKey,
        kind: IntegrationKind,
        *,
        force: bool = False,
    ) -> tuple[Secret, dt.datetime | None]:
        """:meth:`access_token`, and until when it stays fresh without a
        look at the database (None: just refreshed, or no lifetime known:
        look again next time). Raises as :meth:`access_token`."""
        tokens, last_error = await self._load(ctx, provider, kind)
        if tokens.status is IntegrationStatus.NEEDS_REAUTH:
            raise _reauth_error(tokens, last_error)
        if not force and (usable := self.usable(tokens)) is not None:
            return usable
        flight = self._flights.get(tokens.id)
        if flight is None:
            replace = tokens.access_token if force else None
            flight = asyncio.get_running_loop().create_task(
                self._fly(ctx, provider, kind, replace)
            )
            self._flights[tokens.id] = flight
            flight.add_done_callback(functools.partial(self._landed, tokens.id))
        # shield: one caller giving up must not cancel everyone's refresh
        return await asyncio.shield(flight), None

    def _landed(self, integration_id: uuid.UUID, task: asyncio.Task[Secret]) -> None:
        if self._flights.get(integration_id) is task:
            del self._flights[integration_id]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning

    async def _fly(
        self,
        ctx: TenantContext,
        provider: ProviderKey,
        kind: IntegrationKind,
        replace: Secret | None,
    ) -> Secret:
        credentials = await clients.credentials_for(self._deps, ctx, provider)
        attempts = self._deps.settings.token_refresh_attempts
        for attempt in range(1, attempts + 1):
            outcome = await self._attempt(ctx, provider, kind, replace, credentials)
            if isinstance(outcome, Secret):
                return outcome
            delay = self._backoff_s(attempt, outcome.error)
            if attempt == attempts or delay is None:
                await self._record_failure(ctx, provider, kind, outcome.error)
                TOKEN_REFRESH_FAILURES.labels(provider.value, "transient").inc()
                raise outcome.error
            await self._deps.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - loop returns or raises

    def _backoff_s(
        self, attempt: int, error: TransientProviderError | RateLimited
    ) -> float | None:
        base: float = self._deps.settings.token_refresh_backoff_s * 2.0 ** (attempt - 1)
        delay: float = base * _RANDOM.uniform(0.5, 1.0)
        if isinstance(error, RateLimited) and error.retry_after_s is not None:
            if error.retry_after_s > MAX_RETRY_AFTER_S:
                return None
            delay = max(delay, error.retry_after_s)
        return delay

    async def _attempt(
        self,
        ctx: TenantContext,
        provider: ProviderKey,
        kind: IntegrationKind,
        replace: Secret | None,
        credentials: OAuthClientCredentials,
    ) -> Secret | _Retry:
        adapter = oauth_adapter(self._deps, provider, credentials)
        failure: ProviderError | None = None
        result: Secret | _Retry | None = None
        async with self._deps.db.tenant(ctx, write_lock=True) as session:
            store = IntegrationStore(session, self._deps.vault)
            tokens = await store.load(provider, kind, for_update=True)
            # Re-read under the lock: another request or worker may have
            # refreshed (or failed for good) while this one waited.
            if tokens.status is IntegrationStatus.NEEDS_REAUTH:
                failure = _reauth_error(tokens, tokens.last_error)
            elif self._fresh(tokens) and (
                replace is None or tokens.access_token != replace
            ):
                result = tokens.access_token
            elif tokens.refresh_token is None:
                message = (
                    f"crmflow holds no refresh token for this {provider.value} "
                    f"{kind.value} connection. Reconnect it to allow offline access."
                )
                await store.mark_needs_reauth(tokens.id, message)
                failure = AuthError(message)
            else:
                try:
                    grant = await adapter.refresh(
                        tokens.refresh_token, scopes=_refresh_scopes(tokens.scopes)
                    )
                except AuthError as exc:
                    await store.mark_needs_reauth(tokens.id, exc.message)
                    TOKEN_REFRESH_FAILURES.labels(provider.value, "reconnect").inc()
                    failure = exc
                except (TransientProviderError, RateLimited) as exc:
                    result = _Retry(exc)
                except ProviderError as exc:
                    await store.mark_error(tokens.id, exc.message)
                    TOKEN_REFRESH_FAILURES.labels(provider.value, "error").inc()
                    failure = exc
                else:
                    expires_at = (
                        self._deps.clock() + dt.timedelta(seconds=grant.expires_in_s)
                        if grant.expires_in_s is not None
                        else None
                    )
                    # One statement set, one commit: the access token and a
                    # rotated refresh token are stored together or not at all.
                    await store.mark_refreshed(
                        tokens.id,
                        access_token=grant.access_token,
                        refresh_token=grant.refresh_token,
                        expires_at=expires_at,
                        scopes=grant.scopes,
                    )
                    result = grant.access_token
        if failure is not None:
            raise failure
        assert result is not None  # noqa: S101 - every branch sets one of the two
        return result

    async def _record_failure(
        self,
        ctx: TenantContext,
        provider: ProviderKey,
        kind: IntegrationKind,
        error: ProviderError,
    ) -> None:
        async with self._deps.db.tenant(ctx) as session:
            store = IntegrationStore(session, self._deps.vault)
            found = await store.find(provider, kind)
            if found is not None:
                await store.mark_error(found.id, error.message)


def _refresh_scopes(granted: Sequence[str]) -> tuple[str, ...]:
    # Ask for what was granted (Microsoft refuses scopes beyond the grant with
    # AADSTS65001); Google ignores this (GoogleOAuth.refresh sends no scope).
    return tuple(granted)
