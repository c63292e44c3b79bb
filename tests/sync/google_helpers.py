"""Shared fixtures for the Google Calendar adapter tests (sandbox over HTTP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crmflow.domain.secret import Secret
from crmflow.providers.google import GoogleCalendar
from tests.servers.sandbox import Sandbox

SCOPE = "https://www.googleapis.com/auth/calendar"


@dataclass
class GoogleSide:
    """A sandbox user's primary calendar and the adapter on it."""

    sandbox: Sandbox
    email: str
    calendar: GoogleCalendar
    token: Secret

    async def access_token(self) -> Secret:
        return self.token

    def another(self, **options: Any) -> GoogleCalendar:
        """Another adapter on the same calendar (a fresh process, no cache)."""
        return GoogleCalendar(
            self.sandbox.google_url + "calendar/v3/",
            "primary",
            self.access_token,
            **options,
        )

    async def expire_cursors(self) -> None:
        await self.sandbox.control(
            "google", "POST", f"calendars/{self.email}/expire-sync-tokens"
        )


async def google_side(sandbox: Sandbox, email: str = "ann@example.com") -> GoogleSide:
    response = await sandbox.control(
        "google", "POST", "tokens", json={"email": email, "scopes": [SCOPE]}
    )
    token = Secret(response.json()["access_token"])

    async def access_token() -> Secret:
        return token

    calendar = GoogleCalendar(
        sandbox.google_url + "calendar/v3/", "primary", access_token
    )
    return GoogleSide(sandbox, email, calendar, token)
