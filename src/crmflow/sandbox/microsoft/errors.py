"""Microsoft's error responses: Graph's OData envelope and the identity platform's AADSTS bodies.

Graph (microsoft-graph.md §4, checklist 1-2)::

    {"error": {"code": "ErrorItemNotFound", "message": "...",
               "innerError": {"date": "2021-12-20T10:10:31",
                              "request-id": "<guid>", "client-request-id": "<guid>"}}}

with ``Content-Type: application/json; odata.metadata=minimal;
odata.streaming=true; IEEE754Compatible=false; charset=utf-8`` and the
``request-id`` / ``client-request-id`` headers on every response. Codes are
PascalCase where the service sends them so (``SyncStateNotFound``,
``ErrorIrresolvableConflict``), whatever casing the docs use.

Identity platform (§1.5)::

    {"error": "invalid_grant",
     "error_description": "AADSTS70008: ...\\r\\nTrace ID: ...\\r\\nCorrelation ID: ...\\r\\nTimestamp: ...",
     "error_codes": [70008], "timestamp": "2024-01-01 12:00:00Z",
     "trace_id": "...", "correlation_id": "...",
     "error_uri": "https://login.microsoftonline.com/error?code=70008"}

The exception hierarchy::

    GraphError           an error answered by a Graph route (render: response())
    AadError             a token/authorize endpoint error (render: body())
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.responses import Response

__all__ = [
    "GRAPH_CONTENT_TYPE",
    "AadError",
    "GraphError",
    "access_denied",
    "bad_request",
    "graph_json",
    "invalid_request",
    "item_not_found",
    "not_allowed",
    "request_body_read",
]

#: observed on every Graph JSON response (microsoft-graph.md §4, checklist 1)
GRAPH_CONTENT_TYPE = (
    "application/json; odata.metadata=minimal; odata.streaming=true; "
    "IEEE754Compatible=false; charset=utf-8"
)

#: "The specified object was not found in the store." [OBS graph-explorer-v4 #1061]
_NOT_FOUND = "The specified object was not found in the store."
#: ErrorIrresolvableConflict message [OBS msgraph-sdk-dotnet #1201, davmail #491]
IRRESOLVABLE_CONFLICT = (
    "The send or update operation could not be performed because the change key "
    "passed in the request does not match the current change key for the item."
)


def graph_json(
    data: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return ``data`` as a Graph JSON response (Graph's exact content type)."""
    return Response(
        json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(),
        status_code=status,
        headers=dict(headers or {}),
        media_type=GRAPH_CONTENT_TYPE,
    )


