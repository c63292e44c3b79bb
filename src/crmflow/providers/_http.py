"""Shared HTTP plumbing for provider adapters: client factory and error mapping."""

from __future__ import annotations

import datetime as dt
import email.utils

import httpx

from crmflow.providers.base import (
    AuthError,
    ProviderError,
    RateLimited,
    TransientProviderError,
)

#: connect / read timeouts for provider calls, in seconds
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def new_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An httpx client with crmflow's timeouts (callers close it).

    ``transport`` lets unit tests inject ``httpx.MockTransport``.
    """
    return httpx.AsyncClient(
        timeout=TIMEOUT, follow_redirects=False, transport=transport
    )


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds, fractional allowed, or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def errors_from_response(response: httpx.Response, what: str) -> ProviderError:
    """The provider error for a failed response; ``what`` names the call for users."""
    status = response.status_code
    if status == 401:
        return AuthError(
            f"{what}: the provider no longer accepts this connection; reconnect it."
        )
    if status == 429:
        return RateLimited(
            retry_after_s(response), f"{what}: rate limited by the provider."
        )
    if status >= 500:
        return TransientProviderError(
            f"{what}: the provider answered {status}; retrying later."
        )
    return ProviderError(f"{what}: the provider answered {status}.")


def transport_error(exc: httpx.TransportError, what: str) -> TransientProviderError:
    """A network failure as a retryable provider error (no URL, no headers)."""
    return TransientProviderError(
        f"{what}: network error ({type(exc).__name__}); retrying later."
    )
