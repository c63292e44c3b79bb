"""``GoogleCalendar`` passes the provider contract against the sandbox over HTTP."""

from __future__ import annotations

import pytest

from crmflow.domain.calendar import CalendarProvider
from crmflow.providers.google import GoogleCalendar
from tests.servers.sandbox import Sandbox

from .contract import CalendarProviderContract, sample
from .google_helpers import GoogleSide, google_side


class TestGoogleCalendarSandbox(CalendarProviderContract):
    """A fresh sandbox user's primary calendar per test; real HTTP."""

    @pytest.fixture
    async def side(self, sandbox: Sandbox) -> GoogleSide:
        return await google_side(sandbox)

    @pytest.fixture
    def provider(self, side: GoogleSide) -> CalendarProvider:
        return side.calendar

    @pytest.fixture
    async def read_only_provider(self, sandbox: Sandbox) -> CalendarProvider:
        """Another user's calendar holding ``sample()``, flagged read-only."""
        owner = await google_side(sandbox, "ro-owner@example.com")
        await self.create(owner.calendar, sample())
        return owner.another(read_only=True)

    @pytest.fixture(autouse=True)
    def _remember(self, side: GoogleSide) -> None:
        self._side = side

    async def expire_cursors(self, provider: CalendarProvider) -> bool:
        assert isinstance(provider, GoogleCalendar)
        await self._side.expire_cursors()
        return True
