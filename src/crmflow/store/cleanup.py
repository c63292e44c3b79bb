"""Housekeeping the scheduler runs now and then (an unscoped session: the
owner role on PostgreSQL): expired OAuth flows and attachment files no
message names any more.

A blob is only removed when no ``email_attachments`` row names it and its
file is older than the grace period: a message being imported writes its
attachment files before the transaction that names them commits, and that
transaction must not lose its file to a sweep that ran in between. Writing
content that is already stored refreshes the file's time, and the sweep
checks the time again just before it deletes, so a file that a new message
is about to name is kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmflow.store import models
from crmflow.store.blobs import BlobStore
from crmflow.store.db import Database

#: an OAuth flow is deleted this long after it expired (a day to look into
#: a failed connection)
FLOW_KEEP = dt.timedelta(days=1)
#: a blob file younger than this is never removed
BLOB_GRACE_S = 3600.0


@dataclass(frozen=True, slots=True)
class Cleanup:
    """What one sweep removed."""

    oauth_flows: int
    blobs: int


async def delete_expired_flows(session: AsyncSession, now: dt.datetime) -> int:
    """Delete OAuth flows that expired before ``now - FLOW_KEEP``; how many."""
    result = await session.execute(
        delete(models.OAuthFlow).where(models.OAuthFlow.expires_at < now - FLOW_KEEP)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def blob_keys_of(session: AsyncSession, organization: str) -> set[str]:
    """The blob keys one organization's attachments name."""
    rows = await session.scalars(
        select(models.EmailAttachment.blob_key)
        .where(models.EmailAttachment.blob_key.like(f"{organization}/%"))
        .distinct()
    )
    return {key for key in rows if key}


def _listed(blobs: BlobStore, organization: str, grace_s: float) -> list[str]:
    return list(blobs.files_of(organization, older_than_s=grace_s))


def _removed(blobs: BlobStore, names: list[str], grace_s: float) -> int:
    return sum(blobs.remove(name, older_than_s=grace_s) for name in names)


async def sweep(
    db: Database,
    blobs: BlobStore,
    now: dt.datetime,
    *,
    grace_s: float = BLOB_GRACE_S,
) -> Cleanup:
    """One sweep: expired flows, then each organization's unnamed blobs."""
    async with db.admin() as session:
        flows = await delete_expired_flows(session, now)
    removed = 0
    for organization in await asyncio.to_thread(blobs.organizations):
        files = await asyncio.to_thread(_listed, blobs, organization, grace_s)
        if not files:
            continue
        # read after listing: a key named between the two is kept
        async with db.admin() as session:
            named = await blob_keys_of(session, organization)
        orphans = [name for name in files if name not in named]
        removed += await asyncio.to_thread(_removed, blobs, orphans, grace_s)
    return Cleanup(flows, removed)
