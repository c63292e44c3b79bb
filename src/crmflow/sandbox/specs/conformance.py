"""Conformance of recorded HTTP exchanges with Google's discovery documents.

The test suite records every request the Google sandbox receives and every
response it sends (``tests/sandbox/conftest.py``) and passes each exchange to
:meth:`ConformanceChecker.check`. A violation means the sandbox was more
lenient, or answered differently, than the published API description:

* a path + HTTP method that no discovery method has, answered with a success;
* a request that breaks the method's parameters (unknown name, type, enum,
  range, required) or request schema (types, unknown fields, required fields
  per ``annotations.required``), answered with a success;
* a 2xx body that does not match the method's response schema (types,
  formats, enums, no undeclared fields), or a body where the method declares
  none (empty ``204`` expected), or a non-JSON content type;
* an error body that is not Google's envelope (``{"error": {"code" = status,
  "message", "errors": [{domain, reason, message}], "status"?}}``);
* token-endpoint answers that are not RFC 6749 token / error JSON with
  Google's field set;
* batch calls: each part of a ``batch/...`` exchange is paired with its
  ``response-`` part and checked like a single call.

The documents are passed in, so the suite can use the ones shipped in the
installed google-api-python-client — the independent source of truth — rather
than the sandbox's bundled copies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import Any
from urllib.parse import parse_qsl

from crmflow.sandbox.specs.discovery import DiscoveryDocument
from crmflow.sandbox.specs.params import parse_query
from crmflow.sandbox.specs.schema import check_value

__all__ = ["ConformanceChecker", "Exchange"]

_TOKEN_FIELDS = {
    "access_token": str,
    "expires_in": int,
    "refresh_token": str,
    "scope": str,
    "token_type": str,
    "id_token": str,
    "refresh_token_expires_in": int,
}


@dataclass
class Exchange:
    """One recorded request and its response."""

    method: str
    #: raw (percent-encoded) path from the server root
    path: str
    query: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""

    def describe(self) -> str:
        """``METHOD path?query -> status`` for messages."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.method} {self.path}{query} -> {self.status}"


