"""``cancel_and_wait``: the stopped task's cancellation is expected, the
caller's own is not swallowed, and a crash of the task is raised."""

from __future__ import annotations

import asyncio

import pytest

from crmflow.jobs._cancel import cancel_and_wait


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_the_task_is_cancelled_and_ended_and_nothing_is_raised() -> None:
    task = asyncio.create_task(_forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_a_cancellation_of_the_caller_while_it_waits_is_raised() -> None:
    cleaning_up = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaning_up.set()
            await asyncio.sleep(3600)  # a cleanup that takes long

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(task))
    await cleaning_up.wait()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert stopper.cancelled()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_task_that_ends_with_an_error_while_stopping_raises_it() -> None:
    async def crashes_on_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")

    task = asyncio.create_task(crashes_on_stop())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)
