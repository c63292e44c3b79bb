"""Batch requests: ``POST batch/calendar/v3`` and ``POST batch/gmail/v1``.

Google's batch format (Calendar and Gmail "Batching requests" guides): a
``multipart/mixed`` body whose parts are ``Content-Type: application/http``,
each holding one HTTP request (request line, headers, body) and an optional
``Content-ID``. The answer is ``multipart/mixed`` too; each part holds one HTTP
response and ``Content-ID: <response-ID>`` for the request's ``<ID>``. Outer
headers (``Authorization``) apply to parts that do not set their own. Calendar
allows 50 calls per batch, Gmail 100.

Each part is dispatched through the Google app itself, so every rule — auth,
faults, scopes, parameters — applies per call, and each call appears in the
request log. Nested batches are refused.
"""

from __future__ import annotations

import secrets
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Scope
from starlette.types import Message as AsgiMessage

from crmflow.sandbox.google import errors
from crmflow.sandbox.google.errors import Flavor
from crmflow.sandbox.requestlog import LogAnnotation, RequestLog, attach, redact

__all__ = ["MAX_CALLS", "handle_batch"]

#: calls per batch request ("limited to 50 calls" Calendar / 100 Gmail)
MAX_CALLS = {"calendar": 50, "gmail": 100}


def _split_http(text: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """Split an application/http payload into request line, headers, body."""
    normalized = text.replace("\r\n", "\n")
    head, _, body = normalized.partition("\n\n")
    lines = [line for line in head.split("\n") if line.strip()]
    if not lines:
        raise ValueError("empty part")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return lines[0], headers, body.encode()


async def handle_batch(
    request: Request,
    app: ASGIApp,
    *,
    api: str,
    log: RequestLog,
) -> Response:
    """Answer a batch request by dispatching each part to ``app`` (the Google app)."""
    flavor: Flavor = "aip" if api == "gmail" else "classic"
    content_type = request.headers.get("content-type", "")
    if (
        not content_type.lower().startswith("multipart/mixed")
        or "boundary=" not in content_type
    ):
        return errors.bad_request(
            "Invalid batch request: multipart/mixed expected", flavor=flavor
        ).response()
    raw = await request.body()
    outer = BytesParser(policy=compat32).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    parts = outer.get_payload()
    if not isinstance(parts, list) or not parts:
        return errors.bad_request(
            "Invalid batch request: no parts", flavor=flavor
        ).response()
    if len(parts) > MAX_CALLS[api]:
        return errors.bad_request(
            f"A batch request cannot contain more than {MAX_CALLS[api]} requests",
            flavor=flavor,
        ).response()
    root = str(request.scope.get("root_path", ""))
    outer_auth = request.headers.get("authorization")
    answers: list[bytes] = []
    for index, part in enumerate(parts):
        if not isinstance(part, Message):
            continue
        content_id = str(part.get("Content-ID") or f"<{index + 1}>")
        payload = part.get_payload()
        status, headers, body = await _dispatch(
            app, request, str(payload), root=root, outer_auth=outer_auth, log=log
        )
        answers.append(_response_part(content_id, status, headers, body))
    boundary = "batch_" + secrets.token_urlsafe(18)
    body = (
        b"".join(b"--" + boundary.encode() + b"\r\n" + a for a in answers)
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    return Response(
        body, status_code=200, media_type=f"multipart/mixed; boundary={boundary}"
    )


def _response_part(
    content_id: str, status: int, headers: list[tuple[str, str]], body: bytes
) -> bytes:
    inner = content_id.strip()
    inner = inner[1:-1] if inner.startswith("<") and inner.endswith(">") else inner
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [
        f"{k}: {v}"
        for k, v in headers
        if k.lower() not in ("content-length", "transfer-encoding")
    ]
    lines.append(f"Content-Length: {len(body)}")
    http = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    head = f"Content-Type: application/http\r\nContent-ID: <response-{inner}>\r\n\r\n".encode()
    return head + http + b"\r\n"


async def _dispatch(
    app: ASGIApp,
    request: Request,
    payload: str,
    *,
    root: str,
    outer_auth: str | None,
    log: RequestLog,
) -> tuple[int, list[tuple[str, str]], bytes]:
    try:
        request_line, headers, body = _split_http(payload)
        method, target, *_ = request_line.split(" ")
    except ValueError:
        return (
            400,
            [("Content-Type", "application/json; charset=UTF-8")],
            b'{"error":{"code":400,"message":"Bad Request","errors":[{"domain":"global","reason":"badRequest","message":"Bad Request"}]}}',
        )
    url = urlsplit(target)
    path = url.path
    # Real clients send Google's paths ("/calendar/v3/..."); clients pointed
    # at the sandbox send the mount too ("/google/calendar/v3/...").
    if root and not path.startswith(root + "/"):
        path = root + path
    if path.startswith(root + "/batch"):
        return (
            400,
            [("Content-Type", "application/json; charset=UTF-8")],
            b'{"error":{"code":400,"message":"Nested batch requests are not allowed","errors":[{"domain":"global","reason":"badRequest","message":"Nested batch requests are not allowed"}]}}',
        )
    names = {k.lower() for k, _ in headers}
    if outer_auth is not None and "authorization" not in names:
        headers.append(("Authorization", outer_auth))
    note = LogAnnotation()
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": request.url.scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": url.query.encode(),
        "root_path": root,
        "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in headers
            if k.lower() != "host"
        ]
        + [(b"host", request.headers.get("host", "localhost").encode("latin-1"))],
        "server": request.scope.get("server"),
        "client": request.scope.get("client"),
    }
    attach(scope, note)
    status = 500
    out_headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    sent = False

    async def receive() -> AsgiMessage:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: AsgiMessage) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status = int(message["status"])
            out_headers = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in message.get("headers", [])
            ]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    log.record(
        method=method.upper(),
        path=path,
        query=redact(parse_qsl(url.query, keep_blank_values=True)),
        status=status,
        api_method=note.api_method,
        user=note.user,
        dropped=note.dropped,
    )
    return status, out_headers, b"".join(chunks)
