"""The Google sandbox as one mountable ASGI app.

All of Google's hosts collapse into one URL prefix because their paths do not
collide. With the sandbox's Google base ``B`` (e.g.
``http://127.0.0.1:8765/google/``) crmflow swaps only base URLs:

==========================================================  ============================================
production                                                  sandbox
==========================================================  ============================================
``https://accounts.google.com/o/oauth2/v2/auth``            ``B + "o/oauth2/v2/auth"``
``https://oauth2.googleapis.com/token``                     ``B + "token"``
``https://oauth2.googleapis.com/revoke``                    ``B + "revoke"``
``https://oauth2.googleapis.com/tokeninfo``                 ``B + "tokeninfo"``
``https://openidconnect.googleapis.com/v1/userinfo``        ``B + "v1/userinfo"``
``https://www.googleapis.com/oauth2/v3/userinfo``           ``B + "oauth2/v3/userinfo"``
``https://www.googleapis.com/oauth2/v2/userinfo``           ``B + "oauth2/v2/userinfo"``
``https://www.googleapis.com/oauth2/v3/certs``              ``B + "oauth2/v3/certs"``
``https://www.googleapis.com/calendar/v3/``                 ``B + "calendar/v3/"`` (client ``api_endpoint``)
``https://gmail.googleapis.com/`` (paths ``gmail/v1/...``)  ``B`` (client ``api_endpoint``)
``https://www.googleapis.com/batch/calendar/v3``            ``B + "batch/calendar/v3"``
``https://gmail.googleapis.com/batch/gmail/v1``             ``B + "batch/gmail/v1"``
==========================================================  ============================================

Control API: ``B + "_sandbox/..."`` (:mod:`crmflow.sandbox.control`,
:mod:`crmflow.sandbox.google.control`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from crmflow.sandbox._http import json_response
from crmflow.sandbox.control import control_routes
from crmflow.sandbox.google.api import ApiCall, ApiDispatcher, ApiService, JsonResult
from crmflow.sandbox.google.batch import handle_batch
from crmflow.sandbox.google.calendar import calendar_service
from crmflow.sandbox.google.control import google_control_routes
from crmflow.sandbox.google.gmail import gmail_service
from crmflow.sandbox.google.identity import EMAIL_SCOPE, PROFILE_SCOPE
from crmflow.sandbox.google.oauth import OAuthEndpoints
from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.requestlog import annotate
from crmflow.sandbox.specs.discovery import bundled_document
from crmflow.sandbox.state import SandboxState

__all__ = ["create_google_app", "mount_url_factory"]

_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def mount_url_factory(base_url: str | None) -> Callable[[Request], str]:
    """Return a function giving the public URL of the Google mount (ending in "/").

    With ``base_url`` (e.g. behind a proxy) that value is used; otherwise the
    URL is derived from each request's scheme, host and mount path.
    """
    fixed = None if base_url is None else base_url.rstrip("/") + "/"

    def mount_url(request: Request) -> str:
        if fixed is not None:
            return fixed
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}{root}/"

    return mount_url


def _oauth2_service() -> ApiService:
    """www.googleapis.com/oauth2/v2/userinfo from the oauth2 v2 discovery document."""
    service = ApiService(
        bundled_document("oauth2"),
        api_name="oauth",
        flavor="aip",
        esf_service="oauth2.googleapis.com",
        base_path="",
    )

    async def userinfo(call: ApiCall) -> JsonResult:
        with call.state.lock:
            user = call.state.users.get(call.principal.email)
        if user is None:  # pragma: no cover - tokens only exist for users
            return None
        out: dict[str, object] = {"id": user.sub}
        if EMAIL_SCOPE in call.principal.scopes:
            out.update(email=user.email, verified_email=True)
        if PROFILE_SCOPE in call.principal.scopes:
            out.update(
                name=user.name,
                given_name=user.given_name,
                family_name=user.family_name,
                picture="https://lh3.googleusercontent.com/a/default-user=s96-c",
            )
        return out

    service.route("oauth2.userinfo.get")(userinfo)
    service.route("oauth2.userinfo.v2.me.get")(userinfo)
    return service


def create_google_app(state: SandboxState, *, base_url: str | None = None) -> Starlette:
    """Build the Google sandbox app, mountable at any prefix (``/google`` by convention).

    Args:
        state: the shared sandbox state.
        base_url: public URL of the mount; None derives it per request.
    """
    mount_url = mount_url_factory(base_url)
    state.extension(GoogleStore)  # create (and restore) the Google data eagerly
    dispatcher = ApiDispatcher(
        state, [calendar_service(), gmail_service(), _oauth2_service()]
    )
    oauth = OAuthEndpoints(state, mount_url)

    async def api(request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        root = str(request.scope.get("root_path", ""))
        text = raw_path.decode("latin-1")
        # raw_path is the full (still percent-encoded) path; strip the mount.
        rel = text[len(root) :] if text.startswith(root) else text
        return await dispatcher.handle(request, rel.lstrip("/"), mount_url(request))

    async def index(request: Request) -> Response:
        base = mount_url(request)
        return json_response(
            {
                "authorization_endpoint": base + "o/oauth2/v2/auth",
                "token_endpoint": base + "token",
                "revocation_endpoint": base + "revoke",
                "userinfo_endpoint": base + "v1/userinfo",
                "calendar_api_endpoint": base + "calendar/v3/",
                "gmail_api_endpoint": base,
                "control": base + "_sandbox/",
            }
        )

    def batch_endpoint(api_name: str) -> Callable[[Request], Awaitable[Response]]:
        async def batch(request: Request) -> Response:
            annotate(request.scope).api_method = f"{api_name}.batch"
            return await handle_batch(request, app, api=api_name, log=state.requests)

        return batch

    routes = [
        *oauth.routes(),
        Route("/batch/calendar/v3", batch_endpoint("calendar"), methods=["POST"]),
        Route("/batch/gmail/v1", batch_endpoint("gmail"), methods=["POST"]),
        Route("/", index, methods=["GET"]),
        Mount(
            "/_sandbox",
            routes=control_routes(state) + google_control_routes(state, oauth),
        ),
        Route("/{path:path}", api, methods=_ALL_METHODS),
    ]
    app = Starlette(routes=routes)
    return app
