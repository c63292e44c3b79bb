"""The request log: every HTTP call the sandbox answered, for tests to assert on.

Each entry records method, path (from the server root, e.g.
``/google/calendar/v3/calendars/primary/events``), query pairs, status and,
when known, the API method id (``calendar.events.list``) and the acting user.
Control-API calls (paths containing ``/_sandbox``) are logged too but flagged
``control`` and hidden by default, so a test sees exactly the calls crmflow
made.

Bodies and headers are never logged, and credential query parameters
(``access_token``, ``code`` …) are redacted (house style 8.11: never log
tokens, headers or message/event bodies).

:class:`RequestLogMiddleware` is the outermost ASGI layer of the sandbox app;
handlers annotate the current entry through :func:`annotate`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "LogAnnotation",
    "LoggedRequest",
    "RequestLog",
    "RequestLogMiddleware",
    "annotate",
]

_SCOPE_KEY = "crmflow.sandbox.log"

#: query parameters that carry credentials; their values are never logged
SECRET_PARAMETERS = frozenset(
    {
        "access_token",
        "oauth_token",
        "key",
        "token",
        "code",
        "refresh_token",
        "client_secret",
        "code_verifier",
    }
)


def redact(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Replace the values of credential parameters with ``"***"``."""
    return [(k, "***" if k in SECRET_PARAMETERS else v) for k, v in pairs]


@dataclass(frozen=True)
class LoggedRequest:
    """One answered HTTP request."""

    #: position in the log, from 1, never reused (also across clear())
    seq: int
    method: str
    #: path from the server root, percent-decoded
    path: str
    #: query parameters in order, repeated names repeated
    query: list[tuple[str, str]]
    #: HTTP status sent (the started status for dropped connections)
    status: int
    #: API method id ("calendar.events.list", "oauth.token"), if the route knows it
    api_method: str | None
    #: acting user's email, if authenticated
    user: str | None
    #: the connection was closed mid-response by a drop_connection fault
    dropped: bool
    #: a control-API call (``/_sandbox/``)
    control: bool

    def as_json(self) -> dict[str, Any]:
        """Return the control API's JSON form of this entry."""
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "query": [list(pair) for pair in self.query],
            "status": self.status,
            "apiMethod": self.api_method,
            "user": self.user,
            "dropped": self.dropped,
            "control": self.control,
        }


class RequestLog:
    """A bounded, thread-safe log of :class:`LoggedRequest` entries."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._entries: deque[LoggedRequest] = deque(maxlen=capacity)
        self._seq = 0
        self._lock = threading.Lock()

    def record(
        self,
        *,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        status: int,
        api_method: str | None = None,
        user: str | None = None,
        dropped: bool = False,
    ) -> LoggedRequest:
        """Append an entry and return it."""
        with self._lock:
            self._seq += 1
            entry = LoggedRequest(
                seq=self._seq,
                method=method,
                path=path,
                query=query,
                status=status,
                api_method=api_method,
                user=user,
                dropped=dropped,
                control="/_sandbox" in path,
            )
            self._entries.append(entry)
            return entry

    def entries(
        self, *, since: int = 0, include_control: bool = False
    ) -> list[LoggedRequest]:
        """Return entries with ``seq > since``, oldest first."""
        with self._lock:
            return [
                e
                for e in self._entries
                if e.seq > since and (include_control or not e.control)
            ]

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest entry (0 when nothing was logged yet)."""
        with self._lock:
            return self._seq

    def clear(self) -> None:
        """Drop all entries (sequence numbers keep counting)."""
        with self._lock:
            self._entries.clear()


@dataclass
class LogAnnotation:
    """Facts a handler adds to the current request's log entry."""

    api_method: str | None = None
    user: str | None = None
    dropped: bool = False


def attach(scope: Scope, note: LogAnnotation) -> None:
    """Give a synthesized request scope (a batch part) its own annotation."""
    scope[_SCOPE_KEY] = note


def annotate(scope: Scope) -> LogAnnotation:
    """Return the annotation of the request in ``scope`` (a detached one if unlogged)."""
    found = scope.get(_SCOPE_KEY)
    if isinstance(found, LogAnnotation):
        return found
    return LogAnnotation()


class RequestLogMiddleware:
    """ASGI middleware logging every HTTP request into a :class:`RequestLog`.

    After each non-GET request it also calls ``after_write`` (the state's
    ``flush``), so a persisted sandbox is saved as soon as data changed.
    """

    def __init__(
        self,
        app: ASGIApp,
        log: RequestLog,
        after_write: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.log = log
        self.after_write = after_write

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        note = LogAnnotation()
        scope[_SCOPE_KEY] = note
        status = 0
        logged = False

        def finish() -> None:
            nonlocal logged
            if logged:
                return
            logged = True
            raw_query = scope.get("query_string", b"").decode("latin-1")
            self.log.record(
                method=scope["method"],
                path=scope["path"],
                query=redact(parse_qsl(raw_query, keep_blank_values=True)),
                status=status or 500,
                api_method=note.api_method,
                user=note.user,
                dropped=note.dropped,
            )
            if scope["method"] != "GET" and self.after_write is not None:
                self.after_write()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get(
                "more_body", False
            ):
                # Log (and persist) before the client can see the complete
                # response, so a test reading the log right after a call
                # always finds it.
                finish()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            finish()
