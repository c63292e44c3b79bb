"""The service reads the next page while the current one is stored, and
stops the fetch when the caller stops early."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from crmflow.domain.mail import MailBatch
from crmflow.services.mail import _read_ahead


class Pages:
    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.started: list[int] = []
        self.closed = False

    async def __call__(self) -> AsyncIterator[MailBatch]:
        try:
            for i in range(self.count):
                self.started.append(i)
                await asyncio.sleep(0)
                if i == self.fail_at:
                    raise RuntimeError(f"page {i} failed")
                yield MailBatch(removed=(str(i),))
        finally:
            self.closed = True


async def test_every_page_in_order_with_one_read_ahead() -> None:
    pages = Pages(4)
    seen = []
    async for page in _read_ahead(pages()):
        seen.append(page.removed[0])
        # while page n is handled, page n+1 is being fetched, never n+2
        assert len(pages.started) <= int(page.removed[0]) + 2
    assert seen == ["0", "1", "2", "3"]
    assert pages.closed


async def test_stopping_early_closes_the_fetch() -> None:
    pages = Pages(10)
    async for page in (reader := _read_ahead(pages())):
        if page.removed == ("1",):
            break
    await reader.aclose()
    assert pages.closed
    assert len(pages.started) <= 3


async def test_a_failing_page_reaches_the_caller_after_the_pages_before_it() -> None:
    pages = Pages(5, fail_at=2)
    seen: list[str] = []

    async def read_all() -> None:
        async for page in _read_ahead(pages()):
            seen.append(page.removed[0])

    with pytest.raises(RuntimeError, match="page 2 failed"):
        await read_all()
    assert seen == ["0", "1"]
    assert pages.closed
