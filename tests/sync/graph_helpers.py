"""Shared fixtures for the Microsoft Graph calendar adapter tests (sandbox over HTTP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crmflow.domain.secret import Secret
from crmflow.providers.microsoft import GraphCalendar
from tests.servers.sandbox import Sandbox

SCOPES = ["openid", "offline_access", "User.Read", "Calendars.ReadWrite"]


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
        return GraphCalendar(self.graph_url, None, self.access_token, **options)


async def graph_side(sandbox: Sandbox, email: str = "ann@example.com") -> GraphSide:
    await sandbox.control("microsoft", "POST", "users", json={"email": email})
    response = await sandbox.control(
        "microsoft", "POST", "tokens", json={"email": email, "scopes": SCOPES}
    )
    token = Secret(response.json()["access_token"])

    async def access_token() -> Secret:
        return token

    calendar = GraphCalendar(sandbox.microsoft_url + "/v1.0", None, access_token)
    return GraphSide(sandbox, email, calendar, token)
