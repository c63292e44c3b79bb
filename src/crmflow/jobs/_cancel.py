"""Stopping a background task without swallowing anyone's cancellation."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended.

    The task's own :class:`asyncio.CancelledError` is what stopping it
    means and is not raised. A cancellation of the caller while it waits is
    raised (``cancelling()`` tells the two apart): whoever stops a loop may
    itself be stopped, by a timeout for one, and must see it. Any other
    exception the task ended with is raised.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
