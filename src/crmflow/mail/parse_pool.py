"""Parsing pages of raw messages beside the caller, on another core.

Parsing RFC 5322 with the standard library is pure Python: for an IMAP import
it is about half the CPU time, and under one interpreter lock it cannot run
while the previous page is being stored. :func:`parse_page` hands a page to a
worker process (one per crmflow process, started on first use with the
``spawn`` method, which is safe in a threaded program) so that parsing and
storing overlap on two cores.

Small pages, machines with one core and a broken worker fall back to parsing
in a thread of this process: the result is the same, only slower.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from crmflow.domain.mail import IncomingMessage, MailFolder
from crmflow.mail.parse import parse_message

_log = logging.getLogger(__name__)

#: pages with fewer messages are parsed in a thread (a worker round trip
#: costs more than it saves)
MIN_PAGE = 8

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message as the mailbox returned it, with what parsing needs besides."""

    raw: bytes
    provider_id: str
    folder: MailFolder
    is_read: bool
    thread_id: str | None = None
    labels: tuple[str, ...] = ()


def parse_all(items: Sequence[RawMessage]) -> list[IncomingMessage]:
    """Parse every message of a page (runs in the worker)."""
    return [
        parse_message(
            m.raw,
            provider_id=m.provider_id,
            folder=m.folder,
            is_read=m.is_read,
            thread_id=m.thread_id,
            labels=m.labels,
        )
        for m in items
    ]


def _executor() -> ProcessPoolExecutor | None:
    global _pool
    if (os.cpu_count() or 1) < 2:
        return None
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


async def parse_page(items: Sequence[RawMessage]) -> list[IncomingMessage]:
    """The parsed page, in order; never raises on message content."""
    pool = _executor() if len(items) >= MIN_PAGE else None
    if pool is not None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, parse_all, list(items))
        except BrokenProcessPool:
            _log.warning("the mail parsing worker stopped; parsing in-process")
            _discard(pool)
    return await asyncio.to_thread(parse_all, items)
