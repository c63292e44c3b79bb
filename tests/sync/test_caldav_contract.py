"""``CalDAVCalendar`` passes the provider contract against a real Radicale."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crmflow.domain.calendar import CalendarProvider
from crmflow.providers.caldav import CalDAVCalendar
from crmflow.providers.caldav._ical import to_ical
from tests.servers.radicale import RadicaleServer

from .caldav_helpers import (
    Collections,
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
