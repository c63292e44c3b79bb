"""Fixtures for push tests: crmflow served on a real port (where the
sandbox delivers notifications over HTTP, as the providers do), push
channels on, and a runner whose clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvicorn
from fastapi import FastAPI

from crmflow.config import Settings
from crmflow.connections.service import Integrations
from crmflow.domain.schedule import Schedule
from crmflow.jobs.runner import InProcessRunner, SyncScheduler
from crmflow.jobs.tasks import SyncTasks
from crmflow.services.calendar_sync import CalendarSync
from crmflow.services.mail import MailService
from crmflow.services.push import PushChannels
from crmflow.store.db import Database
from tests.jobs.conftest import INTERVAL, Clock
from tests.servers.net import free_port
from tests.servers.sandbox import Sandbox


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, port: int) -> Settings:
    """Push on: notifications go to this test's server (plain HTTP on
    loopback, which the test sandbox allows)."""
    return settings.model_copy(update={"webhook_base_url": f"http://127.0.0.1:{port}"})


@pytest.fixture
async def served(app: FastAPI, port: int) -> AsyncIterator[str]:
    """crmflow on a real port, in this test's event loop."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", log_config=None
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def push(integrations: Integrations, sandbox: Sandbox) -> PushChannels:
    return PushChannels(integrations, clock=sandbox.state.clock.now)


@pytest.fixture
def runner(
    admin_db: Database,
    calendar_sync: CalendarSync,
    mail: MailService,
    push: PushChannels,
    clock: Clock,
) -> InProcessRunner:
    scheduler = SyncScheduler(
        admin_db,
        SyncTasks(calendar_sync, mail, push),
        Schedule(INTERVAL, jitter=0.0),
        clock=clock,
    )
    return InProcessRunner(scheduler, tick_s=0.05)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    """Wait for ``check`` to hold (AssertionError after ``timeout_s``)."""
    for _ in range(int(timeout_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")
