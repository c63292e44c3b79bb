"""``CalDAVCalendar`` passes the provider contract against a real Radicale:
with and without the change feed, with one HTTP client kept for the whole test
(``async with``), and listing by ``PROPFIND`` where the server refuses the
initial ``sync-collection``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from crmflow.domain.calendar import CalendarProvider
from crmflow.providers.caldav import CalDAVCalendar
from crmflow.providers.caldav._ical import to_ical
from tests.servers.radicale import RadicaleServer

from .caldav_helpers import (
    Collections,
    CountingTransport,
    calendar,
    collections_of,
    expire_sync_tokens,
    put_raw,
)
from .contract import CalendarProviderContract, sample

pytestmark = pytest.mark.servers


@pytest.fixture
def fresh_calendars(radicale: RadicaleServer) -> Iterator[Collections]:
    with collections_of(radicale) as made:
        yield made


class TestCalDAVCalendarRadicale(CalendarProviderContract):
    """A fresh Radicale collection per test (MKCALENDAR), sync-collection on."""

    @pytest.fixture
    def provider(
        self, radicale: RadicaleServer, fresh_calendars: Collections
    ) -> CalendarProvider:
        return calendar(radicale, fresh_calendars.new())

    @pytest.fixture
    def read_only_provider(
        self, radicale: RadicaleServer, fresh_calendars: Collections
    ) -> CalendarProvider:
        url = fresh_calendars.new()
        put_raw(radicale, url, "sample.ics", to_ical(sample()))
        return calendar(radicale, url, read_only=True)

    async def expire_cursors(self, provider: CalendarProvider) -> bool:
        assert isinstance(provider, CalDAVCalendar)
        return expire_sync_tokens(self.server, provider.url)

    @pytest.fixture(autouse=True)
    def _server(self, radicale: RadicaleServer) -> None:
        self.server = radicale


class TestCalDAVCalendarRadicalePlain(CalendarProviderContract):
    """The same server used without its change feed, two hrefs per multiget."""

    @pytest.fixture
    def provider(
        self, radicale: RadicaleServer, fresh_calendars: Collections
    ) -> CalendarProvider:
        return calendar(
            radicale, fresh_calendars.new(), incremental=False, get_many_limit=2
        )


class TestCalDAVCalendarRadicaleKeptOpen(TestCalDAVCalendarRadicale):
    """Every call of a test on one HTTP client (``async with``)."""

    @pytest.fixture
    async def provider(
        self, radicale: RadicaleServer, fresh_calendars: Collections
    ) -> AsyncIterator[CalendarProvider]:
        async with calendar(radicale, fresh_calendars.new()) as dav:
            yield dav


class RefusingInitialSync(CountingTransport):
    """Radicale, but an initial ``sync-collection`` (empty token) is answered
    501, as by a server that offers the change feed only from a PROPFIND token."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if b"<d:sync-token></d:sync-token>" in request.content:
            return httpx.Response(501, request=request)
        return await super().handle_async_request(request)


class TestCalDAVCalendarRadicalePropfindListing(TestCalDAVCalendarRadicale):
    """Listing by PROPFIND, the change feed by sync-collection."""

    @pytest.fixture
    async def provider(
        self, radicale: RadicaleServer, fresh_calendars: Collections
    ) -> AsyncIterator[CalendarProvider]:
        transport = RefusingInitialSync()
        try:
            yield calendar(radicale, fresh_calendars.new(), transport)
        finally:
            await transport.close()
