"""One mapping from crmflow errors to HTTP responses.

Under ``/api`` bodies are ``{"detail": <message for a person>, "error": <error
class>}``; the message always says what happened and what to do. Everywhere else
(the server-rendered UI) the same status comes with an HTML error page carrying
the same message, and redirects raised as ``HTTPException(303, Location=...)``
(sign-in required) are plain redirects.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from crmflow.errors import (
    Conflict,
    CrmflowError,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from crmflow.web.ui.pages import render_error

_log = logging.getLogger(__name__)

STATUS: tuple[tuple[type[CrmflowError], int], ...] = (
    (NotFound, 404),
    (PermissionDenied, 403),
    (Conflict, 409),
    (ValidationFailed, 422),
)

#: headline of the HTML error page per status
TITLES: dict[int, str] = {
    400: "This request is not valid",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Changed by someone else",
    422: "Please check your input",
    500: "Something went wrong",
}

#: message of the HTML error page for statuses raised without a useful detail
_DEFAULT_MESSAGES: dict[int, str] = {
    404: "There is nothing at this address. Check the link, or start again from "
    "Appointments.",
    405: "This page cannot be used that way. Go back and use the buttons on the page.",
    500: "crmflow could not finish this request; nothing you sent is lost. Try "
    "again, and tell your administrator if it keeps happening.",
}


def status_for(exc: CrmflowError) -> int:
    """The HTTP status of a crmflow error (500 for anything unexpected)."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def is_api(request: Request) -> bool:
    """Whether ``request`` is for the JSON API (which never gets HTML)."""
    path = request.url.path
    return path == "/api" or path.startswith("/api/")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _html(request: Request, status: int, message: str | None) -> Response:
    title = TITLES.get(status, "Something went wrong")
    text = message or _DEFAULT_MESSAGES.get(status) or title
    return render_error(request, status, title, text)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CrmflowError)  # noqa: S101 - registered for this class only
        status = status_for(exc)
        if is_api(request):
            return JSONResponse(
                {"detail": exc.message, "error": type(exc).__name__},
                status_code=status,
            )
        if status == 500:
            _log.error("unexpected %s on %s", type(exc).__name__, request.url.path)
            return _html(request, status, None)
        return _html(request, status, exc.message)

    async def handle_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this class only
        if is_api(request):
            return await http_exception_handler(request, exc)
        if 300 <= exc.status_code < 400 and exc.headers and "Location" in exc.headers:
            return RedirectResponse(
                exc.headers["Location"], status_code=exc.status_code
            )
        detail: str | None = str(exc.detail)
        if detail == _phrase(exc.status_code):
            detail = None  # Starlette's bare "Not Found": say something useful
        response = _html(request, exc.status_code, detail)
        for name, value in (exc.headers or {}).items():
            response.headers.setdefault(name, value)
        return response

    async def handle_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this class only
        if is_api(request):
            return await request_validation_exception_handler(request, exc)
        # A malformed id in a UI address (``/appointments/abc/edit``) is a page
        # that does not exist; anything else is a request no page of ours sends.
        if all(err.get("loc", ("",))[0] == "path" for err in exc.errors()):
            return _html(request, 404, None)
        return _html(
            request,
            400,
            "This request is missing information or has malformed values. Go "
            "back, reload the page and try again.",
        )

    async def handle_unexpected(request: Request, exc: Exception) -> Response:
        # Runs in Starlette's ServerErrorMiddleware, which logs and re-raises
        # ``exc`` after this response is sent; only the body is chosen here.
        if is_api(request):
            return JSONResponse(
                {"detail": _DEFAULT_MESSAGES[500], "error": "InternalError"},
                status_code=500,
            )
        return _html(request, 500, None)

    app.add_exception_handler(CrmflowError, handle)
    app.add_exception_handler(Exception, handle_unexpected)
    app.add_exception_handler(StarletteHTTPException, handle_http)
    app.add_exception_handler(RequestValidationError, handle_validation)
