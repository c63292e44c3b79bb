"""``MemoryCalendar`` passes the provider contract, in both of its shapes."""

from __future__ import annotations

import pytest

from crmflow.domain.calendar import CalendarProvider
from crmflow.providers.memory import DuplicateCreate, MemoryCalendar

from .contract import CalendarProviderContract, sample


class TestMemoryCalendar(CalendarProviderContract):
    """A well-behaved provider: change feed, versions on every write."""

    @pytest.fixture
    def provider(self) -> CalendarProvider:
        return MemoryCalendar()

    @pytest.fixture
    def read_only_provider(self) -> CalendarProvider:
        calendar = MemoryCalendar(read_only=True)
        calendar.put(sample())
        return calendar

    async def expire_cursors(self, provider: CalendarProvider) -> bool:
        assert isinstance(provider, MemoryCalendar)
        provider.expire_cursors()
        return True


class TestMemoryCalendarPlainDav(CalendarProviderContract):
    """Like a plain CalDAV server: no change feed, no ETag on PUT, small batches,
    409 on a repeated create."""

    @pytest.fixture
    def provider(self) -> CalendarProvider:
        return MemoryCalendar(
            incremental=False,
            versions_on_write=False,
            get_many_limit=2,
            duplicate_create=DuplicateCreate.RAISE,
        )
