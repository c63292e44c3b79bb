"""Fresh Radicale calendars for the CalDAV adapter tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from crmflow.domain.appointments import all_day_span
from crmflow.domain.calendar import CalendarEvent
from crmflow.domain.secret import Secret
from crmflow.providers.caldav import CalDAVCalendar
from crmflow.providers.caldav._ical import to_ical
from tests.servers.radicale import RadicaleServer

USER = "alice"

_MKCALENDAR = """<?xml version="1.0" encoding="utf-8"?>
<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:set><d:prop>
    <d:displayname>{name}</d:displayname>
    <c:supported-calendar-component-set><c:comp name="VEVENT"/></c:supported-calendar-component-set>
  </d:prop></d:set>
</c:mkcalendar>"""


class Collections:
    """Makes fresh, empty event calendars of alice (MKCALENDAR) and deletes
    them again, so that discovery tests on the shared server still see only
    her seeded collections."""

    def __init__(self, server: RadicaleServer) -> None:
        self.server = server
        self.urls: list[str] = []

    def new(self) -> str:
        name = f"sync-{uuid.uuid4().hex[:12]}"
        url = f"{self.server.url}{USER}/{name}/"
        response = httpx.request(
            "MKCALENDAR",
            url,
            content=_MKCALENDAR.format(name=name).encode(),
            auth=(USER, self.server.users[USER]),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        self.urls.append(url)
        return url

    def remove_all(self) -> None:
        for url in self.urls:
            httpx.delete(url, auth=(USER, self.server.users[USER]), timeout=10)


@contextlib.contextmanager
def collections_of(server: RadicaleServer) -> Iterator[Collections]:
    """Fresh calendars for one test (a fixture's body), deleted afterwards."""
    made = Collections(server)
    try:
        yield made
    finally:
        made.remove_all()


def calendar(
    server: RadicaleServer,
    url: str,
    transport: httpx.AsyncBaseTransport | None = None,
    **options: object,
) -> CalDAVCalendar:
    return CalDAVCalendar(
        url,
        USER,
        Secret(server.users[USER]),
        transport=transport,
        **options,  # type: ignore[arg-type]
    )


def put_raw(server: RadicaleServer, url: str, name: str, data: bytes) -> str:
    """PUT calendar data as ``<url><name>`` behind the adapter's back; the ETag."""
    response = httpx.put(
        f"{url}{name}",
        content=data,
        headers={"Content-Type": "text/calendar; charset=utf-8"},
        auth=(USER, server.users[USER]),
        timeout=10,
    )
    assert response.status_code in (201, 204), response.text
    return response.headers["ETag"]


def expire_sync_tokens(server: RadicaleServer, url: str) -> bool:
    """Make Radicale forget every sync token of the collection at ``url``.

    Radicale keeps one state file per token under ``.Radicale.cache/sync-token``
    and only looks one up when the collection changed since: delete the files,
    then change the collection (a PUT and a DELETE of a scratch item).
    """
    name = url.rstrip("/").rsplit("/", 1)[-1]
    root = Path(server.log_file).parent / "collections"
    found = [p for p in root.rglob("sync-token") if name in p.parts and p.is_dir()]
    for folder in found:
        shutil.rmtree(folder)
    scratch = to_ical(
        CalendarEvent(
            ical_uid=f"scratch-{uuid.uuid4().hex}",
            title="scratch",
            span=all_day_span(dt.date(2026, 1, 1), None, "UTC"),
        )
    )
    put_raw(server, url, "scratch.ics", scratch)
    httpx.delete(f"{url}scratch.ics", auth=(USER, server.users[USER]), timeout=10)
    return bool(found)


class CountingTransport(httpx.AsyncHTTPTransport):
    """A real transport that records ``(method, path)`` of every request, and
    the hrefs of every ``calendar-multiget``.

    ``strip_put_etags`` drops the ``ETag`` of PUT answers, like a server that
    rewrites what it stores (RFC 4791 section 5.3.4; sync-peers.md §8 case 15).
    """

    def __init__(self, *, strip_put_etags: bool = False) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []
        self.multigets: list[int] = []
        self._strip = strip_put_etags

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if b"calendar-multiget" in request.content:
            self.multigets.append(request.content.count(b"<d:href>"))
        response = await super().handle_async_request(request)
        if self._strip and request.method == "PUT":
            del response.headers["ETag"]
        return response

    async def aclose(self) -> None:
        """Kept open across the adapter's per-request clients; see :meth:`close`."""

    async def close(self) -> None:
        await super().aclose()
