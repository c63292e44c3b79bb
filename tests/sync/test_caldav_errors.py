"""``CalDAVCalendar`` turns HTTP and XML failures into the provider error tree,
follows truncated ``sync-collection`` answers and closes its transport when a
call or an ``async with`` block ends (``httpx.MockTransport``, no server)."""

from __future__ import annotations

from xml.sax.saxutils import escape

import httpx
import pytest

from crmflow.domain.calendar import Notify
from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.providers.base import (
    AuthError,
    ProviderError,
    RateLimited,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.caldav import CalDAVCalendar
from crmflow.providers.caldav._ical import to_ical

from .contract import sample

URL = "http://127.0.0.1:5232/alice/office/"


def answering(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> CalDAVCalendar:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=headers)

    return CalDAVCalendar(
        URL, "alice", Secret("pw"), transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthError),
        (403, AuthError),
        (500, TransientProviderError),
        (503, TransientProviderError),
        (405, ProviderError),
    ],
)
async def test_http_errors_map_to_the_provider_tree(status, error):
    with pytest.raises(error):
        await answering(status).list()


async def test_rate_limits_carry_retry_after():
    with pytest.raises(RateLimited) as caught:
        await answering(429, headers={"Retry-After": "7"}).list()
    assert caught.value.retry_after_s == 7


async def test_unsafe_or_broken_xml_is_refused():
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    with pytest.raises(ProviderError):
        await answering(207, bomb).list()
    with pytest.raises(ProviderError):
        await answering(207, b"<not-closed").list()


async def test_connection_failures_are_transient():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    dav = CalDAVCalendar(
        URL, "alice", Secret("pw"), transport=httpx.MockTransport(handler)
    )
    with pytest.raises(TransientProviderError):
        await dav.get_many(["/alice/office/a.ics"])


async def test_a_collection_without_sync_token_is_not_incremental():
    empty = b'<?xml version="1.0"?><multistatus xmlns="DAV:"/>'
    with pytest.raises(UnsupportedOperation):
        await answering(207, empty).list()
    plain = CalDAVCalendar(
        URL,
        "alice",
        Secret("pw"),
        incremental=False,
        transport=httpx.MockTransport(lambda r: httpx.Response(207, content=empty)),
    )
    assert (await plain.list()).cursor is None


def test_plain_http_is_refused_off_loopback():
    with pytest.raises(ValidationFailed):
        CalDAVCalendar("http://dav.example.com/cal/", "alice", Secret("pw"))


# ------------------------------------------------------------------ truncated answers

PATH = "/alice/office/"


def member(name: str, etag: str | None = None, *, data: bool = False) -> str:
    """A ``DAV:response`` for ``<PATH><name>.ics``: 404 without ``etag``."""
    if etag is None:
        return (
            f"<d:response><d:href>{PATH}{name}.ics</d:href>"
            "<d:status>HTTP/1.1 404 Not Found</d:status></d:response>"
        )
    calendar_data = ""
    if data:
        text = escape(to_ical(sample(name, f"Title {name}")).decode())
        calendar_data = f"<c:calendar-data>{text}</c:calendar-data>"
    return (
        f"<d:response><d:href>{PATH}{name}.ics</d:href><d:propstat><d:prop>"
        f"<d:getetag>{etag}</d:getetag>{calendar_data}</d:prop>"
        "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
    )


def multistatus(token: str, *responses: str, truncated: bool = False) -> bytes:
    cut = (
        f"<d:response><d:href>{PATH}</d:href>"
        "<d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response>"
        if truncated
        else ""
    )
    return (
        '<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" '
        'xmlns:c="urn:ietf:params:xml:ns:caldav">'
        f"{''.join(responses)}{cut}<d:sync-token>{token}</d:sync-token>"
        "</d:multistatus>"
    ).encode()


