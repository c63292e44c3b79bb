"""Shared HTTP plumbing for provider adapters: client factory and error mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from crmflow.domain.secret import Secret
from crmflow.providers._retry import RetryTransport, shared_ssl_context
from crmflow.providers._retry import retry_after_s as retry_after_s  # re-exported
from crmflow.providers.base import (
    AuthError,
    ItemNotFound,
    PreconditionFailed,
    ProviderError,
    RateLimited,
    TransientProviderError,
)

#: connect / read timeouts for provider calls, in seconds
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def new_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An httpx client with crmflow's timeouts (callers close it).

    ``transport`` lets unit tests inject ``httpx.MockTransport``; a
    :class:`~crmflow.providers._retry.RetryTransport` (the services') gives
    the client its retry policy with a connection pool of its own.
    """
    if isinstance(transport, RetryTransport):
        transport = transport.for_client()
    return httpx.AsyncClient(
        timeout=TIMEOUT,
        follow_redirects=False,
        transport=transport,
        # used when there is no transport: one TLS context for all clients
        verify=shared_ssl_context(),
    )


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


async def send_with_bearer(
    transport: httpx.AsyncBaseTransport | None,
    access_token: Callable[[], Awaitable[Secret]],
    method: str,
    url: str,
    what: str,
    *,
    params: Mapping[str, str | int] | None = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> httpx.Response:
    """One request with a fresh bearer token; network failures become provider errors.

    Uses ``client`` when given (paging keeps one connection), else a client of its
    own. The response is returned whatever its status: callers map statuses.

    Raises:
        TransientProviderError: the request never got a complete response.
    """
    token = await access_token()
    all_headers = {"Authorization": f"Bearer {token.reveal()}", **(headers or {})}
    try:
        if client is not None:
            return await client.request(
                method, url, params=params, json=json, headers=all_headers
            )
        async with new_client(transport) as own:
            return await own.request(
                method, url, params=params, json=json, headers=all_headers
            )
    except httpx.TransportError as exc:
        raise transport_error(exc, what) from None
    except httpx.HTTPError as exc:  # e.g. a malformed response
        raise TransientProviderError(
            f"{what}: HTTP error ({type(exc).__name__}); retrying later."
        ) from None


def raise_for_conditional_write(
    response: httpx.Response,
    what: str,
    where: str,
    error: Callable[[httpx.Response, str], ProviderError],
) -> None:
    """Map the answer to an ``If-Match`` write: 2xx passes, 412 is
    ``PreconditionFailed``, 404/410 ``ItemNotFound``, anything else ``error``.

    ``where`` names the provider for the user ("at Google", "in Outlook").
    """
    status = response.status_code
    if status in (200, 204):
        return
    if status == 412:
        raise PreconditionFailed(f"{what}: the event changed {where} meanwhile.")
    if status in (404, 410):
        raise ItemNotFound(f"{what}: the event no longer exists {where}.")
    raise error(response, what)
