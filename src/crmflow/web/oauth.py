"""The browser side of OAuth: the only code that talks to the browser about it.

* ``GET /oauth/callback/{provider}`` — where Google and Microsoft send the
  browser back (the redirect URI registered with them,
  :data:`crmflow.config.OAUTH_CALLBACK_PATH`). It needs the signed-in UI
  session: someone who is not signed in goes through ``/login?next=...`` first
  and comes back here. The ``state`` must belong to the signed-in user (it is
  looked up as that user, once, before it expires): a response meant for
  someone else, replayed, or forged is refused with an error page and changes
  nothing. On success (or when the person cancelled at the provider) the
  browser is redirected to the page remembered for this connect
  (:func:`remember_return`), else to :data:`AFTER_CONNECT`, with a one-time
  message (what was connected, and which features are off because access was
  not granted).
* ``POST /oauth/connect/{provider}/{kind}`` — a form button ("Connect",
  "Reconnect", "Grant access"; CSRF-protected): starts a connect for the
  signed-in user and redirects to the provider. Form field ``feature`` (any
  number) limits the request to those features; form field ``next`` (a path
  on this site, checked by :func:`return_path`) is where the callback sends
  the browser afterwards.

Binding the state to the *user* rather than to one cookie is deliberate: the
sign-in in between (an expired session) starts a new session, and the
connect must survive it; another user's session still cannot use the state.

The return path, in contrast, lives in the session (keyed by a digest of the
state, never the state itself): it is only a convenience, so when a sign-in in
between clears the session the connect still completes and the browser lands
on :data:`AFTER_CONNECT` instead. Only same-origin paths are remembered, and
they are checked again when used, so the callback cannot become an open
redirect.
"""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from crmflow.connections.errors import ConnectCancelled, ProviderNotConfigured
from crmflow.connections.scopes import is_oauth
from crmflow.connections.service import view_of
from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.errors import CrmflowError, NotFound, ValidationFailed
from crmflow.providers.base import ProviderError
from crmflow.web.api.integrations import IntegrationsDep
from crmflow.web.ui.csrf import require_csrf
from crmflow.web.ui.pages import flash, render_error
from crmflow.web.ui.session import ViewerDep

_log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

#: where the browser lands after a connect: Settings -> Integrations
AFTER_CONNECT = "/settings/integrations"
#: headline of the error page when a connect cannot be completed
FAILED_TITLE = "Connecting failed"
#: session key of the pages to return to, per started connect (state digest -> path)
RETURN_KEY = "oauth_return"
#: pending return paths kept per session (the session is a size-limited cookie;
#: a person rarely has more than one connect open)
RETURN_LIMIT = 4
#: the longest return path remembered (characters)
RETURN_MAX_LENGTH = 500


