"""The sync lease columns (``sync_lease_until``) of calendar and mail
accounts: renewing and giving back the lease a run holds (see
:mod:`crmflow.domain.lease`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.store import models

#: the account tables with a ``sync_lease_until`` column
LeaseTable = type[models.CalendarAccount] | type[models.EmailAccount]


async def renew(
    session: AsyncSession,
    table: LeaseTable,
    row: Sequence[Any],
    held: dt.datetime,
    until: dt.datetime,
) -> bool:
    """Move the lease of the account ``row`` selects (conditions) from
    ``held`` on to ``until``; False when its lease is no longer ``held``."""
    result = await session.execute(
        update(table)
        .where(*row, table.sync_lease_until == held)
        .values(sync_lease_until=until)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


async def release(
    session: AsyncSession,
    table: LeaseTable,
    row: Sequence[Any],
    held: Sequence[dt.datetime] = (),
) -> None:
    """Clear the lease of the account ``row`` selects; with ``held``, only
    if it is still one of those values (another run's is left alone)."""
    await session.execute(
        update(table)
        .where(*row, *([table.sync_lease_until.in_(held)] if held else []))
        .values(sync_lease_until=None)
        .execution_options(synchronize_session=False)
    )
