"""The discovery-driven dispatcher for Google's REST APIs.

Every request below the Google mount that is not OAuth or control traffic goes
through :class:`ApiDispatcher`, in Google's order of checks:

1. route — match path and HTTP method against the discovery documents
   (``calendar/v3/...``, ``gmail/v1/...``, ``oauth2/v2/userinfo``); unknown -> 404.
2. authenticate — ``Authorization: Bearer``, or the ``access_token`` /
   ``oauth_token`` query parameters; missing -> 401 ``required``, unknown /
   expired / revoked -> 401 ``authError`` (google-apis.md §5.1).
3. faults — the caller's injected quota / server faults, latency, drops.
4. scopes — the token needs one of the method's discovery ``scopes``; else 403
   ``insufficientPermissions`` / ``ACCESS_TOKEN_SCOPE_INSUFFICIENT``.
5. parameters — typed, enum- and range-checked from discovery; unknown -> 400.
6. body — JSON parsed and type-checked against the request schema.
7. handler — returns JSON (rendered with the ``fields`` selection), None (204)
   or a ready Response (304, errors).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import Message as EmailMessage
from email.parser import BytesParser
from email.policy import compat32
from typing import Any, TypeAlias

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from crmflow.sandbox._http import json_response
from crmflow.sandbox.faults import ERROR_FAULTS, REQUEST_FAULTS, FaultKind
from crmflow.sandbox.google import errors
from crmflow.sandbox.google.errors import Flavor, GoogleApiError
from crmflow.sandbox.google.fields import FieldsError, apply_fields, parse_fields
from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.requestlog import annotate
from crmflow.sandbox.specs.discovery import ApiMethod, DiscoveryDocument
from crmflow.sandbox.specs.params import ParameterProblem, ProblemKind, parse_query
from crmflow.sandbox.specs.schema import check_value
from crmflow.sandbox.state import SandboxState

__all__ = ["ApiCall", "ApiDispatcher", "ApiService", "Principal"]

JsonResult: TypeAlias = dict[str, Any] | Response | None
Handler: TypeAlias = Callable[["ApiCall"], Awaitable[JsonResult]]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of an API request."""

    email: str
    client_id: str
    scopes: frozenset[str]


@dataclass
class ApiCall:
    """Everything a handler needs about one request."""

    request: Request
    method: ApiMethod
    path_params: dict[str, str]
    #: typed query parameters present in the request
    params: dict[str, Any]
    principal: Principal
    #: parsed JSON body (None when the method takes none)
    body: Any
    #: public URL of this API's root, e.g. ``http://host/google/calendar/v3/``
    api_base: str
    store: GoogleStore
    state: SandboxState
    #: fault kinds that fired for this request and that handlers act on
    faults: frozenset[FaultKind]
    #: uploaded media (``/upload/...`` paths), e.g. RFC 822 bytes for messages.send
    media: bytes | None = None

    def header(self, name: str) -> str | None:
        """A request header (case-insensitive)."""
        return self.request.headers.get(name)


class ApiService:
    """One API (a discovery document) and its handlers."""

    def __init__(
        self,
        doc: DiscoveryDocument,
        *,
        api_name: str,
        flavor: Flavor,
        esf_service: str,
        base_path: str,
    ) -> None:
        """
        Args:
            doc: the discovery document.
            api_name: fault/log name ("calendar", "gmail", "oauth").
            flavor: error envelope of this API (classic / aip).
            esf_service: service name in ErrorInfo details
                (``calendar-json.googleapis.com``).
            base_path: the API root below the Google mount, ending in "/"
                ("calendar/v3/", "" for Gmail whose paths carry ``gmail/v1/``).
        """
        self.doc = doc
        self.api_name = api_name
        self.flavor = flavor
        self.esf_service = esf_service
        self.base_path = base_path
        self.handlers: dict[str, Handler] = {}

    def route(self, method_id: str) -> Callable[[Handler], Handler]:
        """Register the handler of discovery method ``method_id``."""
        if method_id not in self.doc.by_id:
            raise KeyError(f"{method_id} is not in {self.doc.name} {self.doc.version}")

        def register(handler: Handler) -> Handler:
            self.handlers[method_id] = handler
            return handler

        return register

    def rpc_name(self, method: ApiMethod) -> str:
        """``calendar.events.insert`` -> ``calendar.v3.Events.Insert`` (ErrorInfo metadata)."""
        parts = method.id.split(".")
        resource = "".join(p[:1].upper() + p[1:] for p in parts[1:-1])
        return f"{parts[0]}.{self.doc.version}.{resource}.{parts[-1][:1].upper()}{parts[-1][1:]}"


class DroppedResponse(Response):
    """Starts a response, sends part of it, then abandons the connection.

    The ASGI server closes a connection whose response was started but never
    completed, which the client sees as a dropped connection.
    """

    def __init__(self) -> None:
        super().__init__(b"", status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        annotate(scope).dropped = True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"4096"),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b'{"kind": ', "more_body": True}
        )