def return_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site that a connect may return to.

    Accepts ``/path`` and ``/path?query`` only: no scheme, no host, no
    scheme-relative ``//host``, no backslashes or control characters (browsers
    read ``/\\host`` as another host), nothing under ``/oauth/`` (a loop) and
    nothing longer than :data:`RETURN_MAX_LENGTH`. Returns None otherwise.
    """
    if (
        not target
        or len(target) > RETURN_MAX_LENGTH
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.fragment:
        return None
    if parts.path == "/oauth" or parts.path.startswith("/oauth/"):
        return None
    return target


def _state_key(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()[:32]


def remember_return(request: Request, authorization_url: str, target: str) -> bool:
    """Send the browser to ``target`` after the connect that ``authorization_url``
    starts (instead of :data:`AFTER_CONNECT`).

    Returns False (and remembers nothing) when ``target`` is not a path
    :func:`return_path` accepts or the URL carries no ``state``.
    """
    path = return_path(target)
    state = parse_qs(urlsplit(authorization_url).query).get("state", [""])[0]
    if path is None or not state:
        return False
    pending = request.session.get(RETURN_KEY)
    kept = dict(pending) if isinstance(pending, dict) else {}
    kept[_state_key(state)] = path
    # dicts keep insertion order: drop the oldest pending connects first
    request.session[RETURN_KEY] = dict(list(kept.items())[-RETURN_LIMIT:])
    return True


def _take_return(request: Request, state: str) -> str | None:
    """The remembered return path of the connect ``state`` (once), checked again."""
    pending = request.session.get(RETURN_KEY)
    if not isinstance(pending, dict):
        return None
    kept = dict(pending)
    found = kept.pop(_state_key(state), None)
    if kept:
        request.session[RETURN_KEY] = kept
    else:
        request.session.pop(RETURN_KEY, None)
    return return_path(found) if isinstance(found, str) else None


def _provider(provider: str) -> ProviderKey:
    try:
        key = ProviderKey(provider)
    except ValueError:
        raise NotFound() from None
    if not is_oauth(key):
        raise NotFound()
    return key


def _after(outcome: str, provider: ProviderKey, kind: IntegrationKind | None) -> str:
    query = {"integration": outcome, "provider": provider.value}
    if kind is not None:
        query["kind"] = kind.value
    return f"{AFTER_CONNECT}?{urlencode(query)}"


@router.get("/oauth/callback/{provider}")
async def oauth_callback(
    provider: str,
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
) -> Response:
    """The provider's redirect back after consent (see the module docstring)."""
    key = _provider(provider)
    q = request.query_params
    state = q.get("state")
    if not state:
        return render_error(
            request,
            400,
            FAILED_TITLE,
            "This address is missing the sign-in response crmflow needs. Start "
            "connecting again from Settings.",
        )
    back = _take_return(request, state)
    try:
        result = await integrations.complete_connect(
            viewer.ctx, key, state=state, code=q.get("code"), error=q.get("error")
        )
    except ConnectCancelled as exc:
        flash(request, exc.message, "error")
        return RedirectResponse(back or _after("cancelled", key, None), status_code=303)
    except (ValidationFailed, ProviderError, ProviderNotConfigured) as exc:
        # Provider failures carry no secret (providers/base.py); only the class
        # is logged, the message goes to the person.
        _log.info("OAuth callback for %s refused: %s", key.value, type(exc).__name__)
        return _failed(request, exc)
    view = view_of(result.integration)
    who = f" as {result.integration.email}" if result.integration.email else ""
    verb = "Reconnected" if result.reconnected else "Connected"
    flash(request, f"{verb} {view.label}{who}.")
    summary = result.report.summary()
    if summary:
        flash(request, summary, "error")
    return RedirectResponse(
        back or _after("connected", key, result.integration.kind), status_code=303
    )


@router.post("/oauth/connect/{provider}/{kind}", dependencies=[Depends(require_csrf)])
async def oauth_connect(
    provider: str,
    kind: IntegrationKind,
    request: Request,
    viewer: ViewerDep,
    integrations: IntegrationsDep,
) -> Response:
    """A Connect / Reconnect / Grant access button: off to the provider."""
    key = _provider(provider)
    form = await request.form()
    features = [str(f) for f in form.getlist("feature")] or None
    try:
        started = await integrations.start_connect(
            viewer.ctx, kind, key, features=features
        )
    except (ValidationFailed, ProviderError, ProviderNotConfigured) as exc:
        return _failed(request, exc)
    target = form.get("next")
    if isinstance(target, str) and target:
        # An unacceptable path is ignored, not an error: the connect itself is
        # fine and lands on the default page.
        remember_return(request, started.authorization_url, target)
    return RedirectResponse(started.authorization_url, status_code=303)


def _failed(request: Request, exc: CrmflowError) -> Response:
    """The error page of a connect that could not go on."""
    if isinstance(exc, ValidationFailed):
        return render_error(request, 400, FAILED_TITLE, exc.message)
    if isinstance(exc, ProviderNotConfigured):
        return render_error(request, 409, FAILED_TITLE, exc.message)
    if isinstance(exc, ProviderError) and exc.retryable:
        return render_error(
            request,
            503,
            FAILED_TITLE,
            "The provider's sign-in service is not answering right now; nothing was "
            "changed. Start connecting again in a few minutes.",
        )
    return render_error(request, 502, FAILED_TITLE, exc.message)