class ConformanceChecker:
    """Checks exchanges below a Google mount against discovery documents."""

    def __init__(
        self, documents: Mapping[str, DiscoveryDocument], *, mount: str = "/google"
    ) -> None:
        """
        Args:
            documents: by name: ``calendar``, ``gmail`` and optionally ``oauth2``.
            mount: path prefix of the Google sandbox.
        """
        self.documents = documents
        self.mount = mount.rstrip("/") + "/"

    def check(self, ex: Exchange) -> list[str]:
        """Return every violation in ``ex`` (empty when it conforms)."""
        if not ex.path.startswith(self.mount):
            return []
        rel = ex.path[len(self.mount) :]
        if rel.startswith("_sandbox") or rel in (
            "",
            "o/oauth2/v2/auth",
            "o/oauth2/auth",
            "signin/oauth/consent",
        ):
            return []
        if rel == "token":
            return [f"{ex.describe()}: {p}" for p in self._check_token(ex)]
        if rel.startswith("batch/"):
            return self._check_batch(ex)
        media = rel.startswith("upload/")
        if media:
            # Media uploads share the method's path after "upload/"; their body
            # is the media, not the JSON request schema.
            rel = rel[len("upload/") :]
        doc = self._document_for(rel)
        if doc is None:
            return []
        return [
            f"{ex.describe()}: {p}" for p in self._check_api(doc, rel, ex, media=media)
        ]

    def _document_for(self, rel: str) -> DiscoveryDocument | None:
        # An API is identified by its first two path segments ("calendar/v3/",
        # "gmail/v1/", "oauth2/v2/"); other paths (OIDC v3 endpoints) are not
        # described by these documents.
        head = "/".join(rel.split("/")[:2]) + "/"
        for doc in self.documents.values():
            for method in doc.methods:
                if method.path.startswith(head):
                    return doc
        return None

    def _check_api(
        self, doc: DiscoveryDocument, rel: str, ex: Exchange, *, media: bool = False
    ) -> list[str]:
        problems: list[str] = []
        matched = doc.match(ex.method, rel)
        if matched is None:
            if ex.status < 400:
                problems.append("answered a path/method that discovery does not define")
            return problems + self._check_error(ex) if ex.status >= 400 else problems
        method, _ = matched
        accepted = ex.status < 400
        _, param_problems = parse_query(
            method, doc.global_parameters, parse_qsl(ex.query, keep_blank_values=True)
        )
        request_problems = [p.describe() for p in param_problems]
        if media:
            pass
        elif method.request is not None and ex.request_body.strip():
            try:
                body = json.loads(ex.request_body)
            except ValueError:
                request_problems.append("request body is not JSON")
            else:
                request_problems += check_value(
                    doc,
                    {"$ref": method.request},
                    body,
                    method.request,
                    mode="request",
                    method_id=method.id,
                )
        elif method.request is not None and ex.method in ("POST", "PUT"):
            required = [
                name
                for name, prop in doc.schemas.get(method.request, {})
                .get("properties", {})
                .items()
                if method.id in prop.get("annotations", {}).get("required", ())
            ]
            if required:
                request_problems.append(f"empty body, but {required} required")
        if accepted and request_problems:
            problems += [f"accepted an invalid request: {p}" for p in request_problems]
        if ex.status == 304:
            if ex.response_body:
                problems.append("304 with a body")
            return problems
        if 200 <= ex.status < 300:
            if method.response is None:
                if ex.response_body.strip():
                    problems.append(f"{method.id} declares no response body, got one")
                return problems
            if not ex.response_headers.get("content-type", "").startswith(
                "application/json"
            ):
                problems.append("response content type is not application/json")
            try:
                body = json.loads(ex.response_body)
            except ValueError:
                return [*problems, "response body is not JSON"]
            problems += check_value(
                doc, {"$ref": method.response}, body, method.response, mode="response"
            )
            return problems
        if ex.status >= 400:
            problems += self._check_error(ex)
        return problems

    def _check_error(self, ex: Exchange) -> list[str]:
        try:
            body = json.loads(ex.response_body)
        except ValueError:
            return ["error body is not JSON"]
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return ["error body lacks the 'error' object"]
        problems: list[str] = []
        if error.get("code") != ex.status:
            problems.append(
                f"error.code {error.get('code')!r} != HTTP status {ex.status}"
            )
        if not isinstance(error.get("message"), str):
            problems.append("error.message missing")
        items = error.get("errors")
        if not isinstance(items, list) or not items:
            problems.append("error.errors missing or empty")
        else:
            for item in items:
                if not isinstance(item, dict) or not all(
                    isinstance(item.get(k), str)
                    for k in ("domain", "reason", "message")
                ):
                    problems.append(
                        f"error.errors item lacks domain/reason/message: {item!r}"
                    )
                extra = set(item) - {
                    "domain",
                    "reason",
                    "message",
                    "location",
                    "locationType",
                    "extendedHelp",
                    "sendReport",
                }
                if extra:
                    problems.append(
                        f"error.errors item has unknown keys {sorted(extra)}"
                    )
        unknown = set(error) - {"code", "message", "errors", "status", "details"}
        if unknown:
            problems.append(f"error has unknown keys {sorted(unknown)}")
        if "status" in error and not isinstance(error["status"], str):
            problems.append("error.status is not a string")
        return problems

    def _check_batch(self, ex: Exchange) -> list[str]:
        """Split a batch exchange into its calls (paired by Content-ID) and check each."""
        if ex.status >= 400:
            return [f"{ex.describe()}: {p}" for p in self._check_error(ex)]
        requests = _multipart(
            ex.request_headers.get("content-type", ""), ex.request_body
        )
        responses = _multipart(
            ex.response_headers.get("content-type", ""), ex.response_body
        )
        if requests is None or responses is None:
            return [
                f"{ex.describe()}: batch request or response is not multipart/mixed"
            ]
        answered = {}
        for content_id, text in responses:
            inner = content_id.strip("<>")
            if not inner.startswith("response-"):
                return [
                    f"{ex.describe()}: response part Content-ID {content_id!r} lacks 'response-'"
                ]
            answered[inner[len("response-") :]] = text
        problems: list[str] = []
        for content_id, text in requests:
            reply = answered.get(content_id.strip("<>"))
            if reply is None:
                problems.append(f"{ex.describe()}: no response part for {content_id}")
                continue
            request_line, req_headers, req_body = _http_message(text)
            status_line, resp_headers, resp_body = _http_message(reply)
            method, target = request_line.split(" ")[:2]
            path, _, query = target.partition("?")
            if "://" in path:
                path = "/" + path.split("://", 1)[1].split("/", 1)[1]
            if not path.startswith(self.mount):
                path = self.mount.rstrip("/") + path
            sub = Exchange(
                method=method,
                path=path,
                query=query,
                request_headers=req_headers,
                request_body=req_body,
                status=int(status_line.split(" ")[1]),
                response_headers=resp_headers,
                response_body=resp_body,
            )
            problems += [f"(batch part) {p}" for p in self.check(sub)]
        return problems

    def _check_token(self, ex: Exchange) -> list[str]:
        try:
            body: Any = json.loads(ex.response_body)
        except ValueError:
            return ["token response is not JSON"]
        if not isinstance(body, dict):
            return ["token response is not an object"]
        if ex.status == 200:
            problems = [
                f"unknown token field {k!r}" for k in body if k not in _TOKEN_FIELDS
            ]
            for name, kind in _TOKEN_FIELDS.items():
                if name in body and not isinstance(body[name], kind):
                    problems.append(f"{name} is not {kind.__name__}")
            for name in ("access_token", "expires_in", "scope", "token_type"):
                if name not in body:
                    problems.append(f"token response lacks {name}")
            if body.get("token_type") != "Bearer":
                problems.append("token_type is not Bearer")
            return problems
        problems = [
            f"unknown error field {k!r}"
            for k in body
            if k not in ("error", "error_description", "error_uri")
        ]
        if not isinstance(body.get("error"), str):
            problems.append("token error lacks 'error'")
        return problems


def _multipart(content_type: str, body: bytes) -> list[tuple[str, str]] | None:
    """(Content-ID, payload text) of each part of a multipart/mixed body."""
    if not content_type.lower().startswith("multipart/mixed"):
        return None
    message = BytesParser(policy=compat32).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts = message.get_payload()
    if not isinstance(parts, list):
        return None
    return [
        (str(p.get("Content-ID", "")), str(p.get_payload()))
        for p in parts
        if isinstance(p, Message)
    ]


def _http_message(text: str) -> tuple[str, dict[str, str], bytes]:
    """Split an application/http payload into first line, headers, body."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    lines = [line for line in head.split("\n") if line.strip()]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0] if lines else "", headers, body.strip().encode()
