"""CalDAV calls go through the retry policy every provider call shares.

crmflow syncs a real Radicale calendar through a transport that answers the
first requests with faults before passing requests on: a passing 503 or a 429
with ``Retry-After`` is waited out inside the run (the pauses are recorded,
not slept), and a fault that does not pass ends the run after
``http_max_attempts`` tries with words to act on, never a hot loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from crmflow.bootstrap import Services
from crmflow.config import Settings
from crmflow.connections.credentials import connect_caldav
from crmflow.connections.service import Integrations
from crmflow.domain.calendar_accounts import RunStatus
from crmflow.domain.secret import Secret
from crmflow.services.calendar_sync import CalendarSync
from tests.connections.conftest import Pauses
from tests.servers.radicale import RadicaleServer
from tests.servers.tls import TestCert

USER = "bob"

_MKCALENDAR = """<?xml version="1.0" encoding="utf-8"?>
<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:set><d:prop><d:displayname>Retries</d:displayname></d:prop></d:set>
</c:mkcalendar>"""

_EVENT = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//crmflow tests//EN\r
BEGIN:VEVENT\r
UID:{uid}\r
DTSTAMP:20261120T090000Z\r
DTSTART:20261201T090000Z\r
DTEND:20261201T100000Z\r
SUMMARY:{title}\r
END:VEVENT\r
END:VCALENDAR\r
"""


@dataclass
class Faults(httpx.AsyncBaseTransport):
    """Answers REPORT requests from ``pending`` while it lasts, then passes
    every request on to the network; records what the server side saw."""

    pending: list[httpx.Response] = field(default_factory=list)
    reports: list[int] = field(default_factory=list)
    real: httpx.AsyncHTTPTransport = field(default_factory=httpx.AsyncHTTPTransport)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "REPORT" and self.pending:
            answer = self.pending.pop(0)
            self.reports.append(answer.status_code)
            return answer
        response = await self.real.handle_async_request(request)
        if request.method == "REPORT":
            self.reports.append(response.status_code)
        return response

    async def aclose(self) -> None:
        await self.real.aclose()


@pytest.fixture
async def faults() -> AsyncIterator[Faults]:
    transport = Faults()
    yield transport
    await transport.aclose()


@contextlib.asynccontextmanager
async def _calendar(
    server: RadicaleServer, verify: ssl.SSLContext | bool = True
) -> AsyncIterator[str]:
    """A calendar of bob's with two events, deleted afterwards."""
    url = f"{server.url}{USER}/retries-{uuid.uuid4().hex[:10]}/"
    auth = (USER, server.users[USER])
    async with httpx.AsyncClient(auth=auth, timeout=30, verify=verify) as dav:
        made = await dav.request("MKCALENDAR", url, content=_MKCALENDAR.encode())
        assert made.status_code == 201, made.text
        for n in (1, 2):
            uid = f"retry-{n}-{uuid.uuid4().hex}@tests"
            put = await dav.put(
                f"{url}{uid}.ics",
                content=_EVENT.format(uid=uid, title=f"Call {n}").encode(),
                headers={"Content-Type": "text/calendar"},
            )
            assert put.status_code == 201, put.text
        yield url
        await dav.request("DELETE", url)


@pytest.fixture
async def collection(radicale: RadicaleServer) -> AsyncIterator[str]:
    async with _calendar(radicale) as url:
        yield url


async def _account(
    services: Services,
    settings: Settings,
    radicale: RadicaleServer,
    faults: Faults | None,
    pauses: Pauses,
    ctx,  # type: ignore[no-untyped-def]
    url: str,
) -> tuple[CalendarSync, uuid.UUID]:
    integrations = Integrations(
        services.db, services.vault, settings, sleep=pauses, transport=faults
    )
    calendar_sync = CalendarSync(integrations)
    connected = await connect_caldav(
        services,
        ctx,
        username=USER,
        password=Secret(radicale.users[USER]),
        url=radicale.url,
        email=f"{USER}@dav.test",
    )
    account = await calendar_sync.add_account(ctx, connected.integration.id, url)
    return calendar_sync, account.id


async def test_passing_faults_are_waited_out_within_the_run(
    services: Services,
    settings: Settings,
    radicale: RadicaleServer,
    faults: Faults,
    pauses: Pauses,
    collection: str,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    calendar_sync, account_id = await _account(
        services, settings, radicale, faults, pauses, ctx, collection
    )
    faults.pending = [
        httpx.Response(503),
        httpx.Response(429, headers={"Retry-After": "1.5"}),
    ]
    run = await calendar_sync.sync(ctx, account_id)
    assert (run.status, run.errors, run.events_imported) == (
        RunStatus.SUCCESS,
        (),
        2,
    )
    # the listing was asked three times: two faults, then Radicale's answer
    assert faults.reports[:3] == [503, 429, 207]
    # a jittered back-off after the 503, the server's own pause after the 429
    assert len(pauses.taken) == 2
    assert 0 <= pauses.taken[0] <= settings.http_max_delay_s
    assert pauses.taken[1] == 1.5


async def test_a_fault_that_does_not_pass_fails_the_run_in_words(
    services: Services,
    settings: Settings,
    radicale: RadicaleServer,
    faults: Faults,
    pauses: Pauses,
    collection: str,
    tenants,
) -> None:
    ctx = tenants.alice.ctx
    calendar_sync, account_id = await _account(
        services, settings, radicale, faults, pauses, ctx, collection
    )
    faults.pending = [httpx.Response(503) for _ in range(50)]
    run = await calendar_sync.sync(ctx, account_id)
    assert run.status is RunStatus.FAILED
    assert run.events_imported == 0
    message = " ".join(e.message for e in run.errors)
    assert "HTTP 503" in message
    assert "tries again later" in message
    # http_max_attempts tries, pauses between them only: no hot loop
    assert faults.reports == [503] * settings.http_max_attempts
    assert len(pauses.taken) == settings.http_max_attempts - 1


async def test_the_policy_keeps_the_servers_extra_ca_trust(
    services: Services,
    settings: Settings,
    radicale_tls: RadicaleServer,
    tls_cert: TestCert,
    pauses: Pauses,
    tenants,
) -> None:
    """Without an injected transport the policy opens connections of its
    own: they trust CRMFLOW_EXTRA_CA_FILE as the CalDAV client always did."""
    ctx = tenants.alice.ctx
    trusting = settings.model_copy(update={"extra_ca_file": tls_cert.cert_file})
    services = dataclasses.replace(services, settings=trusting)
    verify = ssl.create_default_context(cafile=str(tls_cert.cert_file))
    async with _calendar(radicale_tls, verify) as url:
        calendar_sync, account_id = await _account(
            services, trusting, radicale_tls, None, pauses, ctx, url
        )
        run = await calendar_sync.sync(ctx, account_id)
    assert (run.status, run.errors, run.events_imported) == (
        RunStatus.SUCCESS,
        (),
        2,
    )
    assert pauses.taken == []
