"""background sync: when each calendar and mailbox is synced next

``next_sync_at`` is when the scheduler syncs the account next (NULL: as soon
as it can, which is how every existing account starts); ``sync_failures``
counts the failed scheduled runs in a row, which sets the back-off. Both are
indexed by ``next_sync_at``: the scheduler's one query is "what is due".

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("calendar_accounts", "email_accounts")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("next_sync_at", sa.DateTime(timezone=True), nullable=True)
            )
            batch_op.add_column(
                sa.Column(
                    "sync_failures", sa.Integer(), nullable=False, server_default="0"
                )
            )
            batch_op.create_index(
                batch_op.f(f"ix_{table}_next_sync_at"), ["next_sync_at"], unique=False
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_next_sync_at"))
            batch_op.drop_column("sync_failures")
            batch_op.drop_column("next_sync_at")
