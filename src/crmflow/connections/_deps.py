"""What every part of the connections service needs, in one injectable bundle."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from crmflow.config import Settings
from crmflow.store.crypto import Vault
from crmflow.store.db import Database

#: the current instant (aware, UTC); tests pass the sandbox's clock
Clock = Callable[[], dt.datetime]
#: waits ``seconds``; tests pass one that records and returns at once
Sleep = Callable[[float], Awaitable[None]]


def utcnow() -> dt.datetime:
    """The real current instant, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Deps:
    """Database, vault, settings, and the seams tests replace."""

    db: Database
    vault: Vault
    settings: Settings
    clock: Clock = utcnow
    sleep: Sleep = asyncio.sleep
    #: an httpx transport for every provider call (None: real network)
    transport: httpx.AsyncBaseTransport | None = field(default=None)
