"""The Microsoft sandbox ASGI app: login.microsoftonline.com and graph.microsoft.com under one base URL.

Host -> path mapping (crmflow only swaps base URLs)::

    https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize  ->  {base}/{tenant}/oauth2/v2.0/authorize
    https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token      ->  {base}/{tenant}/oauth2/v2.0/token
    https://login.microsoftonline.com/{tenant}/v2.0/.well-known/…     ->  {base}/{tenant}/v2.0/.well-known/…
    https://graph.microsoft.com/v1.0/…                                ->  {base}/v1.0/…
    https://outlook.office.com/api/v2.0/… (upload sessions)           ->  {base}/outlook/api/v2.0/…
    control API (sandbox only)                                        ->  {base}/_sandbox/…

e.g. ``base = http://127.0.0.1:8765/microsoft``; msal's authority is then
``{base}/common`` (msal requires an ``https`` authority: serve the sandbox
with TLS for msal, see docs/sandbox.md (Part 2)).

Every Graph request goes through, in order: bearer-token check (401
``InvalidAuthenticationToken``), ``/users/{id}`` resolution, routing (400/405),
scope check (403), the per-mailbox throttle (429 ``ApplicationThrottled``
"MailboxConcurrency" beyond 4 in-flight requests; 429 ``TooManyRequests``
beyond 10,000 per 10 minutes), injected faults, then the handler. Every Graph
response carries ``request-id`` and ``client-request-id`` (echoed when sent).

The app works standalone (served at the server root: it strips the base
path) and when mounted under the base path by a parent Starlette app.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from crmflow.sandbox.faults import ERROR_FAULTS, Fault, FaultKind
from crmflow.sandbox.microsoft import api_calendar, api_mail, api_subscriptions
from crmflow.sandbox.microsoft.control import Control
from crmflow.sandbox.microsoft.errors import GraphError, bad_request, graph_json
from crmflow.sandbox.microsoft.faults import GraphFault, GraphFaultKind
from crmflow.sandbox.microsoft.login import Login
from crmflow.sandbox.microsoft.router import (
    Context,
    GraphRoute,
    match_route,
    new_request_id,
    split_path,
)
from crmflow.sandbox.microsoft.store import GraphSettings, MicrosoftStore
from crmflow.sandbox.microsoft.subscriptions import Dispatcher
from crmflow.sandbox.microsoft.timezones import format_utc
from crmflow.sandbox.requestlog import RequestLogMiddleware, annotate
from crmflow.sandbox.state import SandboxState

__all__ = ["GRAPH_ROUTES", "MicrosoftApp", "create_microsoft_app"]

#: every Graph route the sandbox serves (checked against msgraph-sdk by the tests)
GRAPH_ROUTES: list[GraphRoute] = [
    *api_calendar.ROUTES,
    *api_mail.ROUTES,
    *api_subscriptions.ROUTES,
]

#: "Maximum 20 requests" per JSON batch (msgraph_core BatchRequestContent.MAX_REQUESTS)
MAX_BATCH = 20
_GRAPH_FAULTS = frozenset(
    {
        GraphFaultKind.THROTTLED,
        GraphFaultKind.MAILBOX_CONCURRENCY,
        GraphFaultKind.IRRESOLVABLE_CONFLICT,
        GraphFaultKind.TRANSIENT_503,
        GraphFaultKind.GATEWAY_TIMEOUT,
    }
)
_WWW_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000"'
)


def throttled(retry_after_s: float | None, now_text: str) -> GraphError:
    """429 ``TooManyRequests`` with the throttling ``innerError`` (throttling.md)."""
    headers = (
        {"Retry-After": _seconds(retry_after_s)} if retry_after_s is not None else {}
    )
    return GraphError(
        429,
        "TooManyRequests",
        "Please retry again later.",
        headers=headers,
        inner={"code": "429", "message": "Please retry after", "status": "429"},
    )


def mailbox_concurrency() -> GraphError:
    """429 ``ApplicationThrottled`` (observed: terraform-provider-outlook #21, corso #3695)."""
    return GraphError(
        429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit."
    )


def _seconds(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


class DroppedResponse(Response):
    """Starts the response, sends half the body, then breaks the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        raise ConnectionAbortedError("drop_connection fault")


class MicrosoftApp:
    """The Microsoft sandbox (see the module docstring)."""

    def __init__(
        self,
        state: SandboxState,
        *,
        base_url: str,
        settings: GraphSettings | None = None,
    ) -> None:
        self.state = state
        self.base_url = base_url.rstrip("/")
        self.prefix = urlsplit(self.base_url).path.rstrip("/")
        with state.lock:
            self.store = state.extension(MicrosoftStore)
            if settings is not None:
                self.store.settings = settings
        self.dispatcher = Dispatcher(state, self.store)
        self.login = Login(state, self.store, self.base_url)
        self.control = Control(self)
        self.routes = list(GRAPH_ROUTES)
        self._shuffle = random.Random(0)  # noqa: S311 - batch response order, not security

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = self._relative_path(scope)
        request = Request(scope, receive)
        response = await self.dispatch(request, path)
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.dispatcher.ensure_started()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.dispatcher.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _relative_path(self, scope: Scope) -> str:
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
            if root.rstrip("/").endswith(self.prefix):
                return path or "/"
        if self.prefix and path.startswith(self.prefix + "/"):
            path = path[len(self.prefix) :]
        return path or "/"

    async def dispatch(self, request: Request, path: str) -> Response:
        """Route one request by its path relative to the base."""
        self.dispatcher.ensure_started()
        if path.startswith("/v1.0/") or path == "/v1.0":
            return await self.graph(request, path[len("/v1.0") :])
        if path.startswith("/_sandbox"):
            return await self.control.handle(request, path[len("/_sandbox") :])
        if path.startswith("/outlook/api/v2.0/"):
            return await self.upload(request)
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2:
            tenant, rest = parts[0], "/".join(parts[1:])
            method = request.method
            if rest == "oauth2/v2.0/authorize" and method == "GET":
                return await self.login.authorize(request, tenant)
            if rest == "oauth2/v2.0/token" and method == "POST":
                return await self.login.token(request, tenant)
            if rest == "login" and method == "POST":
                return await self.login.consent(request, tenant)
            if rest == "v2.0/.well-known/openid-configuration" and method == "GET":
                return self.login.openid_configuration(tenant)
            if rest == "discovery/v2.0/keys" and method == "GET":
                return self.login.jwks()
        return JSONResponse({"error": f"no such sandbox path: {path}"}, status_code=404)

    # -- Graph --------------------------------------------------------------------------------

    async def graph(self, request: Request, path: str) -> Response:
        """Serve one Graph request (``path`` after ``/v1.0``)."""
        request_id = new_request_id()
        client_request_id = request.headers.get("client-request-id") or request_id
        ids = {"request-id": request_id, "client-request-id": client_request_id}
        try:
            segments = split_path(unquote(path))
            if [s.casefold() for s in segments] == ["$batch"]:
                if request.method != "POST":
                    raise GraphError(
                        405,
                        "Request_BadRequest",
                        "Specified HTTP method is not allowed for the request target.",
                    )
                return await self.batch(request, ids)
            return await self._graph(
                request, path, segments, request_id, client_request_id
            )
        except GraphError as exc:
            response = exc.response(
                request_id=request_id,
                client_request_id=client_request_id,
                now=self.state.clock.now(),
            )
            response.headers.update(ids)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = _WWW_AUTHENTICATE
            return response

    def _authenticate(self, request: Request) -> Any:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not token or scheme.casefold() != "bearer":
            raise GraphError(
                401, "InvalidAuthenticationToken", "Access token is empty."
            )
        with self.state.lock:
            found = self.store.identity.access_token(token.strip())
            now_ms = self.state.clock.now_ms()
            if found is None:
                raise GraphError(
                    401,
                    "InvalidAuthenticationToken",
                    "Access token validation failure.",
                )
            if found.revoked:
                raise GraphError(
                    401,
                    "InvalidAuthenticationToken",
                    "Access token has expired or is not yet valid.",
                )
            if found.expires_ms <= now_ms:
                raise GraphError(
                    401,
                    "InvalidAuthenticationToken",
                    "Lifetime validation failed, the token is expired.",
                )
            return found

    def _resolve_users(self, segments: list[str], email: str) -> list[str]:
        if len(segments) >= 2 and segments[0].casefold() == "users":
            with self.state.lock:
                target = self.store.user_by_id(segments[1])
            if target is None:
                raise GraphError(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{segments[1]}' does not exist or one of its queried reference-property objects are not present.",
                )
            if target != email:
                raise GraphError(
                    403,
                    "ErrorAccessDenied",
                    "Access is denied. Check credentials and try again.",
                )
            return ["me", *segments[2:]]
        return segments

    async def _graph(
        self,
        request: Request,
        path: str,
        segments: list[str],
        request_id: str,
        client_request_id: str,
    ) -> Response:
        token = self._authenticate(request)
        email: str = token.email
        note = annotate(request.scope)
        note.user = email
        segments = self._resolve_users(segments, email)
        route, params = match_route(self.routes, request.method, segments)
        note.api_method = route.name
        if route.scopes and not route.scopes & set(token.scopes):
            if route.name == "graph.me.get":
                raise GraphError(
                    403,
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                )
            raise GraphError(
                403,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            )
        self._enter(email)
        try:
            await self._request_faults(request, email, route.name)
            ctx = Context(
                request=request,
                state=self.state,
                store=self.store,
                dispatcher=self.dispatcher,
                base_url=self.base_url,
                email=email,
                token=token,
                route=route,
                params=params,
                request_id=request_id,
                client_request_id=client_request_id,
                prefer=_prefer(request),
            )
            ctx.path = path
            response = await route.handler(ctx)
        finally:
            self._leave(email)
        if self._draw_shared({FaultKind.DROP_CONNECTION}, email, route.name):
            note.dropped = True
            return DroppedResponse(
                bytes(response.body),
                status_code=response.status_code,
                headers=dict(response.headers),
            )
        return response

    def _enter(self, email: str) -> None:
        settings = self.store.settings
        now = self.state.clock.now().timestamp()
        with self.state.lock:
            in_flight = self.store.in_flight.get(email, 0)
            if in_flight >= settings.mailbox_concurrency:
                raise mailbox_concurrency()
            times = [
                t
                for t in self.store.request_times.get(email, [])
                if t > now - settings.mailbox_request_window_s
            ]
            if len(times) >= settings.mailbox_request_limit:
                self.store.request_times[email] = times
                raise throttled(
                    max(times[0] + settings.mailbox_request_window_s - now, 0.001),
                    format_utc(self.state.clock.now()),
                )
            times.append(now)
            self.store.request_times[email] = times
            self.store.in_flight[email] = in_flight + 1

    def _leave(self, email: str) -> None:
        with self.state.lock:
            left = self.store.in_flight.get(email, 1) - 1
            if left > 0:
                self.store.in_flight[email] = left
            else:
                self.store.in_flight.pop(email, None)

    def _draw_shared(
        self,
        kinds: set[FaultKind] | frozenset[FaultKind],
        email: str | None,
        method: str,
    ) -> list[Fault]:
        return self.state.faults.draw(kinds, user=email, api="graph", method=method)

    async def _request_faults(self, request: Request, email: str, method: str) -> None:
        shared = self._draw_shared(ERROR_FAULTS | {FaultKind.LATENCY}, email, method)
        graph = self.store.faults.draw(
            _GRAPH_FAULTS, user=email, api="graph", method=method
        )
        for fault in shared:
            if fault.kind is FaultKind.LATENCY:
                await asyncio.sleep(fault.latency_ms / 1000)
        for fault in shared:
            if fault.kind is not FaultKind.LATENCY:
                raise _shared_error(fault)
        for gfault in graph:
            raise _graph_error(gfault)

    # -- $batch --------------------------------------------------------------------------------

    async def batch(self, request: Request, ids: dict[str, str]) -> Response:
        """``POST /v1.0/$batch``: up to 20 requests, per-item status, 424 for failed dependencies."""
        annotate(request.scope).api_method = "graph.batch"
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError:
            payload = None
        items = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and i.get("id") and i.get("url") and i.get("method")
            for i in items
        ):
            raise bad_request("Invalid batch payload format.")
        if len(items) > MAX_BATCH:
            raise bad_request(
                f"The number of batch requests ({len(items)}) exceeds the limit of {MAX_BATCH}."
            )
        if len({str(i["id"]) for i in items}) != len(items):
            raise bad_request("Batch request ids must be unique.")
        status: dict[str, int] = {}
        responses: list[dict[str, Any]] = []
        pending = list(items)
        while pending:
            progressed = False
            for item in list(pending):
                deps = [str(d) for d in item.get("dependsOn") or []]
                if any(d not in status for d in deps):
                    if any(d not in {str(i["id"]) for i in items} for d in deps):
                        raise bad_request("dependsOn references an unknown request id.")
                    continue
                pending.remove(item)
                progressed = True
                item_id = str(item["id"])
                if any(status[d] >= 400 for d in deps):
                    status[item_id] = 424
                    responses.append(
                        {
                            "id": item_id,
                            "status": 424,
                            "headers": {},
                            "body": {
                                "error": {
                                    "code": "FailedDependency",
                                    "message": "Failed dependency.",
                                }
                            },
                        }
                    )
                    continue
                result = await self._batch_item(request, item)
                status[item_id] = int(result["status"])
                responses.append(result)
            if not progressed:
                raise bad_request("dependsOn forms a cycle.")
        # "responses … in any order"
        self._shuffle.shuffle(responses)
        return graph_json({"responses": responses}, headers=ids)

    async def _batch_item(
        self, request: Request, item: dict[str, Any]
    ) -> dict[str, Any]:
        url = str(item["url"])
        if "://" in url:
            return {
                "id": str(item["id"]),
                "status": 400,
                "headers": {},
                "body": {
                    "error": {
                        "code": "BadRequest",
                        "message": "Batch request URLs must be relative.",
                    }
                },
            }
        target = "/" + url.lstrip("/")
        path, _, query = target.partition("?")
        headers = {
            str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()
        }
        body_value = item.get("body")
        body = b""
        if body_value is not None:
            if "content-type" not in headers:
                return {
                    "id": str(item["id"]),
                    "status": 400,
                    "headers": {},
                    "body": {
                        "error": {
                            "code": "BadRequest",
                            "message": "Content-Type header must be specified when a body is present.",
                        }
                    },
                }
            body = (
                json.dumps(body_value).encode()
                if not isinstance(body_value, str)
                else body_value.encode()
            )
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        auth = request.headers.get("authorization")
        if auth and "authorization" not in headers:
            raw_headers.append((b"authorization", auth.encode()))
        scope: Scope = {
            "type": "http",
            "method": str(item["method"]).upper(),
            "path": f"{self.prefix}/v1.0{path}",
            "raw_path": f"{self.prefix}/v1.0{path}".encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": raw_headers,
            "scheme": request.url.scheme,
            "server": request.scope.get("server"),
            "client": request.scope.get("client"),
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        sub = Request(scope, receive)
        response = await self.graph(sub, path)
        out_headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower()
            in {"content-type", "retry-after", "location", "preference-applied", "etag"}
        }
        raw = bytes(response.body)
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
        result: dict[str, Any] = {
            "id": str(item["id"]),
            "status": response.status_code,
            "headers": out_headers,
        }
        if parsed is not None:
            result["body"] = parsed
        return result

    # -- upload sessions ----------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        """Ranged ``PUT`` to an upload URL (authorized by its ``authtoken``)."""
        annotate(request.scope).api_method = "outlook.attachmentSession.put"
        if request.method != "PUT":
            return JSONResponse(
                {"error": {"code": "MethodNotAllowed", "message": "Use PUT."}},
                status_code=405,
            )
        token = request.query_params.get("authtoken", "")
        with self.state.lock:
            owner = self.store.upload_tokens.get(token)
        if owner is None:
            return JSONResponse(
                {
                    "error": {
                        "code": "InvalidAuthenticationToken",
                        "message": "The authtoken is not valid.",
                    }
                },
                status_code=401,
            )
        email, session_id = owner
        annotate(request.scope).user = email
        content_range = request.headers.get("content-range", "")
        chunk = await request.body()
        try:
            unit, _, spec = content_range.partition(" ")
            span, _, total = spec.partition("/")
            first_s, _, last_s = span.partition("-")
            first, last, size = int(first_s), int(last_s), int(total)
            if unit != "bytes":
                raise ValueError(unit)
        except ValueError:
            return JSONResponse(
                {
                    "error": {
                        "code": "InvalidRange",
                        "message": "A Content-Range header is required.",
                    }
                },
                status_code=400,
            )
        now = self.state.clock.now()
        with self.state.lock:
            box = self.store.mail(email)
            try:
                session, att = box.upload_chunk(
                    session_id, first, last, size, chunk, now
                )
            except GraphError as exc:
                return exc.response(
                    request_id=new_request_id(),
                    client_request_id=new_request_id(),
                    now=now,
                )
            self.state.mark_dirty()
            if att is None:
                received = len(
                    session.received_b64
                ) * 3 // 4 - session.received_b64.count("=")
                return JSONResponse(
                    {
                        "expirationDateTime": format_utc(session.expires),
                        "nextExpectedRanges": [f"{received}-{session.size - 1}"],
                    },
                    status_code=200,
                )
            self.store.upload_tokens.pop(token, None)
            msg = box.message(session.message_id)
        return Response(
            status_code=201,
            headers={
                "Location": f"{self.base_url}/v1.0/users('{email}')/messages('{msg.id}')/attachments('{att.id}')"
            },
        )


def _prefer(request: Request) -> list[str]:
    from crmflow.sandbox.microsoft.odata import parse_prefer

    return parse_prefer(request.headers.getlist("prefer"))


def _shared_error(fault: Fault) -> GraphError:
    kind = fault.kind
    retry = float(fault.retry_after_s) if fault.retry_after_s is not None else None
    if kind is FaultKind.CONCURRENT_REQUESTS:
        return mailbox_concurrency()
    if kind in {
        FaultKind.RATE_LIMIT_403,
        FaultKind.RATE_LIMIT_429,
        FaultKind.USER_RATE_LIMIT,
        FaultKind.QUOTA_EXCEEDED,
    }:
        return throttled(retry, "")
    if kind is FaultKind.BACKEND_ERROR:
        return GraphError(
            500, "generalException", "General exception while processing."
        )
    if kind is FaultKind.UNAVAILABLE:
        headers = {"Retry-After": _seconds(retry)} if retry is not None else {}
        return GraphError(
            503, "ServiceUnavailable", "Service Unavailable", headers=headers
        )
    return GraphError(
        401, "InvalidAuthenticationToken", "Access token validation failure."
    )


def _graph_error(fault: GraphFault) -> GraphError:
    kind = fault.kind
    if kind is GraphFaultKind.THROTTLED:
        return throttled(fault.retry_after_s, "")
    if kind is GraphFaultKind.MAILBOX_CONCURRENCY:
        return mailbox_concurrency()
    if kind is GraphFaultKind.IRRESOLVABLE_CONFLICT:
        from crmflow.sandbox.microsoft.errors import irresolvable_conflict

        return irresolvable_conflict()
    if kind is GraphFaultKind.TRANSIENT_503:
        headers = (
            {"Retry-After": _seconds(fault.retry_after_s)}
            if fault.retry_after_s is not None
            else {}
        )
        return GraphError(
            503,
            "ErrorInternalServerTransientError",
            "A transient error occurred. Please try again.",
            headers=headers,
        )
    return GraphError(504, "UnknownError", "")


def create_microsoft_app(
    state: SandboxState,
    *,
    base_url: str,
    settings: GraphSettings | None = None,
    log_requests: bool = True,
) -> MicrosoftApp | RequestLogMiddleware:
    """Return the Microsoft sandbox ASGI app serving ``base_url``'s path.

    Args:
        state: the shared sandbox state (users, clock, faults, persistence).
        base_url: external URL of the Microsoft sandbox, e.g.
            ``http://127.0.0.1:8765/microsoft``; links (nextLink, deltaLink,
            upload URLs, OpenID endpoints) are built from it.
        settings: Graph timeouts and limits (tests shorten the 10 s / 3 s ones).
        log_requests: wrap in :class:`RequestLogMiddleware` (turn off when a
            parent app already logs).
    """
    app = MicrosoftApp(state, base_url=base_url, settings=settings)
    if not log_requests:
        return app
    return RequestLogMiddleware(app, state.requests, after_write=state.flush)
