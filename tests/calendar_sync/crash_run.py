"""One calendar sync run in a process of its own, killed at a chosen provider
request: :func:`run_in_child`, the target of a forked process (see
``test_provider_crash.py``).

The process ends with ``os._exit`` at the chosen request, before sending it
or after its reply came back: no ``finally``, no rollback, no lease given
back, as when a worker is killed. Exit codes: :data:`CRASHED` when it died
there, 0 when the run ended before reaching that request (its status on
stdout).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

import httpx

from crmflow.bootstrap import start_services
from crmflow.config import load_settings
from crmflow.connections.service import Integrations
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.services.calendar_sync import CalendarSync

#: the exit code of a process killed at its chosen request
CRASHED = 75


def is_write(request: httpx.Request) -> bool:
    """Whether ``request`` changes an event (Graph's ``$batch`` POST reads)."""
    return request.method in ("POST", "PUT", "PATCH", "DELETE") and not (
        request.url.path.endswith("$batch")
    )


class KillAt(httpx.AsyncBaseTransport):
    """Provider traffic over the network; the process dies at request ``at``
    (token requests not counted; with ``writes_only``, only requests that
    change an event), before sending it or, with ``after``, once the
    provider has carried it out and answered."""

    def __init__(self, at: int, *, after: bool, writes_only: bool) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.at = at
        self.after = after
        self.writes_only = writes_only
        self.seen = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "token" in request.url.path or (self.writes_only and not is_write(request)):
            return await self.real.handle_async_request(request)
        self.seen += 1
        if self.seen != self.at:
            return await self.real.handle_async_request(request)
        if self.after:
            response = await self.real.handle_async_request(request)
            await response.aread()
        sys.stderr.write(
            f"killed at {request.method} {request.url.path}"
            f" ({'after' if self.after else 'before'} the provider saw it)\n"
        )
        sys.stderr.flush()
        os._exit(CRASHED)

    async def aclose(self) -> None:
        await self.real.aclose()


async def main(spec: dict[str, Any]) -> None:
    settings = load_settings(**spec["settings"])
    services = await start_services(settings)
    transport = KillAt(spec["at"], after=spec["after"], writes_only=spec["writes_only"])
    try:
        sync = CalendarSync(
            Integrations(services.db, services.vault, settings, transport=transport)
        )
        ctx = TenantContext(
            uuid.UUID(spec["user_id"]),
            uuid.UUID(spec["organization_id"]),
            Role(spec["role"]),
        )
        run = await sync.sync(ctx, uuid.UUID(spec["account_id"]))
        sys.stdout.write(f"{run.status.value} after {transport.seen} requests\n")
    finally:
        await transport.aclose()
        await services.close()


def run_in_child(spec: dict[str, Any], output: str) -> None:
    """:func:`main` in a process of its own whose stdout and stderr go to
    the file ``output`` (tracebacks included)."""
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    asyncio.run(main(spec))
