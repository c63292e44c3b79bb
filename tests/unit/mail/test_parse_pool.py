"""Pages of raw messages parsed in the worker process, in a thread for small
pages, and in a thread again when the worker dies."""

from __future__ import annotations

import os
import signal

from crmflow.domain.mail import MailFolder
from crmflow.mail import parse_pool
from crmflow.mail.parse_pool import MIN_PAGE, RawMessage, parse_all, parse_page


def _page(count: int) -> list[RawMessage]:
    return [
        RawMessage(
            (
                f"From: Sender {i} <s{i}@example.org>\r\nSubject: note {i}\r\n"
                f"Message-ID: <n{i}@example.org>\r\n\r\nbody {i}\r\n"
            ).encode(),
            provider_id=f"inbox/1/{i}",
            folder=MailFolder.INBOX,
            is_read=i % 2 == 0,
            thread_id=f"t{i}",
            labels=("INBOX",),
        )
        for i in range(count)
    ]


async def test_a_page_is_parsed_in_the_worker_in_order() -> None:
    page = _page(MIN_PAGE + 3)
    parsed = await parse_page(page)
    assert parsed == parse_all(page)
    assert [m.subject for m in parsed] == [f"note {i}" for i in range(len(page))]
    assert [m.is_read for m in parsed] == [i % 2 == 0 for i in range(len(page))]
    pool = parse_pool._pool
    assert pool is not None
    assert all(p.pid != os.getpid() for p in pool._processes.values())


async def test_a_small_page_is_parsed_here() -> None:
    page = _page(MIN_PAGE - 1)
    assert await parse_page(page) == parse_all(page)


async def test_a_dead_worker_falls_back_and_a_new_one_starts() -> None:
    page = _page(MIN_PAGE)
    await parse_page(page)
    pool = parse_pool._pool
    assert pool is not None
    for process in list(pool._processes.values()):
        os.kill(process.pid, signal.SIGKILL)
        process.join()
    assert await parse_page(page) == parse_all(page)  # parsed in a thread
    assert parse_pool._pool is not pool
    assert await parse_page(page) == parse_all(page)  # a new worker
    assert parse_pool._pool is not None
