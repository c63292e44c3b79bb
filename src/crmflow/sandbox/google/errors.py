"""Google's error responses, byte for byte where Google documents them.

Two envelope flavours exist (google-apis.md §5.1):

* **classic** (Calendar, "apiary"): ``{"error": {"errors": [{domain, reason,
  message, locationType?, location?}], "code", "message"}}`` — the exact bodies
  of the Calendar errors guide (``fullSyncRequired``, ``deleted``,
  ``conditionNotMet`` …).
* **AIP-193** (Gmail on gmail.googleapis.com, and the front end's auth, scope and
  quota errors on every host): the classic fields plus ``"status"`` (e.g.
  ``PERMISSION_DENIED``) and sometimes ``"details"``.

googleapiclient reads ``error.message`` and classifies retries by
``error.errors[0].reason``; crmflow's adapters must see the same.

The exception hierarchy::

    GoogleApiError          any error answered by a Google API route
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.responses import Response

from crmflow.sandbox._http import json_response
from crmflow.sandbox.faults import FaultKind

__all__ = [
    "Flavor",
    "GoogleApiError",
    "bad_request",
    "condition_not_met",
    "deleted",
    "duplicate",
    "fault_error",
    "full_sync_required",
    "insufficient_scopes",
    "invalid_credentials",
    "invalid_value",
    "login_required",
    "not_found",
    "time_range_empty",
    "updated_min_too_long_ago",
]

#: "classic" = Calendar apiary envelope; "aip" = with "status" (Gmail, front end)
Flavor = Literal["classic", "aip"]

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    410: "NOT_FOUND",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

# Front-end (ESF) messages for credential problems, as returned by
# www.googleapis.com and gmail.googleapis.com.
_LOGIN_REQUIRED = (
    "Request is missing required authentication credential. Expected OAuth 2 "
    "access token, login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access "
    "token, login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


@dataclass
class GoogleApiError(Exception):
    """An error answer from a Google API route. Render with :meth:`response`."""

    code: int
    message: str
    #: the ``errors[]`` items (domain, reason, message, location, locationType)
    errors: list[dict[str, str]]
    #: AIP-193 ``status``; None for the classic envelope
    status: str | None = None
    details: list[dict[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """Return the JSON body."""
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "errors": self.errors,
        }
        if self.status is not None:
            error["status"] = self.status
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> Response:
        """Return the HTTP response."""
        return json_response(self.body(), status=self.code, headers=self.headers)


def error(
    code: int,
    reason: str,
    message: str,
    *,
    flavor: Flavor,
    domain: str = "global",
    location: str | None = None,
    location_type: str | None = None,
    top_message: str | None = None,
) -> GoogleApiError:
    """Build an error with one ``errors[]`` item in the given envelope flavour."""
    item: dict[str, str] = {"domain": domain, "reason": reason, "message": message}
    if location is not None:
        item["locationType"] = location_type or "parameter"
        item["location"] = location
    return GoogleApiError(
        code=code,
        message=top_message or message,
        errors=[item],
        status=_STATUS_NAMES.get(code, "UNKNOWN") if flavor == "aip" else None,
    )


# -- authentication and authorization (front end; AIP flavour everywhere) ----


def login_required() -> GoogleApiError:
    """401: no credentials at all (no Authorization header, no access_token)."""
    err = error(
        401,
        "required",
        "Login Required.",
        flavor="aip",
        location="Authorization",
        location_type="header",
        top_message=_LOGIN_REQUIRED,
    )
    err.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
    return err


def invalid_credentials() -> GoogleApiError:
    """401 global/authError "Invalid Credentials": unknown, expired or revoked token."""
    err = error(
        401,
        "authError",
        "Invalid Credentials",
        flavor="aip",
        location="Authorization",
        location_type="header",
        top_message=_INVALID_CREDENTIALS,
    )
    err.headers["WWW-Authenticate"] = (
        'Bearer realm="https://accounts.google.com/", error="invalid_token"'
    )
    return err


def insufficient_scopes(
    service: str, method: str, scopes: frozenset[str]
) -> GoogleApiError:
    """403 insufficientPermissions / ACCESS_TOKEN_SCOPE_INSUFFICIENT (google-apis.md §5.1).

    Args:
        service: e.g. ``calendar-json.googleapis.com``, ``gmail.googleapis.com``.
        method: RPC name, e.g. ``calendar.v3.Events.Insert``.
        scopes: scopes that would have allowed the call (for WWW-Authenticate).
    """
    err = GoogleApiError(
        code=403,
        message="Request had insufficient authentication scopes.",
        errors=[
            {
                "message": "Insufficient Permission",
                "domain": "global",
                "reason": "insufficientPermissions",
            }
        ],
        status="PERMISSION_DENIED",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": {"service": service, "method": method},
            }
        ],
    )
    err.headers["WWW-Authenticate"] = (
        'Bearer realm="https://accounts.google.com/", error="insufficient_scope", '
        f'scope="{" ".join(sorted(scopes))}"'
    )
    return err


# -- quota and server faults --------------------------------------------------


def fault_error(
    kind: FaultKind, *, flavor: Flavor, retry_after_s: int | None
) -> GoogleApiError:
    """Return the response for an error fault (see :mod:`crmflow.sandbox.faults`)."""
    if kind == FaultKind.AUTH_ERROR:
        return invalid_credentials()
    table: Mapping[FaultKind, tuple[int, str, str, str]] = {
        # (code, domain, reason, message) — Calendar errors guide / Gmail
        # handle-errors guide; quota errors carry "status" from the front end.
        FaultKind.RATE_LIMIT_403: (
            403,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        ),
        FaultKind.RATE_LIMIT_429: (
            429,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        ),
        FaultKind.USER_RATE_LIMIT: (
            403,
            "usageLimits",
            "userRateLimitExceeded",
            "User Rate Limit Exceeded",
        ),
        FaultKind.QUOTA_EXCEEDED: (
            403,
            "usageLimits",
            "quotaExceeded",
            "Calendar usage limits exceeded.",
        ),
        FaultKind.CONCURRENT_REQUESTS: (
            429,
            "usageLimits",
            "rateLimitExceeded",
            "Too many concurrent requests for user",
        ),
        FaultKind.BACKEND_ERROR: (500, "global", "backendError", "Backend Error"),
        FaultKind.UNAVAILABLE: (
            503,
            "global",
            "backendError",
            "The service is currently unavailable.",
        ),
    }
    code, domain, reason, message = table[kind]
    # The Calendar guide's quota bodies are classic; Gmail adds "status".
    err = error(code, reason, message, flavor=flavor, domain=domain)
    if retry_after_s is not None:
        err.headers["Retry-After"] = str(retry_after_s)
    return err


def quota_exceeded_per_minute(
    *, service: str, per_user: bool, limit: int, project: str
) -> GoogleApiError:
    """Per-minute quota errors of the API front end (google-apis.md §5.1-5.2).

    Per user: 403 rateLimitExceeded / RATE_LIMIT_EXCEEDED with
    ``quota_limit: defaultPerMinutePerUser``; per project: 429.
    """
    scope = "per user" if per_user else ""
    message = (
        f"Quota exceeded for quota metric 'Queries' and limit 'Queries per minute{' ' + scope if scope else ''}' "
        f"of service '{service}' for consumer 'project_number:{project}'."
    )
    code = 403 if per_user else 429
    return GoogleApiError(
        code=code,
        message=message,
        errors=[
            {"message": message, "domain": "usageLimits", "reason": "rateLimitExceeded"}
        ],
        status="PERMISSION_DENIED" if per_user else "RESOURCE_EXHAUSTED",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {
                    "service": service,
                    "consumer": f"projects/{project}",
                    "quota_metric": f"{service}/default",
                    "quota_limit": "defaultPerMinutePerUser"
                    if per_user
                    else "defaultPerMinutePerProject",
                    "quota_limit_value": str(limit),
                },
            }
        ],
    )


# -- request errors -------------------------------------------------------------


def not_found(*, flavor: Flavor) -> GoogleApiError:
    """404 notFound: classic "Not Found" (Calendar), "Requested entity was not found." (Gmail)."""
    if flavor == "classic":
        return error(404, "notFound", "Not Found", flavor=flavor)
    return error(404, "notFound", "Requested entity was not found.", flavor=flavor)


def bad_request(
    message: str = "Bad Request",
    *,
    flavor: Flavor,
    reason: str = "badRequest",
    location: str | None = None,
) -> GoogleApiError:
    """400 with ``reason`` (``badRequest`` unless told)."""
    return error(400, reason, message, flavor=flavor, location=location)


def invalid_value(
    message: str, *, flavor: Flavor, location: str | None = None
) -> GoogleApiError:
    """400 global/invalid (e.g. "Invalid resource id value.")."""
    return error(400, "invalid", message, flavor=flavor, location=location)


def duplicate() -> GoogleApiError:
    """409 duplicate "The requested identifier already exists." (Calendar)."""
    return error(
        409, "duplicate", "The requested identifier already exists.", flavor="classic"
    )


def deleted() -> GoogleApiError:
    """410 deleted "Resource has been deleted" (Calendar errors guide, exact body)."""
    return error(410, "deleted", "Resource has been deleted", flavor="classic")


def condition_not_met() -> GoogleApiError:
    """412 conditionNotMet on header If-Match (Calendar version-resources guide)."""
    return error(
        412,
        "conditionNotMet",
        "Precondition Failed",
        flavor="classic",
        location="If-Match",
        location_type="header",
    )


def full_sync_required() -> GoogleApiError:
    """410 fullSyncRequired on parameter syncToken (Calendar errors guide, exact body)."""
    return error(
        410,
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
        flavor="classic",
        domain="calendar",
        location="syncToken",
    )


def updated_min_too_long_ago() -> GoogleApiError:
    """410 updatedMinTooLongAgo on parameter updatedMin (Calendar errors guide)."""
    return error(
        410,
        "updatedMinTooLongAgo",
        "The requested minimum modification time lies too far in the past.",
        flavor="classic",
        domain="calendar",
        location="updatedMin",
    )


def time_range_empty(location: str = "timeMax") -> GoogleApiError:
    """400 calendar/timeRangeEmpty "The specified time range is empty."."""
    return error(
        400,
        "timeRangeEmpty",
        "The specified time range is empty.",
        flavor="classic",
        domain="calendar",
        location=location,
    )