@dataclass
class GraphError(Exception):
    """An error answered by a Graph route. The app fills ``innerError`` when rendering."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    #: extra ``innerError`` members (throttling adds code/status/message)
    inner: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.code}: {self.message}")

    def body(
        self, *, request_id: str, client_request_id: str, now: datetime
    ) -> dict[str, Any]:
        """Return the JSON envelope; ``innerError.date`` has no fraction and no offset."""
        inner: dict[str, str] = {
            "date": now.strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request_id,
            "client-request-id": client_request_id,
        }
        inner.update(self.inner)
        return {
            "error": {"code": self.code, "message": self.message, "innerError": inner}
        }

    def response(
        self, *, request_id: str, client_request_id: str, now: datetime
    ) -> Response:
        """Return the HTTP response."""
        return graph_json(
            self.body(
                request_id=request_id, client_request_id=client_request_id, now=now
            ),
            status=self.status,
            headers=self.headers,
        )


def item_not_found() -> GraphError:
    """404 ``ErrorItemNotFound`` (a missing or deleted event, message, attachment)."""
    return GraphError(404, "ErrorItemNotFound", _NOT_FOUND)


def irresolvable_conflict() -> GraphError:
    """412 for a stale ``If-Match`` change key (microsoft-graph.md §4)."""
    return GraphError(412, "ErrorIrresolvableConflict", IRRESOLVABLE_CONFLICT)


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    """400 with ``code`` (default ``BadRequest``, Graph's generic OData code)."""
    return GraphError(400, code, message)


def invalid_request(message: str) -> GraphError:
    """400 ``ErrorInvalidRequest`` (Outlook's generic validation code)."""
    return GraphError(400, "ErrorInvalidRequest", message)


def request_body_read(message: str) -> GraphError:
    """400 ``RequestBodyRead``: the body is not valid JSON for the resource type."""
    return GraphError(400, "RequestBodyRead", message)


def access_denied() -> GraphError:
    """403 ``ErrorAccessDenied`` (scope missing, or another user's mailbox)."""
    return GraphError(
        403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
    )


def not_allowed() -> GraphError:
    """405 for a path that exists with another method (Graph's OData wording)."""
    return GraphError(
        405,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )


#: AADSTS code -> (error, description) for the codes crmflow must handle
#: (microsoft-graph.md §1.5 table; descriptions from reference-error-codes.md
#: and observed bodies).
AADSTS: dict[int, tuple[str, str]] = {
    70008: (
        "invalid_grant",
        "The provided authorization code or refresh token has expired due to "
        "inactivity. Send a new interactive authorization request for this user "
        "and resource.",
    ),
    700082: (
        "invalid_grant",
        "The refresh token has expired due to inactivity. The token was issued on "
        "{issued} and was inactive for 90.00:00:00.",
    ),
    50173: (
        "invalid_grant",
        "The provided grant has expired due to it being revoked, a fresh auth "
        "token is needed. The user might have changed or reset their password.",
    ),
    70000: (
        "invalid_grant",
        "The user could not be authenticated as the grant is expired. The user "
        "must sign in again.",
    ),
    9002313: ("invalid_grant", "Invalid request. Request is malformed or invalid."),
    54005: (
        "invalid_grant",
        "OAuth2 Authorization code was already redeemed, please retry with a new "
        "valid code or use an existing refresh token.",
    ),
    50148: (
        "invalid_grant",
        "The code_verifier does not match the code_challenge supplied in the "
        "authorization request for PKCE.",
    ),
    501481: (
        "invalid_grant",
        "The Code_Verifier does not match the code_challenge supplied in the "
        "authorization request.",
    ),
    700005: (
        "invalid_grant",
        "Provided Authorization Code is intended to use against other tenant, "
        "thus rejected.",
    ),
    500112: (
        "invalid_grant",
        "The reply address '{got}' does not match the reply address '{want}' "
        "provided when requesting Authorization code.",
    ),
    65001: (
        "invalid_grant",
        "The user or administrator has not consented to use the application with "
        "ID '{client_id}' named '{name}'. Send an interactive authorization "
        "request for this user and resource.",
    ),
    50076: (
        "interaction_required",
        "Due to a configuration change made by your administrator, or because you "
        "moved to a new location, you must use multi-factor authentication to "
        "access '00000003-0000-0000-c000-000000000000'.",
    ),
    700016: (
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory "
        "'{tenant}'. This can happen if the application has not been installed by "
        "the administrator of the tenant or consented to by any user in the tenant.",
    ),
    7000215: (
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the "
        "request is the client secret value, not the client secret ID, for a "
        "secret added to app '{client_id}'.",
    ),
    7000218: (
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' "
        "or 'client_secret'.",
    ),
    900144: (
        "invalid_request",
        "The request body must contain the following parameter: '{param}'.",
    ),
    70011: (
        "invalid_scope",
        "The provided request must include a 'scope' input parameter. The provided "
        "value for the input parameter 'scope' is not valid. The scope {scope} is "
        "not valid.",
    ),
    28000: (
        "invalid_scope",
        "Provided value for the input parameter scope is not valid because it "
        "contains more than one resource. Scope {scope} is not valid.",
    ),
    70003: (
        "unsupported_grant_type",
        "The app requested an unsupported grant type '{grant_type}'.",
    ),
    90002: (
        "invalid_request",
        "Tenant '{tenant}' not found. Check to make sure you have the correct "
        "tenant ID and are signing into the correct cloud.",
    ),
    50020: (
        "invalid_request",
        "User account '{email}' from identity provider '{idp}' does not exist in "
        "tenant '{tenant}' and cannot access the application '{client_id}' in that "
        "tenant.",
    ),
    65004: ("access_denied", "User declined to consent to access the app."),
    50011: (
        "invalid_request",
        "The redirect URI '{got}' specified in the request does not match the "
        "redirect URIs configured for the application '{client_id}'.",
    ),
    900971: ("invalid_request", "No reply address provided."),
    50058: (
        "login_required",
        "A silent sign-in request was sent but no user is signed in.",
    ),
    90014: (
        "invalid_request",
        "The required field '{param}' is missing from the credential. Ensure that "
        "you have all the necessary parameters for the login request.",
    ),
}

#: HTTP status per ``error`` (RFC 6749 §5.2: 401 for invalid_client)
_STATUS = {"invalid_client": 401}


@dataclass
class AadError(Exception):
    """An identity-platform error with an AADSTS code."""

    code: int
    #: values for the ``{placeholders}`` of the description
    params: dict[str, str] = field(default_factory=dict)
    #: overrides the table's ``error`` (e.g. consent_required suberror cases)
    error: str | None = None
    #: msal reads ``suberror`` (e.g. ``consent_required`` with 65001)
    suberror: str | None = None

    def __post_init__(self) -> None:
        super().__init__(f"AADSTS{self.code}")

    @property
    def error_name(self) -> str:
        """The OAuth ``error`` value."""
        return self.error or AADSTS[self.code][0]

    @property
    def status(self) -> int:
        """HTTP status of the token endpoint response."""
        return _STATUS.get(self.error_name, 400)

    def description(self) -> str:
        """``AADSTSnnnn: <text>`` (without the trace lines)."""
        template = AADSTS[self.code][1]
        try:
            text = template.format(**self.params)
        except KeyError:
            text = template
        return f"AADSTS{self.code}: {text}"

    def body(self, *, now: datetime, correlation_id: str | None) -> dict[str, Any]:
        """Return the token endpoint JSON body (microsoft-graph.md §1.5)."""
        trace_id = str(uuid.uuid4())
        correlation = correlation_id or str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        body: dict[str, Any] = {
            "error": self.error_name,
            "error_description": (
                f"{self.description()}\r\nTrace ID: {trace_id}\r\n"
                f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        if self.suberror:
            body["suberror"] = self.suberror
        return body