def bearer_token(request: Request) -> str | None:
    """The access token of a request (header first, then query parameters)."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.query_params.get("access_token") or request.query_params.get(
        "oauth_token"
    )


def authenticate(store: GoogleStore, request: Request, now_ms: int) -> Principal:
    """Resolve the caller. Call under the state lock.

    Raises:
        GoogleApiError: 401 required / authError.
    """
    token = bearer_token(request)
    if token is None:
        raise errors.login_required()
    found = store.identity.access_token(token, now_ms)
    if found is None:
        raise errors.invalid_credentials()
    return Principal(found.email, found.client_id, frozenset(found.scopes))


class ApiDispatcher:
    """Routes and checks API requests, then calls the registered handler."""

    def __init__(self, state: SandboxState, services: list[ApiService]) -> None:
        self.state = state
        self.services = services

    @property
    def store(self) -> GoogleStore:
        """The Google data."""
        return self.state.extension(GoogleStore)

    def _check_quota(self, service: ApiService, principal: Principal) -> None:
        config = self.state.config
        now_ms = self.state.clock.now_ms()
        head = principal.client_id.split("-", 1)[0]
        project = head if head.isdigit() else "0"
        user_key = f"{service.api_name} {principal.client_id} {principal.email}"
        if not self.state.quota.admit(
            user_key, config.user_requests_per_minute, now_ms
        ):
            raise errors.quota_exceeded_per_minute(
                service=service.esf_service,
                per_user=True,
                limit=config.user_requests_per_minute or 0,
                project=project,
            )
        project_key = f"{service.api_name} {principal.client_id}"
        if not self.state.quota.admit(
            project_key, config.project_requests_per_minute, now_ms
        ):
            raise errors.quota_exceeded_per_minute(
                service=service.esf_service,
                per_user=False,
                limit=config.project_requests_per_minute or 0,
                project=project,
            )

    def _match(
        self, method: str, rel: str
    ) -> tuple[ApiService, ApiMethod, dict[str, str]] | None:
        for service in self.services:
            found = service.doc.match(method, rel)
            if found is not None:
                return service, found[0], found[1]
        return None

    async def handle(self, request: Request, rel: str, mount_url: str) -> Response:
        """Answer an API request. ``rel`` is the raw path below the Google mount."""
        try:
            return await self._handle(request, rel, mount_url)
        except GoogleApiError as exc:
            return exc.response()

    async def _handle(self, request: Request, rel: str, mount_url: str) -> Response:
        note = annotate(request.scope)
        upload = rel.startswith("upload/")
        if upload:
            # Simple/multipart media upload: "/upload/" + the method's path
            # (discovery mediaUpload.protocols.simple.path).
            rel = rel[len("upload/") :]
        matched = self._match(request.method, rel)
        if matched is not None and upload and matched[1].media_accept is None:
            matched = None
        if matched is None:
            flavor: Flavor = "aip" if rel.startswith("gmail/") else "classic"
            raise errors.not_found(flavor=flavor)
        service, method, path_params = matched
        note.api_method = method.id
        store = self.store
        store.push.bind_loop(asyncio.get_running_loop())
        with self.state.lock:
            principal = authenticate(store, request, self.state.clock.now_ms())
        note.user = principal.email

        self._check_quota(service, principal)
        fired = self.state.faults.draw(
            REQUEST_FAULTS | {FaultKind.SHORT_PAGE},
            user=principal.email,
            api=service.api_name,
            method=method.id,
        )
        latency_ms = sum(f.latency_ms for f in fired if f.kind == FaultKind.LATENCY)
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        for fault in fired:
            if fault.kind in ERROR_FAULTS:
                raise errors.fault_error(
                    fault.kind, flavor=service.flavor, retry_after_s=fault.retry_after_s
                )
            if fault.kind == FaultKind.DROP_CONNECTION:
                return DroppedResponse()

        if not principal.scopes & method.scopes:
            raise errors.insufficient_scopes(
                service.esf_service, service.rpc_name(method), method.scopes
            )

        params, problems = parse_query(
            method, service.doc.global_parameters, request.query_params.multi_items()
        )
        if problems:
            raise _parameter_error(problems[0], service.flavor)
        selection = None
        if "fields" in params:
            try:
                selection = parse_fields(str(params["fields"]))
            except FieldsError as exc:
                raise errors.bad_request(
                    f"Invalid field selection {params['fields']}",
                    flavor=service.flavor,
                    reason="invalidParameter",
                    location="fields",
                ) from exc

        body: Any = None
        media: bytes | None = None
        if upload:
            body, media = await _read_upload(
                request, service, method, str(params.get("uploadType", ""))
            )
        elif method.request is not None:
            body = await _read_body(request, service, method)

        handler = service.handlers.get(method.id)
        if handler is None:
            raise errors.error(
                501,
                "notImplemented",
                f"{method.id} is not implemented by the crmflow sandbox",
                flavor=service.flavor,
            )
        call = ApiCall(
            request=request,
            method=method,
            path_params=path_params,
            params=params,
            principal=principal,
            body=body,
            api_base=mount_url + service.base_path,
            store=store,
            state=self.state,
            faults=frozenset(f.kind for f in fired if f.kind == FaultKind.SHORT_PAGE),
            media=media,
        )
        result = await handler(call)
        if isinstance(result, Response):
            return result
        if result is None:
            return Response(status_code=204)
        if selection is not None:
            result = apply_fields(result, selection)
        return json_response(result)


def _parameter_error(problem: ParameterProblem, flavor: Flavor) -> GoogleApiError:
    name, value = problem.name, problem.value
    if problem.kind == ProblemKind.UNKNOWN:
        if flavor == "aip":
            message = (
                f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query '
                f"parameter. Field '{name}' could not be found in request message."
            )
            return errors.error(400, "invalid", message, flavor=flavor)
        return errors.bad_request(
            f"Unknown parameter: '{name}'",
            flavor=flavor,
            reason="invalidParameter",
            location=name,
        )
    if problem.kind == ProblemKind.REQUIRED:
        return errors.bad_request(
            f"Required parameter: {name}",
            flavor=flavor,
            reason="required",
            location=name,
        )
    param = problem.parameter
    if problem.kind == ProblemKind.ENUM and param is not None and param.enum:
        message = (
            f"Invalid value '{value}'. Values must match the following regular "
            f"expression: '{'|'.join(param.enum)}'"
        )
    elif problem.kind == ProblemKind.RANGE and param is not None:
        low = param.minimum if param.minimum is not None else ""
        high = param.maximum if param.maximum is not None else ""
        message = (
            f"Invalid value '{value}'. Values must be within the range: [{low}, {high}]"
        )
    else:
        message = f"Invalid value '{value}'"
    return errors.invalid_value(message, flavor=flavor, location=name)


async def _read_upload(
    request: Request, service: ApiService, method: ApiMethod, upload_type: str
) -> tuple[Any, bytes]:
    """Read an ``uploadType=media`` or ``multipart`` upload: (JSON metadata, media bytes)."""
    raw = await request.body()
    if method.media_max_bytes is not None and len(raw) > method.media_max_bytes:
        raise errors.error(
            413,
            "uploadTooLarge",
            "Media larger than the allowed size.",
            flavor=service.flavor,
        )
    if upload_type == "media":
        return {}, raw
    if upload_type != "multipart":
        raise errors.bad_request(
            f"Invalid upload type: {upload_type or '(none)'}; the sandbox serves media and multipart",
            flavor=service.flavor,
            reason="invalid",
        )
    content_type = request.headers.get("content-type", "")
    message = BytesParser(policy=compat32).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    parts = message.get_payload()
    if (
        not content_type.startswith("multipart/related")
        or not isinstance(parts, list)
        or len(parts) != 2
    ):
        raise errors.bad_request(
            "Invalid multipart upload", flavor=service.flavor, reason="invalid"
        )
    meta_part, media_part = parts
    if not isinstance(meta_part, EmailMessage) or not isinstance(
        media_part, EmailMessage
    ):
        raise errors.bad_request(
            "Invalid multipart upload", flavor=service.flavor, reason="invalid"
        )
    raw_metadata = meta_part.get_payload(decode=True)
    try:
        metadata = json.loads(
            raw_metadata if isinstance(raw_metadata, bytes) and raw_metadata else b"{}"
        )
    except ValueError as exc:
        raise errors.bad_request(
            "Parse Error", flavor=service.flavor, reason="parseError"
        ) from exc
    inner = media_part.get_payload()
    if (
        media_part.get_content_type() == "message/rfc822"
        and isinstance(inner, list)
        and inner
        and isinstance(inner[0], EmailMessage)
    ):
        # The email parser opens message/rfc822 parts; serialise them back.
        return metadata, inner[0].as_bytes()
    media = media_part.get_payload(decode=True)
    return metadata, media if isinstance(media, bytes) else b""


async def _read_body(request: Request, service: ApiService, method: ApiMethod) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise errors.bad_request(
            "Parse Error", flavor=service.flavor, reason="parseError"
        ) from exc
    assert method.request is not None  # noqa: S101 - only called for methods with a body
    problems = check_value(
        service.doc,
        {"$ref": method.request},
        body,
        method.request,
        mode="request",
    )
    if problems:
        # Google's wording names the offending field; the sandbox keeps its own.
        raise errors.bad_request(
            f"Invalid value: {problems[0]}", flavor=service.flavor, reason="invalid"
        )
    return body
