"""What the Google adapters share about Google's HTTP answers (google-apis.md §5).

Google's error envelope carries ``error.message`` (for people) and
``error.errors[].reason`` (for programs); :func:`google_error` maps a failed
response onto the provider error tree the same way for every Google API:

* 429, and 403 with a rate-limit reason -> ``RateLimited`` with ``Retry-After``;
* 403 ``insufficientPermissions`` -> ``MissingScope`` naming the scope to grant;
* 401 -> ``AuthError``; 5xx -> ``TransientProviderError``;
* anything else -> :func:`crmflow.providers._http.errors_from_response`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import httpx

from crmflow.providers._http import errors_from_response, retry_after_s
from crmflow.providers.base import (
    AuthError,
    MissingScope,
    ProviderError,
    RateLimited,
    TransientProviderError,
)

__all__ = ["error_message", "error_reasons", "google_error"]


def _error_object(response: httpx.Response) -> dict[str, object] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def error_reasons(response: httpx.Response) -> set[str]:
    """The ``reason`` values of Google's error envelope (empty if there are none)."""
    error = _error_object(response)
    if error is None:
        return set()
    items = error.get("errors")
    if not isinstance(items, list):
        return set()
    return {
        str(e.get("reason")) for e in items if isinstance(e, dict) and e.get("reason")
    }


def error_message(response: httpx.Response) -> str | None:
    """Google's ``error.message`` (meant for people), or None."""
    error = _error_object(response)
    message = error.get("message") if error is not None else None
    return str(message) if isinstance(message, str) and message else None


def google_error(
    response: httpx.Response,
    what: str,
    *,
    product: str,
    scopes: Iterable[str],
    rate_reasons: Collection[str],
) -> ProviderError:
    """A non-2xx response of a Google API as a provider error.

    ``what`` names the call for users; ``product`` names the API in messages
    ("Google Calendar", "Gmail"); ``scopes`` is what to grant when the token
    lacks a permission; ``rate_reasons`` are the 403 reasons that mean "slow
    down" for this API.
    """
    status = response.status_code
    reasons = error_reasons(response)
    if (status == 403 and reasons & set(rate_reasons)) or status == 429:
        return RateLimited(
            retry_after_s(response), f"{what}: rate limited by {product}."
        )
    if status == 403 and "insufficientPermissions" in reasons:
        return MissingScope(scopes)
    if status == 401:
        return AuthError(
            f"{what}: Google no longer accepts this connection; reconnect it."
        )
    if status >= 500:
        return TransientProviderError(
            f"{what}: Google answered {status}; retrying later."
        )
    return errors_from_response(response, what)
