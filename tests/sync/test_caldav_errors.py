"""``CalDAVCalendar`` turns HTTP and XML failures into the provider error tree
(``httpx.MockTransport``, no server)."""

from __future__ import annotations

import httpx
import pytest

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