class Pages:
    """A server whose sync-collection answers come in pages, by token."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content.decode()
        if request.method == "REPORT" and "sync-collection" in body:
            token = body.split("<d:sync-token>")[1].split("</d:sync-token>")[0]
            kind = "+data" if "calendar-data" in body else ""
            self.seen.append(f"sync {token!r}{kind}")
            return httpx.Response(207, content=self.pages[token])
        if request.method == "REPORT" and "calendar-multiget" in body:
            self.seen.append("multiget")
            return httpx.Response(207, content=multistatus("unused"))
        self.seen.append(request.method)
        return httpx.Response(500)


def paged(pages: dict[str, bytes]) -> tuple[CalDAVCalendar, Pages]:
    server = Pages(pages)
    dav = CalDAVCalendar(
        URL, "alice", Secret("pw"), transport=httpx.MockTransport(server)
    )
    return dav, server


async def test_a_truncated_full_listing_is_followed_to_its_end():
    dav, server = paged(
        {
            "": multistatus(
                "t1",
                member("a", '"a1"', data=True),
                member("b", '"b1"', data=True),
                truncated=True,
            ),
            "t1": multistatus(
                "t2", member("a"), member("c", '"c1"', data=True), member("b", '"b2"')
            ),
        }
    )
    listing = await dav.list()
    assert dict(listing.items) == {f"{PATH}b.ics": '"b2"', f"{PATH}c.ics": '"c1"'}
    assert listing.cursor == "t2"
    assert server.seen == ["sync ''+data", "sync 't1'+data"]
    # c's data came with the listing; b's kept data belongs to an older version
    items = await dav.get_many([f"{PATH}b.ics", f"{PATH}c.ics"])
    assert [(i.remote_id, i.version, i.event.title) for i in items] == [
        (f"{PATH}c.ics", '"c1"', "Title c")
    ]
    assert server.seen[2:] == ["multiget"]


async def test_truncated_changes_are_followed_to_their_end():
    dav, server = paged(
        {
            "t1": multistatus("t2", member("a", '"a2"'), member("b"), truncated=True),
            "t2": multistatus("t3", member("a"), member("b", '"b3"', data=True)),
        }
    )
    changes = await dav.list_changes("t1")
    assert dict(changes.changed) == {f"{PATH}b.ics": '"b3"'}
    assert changes.deleted == {f"{PATH}a.ics"}
    assert changes.cursor == "t3"
    assert server.seen == ["sync 't1'+data", "sync 't2'+data"]
    # b's data came with the changes: no multiget
    [item] = await dav.get_many([f"{PATH}b.ics"])
    assert (item.version, item.event.title) == ('"b3"', "Title b")
    assert server.seen[2:] == []


@pytest.mark.parametrize("refusal", [400, 403, 415, 501])
async def test_a_change_feed_refused_with_data_is_asked_for_without_it(refusal):
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        body = request.content.decode()
        if "sync-collection" in body:
            with_data = "calendar-data" in body
            seen.append("sync+data" if with_data else "sync")
            if with_data:
                return httpx.Response(refusal, content=b"<error/>")
            return httpx.Response(207, content=multistatus("t2", member("a", '"a2"')))
        seen.append("multiget")
        return httpx.Response(
            207, content=multistatus("unused", member("a", '"a2"', data=True))
        )

    dav = CalDAVCalendar(
        URL, "alice", Secret("pw"), transport=httpx.MockTransport(server)
    )
    changes = await dav.list_changes("t1")
    assert dict(changes.changed) == {f"{PATH}a.ics": '"a2"'}
    assert seen == ["sync+data", "sync"]
    [item] = await dav.get_many([f"{PATH}a.ics"])
    assert (item.version, item.event.title) == ('"a2"', "Title a")
    # refused once is enough: later change feeds ask without data
    assert (await dav.list_changes("t1")).cursor == "t2"
    assert seen == ["sync+data", "sync", "multiget", "sync"]


async def test_a_change_feed_drops_kept_data_it_makes_stale():
    """The listing kept a's and b's data; the change feed then says a
    changed (without data) and b was deleted: neither old copy is handed out."""
    dav, server = paged(
        {
            "": multistatus(
                "t1",
                member("a", '"a1"', data=True),
                member("b", '"b1"', data=True),
                member("c", '"c1"', data=True),
            ),
            "t1": multistatus("t2", member("a", '"a2"'), member("b")),
        }
    )
    listing = await dav.list()
    assert listing.cursor == "t1"
    changes = await dav.list_changes("t1")
    assert dict(changes.changed) == {f"{PATH}a.ics": '"a2"'}
    assert changes.deleted == {f"{PATH}b.ics"}
    items = await dav.get_many([f"{PATH}a.ics", f"{PATH}b.ics", f"{PATH}c.ics"])
    # c's kept data still answers; a and b are asked for (this server's
    # multiget finds neither)
    assert [(i.remote_id, i.version) for i in items] == [(f"{PATH}c.ics", '"c1"')]
    assert server.seen[-1] == "multiget"


async def test_a_truncation_that_makes_no_progress_is_transient():
    dav, _ = paged({"t1": multistatus("t1", member("a", '"a2"'), truncated=True)})
    with pytest.raises(TransientProviderError):
        await dav.list_changes("t1")


async def test_an_initial_sync_collection_refused_with_403_falls_back_to_propfind():
    seen: list[str] = []
    listing = (
        '<?xml version="1.0"?><d:multistatus xmlns:d="DAV:">'
        f"<d:response><d:href>{PATH}</d:href><d:propstat><d:prop>"
        "<d:sync-token>t9</d:sync-token></d:prop>"
        "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        + member("a", '"a1"')
        + "</d:multistatus>"
    ).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if request.method == "REPORT":
            return httpx.Response(
                403, content=b'<d:error xmlns:d="DAV:"><d:supported-report/></d:error>'
            )
        return httpx.Response(207, content=listing)

    dav = CalDAVCalendar(
        URL, "alice", Secret("pw"), transport=httpx.MockTransport(handler)
    )
    result = await dav.list()
    assert dict(result.items) == {f"{PATH}a.ics": '"a1"'}
    assert result.cursor == "t9"
    assert seen == ["REPORT", "PROPFIND"]


# ------------------------------------------------------------------ closing


class ClosingCount(httpx.MockTransport):
    """Answers every request with 204 and counts how often it is closed."""

    def __init__(self) -> None:
        super().__init__(lambda request: httpx.Response(204))
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_each_call_closes_its_client_unless_async_with_keeps_it():
    transport = ClosingCount()
    dav = CalDAVCalendar(URL, "alice", Secret("pw"), transport=transport)
    for _ in range(3):
        await dav.delete(f"{PATH}a.ics", if_match='"1"', notify=Notify.NONE)
    assert transport.closed == 3
    async with dav:
        for _ in range(3):
            await dav.delete(f"{PATH}a.ics", if_match='"1"', notify=Notify.NONE)
        assert transport.closed == 3
    assert transport.closed == 4
    await dav.aclose()  # nothing open: nothing to close
    assert transport.closed == 4


async def test_a_failing_call_closes_its_client_too():
    transport = ClosingCount()
    failing = httpx.MockTransport(lambda request: httpx.Response(503))
    failing.aclose = transport.aclose  # type: ignore[method-assign]
    dav = CalDAVCalendar(URL, "alice", Secret("pw"), transport=failing)
    with pytest.raises(TransientProviderError):
        await dav.list()
    assert transport.closed == 1
