"""``GraphCalendar`` passes the provider contract against the sandbox over HTTP."""

from __future__ import annotations

import pytest

from crmflow.domain.calendar import CalendarProvider
from tests.servers.sandbox import Sandbox

from .contract import CalendarProviderContract, sample
from .graph_helpers import GraphSide, graph_side


class TestGraphCalendarSandbox(CalendarProviderContract):
    """A fresh sandbox user's default Outlook calendar per test; real HTTP."""

    @pytest.fixture
    async def side(self, sandbox: Sandbox) -> GraphSide:
        return await graph_side(sandbox)

    @pytest.fixture
    def provider(self, side: GraphSide) -> CalendarProvider:
        return side.calendar

    @pytest.fixture
    async def read_only_provider(self, sandbox: Sandbox) -> CalendarProvider:
        """Another user's calendar holding ``sample()``, flagged read-only."""
        owner = await graph_side(sandbox, "ro-owner@example.com")
        await self.create(owner.calendar, sample())
        return owner.another(read_only=True)

    @pytest.fixture(autouse=True)
    def _remember(self, side: GraphSide) -> None:
        self._side = side

    async def expire_cursors(self, provider: CalendarProvider) -> bool:
        await self._side.expire_cursors()
        return True
