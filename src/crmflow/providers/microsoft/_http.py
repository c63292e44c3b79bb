"""HTTP helpers the Graph adapters share (calendar and mail).

Graph's error envelope is ``{"error": {"code", "message", "innerError"}}``
(microsoft-graph.md §4); the code, never the message, says what happened. A
forgotten delta token is 410 or a ``syncStateNotFound`` / ``resyncRequired``
code, which Graph spells in PascalCase on the wire: codes are compared
case-insensitively (§3.3).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from crmflow.providers._http import errors_from_response, retry_after_s
from crmflow.providers.base import (
    AuthError,
    ProviderError,
    RateLimited,
    TransientProviderError,
)

#: error codes of a forgotten delta token, compared case-insensitively (the wire
#: says ``SyncStateNotFound``, the docs ``syncStateNotFound``)
SYNC_STATE_CODES = frozenset({"syncstatenotfound", "resyncrequired"})


def _error_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def error_code(response: httpx.Response) -> str | None:
    """The ``error.code`` of a Graph error body (None if there is none)."""
    error = _error_body(response)
    return str(error.get("code")) if error is not None else None


def error_message(response: httpx.Response) -> str | None:
    """The ``error.message`` of a Graph error body (None if there is none)."""
    error = _error_body(response)
    message = error.get("message") if error is not None else None
    return str(message) if message else None


def graph_error(response: httpx.Response, what: str) -> ProviderError:
    """A non-2xx Graph response as a provider error (the generic cases)."""
    status = response.status_code
    if status == 429 or (status == 503 and response.headers.get("Retry-After")):
        return RateLimited(
            retry_after_s(response), f"{what}: Microsoft Graph asks to slow down."
        )
    if status == 401:
        return AuthError(
            f"{what}: Microsoft no longer accepts this connection; reconnect it."
        )
    if status >= 500:
        return TransientProviderError(
            f"{what}: Microsoft Graph answered {status}; retrying later."
        )
    return errors_from_response(response, what)


def sync_state_lost(response: httpx.Response) -> bool:
    """Whether Graph says it forgot a delta token (410 or its error codes)."""
    if response.status_code == 410:
        return True
    code = error_code(response)
    return response.status_code >= 400 and (code or "").lower() in SYNC_STATE_CODES


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """A 200 answer's JSON object.

    Raises:
        ProviderError: a non-200 answer (mapped by :func:`graph_error`).
        TransientProviderError: an unreadable page.
    """
    if response.status_code != 200:
        raise graph_error(response, what)
    try:
        page = response.json()
    except ValueError:
        page = None
    if not isinstance(page, dict):
        raise TransientProviderError(
            f"{what}: Graph sent an unreadable page; retrying later."
        )
    return page


def same_origin(root: str, link: str) -> bool:
    """Whether ``link`` points at the scheme and host of ``root`` (the bearer
    token goes with a followed link, so it must not lead elsewhere)."""
    mine, theirs = urlsplit(root), urlsplit(link)
    return (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)


__all__ = [
    "SYNC_STATE_CODES",
    "error_code",
    "error_message",
    "graph_error",
    "json_object",
    "same_origin",
    "sync_state_lost",
]
