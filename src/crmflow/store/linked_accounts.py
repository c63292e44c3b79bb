"""Mail and calendar accounts that hang off an integration, when it goes away.

``email_accounts.integration_id`` and ``calendar_accounts.integration_id`` are
``ON DELETE SET NULL``: deleting a ``user_integrations`` row never deletes the
accounts nor what they brought into the CRM (stored mail, appointment
mappings). :func:`detach_accounts` makes that explicit before the row goes:
the accounts stay, detached (``integration_id`` NULL), marked as disconnected
(email: ``status = 'disconnected'``; calendar: ``is_enabled = false``), and
their sync positions are cleared so that nothing syncs from them and a later
re-attachment starts with a full reconcile instead of trusting a cursor taken
under another grant.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.store import models
from crmflow.store.db import tenant_of

#: ``email_accounts.status`` of an account whose integration was disconnected
DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class DetachedAccounts:
    """How many accounts a disconnect detached."""

    email_accounts: int
    calendar_accounts: int


async def detach_accounts(
    session: AsyncSession, integration_id: uuid.UUID
) -> DetachedAccounts:
    """Detach the acting user's accounts of ``integration_id`` (see module doc)."""
    ctx = tenant_of(session)
    email = await session.execute(
        update(models.EmailAccount)
        .where(
            models.EmailAccount.organization_id == ctx.organization_id,
            models.EmailAccount.user_id == ctx.user_id,
            models.EmailAccount.integration_id == integration_id,
        )
        .values(
            integration_id=None,
            status=DISCONNECTED,
            sync_state={},
            updated_at=models.utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    calendar = await session.execute(
        update(models.CalendarAccount)
        .where(
            models.CalendarAccount.organization_id == ctx.organization_id,
            models.CalendarAccount.user_id == ctx.user_id,
            models.CalendarAccount.integration_id == integration_id,
        )
        .values(
            integration_id=None,
            is_enabled=False,
            sync_cursor=None,
            sync_cursor_listing={},
            updated_at=models.utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return DetachedAccounts(
        email_accounts=_count(email), calendar_accounts=_count(calendar)
    )


def _count(result: object) -> int:
    rowcount = getattr(result, "rowcount", 0)
    return int(rowcount) if isinstance(rowcount, int) and rowcount > 0 else 0
