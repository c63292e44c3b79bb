"""The browser side of OAuth: the only code that talks to the browser about it.

* ``GET /oauth/callback/{provider}`` — where Google and Microsoft send the
  browser back (the redirect URI registered with them,
  :data:`crmflow.config.OAUTH_CALLBACK_PATH`). It needs the signed-in UI
  session: someone who is not signed in goes through ``/login?next=...`` first
  and comes back here. The ``state`` must belong to the signed-in user (it is
  looked up as that user, once, before it expires): a response meant for
  someone else, replayed, or forged is refused with an error page and changes
  nothing. On success the browser is redirected to :data:`AFTER_CONNECT` with
  a one-time message (what was connected, and which features are off because
  access was not granted).
* ``POST /oauth/connect/{provider}/{kind}`` — a form button ("Connect",
  "Reconnect", "Grant access"; CSRF-protected): starts a connect for the
  signed-in user and redirects to the provider. Form field ``feature`` (any
  number) limits the request to those features.

Binding the state to the *user* rather than to one cookie is deliberate: the
sign-in in between (an expired session) starts a new session, and the
connect must survive it; another user's session still cannot use the state.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

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
    try:
        result = await integrations.complete_connect(
            viewer.ctx, key, state=state, code=q.get("code"), error=q.get("error")
        )
    except ConnectCancelled as exc:
        flash(request, exc.message, "error")
        return RedirectResponse(_after("cancelled", key, None), status_code=303)
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
        _after("connected", key, result.integration.kind), status_code=303
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
