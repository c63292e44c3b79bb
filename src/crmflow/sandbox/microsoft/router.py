"""Graph routing: the route table type, path matching and the per-request context.

Graph paths are matched segment by segment:

* literal segments compare case-insensitively (``/me/calendarview`` works like
  ``/me/calendarView``), ids are case-sensitive;
* ``delta`` also matches ``delta()`` (the SDK's URL templates use the
  function-call form);
* OData key segments ``mailFolders('Inbox')`` become ``mailFolders/Inbox``;
* ``/users/{id | userPrincipalName}/…`` is the signed-in user's ``/me/…``
  (``msgraph-sdk`` sends ``/me`` as ``/users/me-token-to-replace`` rewritten to
  ``/me``); another user's mailbox is 403 with a delegated token.

An unknown path is 400 ``BadRequest`` "Resource not found for the segment
'…'." (Graph's OData answer); a known path with another method is 405.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from crmflow.sandbox.microsoft.errors import GraphError, graph_json
from crmflow.sandbox.microsoft.odata import Query, prefer_value
from crmflow.sandbox.microsoft.timezones import parse_prefer_timezone

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from crmflow.sandbox.microsoft.faults import GraphFault, GraphFaultKind
    from crmflow.sandbox.microsoft.identity import AccessToken
    from crmflow.sandbox.microsoft.store import MicrosoftStore
    from crmflow.sandbox.microsoft.subscriptions import Dispatcher
    from crmflow.sandbox.state import SandboxState

__all__ = ["Context", "GraphRoute", "Handler", "match_route", "split_path"]

Handler = Callable[["Context"], Awaitable[Response]]

#: scopes that grant calendar and mail access (any one suffices)
CAL_READ = frozenset({"Calendars.Read", "Calendars.ReadBasic", "Calendars.ReadWrite"})
CAL_WRITE = frozenset({"Calendars.ReadWrite"})
MAIL_READ = frozenset({"Mail.Read", "Mail.ReadBasic", "Mail.ReadWrite"})
MAIL_WRITE = frozenset({"Mail.ReadWrite"})
MAIL_SEND = frozenset({"Mail.Send"})
USER_READ = frozenset({"User.Read", "User.ReadBasic.All"})
ANY = frozenset[str]()

_KEY_SEGMENT = re.compile(r"^([A-Za-z]+)\('([^']*)'\)$")


@dataclass(frozen=True)
class GraphRoute:
    """One Graph endpoint."""

    method: str
    #: "/me/events/{event-id}" (segments after /v1.0)
    template: str
    handler: Handler
    #: request-log and fault-matching method id ("graph.events.get")
    name: str
    #: any one of these delegated scopes is required (empty = token only)
    scopes: frozenset[str] = ANY

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(s for s in self.template.split("/") if s)


def split_path(path: str) -> list[str]:
    """Split a Graph path (after /v1.0) into segments, expanding OData key segments."""
    out: list[str] = []
    for raw in path.split("/"):
        if not raw:
            continue
        match = _KEY_SEGMENT.match(raw)
        if match:
            out.extend([match.group(1), match.group(2)])
        else:
            out.append(raw)
    return out


def _literal_matches(template: str, segment: str) -> bool:
    low = segment.casefold()
    want = template.casefold()
    if low == want:
        return True
    return want.endswith("delta") and low == want + "()"


def match_route(
    routes: list[GraphRoute], method: str, segments: list[str]
) -> tuple[GraphRoute, dict[str, str]]:
    """Find the route for ``method`` and ``segments``.

    Raises:
        GraphError: 400 (no such resource), 405 (method not allowed).
    """
    path_matched = False
    for route in routes:
        tmpl = route.segments
        if len(tmpl) != len(segments):
            continue
        params: dict[str, str] = {}
        ok = True
        for t, s in zip(tmpl, segments, strict=True):
            if t.startswith("{"):
                params[t[1:-1]] = s
            elif not _literal_matches(t, s):
                ok = False
                break
        if not ok:
            continue
        path_matched = True
        if route.method == method:
            return route, params
    if path_matched:
        raise GraphError(
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        )
    last = segments[-1] if segments else ""
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{last}'.")


@dataclass
class Context:
    """Everything a Graph handler needs for one request."""

    request: Request
    state: SandboxState
    store: MicrosoftStore
    dispatcher: Dispatcher
    #: external base URL of the Microsoft sandbox ("http://127.0.0.1:8765/microsoft")
    base_url: str
    email: str
    token: AccessToken
    route: GraphRoute
    params: dict[str, str]
    request_id: str
    client_request_id: str
    prefer: list[str] = field(default_factory=list)
    #: Preference-Applied items
    applied: list[str] = field(default_factory=list)
    #: the requested path after ``/v1.0`` (as sent, for nextLinks)
    path: str = ""
    _query: Query | None = None

    @property
    def graph_base(self) -> str:
        """``{base}/v1.0``."""
        return f"{self.base_url}/v1.0"

    @property
    def query(self) -> Query:
        """Parsed OData options."""
        if self._query is None:
            self._query = Query.parse(dict(self.request.query_params))
        return self._query

    @property
    def raw_params(self) -> Mapping[str, str]:
        """The query string as a mapping."""
        return dict(self.request.query_params)

    def now(self) -> datetime:
        """Sandbox time."""
        return self.state.clock.now()

    def prefer_zone(self) -> tuple[str, ZoneInfo] | None:
        """``Prefer: outlook.timezone`` (recorded in Preference-Applied)."""
        found = parse_prefer_timezone(self.prefer)
        if found is not None:
            self.applied.append(f'outlook.timezone="{found[0]}"')
        return found

    def prefer_text_body(self) -> bool:
        """``Prefer: outlook.body-content-type="text"``."""
        value = prefer_value(self.prefer, "outlook.body-content-type")
        if value is None:
            return False
        self.applied.append(f'outlook.body-content-type="{value.casefold()}"')
        return value.casefold() == "text"

    def prefer_immutable_ids(self) -> bool:
        """``Prefer: IdType="ImmutableId"``."""
        value = prefer_value(self.prefer, "IdType")
        if value is not None and value.casefold() == "immutableid":
            self.applied.append('IdType="ImmutableId"')
            return True
        return False

    def max_page_size(self) -> int | None:
        """``Prefer: odata.maxpagesize=N``."""
        value = prefer_value(self.prefer, "odata.maxpagesize")
        if value is None or not value.isdigit() or int(value) < 1:
            return None
        self.applied.append(f"odata.maxpagesize={int(value)}")
        return int(value)

    def request_url(self) -> str:
        """External URL of this request without its query (``{base}/v1.0/me/events``)."""
        return f"{self.graph_base}{self.path}"

    def short_page(self) -> bool:
        """True when a ``short_page`` fault fires for this list call."""
        from crmflow.sandbox.faults import FaultKind

        return bool(
            self.state.faults.draw(
                {FaultKind.SHORT_PAGE},
                user=self.email,
                api="graph",
                method=self.route.name,
            )
        )

    def draw_graph_faults(self, kinds: set[GraphFaultKind]) -> list[GraphFault]:
        """Graph-only faults of ``kinds`` firing for this request."""
        return self.store.faults.draw(
            kinds, user=self.email, api="graph", method=self.route.name
        )

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Common response headers (request ids, Preference-Applied)."""
        out = {
            "request-id": self.request_id,
            "client-request-id": self.client_request_id,
        }
        if self.applied:
            out["Preference-Applied"] = ",".join(dict.fromkeys(self.applied))
        if extra:
            out.update(extra)
        return out

    def json(
        self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        """A Graph JSON response with the common headers."""
        return graph_json(data, status=status, headers=self.headers(headers))

    def empty(
        self, status: int = 204, headers: Mapping[str, str] | None = None
    ) -> Response:
        """A response without a body (204 delete, 202 sendMail)."""
        return Response(status_code=status, headers=self.headers(headers))

    def context_url(self, fragment: str) -> str:
        """``@odata.context`` value: ``{base}/v1.0/$metadata#<fragment>``."""
        return f"{self.graph_base}/$metadata#{fragment}"

    def user_segment(self) -> str:
        """``users('<id>')`` for ``@odata.context``."""
        return f"users('{self.email}')"


def new_request_id() -> str:
    """A request-id GUID."""
    return str(uuid.uuid4())
