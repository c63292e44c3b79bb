"""The IDLE listener's retry rhythm for a mailbox whose server keeps failing
(the provider is a stand-in: only the listener's loop is under test; the
real-server behaviour is in tests/email/test_imap_idle.py)."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from crmflow.domain.tenancy import Role
from crmflow.jobs.idle import IdleListeners
from crmflow.providers.base import TransientProviderError
from crmflow.store.schedule import DueAccount, SyncKind


class Unreachable:
    """A mail service whose IMAP server never answers."""

    def __init__(self) -> None:
        self.tries = 0

    async def idle_mailbox(self, ctx: Any, account_id: uuid.UUID) -> Any:
        self.tries += 1
        raise TransientProviderError("IMAP: connection refused; retrying later.")


async def test_a_failing_server_is_retried_with_a_growing_pause() -> None:
    mail = Unreachable()
    listeners = IdleListeners(None, mail, limit=1)  # type: ignore[arg-type]
    listeners._pool = ThreadPoolExecutor(1)
    due = DueAccount(
        SyncKind.MAIL, uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), Role.MEMBER, 0
    )
    task = asyncio.create_task(listeners._listen(due))
    await asyncio.sleep(3.6)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    listeners._pool.shutdown()
    # pauses of 0.5-1 s, 1-2 s, 2-4 s (jitter): 3 or 4 tries in 3.6 s, not a
    # hot loop of thousands
    assert 2 <= mail.tries <= 4, mail.tries
