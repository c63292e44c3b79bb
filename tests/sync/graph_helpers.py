"""Shared fixtures for the Microsoft Graph calendar adapter tests (sandbox over HTTP)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crmflow.domain.secret import Secret
from crmflow.providers.microsoft import GraphCalendar
from tests.servers.sandbox import Sandbox

SCOPES = ["openid", "offline_access", "User.Read", "Calendars.ReadWrite"]
#: the adapters' "today": the contract's events (April-May 2026) lie inside the
#: change feed's window around it, whatever the date the tests run on
TODAY = dt.datetime(2026, 4, 1, 12, tzinfo=dt.UTC)


def fixed_clock(now: dt.datetime = TODAY) -> Callable[[], dt.datetime]:
    """A clock that always says ``now``."""

    def clock() -> dt.datetime:
        return now

    return clock


@dataclass
class GraphSide:
    """A sandbox user's default Outlook calendar and the adapter on it."""

    sandbox: Sandbox
    email: str
    calendar: GraphCalendar
    token: Secret

    @property
    def graph_url(self) -> str:
        return self.sandbox.microsoft_url + "/v1.0"

    async def access_token(self) -> Secret:
        return self.token

    def another(self, **options: Any) -> GraphCalendar:
        """Another adapter on the same calendar."""
        options.setdefault("clock", fixed_clock())
        return GraphCalendar(self.graph_url, None, self.access_token, **options)

    async def expire_cursors(self) -> None:
        """Make the sandbox forget every delta token of the mailbox (410 next time)."""
        await self.sandbox.control(
            "microsoft", "POST", "delta/expire", json={"email": self.email}
        )


async def graph_side(sandbox: Sandbox, email: str = "ann@example.com") -> GraphSide:
    await sandbox.control("microsoft", "POST", "users", json={"email": email})
    response = await sandbox.control(
        "microsoft", "POST", "tokens", json={"email": email, "scopes": SCOPES}
    )
    token = Secret(response.json()["access_token"])

    async def access_token() -> Secret:
        return token

    calendar = GraphCalendar(
        sandbox.microsoft_url + "/v1.0", None, access_token, clock=fixed_clock()
    )
    return GraphSide(sandbox, email, calendar, token)
