"""CSRF protection of the UI's forms: one random token per session.

The synchronizer-token pattern (OWASP CSRF Prevention Cheat Sheet): the token is
created with the session, stored in it (the session cookie is signed, HttpOnly
and ``SameSite=Lax``), rendered into every form as the hidden field
``csrf_token`` and compared in constant time on every state-changing request.
``SameSite=Lax`` alone already stops cross-site POSTs in current browsers; the
token also covers older browsers and same-site attackers (sibling subdomains).

The sign-in form is protected too ("login CSRF"), so the token exists before
anyone signs in; signing in replaces it.

Public surface: :data:`CSRF_FIELD`, :func:`csrf_token`, :func:`rotate_csrf_token`,
:func:`require_csrf` (a FastAPI dependency for POST routes).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import HTTPException, Request

#: the hidden form field that carries the token
CSRF_FIELD = "csrf_token"
#: the header alternative, for scripts (``fetch``) that post without a form
CSRF_HEADER = "X-CSRF-Token"
_SESSION_KEY = "csrf"
_TOKEN_BYTES = 32  # 256 random bits

REJECTED = (
    "This form has expired or was not sent from a crmflow page, so nothing was "
    "saved. Go back, reload the page and submit the form again."
)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get(_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        request.session[_SESSION_KEY] = token
    return token


def rotate_csrf_token(request: Request) -> str:
    """Replace the token (on sign-in and password change) and return the new one."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    request.session[_SESSION_KEY] = token
    return token


async def require_csrf(request: Request) -> None:
    """Reject the request unless it carries this session's CSRF token.

    Reads the form (Starlette caches it, so the route can read it again).

    Raises:
        HTTPException: 403 when the token is missing or wrong.
    """
    expected = request.session.get(_SESSION_KEY)
    sent: object = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        sent = form.get(CSRF_FIELD)
    if (
        not isinstance(expected, str)
        or not expected
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise HTTPException(status_code=403, detail=REJECTED)
